"""The whole stack as deployed: a sidecar whose own model calls go back through Envoy (``--upstream-via``) and
the Envoy in front of it, with the bridge as its external processor. One helper for the suites that need every
model call to pass through Envoy (server-side tools run by the HTTP door, routed there by the processor)."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path

from responses_bridge.envoy_config import HTTP_CLUSTER, render_bootstrap
from tests.support.bridge import Sidecar, running_sidecar
from tests.support.envoy import EnvoyProcess, free_port, start_envoy


@dataclass
class Gateway:
    sidecar: Sidecar
    url: str  # Envoy's listener, without /v1
    envoy: EnvoyProcess

    async def sidecar_requests(self) -> int:
        """Requests Envoy has sent to the sidecar's HTTP door so far."""
        stats = await self.envoy.stats("cluster.")
        return int(stats.get(f"cluster.{HTTP_CLUSTER}.upstream_rq_total", 0))


@asynccontextmanager
async def running_gateway(tmp_dir: str, upstream_url: str, *extra: str, env: dict[str, str] | None = None,
                          log_file: Path | None = None, own_sqlite: bool = False) -> AsyncIterator[Gateway]:
    """Sidecar (with ``extra`` arguments and ``env``, logging to ``log_file`` if given) and Envoy, both ready,
    both stopped on exit; ``own_sqlite``: the sidecar on its own SQLite file (tests/support/bridge.py)."""
    listen_port = free_port()  # first: the sidecar makes its own model calls through this listener
    async with running_sidecar(tmp_dir, upstream_url, "--upstream-via", f"http://127.0.0.1:{listen_port}/v1",
                               *extra, env=env, log_file=log_file, own_sqlite=own_sqlite) as sidecar:
        envoy = await start_envoy(render_bootstrap(
            listen_port=listen_port, extproc_port=sidecar.extproc_port,
            http_port=int(sidecar.http_url.rsplit(":", 1)[1]), upstream=upstream_url, admin_port=0))
        try:
            yield Gateway(sidecar, f"http://127.0.0.1:{listen_port}", envoy)
        finally:
            envoy.stop()
