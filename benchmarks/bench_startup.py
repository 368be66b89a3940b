"""A job's fixed start-up cost: the wall time from a fresh interpreter to the job's module imported and its
work about to begin, as each job script does it, against the same job importing what it imported before
issue 28 (bitsandbytes in every model job, through PEFT; the datasets library in every data job), and a model
job against the same start with the garbage collector running through its imports (as before issue 35:
peftcode.jobs.startup). Each in a fresh process, median of ``--repeats``; and the slowest imports of a LoRA
fine-tune (python -X importtime).

Usage: python benchmarks/bench_startup.py [--repeats 5]
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
PRELUDE = (
    "from peftcode.jobs.logs import log_to\nfrom peftcode.hardware.devices import claim_gpus, job_compute\n"
)
MODEL_JOB = PRELUDE + (
    "from types import SimpleNamespace\nfrom peftcode.jobs.startup import import_only_what_is_used\n"
    "import_only_what_is_used(SimpleNamespace(quantization={quantization}))\n"
    "from peftcode.{module} import {name}\nfrom peftcode.jobs.tracking import job_run\n"
    # What job_run does first, as the job's work begins.
    "from peftcode.jobs.startup import imports_done\nimports_done()\n"
)
# A model job's start with the collector running throughout: the pause undone as soon as it is made.
COLLECTOR_RUNNING = "\nimport gc, peftcode.jobs.startup as startup\ngc.enable()\nstartup._paused = False\n"
# Each job as its script starts now, and as it started before (what it imported that it did not use).
PLAIN, QUANTIZED = "None", "{'bits': 4}"
JOBS = {
    "finetune (LoRA)": (
        MODEL_JOB.format(quantization=PLAIN, module="training.finetune", name="finetune"),
        "import bitsandbytes",
    ),
    "infer (ICL, LoRA)": (
        MODEL_JOB.format(quantization=PLAIN, module="inference.infer", name="infer"),
        "import bitsandbytes",
    ),
    "finetune (QLoRA)": (
        MODEL_JOB.format(quantization=QUANTIZED, module="training.finetune", name="finetune"),
        "",
    ),
    "prepare_data": (PRELUDE + "from peftcode.data.prepare_data import prepare_data\n", "import datasets"),
    "evaluate": (
        PRELUDE + "from peftcode.evaluation.evaluate import evaluate\n"
        "from peftcode.jobs.tracking import job_run\n",
        "",
    ),
}
ENVIRONMENT = {**os.environ, "PYTHONPATH": str(REPO / "src")}


def seconds(code: str) -> float:
    started = time.perf_counter()
    subprocess.run([sys.executable, "-c", code], check=True, env=ENVIRONMENT, capture_output=True)
    return time.perf_counter() - started


def slowest_imports(code: str, count: int = 8) -> list[tuple[float, str]]:
    done = subprocess.run(
        [sys.executable, "-X", "importtime", "-c", code], env=ENVIRONMENT, capture_output=True, text=True
    )
    rows = []
    for line in done.stderr.splitlines():
        parts = line.split("|")
        # A module imported by the job itself, not by another module (those are indented further).
        if len(parts) == 3 and parts[1].strip().isdigit() and not parts[2].startswith("  "):
            rows.append((int(parts[1]) / 1e6, parts[2].strip()))
    return sorted(rows, reverse=True)[:count]


def variants(now: str, before_extra: str) -> dict[str, str]:
    """A job's start now, before issue 28, and (a model job) with the collector running through it."""
    unpaused = now.replace("import_only_what_is_used(", "(lambda settings: None)(")
    found = {"before": before_extra + "\n" + unpaused}
    if "import_only_what_is_used(" in now:
        pause = now.index("\n", now.index("import_only_what_is_used(SimpleNamespace"))
        found["collector running"] = now[:pause] + COLLECTOR_RUNNING + now[pause + 1 :]
    return {**found, "now": now}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--repeats", type=int, default=5)
    args = parser.parse_args()
    print(f"| job | before (s) | collector running (s) | now (s) | now / before | (median of {args.repeats})")
    print("| --- | --- | --- | --- | --- |")
    for job, (now, before_extra) in JOBS.items():
        codes = variants(now, before_extra)
        timings = {name: [] for name in codes}
        for _ in range(args.repeats):  # interleaved, so that a busy moment hits each
            for name, code in codes.items():
                timings[name].append(seconds(code))
        median = {name: statistics.median(times) for name, times in timings.items()}
        running = f"{median['collector running']:.2f}" if "collector running" in median else "-"
        print(
            f"| {job} | {median['before']:.2f} | {running} | {median['now']:.2f} "
            f"| {median['now'] / median['before']:.2f} |"
        )
    print("\nSlowest top-level imports of a LoRA fine-tune now (s, cumulative):\n")
    for spent, name in slowest_imports(JOBS["finetune (LoRA)"][0]):
        print(f"- {name}: {spent:.2f}")


if __name__ == "__main__":
    main()
