"""No program is counted as passing tests it does not meet, whatever it does in its own process: each
forging route below is a candidate that fails its tests, scored through the path pass@k takes
(``metrics.execution_metrics``), and counted as failed with the judge's reason. Correct programs still
pass, APPS' standard input read every way a solution reads it included."""

import pandas as pd
import pytest

from peftcode.evaluation.evaluate import execution_metrics
from peftcode.sandbox.runner import Limits
from peftcode.sandbox.tests_column import io_tests
from peftcode.sandbox.verdicts import Submission, run_submissions
from tests.helpers import sandbox_settings

SETTINGS = sandbox_settings(timeout_s=5)
ADD_TESTS = "assert add(2, 3) == 5\nassert add(-1, 1) == 0\n"
WRONG_ADD = "def add(a, b):\n    return a - b\n"
# Native code: the guard's own descriptors, whatever the guard did to hide them.
LIBC = "import ctypes\nlibc = ctypes.CDLL(None)\n"
EVERY_DESCRIPTOR = "for fd in range(3, 1024):\n    libc.write(fd, b'finished', 8)\n"

FORGERIES = {
    "the guard's word, to every descriptor": WRONG_ADD + LIBC + EVERY_DESCRIPTOR,
    "the guard's word, to the descriptor in sys.orig_argv": (
        WRONG_ADD + "import os, sys\nfor word in sys.orig_argv:\n    if word.isdigit():\n"
        "        try:\n            os.write(int(word), b'finished')\n"
        "        except OSError:\n            pass\n"
    ),
    "the guard's word from an atexit hook": (
        WRONG_ADD + "import atexit\n" + LIBC + "atexit.register(lambda: [libc.write(fd, b'finished', 8) "
        "for fd in range(3, 1024)])\n"
    ),
    "the guard's word from sys.excepthook, after the failing traceback": (
        WRONG_ADD
        + "import sys\n"
        + LIBC
        + "def hook(*exc):\n"
        + "    "
        + EVERY_DESCRIPTOR.replace("\n    ", "\n        ")
        + "sys.excepthook = hook\n"
    ),
    "the guard's locals through sys._getframe": (
        WRONG_ADD + "import sys\nframe = sys._getframe()\nwhile frame:\n    values = frame.f_locals\n"
        "    if 'write' in values:\n        for fd in range(3, 64):\n            try:\n"
        "                values['write'](fd, b'finished')\n            except Exception:\n"
        "                pass\n    frame = frame.f_back\n"
    ),
    "a trace hook that swaps the tests' check for a no-op": (
        WRONG_ADD + "import sys\ndef tracer(frame, event, arg):\n"
        "    frame.f_globals['check'] = lambda candidate: None\n"
        "    frame.f_globals['AssertionError'] = None\n"
        "    return tracer\nsys.settrace(tracer)\nsys.setprofile(tracer)\n"
    ),
    "an object equal to everything": (
        "class Anything:\n    def __eq__(self, other):\n        return True\n    __hash__ = None\n"
        "def add(a, b):\n    return Anything()\n"
    ),
    "an int whose __eq__ is always true": (
        "class Lying(int):\n    def __eq__(self, other):\n        return True\n"
        "def add(a, b):\n    return Lying(0)\n"
    ),
    "a str whose __eq__ is always true": (
        "class Lying(str):\n    def __eq__(self, other):\n        return True\n"
        "def add(a, b):\n    return Lying('no')\n"
    ),
    "builtins patched: assert never fails, AssertionError swallowed": (
        WRONG_ADD + "import builtins\nbuiltins.AssertionError = type('Never', (Exception,), {})\n"
        "builtins.__import__ = lambda *a, **k: None\n"
    ),
    "exits with status 0 at once": WRONG_ADD + "import os\nos._exit(0)\n",
    "exits with status 0 in the call": "def add(a, b):\n    import os\n    os._exit(0)\n",
    "never exits": WRONG_ADD
    + "import threading, time\nthreading.Thread(target=time.sleep, args=(60,)).start()\n",
    "a generator for a value": "def add(a, b):\n    yield a + b\n",
    "a module under the function's name": "import os as add\n",
    "answers written ahead, out of turn": (
        "import sys, os\nfor fd in range(3, 64):\n    try:\n"
        '        os.write(fd, b\'{"value": ["int", "5"]}\\n\' * 4)\n    except OSError:\n        pass\n'
        + WRONG_ADD
    ),
}


