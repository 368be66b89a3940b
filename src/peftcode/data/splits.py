"""A prepared dataset's splits, as every job after ``prepare_data`` reads them: one parquet file a split in
our schema (see :mod:`peftcode.data.prepare_data`). A module of its own, so that the jobs that read prepared
data do not run, and are not versioned by, the code that prepares it."""

from __future__ import annotations

from pathlib import Path

import pandas as pd

SPLITS = ("train", "validation", "test")
COLUMNS = ("id", "source_id", "intent", "prefix", "code", "tests", "difficulty", "split")


def read_split(data_dir: str | Path, split: str) -> pd.DataFrame:
    return pd.read_parquet(Path(data_dir) / f"{split}.parquet")
