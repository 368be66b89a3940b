"""Run model-written programs and their tests without trusting them.

A program is assumed able to execute any machine code and make any system call. What contains it is
enforced by the kernel, set up in three steps, each in a process of its own:

1. :mod:`peftcode.sandbox.stage` (trusted, the evaluator's user) gives the program a uid and gid that own
   nothing (root picks an unused one; another user maps one of its subordinate ids from /etc/subuid
   through newuidmap), a mount namespace, an empty network namespace (loopback down), and resource
   limits: CPU seconds, address space, file size, open files, threads (RLIMIT_NPROC, per uid), no core
   dumps.
2. bubblewrap adds user, PID, IPC and UTS namespaces with no capabilities and no_new_privs, and a root of
   its own: read-only, holding only the program's runtime (the interpreter, the standard library, the
   packages the study allows and the shared libraries these load: never the evaluator's virtual
   environment, a dataset or a cache, see :class:`peftcode.sandbox.namespaces.Runtime`), with a
   size-limited tmpfs as the program's folder, its only writable place. It dies with the evaluator.
3. :mod:`peftcode.sandbox.guard` (trusted, inside) loads a seccomp filter
   (:mod:`peftcode.sandbox.seccomp`) that forbids new processes and programs, tracing, namespaces, mounts,
   non-Unix sockets and kernel memory outside the limits, then runs the program.

The evaluator reads at most ``output_bytes`` of the program's output and kills the sandbox at its wall
clock timeout, the PID namespace's first process first, so that bubblewrap reaps it and nothing is left
in the process table. Nothing is written on the host (the program's folder is a tmpfs of its own).

:func:`run_program` runs a program to its end: ``completed`` once its last line has run (the guard says so
on a pipe of its own; a program that exits with status 0 on the way has ``exited early``). That word is the
program's to forge, so no verdict rests on it: whether a program meets its tests is decided outside its
process, by :mod:`peftcode.sandbox.verdicts`.

Where the kernel cannot do this (no bubblewrap, no user namespaces, a non-root user without subordinate
ids), :func:`require_isolation` says why and how to enable it. ``isolated=False`` runs programs with the
resource limits, the seccomp filter and the guard only, in a temporary folder, as the evaluator's own user:
an explicit, unsafe choice that the evaluation records.
"""

from __future__ import annotations

import contextlib
import os
import resource
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from functools import cache, partial
from pathlib import Path

from peftcode.sandbox.namespaces import (
    GUARD,
    HASH_SEED,
    SandboxUnavailable,
    identity,
    runtime,
    start_isolated,
)
from peftcode.sandbox.seccomp import seccomp_filter

# The packages a program may import beside the standard library, by default (evaluation.execution.packages).
PACKAGES = ("numpy",)

UNSAFE_HINT = (
    "or set evaluation.execution.unsafe_without_isolation: true to run model-written programs without "
    "kernel isolation (recorded as unsafe in every metrics file and report)"
)


@dataclass(frozen=True)
class Limits:
    timeout_s: float = 10.0
    memory_mb: int = 1024
    file_mb: int = 16
    output_bytes: int = 1 << 16
    disk_mb: int = 64  # the program's folder, a tmpfs
    folder_entries: int = 4096  # files and folders it may hold
    open_files: int = 32  # pipes and sockets among them, each holding at most its default buffer
    threads: int = 64  # tasks of the program's uid: its threads, and bubblewrap's two processes
    signals: int = 64  # pending signals and POSIX timers, kernel memory outside the address space


@dataclass(frozen=True)
class Outcome:
    # A program run to its end: completed, failed, exited early (status 0 before its end), timeout, output
    # limit. A tested one (peftcode.sandbox.verdicts): passed, failed, timeout, output limit.
    status: str
    output: str
    exit_code: int | None = None  # None where the evaluator killed it
    reason: str = ""  # why a tested program failed, in the judge's words

    @property
    def completed(self) -> bool:
        return self.status == "completed"

    @property
    def passed(self) -> bool:
        return self.status == "passed"


