"""Whether a model-written program meets its tests, decided where the program cannot reach.

Two processes and two pipes: the program in the sandbox (:mod:`peftcode.sandbox.runner`, serving its functions
through :mod:`peftcode.sandbox.serve`), and the judge (:mod:`peftcode.sandbox.judge`), a process of the
evaluator's
own user that runs the benchmark's tests, calls the program through the pipes with plain values, and
alone writes the verdict, on a pipe that only the evaluator reads. The trusted boundary is the judge's
process: the dataset's tests and this project's code run there; what comes from the program is a value of
Python's builtin types, rebuilt by the judge. The judge is limited too (memory, CPU time, its own session)
and shares the program's wall clock: a program that stops answering runs out of it.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from functools import partial
from pathlib import Path

from peftcode.sandbox.namespaces import HASH_SEED
from peftcode.sandbox.runner import PACKAGES, Limits, Outcome, Sandbox
from peftcode.sandbox.tests_column import prelude, serve_mode

JUDGE = Path(__file__).resolve().parent / "judge.py"


@dataclass(frozen=True)
class Submission:
    """A program and the tests it must meet (a dataset's ``tests`` column, see
    :mod:`peftcode.sandbox.tests_column`),
    and the names the task asks it to write (:func:`peftcode.sandbox.tests_column.task_names`), which are the
    program's wherever the tests use them."""

    code: str
    tests: str
    names: tuple[str, ...] = ()


def _start_judge(submission: Submission, limits: Limits, packages, requests: int, answers: int):
    # The environment is this one, cleared: the hash seed is the program's (see peftcode.sandbox.layouts).
    judge = subprocess.Popen(
        [sys.executable, "-s", str(JUDGE), str(requests), str(answers)],
        env={"PATH": "/usr/bin:/bin", "LANG": "C.UTF-8", "PYTHONHASHSEED": HASH_SEED},
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
        start_new_session=True,
        pass_fds=[requests, answers],
    )
    cpu = int(limits.timeout_s) + 1
    rlimits = {"RLIMIT_AS": max(limits.memory_mb, 1024) * 2**20, "RLIMIT_CPU": cpu, "RLIMIT_CORE": 0}
    spec = {"tests": submission.tests, "names": list(submission.names), "packages": list(packages)}
    spec.update(timeout_s=limits.timeout_s, rlimits=rlimits)
    with contextlib.suppress(BrokenPipeError):
        judge.stdin.write(json.dumps(spec).encode())
        judge.stdin.close()
    return judge


def _verdict(judge: subprocess.Popen) -> dict:
    with contextlib.suppress(ValueError, IndexError):
        verdict = json.loads(judge.stdout.read().decode(errors="replace").strip().splitlines()[-1])
        if judge.wait() == 0 and isinstance(verdict, dict) and verdict.get("status") in ("passed", "failed"):
            return verdict
    return {"status": "failed", "reason": f"the judge gave no verdict (exit status {judge.returncode})"}


def run_submission(
    submission: Submission, limits: Limits = Limits(), isolated: bool = True, packages=PACKAGES
) -> Outcome:
    """Run the program against its tests: passed, failed (with the judge's reason) or timeout. What it
    prints is kept up to ``output_bytes`` and decides nothing: plain Python lets a program print."""
    requests_read, requests_write = os.pipe()
    answers_read, answers_write = os.pipe()
    program_ends, judge_ends = (requests_read, answers_write), (requests_write, answers_read)
    with contextlib.ExitStack() as stack:
        try:
            tests = submission.tests
            statements = json.dumps([s for s in prelude(tests).split("\n") if s.strip()])
            guard_args = ["serve", serve_mode(tests), statements, *map(str, program_ends)]
            sandbox = Sandbox(submission.code, limits, isolated, guard_args, program_ends, packages)
            stack.enter_context(sandbox)
            judge = _start_judge(submission, limits, packages, *judge_ends)
            stack.callback(_kill, judge)
        finally:
            # Only the two processes hold the pipes' ends, so that each sees the other's go.
            for fd in (*program_ends, *judge_ends):
                os.close(fd)
        deadline = time.monotonic() + limits.timeout_s
        while judge.poll() is None and time.monotonic() < deadline:
            time.sleep(0.005)
        if judge.poll() is None:
            return Outcome("timeout", sandbox.output(), sandbox.process.poll())
        verdict = _verdict(judge)
        code = sandbox.process.poll()
        if verdict["status"] == "failed" and sandbox.killed_by_cpu_limit():
            return Outcome("timeout", sandbox.output(), code, verdict["reason"])
        return Outcome(verdict["status"], sandbox.output(), code, verdict.get("reason", ""))


def _kill(process: subprocess.Popen) -> None:
    with contextlib.suppress(ProcessLookupError):
        os.killpg(process.pid, signal.SIGKILL)
    process.wait()
    process.stdout.close()


def run_submissions(
    submissions: list[Submission],
    workers: int = 2,
    limits: Limits = Limits(),
    isolated: bool = True,
    packages=PACKAGES,
) -> list[Outcome]:
    """Run programs against their tests, ``workers`` at a time; outcomes in the order of ``submissions``."""
    run = partial(run_submission, limits=limits, isolated=isolated, packages=packages)
    with ThreadPoolExecutor(max_workers=workers) as pool:
        return list(pool.map(run, submissions))