def scored(samples: list[str], tests: str) -> dict:
    generations = pd.DataFrame({"samples": [samples], "tests": [tests]})
    return execution_metrics(generations, SETTINGS, workers=2)


def test_every_forging_route_is_counted_as_failed_with_its_reason():
    metrics = scored([*FORGERIES.values(), "def add(a, b):\n    return a + b\n"], ADD_TESTS)
    assert metrics["passes"] == [1], "only the correct program passes"
    outcomes = run_submissions(
        [Submission(code, ADD_TESTS) for code in FORGERIES.values()], 2, Limits(5, 512)
    )
    for name, outcome in zip(FORGERIES, outcomes, strict=True):
        assert not outcome.passed, name
        assert outcome.status == "timeout" or outcome.reason, (name, outcome)


def test_helpers_the_tests_take_from_the_prompt_are_the_judges_not_the_programs():
    """HumanEval/32: check() measures the root with the prompt's poly; a program that redefines poly to
    say 0 everywhere does not pass."""
    prompt = (
        "import math\n\n\ndef poly(xs: list, x: float):\n"
        "    return sum(c * math.pow(x, i) for i, c in enumerate(xs))\n\n\n"
        "def find_zero(xs: list):\n    '''A zero of the polynomial.'''\n"
    )
    tests = (
        prompt
        + "\ndef check(candidate):\n    assert abs(poly([1, 2], candidate([1, 2]))) < 1e-6\n"
        + "\ncheck(find_zero)\n"
    )
    honest = prompt + "    return -0.5\n"
    cheat = "def poly(xs, x):\n    return 0\n\n\ndef find_zero(xs):\n    return 7.0\n"
    outcomes = run_submissions([Submission(honest, tests), Submission(cheat, tests)], 2, Limits(5, 512))
    assert [o.status for o in outcomes] == ["passed", "failed"], outcomes


APPS_CASES = [["3\n4\n", "7\n"], ["10\n-2\n", "8\n"]]


@pytest.mark.parametrize(
    "reading",
    [
        "a, b = int(input()), int(input())",
        "a, b = map(int, sys.stdin.read().split())",
        "a, b = map(int, sys.stdin.buffer.read().split())",
        "a, b = map(int, open(0).read().split())",
        "a, b = (int(line) for line in sys.stdin)",
        "a, b = map(int, os.read(0, 100).split())",
    ],
)
def test_apps_standard_input_is_a_real_one(reading):
    correct = f"import os, sys\n{reading}\nprint(a + b)\n"
    wrong = f"import os, sys\n{reading}\nprint(a * b)\n"
    tests = io_tests(APPS_CASES)
    outcomes = run_submissions([Submission(correct, tests), Submission(wrong, tests)], 2, Limits(5, 512))
    assert [o.status for o in outcomes] == ["passed", "failed"], outcomes


APPS_FORGERIES = {
    "reads the harness's globals": (
        "import sys\nframe = sys._getframe()\nfound = [v for f in [frame] for v in f.f_globals.values()]\n"
        "print(globals().get('expected') or globals().get('SPEC'))\n"
    ),
    "empties every list of cases it can find": (
        "import gc\nfor o in gc.get_objects():\n"
        "    if isinstance(o, list) and o and isinstance(o[0], list):\n"
        "        o.clear()\nprint(0)\n"
    ),
    "prints nothing and exits 0": "import os\nos._exit(0)\n",
    "writes to file descriptor 1 directly, wrongly": "import os\nos.write(1, b'-1\\n')\n",
}


def test_apps_forgeries_fail_and_the_expected_output_never_reaches_the_program():
    tests = io_tests(APPS_CASES)
    outcomes = run_submissions([Submission(c, tests) for c in APPS_FORGERIES.values()], 2, Limits(5, 512))
    for name, outcome in zip(APPS_FORGERIES, outcomes, strict=True):
        assert outcome.status == "failed", (name, outcome)
        assert "7" not in outcome.output and "8" not in outcome.output, name


def test_call_based_apps_compares_outside_the_program():
    tests = io_tests([[[[1, 2, 3]], 6], [[[5]], 5]], fn_name="total")
    correct = "class Solution:\n    def total(self, xs):\n        return sum(xs)\n"
    lying = (
        "class Solution:\n    def total(self, xs):\n        class Any(list):\n"
        "            __eq__ = lambda s, o: True\n        return Any()\n"
    )
    outcomes = run_submissions([Submission(correct, tests), Submission(lying, tests)], 2, Limits(5, 512))
    assert [o.status for o in outcomes] == ["passed", "failed"], outcomes


