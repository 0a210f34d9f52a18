"""Several bridge replicas on one database, each as deployed: a sidecar (the CLI, in its own process, with its OWN
data directory) and a real Envoy in front of it, all sharing ``RESPONSES_BRIDGE_DATABASE_URL``.

Usage (async)::

    async with running_replicas(tmp_dir, upstream_url, database_url, count=2) as (a, b):
        a.envoy_url, b.http_url, a.kill() ...

Each replica's own calls (background runs, the tool loop) go back through its own Envoy (``--upstream-via``), as in
the Kubernetes manifest. ``Replica.kill`` is SIGKILL: no drain, no terminal state stored, leases left to expire.
"""

from __future__ import annotations

import asyncio
import os
import signal
from collections.abc import AsyncIterator
from contextlib import AsyncExitStack, asynccontextmanager
from dataclasses import dataclass
from pathlib import Path

from responses_bridge.demo.procs import ManagedProcess, free_port, wait_http
from responses_bridge.envoy_config import render_bootstrap
from tests.support.bridge import PYTHON
from tests.support.envoy import EnvoyProcess, start_envoy


@dataclass
class Replica:
    name: str
    data_dir: Path  # this replica's own: nothing in it may be what another replica reads
    http_url: str  # the sidecar's HTTP door
    envoy_url: str  # the replica's Envoy (clients go here)
    sidecar: ManagedProcess
    envoy: EnvoyProcess

    def kill(self) -> None:
        """SIGKILL the sidecar (and its process group): it stores nothing more and renews no lease."""
        if self.sidecar.alive():
            os.killpg(self.sidecar.pid, signal.SIGKILL)
            assert self.sidecar.process is not None
            self.sidecar.process.wait()


def start_replica_sidecar(data_dir: Path, upstream_url: str, database_url: str, *extra: str,
                          env: dict[str, str] | None = None) -> tuple[ManagedProcess, int, int, int]:
    """The sidecar of one replica: ``--db`` inside its own data directory (the SQLite file it must NOT use when the
    database URL is set), the shared database from the environment, its calls through its Envoy-to-be."""
    http_port, extproc_port, listen_port = free_port(), free_port(), free_port()
    data_dir.mkdir(parents=True, exist_ok=True)
    argv = [PYTHON, "-m", "responses_bridge", "serve", "--upstream", upstream_url,
            "--upstream-via", f"http://127.0.0.1:{listen_port}/v1", "--http-port", str(http_port),
            "--extproc-port", str(extproc_port), "--db", str(data_dir / "responses.sqlite"), *extra]
    process = ManagedProcess(argv, f"replica:{data_dir.name}", quiet=False,
                             env={"RESPONSES_BRIDGE_DATABASE_URL": database_url, **(env or {})})
    process.start()
    return process, http_port, extproc_port, listen_port


@asynccontextmanager
async def running_replica(name: str, root: Path, upstream_url: str, database_url: str, *extra: str,
                          env: dict[str, str] | None = None) -> AsyncIterator[Replica]:
    """One replica, ready (its sidecar answers /health/ready and its Envoy is up), stopped on exit."""
    process, http_port, extproc_port, listen_port = start_replica_sidecar(root / name, upstream_url, database_url,
                                                                          *extra, env=env)
    try:
        await wait_http(f"http://127.0.0.1:{http_port}/health/ready", timeout=60, process=process)
        envoy = await start_envoy(render_bootstrap(listen_port=listen_port, extproc_port=extproc_port,
                                                   http_port=http_port, upstream=upstream_url, admin_port=0))
        try:
            yield Replica(name, root / name, f"http://127.0.0.1:{http_port}", f"http://127.0.0.1:{listen_port}",
                          process, envoy)
        finally:
            envoy.stop()
    finally:
        await asyncio.to_thread(process.stop)  # off the loop, as tests/support/bridge.py running_sidecar


@asynccontextmanager
async def running_replicas(root: str | Path, upstream_url: str, database_url: str, *extra: str, count: int = 2,
                           env: dict[str, str] | None = None) -> AsyncIterator[list[Replica]]:
    """``count`` replicas on ``database_url``, named a, b, c, … (each in ``root/<name>``), started one after the
    other (the first applies the migrations; the others find them applied)."""
    async with AsyncExitStack() as stack:
        replicas = [await stack.enter_async_context(running_replica(
            chr(ord("a") + index), Path(root), upstream_url, database_url, *extra, env=env))
            for index in range(count)]
        yield replicas
