"""The verdict on a model-written program, computed where the program cannot reach it
(``python -I judge.py REQUESTS ANSWERS``, the test spec on standard input, the verdict on standard output).

The program runs in the sandbox and answers requests (:mod:`peftcode.sandbox_serve`); the benchmark's tests
run here, in a process of the evaluator's own that shares nothing with the program but two pipes. A test
calls the program's function through a stand-in that sends the arguments and rebuilds the answer as a plain
value (:mod:`peftcode.wire`); the comparison is made here, by Python's own types. So no write to any
descriptor, no frame or trace trick, no patched builtin, no object with its own ``__eq__`` and no early or
late exit in the program can change what a test finds, and the expected values of APPS' cases never enter
the program's process.

Code tests (asserts, HumanEval's ``check``) are trusted text: what they define stays theirs, HumanEval's
``poly`` or ``encode_cyclic`` say, taken from the prompt that the dataset's ``tests`` template includes. A
function the tests declare without a body (a docstring or ``...`` only: the prompt's signature of the
function to write) and any name they use without defining it are the program's, and so is a builtin name
that an assert calls as the function asked for (see :func:`builtins_under_test`); a stdlib module the
program imported under its own name (``math``) is imported here. A value that cannot cross (a generator, an
object of the program's own class) fails the test that asked for it; an argument the program's function
changed in place (a list it sorted) changes here too; an exception it raised reaches the tests as one of
its builtin base class (a JSONDecodeError is a ValueError), but never as StopIteration, which would end the
tests' own iteration as if it were done.

Only the standard library and its sibling modules ``wire`` and ``programs``.
"""

import ast
import builtins
import ctypes
import importlib
import json
import os
import resource
import sys
import time
import traceback

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import programs  # noqa: E402
import wire  # noqa: E402

BUILTIN_NAMES = frozenset(dir(builtins))
# Stdlib modules whose import does something (opens a browser, prints): never imported for a program.
IMPORT_EFFECTS = frozenset({"antigravity", "this", "turtle", "tkinter", "idlelib", "webbrowser"})
PR_SET_DUMPABLE = 4


class ProgramFailed(BaseException):
    """The program could not answer: it ended, did not load, answered out of turn or too late, or with
    what is not a plain value. Not an Exception, so that no ``except Exception`` in the tests swallows it."""


class Channel:
    def __init__(self, requests: int, answers: int, deadline: float):
        self.requests, self.answers = requests, wire.Reader(answers, deadline)

    def ask(self, request: dict | None) -> dict:
        """The answer to ``request``; with None, the program's first word (whether it loaded)."""
        try:
            if request is not None:
                wire.send(self.requests, request)
            return self.answers.receive()
        except (wire.Ended, BrokenPipeError):
            raise ProgramFailed("the program ended before its tests did") from None
        except TimeoutError:
            raise ProgramFailed("the program did not answer in time") from None
        except ValueError as error:
            raise ProgramFailed(f"the program's answer is not a message: {error}") from None

    def value(self, answer: dict):
        """The plain value of an answer, or the program's exception, rebuilt (see :func:`rebuilt`)."""
        if "error" in answer:
            raise rebuilt(answer["error"])
        if "value" not in answer:
            raise ProgramFailed("the program's answer holds no value")
        return self.decoded(answer["value"])

    def decoded(self, value):
        try:
            return wire.decode(value)
        except Exception as error:  # whatever a malformed value raises (a zero denominator, say)
            raise ProgramFailed(f"the program's answer is not a plain value: {error!r:.200}") from None

    def call(self, name: str, args: tuple, kwargs: dict, method: bool = False):
        try:
            request = {
                "op": "call",
                "name": name,
                "args": [wire.encode(arg) for arg in args],
                "kwargs": {key: wire.encode(value) for key, value in kwargs.items()},
                "method": method,
            }
        except wire.CannotCross as error:
            raise ProgramFailed(f"an argument of {name} cannot be passed to the program: {error}") from None
        answer = self.ask(request)
        left = answer.get("args") or {}
        if not isinstance(left, dict):
            raise ProgramFailed("the program's answer is not a message")
        try:
            given_back = [*left.get("args", []), *left.get("kwargs", [])]
            for given, after in zip([*args, *kwargs.values()], given_back, strict=False):
                changed_in_place(given, self.decoded(after))
        except ProgramFailed:
            raise
        except Exception as error:
            raise ProgramFailed(f"the program's arguments came back unreadable: {error!r:.200}") from None
        return self.value(answer)


