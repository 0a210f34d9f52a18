"""The whole stack as deployed: a sidecar whose own model calls go back through Envoy (``--upstream-via``) and
the Envoy in front of it, with the bridge as its external processor. One helper for the suites that need every
model call to pass through Envoy (server-side tools run by the HTTP door, routed there by the processor)."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from responses_bridge.envoy_config import HTTP_CLUSTER, render_bootstrap
from tests.support.bridge import Sidecar, budget_held_bytes, running_sidecar
from tests.support.envoy import EnvoyProcess, free_port, start_envoy


@dataclass
class Gateway:
    sidecar: Sidecar
    url: str  # Envoy's listener, without /v1
    envoy: EnvoyProcess

    def door_url(self, door: str) -> str:
        """The sidecar's HTTP door for ``"http"``, Envoy's listener for ``"envoy"`` (the suites' door params)."""
        return self.sidecar.http_url if door == "http" else self.url

    @property
    def listen_port(self) -> int:
        """Envoy's listener port: where the sidecar's own model calls go (``--upstream-via``)."""
        return int(self.url.rsplit(":", 1)[1])

    async def held_bytes(self) -> int:
        """What the sidecar's memory budget holds now (its ``/metrics`` gauge)."""
        return await budget_held_bytes(self.sidecar.http_url)

    async def sidecar_requests(self) -> int:
        """Requests Envoy has sent to the sidecar's HTTP door so far."""
        stats = await self.envoy.stats("cluster.")
        return int(stats.get(f"cluster.{HTTP_CLUSTER}.upstream_rq_total", 0))


@asynccontextmanager
async def envoy_before(sidecar: Sidecar, **bootstrap: Any) -> AsyncIterator[str]:
    """An Envoy in front of a running sidecar (its processor and HTTP door, the sidecar's upstream as the cluster),
    ready; yields its listener's URL, without /v1. ``bootstrap`` goes to ``render_bootstrap`` (``auth=`` …)."""
    listen_port = free_port()
    envoy = await start_envoy(render_bootstrap(listen_port=listen_port, extproc_port=sidecar.extproc_port,
                                               http_port=int(sidecar.http_url.rsplit(":", 1)[1]),
                                               upstream=sidecar.upstream_url, admin_port=0, **bootstrap))
    try:
        yield f"http://127.0.0.1:{listen_port}"
    finally:
        envoy.stop()


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
