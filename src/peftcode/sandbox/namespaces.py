"""The kernel isolation of a sandboxed program (see :mod:`peftcode.sandbox.runner`): its identity, what it may
see, and the stage and bubblewrap that make its namespaces."""

from __future__ import annotations

import contextlib
import importlib.util
import json
import os
import pwd
import secrets
import subprocess
import sys
import sysconfig
from dataclasses import dataclass
from functools import cache
from pathlib import Path

from peftcode.sandbox.seccomp import seccomp_filter

HERE = Path(__file__).resolve().parent
STAGE, GUARD = HERE / "stage.py", HERE / "guard.py"
# Paths inside the sandbox; the program's side of a tested run lies beside the guard.
WORKDIR, GUARD_INSIDE, FILTER_INSIDE = "/sandbox", "/run/peftcode/guard.py", "/run/peftcode/filter.bpf"
SERVING = ("serve.py", "peer.py", "wire.py", "rebuild.py", "layouts.py")
DEVICES = ("/dev/null", "/dev/zero", "/dev/random", "/dev/urandom")
# Where the stage lays the tmpfs of paths to bind, in its own mount namespace only (see stage.py).
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


@dataclass(frozen=True)
class Runtime:
    """What a program's sandbox holds of this machine, all read-only: the interpreter, the standard
    library (its site-packages masked by an empty folder), the shared libraries these and the allowed
    packages load (found by ``ldd``), the dynamic linker's cache, and each allowed package (with its
    ``NAME.libs`` folder of vendored libraries) under ``SITE``. No virtual environment, no other package,
    no dataset, no cache, no file of the evaluator's: nothing that holds a benchmark's answers."""

    interpreter: str
    paths: tuple[str, ...]  # bound at the same path inside
    links: tuple[tuple[str, str], ...]  # top-level links (/lib -> usr/lib on merged-/usr systems)
    masked: tuple[str, ...]  # folders inside those paths that the program sees empty
    packages: tuple[tuple[str, str], ...]  # (name inside SITE, path outside)


SITE = "/run/peftcode/site"


def _package_paths(names: tuple[str, ...]) -> list[tuple[str, str]]:
    """Each allowed package's folder (or module file) and its vendored libraries' folder, where this
    evaluator finds them; one line naming what is missing."""
    found = []
    for name in names:
        spec = importlib.util.find_spec(name)
        if spec is None:
            raise SandboxUnavailable(
                f"evaluation.execution.packages names {name!r}, which the evaluator cannot import"
            )
        if spec.submodule_search_locations:
            path = os.path.realpath(list(spec.submodule_search_locations)[0])
        else:
            path = os.path.realpath(spec.origin)
        found.append((os.path.basename(path), path))
        libs = os.path.join(os.path.dirname(path), f"{name}.libs")
        if os.path.isdir(libs):
            found.append((os.path.basename(libs), os.path.realpath(libs)))
    return found


def _shared_objects(folders: list[str]) -> list[str]:
    return [
        os.path.join(root, name)
        for folder in folders
        if os.path.isdir(folder)
        for root, _, names in os.walk(folder)
        for name in names
        if ".so" in name
    ]


def _libraries(files: list[str]) -> set[str]:
    """The folders of the shared libraries ``files`` load, by ``ldd``: the folder the loader finds each in
    (its real path) and the folder of the file itself. Whole folders, not each file: a mount per library
    made a program's start 1.7 times as long (benchmarks/README.md)."""
    try:
        listed = subprocess.run(["ldd", *files], capture_output=True, text=True, check=False).stdout
    except FileNotFoundError:
        raise SandboxUnavailable("ldd is not installed (it comes with the C library's tools)") from None
    found = set()
    for line in listed.splitlines():
        path = line.split("=>")[-1].strip().split(" (")[0]
        if path.startswith("/") and os.path.exists(path):
            found.add(os.path.realpath(os.path.dirname(path)))
            found.add(os.path.dirname(os.path.realpath(path)))
    return found


def _python_packages(folders: list[str], stdlib: set[str]) -> set[str]:
    """What a library folder may hold of Python's beside the standard library, laid over by an empty
    folder: site-packages and dist-packages, and another Python's folders (/usr/lib/python3)."""
    found = set()
    for folder in folders:
        for name in os.listdir(folder) if os.path.isdir(folder) else ():
            path = os.path.join(folder, name)
            other_python = name.startswith("python") and path not in stdlib
            if (name in ("site-packages", "dist-packages") or other_python) and os.path.isdir(path):
                found.add(path)
    return found


