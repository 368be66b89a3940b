"""The results table: one row per cell, merged from the cells' metrics files."""

from __future__ import annotations

import json
from collections.abc import Iterable
from pathlib import Path

import pandas as pd

from peftcode.report import write_reports


def collect(metrics_paths: Iterable[str | Path]) -> pd.DataFrame:
    rows = [json.loads(Path(path).read_text()) for path in metrics_paths]
    if not rows:
        return pd.DataFrame()
    return pd.DataFrame(rows).sort_values(["dataset", "model", "method"], ignore_index=True)


def aggregate(
    metrics_paths: Iterable[str | Path], table_path: str | Path, csv_path: str | Path
) -> pd.DataFrame:
    table = collect(metrics_paths)
    table.to_parquet(table_path, index=False)
    table.to_csv(csv_path, index=False)
    return table


def partial_reports(metrics_paths: Iterable[str | Path], expected: list[dict], out_dir: str | Path) -> None:
    """Reports from the cells finished so far, listing the expected cells that are not."""
    table = collect(path for path in metrics_paths if Path(path).exists())
    write_reports(table, out_dir, expected)
