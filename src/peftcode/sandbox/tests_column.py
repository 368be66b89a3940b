"""The tests a model-written program must meet, as the ``tests`` column holds them: test code (asserts, a
check function, with the definitions they need), or, for input/output pairs (APPS), a spec of the cases.
The tests run in the judge (:mod:`peftcode.sandbox.judge`), the program in the sandbox; this module says how.

Only the standard library: the judge imports it by path.
"""

import ast
import json

IO_TESTS = "# input/output tests\n"
# What APPS' own harness (testing_util.py) prepends to every solution it runs, both kinds: solutions use
# its names without importing them (``List[int]`` in a starter code's signature, ``sqrt``, ``deque``).
APPS_PRELUDE = """import sys
import time
import itertools
from itertools import accumulate, product, permutations, combinations
import collections
from collections import Counter, OrderedDict, deque, defaultdict, ChainMap
from functools import lru_cache
import math
from math import sqrt, sin, cos, tan, ceil, fabs, floor, gcd, exp, log, log2
import fractions
from typing import List, Tuple
import numpy as np
import random
import heapq
from heapq import *
"""


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


def prelude(tests: str) -> str:
    """What runs before the program, in its namespace, each statement on its own (one that cannot import
    is passed over): APPS' imports for its cases, as its harness runs them; for test code, the imports
    the tests make at their top level, which plain Python's one namespace gives the program too (a
    function that uses ``math`` the tests imported). Nothing else of the tests reaches the program."""
    if is_io_tests(tests):
        return APPS_PRELUDE
    try:
        body = ast.parse(tests).body
    except (SyntaxError, ValueError):
        return ""
    return "".join(ast.unparse(node) + "\n" for node in body if isinstance(node, ast.Import | ast.ImportFrom))


def task_names(reference: str, tests: str) -> list[str]:
    """The names the task asks the program to write: the reference solution's top-level functions and
    classes that the tests use (MBPP's ``max_chain_length`` and its ``Pair``); empty where the reference
    does not parse."""
    try:
        defined = [
            node.name
            for node in ast.parse(reference).body
            if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef | ast.ClassDef)
        ]
        used = {node.id for node in ast.walk(ast.parse(tests)) if isinstance(node, ast.Name)}
    except (SyntaxError, ValueError):
        return []
    return [name for name in defined if name in used]
