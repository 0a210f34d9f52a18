"""Several upstreams behind one sidecar and one Envoy: two translated fake upstreams (``a``, ``b``) and a native
one (``n``, the fake's ``--native`` mode), configured through ``RESPONSES_BRIDGE_UPSTREAMS`` / ``_MODELS``, with the
sidecar's own calls through Envoy's internal listener (``--upstream-via``) and the real MCP test server."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass

from responses_bridge.config.upstreams import UpstreamSpec
from responses_bridge.demo.procs import ManagedProcess, wait_http
from responses_bridge.envoy_config import HTTP_CLUSTER, Auth, render_bootstrap, upstream_cluster
from tests.support.bridge import PYTHON, UpstreamLog, running_sidecar
from tests.support.envoy import EnvoyProcess, free_port, start_envoy
from tests.support.mcp_server import running_mcp_server

MODELS = [
    {"match": "native*", "upstream": "n"},
    {"match": "alpha*", "upstream": "a"},
    {"match": "beta", "upstream": "b", "upstream_model": "fake-model"},
    {"match": "fake-*", "upstream": "a"},
]


@dataclass
class Deployment:
    http_url: str
    envoy_url: str
    envoy: EnvoyProcess
    logs: dict[str, UpstreamLog]
    mcp_url: str
    internal_url: str  # Envoy's internal listener, where the sidecar's own calls go (``--upstream-via``)

    async def cluster_requests(self) -> dict[str, int]:
        stats = await self.envoy.stats("cluster.")
        names = {"a": upstream_cluster("a"), "b": upstream_cluster("b"), "n": upstream_cluster("n"),
                 "sidecar": HTTP_CLUSTER}
        return {key: int(stats.get(f"cluster.{name}.upstream_rq_total", 0)) for key, name in names.items()}

    async def clear(self) -> None:
        for log in self.logs.values():
            await log.clear()

    async def models_sent(self) -> dict[str, list[str]]:
        return {name: [entry["body"]["model"] for entry in await log.entries()] for name, log in self.logs.items()
                if name != "n"}


async def _fake(port: int, *extra: str) -> ManagedProcess:
    process = ManagedProcess([PYTHON, "-m", "responses_bridge", "fake-upstream", "--port", str(port), *extra],
                             f"fake-upstream:{port}")
    process.start()
    await wait_http(f"http://127.0.0.1:{port}/health", process=process)
    return process


@asynccontextmanager
async def running_deployment(tmp_dir: str, *, keyed: bool = True, auth: str = "none") -> AsyncIterator[Deployment]:
    """``keyed``: upstream b holds its key (``api_key_env``), which the processor sets on Envoy's call to b;
    without, every upstream gets the client's key. ``auth``: the sidecar's and Envoy's ``RESPONSES_BRIDGE_AUTH``."""
    ports = {"a": free_port(), "b": free_port(), "n": free_port()}
    fakes = [await _fake(port, *(["--native"] if name == "n" else [])) for name, port in ports.items()]
    upstreams = [UpstreamSpec(name=name, url=f"http://127.0.0.1:{port}/v1", mode="native" if name == "n" else
                              "translate", api_key_env="B_KEY" if name == "b" and keyed else None,
                              api_key="forward" if name == "a" else None) for name, port in ports.items()]
    listen_port, internal_port = free_port(), free_port()
    env = {"RESPONSES_BRIDGE_UPSTREAMS": json.dumps([spec.model_dump() for spec in upstreams]),
           "RESPONSES_BRIDGE_MODELS": json.dumps(MODELS), "RESPONSES_BRIDGE_MCP_ALLOWED_HOSTS": "127.0.0.1",
           "B_KEY": "sk-upstream-b",  # b's key; a forwards the client's, n has none (the client's goes too)
           "RESPONSES_BRIDGE_AUTH": auth}
    try:
        async with running_mcp_server() as mcp, running_sidecar(
                tmp_dir, upstreams[0].url, "--upstream-via",
                f"http://127.0.0.1:{internal_port}/v1", env=env) as sidecar:  # Envoy's internal listener
            envoy = await start_envoy(render_bootstrap(
                listen_port=listen_port, extproc_port=sidecar.extproc_port,
                http_port=int(sidecar.http_url.rsplit(":", 1)[1]), upstream=upstreams[0].url, admin_port=0,
                upstreams=upstreams, internal_port=internal_port, auth=Auth(auth)))
            try:
                yield Deployment(sidecar.http_url, f"http://127.0.0.1:{listen_port}", envoy,
                                 {name: UpstreamLog(f"http://127.0.0.1:{port}") for name, port in ports.items()},
                                 mcp.http_url, f"http://127.0.0.1:{internal_port}")
            finally:
                envoy.stop()
    finally:
        for fake in fakes:
            fake.stop()
