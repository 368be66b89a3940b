"""Run model-written programs and their tests without trusting them.

A program is assumed able to execute any machine code and make any system call. What contains it is
enforced by the kernel, set up in three steps, each in a process of its own:

1. :mod:`peftcode.sandbox_stage` (trusted, the evaluator's user) gives the program a uid and gid that own
   nothing (root picks an unused one; another user maps one of its subordinate ids from /etc/subuid
   through newuidmap), a mount namespace, an empty network namespace (loopback down), and resource
   limits: CPU seconds, address space, file size, open files, threads (RLIMIT_NPROC, per uid), no core
   dumps.
2. bubblewrap adds user, PID, IPC and UTS namespaces with no capabilities and no_new_privs, and a root of
   its own: read-only, holding only the Python installation and system libraries, with a size-limited
   tmpfs as the program's folder, its only writable place. It dies with the evaluator.
3. :mod:`peftcode.sandbox_guard` (trusted, inside) loads a seccomp filter (:func:`seccomp_filter`) that
   forbids new processes and programs, tracing, namespaces, mounts and non-Unix sockets, then runs the
   program.

The evaluator reads at most ``output_bytes`` of the program's output and kills the sandbox at its wall
clock timeout. Nothing is written on the host (the program's folder is a tmpfs of its own), so nothing is
left behind. A program passes when it runs to its end (its tests after its code) within the limits: the
guard says so on a pipe of its own once the program's last line has run, so that a program that exits with
status 0 on the way (``sys.exit(0)``, ``exit()``, ``os._exit(0)``, ``_exit`` from C) has not passed. A
program that sets out to forge that word can (it runs in the process its tests run in, as with HumanEval's
own harness); the pipe holds against programs that end early, not against one written to cheat.

Where the kernel cannot do this (no bubblewrap, no user namespaces, a non-root user without subordinate
ids), :func:`require_isolation` says why and how to enable it. ``isolated=False`` runs programs with the
resource limits, the seccomp filter and the guard only, in a temporary folder, as the evaluator's own user:
an explicit, unsafe choice that the evaluation records.
"""

from __future__ import annotations

import contextlib
import errno
import json
import os
import pwd
import resource
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from functools import cache, partial
from pathlib import Path

import pyseccomp

HERE = Path(__file__).resolve().parent
STAGE, GUARD = HERE / "sandbox_stage.py", HERE / "sandbox_guard.py"
# Paths inside the sandbox.
WORKDIR, GUARD_INSIDE, FILTER_INSIDE = "/sandbox", "/run/peftcode/guard.py", "/run/peftcode/filter.bpf"
DEVICES = ("/dev/null", "/dev/zero", "/dev/random", "/dev/urandom")
# Where the stage lays the tmpfs of paths to bind, in its own mount namespace only (see sandbox_stage).
STAGING = "/dev/shm"
# The uid and gid the program sees; outside, root gives it one from a range no account uses, a non-root
# evaluator one of its subordinate ids. Each run draws its own, so that RLIMIT_NPROC caps each program.
INNER_ID = 65534
ROOT_ID_BASE, ID_SPREAD = 2_000_000_000, 1 << 20
CLONE_THREAD = 0x00010000
UNSAFE_HINT = (
    "or set evaluation.execution.unsafe_without_isolation: true to run model-written programs without "
    "kernel isolation (recorded as unsafe in every metrics file and report)"
)


class SandboxUnavailable(RuntimeError):
    """This machine cannot isolate model-written programs; the message says why and how to enable it."""


@dataclass(frozen=True)
class Limits:
    timeout_s: float = 10.0
    memory_mb: int = 1024
    file_mb: int = 16
    output_bytes: int = 1 << 16
    disk_mb: int = 64  # the program's folder, a tmpfs
    folder_entries: int = 4096  # files and folders it may hold
    open_files: int = 64
    threads: int = 64  # tasks of the program's uid: its threads, and bubblewrap's two processes


@dataclass(frozen=True)
class Outcome:
    status: str  # passed, failed, exited early (status 0 before its end), timeout, output limit
    output: str
    exit_code: int | None = None  # None where the evaluator killed it

    @property
    def passed(self) -> bool:
        return self.status == "passed"


