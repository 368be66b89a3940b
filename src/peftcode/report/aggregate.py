"""The results table: one row per cell, merged from the cells' metrics files."""

from __future__ import annotations

import json
from collections.abc import Iterable
from pathlib import Path

import pandas as pd


def collect(metrics_paths: Iterable[str | Path]) -> pd.DataFrame:
    rows = [json.loads(Path(path).read_text()) for path in metrics_paths]
    if not rows:
        return pd.DataFrame()
    return pd.DataFrame(rows).sort_values(["dataset", "model", "variant"], ignore_index=True)


def aggregate(
    metrics_paths: Iterable[str | Path], table_path: str | Path, csv_path: str | Path
) -> pd.DataFrame:
    table = collect(metrics_paths)
    table.to_parquet(table_path, index=False)
    table.to_csv(csv_path, index=False)
    return table
