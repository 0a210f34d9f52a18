"""A bridge killed in the middle of a call on the ``agent-sandbox`` backend leaves nothing past the claim's shutdown
time: the claim it made carries ``spec.lifecycle`` (``shutdownTime`` the call's time limit, the ready deadline and
``RESPONSES_BRIDGE_AGENT_SANDBOX_SHUTDOWN_MARGIN`` ahead; policy ``Delete``), so agent-sandbox's controller (here
the fake's, which honours it as the real one does) deletes the claim, its Sandbox and its pod although nobody is
left to."""

from __future__ import annotations

import asyncio
import contextlib
import signal
from datetime import UTC, datetime

import aiohttp

from tests.integration.test_agent_sandbox_e2e import pytestmark as pods_marks
from tests.integration.test_code_interpreter_e2e import run_code
from tests.support.agent_sandbox import fake_cluster
from tests.support.bridge import running_sidecar

pytestmark = pods_marks
CLAIMS = ("extensions.agents.x-k8s.io", "sandboxclaims")
SANDBOXES = ("agents.x-k8s.io", "sandboxes")


async def test_a_crash_mid_call_leaves_no_claim_past_its_shutdown_time(fake_upstream: str, tmp_path: object) -> None:
    async with fake_cluster() as cluster, running_sidecar(
            str(tmp_path), fake_upstream,
            own_sqlite=True, env={**cluster.settings, "RESPONSES_BRIDGE_CODE_TIMEOUT": "2",
                 "RESPONSES_BRIDGE_AGENT_SANDBOX_READY_TIMEOUT": "1",
                 "RESPONSES_BRIDGE_AGENT_SANDBOX_SHUTDOWN_MARGIN": "1",
                 "RESPONSES_BRIDGE_AGENT_SANDBOX_PYTHON": "python3"}) as sidecar:
        body = {"model": "fake-model", "tools": [{"type": "code_interpreter", "container": {"type": "auto"}}],
                "input": run_code("while True:\n    pass")}

        async def ask() -> None:
            async with aiohttp.ClientSession() as session:
                await session.post(f"{sidecar.http_url}/v1/responses", json=body)

        asking = asyncio.ensure_future(ask())
        for _ in range(200):  # the call has claimed its pod
            if cluster.kube.live(SANDBOXES):
                break
            await asyncio.sleep(0.05)
        [claim_name] = cluster.kube.live(CLAIMS)
        claim = next(obj for key, obj in cluster.kube.objects.items() if key[:2] == CLAIMS)
        lifecycle = claim["spec"]["lifecycle"]
        assert lifecycle["shutdownPolicy"] == "Delete"
        ahead = datetime.fromisoformat(lifecycle["shutdownTime"].replace("Z", "+00:00")) - datetime.now(UTC)
        assert ahead.total_seconds() <= 2 + 1 + 1 + 1  # the time limit, the ready deadline, the margin, rounding
        [pod] = cluster.pods.started
        sidecar.process.process.send_signal(signal.SIGKILL)  # type: ignore[union-attr]  # no cleanup of any kind
        with contextlib.suppress(aiohttp.ClientError):
            await asking
        assert cluster.kube.live(CLAIMS) == [claim_name]  # nobody deleted it
        for _ in range(200):
            if not cluster.kube.live(CLAIMS):
                break
            await asyncio.sleep(0.1)
        assert cluster.kube.live(CLAIMS) == [] and cluster.kube.live(SANDBOXES) == []
        assert not pod.root.exists()  # the pod and the call's files with it