# System calls the program may not make, each failing with EPERM. Namespaces, mounts and module loading
# need capabilities the program does not have; they are denied all the same, as is any way to reach
# another process (the PID namespace already hides every process but its own).
DENIED = (
    "fork", "vfork", "execve", "execveat", "ptrace", "process_vm_readv", "process_vm_writev", "kcmp",
    "pidfd_open", "pidfd_getfd", "pidfd_send_signal", "unshare", "setns", "mount", "umount2",
    "pivot_root", "chroot", "move_mount", "open_tree", "fsopen", "fsmount", "fsconfig", "fspick",
    "mount_setattr", "open_by_handle_at", "name_to_handle_at", "bpf", "perf_event_open", "userfaultfd",
    "keyctl", "add_key", "request_key", "io_uring_setup", "io_uring_enter", "io_uring_register",
    "kexec_load", "kexec_file_load", "init_module", "finit_module", "delete_module", "reboot", "swapon",
    "swapoff", "acct", "quotactl", "syslog", "mknod", "mknodat", "fanotify_init", "lookup_dcookie",
    "personality", "modify_ldt",
    # Memory that the address-space limit does not count, held outside any process (System V and POSIX
    # IPC, memory files), and per-user kernel objects charged to the evaluator's user (inotify).
    "shmget", "shmat", "shmctl", "semget", "semop", "semtimedop", "semctl", "msgget", "msgsnd", "msgrcv",
    "msgctl", "mq_open", "mq_unlink", "mq_timedsend", "mq_timedreceive", "mq_notify", "mq_getsetattr",
    "memfd_create", "memfd_secret", "inotify_init", "inotify_init1",
    # Locks and leases on the read-only files it sees, which would block the evaluator's own users of them.
    "flock",
)  # fmt: skip
PR_SET_DUMPABLE, F_SETLEASE = 4, 1024


@cache
def seccomp_filter() -> bytes:
    """The compiled seccomp program every sandboxed program runs under (BPF, for x86-64 or the machine's
    own architecture; a system call made through another ABI, such as ``int 0x80``, kills the process)."""
    rules = pyseccomp.SyscallFilter(pyseccomp.ALLOW)
    rules.set_attr(pyseccomp.Attr.ACT_BADARCH, pyseccomp.KILL_PROCESS)
    for name in DENIED:
        rules.add_rule(pyseccomp.ERRNO(errno.EPERM), name)
    # Threads are clones that share the thread group; any other clone is a new process.
    rules.add_rule(
        pyseccomp.ERRNO(errno.EPERM), "clone", pyseccomp.Arg(0, pyseccomp.MASKED_EQ, CLONE_THREAD, 0)
    )
    # clone3 passes its flags in memory, out of the filter's sight: glibc falls back to clone on ENOSYS.
    rules.add_rule(pyseccomp.ERRNO(errno.ENOSYS), "clone3")
    # The guard made the process undumpable, so that a crash starts no core-dump helper on the host (a
    # pipe in core_pattern ignores RLIMIT_CORE); it stays so.
    rules.add_rule(pyseccomp.ERRNO(errno.EPERM), "prctl", pyseccomp.Arg(0, pyseccomp.EQ, PR_SET_DUMPABLE))
    rules.add_rule(pyseccomp.ERRNO(errno.EPERM), "fcntl", pyseccomp.Arg(1, pyseccomp.EQ, F_SETLEASE))
    for call in ("socket", "socketpair"):
        rules.add_rule(
            pyseccomp.ERRNO(errno.EAFNOSUPPORT), call, pyseccomp.Arg(0, pyseccomp.NE, socket.AF_UNIX)
        )
    with tempfile.TemporaryFile() as compiled:
        rules.export_bpf(compiled)
        compiled.seek(0)
        return compiled.read()


def _subordinate_start(path: str, user: str, uid: int) -> tuple[int, int] | None:
    """The first range of subordinate ids of ``user`` in /etc/subuid or /etc/subgid: (start, count)."""
    try:
        lines = Path(path).read_text().splitlines()
    except OSError:
        return None
    for line in lines:
        fields = line.strip().split(":")
        if len(fields) == 3 and fields[0] in (user, str(uid)) and int(fields[2]) > 1:
            return int(fields[1]), int(fields[2])
    return None


def _identity() -> dict:
    """The program's uid and gid, and for a non-root evaluator the subordinate ids they map to."""
    draw = secrets.randbelow(ID_SPREAD)
    if os.geteuid() == 0:
        return {"uid": ROOT_ID_BASE + draw, "gid": ROOT_ID_BASE + draw, "subordinate": None}
    user = pwd.getpwuid(os.getuid()).pw_name
    uids = _subordinate_start("/etc/subuid", user, os.getuid())
    gids = _subordinate_start("/etc/subgid", user, os.getuid())
    if uids is None or gids is None:
        raise SandboxUnavailable(
            f"user '{user}' has no subordinate uid and gid range (/etc/subuid, /etc/subgid) to give "
            f"model-written programs a uid of their own: as root, run `usermod --add-subuids "
            f"100000-165535 --add-subgids 100000-165535 {user}` (and install newuidmap: apt-get install "
            f"uidmap), or run the evaluation as root"
        )
    # Not the first subordinate id, which the user's rootless containers map to their root.
    subordinate = {
        "inner": INNER_ID,
        "uid": uids[0] + 1 + draw % (uids[1] - 1),
        "gid": gids[0] + 1 + draw % (gids[1] - 1),
    }
    return {"uid": INNER_ID, "gid": INNER_ID, "subordinate": subordinate}


