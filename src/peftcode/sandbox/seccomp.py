"""The seccomp filter every sandboxed program runs under (loaded by :mod:`peftcode.sandbox.guard`).

A deny-list: system calls that start processes or programs, reach other processes, change namespaces or
mounts, or hold kernel memory and host-wide quotas that the program's limits do not count. A rule that
looks at an argument the kernel reads as 32 bits compares only its low 32 bits (a masked compare), since
the register holds 64 and the kernel ignores the rest: ``prctl(0x1_00000004, 1)`` is ``prctl(4, 1)``.
The socket rules compare all 64 bits on purpose: they deny every family but one, and a high bit only makes
a value differ from that one.
"""

import errno
import socket
import tempfile
from functools import cache

import pyseccomp

# System calls the program may not make, each failing with EPERM. Namespaces, mounts and module loading
# need capabilities the program does not have; they are denied all the same, as is any way to reach
# another process (the PID namespace already hides every process but its own).
DENIED = (
    "fork", "vfork", "execve", "execveat", "ptrace", "process_vm_readv", "process_vm_writev", "kcmp",
    "pidfd_open", "pidfd_getfd", "pidfd_send_signal", "unshare", "setns", "mount", "umount2",
    "pivot_root", "chroot", "move_mount", "open_tree", "fsopen", "fsmount", "fsconfig", "fspick",
    "mount_setattr", "open_by_handle_at", "name_to_handle_at", "bpf", "perf_event_open", "userfaultfd",
    "keyctl", "add_key", "request_key", "io_uring_setup", "io_uring_enter", "io_uring_register",
    "kexec_load", "kexec_file_load", "init_module", "finit_module", "delete_module", "reboot", "swapon",
    "swapoff", "acct", "quotactl", "syslog", "mknod", "mknodat", "fanotify_init", "lookup_dcookie",
    "personality", "modify_ldt",
    # Memory that the address-space limit does not count, held outside any process (System V and POSIX
    # IPC, memory files), and per-user kernel objects charged to the evaluator's user (inotify).
    "shmget", "shmat", "shmctl", "semget", "semop", "semtimedop", "semctl", "msgget", "msgsnd", "msgrcv",
    "msgctl", "mq_open", "mq_unlink", "mq_timedsend", "mq_timedreceive", "mq_notify", "mq_getsetattr",
    "memfd_create", "memfd_secret", "inotify_init", "inotify_init1",
    # Asynchronous I/O contexts come out of one quota for the whole machine (fs.aio-max-nr): a program
    # holding it would make the host's own io_setup fail.
    "io_setup", "io_destroy", "io_submit", "io_cancel", "io_getevents", "io_pgetevents",
    # Whole-file locks on the read-only files it sees, which would block the evaluator's own users of them.
    "flock",
)  # fmt: skip
LOW_32 = 0xFFFFFFFF
CLONE_THREAD = 0x00010000
PR_SET_DUMPABLE = 4
F_SETLEASE, F_NOTIFY, F_SETPIPE_SZ = 1024, 1026, 1031
# Record locks (fcntl's, and SQLite's through them) succeed without locking anything: a read lock on a
# file the sandbox can see would block a host process that wants to write-lock it, while a program's lock
# on its own files has no one to exclude (it cannot start a process), so SQLite in its folder still works.
RECORD_LOCKS = {"F_SETLK": 6, "F_SETLKW": 7, "F_OFD_SETLK": 37, "F_OFD_SETLKW": 38}
SOL_SOCKET = 1
# Buffer sizes a socket may not raise (up to net.core.wmem_max each, memory no limit of the program counts).
SOCKET_BUFFERS = {"SO_SNDBUF": 7, "SO_RCVBUF": 8, "SO_SNDBUFFORCE": 32, "SO_RCVBUFFORCE": 33}


def low_32_equals(argument: int, value: int) -> pyseccomp.Arg:
    return pyseccomp.Arg(argument, pyseccomp.MASKED_EQ, LOW_32, value)


@cache
def seccomp_filter() -> bytes:
    """The compiled filter (BPF, for x86-64 or the machine's own architecture; a system call made through
    another ABI, such as ``int 0x80``, kills the process)."""
    rules = pyseccomp.SyscallFilter(pyseccomp.ALLOW)
    rules.set_attr(pyseccomp.Attr.ACT_BADARCH, pyseccomp.KILL_PROCESS)
    deny = pyseccomp.ERRNO(errno.EPERM)
    for name in DENIED:
        rules.add_rule(deny, name)
    # Threads are clones that share the thread group; any other clone is a new process.
    rules.add_rule(deny, "clone", pyseccomp.Arg(0, pyseccomp.MASKED_EQ, CLONE_THREAD, 0))
    # clone3 passes its flags in memory, out of the filter's sight: glibc falls back to clone on ENOSYS.
    rules.add_rule(pyseccomp.ERRNO(errno.ENOSYS), "clone3")
    # The guard made the process undumpable, so that a crash starts no core-dump helper on the host (a
    # pipe in core_pattern ignores RLIMIT_CORE); it stays so.
    rules.add_rule(deny, "prctl", low_32_equals(0, PR_SET_DUMPABLE))
    # Leases and directory notices reach the evaluator's users of a file; a pipe may not grow past its
    # default 64 KiB (to fs.pipe-max-size, memory no limit of the program counts).
    for command in (F_SETLEASE, F_NOTIFY, F_SETPIPE_SZ):
        rules.add_rule(deny, "fcntl", low_32_equals(1, command))
    for command in RECORD_LOCKS.values():
        rules.add_rule(pyseccomp.ERRNO(0), "fcntl", low_32_equals(1, command))
    for option in SOCKET_BUFFERS.values():
        rules.add_rule(deny, "setsockopt", low_32_equals(1, SOL_SOCKET), low_32_equals(2, option))
    for call in ("socket", "socketpair"):
        rules.add_rule(
            pyseccomp.ERRNO(errno.EAFNOSUPPORT), call, pyseccomp.Arg(0, pyseccomp.NE, socket.AF_UNIX)
        )
    with tempfile.TemporaryFile() as compiled:
        rules.export_bpf(compiled)
        compiled.seek(0)
        return compiled.read()
