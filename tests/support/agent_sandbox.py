"""A cluster for the ``agent-sandbox`` backend without one: devtools/fake_kube.py's API server (with its controller)
on loopback, a ``SandboxWarmPool`` per memory tier, and a stand-in pod (devtools/standin_pod.py) per claim.

    async with fake_cluster() as cluster:      # cluster.api_url, cluster.kube, cluster.pods, cluster.ports
        ...
"""

from __future__ import annotations

import contextlib
import socket
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path

from aiohttp import web

from responses_bridge.devtools.fake_kube import FakeKube, load_resources
from responses_bridge.devtools.standin_pod import StandInPods

CRDS = Path(__file__).resolve().parents[1] / "deploy" / "crds" / "agent-sandbox-2fd412d.yaml"
NAMESPACE = "sandboxes"


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


@dataclass
class FakeCluster:
    api_url: str
    kube: FakeKube
    pods: StandInPods

    @property
    def settings(self) -> dict[str, str]:
        """The bridge's environment for the backend against this cluster."""
        return {"RESPONSES_BRIDGE_CODE_SANDBOX_BACKEND": "agent-sandbox",
                "RESPONSES_BRIDGE_AGENT_SANDBOX_API_URL": self.api_url,
                "RESPONSES_BRIDGE_AGENT_SANDBOX_NAMESPACE": NAMESPACE,
                "RESPONSES_BRIDGE_AGENT_SANDBOX_POOLS": "1g=bridge-1g,4g=bridge-4g",
                "RESPONSES_BRIDGE_AGENT_SANDBOX_REST_PORT": str(self.pods.rest_port),
                "RESPONSES_BRIDGE_AGENT_SANDBOX_GRPC_PORT": str(self.pods.grpc_port)}


def pool(name: str) -> dict[str, object]:
    return {"apiVersion": "extensions.agents.x-k8s.io/v1beta1", "kind": "SandboxWarmPool",
            "metadata": {"name": name}, "spec": {"replicas": 2, "sandboxTemplateRef": {"name": name}}}


@contextlib.asynccontextmanager
async def fake_cluster(pools: tuple[str, ...] = ("bridge-1g", "bridge-4g"), *,
                       network: bool = False) -> AsyncIterator[FakeCluster]:
    """``network``: the pods share the host's network (they reach the bridge's egress door; nothing else is
    enforced then: a real cluster's NetworkPolicy is not emulated)."""
    pods = StandInPods(rest_port=free_port(), grpc_port=free_port(), network=network)
    kube = FakeKube(load_resources(CRDS), pods)
    runner = web.AppRunner(kube.app(), access_log=None)
    await runner.setup()
    port = free_port()
    await web.TCPSite(runner, "127.0.0.1", port).start()
    for name in pools:
        await kube.create("extensions.agents.x-k8s.io", "sandboxwarmpools", NAMESPACE, pool(name))
    try:
        yield FakeCluster(f"http://127.0.0.1:{port}", kube, pods)
    finally:
        await runner.cleanup()
