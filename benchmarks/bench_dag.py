"""How long `snakemake -n` takes on the paper grid, and how that grows with the grid (1x, 2x, 4x models).

The dry run plans every cell's memory from the models' config.json, which it reads here from an offline
cache of the shapes in tests/fixtures/configs (the first run of each grid builds their meta models; the
median is of the runs after it, which read the shapes from peftcode's own cache).

With ``--cold``, the first dry run instead, from an empty peftcode cache, of the paper grid and of today's
(studies/modern.yaml), where the planner builds each model's meta-device model and what PEFT builds on it:
as it does (left uninitialised) against the same models initialised (the baseline), each in a fresh process.

Usage: python benchmarks/bench_dag.py [--repeats 3] [--cold]
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


# The baseline of --cold: the planner's meta-device models built with their weights initialised.
INITIALISED = (
    "import peftcode.planning.shapes as shapes\n"
    "from peftcode.hardware.placement import meta_model\n"
    "shapes.uninitialised_meta_model = meta_model\n"
)


def cold_dry_run_seconds(study: Path, folder: Path, initialised: bool) -> float:
    """A dry run of ``study`` from an empty peftcode cache, in a fresh process."""
    cache = tempfile.mkdtemp(dir=folder)
    env = {**offline_configs(folder), "XDG_CACHE_HOME": cache}
    argv = ["snakemake", "-n", "--quiet", "rules", "--configfile", str(study)]
    run = f"import sys\nfrom snakemake.cli import main\nsys.argv = {argv!r}\nmain()"
    code = (INITIALISED if initialised else "") + run
    started = time.perf_counter()
    subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True, check=True, env=env)
    return time.perf_counter() - started


def cold(repeats: int) -> None:
    print("| grid | initialised (baseline, s) | uninitialised (s) | speed-up |")
    print("| --- | --- | --- | --- |")
    with tempfile.TemporaryDirectory() as folder:
        for name in ("paper", "modern"):
            study = REPO / "studies" / f"{name}.yaml"
            runs = {True: [], False: []}
            for _ in range(repeats):  # alternated, so that neither gains from the other's warm-up
                for initialised in runs:
                    runs[initialised].append(cold_dry_run_seconds(study, Path(folder), initialised))
            baseline, ours = (statistics.median(runs[initialised]) for initialised in (True, False))
            print(f"| `studies/{name}.yaml` | {baseline:.1f} | {ours:.1f} | {baseline / ours:.2f}x |")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--cold", action="store_true", help="the first dry run, from an empty cache")
    args = parser.parse_args()
    if args.cold:
        return cold(args.repeats)
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