PLAIN_VALUES = [
    "None", "True", "-(2**200)", "1.5", "float('nan')", "float('-inf')", "-0.0", "3+4j", "'tab\\t\\u00e9'",
    "b'\\x00\\xff'", "bytearray(b'ab')", "[1, (2, 3), {4: [5]}]", "{'a': {1, 2}, 'b': frozenset({3})}",
    "(1,)", "[]", "{}",
]  # fmt: skip


def test_plain_values_cross_exactly_and_other_values_as_handles():
    code = "import math\n" + "".join(f"def v{i}():\n    return {v}\n" for i, v in enumerate(PLAIN_VALUES))
    checks = "".join(
        f"assert repr(v{i}()) == repr({v}) and type(v{i}()) is type({v})\n"
        for i, v in enumerate(PLAIN_VALUES)
    )
    odd = (
        "def gen():\n    yield 1\n\nclass Mine:\n    value = 3\n    __eq__ = lambda s, o: True\n\n"
        "def mine():\n    return Mine()\n"
    )
    # A generator is consumed as the tests consume it; an object of the program's class stays there, its
    # attributes read through its handle, equal only to itself whatever its __eq__ says.
    handles = "assert list(gen()) == [1]\nm = mine()\nassert m.value == 3 and m == m and m != mine()\n"
    outcomes = run_submissions([Submission(code, checks), Submission(odd, handles)], 2, Limits(5, 512))
    assert outcomes[0].passed, outcomes[0]
    assert outcomes[1].passed, outcomes[1]


def test_an_exception_the_program_raises_is_one_the_tests_can_expect():
    tests = (
        "try:\n    parse('x')\nexcept ValueError:\n    pass\nelse:\n    raise AssertionError('no error')\n"
    )
    outcomes = run_submissions([Submission("def parse(s):\n    return int(s)\n", tests)], 1, Limits(5, 512))
    assert outcomes[0].passed, outcomes[0]