def _visible_paths() -> tuple[list[str], list[tuple[str, str]]]:
    """What the program may read: the Python installation and system libraries (as read-only paths) and
    the top-level library links into them (/lib -> usr/lib on merged-/usr systems)."""
    wanted = {sys.prefix, sys.base_prefix, sys.exec_prefix, sys.base_exec_prefix, "/usr", "/etc/ld.so.cache"}
    wanted.add(os.path.dirname(os.path.realpath(sys.executable)))
    links = []
    for top in ("/lib", "/lib64", "/lib32"):
        if os.path.islink(top):
            links.append((os.readlink(top), top))
        elif os.path.isdir(top):
            wanted.add(top)
    real = sorted({os.path.realpath(p) for p in wanted if os.path.exists(p)})
    # A path inside another is already there.
    paths = [p for p in real if not any(p.startswith(other + os.sep) for other in real if other != p)]
    return paths, links


def _data_fd(data: bytes, open_fds: contextlib.ExitStack) -> int:
    """A file descriptor to read ``data`` from, inheritable by the sandbox's first process, closed when
    ``open_fds`` closes."""
    fd = os.memfd_create("peftcode-sandbox", os.MFD_CLOEXEC)
    open_fds.callback(os.close, fd)
    os.write(fd, data)
    os.lseek(fd, 0, os.SEEK_SET)
    return fd


def _rlimits(limits: Limits) -> dict[str, int]:
    cpu = int(limits.timeout_s) + 1  # the wall clock usually stops it first
    return {
        "RLIMIT_AS": limits.memory_mb * 2**20,
        "RLIMIT_CPU": cpu,
        "RLIMIT_FSIZE": limits.file_mb * 2**20,
        "RLIMIT_NOFILE": limits.open_files,
        "RLIMIT_CORE": 0,
        "RLIMIT_NPROC": limits.threads,
    }


NAMESPACES = ("--unshare-user", "--unshare-pid", "--unshare-ipc", "--unshare-uts", "--unshare-cgroup-try")
ENVIRONMENT = {"PATH": "/usr/bin", "HOME": WORKDIR, "TMPDIR": WORKDIR, "LANG": "C.UTF-8"}


def _bubblewrap_argv(staging: str, paths: list[str], links, fds: dict[str, int]) -> list[str]:
    argv = [
        "bwrap",
        *NAMESPACES,
        "--disable-userns",
        "--die-with-parent",
        "--new-session",
        "--cap-drop",
        "ALL",
    ]
    argv += ["--uid", str(INNER_ID), "--gid", str(INNER_ID), "--clearenv"]
    for name, value in ENVIRONMENT.items():
        argv += ["--setenv", name, value]
    for index, path in enumerate(paths):
        argv += ["--ro-bind", f"{staging}/{index}", path]
    for target, link in links:
        argv += ["--symlink", target, link]
    for device in DEVICES:
        argv += ["--dev-bind", device, device]
    argv += ["--bind", f"{staging}/work", WORKDIR]
    argv += ["--file", str(fds["program"]), f"{WORKDIR}/program.py"]
    argv += ["--ro-bind-data", str(fds["guard"]), GUARD_INSIDE]
    argv += ["--ro-bind-data", str(fds["filter"]), FILTER_INSIDE]
    argv += ["--chdir", WORKDIR, "--remount-ro", "/"]
    return [*argv, _interpreter(), "-I", GUARD_INSIDE, FILTER_INSIDE, "program.py", str(fds["finished"])]


def _interpreter() -> str:
    """This interpreter by the real path of its folder, where the sandbox has it (a virtual environment
    reached through a symbolic link is bound at its target), under its own name: a virtual environment's
    ``bin/python`` is itself a link, and Python finds the environment from the name it was started by."""
    return os.path.join(os.path.realpath(os.path.dirname(sys.executable)), os.path.basename(sys.executable))


