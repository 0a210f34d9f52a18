"""The system calls a sandboxed call may not make: a seccomp filter, compiled once by libseccomp (through
``pyseccomp``) and loaded by the launcher into the code's process before the code runs.

Always refused (EPERM): looking into or steering another process (``ptrace``, ``process_vm_*``, ``pidfd_getfd``,
``kcmp``) — the sandbox's init holds the call together and must not be taken over; kernel interfaces code has no
use for and that widen what it can reach (``bpf``, ``perf_event_open``, ``userfaultfd``, the keyring, io_uring);
and new namespaces (``unshare``, ``setns``, a ``clone`` with ``CLONE_NEWUSER``; ``clone3``, whose flags a filter
cannot read, answers ENOSYS so the C library falls back to ``clone``): bubblewrap's ``--disable-userns`` does the
same where it can, but it writes ``/proc/sys``, which a container runtime's masks keep read-only.
System calls of another architecture's ABI (i386 or x32 on x86_64) kill the process, so none of these can be
reached by another number.

In the single-process mode (no memory cgroup could be made), the process limit is one process: ``fork``,
``vfork`` and a ``clone`` without ``CLONE_THREAD`` are refused (threads share the one address space, so
``RLIMIT_AS`` bounds them together), ``clone3`` answers ENOSYS so the C library falls back to ``clone``, and the
memory no ``RLIMIT_AS`` counts is refused too: ``memfd_create`` and System V shared memory and message queues.
"""

from __future__ import annotations

import errno
import functools
import tempfile

ALWAYS_REFUSED = ("ptrace", "process_vm_readv", "process_vm_writev", "pidfd_getfd", "kcmp", "bpf",
                  "perf_event_open", "userfaultfd", "keyctl", "add_key", "request_key", "io_uring_setup",
                  "io_uring_enter", "io_uring_register")
SINGLE_PROCESS_REFUSED = ("fork", "vfork", "memfd_create", "shmget", "msgget")
NAMESPACES_REFUSED = ("unshare", "setns")
CLONE_THREAD = 0x00010000
CLONE_NEWUSER = 0x10000000


class SeccompUnavailable(Exception):
    """libseccomp (or its Python binding) is missing: no filter can be compiled, so no call may run."""


@functools.cache
def compiled_filter(single_process: bool, user_namespaces: bool = False) -> bytes:
    """The filter as a BPF program (``struct sock_filter`` array) for ``prctl(PR_SET_SECCOMP)``.
    ``user_namespaces``: a call that may make namespaces of its own (the desktop, whose browser sandboxes its
    renderers in them: runner.py's ``OwnLimits``); every other refusal stands."""
    try:
        import pyseccomp as seccomp
    except ImportError as missing:
        raise SeccompUnavailable("the pyseccomp package is missing (pip install pyseccomp)") from missing
    try:
        rules = seccomp.SyscallFilter(seccomp.ALLOW)
    except (OSError, RuntimeError) as error:  # libseccomp.so.2 not found by ctypes
        raise SeccompUnavailable(f"libseccomp cannot be loaded ({error}): install libseccomp2") from error
    refuse = seccomp.ERRNO(errno.EPERM)
    for name in (*ALWAYS_REFUSED, *(() if user_namespaces else NAMESPACES_REFUSED)):
        _add(rules, refuse, name)
    if not user_namespaces:
        rules.add_rule(refuse, "clone", seccomp.Arg(0, seccomp.MASKED_EQ, CLONE_NEWUSER, CLONE_NEWUSER))
    _add(rules, seccomp.ERRNO(errno.ENOSYS), "clone3")  # its flags are in memory, out of a filter's reach
    if single_process:
        for name in SINGLE_PROCESS_REFUSED:
            _add(rules, refuse, name)
        rules.add_rule(refuse, "clone", seccomp.Arg(0, seccomp.MASKED_EQ, CLONE_THREAD, 0))
    with tempfile.TemporaryFile() as handle:
        rules.export_bpf(handle)
        handle.seek(0)
        return handle.read()


def _add(rules: object, action: int, name: str) -> None:
    """One rule; a call this architecture does not have (``fork`` on arm64) needs none."""
    try:
        rules.add_rule(action, name)  # type: ignore[attr-defined]
    except (ValueError, OSError, RuntimeError):
        import pyseccomp as seccomp

        if seccomp.resolve_syscall(seccomp.system_arch(), name) >= 0:
            raise
