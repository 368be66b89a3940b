"""Run inside a sandbox's child process (``python -I sandbox_guard.py program.py``): turn off what a tested
program must not do, then run the program as ``__main__``.

The guard is one layer of several (see :mod:`peftcode.sandbox`): resource limits, another user, an empty
network namespace and a killed process group hold even against a program that gets past it.
"""

import builtins
import io
import os
import posix
import sys

HOME = os.getcwd()
WRITE_FLAGS = os.O_WRONLY | os.O_RDWR | os.O_CREAT | os.O_APPEND | os.O_TRUNC
REFUSED = (
    # new processes and signals to others
    "system", "popen", "fork", "forkpty", "spawnv", "spawnve", "spawnvp", "spawnvpe", "posix_spawn",
    "posix_spawnp", "execv", "execve", "execvp", "execvpe", "execl", "execle", "execlp", "execlpe", "kill",
    "killpg", "setsid", "setpgid", "setpgrp",
    # changes to files it did not open itself, and to its environment
    "remove", "unlink", "rmdir", "removedirs", "rename", "renames", "replace", "link", "symlink", "chmod",
    "chown", "lchown", "truncate", "chdir", "fchdir", "chroot", "putenv", "unsetenv",
)  # fmt: skip


def refuse(*args, **kwargs):
    raise PermissionError("not allowed in the sandbox")


def inside(path) -> bool:
    if isinstance(path, int):
        return True
    return os.path.realpath(os.path.join(HOME, os.fsdecode(path))).startswith(HOME + os.sep)


real_open, real_os_open = builtins.open, os.open


def guarded_open(file, mode="r", *args, **kwargs):
    if any(flag in mode for flag in "wax+") and not inside(file):
        raise PermissionError(f"writing outside the sandbox: {file}")
    return real_open(file, mode, *args, **kwargs)


def guarded_os_open(path, flags, *args, **kwargs):
    if flags & WRITE_FLAGS and not inside(path):
        raise PermissionError(f"writing outside the sandbox: {path}")
    return real_os_open(path, flags, *args, **kwargs)


def main() -> None:
    builtins.open = io.open = guarded_open
    os.open = posix.open = guarded_os_open
    for name in REFUSED:
        for module in (os, posix):
            if hasattr(module, name):
                setattr(module, name, refuse)
    import _posixsubprocess
    import shutil
    import socket
    import subprocess

    _posixsubprocess.fork_exec = refuse
    subprocess.Popen = subprocess.run = subprocess.call = refuse
    subprocess.check_call = subprocess.check_output = subprocess.getoutput = refuse
    socket.socket = socket.create_connection = socket.socketpair = socket.fromfd = refuse
    shutil.rmtree = shutil.move = refuse
    for module in ("ctypes", "_ctypes", "multiprocessing", "resource"):
        sys.modules[module] = None  # importing it raises ImportError
    path = sys.argv[1]
    with real_open(path) as handle:
        source = handle.read()
    sys.argv = [path]
    exec(compile(source, path, "exec"), {"__name__": "__main__", "__builtins__": builtins})


if __name__ == "__main__":
    main()
