"""The last trusted code of a sandboxed run, inside bubblewrap: it loads the seccomp filter, then
- ``python -s -S guard.py FILTER PROGRAM FD`` runs the program and writes ``finished`` to the pipe FD
  once the program's last line has run (a program that exits on the way never gets there);
- ``python -s -S guard.py FILTER PROGRAM serve MODE PRELUDE REQUESTS ANSWERS``, a tested run,
  hands the program to :mod:`peftcode.sandbox.serve`, which answers the judge's requests on those pipes.

The interpreter runs without ``site`` (``-S``): what a program may import is the standard library and the
packages bound under ``SITE`` (see :mod:`peftcode.sandbox.namespaces`), which the guard adds to the path.

The program runs as a module named ``program``, not ``__main__``: a candidate's ``if __name__ ==
"__main__":`` block (a demo, ``unittest.main()``, ``sys.exit(main())``) does not run, as in HumanEval's
and MBPP's harnesses, which ``exec`` the candidate and its tests. (APPS' input/output harness runs each
solution as ``__main__`` itself, since such a solution is a script.)

The filter (built by :func:`peftcode.sandbox.seccomp.seccomp_filter`) is what the kernel enforces from
here on, for this process and every thread it starts: no new processes or programs, no tracing, no
namespaces or mounts, no sockets but Unix ones. It is loaded here rather than by bubblewrap, which loads
its filter before it executes the command and so could not forbid ``execve``. A filter that does not load
stops the run: the program is never started without it.

After the filter, starting a process through Python's own functions (``os.system``, ``subprocess``) fails
early with a message that says why: convenience, not a layer anything relies on.
"""

import builtins
import ctypes
import os
import posix
import sys

SITE = "/run/peftcode/site"  # the packages a study allows its programs (see peftcode.sandbox.namespaces)
PR_SET_DUMPABLE, PR_SET_NO_NEW_PRIVS, PR_SET_SECCOMP, SECCOMP_MODE_FILTER = 4, 38, 22, 2


class SockFprog(ctypes.Structure):
    _fields_ = [("len", ctypes.c_ushort), ("filter", ctypes.c_void_p)]


def load_seccomp_filter(path: str) -> None:
    with open(path, "rb") as handle:
        program = handle.read()
    instructions = ctypes.create_string_buffer(program, len(program))
    fprog = SockFprog(len(program) // 8, ctypes.addressof(instructions))
    libc = ctypes.CDLL(None, use_errno=True)
    # No core dump, ever: a pipe in the host's core_pattern would start a helper as root for each crash.
    if libc.prctl(PR_SET_DUMPABLE, 0, 0, 0, 0) != 0:
        raise OSError(ctypes.get_errno(), "prctl(PR_SET_DUMPABLE)")
    if libc.prctl(PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) != 0:
        raise OSError(ctypes.get_errno(), "prctl(PR_SET_NO_NEW_PRIVS)")
    if libc.prctl(PR_SET_SECCOMP, SECCOMP_MODE_FILTER, ctypes.byref(fprog), 0, 0) != 0:
        raise OSError(ctypes.get_errno(), "prctl(PR_SET_SECCOMP)")


# Calls that would fail in the kernel with a bare EPERM: refused first, with a message that says why.
REFUSED = (
    "system", "popen", "fork", "forkpty", "spawnv", "spawnve", "spawnvp", "spawnvpe", "posix_spawn",
    "posix_spawnp", "execv", "execve", "execvp", "execvpe", "execl", "execle", "execlp", "execlpe",
)  # fmt: skip


def refuse(*args, **kwargs):
    raise PermissionError("not allowed in the sandbox: programs cannot start processes or other programs")


def friendly_errors() -> None:
    for name in REFUSED:
        for module in (os, posix):
            if hasattr(module, name):
                setattr(module, name, refuse)
    import _posixsubprocess
    import subprocess

    _posixsubprocess.fork_exec = refuse
    subprocess.Popen = subprocess.run = subprocess.call = refuse
    subprocess.check_call = subprocess.check_output = subprocess.getoutput = refuse


class ThreadsForProcesses:
    """``multiprocessing`` and ``ProcessPoolExecutor`` on threads, installed as the program imports them:
    a program may not start processes, and one that maps a function over a pool gets the same results
    from threads (``multiprocessing.dummy``), as it would from processes in plain Python."""

    PATCHED = ("multiprocessing", "concurrent.futures")

    def find_spec(self, name, path=None, target=None):
        if name not in self.PATCHED:
            return None
        import importlib.machinery

        spec = importlib.machinery.PathFinder.find_spec(name, path)
        if spec is not None:
            run = spec.loader.exec_module

            def exec_module(module):
                run(module)
                self.patch(name, module)

            spec.loader.exec_module = exec_module
        return spec

    @staticmethod
    def patch(name, module) -> None:
        if name == "concurrent.futures":
            module.ProcessPoolExecutor = module.ThreadPoolExecutor
            return
        from multiprocessing import dummy

        for attribute in dummy.__all__:
            setattr(module, attribute, getattr(dummy, attribute))


def main() -> None:
    filter_path, path, *run = sys.argv[1:]
    try:
        load_seccomp_filter(filter_path)
    except OSError as error:
        sys.stderr.write(f"peftcode sandbox: the seccomp filter did not load ({error}); not running\n")
        sys.exit(125)
    with open(path) as handle:
        source = handle.read()
    if os.path.isdir(SITE):
        sys.path.append(SITE)
    write = os.write  # the program may replace the module's
    friendly_errors()
    sys.meta_path.insert(0, ThreadsForProcesses())
    sys.argv = [path]
    if run[0] == "serve":
        # The program's side of the wire lies beside this file (bound there in the sandbox).
        sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
        import serve

        mode, prelude, requests, answers = run[1:]
        serve.serve(source, path, mode, prelude, int(requests), int(answers))
        return
    exec(compile(source, path, "exec"), {"__name__": "program", "__builtins__": builtins})
    write(int(run[0]), b"finished")


if __name__ == "__main__":
    main()
