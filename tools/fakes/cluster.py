"""A cluster for the ``agent-sandbox`` backend without one, in this process: kube.py's API server
(with its controller) on loopback, a ``SandboxWarmPool`` object per pool name, and a stand-in pod
(standin_pod.py) per claim — started when claimed, or taken from ``warm`` pods started ahead.

    async with fake_cluster(crds) as cluster:    # cluster.api_url, .kube, .pods, .settings (the bridge's env)
        ...

The tests (tests/support/agent_sandbox.py) and ``scripts/bench agent-sandbox`` use it.
"""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path

from aiohttp import web

from responses_bridge.demo.procs import free_port

from .kube import FakeKube, load_resources
from .standin_pod import StandInPods

NAMESPACE = "sandboxes"


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
async def fake_cluster(crds: Path, pools: tuple[str, ...] = ("bridge-1g", "bridge-4g"), *, network: bool = False,
                       warm: int = 0) -> AsyncIterator[FakeCluster]:
    """``crds``: agent-sandbox's CRDs (tests/deploy/crds/agent-sandbox-*.yaml); ``network``: the pods share the
    host's network (they reach the bridge's egress door; a real cluster's NetworkPolicy is not emulated then);
    ``warm``: pods started ahead (a warm pool), 0: each claim starts its own."""
    pods = StandInPods(rest_port=free_port(), grpc_port=free_port(), network=network, warm=warm)
    await pods.fill()
    kube = FakeKube(load_resources(crds), pods)
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
        await pods.stop()
