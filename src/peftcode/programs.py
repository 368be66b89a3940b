"""A model-written program and its tests as one program to run (in :mod:`peftcode.sandbox`): the code
followed by its test code (asserts, a check function), or, for input/output pairs (APPS), a harness that
runs the code once per case."""

from __future__ import annotations

import json

IO_TESTS = "# input/output tests\n"
IO_HARNESS = """import contextlib, io, json, sys

SPEC = json.loads({spec!r})
SOURCE = {source!r}


def lines(value):
    return "\\n".join(map(str, value)) if isinstance(value, list) else str(value)


if SPEC["fn_name"]:
    namespace = {{"__name__": "solution"}}
    exec(compile(SOURCE, "solution.py", "exec"), namespace)
    name = SPEC["fn_name"]
    target = namespace[name] if name in namespace else getattr(namespace["Solution"](), name)
    for args, expected in SPEC["cases"]:
        result = target(*args)
        assert result == expected or [result] == expected, (args, expected, result)
else:
    for stdin, expected in SPEC["cases"]:
        sys.stdin, out = io.StringIO(lines(stdin)), io.StringIO()
        with contextlib.redirect_stdout(out):
            try:
                exec(compile(SOURCE, "solution.py", "exec"), {{"__name__": "__main__"}})
            except SystemExit:
                pass
        assert out.getvalue().split() == lines(expected).split(), (stdin, expected, out.getvalue())
"""


def io_tests(pairs: list, fn_name: str | None = None) -> str:
    """Tests from input/output pairs (APPS): standard input -> standard output, or, with ``fn_name``,
    arguments -> the function's (or a ``Solution`` method's) return value."""
    return IO_TESTS + json.dumps({"fn_name": fn_name, "cases": pairs})


def program_with_tests(code: str, tests: str) -> str:
    """The program to run: the code followed by its tests (asserts, a check function), or, for
    input/output tests, a harness that runs the code once per case with that case's input."""
    if tests.startswith(IO_TESTS):
        return IO_HARNESS.format(spec=tests[len(IO_TESTS) :], source=code)
    return f"{code}\n\n{tests}\n"
