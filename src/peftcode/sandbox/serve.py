"""The program's side of a tested run, inside the sandbox after the seccomp filter (see
:mod:`peftcode.sandbox.guard`): it loads the model-written program and answers the judge's requests
(:mod:`peftcode.sandbox.peer`), with values as :mod:`peftcode.sandbox.wire` encodes them.

Nothing here is trusted. It runs in the program's own process, which may rewrite any of it: the most a
program can do is answer a request with a value of its choosing, which is what a program does anyway. The
tests and the verdict are the judge's, in a process of its own (:mod:`peftcode.sandbox.judge`).

Requests of its own, beside those about the objects it lends:
- ``get NAME``: what the program defines by that name, as a value or a handle.
- ``main STDIN``: run the program as a script (``__main__``) with STDIN as its standard input, file
  descriptor 0 included (``input()``, ``sys.stdin.buffer``, ``open(0)``), and answer what it wrote to its
  standard output, file descriptor 1 included. A script that ends with ``os._exit`` keeps what it had
  written to the file descriptor by then, as a process of its own would.

A prelude (APPS' imports, or the imports of the tests: :func:`peftcode.sandbox.tests_column.prelude`) runs
before the program, in its namespace, each statement on its own, as the benchmark's own harness runs it.
"""

import atexit
import builtins
import gc
import io
import json
import os
import sys
import tempfile
import threading

import peer as peers

LOADED_AS = "program"


class Exited(BaseException):
    """``os._exit`` in a script: the script ends here."""


class Program:
    def __init__(self, source: str, path: str, prelude: str, peer: peers.Peer):
        self.source, self.path, self.prelude, self.peer = source, path, prelude, peer
        self.namespace = {"__name__": LOADED_AS, "__builtins__": builtins}

    def run(self, namespace: dict) -> None:
        for statement in self.prelude:
            try:
                exec(statement, namespace)
            except ImportError:
                pass  # a package the sandbox does not hold, as if the prelude did not name it
        exec(compile(self.source, self.path, "exec"), namespace)

    def load(self) -> dict:
        try:
            self.run(self.namespace)
        except Exception as exception:
            return {"loaded": False, **peers.error(exception)}
        return {"loaded": True}

    def get(self, message: dict) -> dict:
        return {"value": self.peer.codec.encode(self.namespace[str(message.get("name"))])}

    def main(self, message: dict) -> dict:
        """The program as a script, its standard input and output real files (in its folder's tmpfs), run
        as a process of its own would end: its threads joined, its exit handlers run and its files closed
        before its output is read."""
        saved = os.dup(0), os.dup(1)
        real_exit = os._exit
        with tempfile.TemporaryFile() as given, tempfile.TemporaryFile() as written:
            given.write(str(message.get("stdin")).encode())
            given.seek(0)
            os.dup2(given.fileno(), 0)
            os.dup2(written.fileno(), 1)
            sys.stdin = io.TextIOWrapper(io.BufferedReader(io.FileIO(0, "r", closefd=False)), "utf-8")
            captured = io.TextIOWrapper(io.BufferedWriter(io.FileIO(1, "w", closefd=False)), "utf-8")
            sys.stdout = sys.__stdout__ = captured
            exited = []

            def exit_now(status=0):
                exited.append(os.lseek(1, 0, os.SEEK_CUR))  # what reached the descriptor
                raise Exited

            os._exit = exit_now
            try:
                self.run_as_script()
            finally:
                os._exit = real_exit
                for stream in {id(s): s for s in (sys.stdout, captured)}.values():
                    stream.flush()
                for fd, copy in enumerate(saved):
                    os.dup2(copy, fd)
                    os.close(copy)
                sys.stdin, sys.stdout, sys.__stdout__ = ORIGINAL
            if exited:
                written.truncate(exited[0])
            written.seek(0)
            return {"stdout": written.read().decode(errors="replace")}

    def run_as_script(self) -> None:
        namespace = {"__name__": "__main__", "__builtins__": builtins}
        try:
            self.run(namespace)
            for thread in threading.enumerate():
                if thread is not threading.current_thread() and not thread.daemon:
                    thread.join()
        except (SystemExit, Exited):
            pass
        finally:
            atexit._run_exitfuncs()
            atexit._clear()
            namespace.clear()
            gc.collect()  # the script's own file objects flush as they close


ORIGINAL = sys.stdin, sys.stdout, sys.__stdout__


def serve(source: str, path: str, mode: str, prelude: str, requests: int, answers: int) -> None:
    """Answer requests until the judge closes its end. In ``module`` mode the program is loaded first (its
    definitions are what the tests call); in ``script`` mode it runs anew for each ``main`` request."""
    write = os.write
    sys.setrecursionlimit(peers.RECURSION)
    peer = peers.Peer("program", peers.Reader(requests), answers, write=write)
    statements = [compile(line, "prelude", "exec") for line in json.loads(prelude)]
    program = Program(source, path, statements, peer)
    peer.extra = {"get": program.get, "main": program.main}
    peer.send(program.load() if mode == "module" else {"loaded": True})
    peer.serve_until_ended()
