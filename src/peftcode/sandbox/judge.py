"""The verdict on a model-written program, computed where the program cannot reach it
(``python -s judge.py REQUESTS ANSWERS``, the test spec on standard input, the verdict on standard output).

The program runs in the sandbox and answers requests (:mod:`peftcode.sandbox.serve`); the benchmark's tests
run here, in a process of the evaluator's own that shares nothing with the program but two pipes. The
tests run as the benchmarks' own harnesses run them, in one namespace with the program: a name the tests
use and do not define is the program's, and so is every name the task asks the program to write (``names``
in the spec: the reference solution's functions and classes, or the signatures the tests declare without a
body), builtin names included, wherever the tests use them (``def max(xs)``, then ``res = max([1, 5, 3])``).
Every other builtin stays Python's, so that a program cannot redefine ``abs`` under
``abs(f(x) - y) < 1e-6``.

What the program returns arrives as a value of the same type (:mod:`peftcode.sandbox.wire`), or, where it
cannot
be copied, as a stand-in (:mod:`peftcode.sandbox.peer`): a generator the tests consume as they would the
program's
own, an object of the program's class whose attributes and methods they use. Every comparison and every
truth test the tests make is computed here, by Python's own types, over plain values: a stand-in equals
only itself. So no write to any descriptor, no frame or trace trick, no patched builtin, no object with
its own ``__eq__`` and no early or late exit in the program can change what a test finds, and the
expected values of APPS' cases never enter the program's process. What the tests pass that cannot be
copied (a lambda, a generator) reaches the program as a stand-in this process serves; it answers calls,
items, iteration and ``isinstance``, and attributes only of objects of the tests' own classes (never a
lambda's ``__globals__`` or a generator's frame, which hold the tests). An argument the program's
function changed in place (a list it sorted) changes here too; an exception it raised reaches the tests as
one of its builtin base class, never as StopIteration.

Only the standard library and its sibling modules.
"""

import ast
import builtins
import ctypes
import json
import os
import resource
import sys
import time
import traceback
import types

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import peer as peers  # noqa: E402
import tests_column  # noqa: E402

BUILTIN_NAMES = frozenset(dir(builtins))
PR_SET_DUMPABLE = 4
ProgramFailed = peers.Failed
# What the program may ask of the tests' objects: calls, items, iteration and what they print; an attribute
# only of an object of a class the tests define (a linked list's node), never of a function, generator,
# frame or module (a lambda's __globals__, a generator's gi_frame hold the tests).
SERVED = {"call", "getitem", "getattr", "iter", "next", "len", "bool", "str", "repr", "instancecheck"}


class JudgePeer(peers.Peer):
    """Calls of the program's functions bring back their arguments as the call left them."""

    arguments_back = True

    @staticmethod
    def attribute_allowed(target) -> bool:
        return type(target).__module__ == "tests"

    def after_call(self, given: list, answer: dict) -> None:
        if answer.get("args") is None:
            return
        try:
            left = self.codec.decode(answer["args"])
            for before, after in zip(given, left, strict=False):
                changed_in_place(before, after)
        except Exception as error:
            raise ProgramFailed(f"the program's arguments came back unreadable: {error!r:.200}") from None


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
    elif isinstance(given, dict | set) and given != left:  # an unchanged set keeps its order
        given.clear()
        given.update(left)


class TestNamespace(dict):
    """The tests' globals: their own definitions, the program's names the task asks for, Python's
    builtins, then anything else the program defines."""

    def __init__(self, program: peers.Peer, modules_only=frozenset()):
        super().__init__(__name__="tests", __builtins__=builtins)
        self.program, self.modules_only = program, modules_only

    def fetch(self, name: str):
        """The program's value for ``name``; KeyError where it defines none."""
        answer = self.program.request("get", name=name)
        if "error" in answer:
            raise KeyError(name)
        return self.program.value(answer)

    def __missing__(self, name: str):
        if name in BUILTIN_NAMES or name.startswith("__"):
            raise KeyError(name)
        value = self.fetch(name)
        # ``math.isclose(...)`` with the program's ``math``: the judge's own module of that name, never an
        # object of the program's that would decide the comparison.
        if name in self.modules_only and not isinstance(value, types.ModuleType):
            raise ProgramFailed(f"the tests use {name} as a module, and the program's {name} is not one")
        if isinstance(value, peers.Remote | types.ModuleType | type):
            self[name] = value  # a function, class or module: the same one at every use
        return value  # a value is read anew at each use, as the program's global may change


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


