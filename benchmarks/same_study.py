"""Whether two runs of a study give the same results, cell by cell: the proof a behaviour-preserving change
owes (run the default study from an empty ``results/`` before and after, then compare the two folders).

Compared exactly: every cell's generations (every column: candidates, samples, prompts, tests), every
metric of every cell, the plan's estimates and the results table. Left out: what a run measures of itself
(peak memory, times, tokens per second, attempts), which no two runs share. Columns and keys renamed
between the two versions are read under their new names (``--renamed OLD=NEW``, the variant rename by
default).

Usage: python benchmarks/same_study.py BEFORE/results AFTER/results
"""

from __future__ import annotations

import argparse
import json
import math
import sys
from pathlib import Path

import pandas as pd

# What a run measures of itself: different on every run of the same code.
MEASURED = ("_rss_mb", "_time_s", "_tokens_per_s", "_peak_mb", "_own_peak_mb", "_weight_mb", "_attempts")
MEASURED_COLUMNS = ("finetune_peak_mb", "infer_peak_mb")
# Names of 0.5.0 read under 0.6.0's (the variant rename).
RENAMED = {"method": "variant", "method_group": "method"}


def measured(key: str) -> bool:
    return key.endswith(MEASURED)


def renamed(record: dict, names: dict[str, str]) -> dict:
    return {names.get(key, key): value for key, value in record.items()}


def same_value(a, b) -> bool:
    if isinstance(a, float) and isinstance(b, float):
        return a == b or (math.isnan(a) and math.isnan(b))
    return a == b


def compare_metrics(before: Path, after: Path, names: dict[str, str]) -> list[str]:
    problems = []
    for path in sorted(before.rglob("*.json")):
        other = after / path.relative_to(before)
        if not other.exists():
            problems.append(f"{other}: missing")
            continue
        old = renamed(json.loads(path.read_text()), names)
        new = json.loads(other.read_text())
        for key in sorted(set(old) | set(new)):
            if measured(key):
                continue
            if key not in old or key not in new or not same_value(old[key], new[key]):
                problems.append(f"{other}: {key}: {old.get(key)!r} != {new.get(key)!r}")
    return problems


def compare_generations(before: Path, after: Path) -> tuple[list[str], int]:
    problems, cells = [], 0
    for path in sorted(before.rglob("*.parquet")):
        other = after / path.relative_to(before)
        if not other.exists():
            problems.append(f"{other}: missing")
            continue
        old, new = pd.read_parquet(path), pd.read_parquet(other)
        cells += 1
        if list(old.columns) != list(new.columns) or old.to_json() != new.to_json():
            problems.append(f"{other}: generations differ")
    return problems, cells


def compare_table(before: Path, after: Path, names: dict[str, str], estimates: bool) -> list[str]:
    """The plan (``estimates``: every column is computed, none measured) or the results table."""
    if not before.exists():
        return []
    old = pd.read_csv(before).rename(columns=names)
    new = pd.read_csv(after)
    drop = [] if estimates else [c for c in old.columns if measured(c) or c in MEASURED_COLUMNS]
    old, new = old.drop(columns=drop, errors="ignore"), new.drop(columns=drop, errors="ignore")
    if sorted(old.columns) != sorted(new.columns):
        return [f"{after}: columns {sorted(set(old.columns) ^ set(new.columns))} differ"]
    old, new = old[sorted(old.columns)], new[sorted(new.columns)]
    return [] if old.equals(new) else [f"{after}: rows differ"]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("before", type=Path)
    parser.add_argument("after", type=Path)
    parser.add_argument("--renamed", nargs="*", default=[f"{a}={b}" for a, b in RENAMED.items()])
    args = parser.parse_args()
    names = dict(pair.split("=") for pair in args.renamed)
    problems, cells = compare_generations(args.before / "generations", args.after / "generations")
    problems += compare_metrics(args.before / "metrics", args.after / "metrics", names)
    problems += compare_table(args.before / "plan.csv", args.after / "plan.csv", names, estimates=True)
    problems += compare_table(args.before / "results.csv", args.after / "results.csv", names, estimates=False)
    metrics = len(list((args.before / "metrics").rglob("*.json")))
    print(f"{cells} cells' generations and {metrics} cells' metrics compared: {len(problems)} differences")
    print("\n".join(problems))
    return 1 if problems else 0


if __name__ == "__main__":
    sys.exit(main())