def _rlimits(limits: Limits) -> dict[str, int]:
    cpu = int(limits.timeout_s) + 1  # the wall clock usually stops it first
    return {
        "RLIMIT_AS": limits.memory_mb * 2**20,
        "RLIMIT_CPU": cpu,
        "RLIMIT_FSIZE": limits.file_mb * 2**20,
        "RLIMIT_NOFILE": limits.open_files,
        "RLIMIT_CORE": 0,
        "RLIMIT_NPROC": limits.threads,
        "RLIMIT_SIGPENDING": limits.signals,
        "RLIMIT_MSGQUEUE": 0,
    }


def _confine(limits: Limits) -> None:
    """In the child, between fork and exec (an unisolated run only)."""
    for name, value in _rlimits(limits).items():
        resource.setrlimit(getattr(resource, name), (value, value))


def _start_unisolated(
    source: str, limits: Limits, open_fds, guard_args, pass_fds, packages
) -> subprocess.Popen:
    workdir = open_fds.enter_context(tempfile.TemporaryDirectory(prefix="peftcode-unsafe-"))
    (Path(workdir) / "program.py").write_text(source)
    (Path(workdir) / "filter.bpf").write_bytes(seccomp_filter())
    site = Path(workdir) / "site"
    site.mkdir()
    for name, path in runtime(tuple(packages)).packages:
        (site / name).symlink_to(path)
    environment = {"PATH": "/usr/bin:/bin", "HOME": workdir, "TMPDIR": workdir, "LANG": "C.UTF-8"}
    environment.update(PYTHONHASHSEED=HASH_SEED, PYTHONPATH=str(site))
    return subprocess.Popen(
        [sys.executable, "-s", "-B", str(GUARD), "filter.bpf", "program.py", *guard_args],
        cwd=workdir,
        env=environment,
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        start_new_session=True,
        pass_fds=list(pass_fds),
        preexec_fn=partial(_confine, limits),
    )


class Sandbox:
    """A program started in the sandbox, its output read as it comes (the first ``output_bytes`` kept, the
    rest read and let go, so that a program that prints much is not held up); with ``serve``, the guard's
    arguments of a tested run (see :mod:`peftcode.sandbox.guard`). Leaving the ``with`` block kills it, and
    everything it started, and reaps them."""

    def __init__(
        self,
        source: str,
        limits: Limits,
        isolated: bool,
        guard_args: list[str],
        pass_fds=(),
        packages=PACKAGES,
    ):
        self.limits, self.open_fds = limits, contextlib.ExitStack()
        try:
            if isolated:
                folder = {"size": limits.disk_mb * 2**20, "nr_inodes": limits.folder_entries}
                rlimits = _rlimits(limits)
                self.process = start_isolated(
                    source, rlimits, folder, self.open_fds, guard_args, pass_fds, packages
                )
            else:
                self.process = _start_unisolated(
                    source, limits, self.open_fds, guard_args, pass_fds, packages
                )
        except BaseException:
            self.open_fds.close()  # the program's files, should it not start
            raise
        self.chunks: list[bytes] = []
        self.received = 0
        self.reader = threading.Thread(target=self._read, daemon=True)
        self.reader.start()

    def _read(self) -> None:
        while True:
            chunk = self.process.stdout.read1(1 << 16)
            if not chunk:
                return
            if self.received <= self.limits.output_bytes:
                self.chunks.append(chunk)
            self.received += len(chunk)

    def over_output_limit(self) -> bool:
        return self.received > self.limits.output_bytes

    def killed_by_cpu_limit(self) -> bool:
        code = self.process.poll()
        return code in (-signal.SIGXCPU, -signal.SIGKILL, 128 + signal.SIGXCPU, 128 + signal.SIGKILL)

    def output(self) -> str:
        return b"".join(self.chunks)[: self.limits.output_bytes].decode(errors="replace")

    def __enter__(self) -> Sandbox:
        return self

    def __exit__(self, *exc) -> None:
        try:
            self._stop()
        finally:
            self.open_fds.close()

    def _stop(self) -> None:
        """Kill every process of the run but the first, which reaps them all (see
        :mod:`peftcode.sandbox.stage`) and then exits; then the first too, should it linger."""
        for pid in _descendants(self.process.pid):
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
        with contextlib.suppress(subprocess.TimeoutExpired):
            self.process.wait(timeout=5)
        with contextlib.suppress(ProcessLookupError):
            os.killpg(self.process.pid, signal.SIGKILL)
        self.process.wait()
        self.reader.join(timeout=5)
        self.process.stdout.close()