def builtins_under_test(tree: ast.Module) -> set[str]:
    """Where the task's names are not known (no reference, no declaration): builtin names that the tests
    call as the function asked for (MBPP's ``assert max(1, 2) == 2``), only where the tests use no name
    they leave undefined, and only a builtin called in every module-level assert that uses builtins alone."""
    loaded = {
        node.id for node in ast.walk(tree) if isinstance(node, ast.Name) and isinstance(node.ctx, ast.Load)
    }
    if loaded - BUILTIN_NAMES - bound_names(tree):
        return set()  # the task's function has a name of its own
    claimed = None
    for node in tree.body:
        used = {name.id for name in ast.walk(node) if isinstance(name, ast.Name)}
        if isinstance(node, ast.Assert) and used <= BUILTIN_NAMES:
            # Not a builtin that wraps another call: ``abs(max(xs) - 2.5)`` asks for max, not abs.
            called = {call.func.id for call in ast.walk(node) if isinstance(call, ast.Call)
                      and isinstance(call.func, ast.Name) and not wraps_a_call(call)}  # fmt: skip
            claimed = called if claimed is None else claimed & called
    return claimed or set()


def wraps_a_call(call: ast.Call) -> bool:
    return any(
        isinstance(inner, ast.Call)
        for argument in [*call.args, *call.keywords]
        for inner in ast.walk(argument)
    )


def bound_names(tree: ast.Module) -> set[str]:
    bound = {
        node.id for node in ast.walk(tree) if isinstance(node, ast.Name) and isinstance(node.ctx, ast.Store)
    }
    bound |= {node.arg for node in ast.walk(tree) if isinstance(node, ast.arg)}
    bound |= {node.name for node in ast.walk(tree) if isinstance(node, ast.FunctionDef | ast.ClassDef)}
    return bound | {(alias.asname or alias.name).split(".")[0] for node in ast.walk(tree)
                    if isinstance(node, ast.Import | ast.ImportFrom) for alias in node.names}  # fmt: skip


def run_code_tests(program: peers.Peer, tests: str, names: list[str]) -> None:
    tree = ast.parse(tests)
    declared = [node.name for node in tree.body if is_declaration(node)]
    tree.body = [node for node in tree.body if not is_declaration(node)]
    bases = {node.value.id for node in ast.walk(tree)
             if isinstance(node, ast.Attribute) and isinstance(node.value, ast.Name)}  # fmt: skip
    namespace = TestNamespace(program, frozenset(bases - set(names) - set(declared)))
    # What the tests define with a body stays theirs (HumanEval's poly, from the prompt).
    own = {node.name for node in tree.body if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef
           | ast.ClassDef)}  # fmt: skip
    asked = [name for name in names if name not in own] + declared or sorted(builtins_under_test(tree))
    for name in asked:
        try:
            namespace[name] = namespace.fetch(name)
        except KeyError:
            pass  # not defined by the program: the tests' own, or Python's, as in plain Python
    exec(compile(tree, "tests", "exec"), namespace)


def lines(value) -> str:
    return "\n".join(map(str, value)) if isinstance(value, list) else str(value)


def program_function(program: peers.Peer, name: str):
    """APPS' call-based function: the program's own, or a method of one instance of its ``Solution``."""
    namespace = TestNamespace(program)
    try:
        return namespace.fetch(name)
    except KeyError:
        return getattr(namespace.fetch("Solution")(), name)


def run_io_tests(program: peers.Peer, spec: dict) -> None:
    """APPS' cases: each call's return value, or each run's standard output, against the expected one,
    which the program never sees."""
    function = program_function(program, spec["fn_name"]) if spec["fn_name"] else None
    for number, (given, expected) in enumerate(spec["cases"], 1):
        if function is not None:
            result = function(*given)
            result = list(result) if isinstance(result, tuple) else result  # as APPS' own harness does
            if not (result == expected or [result] == expected):
                raise AssertionError(f"case {number}: returned {result!r:.200}, expected {expected!r:.200}")
        else:
            answer = program.request("main", stdin=lines(given))
            if "error" in answer:
                program.value(answer)
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
    reader = peers.Reader(answers, time.monotonic() + spec["timeout_s"])
    program = JudgePeer("judge", reader, requests, serves=SERVED, allowed=spec.get("packages", ()))
    tests = spec["tests"]
    try:
        loaded = program.receive()
        if not loaded.get("loaded"):
            error = loaded.get("error") or ["", "no word"]
            return {"status": "failed", "reason": f"the program did not load: {error[0]}: {error[1]}"}
        if tests_column.is_io_tests(tests):
            run_io_tests(program, tests_column.io_spec(tests))
        else:
            run_code_tests(program, tests, list(spec.get("names", [])))
    except (Exception, ProgramFailed) as error:
        return {"status": "failed", "reason": reason(error, tests)}
    return {"status": "passed"}


def main() -> None:
    # Not dumpable: no process of the same user may open its memory or descriptors under /proc (a program
    # run without isolation is one).
    ctypes.CDLL(None).prctl(PR_SET_DUMPABLE, 0, 0, 0, 0)
    requests, answers = int(sys.argv[1]), int(sys.argv[2])
    sys.setrecursionlimit(peers.RECURSION)
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
