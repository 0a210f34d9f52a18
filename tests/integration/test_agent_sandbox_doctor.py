"""``responses-bridge doctor`` with ``RESPONSES_BRIDGE_CODE_SANDBOX_BACKEND=agent-sandbox``, run as a user runs it,
against the fake Kubernetes API: every check passes on a cluster that serves the CRDs, lets the bridge claim and
has ready pods in each pool; each failure (the API unreachable, the CRDs missing, RBAC refusing a verb, a pool
missing or without a ready pod) is one line naming its fix, and the exit status says so."""

from __future__ import annotations

import asyncio
import os
import sys

import pytest

from tests.support.agent_sandbox import FakeCluster, fake_cluster
from tests.support.envoy import free_port

pytestmark = pytest.mark.store_free  # doctor against the fake cluster: no store

POOLS = ("extensions.agents.x-k8s.io", "sandboxwarmpools")


async def doctor(cluster: FakeCluster | None, **settings: str) -> tuple[int, str]:
    env = {"PATH": os.environ["PATH"], "HOME": os.environ.get("HOME", "/tmp"),
           **(cluster.settings if cluster else {"RESPONSES_BRIDGE_CODE_SANDBOX_BACKEND": "agent-sandbox"}),
           **settings}
    process = await asyncio.create_subprocess_exec(sys.executable, "-m", "responses_bridge", "doctor", env=env,
                                                   stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.STDOUT)
    out, _ = await asyncio.wait_for(process.communicate(), 120)
    assert process.returncode is not None
    return process.returncode, out.decode()


def line(output: str, check: str) -> str:
    [found] = [text for text in output.splitlines() if text[6:].startswith(check)]
    return found


def summary(output: str, what: str) -> str:
    """The line after the checks that says what ``what`` can do."""
    [found] = [text for text in output.splitlines() if text.startswith(f"{what}: ")]
    return found


async def test_a_ready_cluster_passes_every_check() -> None:
    async with fake_cluster() as cluster:
        status, output = await doctor(cluster)
    assert status == 0, output
    for check in ("kubernetes API", "agent-sandbox CRDs", "RBAC", "pool 1g", "pool 4g"):
        assert line(output, check).startswith("ok  "), output
    assert "2 of 2 pods ready" in line(output, "pool 1g")


async def test_each_failure_is_one_line_naming_its_fix() -> None:
    async with fake_cluster() as cluster:
        cluster.kube.denied.add(("sandboxclaims", "delete"))
        cluster.kube.stalled.add("bridge-1g")
        status, output = await doctor(cluster, RESPONSES_BRIDGE_AGENT_SANDBOX_POOLS="1g=bridge-1g,16g=nowhere")
        assert status == 1
        assert line(output, "RBAC").startswith("FAIL") and "delete sandboxclaims" in line(output, "RBAC")
        assert "rbac.yaml" in line(output, "RBAC")
        assert "no ready pod" in line(output, "pool 1g") and line(output, "pool 1g").startswith("FAIL")
        assert "no SandboxWarmPool nowhere" in line(output, "pool 16g")
        cluster.kube.resources.pop(POOLS)
        status, output = await doctor(cluster)
        assert status == 1 and "not served: sandboxwarmpools" in line(output, "agent-sandbox CRDs")
        assert "install agent-sandbox" in output
    status, output = await doctor(None, RESPONSES_BRIDGE_AGENT_SANDBOX_API_URL=f"http://127.0.0.1:{free_port()}")
    assert status == 1 and "could not be reached" in line(output, "kubernetes API")


async def test_the_desktop_pool_is_checked_when_set_and_its_absence_said_when_not() -> None:
    """Set, the desktop pool is checked as the tiers' pools are, named as the desktops' (a failure is exit status
    1: the deployment means to serve desktops); unset, one line says no desktop runs and what enables one."""
    desktop = "RESPONSES_BRIDGE_AGENT_SANDBOX_DESKTOP_POOL"
    async with fake_cluster(("bridge-1g", "bridge-4g", "bridge-desktop")) as cluster:
        status, output = await doctor(cluster, **{desktop: "bridge-desktop"})
        assert status == 0, output
        assert line(output, "desktop pool").startswith("ok  ")
        assert "SandboxWarmPool bridge-desktop (session desktops): 2 of 2 pods ready" in line(output, "desktop pool")
        assert "warm pool bridge-desktop" in summary(output, "desktop (computer use)")
        cluster.kube.stalled.add("bridge-desktop")
        status, output = await doctor(cluster, **{desktop: "bridge-desktop"})
        assert status == 1
        assert line(output, "desktop pool").startswith("FAIL") and "no ready pod" in line(output, "desktop pool")
        assert "calls run in sandbox pods" in output  # the code interpreter's pools are not the desktop's
        assert "cannot be claimed" in summary(output, "desktop (computer use)")
        status, output = await doctor(cluster, **{desktop: "nowhere"})
        assert status == 1 and "no SandboxWarmPool nowhere (session desktops)" in line(output, "desktop pool")
        assert "components/agent-sandbox-desktop" in line(output, "desktop pool")
        status, output = await doctor(cluster)
    assert status == 0, output
    assert "desktop pool" not in output
    assert desktop in summary(output, "desktop (computer use)")
    assert "components/agent-sandbox-desktop" in summary(output, "desktop (computer use)")


async def test_bubblewrap_keeps_its_own_checks() -> None:
    _, output = await doctor(None, RESPONSES_BRIDGE_CODE_SANDBOX_BACKEND="bubblewrap")
    assert "agent-sandbox" not in output and "bubblewrap" in output


async def test_the_start_runs_the_same_checks_and_logs_each_failure(capsys: pytest.CaptureFixture[str]) -> None:
    from responses_bridge.config.settings import Settings
    from responses_bridge.sandbox.agent_sandbox.checks import log_at_start

    async with fake_cluster() as cluster:
        cluster.kube.stalled.add("bridge-4g")
        settings = Settings.model_validate({key.removeprefix("RESPONSES_BRIDGE_").lower(): value
                                            for key, value in cluster.settings.items()})
        findings = await log_at_start(settings)
    assert [finding.name for finding in findings if not finding.ok] == ["pool 4g"]
    logged = capsys.readouterr()
    assert "sandbox_cluster_check_failed" in logged.out + logged.err and "bridge-4g" in logged.out + logged.err
