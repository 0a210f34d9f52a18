"""``responses-bridge serve`` as PID 1 (a container run without an init: ``docker run`` without ``--init``, a pod
whose ``command`` replaces the image's entry point): a minimal init in front of the server.

PID 1 of a PID namespace is the process the kernel hands every orphan to, and only it can reap them. The server
waits for the children it starts (asyncio does), but not for processes that were never its own: each code
interpreter call leaves one such (a process of bubblewrap's that outlives its parent), so a server that is PID 1
kept one zombie per call until the namespace ran out of process ids. PID 1 also gets no default action for a
signal it has no handler for (a ``docker stop``'s SIGTERM would be ignored until then).

So, when the process finds itself PID 1, it forks once at start, before any thread, event loop or child exists:
the child is the server, exactly as it would have been (the ``--workers`` supervisor included), in a process group
of its own so that a signal sent to the init's group reaches it once, through the init; the parent stays a
minimal init that passes SIGTERM, SIGINT, SIGHUP, SIGQUIT, SIGUSR1 and SIGUSR2 on to the server, reaps every child
that ends (the orphans it is handed among them), and exits with the server's status (128 + the signal's number
when a signal ended it) once the server has ended. The image runs ``tini`` as well (Dockerfile), so this matters
where it does not: a ``command:`` override, a runtime without ``--init``.
"""

from __future__ import annotations

import contextlib
import os
import signal
from types import FrameType

FORWARDED = (signal.SIGTERM, signal.SIGINT, signal.SIGHUP, signal.SIGQUIT, signal.SIGUSR1, signal.SIGUSR2)


def serve_behind_init() -> None:
    """Return in the server. Not PID 1: there is nothing to do, this process is the server. PID 1: fork; the child
    returns (it is the server), the parent never does (it is the init, and ends the process with the server's
    status)."""
    if os.getpid() != 1:
        return
    # blocked across the fork: one sent meanwhile waits in the init until it can pass it on
    before = signal.pthread_sigmask(signal.SIG_BLOCK, FORWARDED)
    server = os.fork()
    if server == 0:
        os.setpgid(0, 0)
        _take_terminal()
        signal.pthread_sigmask(signal.SIG_SETMASK, before)
        return
    os._exit(run_init(server, before))


def _take_terminal() -> None:
    """On a terminal (``docker run -it``), make the server's group the foreground one, as tini does: a Ctrl-C then
    reaches the server once, and its output is never stopped as a background group's."""
    with contextlib.suppress(OSError):
        if os.isatty(0):
            previous = signal.signal(signal.SIGTTOU, signal.SIG_IGN)  # a background group's tcsetpgrp would stop it
            try:
                os.tcsetpgrp(0, os.getpgrp())
            finally:
                signal.signal(signal.SIGTTOU, previous)


def run_init(server: int, mask: set[int | signal.Signals] | None = None) -> int:
    """Be the init of ``server``: pass the forwarded signals on to it, reap every child of this process as it
    ends, and return the server's exit status once it has ended (128 + N for a server ended by signal N).
    ``mask``: the signal mask to restore once the handlers are in place (signals blocked across the fork)."""

    def forward(signum: int, frame: FrameType | None) -> None:
        with contextlib.suppress(ProcessLookupError):
            os.kill(server, signum)

    for sig in FORWARDED:
        signal.signal(sig, forward)
    if mask is not None:
        signal.pthread_sigmask(signal.SIG_SETMASK, mask)
    status = 1
    while True:
        try:
            pid, code = os.wait()  # any child: the server, or an orphan handed to PID 1
        except ChildProcessError:  # none left (the server was reaped already)
            break
        if pid == server:
            status = os.waitstatus_to_exitcode(code)
            break
    reap_ended()
    return status if status >= 0 else 128 - status


def reap_ended() -> int:
    """Reap the children that have already ended, without waiting for the others; how many."""
    reaped = 0
    while True:
        try:
            pid, _ = os.waitpid(-1, os.WNOHANG)
        except ChildProcessError:
            return reaped
        if pid == 0:
            return reaped
        reaped += 1