def _supervise(process: subprocess.Popen, limits: Limits, finished: int) -> Outcome:
    """Read the program's output until it exits, passes the output cap or its time; then kill its
    process group (the stage became bubblewrap, whose death ends the PID namespace and all in it). A
    program that exits with status 0 has passed if the guard wrote to ``finished``, the read end of its
    pipe."""
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
    killed_by_cpu_limit = {-signal.SIGXCPU, -signal.SIGKILL, 128 + signal.SIGXCPU, 128 + signal.SIGKILL}
    status = code = None
    while status is None:
        code = process.poll()
        if code in killed_by_cpu_limit:
            status = "timeout"
        elif code is not None:
            status = ("passed" if _said_finished(finished) else "exited early") if code == 0 else "failed"
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
    return Outcome(status, output, code)


FINISHED = b"finished"


def _finished_pipe(open_fds: contextlib.ExitStack) -> tuple[int, int]:
    """The pipe on which the guard says the program ran to its end (its read end stays here), closed
    when ``open_fds`` closes."""
    read, write = os.pipe()
    open_fds.callback(os.close, read)
    open_fds.callback(os.close, write)
    os.set_blocking(read, False)
    return read, write


def _said_finished(read: int) -> bool:
    try:
        return os.read(read, len(FINISHED)) == FINISHED
    except BlockingIOError:
        return False


def _run_isolated(source: str, limits: Limits) -> Outcome:
    identity = _identity()
    paths, links = _visible_paths()
    with contextlib.ExitStack() as open_fds:
        finished, finished_write = _finished_pipe(open_fds)
        fds = {
            "program": _data_fd(source.encode(), open_fds),
            "guard": _data_fd(GUARD.read_bytes(), open_fds),
            "filter": _data_fd(seccomp_filter(), open_fds),
            "finished": finished_write,
        }
        spec = {
            **identity,
            "staging": STAGING,
            "read_only": paths,
            "workdir": {"size": limits.disk_mb * 2**20, "nr_inodes": limits.folder_entries},
            "rlimits": _rlimits(limits),
            "argv": _bubblewrap_argv(STAGING, paths, links, fds),
        }
        process = subprocess.Popen(
            [sys.executable, "-I", "-S", str(STAGE), json.dumps(spec)],
            env={"PATH": os.environ.get("PATH", "/usr/bin:/bin")},
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            start_new_session=True,
            pass_fds=list(fds.values()),
        )
        return _supervise(process, limits, finished)


def _confine(limits: Limits) -> None:
    """In the child, between fork and exec (an unisolated run only)."""
    for name, value in _rlimits(limits).items():
        resource.setrlimit(getattr(resource, name), (value, value))


def _run_unisolated(source: str, limits: Limits) -> Outcome:
    with contextlib.ExitStack() as open_fds:
        finished, finished_write = _finished_pipe(open_fds)
        workdir = open_fds.enter_context(tempfile.TemporaryDirectory(prefix="peftcode-unsafe-"))
        (Path(workdir) / "program.py").write_text(source)
        (Path(workdir) / "filter.bpf").write_bytes(seccomp_filter())
        process = subprocess.Popen(
            [sys.executable, "-I", str(GUARD), "filter.bpf", "program.py", str(finished_write)],
            cwd=workdir,
            env={"PATH": "/usr/bin:/bin", "HOME": workdir, "TMPDIR": workdir, "LANG": "C.UTF-8"},
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            start_new_session=True,
            pass_fds=[finished_write],
            preexec_fn=partial(_confine, limits),
        )
        return _supervise(process, limits, finished)


def run_program(source: str, limits: Limits = Limits(), isolated: bool = True) -> Outcome:
    """Run one program to completion, or until a limit stops it."""
    return _run_isolated(source, limits) if isolated else _run_unisolated(source, limits)


def run_programs(
    sources: list[str], workers: int = 2, limits: Limits = Limits(), isolated: bool = True
) -> list[Outcome]:
    """Run programs in parallel, ``workers`` at a time; outcomes in the order of ``sources``."""
    with ThreadPoolExecutor(max_workers=workers) as pool:
        return list(pool.map(partial(run_program, limits=limits, isolated=isolated), sources))


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
        _identity()
    return None


@cache
def isolation_problem() -> str | None:
    """Why this machine cannot isolate programs as :mod:`peftcode.sandbox` describes, or None. Checked once
    per process, the last time by running a program in the sandbox."""
    try:
        problem = _static_problem()
    except SandboxUnavailable as error:
        return str(error)
    if problem is not None:
        return problem
    outcome = run_program("print('ok')", Limits(timeout_s=30))
    if not outcome.passed or outcome.output != "ok\n":
        return f"the sandbox did not start ({outcome.status}): {outcome.output.strip()[-500:]}"
    return None


def require_isolation() -> None:
    """Stop, saying why and how to enable it, where this machine cannot isolate programs."""
    problem = isolation_problem()
    if problem is not None:
        raise SandboxUnavailable(f"cannot run model-written programs in isolation: {problem}; {UNSAFE_HINT}")
