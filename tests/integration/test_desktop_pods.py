"""The desktop on the ``agent-sandbox`` backend: one pod of the desktop pool claimed per desktop (the fake cluster's
stand-in pod: the runtime's real file and process APIs, its processes in bubblewrap), the desktop's process run
through the process API and driven over its stdin and stdout, the browser's traffic through the bridge's egress door
with the call's own credential (relayed inside the pod: Chromium takes none), the session's origin approvals asked
by the call's proxy. A loopback page records the click and the text; an origin the client denies is never reached;
the pod's claim is gone once the desktop stops; without a desktop pool a desktop is refused naming the setting."""

from __future__ import annotations

import sys
from collections.abc import AsyncIterator
from typing import Any

import pytest

from responses_bridge.config.settings import Settings
from responses_bridge.sandbox.agent_sandbox.backend import AgentSandboxBackend
from responses_bridge.sandbox.desktop import Desktop, DesktopSettings, DesktopUnavailable, parse_actions
from responses_bridge.sandbox.egress.policy import EgressRules, parse_policy
from responses_bridge.sandbox.egress.proxy import EgressLimits, EgressSettings
from responses_bridge.sandbox.limits import SandboxLimits
from tests.integration import test_desktop
from tests.integration.test_desktop import (
    BUTTON,
    FIELD,
    HEIGHT,
    WIDTH,
    Site,
    _image,
    _page_drawn,
    needs_desktop,
    until,
)
from tests.support.agent_sandbox import FakeCluster, fake_cluster
from tests.support.envoy import free_port

pytestmark = [pytest.mark.store_free, needs_desktop]  # a fake cluster and loopback servers of its own
CLAIMS = ("extensions.agents.x-k8s.io", "sandboxclaims")
DESKTOP_POOL = "bridge-desktop"
PYTHON = f"{sys.prefix}/bin/python"
"""The pods' Python with Pillow (the desktop image's): the stand-in binds the tests' environment where it lies."""
sites = test_desktop.sites  # the fixture: the page the desktop starts on, and another origin the policy allows


@pytest.fixture
async def cluster() -> AsyncIterator[FakeCluster]:
    async with fake_cluster(("bridge-1g", DESKTOP_POOL), network=True) as made:
        yield made


async def _backend(cluster: FakeCluster, sites: tuple[Site, Site], **settings: Any) -> AgentSandboxBackend:
    environment = {key.removeprefix("RESPONSES_BRIDGE_").lower(): value for key, value in cluster.settings.items()}
    configured = Settings(**{**environment, "agent_sandbox_python": PYTHON,
                             "agent_sandbox_egress_listen": f"127.0.0.1:{free_port()}",
                             "agent_sandbox_pools": "1g=bridge-1g", **settings})
    rules = EgressRules.parse(",".join(f"127.0.0.1:{site.port}" for site in sites))
    backend = AgentSandboxBackend.from_settings(configured, SandboxLimits(timeout=30.0),
                                                egress=EgressSettings(rules, EgressLimits()))
    await backend.start()
    return backend


@pytest.fixture
async def backend(cluster: FakeCluster, sites: tuple[Site, Site]) -> AsyncIterator[AgentSandboxBackend]:
    made = await _backend(cluster, sites, agent_sandbox_desktop_pool=DESKTOP_POOL)
    yield made
    await made.close()


async def test_a_desktop_in_a_pod_clicks_types_and_reaches_only_approved_origins(
        cluster: FakeCluster, backend: AgentSandboxBackend, sites: tuple[Site, Site]) -> None:
    allowed, other = sites
    asked: list[str] = []
    policy = parse_policy({"type": "allowlist", "allowed_domains": ["127.0.0.1"]}, "network_policy")
    desktop = Desktop(backend.desktop_host(), tenant="t1", network=policy, on_origin=asked.append,
                      settings=DesktopSettings(width=WIDTH, height=HEIGHT, url=f"http://127.0.0.1:{allowed.port}/"))
    await desktop.start()
    try:
        assert cluster.kube.live(CLAIMS) != []  # the desktop's own pod, claimed from the desktop pool
        assert desktop.memory() is None and desktop.processes() == [] and desktop.uid is None  # not this machine's
        assert await until(lambda: "/" in allowed.seen), allowed.seen  # through the door, with the call's credential
        await _page_drawn(desktop)
        clicked = await desktop.act(parse_actions([{"type": "click", "button": "left", "x": BUTTON[0],
                                                    "y": BUTTON[1]}], WIDTH, HEIGHT))
        assert clicked.error is None and _image(clicked.jpeg).size == (WIDTH, HEIGHT)
        assert await until(lambda: "/clicked" in allowed.seen), allowed.seen
        typed = await desktop.act(parse_actions([
            {"type": "click", "button": "left", "x": FIELD[0], "y": FIELD[1]},
            {"type": "type", "text": "hello pod"},
            {"type": "keypress", "keys": ["ENTER"]},
        ], WIDTH, HEIGHT))
        assert typed.error is None
        assert await until(lambda: "/submit?text=hello+pod" in allowed.seen), allowed.seen

        # a new origin (the other port: the policy allows it) waits for the client, who denies it
        denied = f"http://127.0.0.1:{other.port}"
        for action in ({"type": "keypress", "keys": ["CTRL", "L"]}, {"type": "type", "text": f"{denied}/secret"},
                       {"type": "keypress", "keys": ["ENTER"]}):
            shot = await desktop.act(parse_actions([action], WIDTH, HEIGHT))
        assert await until(lambda: denied in asked), asked
        assert denied in (shot.pending_origins or desktop.pending_origins())
        desktop.deny_origin(denied)
        await desktop.screenshot()
        assert other.seen == []
    finally:
        await desktop.stop()
    assert await until(lambda: cluster.kube.live(CLAIMS) == []), cluster.kube.live(CLAIMS)  # the pod gone with it


async def test_without_a_desktop_pool_a_desktop_is_refused_naming_the_setting(
        cluster: FakeCluster, sites: tuple[Site, Site]) -> None:
    backend = await _backend(cluster, sites)
    try:
        with pytest.raises(DesktopUnavailable, match="RESPONSES_BRIDGE_AGENT_SANDBOX_DESKTOP_POOL"):
            await Desktop(backend.desktop_host(), tenant="t1").start()
        assert cluster.kube.live(CLAIMS) == []  # nothing claimed
    finally:
        await backend.close()
