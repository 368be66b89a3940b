"""The tests a model-written program must meet, as the ``tests`` column holds them: test code (asserts, a
check function, with the definitions they need), or, for input/output pairs (APPS), a spec of the cases.
The tests run in the judge (:mod:`peftcode.judge`), the program in the sandbox; this module says how.

Only the standard library: the judge imports it by path.
"""

import json

IO_TESTS = "# input/output tests\n"


def io_tests(pairs: list, fn_name: str | None = None) -> str:
    """Tests from input/output pairs (APPS): standard input -> standard output, or, with ``fn_name``,
    arguments -> the function's (or a ``Solution`` method's) return value."""
    return IO_TESTS + json.dumps({"fn_name": fn_name, "cases": pairs})


def is_io_tests(tests: str) -> bool:
    return tests.startswith(IO_TESTS)


def io_spec(tests: str) -> dict:
    return json.loads(tests[len(IO_TESTS) :])


def serve_mode(tests: str) -> str:
    """How the sandbox runs the program: loaded once as a module whose functions the tests call, or, for
    standard input/output cases, anew as a script for each case."""
    return "script" if is_io_tests(tests) and not io_spec(tests)["fn_name"] else "module"
