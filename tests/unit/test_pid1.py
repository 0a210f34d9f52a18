"""The init the server runs behind when it is PID 1 (process/pid1.py), as PID 1 of a real PID namespace (``unshare``):
an orphan handed to it is reaped, the signals it forwards reach the server, and it ends with the server's status;
not PID 1, it does nothing at all."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
import time
from collections.abc import Iterator

import pytest

from responses_bridge.process.pid1 import serve_behind_init
from tests.support.pid_namespace import UNSHARE, first_process, process_states, unshare_problem, zombies

# The program run as PID 1: the init's server makes a child that leaves an orphan behind (its own child, which
# ends when the server closes a pipe), then answers SIGUSR1 with a line and SIGTERM with the exit code 3, or
# kills itself.
SERVER = textwrap.dedent("""
    import os, signal, sys
    from responses_bridge.process.pid1 import serve_behind_init

    serve_behind_init()
    signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGUSR1, signal.SIGTERM})
    read_end, write_end = os.pipe()
    child = os.fork()
    if child == 0:
        if os.fork() == 0:  # the orphan-to-be
            os.close(write_end)
            os.read(read_end, 1)  # until the server's end is closed
            os._exit(0)
        os._exit(0)
    os.waitpid(child, 0)  # the server reaps its own child: the grandchild is an orphan, handed to PID 1
    os.close(write_end)  # and it ends
    print("ready", os.getpid(), os.getppid(), flush=True)
    assert signal.sigwait({signal.SIGUSR1, signal.SIGTERM}) == signal.SIGUSR1
    print("usr1", flush=True)
    assert signal.sigwait({signal.SIGUSR1, signal.SIGTERM}) == signal.SIGTERM
    if sys.argv[1] == "killed":
        os.kill(os.getpid(), signal.SIGKILL)
    sys.exit(3)
""")


@pytest.fixture
def namespace() -> Iterator[None]:
    problem = unshare_problem()
    if problem is not None:
        pytest.skip(problem)
    yield


def start(how: str) -> subprocess.Popen[str]:
    return subprocess.Popen([*UNSHARE, sys.executable, "-c", SERVER, how], stdout=subprocess.PIPE, text=True)


def wait_until_only(unshare: subprocess.Popen[str], count: int) -> dict[int, tuple[str, str]]:
    """The processes under unshare once there are ``count`` of them (the orphan gone), or after 20 s."""
    deadline = time.monotonic() + 20
    while True:
        found = process_states(unshare.pid)
        if len(found) <= count or time.monotonic() > deadline:
            return found
        time.sleep(0.05)


@pytest.mark.usefixtures("namespace")
@pytest.mark.parametrize(("how", "status"), [("exits", 3), ("killed", 128 + signal.SIGKILL)])
def test_as_pid1_orphans_are_reaped_signals_passed_on_and_the_status_kept(how: str, status: int) -> None:
    unshare = start(how)
    try:
        assert unshare.stdout is not None
        ready = unshare.stdout.readline().split()
        # unshare, the init and the server: the orphan, ended, was reaped (else it would stay, a zombie)
        left = wait_until_only(unshare, 3)
        assert len(left) == 3 and not zombies(unshare.pid), left
        assert ready == ["ready", "2", "1"], ready  # the server is the init's child
        init = first_process(unshare.pid)
        os.kill(init, signal.SIGUSR1)  # passed on to the server
        assert unshare.stdout.readline().strip() == "usr1"
        os.kill(init, signal.SIGTERM)
        assert unshare.wait(timeout=30) == status  # unshare ends with its child's status: the init's
    finally:
        unshare.kill()
        unshare.wait()


def test_not_pid1_it_does_nothing() -> None:
    """Anywhere but PID 1, the caller is the server: no fork, no handler, no change to the signal mask."""
    handlers = {sig: signal.getsignal(sig) for sig in (signal.SIGTERM, signal.SIGINT, signal.SIGUSR1)}
    mask = signal.pthread_sigmask(signal.SIG_BLOCK, set())
    pid = os.getpid()
    serve_behind_init()
    assert os.getpid() == pid and signal.pthread_sigmask(signal.SIG_BLOCK, set()) == mask
    assert {sig: signal.getsignal(sig) for sig in handlers} == handlers