def changed_in_place(given, left) -> None:
    """An argument as the program's call left it, where a call could change it: lists, dicts, sets and
    bytearrays, and those inside them or inside tuples, get the contents the program's copy ended with, in
    place, so that the tests' own references to them see the change."""
    if type(given) is not type(left):
        return
    if isinstance(given, list | tuple) and len(given) == len(left):
        for index, (inner, after) in enumerate(zip(given, left, strict=True)):
            if isinstance(inner, list | tuple | dict | set | bytearray) and type(inner) is type(after):
                changed_in_place(inner, after)
            elif isinstance(given, list) and not (inner is after or inner == after):
                given[index] = after
    elif isinstance(given, list | bytearray):
        given[:] = left
    elif isinstance(given, dict) and given.keys() == left.keys():
        for key, after in left.items():
            inner = given[key]
            if isinstance(inner, list | tuple | dict | set | bytearray) and type(inner) is type(after):
                changed_in_place(inner, after)
            elif not (inner is after or inner == after):
                given[key] = after
    elif isinstance(given, dict | set):
        given.clear()
        given.update(left)


# Exceptions a test may expect from the program, rebuilt by the names of its class and bases; not those
# that steer iteration (a StopIteration raised into map() or all() would end it as if it were done).
NOT_REBUILT = (StopIteration, StopAsyncIteration, BaseExceptionGroup)


def rebuilt(error) -> Exception:
    """The program's exception as the tests see it: of a class named as the program's, subclassing the
    first builtin exception among its bases, with its message."""
    kind, message, bases = (list(error) + ["", "", []])[:3] if isinstance(error, list) else ("", "", [])
    kind, message = str(kind)[:100], str(message)
    base = ProgramError
    for name in [kind, *(bases if isinstance(bases, list) else [])]:
        found = getattr(builtins, str(name), None)
        if isinstance(found, type) and issubclass(found, Exception) and not issubclass(found, NOT_REBUILT):
            base = found
            break
    name = kind if kind.isidentifier() else "ProgramError"
    cls = type(name, (base,), {"__init__": Exception.__init__, "__str__": lambda self: self.args[0]})
    exception = cls(message)
    exception.add_note(f"raised in the program as {kind}")
    return exception


class ProgramError(Exception):
    """An exception the program raised, of a class that is not a builtin one."""


class ProgramFunction:
    """What a test calls in place of the program's function."""

    def __init__(self, channel: Channel, name: str):
        self.channel, self.__name__ = channel, name

    def __call__(self, *args, **kwargs):
        return self.channel.call(self.__name__, args, kwargs)

    def __repr__(self) -> str:
        return f"<the program's {self.__name__}>"


class TestNamespace(dict):
    """The tests' globals: their own definitions first, then Python's builtins, then the program's."""

    def __init__(self, channel: Channel):
        super().__init__(__name__="tests", __builtins__=builtins)
        self.channel = channel

    def __missing__(self, name: str):
        if name in BUILTIN_NAMES or name.startswith("__"):
            raise KeyError(name)
        answer = self.channel.ask({"op": "get", "name": name})
        if "error" in answer:
            raise KeyError(name)  # NameError, as when the program does not define it
        if "module" in answer:
            if answer["module"] != name or name not in sys.stdlib_module_names or name in IMPORT_EFFECTS:
                raise ProgramFailed(f"{name} is a module that cannot be passed to the tests")
            value = importlib.import_module(name)
        elif answer.get("callable"):
            value = ProgramFunction(self.channel, name)
        else:
            value = self.channel.value(answer)
        self[name] = value
        return value


def is_declaration(node: ast.stmt) -> bool:
    """A function with no body: docstrings, ``...``, ``pass`` and imports alone (HumanEval/115's
    signature imports ``math`` before its docstring)."""
    if not isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef):
        return False
    return all(
        isinstance(statement, ast.Pass | ast.Import | ast.ImportFrom)
        or (isinstance(statement, ast.Expr) and isinstance(statement.value, ast.Constant))
        for statement in node.body
    )


HIDDEN = "__program_"  # a name the tests' builtin-named calls of the program are rewritten to


def builtins_under_test(tree: ast.Module) -> set[str]:
    """Builtin names that the tests call as the function asked for (MBPP's ``assert max(1, 2) == 2``,
    where ``max`` is the task): only where the tests declare no function of the program's and use no name
    they leave undefined, and only a builtin called in every module-level assert that uses builtins alone.
    Anywhere else a builtin stays Python's, so that a program cannot redefine ``abs`` under
    ``abs(f(x) - y) < 1e-6``."""
    loaded = {
        node.id for node in ast.walk(tree) if isinstance(node, ast.Name) and isinstance(node.ctx, ast.Load)
    }
    if loaded - BUILTIN_NAMES - bound_names(tree):
        return set()  # the task's function has a name of its own
    claimed = None
    for node in tree.body:
        used = {name.id for name in ast.walk(node) if isinstance(name, ast.Name)}
        if isinstance(node, ast.Assert) and used <= BUILTIN_NAMES:
            called = {call.func.id for call in ast.walk(node) if isinstance(call, ast.Call)
                      and isinstance(call.func, ast.Name)}  # fmt: skip
            claimed = called if claimed is None else claimed & called
    return claimed or set()


