"""Model-written programs are contained: each hostile program fails, the machine is left as it was, and a
correct program still passes."""

import os
import tempfile

import psutil
import pytest

from peftcode.sandbox import Limits, run_program, run_programs

LIMITS = Limits(timeout_s=3.0, memory_mb=512, output_bytes=4096)
CORRECT = "def add(a, b):\n    return a + b\n\nassert add(2, 3) == 5\nprint('ok')\n"


def hostile_programs(outside) -> dict[str, str]:
    return {
        "infinite loop": "while True:\n    pass\n",
        "fork bomb": "import os\nwhile True:\n    os.fork()\n",
        "fork bomb through posix": "import posix\nwhile True:\n    posix.fork()\n",
        "huge allocation": "x = bytearray(8 * 2**30)\nx[::4096] = b'1' * (len(x) // 4096)\n",
        "deep recursion": "import sys\nsys.setrecursionlimit(10**9)\ndef f(n):\n    return f(n + 1)\nf(0)\n",
        "os.system": f"import os\nassert os.system('touch {outside}/system') == 0\n",
        "subprocess": f"import subprocess\nsubprocess.run(['touch', '{outside}/subprocess'], check=True)\n",
        "write outside": f"open('{outside}/written', 'w').write('x')\n",
        "write outside with os.open": f"import os\nos.open('{outside}/os_open', os.O_CREAT | os.O_WRONLY)\n",
        "socket": "import socket\nsocket.create_connection(('127.0.0.1', 22), timeout=1)\n",
        "raw socket class": "import _socket\n_socket.socket().connect(('127.0.0.1', 22))\n",
        "prints gigabytes": "import sys\nwhile True:\n    sys.stdout.write('x' * 65536)\n",
        "kills its parent": "import os\nos.kill(os.getppid(), 9)\n",
        "ctypes fork": "import ctypes\nctypes.CDLL(None).fork()\n",
    }


def sandbox_processes() -> list[psutil.Process]:
    found = []
    for process in psutil.process_iter(["cmdline"]):
        if any("sandbox_guard" in part for part in process.info["cmdline"] or []):
            found.append(process)
    return found


@pytest.fixture
def outside(tmp_path):
    folder = tmp_path / "outside"
    folder.mkdir()
    os.chmod(folder, 0o777)  # writable by anyone, so only the sandbox stops a write
    return folder


def test_a_correct_program_passes():
    outcome = run_program(CORRECT, LIMITS)
    assert outcome.passed and outcome.output == "ok\n"


def test_a_failing_assertion_fails():
    outcome = run_program("assert 1 + 1 == 3\n", LIMITS)
    assert outcome.status == "failed" and "AssertionError" in outcome.output


def test_every_hostile_program_is_contained_and_leaves_nothing_behind(outside, tmp_path):
    programs = hostile_programs(outside)
    outcomes = run_programs([*programs.values(), CORRECT], workers=2, limits=LIMITS)
    for name, outcome in zip(programs, outcomes, strict=False):
        assert not outcome.passed, f"{name}: {outcome}"
        assert len(outcome.output) <= LIMITS.output_bytes
    assert outcomes[-1].passed, "a correct program run beside them still passes"
    statuses = dict(zip(programs, (o.status for o in outcomes), strict=False))
    assert statuses["infinite loop"] == "timeout"
    assert statuses["prints gigabytes"] == "output limit"
    assert list(outside.iterdir()) == []
    assert sandbox_processes() == []
    assert psutil.Process().is_running()  # the parent survived "kills its parent"
    leftovers = [p for p in os.listdir(tempfile.gettempdir()) if p.startswith("peftcode-sandbox-")]
    assert leftovers == []
