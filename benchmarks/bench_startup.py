"""A job's fixed start-up cost: the wall time from a fresh interpreter to the job's module imported, as each
job script does it, against the same job importing what it imported before issue 28 (bitsandbytes in every
model job, through PEFT; the datasets library in every data job). Each in a fresh process, median of
``--repeats``; and the slowest imports of a LoRA fine-tune (python -X importtime).

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
    "from peftcode.jobs.startup import import_only_what_is_used\nimport_only_what_is_used({settings})\n"
    "from peftcode.{module} import {name}\nfrom peftcode.jobs.tracking import job_run\n"
)
# Each job as its script starts now, and as it started before (what it imported that it did not use).
PLAIN, QUANTIZED = "{'quantization': None}", "{'quantization': {'bits': 4}}"
JOBS = {
    "finetune (LoRA)": (
        MODEL_JOB.format(settings=PLAIN, module="training.finetune", name="finetune"),
        "import bitsandbytes",
    ),
    "infer (ICL, LoRA)": (
        MODEL_JOB.format(settings=PLAIN, module="inference.infer", name="infer"),
        "import bitsandbytes",
    ),
    "finetune (QLoRA)": (
        MODEL_JOB.format(settings=QUANTIZED, module="training.finetune", name="finetune"),
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


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--repeats", type=int, default=5)
    args = parser.parse_args()
    print(f"| job | before (s) | now (s) | now / before |  (median of {args.repeats}, fresh processes)")
    print("| --- | --- | --- | --- |")
    for job, (now, before_extra) in JOBS.items():
        before = before_extra + "\n" + now.replace("import_only_what_is_used({", "dict({")
        timings = {"now": [], "before": []}
        for _ in range(args.repeats):  # interleaved, so that a busy moment hits both
            timings["now"].append(seconds(now))
            timings["before"].append(seconds(before))
        now_s, before_s = statistics.median(timings["now"]), statistics.median(timings["before"])
        print(f"| {job} | {before_s:.2f} | {now_s:.2f} | {now_s / before_s:.2f} |")
    print("\nSlowest top-level imports of a LoRA fine-tune now (s, cumulative):\n")
    for spent, name in slowest_imports(JOBS["finetune (LoRA)"][0]):
        print(f"- {name}: {spent:.2f}")


if __name__ == "__main__":
    main()