def _descendants(pid: int) -> list[int]:
    parents = {}
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            with contextlib.suppress(OSError):
                # The parent's pid follows the command's name (in parentheses, which may hold anything).
                stat = Path(f"/proc/{entry}/stat").read_text()
                parents[int(entry)] = int(stat.rsplit(")", 1)[1].split()[1])
    found, frontier = [], [pid]
    while frontier:
        children = [child for child, parent in parents.items() if parent in frontier]
        found += children
        frontier = children
    return found


FINISHED = b"finished"


def run_program(source: str, limits: Limits = Limits(), isolated: bool = True, packages=PACKAGES) -> Outcome:
    """Run one program to completion, or until a limit stops it (its output past ``output_bytes`` too)."""
    read, write = os.pipe()
    with contextlib.ExitStack() as open_fds:
        open_fds.callback(os.close, read)
        open_fds.callback(os.close, write)
        os.set_blocking(read, False)
        sandbox = open_fds.enter_context(Sandbox(source, limits, isolated, [str(write)], [write], packages))
        deadline = time.monotonic() + limits.timeout_s
        status = code = None
        while status is None:
            code = sandbox.process.poll()
            if sandbox.killed_by_cpu_limit():
                status = "timeout"
            elif code is not None:
                status = ("completed" if _said_finished(read) else "exited early") if code == 0 else "failed"
            elif sandbox.over_output_limit():
                status = "output limit"
            elif time.monotonic() > deadline:
                status = "timeout"
            else:
                time.sleep(0.01)
    return Outcome(status, sandbox.output(), code)


def _said_finished(read: int) -> bool:
    try:
        return os.read(read, len(FINISHED)) == FINISHED
    except BlockingIOError:
        return False


def run_programs(
    sources: list[str], workers: int = 2, limits: Limits = Limits(), isolated: bool = True, packages=PACKAGES
) -> list[Outcome]:
    """Run programs in parallel, ``workers`` at a time; outcomes in the order of ``sources``."""
    run = partial(run_program, limits=limits, isolated=isolated, packages=packages)
    with ThreadPoolExecutor(max_workers=workers) as pool:
        return list(pool.map(run, sources))


def _static_problem() -> str | None:
    if shutil.which("bwrap") is None:
        return "bubblewrap is not installed (apt-get install bubblewrap, or your system's package)"
    try:
        if int(Path("/proc/sys/user/max_user_namespaces").read_text()) == 0:
            return "user namespaces are disabled (as root: sysctl -w user.max_user_namespaces=15000)"
    except (OSError, ValueError):
        pass
    if os.geteuid() != 0:
        for tool in ("newuidmap", "newgidmap"):
            if shutil.which(tool) is None:
                return f"{tool} is not installed (apt-get install uidmap)"
        identity()
    return None


@cache
def isolation_problem() -> str | None:
    """Why this machine cannot isolate programs as :mod:`peftcode.sandbox.runner` describes, or None. Checked
    once per process, the last time by running a program in the sandbox."""
    try:
        problem = _static_problem()
    except SandboxUnavailable as error:
        return str(error)
    if problem is not None:
        return problem
    outcome = run_program("print('ok')", Limits(timeout_s=30))
    if not outcome.completed or outcome.output != "ok\n":
        return f"the sandbox did not start ({outcome.status}): {outcome.output.strip()[-500:]}"
    return None


def require_isolation() -> None:
    """Stop, saying why and how to enable it, where this machine cannot isolate programs."""
    problem = isolation_problem()
    if problem is not None:
        raise SandboxUnavailable(f"cannot run model-written programs in isolation: {problem}; {UNSAFE_HINT}")
