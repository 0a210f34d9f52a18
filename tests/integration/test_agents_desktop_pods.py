"""``computer_use`` on the ``agent-sandbox`` backend, through the openai SDK's ``client.beta.agents`` and the HTTP door:
the session's desktop runs in a pod of the desktop pool (``RESPONSES_BRIDGE_AGENT_SANDBOX_DESKTOP_POOL``; the fake
cluster's stand-in pod), its browser on the network only through the bridge's egress door and the environment's
allowlist, each new origin approved by the client. The fake model (scripted) opens the loopback page, clicks its
button, types into its field and presses Enter: the page's server records the click and the text; the session's
``computer_use_call`` items carry the JPEG; deleting the session gives its pod back (the claim deleted). A button to a
URL of 40,000 characters, clicked: the request head too large for the door and the proxy is refused by the pod's
proxy relay and told to the model with the call (the relay closed it unanswered before, and nothing was told)."""

from __future__ import annotations

import sys
from collections.abc import AsyncIterator
from pathlib import Path

import aiohttp
import pytest

from tests.integration.test_agents_api import BETA, MODEL
from tests.integration.test_agents_desktop import (
    ENVIRONMENT,
    NEEDS_DESKTOP,
    TENANT,
    TOOLS,
    Session,
    _client,
    _reached,
    calls_of,
    computer,
    jpeg,
    navigate,
)
from tests.integration.test_agents_desktop_network import told, told_last
from tests.integration.test_desktop import BUTTON, FIELD, Site, _site, until
from tests.support.agent_sandbox import FakeCluster, fake_cluster
from tests.support.bridge import Sidecar, UpstreamLog, running_sidecar
from tests.support.envoy import free_port

pytestmark = [NEEDS_DESKTOP, pytest.mark.store_proven(
    "tests/integration/test_agents_desktop_approvals.py",
    reason="a desktop session is stored the same whichever backend runs its desktop, and one runs on PostgreSQL in "
           "test_agents_desktop_approvals")]
CLAIMS = ("extensions.agents.x-k8s.io", "sandboxclaims")


@pytest.fixture(scope="module")
async def site() -> AsyncIterator[Site]:
    made, runner = await _site()
    yield made
    await runner.cleanup()


@pytest.fixture(scope="module")
async def pods() -> AsyncIterator[FakeCluster]:
    async with fake_cluster(("bridge-1g", "bridge-desktop"), network=True) as cluster:
        yield cluster


@pytest.fixture(scope="module")
async def sidecar(fake_upstream: str, tmp_path_factory: pytest.TempPathFactory, site: Site,
                  pods: FakeCluster) -> AsyncIterator[Sidecar]:
    directory = tmp_path_factory.mktemp("agents-desktop-pods")
    async with running_sidecar(str(directory), fake_upstream, extproc=False, ready_headers=TENANT,
                               log_file=Path(directory) / "sidecar.log",
                               env={**pods.settings, "RESPONSES_BRIDGE_AUTH": "header",
                                    "RESPONSES_BRIDGE_AGENT_SANDBOX_PYTHON": f"{sys.prefix}/bin/python",
                                    "RESPONSES_BRIDGE_AGENT_SANDBOX_DESKTOP_POOL": "bridge-desktop",
                                    "RESPONSES_BRIDGE_AGENT_SANDBOX_EGRESS_LISTEN": f"127.0.0.1:{free_port()}",
                                    "RESPONSES_BRIDGE_CODE_EGRESS_ALLOWED_TARGETS": f"127.0.0.1:{site.port}"}) \
            as started:
        yield started


async def test_a_session_drives_the_browser_on_a_desktop_in_a_pod(sidecar: Sidecar, site: Site,
                                                                  pods: FakeCluster) -> None:
    alpha = _client(sidecar, "alpha")
    try:
        agent = await alpha.beta.agents.create(model=MODEL, tools=TOOLS)
        made = await alpha.beta.agents.sessions.create(agent_id=agent.id, environment=ENVIRONMENT)
        async with aiohttp.ClientSession(sidecar.http_url, headers={**BETA, **TENANT}) as http:
            session = Session(http, made.id)
            opened = await navigate(session, f"http://127.0.0.1:{site.port}/")
            assert await _reached(session, lambda: "/" in site.seen), site.seen  # the pod's browser, via the door
            assert pods.kube.live(CLAIMS) != []  # the desktop's pod (the container's calls end with them)
            assert jpeg(calls_of(opened)[-1]["output"]["image_url"]).size == (1280, 800)
            await session.turn(computer({"type": "wait"}))  # the page drawn before the model clicks it
            clicked = await session.turn(computer({"type": "click", "button": "left", "x": BUTTON[0],
                                                   "y": BUTTON[1]}))
            assert await until(lambda: "/clicked" in site.seen), site.seen
            assert [item["status"] for item in calls_of(clicked)] == ["completed"]
            await session.turn(computer({"type": "click", "button": "left", "x": FIELD[0], "y": FIELD[1]},
                                        {"type": "type", "text": "hello pod"},
                                        {"type": "keypress", "keys": ["ENTER"]}))
            assert await until(lambda: "/submit?text=hello+pod" in site.seen), site.seen
        await alpha.beta.agents.sessions.delete(made.id)
        assert await until(lambda: pods.kube.live(CLAIMS) == []), pods.kube.live(CLAIMS)  # its pod given back
    finally:
        await alpha.close()


async def test_a_url_too_long_for_the_door_is_told_with_the_click(sidecar: Sidecar, site: Site, fake_upstream: str,
                                                                  pods: FakeCluster) -> None:
    """Issue 98's too-long URL on a pod's desktop: the click's call ``completed``, the model told the request was
    refused as too large, naming the host; the page of the button reached (the control: the way out works)."""
    alpha = _client(sidecar, "alpha")
    upstream = UpstreamLog(fake_upstream.removesuffix("/v1"))
    try:
        agent = await alpha.beta.agents.create(model=MODEL, tools=TOOLS)
        made = await alpha.beta.agents.sessions.create(agent_id=agent.id, environment=ENVIRONMENT)
        async with aiohttp.ClientSession(sidecar.http_url, headers={**BETA, **TENANT}) as http:
            session = Session(http, made.id)
            await navigate(session, f"http://127.0.0.1:{site.port}/long")
            assert await _reached(session, lambda: "/long" in site.seen), site.seen
            await session.turn(computer({"type": "wait"}))  # the page drawn before the model clicks it
            assert not any("head_too_large" in text for text in told(await upstream.last_body()))
            clicked = await session.turn(computer({"type": "click", "button": "left", "x": BUTTON[0],
                                                   "y": BUTTON[1]}))
            assert [item["status"] for item in calls_of(clicked)] == ["completed"]
            said = told_last(await upstream.last_body())
            if "head_too_large" not in said:  # the screen settled before the browser's request was refused
                await session.turn(computer({"type": "wait"}))
                said += told_last(await upstream.last_body())
            assert "network refused:" in said, said
            assert "a request to 127.0.0.1 was refused: the request head is over 32 KiB" in said, said
            assert "[head_too_large]" in said, said
            assert not any(path.startswith("/landed") for path in site.seen)
        await alpha.beta.agents.sessions.delete(made.id)
    finally:
        await alpha.close()
