"""The union of prepared datasets (the ``join_data`` rule), for training one model on all of them (RQ3)."""

from __future__ import annotations

import json
from pathlib import Path

import pandas as pd

from peftcode.data.splits import SPLITS, read_split


def join_datasets(member_dirs: dict[str, str | Path], out_dir: str | Path) -> dict:
    """Write the union of prepared datasets' splits under ``out_dir``, for training one model on all of
    them (RQ3); each row's id is prefixed with its dataset's name. Returns the stats."""
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    stats = {"union": list(member_dirs), "splits": {}}
    for split in SPLITS:
        parts = {name: read_split(folder, split) for name, folder in member_dirs.items()}
        frame = pd.concat([part.assign(id=name + "/" + part["id"]) for name, part in parts.items()])
        frame.to_parquet(out_dir / f"{split}.parquet", index=False)
        stats["splits"][split] = {"rows": len(frame), **{name: len(part) for name, part in parts.items()}}
    (out_dir / "stats.json").write_text(json.dumps(stats, indent=2))
    return stats
