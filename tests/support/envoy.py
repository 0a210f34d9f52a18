"""Run a real Envoy in tests.

Usage (async; the readiness wait polls the admin interface without blocking the event loop, so servers that
run in the test's own loop keep answering Envoy's health checks meanwhile)::

    from tests.support.envoy import free_port, start_envoy

    envoy = await start_envoy(render_bootstrap(listen_port=port, ...))
    ...                                  # http://127.0.0.1:{port}
    envoy.stop()                         # synchronous; also safe to call twice

``start_envoy`` writes the YAML to a temporary file, starts ``envoy -c FILE`` with a unique ``--base-id``
(several Envoys can run at once), waits until the admin endpoint ``/ready`` answers 200 (listeners up, clusters
initialised), and raises with the tail of Envoy's log if it exits or does not get ready in time. The admin port
is read from the file Envoy writes with ``--admin-address-path``, so the bootstrap may use ``port_value: 0`` for
its admin address.
"""

from __future__ import annotations

import asyncio
import itertools
import os
import shutil
import signal
import subprocess
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

import aiohttp

from responses_bridge.demo.procs import envoy_binary, free_port

__all__ = ["EnvoyProcess", "envoy_binary", "free_port", "have_envoy", "start_envoy", "validate_config"]

_BASE_IDS = itertools.count((os.getpid() % 10_000) * 100 + 1)


def have_envoy() -> bool:
    try:
        envoy_binary()
    except FileNotFoundError:
        return False
    return True


def validate_config(path: str | os.PathLike[str]) -> subprocess.CompletedProcess[str]:
    """``envoy --mode validate -c PATH``; returncode 0 when the bootstrap is valid."""
    return subprocess.run([envoy_binary(), "--mode", "validate", "-c", str(path), "--log-level", "warn",
                           "--disable-hot-restart"], capture_output=True, text=True, timeout=60, check=False)


@dataclass
class EnvoyProcess:
    process: subprocess.Popen[bytes]
    directory: Path
    base_id: int
    admin_port: int = 0
    _log: object = field(default=None, repr=False)

    @property
    def admin_url(self) -> str:
        return f"http://127.0.0.1:{self.admin_port}"

    @property
    def config_path(self) -> Path:
        return self.directory / "envoy.yaml"

    @property
    def log_path(self) -> Path:
        return self.directory / "envoy.log"

    def alive(self) -> bool:
        return self.process.poll() is None

    def log_tail(self, lines: int = 40) -> str:
        try:
            return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])
        except OSError:
            return ""

    def stop(self, timeout: float = 5.0) -> None:
        """SIGTERM, then SIGKILL after ``timeout``; removes the temporary directory."""
        if self.alive():
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(timeout=timeout)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        if self._log is not None:
            self._log.close()  # type: ignore[attr-defined]
            self._log = None
        shutil.rmtree(self.directory, ignore_errors=True)

    async def wait_ready(self, timeout: float = 30.0) -> None:
        deadline = time.monotonic() + timeout
        address_file = self.directory / "admin.address"
        async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=2)) as session:
            while True:
                if not self.alive():
                    raise RuntimeError(f"envoy exited with {self.process.returncode}:\n{self.log_tail()}")
                if not self.admin_port and address_file.exists():
                    text = address_file.read_text().strip()
                    if text:
                        self.admin_port = int(text.rsplit(":", 1)[1])
                if self.admin_port:
                    try:
                        async with session.get(f"{self.admin_url}/ready") as response:
                            if response.status == 200:
                                return
                    except (TimeoutError, aiohttp.ClientError):
                        pass
                if time.monotonic() > deadline:
                    self.stop()
                    raise TimeoutError(f"envoy not ready after {timeout:.0f} s:\n{self.log_tail()}")
                await asyncio.sleep(0.05)

    async def stats(self, prefix: str = "") -> dict[str, str]:
        """Admin ``/stats`` as a dict (counters and gauges), optionally filtered by name prefix."""
        async with aiohttp.ClientSession() as session, session.get(f"{self.admin_url}/stats") as response:
            text = await response.text()
        out = {}
        for line in text.splitlines():
            name, _, value = line.partition(": ")
            if name.startswith(prefix):
                out[name] = value
        return out


async def start_envoy(bootstrap_yaml: str, *, timeout: float = 30.0, concurrency: int = 2,
                      log_level: str = "warning", extra_args: tuple[str, ...] = ()) -> EnvoyProcess:
    """Starts Envoy with this bootstrap and returns once it is ready (see the module docstring)."""
    directory = Path(tempfile.mkdtemp(prefix="envoy-test-"))
    (directory / "envoy.yaml").write_text(bootstrap_yaml)
    base_id = next(_BASE_IDS)
    log = open(directory / "envoy.log", "wb")  # noqa: SIM115  (EnvoyProcess closes it when Envoy stops)
    argv = [envoy_binary(), "-c", str(directory / "envoy.yaml"), "--base-id", str(base_id),
            "--admin-address-path", str(directory / "admin.address"), "--concurrency", str(concurrency),
            "--log-level", log_level, "--disable-hot-restart", *extra_args]
    process = subprocess.Popen(argv, stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL)
    envoy = EnvoyProcess(process=process, directory=directory, base_id=base_id, _log=log)
    try:
        await envoy.wait_ready(timeout)
    except BaseException:
        envoy.stop()
        raise
    return envoy