def bound_names(tree: ast.Module) -> set[str]:
    bound = {
        node.id for node in ast.walk(tree) if isinstance(node, ast.Name) and isinstance(node.ctx, ast.Store)
    }
    bound |= {node.arg for node in ast.walk(tree) if isinstance(node, ast.arg)}
    bound |= {node.name for node in ast.walk(tree) if isinstance(node, ast.FunctionDef | ast.ClassDef)}
    return bound | {(alias.asname or alias.name).split(".")[0] for node in ast.walk(tree)
                    if isinstance(node, ast.Import | ast.ImportFrom) for alias in node.names}  # fmt: skip


def run_code_tests(channel: Channel, tests: str) -> None:
    tree = ast.parse(tests)
    declared = [node.name for node in tree.body if is_declaration(node)]
    tree.body = [node for node in tree.body if not is_declaration(node)]
    namespace = TestNamespace(channel)
    for name in declared:
        namespace.pop(name, None)
    claimed = builtins_under_test(tree) if not declared else set()
    for name in sorted(claimed):
        if channel.ask({"op": "get", "name": name}).get("callable"):
            namespace[HIDDEN + name] = ProgramFunction(channel, name)
            # Only the asserts' calls of it: other uses of the builtin stay Python's.
            for node in (n for n in tree.body if isinstance(n, ast.Assert)):
                for call in ast.walk(node):
                    if (
                        isinstance(call, ast.Call)
                        and isinstance(call.func, ast.Name)
                        and call.func.id == name
                    ):
                        call.func.id = HIDDEN + name
    exec(compile(tree, "tests", "exec"), namespace)


def lines(value) -> str:
    return "\n".join(map(str, value)) if isinstance(value, list) else str(value)


def run_io_tests(channel: Channel, spec: dict) -> None:
    """APPS' cases: each call's return value, or each run's standard output, against the expected one,
    which the program never sees."""
    for number, (given, expected) in enumerate(spec["cases"], 1):
        if spec["fn_name"]:
            result = channel.call(spec["fn_name"], tuple(given), {}, method=True)
            result = list(result) if isinstance(result, tuple) else result  # as APPS' own harness does
            if not (result == expected or [result] == expected):
                raise AssertionError(f"case {number}: returned {result!r:.200}, expected {expected!r:.200}")
        else:
            answer = channel.ask({"op": "main", "stdin": lines(given)})
            if "error" in answer:
                channel.value(answer)
            written = answer.get("stdout")
            if not isinstance(written, str):
                raise ProgramFailed("the program's answer holds no output")
            if written.split() != lines(expected).split():
                raise AssertionError(f"case {number}: wrote {written!r:.200}, expected {expected!r:.200}")


def reason(error: BaseException, tests: str) -> str:
    """What failed, and at which line of the tests (the last of their frames)."""
    if isinstance(error, ProgramFailed):
        return str(error)
    said = f"{type(error).__name__}: {error}"[:500]
    frames = [frame for frame in traceback.extract_tb(error.__traceback__) if frame.filename == "tests"]
    if not frames:
        return said
    line = tests.splitlines()[frames[-1].lineno - 1].strip()[:200]
    return f"{said} (tests, line {frames[-1].lineno}: {line})"


def judge(spec: dict, requests: int, answers: int) -> dict:
    channel = Channel(requests, answers, time.monotonic() + spec["timeout_s"])
    tests = spec["tests"]
    try:
        loaded = channel.ask(None)
        if not loaded.get("loaded"):
            error = loaded.get("error") or ["", "no word"]
            return {"status": "failed", "reason": f"the program did not load: {error[0]}: {error[1]}"}
        if programs.is_io_tests(tests):
            run_io_tests(channel, programs.io_spec(tests))
        else:
            run_code_tests(channel, tests)
    except (Exception, ProgramFailed) as error:
        return {"status": "failed", "reason": reason(error, tests)}
    return {"status": "passed"}


def main() -> None:
    # Not dumpable: no process of the same user may open its memory or descriptors under /proc (a program
    # run without isolation is one).
    ctypes.CDLL(None).prctl(PR_SET_DUMPABLE, 0, 0, 0, 0)
    requests, answers = int(sys.argv[1]), int(sys.argv[2])
    spec = json.load(sys.stdin)
    for name, value in spec["rlimits"].items():
        resource.setrlimit(getattr(resource, name), (value, value))
    # What the tests print goes where standard error goes; standard output carries the verdict alone.
    verdict_fd = os.dup(1)
    os.dup2(2, 1)
    verdict = judge(spec, requests, answers)
    sys.stdout.flush()
    os.write(verdict_fd, json.dumps(verdict).encode() + b"\n")


if __name__ == "__main__":
    main()
