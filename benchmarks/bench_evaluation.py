"""EM@k and CodeBLEU over 10,000 candidate/reference pairs, as the evaluate job computes them.

Usage: python benchmarks/bench_evaluation.py [--pairs 10000] [--repeats 3]
"""

from __future__ import annotations

import argparse
import json
import random
import statistics
import time
from pathlib import Path

from peftcode.evaluation.codebleu_sums import CodebleuSums
from peftcode.evaluation.scores import exact_match_at_k, match_ranks

REPO = Path(__file__).resolve().parents[1]


def pairs(count: int) -> tuple[list[str], list[list[str]]]:
    """References from the shipped datasets, each with 10 candidates drawn from the same pool."""
    codes = [json.loads(line)["cmd"] for line in (REPO / "data/conala-style/train.jsonl").open()]
    codes += [row["output"] for row in json.loads((REPO / "data/codealpaca-style/train.json").read_text())]
    rng = random.Random(0)
    references = [rng.choice(codes) for _ in range(count)]
    candidates = [[rng.choice(codes) for _ in range(9)] + [reference] for reference in references]
    for ranked in candidates:
        rng.shuffle(ranked)
    return references, candidates


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--pairs", type=int, default=10_000)
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    references, candidates = pairs(args.pairs)
    timings = []
    for _ in range(args.repeats):
        started = time.perf_counter()
        exact_match_at_k(match_ranks(references, candidates), [1, 2, 5, 10], 1000)
        CodebleuSums(references, [c[0] for c in candidates]).score()
        timings.append(time.perf_counter() - started)
    print(f"| pairs | EM@1/2/5/10 + CodeBLEU (s, median of {args.repeats}) | target |")
    print("| --- | --- | --- |")
    print(f"| {args.pairs} | {statistics.median(timings):.1f} | < 60 |")


if __name__ == "__main__":
    main()
