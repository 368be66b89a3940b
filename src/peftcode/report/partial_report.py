"""Reports from the cells finished so far (the ``partial_report`` rule, run while a study is unfinished),
listing the cells the study expects and has not finished."""

from __future__ import annotations

from collections.abc import Iterable
from pathlib import Path

from peftcode.report.aggregate import collect
from peftcode.report.report import write_reports


def partial_reports(metrics_paths: Iterable[str | Path], expected: list[dict], out_dir: str | Path) -> None:
    """Reports from the cells finished so far, listing the expected cells that are not."""
    table = collect(path for path in metrics_paths if Path(path).exists())
    write_reports(table, out_dir, expected)
