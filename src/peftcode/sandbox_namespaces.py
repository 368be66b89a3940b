"""The kernel isolation of a sandboxed program (see :mod:`peftcode.sandbox`): its identity, what it may
see, and the stage and bubblewrap that make its namespaces."""

from __future__ import annotations

import contextlib
import json
import os
import pwd
import secrets
import subprocess
import sys
from pathlib import Path

from peftcode.sandbox_filter import seccomp_filter

HERE = Path(__file__).resolve().parent
STAGE, GUARD = HERE / "sandbox_stage.py", HERE / "sandbox_guard.py"
# Paths inside the sandbox; the program's side of a tested run lies beside the guard.
WORKDIR, GUARD_INSIDE, FILTER_INSIDE = "/sandbox", "/run/peftcode/guard.py", "/run/peftcode/filter.bpf"
SERVING = ("sandbox_serve.py", "wire.py")
DEVICES = ("/dev/null", "/dev/zero", "/dev/random", "/dev/urandom")
# Where the stage lays the tmpfs of paths to bind, in its own mount namespace only (see sandbox_stage).
STAGING = "/dev/shm"
# The uid and gid the program sees; outside, root gives it one from a range no account uses, a non-root
# evaluator one of its subordinate ids. Each run draws its own, so that RLIMIT_NPROC caps each program.
INNER_ID = 65534
ROOT_ID_BASE, ID_SPREAD = 2_000_000_000, 1 << 20


class SandboxUnavailable(RuntimeError):
    """This machine cannot isolate model-written programs; the message says why and how to enable it."""


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


def identity() -> dict:
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


NAMESPACES = ("--unshare-user", "--unshare-pid", "--unshare-ipc", "--unshare-uts", "--unshare-cgroup-try")
ENVIRONMENT = {"PATH": "/usr/bin", "HOME": WORKDIR, "TMPDIR": WORKDIR, "LANG": "C.UTF-8"}


def _bubblewrap_argv(staging: str, paths: list[str], links, fds: dict[str, int], guard_args) -> list[str]:
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
    for name in SERVING:
        argv += ["--ro-bind-data", str(fds[name]), f"{os.path.dirname(GUARD_INSIDE)}/{name}"]
    argv += ["--chdir", WORKDIR, "--remount-ro", "/"]
    return [*argv, _interpreter(), "-I", GUARD_INSIDE, FILTER_INSIDE, "program.py", *guard_args]


def _interpreter() -> str:
    """This interpreter by the real path of its folder, where the sandbox has it (a virtual environment
    reached through a symbolic link is bound at its target), under its own name: a virtual environment's
    ``bin/python`` is itself a link, and Python finds the environment from the name it was started by."""
    return os.path.join(os.path.realpath(os.path.dirname(sys.executable)), os.path.basename(sys.executable))


def start_isolated(
    source: str, rlimits: dict, workdir: dict, open_fds: contextlib.ExitStack, guard_args: list[str], pass_fds
) -> subprocess.Popen:
    """The program, started through the stage and bubblewrap; its output on the process's stdout, and its
    file descriptors closed when ``open_fds`` closes."""
    paths, links = _visible_paths()
    fds = {
        "program": _data_fd(source.encode(), open_fds),
        "guard": _data_fd(GUARD.read_bytes(), open_fds),
        "filter": _data_fd(seccomp_filter(), open_fds),
        **{name: _data_fd((HERE / name).read_bytes(), open_fds) for name in SERVING},
    }
    spec = {
        **identity(),
        "staging": STAGING,
        "read_only": paths,
        "workdir": workdir,
        "rlimits": rlimits,
        "argv": _bubblewrap_argv(STAGING, paths, links, fds, guard_args),
    }
    return subprocess.Popen(
        [sys.executable, "-I", "-S", str(STAGE), json.dumps(spec)],
        env={"PATH": os.environ.get("PATH", "/usr/bin:/bin")},
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        start_new_session=True,
        pass_fds=[*fds.values(), *pass_fds],
    )