# Found by attacking the judge (a fresh attacker's findings, each a program through the real path).
FOUND_FORGERIES = {
    "StopIteration ends the tests' map() as if it were done": (
        "def is_even(x):\n    raise StopIteration\n",
        "assert all(map(lambda x: is_even(x) == (x % 2 == 0), range(10)))\n",
    ),
    "a wrong function under a builtin's name": ("def max(a, b):\n    return a\n", "assert max(1, 2) == 2\n"),
    "a builtin the tests use, redefined": (
        "def abs(x):\n    return 0\n\ndef add(a, b):\n    return a - b\n",
        "assert abs(add(1, 2) - 3) < 1e-9\n",
    ),
    # A second attacker's: builtins redefined under HumanEval's check() and MBPP asserts that bind names.
    "abs redefined under a HumanEval check": (
        "def mean(xs):\n    return 0\nabs = lambda x: 0\n",
        "def mean(xs):\n    '''The mean.'''\n\ndef check(candidate):\n"
        "    assert abs(candidate([1.0, 2.0]) - 1.5) < 1e-6\n\ncheck(mean)\n",
    ),
    "abs redefined, the result bound to a name first": (
        "def area(r):\n    return 0\nabs = lambda x: 0\n",
        "res = area(2)\nassert abs(res - 12.566) < 0.01\n",
    ),
    "abs redefined, claimed through an assert of literals": (
        "def area(r):\n    return 0\nabs = lambda x: 0\n",
        "assert abs(-1) == 1 or True\nassert abs(area(2) - 12.566) < 0.01\n",
    ),
    "abs redefined inside the tests' own helper": (
        "def area(r):\n    return 0\nabs = lambda x: 0\n",
        "def close(a, b):\n    assert abs(a - b) < 0.01\nclose(area(2), 12.566)\n",
    ),
}
FOUND_CORRECT = {
    "a function under a builtin's name": (
        "def filter(xs):\n    return [x for x in xs if x % 2 == 0]\n",
        "assert filter([1, 2, 3, 4]) == [2, 4]\n",
    ),
    "an exception of a library's own class, expected as its builtin base": (
        "import json\ndef parse(s):\n    return json.loads(s)\n",
        "try:\n    parse('{')\nexcept ValueError:\n    pass\nelse:\n    raise AssertionError('no error')\n",
    ),
    "a builtin exception with a constructor of its own": (
        "def decode(b):\n    return b.decode('utf-8')\n",
        "try:\n    decode(b'\\xff')\nexcept UnicodeDecodeError:\n    pass\nelse:\n    raise AssertionError\n",
    ),
    "an exception's message, read by the tests": (
        "def f(x):\n    raise ValueError('bad')\n",
        "try:\n    f(1)\nexcept ValueError as e:\n    assert str(e) == 'bad'\n"
        "else:\n    raise AssertionError\n",
    ),
    "a keyword argument changed in place": (
        "def push(xs=None):\n    xs.append(1)\n",
        "a = []\npush(xs=a)\nassert a == [1]\n",
    ),
    "a list inside a tuple changed in place": (
        "def push(p):\n    p[0].append(1)\n",
        "a = []\npush((a,))\nassert a == [1]\n",
    ),
    "a row of a matrix changed in place": (
        "def inc(m):\n    m[0][0] += 1\n",
        "row = [0]\nm = [row]\ninc(m)\nassert row == [1]\n",
    ),
    "an argument changed before the function raised": (
        "def push(xs):\n    xs.append(1)\n    raise ValueError\n",
        "a = []\ntry:\n    push(a)\nexcept ValueError:\n    pass\nassert a == [1]\n",
    ),
    "a list sorted in place": (
        "def sort_in_place(items):\n    items.sort()\n",
        "items = [3, 1, 2]\nsort_in_place(items)\nassert items == [1, 2, 3]\n",
    ),
    "a Fraction": (
        "from fractions import Fraction\ndef half():\n    return Fraction(1, 2)\n",
        "assert half() == 0.5\n",
    ),
    "a tuple where APPS expects a list": (
        "class Solution:\n    def swap(self, a, b):\n        return (b, a)\n",
        io_tests([[[1, 2], [2, 1]]], fn_name="swap"),
    ),
    "forty standard input cases": (
        "a = int(input())\nb = int(input())\nprint(a + b)\n",
        io_tests([[f"{i}\n{i}\n", f"{2 * i}\n"] for i in range(40)]),
    ),
    "a script that works in a thread": (
        "import sys, threading\ndef main():\n    data = sys.stdin.read().split()\n"
        "    sum(i * i for i in range(200000))\n    print(int(data[0]) + int(data[1]))\n"
        "threading.Thread(target=main).start()\n",
        io_tests(APPS_CASES),
    ),
    "output held back until exit": (
        "import atexit, io, sys\nbuffer = io.StringIO()\nsys.stdout = buffer\n"
        "atexit.register(lambda: sys.__stdout__.write(buffer.getvalue()))\n"
        "a, b = map(int, sys.stdin.read().split())\nprint(a + b)\n",
        io_tests(APPS_CASES),
    ),
    "a writer of its own, never flushed": (
        "import sys\nout = open(1, 'w')\na, b = map(int, sys.stdin.read().split())\nout.write(str(a + b))\n",
        io_tests(APPS_CASES),
    ),
    "printed to sys.__stdout__": (
        "import sys\na, b = map(int, sys.stdin.read().split())\nprint(a + b, file=sys.__stdout__)\n",
        io_tests(APPS_CASES),
    ),
}


def test_what_an_attacker_found_fails_and_what_it_broke_passes():
    forged = run_submissions([Submission(c, t) for c, t in FOUND_FORGERIES.values()], 2, Limits(5, 512))
    for name, outcome in zip(FOUND_FORGERIES, forged, strict=True):
        assert outcome.status == "failed", (name, outcome)
    correct = run_submissions([Submission(c, t) for c, t in FOUND_CORRECT.values()], 2, Limits(5, 512))
    for name, outcome in zip(FOUND_CORRECT, correct, strict=True):
        assert outcome.passed, (name, outcome)


def test_an_evaluator_with_more_than_1024_descriptors_open_still_judges(tmp_path):
    import resource

    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if hard != resource.RLIM_INFINITY and hard < 1200:
        pytest.skip(f"the open-file limit ({hard}) is below 1200")
    resource.setrlimit(resource.RLIMIT_NOFILE, (max(soft, 1200), hard))
    held = [open(tmp_path / "held", "w") for _ in range(1100)]  # noqa: SIM115
    try:
        outcome = run_submissions(
            [Submission("def add(a, b):\n    return a + b\n", ADD_TESTS)], 1, Limits(5, 512)
        )
    finally:
        for handle in held:
            handle.close()
        resource.setrlimit(resource.RLIMIT_NOFILE, (soft, hard))
    assert outcome[0].passed, outcome[0]
