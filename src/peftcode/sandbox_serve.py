"""The program's side of a tested run, inside the sandbox after the seccomp filter (see
:mod:`peftcode.sandbox_guard`): it loads the model-written program and answers the judge's requests, one
at a time, each a line of JSON on a pipe, with plain values (:mod:`peftcode.wire`).

Nothing here is trusted. It runs in the program's own process, which may rewrite any of it: the most a
program can do is answer a request with a value of its choosing, which is what a program does anyway. The
tests and the verdict are the judge's, in a process of its own (:mod:`peftcode.judge`).

Requests:
- ``get NAME``: what the program defines by that name: a function or class (``callable``), a module
  (``module``: its name), or a plain value.
- ``call NAME ARGS KWARGS``: its return value. With ``method``, a name the program does not define is a
  method of one instance of its class ``Solution`` (APPS' call-based problems).
- ``main STDIN``: run the program as a script (``__main__``) with STDIN as its standard input, file
  descriptor 0 included (``input()``, ``sys.stdin.buffer``, ``open(0)``), and answer what it wrote to its
  standard output, file descriptor 1 included.
"""

import atexit
import builtins
import gc
import io
import os
import sys
import tempfile
import threading

import wire

LOADED_AS = "program"


def error(exception: BaseException) -> dict:
    """An exception as the judge rebuilds it: its class's name, its message, and the names of its bases (a
    JSONDecodeError is a ValueError to the tests)."""
    bases = [kind.__name__ for kind in type(exception).__mro__[1:]]
    return {"error": [type(exception).__name__, str(exception)[:1000], bases]}


class Program:
    def __init__(self, source: str, path: str):
        self.source, self.path = source, path
        self.namespace = {"__name__": LOADED_AS, "__builtins__": builtins}
        self.solution = None

    def load(self) -> dict:
        try:
            exec(compile(self.source, self.path, "exec"), self.namespace)
        except Exception as exception:
            return {"loaded": False, **error(exception)}
        return {"loaded": True}

    def target(self, name: str, method: bool):
        if name in self.namespace or not method:
            return self.namespace[name]
        if self.solution is None:
            self.solution = self.namespace["Solution"]()
        return getattr(self.solution, name)

    def get(self, name: str) -> dict:
        value = self.namespace[name]
        if type(value) is type(sys):
            return {"module": value.__name__}
        if callable(value):
            return {"callable": True}
        return {"value": wire.encode(value)}

    def call(self, name: str, args: list, kwargs: dict, method: bool = False) -> dict:
        """The return value, and the arguments as the call left them (a test may check a list the function
        sorted in place)."""
        arguments = [wire.decode(arg) for arg in args]
        keywords = {key: wire.decode(value) for key, value in kwargs.items()}
        try:
            answer = {"value": wire.encode(self.target(name, method)(*arguments, **keywords))}
        except Exception as exception:
            answer = error(exception)
        left = {
            "args": [wire.encode(arg) for arg in arguments],
            "kwargs": [wire.encode(v) for v in keywords.values()],
        }
        return {**answer, "args": left}

    def main(self, stdin: str) -> dict:
        """The program as a script, its standard input and output real files (in its folder's tmpfs), run
        as a process of its own would end: its threads joined, its exit handlers run and its files closed
        before its output is read."""
        saved = os.dup(0), os.dup(1)
        with tempfile.TemporaryFile() as given, tempfile.TemporaryFile() as written:
            given.write(stdin.encode())
            given.seek(0)
            os.dup2(given.fileno(), 0)
            os.dup2(written.fileno(), 1)
            sys.stdin = io.TextIOWrapper(io.BufferedReader(io.FileIO(0, "r", closefd=False)), "utf-8")
            captured = io.TextIOWrapper(io.BufferedWriter(io.FileIO(1, "w", closefd=False)), "utf-8")
            sys.stdout = sys.__stdout__ = captured
            try:
                run_as_script(self.source, self.path)
            finally:
                for stream in {id(s): s for s in (sys.stdout, captured)}.values():
                    stream.flush()
                for fd, copy in enumerate(saved):
                    os.dup2(copy, fd)
                    os.close(copy)
                sys.stdin, sys.stdout, sys.__stdout__ = ORIGINAL
            written.seek(0)
            return {"stdout": written.read().decode(errors="replace")}


ORIGINAL = sys.stdin, sys.stdout, sys.__stdout__


def run_as_script(source: str, path: str) -> None:
    namespace = {"__name__": "__main__", "__builtins__": builtins}
    try:
        exec(compile(source, path, "exec"), namespace)
        for thread in threading.enumerate():
            if thread is not threading.current_thread() and not thread.daemon:
                thread.join()
    except SystemExit:
        pass
    finally:
        atexit._run_exitfuncs()
        atexit._clear()
        namespace.clear()
        gc.collect()  # the script's own file objects flush as they close


def serve(source: str, path: str, mode: str, requests: int, answers: int) -> None:
    """Answer requests until the judge closes its end. In ``module`` mode the program is loaded first (its
    definitions are what the tests call); in ``script`` mode it runs anew for each ``main`` request."""
    write = os.write
    program = Program(source, path)
    wire.send(answers, program.load() if mode == "module" else {"loaded": True}, write)
    reader = wire.Reader(requests)
    while True:
        try:
            request = reader.receive()
        except wire.Ended:
            return
        operation = request.pop("op", None)
        try:
            answer = getattr(program, operation)(**request) if operation in ("get", "call", "main") else None
        except Exception as exception:
            answer = error(exception)
        wire.send(answers, answer or {"error": ["ValueError", "unknown request"]}, write)
