"""How long `snakemake -n` takes on the paper grid, and how that grows with the grid (1x, 2x, 4x models).

The dry run plans every cell's memory from the models' config.json, which it reads here from an offline
cache of the shapes in tests/fixtures/configs (the first run of each grid builds their meta models; the
median is of the runs after it, which read the shapes from peftcode's own cache).

Usage: python benchmarks/bench_dag.py [--repeats 3]
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import yaml

REPO = Path(__file__).resolve().parents[1]


def scaled_grid(factor: int) -> dict:
    """The paper grid with every model copied ``factor`` times (as if the study had more models)."""
    config = yaml.safe_load((REPO / "studies" / "paper.yaml").read_text())
    config["models"] = {
        f"{name}-copy{i}" if i else name: settings
        for name, settings in config["models"].items()
        for i in range(factor)
    }
    for block in config["study"]:
        block["models"] = [f"{m}-copy{i}" if i else m for m in block["models"] for i in range(factor)]
    return config


def offline_configs(folder: Path) -> dict[str, str]:
    """An empty Hugging Face cache, offline: the plan reads the shapes the package ships."""
    return {**os.environ, "HF_HOME": str(folder), "HF_HUB_OFFLINE": "1"}


def dry_run_seconds(config: dict, folder: Path, env: dict[str, str]) -> tuple[float, int]:
    path = folder / "study.yaml"
    path.write_text(yaml.safe_dump(config))
    started = time.perf_counter()
    result = subprocess.run(
        [sys.executable, "-m", "snakemake", "-n", "--quiet", "rules", "--configfile", str(path)],
        cwd=REPO,
        capture_output=True,
        text=True,
        check=True,
        env=env,
    )
    seconds = time.perf_counter() - started
    jobs = int(result.stdout.split("total")[1].split()[0])
    return seconds, jobs


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    rows = []
    with tempfile.TemporaryDirectory() as folder:
        env = offline_configs(Path(folder))
        for factor in (1, 2, 4):
            runs = [dry_run_seconds(scaled_grid(factor), Path(folder), env) for _ in range(args.repeats + 1)]
            rows.append((factor, runs[0][1], statistics.median(seconds for seconds, _ in runs[1:])))
    base = rows[0][2]
    print("| grid | jobs | dry run (s, median) | time / 1x time |")
    print("| --- | --- | --- | --- |")
    for factor, jobs, seconds in rows:
        print(f"| {factor}x | {jobs} | {seconds:.2f} | {seconds / base:.2f} |")


if __name__ == "__main__":
    main()
