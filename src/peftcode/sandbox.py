"""Run model-written programs and their tests without trusting them.

Each program runs in a process of its own, in a fresh temporary directory, under layers that each hold on
their own:
- resource limits: CPU seconds, address space, file size, open files, no core dumps, and no new processes
  (the last is not enforced for root);
- an empty network namespace (no interface but a downed loopback) where the kernel lets us make one: as
  root, or through an unprivileged user namespace;
- :mod:`peftcode.sandbox_guard` turns off process creation, signals, sockets and writes outside the
  directory in the interpreter before the program runs;
- a wall-clock timeout, an output cap (a program that prints gigabytes is stopped once it passes the cap),
  and at the end the whole process group is killed.
A program passes when it exits with status 0 within the limits.
"""

from __future__ import annotations

import ctypes
import json
import os
import resource
import signal
import subprocess
import sys
import tempfile
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from functools import partial
from pathlib import Path

GUARD = Path(__file__).with_name("sandbox_guard.py")
CLONE_NEWUSER, CLONE_NEWNET = 0x10000000, 0x40000000
# Loaded here: the child between fork and exec must not load libraries.
LIBC = ctypes.CDLL(None, use_errno=True)
NAMESPACES = CLONE_NEWNET if os.geteuid() == 0 else CLONE_NEWUSER | CLONE_NEWNET


@dataclass(frozen=True)
class Limits:
    timeout_s: float = 10.0
    memory_mb: int = 1024
    file_mb: int = 16
    output_bytes: int = 1 << 16


@dataclass(frozen=True)
class Outcome:
    status: str  # passed, failed, timeout, output limit
    output: str

    @property
    def passed(self) -> bool:
        return self.status == "passed"


def _confine(limits: Limits) -> None:
    """In the child, between fork and exec."""
    memory = limits.memory_mb * 2**20
    cpu = int(limits.timeout_s) + 1  # the wall clock usually stops it first
    resource.setrlimit(resource.RLIMIT_AS, (memory, memory))
    resource.setrlimit(resource.RLIMIT_CPU, (cpu, cpu + 1))
    resource.setrlimit(resource.RLIMIT_FSIZE, (limits.file_mb * 2**20,) * 2)
    resource.setrlimit(resource.RLIMIT_NOFILE, (64, 64))
    resource.setrlimit(resource.RLIMIT_CORE, (0, 0))
    resource.setrlimit(resource.RLIMIT_NPROC, (0, 0))
    LIBC.unshare(NAMESPACES)  # best effort: the guard refuses sockets as well


IO_TESTS = "# input/output tests\n"
IO_HARNESS = """import contextlib, io, json, sys

SPEC = json.loads({spec!r})
SOURCE = {source!r}


def lines(value):
    return "\\n".join(map(str, value)) if isinstance(value, list) else str(value)


if SPEC["fn_name"]:
    namespace = {{"__name__": "solution"}}
    exec(compile(SOURCE, "solution.py", "exec"), namespace)
    name = SPEC["fn_name"]
    target = namespace[name] if name in namespace else getattr(namespace["Solution"](), name)
    for args, expected in SPEC["cases"]:
        result = target(*args)
        assert result == expected or [result] == expected, (args, expected, result)
else:
    for stdin, expected in SPEC["cases"]:
        sys.stdin, out = io.StringIO(lines(stdin)), io.StringIO()
        with contextlib.redirect_stdout(out):
            try:
                exec(compile(SOURCE, "solution.py", "exec"), {{"__name__": "__main__"}})
            except SystemExit:
                pass
        assert out.getvalue().split() == lines(expected).split(), (stdin, expected, out.getvalue())
"""


def io_tests(pairs: list, fn_name: str | None = None) -> str:
    """Tests from input/output pairs (APPS): standard input -> standard output, or, with ``fn_name``,
    arguments -> the function's (or a ``Solution`` method's) return value."""
    return IO_TESTS + json.dumps({"fn_name": fn_name, "cases": pairs})


def program_with_tests(code: str, tests: str) -> str:
    """The program to run: the code followed by its tests (asserts, a check function), or, for
    input/output tests, a harness that runs the code once per case with that case's input."""
    if tests.startswith(IO_TESTS):
        return IO_HARNESS.format(spec=tests[len(IO_TESTS) :], source=code)
    return f"{code}\n\n{tests}\n"


def run_program(source: str, limits: Limits = Limits()) -> Outcome:
    """Run one program to completion, or until a limit stops it."""
    with tempfile.TemporaryDirectory(prefix="peftcode-sandbox-") as workdir:
        program = Path(workdir) / "program.py"
        program.write_text(source)
        process = subprocess.Popen(
            [sys.executable, "-I", str(GUARD), program.name],
            cwd=workdir,
            env={"PATH": "/usr/bin:/bin", "HOME": workdir, "LANG": "C.UTF-8"},
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            start_new_session=True,
            preexec_fn=partial(_confine, limits),
        )
        chunks: list[bytes] = []
        received = [0]

        def read() -> None:
            while received[0] <= limits.output_bytes:
                chunk = process.stdout.read1(1 << 16)
                if not chunk:
                    return
                chunks.append(chunk)
                received[0] += len(chunk)

        reader = threading.Thread(target=read, daemon=True)
        reader.start()
        deadline = time.monotonic() + limits.timeout_s
        status = None
        while status is None:
            code = process.poll()
            if code in (-signal.SIGXCPU, -signal.SIGKILL):
                status = "timeout"  # its CPU-time limit
            elif code is not None:
                status = "passed" if code == 0 else "failed"
            elif received[0] > limits.output_bytes:
                status = "output limit"
            elif time.monotonic() > deadline:
                status = "timeout"
            else:
                time.sleep(0.01)
        try:
            os.killpg(process.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
        process.wait()
        reader.join(timeout=5)
        process.stdout.close()
        output = b"".join(chunks)[: limits.output_bytes].decode(errors="replace")
        return Outcome(status, output)


def run_programs(sources: list[str], workers: int = 2, limits: Limits = Limits()) -> list[Outcome]:
    """Run programs in parallel, ``workers`` at a time; outcomes in the order of ``sources``."""
    with ThreadPoolExecutor(max_workers=workers) as pool:
        return list(pool.map(partial(run_program, limits=limits), sources))
