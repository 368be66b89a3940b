"""The first process of a sandboxed run (``python -I stage.py SPEC``), still trusted and still the
evaluator's user: it gives the program an identity and namespaces of its own, then hands over to bubblewrap.

1. As a non-root user, a new user namespace in which the evaluator's uid is 0 and the sandbox's uid is a
   subordinate uid of the evaluator's (from /etc/subuid, mapped by the setuid helpers newuidmap and
   newgidmap): a uid that owns no file of the evaluator's. As root, the sandbox uid is an unused one.
2. A private mount namespace and an empty network namespace (no interface but a loopback that is down).
3. The read-only paths the program may see (the Python installation, system libraries), bound into a
   tmpfs that this mount namespace alone lays over /dev/shm, where every uid can reach them: the sandbox
   uid may not be able to traverse to them where they are (a Python installation under a home folder of
   mode 0700, say), and bubblewrap opens its sources as that uid. They are opened before the tmpfs covers
   /dev/shm and bound through their file descriptors, so that a path under /dev/shm still binds.
4. The sandbox's uid and gid, with no supplementary groups and no capabilities; resource limits.
   The program's folder is a tmpfs mounted there too, its size and number of entries capped.
5. ``exec`` of bubblewrap, which makes the rest (user, PID, IPC and UTS namespaces, a read-only root with
   the staged paths and the program's folder, its only writable place; no_new_privs).

Steps 1-5 happen in a child; the first process stays behind as a child subreaper that reaps every process
of the run and then exits with bubblewrap's status. bubblewrap exits as soon as its PID namespace's first
process reports the program's status, before that process has ended: without a subreaper it would be left
to the host's PID 1, a zombie wherever PID 1 does not reap.

Only the standard library: this runs before anything else is importable, under ``-I``.
"""

import ctypes
import json
import os
import resource
import subprocess
import sys

CLONE_NEWNS, CLONE_NEWUSER, CLONE_NEWNET = 0x00020000, 0x10000000, 0x40000000
PR_SET_CHILD_SUBREAPER = 36
SHM = ".shm"  # in the program's folder, bound at /dev/shm (see peftcode.sandbox.namespaces)
MS_RDONLY, MS_NOSUID, MS_NODEV, MS_REMOUNT, MS_BIND, MS_REC, MS_PRIVATE = 1, 2, 4, 32, 4096, 16384, 1 << 18
LIBC = ctypes.CDLL(None, use_errno=True)


def check(result: int, what: str) -> None:
    if result != 0:
        error = ctypes.get_errno()
        raise OSError(error, f"{what}: {os.strerror(error)}")


def mount(source: str | None, target: str, fstype: str | None, flags: int, data: str | None = None) -> None:
    encode = lambda text: None if text is None else text.encode()  # noqa: E731
    result = LIBC.mount(encode(source), encode(target), encode(fstype), flags, encode(data))
    check(result, f"mount {source} on {target}")


def enter_user_namespace(ids: dict) -> None:
    """Become uid/gid 0 of a new user namespace in which ``ids['inner']`` maps to the subordinate ids.

    newuidmap must run outside the new namespace (a setuid program has no privilege inside it), so a
    helper is forked first and writes the maps once this process has unshared.
    """
    ready_read, ready_write = os.pipe()
    helper = os.fork()
    if helper == 0:
        os.close(ready_write)
        os.read(ready_read, 1)
        parent = str(os.getppid())
        for tool, own, subordinate in (
            ("newuidmap", os.getuid(), ids["uid"]),
            ("newgidmap", os.getgid(), ids["gid"]),
        ):
            done = subprocess.run(
                [tool, parent, "0", str(own), "1", str(ids["inner"]), str(subordinate), "1"],
                capture_output=True,
                text=True,
            )
            if done.returncode != 0:
                sys.stderr.write(f"{tool} failed: {done.stderr.strip()}\n")
                os._exit(1)
        os._exit(0)
    os.close(ready_read)
    check(LIBC.unshare(CLONE_NEWUSER), "unshare(CLONE_NEWUSER)")
    os.write(ready_write, b"1")
    _, status = os.waitpid(helper, 0)
    if os.waitstatus_to_exitcode(status) != 0:
        raise OSError("could not map the sandbox's uid and gid (newuidmap, newgidmap)")


def stage(spec: dict) -> None:
    if spec["subordinate"]:
        enter_user_namespace(spec["subordinate"])
    check(LIBC.unshare(CLONE_NEWNS | CLONE_NEWNET), "unshare(CLONE_NEWNS | CLONE_NEWNET)")
    mount(None, "/", None, MS_REC | MS_PRIVATE)
    # Opened in the new mount namespace: a bind's source must be a mount of the namespace it goes into.
    sources = [os.open(path, os.O_PATH | os.O_CLOEXEC) for path in spec["read_only"]]
    staging = spec["staging"]
    mount("tmpfs", staging, "tmpfs", MS_NOSUID | MS_NODEV, "mode=0755,size=64k")
    for index, source in enumerate(sources):
        target = os.path.join(staging, str(index))
        if os.path.isdir(f"/proc/self/fd/{source}"):
            os.mkdir(target)
        else:
            open(target, "x").close()
        mount(f"/proc/self/fd/{source}", target, None, MS_BIND | MS_REC)
        os.close(source)
    # The program's folder: a tmpfs of its own, its bytes and its entries capped (each entry is kernel
    # memory the address-space limit does not count), owned by the program's uid.
    workdir = os.path.join(staging, "work")
    os.mkdir(workdir)
    options = "size={size},nr_inodes={nr_inodes},mode=0700".format(**spec["workdir"])
    mount("tmpfs", workdir, "tmpfs", MS_NOSUID | MS_NODEV, f"{options},uid={spec['uid']},gid={spec['gid']}")
    # POSIX semaphores and shared memory (multiprocessing's locks) live in /dev/shm: a folder of the
    # program's own tmpfs, within its size.
    os.mkdir(os.path.join(workdir, SHM), 0o700)
    os.chown(os.path.join(workdir, SHM), spec["uid"], spec["gid"])
    mount(None, staging, None, MS_REMOUNT | MS_RDONLY)
    os.setgroups([])
    os.setresgid(spec["gid"], spec["gid"], spec["gid"])
    os.setresuid(spec["uid"], spec["uid"], spec["uid"])
    for name, value in spec["rlimits"].items():
        resource.setrlimit(getattr(resource, name), (value, value))
    os.execvp(spec["argv"][0], spec["argv"])


def reap_all(child: int) -> int:
    """Wait for every process left to this one; the exit status of ``child``, as a shell gives it."""
    # The pipes of the run are the sandbox's and the evaluator's: holding them here would hide their ends.
    devnull = os.open(os.devnull, os.O_RDWR)
    for fd in (0, 1, 2):
        os.dup2(devnull, fd)
    os.closerange(3, 1 << 16)
    code = 125
    while True:
        try:
            pid, status = os.wait()
        except ChildProcessError:
            return code
        if pid == child:
            code = os.waitstatus_to_exitcode(status)
            code = 128 - code if code < 0 else code


if __name__ == "__main__":
    check(LIBC.prctl(PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0), "prctl(PR_SET_CHILD_SUBREAPER)")
    child = os.fork()
    if child:
        sys.exit(reap_all(child))
    try:
        stage(json.loads(sys.argv[1]))
    except OSError as error:
        sys.stderr.write(f"peftcode sandbox: {error}\n")
        os._exit(125)