@cache
def runtime(packages: tuple[str, ...] = ()) -> Runtime:
    interpreter = os.path.realpath(getattr(sys, "_base_executable", None) or sys.executable)
    # The base interpreter's own standard library, never a folder of a virtual environment's.
    base = {"base": sys.base_prefix, "installed_base": sys.base_prefix, "platbase": sys.base_exec_prefix}
    base["installed_platbase"] = sys.base_exec_prefix
    stdlib = {os.path.realpath(sysconfig.get_path(key, vars=base)) for key in ("stdlib", "platstdlib")}
    allowed = _package_paths(packages)
    inside = [path for _, path in allowed]
    elf = [interpreter, *_shared_objects([os.path.join(f, "lib-dynload") for f in stdlib] + inside)]
    libraries = {p for p in _libraries(elf) if not any(p == f or p.startswith(f + os.sep) for f in inside)}
    masked = sorted(_python_packages([*stdlib, *libraries], stdlib))
    wanted = {interpreter, *stdlib, *libraries, "/etc/ld.so.cache"}
    links = tuple((os.readlink(top), top) for top in ("/lib", "/lib64", "/lib32") if os.path.islink(top))
    real = sorted(p for p in wanted if os.path.exists(p))
    # A path inside another is already there.
    paths = [p for p in real if not any(p.startswith(other + os.sep) for other in real if other != p)]
    return Runtime(interpreter, tuple(paths), links, tuple(masked), tuple(allowed))


def _data_fd(data: bytes, open_fds: contextlib.ExitStack) -> int:
    """A file descriptor to read ``data`` from, inheritable by the sandbox's first process, closed when
    ``open_fds`` closes."""
    fd = os.memfd_create("peftcode-sandbox", os.MFD_CLOEXEC)
    open_fds.callback(os.close, fd)
    os.write(fd, data)
    os.lseek(fd, 0, os.SEEK_SET)
    return fd


NAMESPACES = ("--unshare-user", "--unshare-pid", "--unshare-ipc", "--unshare-uts", "--unshare-cgroup-try")
# The same hash seed as the judge's (see peftcode.sandbox.layouts): a set the tests pass iterates in the
# program as it does in the tests, and a verdict is the same on every run.
HASH_SEED = "0"
ENVIRONMENT = {
    "PATH": "/usr/bin", "HOME": WORKDIR, "TMPDIR": WORKDIR, "LANG": "C.UTF-8", "PYTHONHASHSEED": HASH_SEED,
}  # fmt: skip


def _bubblewrap_argv(staging: str, runtime: Runtime, fds: dict[str, int], guard_args) -> list[str]:
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
    inside = [*runtime.paths, *(f"{SITE}/{name}" for name, _ in runtime.packages)]
    for index, path in enumerate(inside):
        argv += ["--ro-bind", f"{staging}/{index}", path]
    for folder in runtime.masked:
        argv += ["--tmpfs", folder, "--remount-ro", folder]
    for target, link in runtime.links:
        argv += ["--symlink", target, link]
    for device in DEVICES:
        argv += ["--dev-bind", device, device]
    argv += ["--bind", f"{staging}/work", WORKDIR, "--bind", f"{staging}/work/.shm", "/dev/shm"]
    argv += ["--file", str(fds["program"]), f"{WORKDIR}/program.py"]
    argv += ["--ro-bind-data", str(fds["guard"]), GUARD_INSIDE]
    argv += ["--ro-bind-data", str(fds["filter"]), FILTER_INSIDE]
    for name in SERVING:
        argv += ["--ro-bind-data", str(fds[name]), f"{os.path.dirname(GUARD_INSIDE)}/{name}"]
    argv += ["--chdir", WORKDIR, "--remount-ro", "/"]
    flags = ["-s", "-B"]  # no user site, no bytecode files; bwrap cleared the environment
    return [*argv, runtime.interpreter, *flags, GUARD_INSIDE, FILTER_INSIDE, "program.py", *guard_args]


def start_isolated(
    source: str,
    rlimits: dict,
    workdir: dict,
    open_fds: contextlib.ExitStack,
    guard_args: list[str],
    pass_fds,
    packages: tuple[str, ...] = (),
) -> subprocess.Popen:
    """The program, started through the stage and bubblewrap; its output on the process's stdout, and its
    file descriptors closed when ``open_fds`` closes."""
    found = runtime(tuple(packages))
    paths = [*found.paths, *(path for _, path in found.packages)]
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
        "argv": _bubblewrap_argv(STAGING, found, fds, guard_args),
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
