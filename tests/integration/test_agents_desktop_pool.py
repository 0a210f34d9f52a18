"""The sessions' desktops are a pool of their own, through the openai SDK's Agents API on the real sandbox's desktops
(services/agents/computer/desktops.py; the fake model scripted as in tests/integration/test_agents_desktop.py):

- a desktop takes none of the code sandbox's slots: one tenant runs its two desktops (``DESKTOPS_PER_TENANT``) on a
  sidecar of two code slots, and a code interpreter call runs beside them, as it ran before them;
- with auth off, an idle desktop (its session's turn ended) yields to a session that needs one when its caller is at
  its bound, least recently used first: the third session's call gets a desktop within the wait (5 s here: past it
  the call would fail, not pass late), the session that lost its desktop gets a fresh one on its next call and the
  model is told why, while the desktop that did not yield is the same (no note); and callers are told apart by their
  key, so another caller's desktop takes none of the first's.
"""

from __future__ import annotations

import base64
from pathlib import Path
from typing import Any

import aiohttp
import orjson
import pytest

from tests.integration.test_agents_api import BETA, MODEL
from tests.integration.test_agents_desktop import NEEDS_DESKTOP, TOOLS, Session, calls_of, computer, jpeg
from tests.support.bridge import Sidecar, UpstreamLog, running_sidecar
from tests.support.sdk import async_sdk

pytestmark = [NEEDS_DESKTOP, pytest.mark.store_proven(
    "tests/integration/test_agents_desktop_approvals.py", "tests/integration/test_agents_restart.py",
    reason="a desktop session's items and events are stored as any session's (test_agents_restart), and a desktop "
           "session runs on PostgreSQL in test_agents_desktop_approvals")]

ENVIRONMENT = {"type": "openai_hosted", "container_size": "small", "desktop": {"enabled": True}}
SCREENSHOT = computer({"type": "screenshot"})
FRESH = "fresh desktop"
PRINT = f"call python [args64={base64.b64encode(orjson.dumps({'code': 'print(6 * 7)'})).decode()}]"
"""The user message that makes the fake model call the code interpreter with ``print(6 * 7)``."""


async def _new_session(http: aiohttp.ClientSession) -> Session:
    async with http.post("/v1/agents/sessions", json={"agent": {"model": MODEL, "tools": TOOLS},
                                                      "environment": ENVIRONMENT}) as answer:
        assert answer.status == 200, await answer.text()
        return Session(http, (await answer.json())["id"])


async def _screenshot(session: Session) -> dict[str, Any]:
    """One computer call (a screenshot) in a turn of its own: its item, once the session is idle again."""
    [call] = calls_of(await session.turn(SCREENSHOT))
    return call


async def _gauges(sidecar: Sidecar) -> dict[str, float]:
    async with aiohttp.ClientSession() as http, http.get(f"{sidecar.http_url}/metrics") as reply:
        lines = (await reply.text()).splitlines()
    return {name: sum(float(line.rsplit(" ", 1)[1]) for line in lines if line.startswith(f"responses_bridge_{name} "))
            for name in ("desktops_live", "sandboxes_live")}


async def test_one_tenant_runs_two_desktops_and_a_code_call_beside_them_on_two_code_slots(
        fake_upstream: str, tmp_path_factory: pytest.TempPathFactory) -> None:
    directory = str(tmp_path_factory.mktemp("agents-desktop-slots"))
    env = {"RESPONSES_BRIDGE_AUTH": "header", "RESPONSES_BRIDGE_CODE_CONCURRENCY": "2",
           "RESPONSES_BRIDGE_DESKTOPS_PER_TENANT": "2", "RESPONSES_BRIDGE_DESKTOP_WAIT_SECONDS": "5"}
    tenant = {"x-tenant-id": "alpha"}
    upstream = UpstreamLog(fake_upstream.removesuffix("/v1"))
    async with running_sidecar(directory, fake_upstream, extproc=False, ready_headers=tenant, env=env,
                               log_file=Path(directory) / "sidecar.log") as sidecar, \
            aiohttp.ClientSession(sidecar.http_url, headers={**BETA, **tenant}) as http, \
            async_sdk(base_url=f"{sidecar.http_url}/v1", api_key="sk-client", max_retries=0, timeout=60,
                      default_headers=tenant) as sdk:

        async def code_call() -> None:
            response = await sdk.responses.create(
                model=MODEL, input=PRINT,
                tools=[{"type": "code_interpreter", "container": {"type": "auto"}}],
                include=["code_interpreter_call.outputs"])
            call = response.output[0]
            assert call.type == "code_interpreter_call" and call.status == "completed", response.output
            assert "".join(output.logs for output in call.outputs or () if output.type == "logs") == "42\n"

        await code_call()  # the control: before any desktop
        sessions = [await _new_session(http), await _new_session(http)]
        for session in sessions:  # the tenant's two desktops, neither waiting for the other's code slot
            call = await _screenshot(session)
            assert call["status"] == "completed" and jpeg(call["output"]["image_url"]).size == (1280, 800)
        assert await _gauges(sidecar) == {"desktops_live": 2, "sandboxes_live": 0}  # no code slot held by them
        await code_call()  # beside them, on the two code slots (the tenant's share of them: one)
        for session in sessions:  # the same desktops still: nothing was stopped for the code call
            await upstream.clear()
            assert (await _screenshot(session))["status"] == "completed"
            assert FRESH not in str((await upstream.last_body())["messages"])
        for session in sessions:
            async with http.delete(f"/v1/agents/sessions/{session.id}") as answer:
                assert answer.status == 200


async def test_with_auth_off_an_idle_desktop_yields_to_a_third_session_and_its_session_gets_a_fresh_one(
        fake_upstream: str, tmp_path_factory: pytest.TempPathFactory) -> None:
    directory = str(tmp_path_factory.mktemp("agents-desktop-yield"))
    env = {"RESPONSES_BRIDGE_DESKTOPS_PER_TENANT": "2", "RESPONSES_BRIDGE_DESKTOP_WAIT_SECONDS": "5"}
    upstream = UpstreamLog(fake_upstream.removesuffix("/v1"))
    async with running_sidecar(directory, fake_upstream, extproc=False, env=env,
                               log_file=Path(directory) / "sidecar.log") as sidecar, \
            aiohttp.ClientSession(sidecar.http_url, headers={**BETA, "Authorization": "Bearer sk-one"}) as http:
        first, second, third = [await _new_session(http) for _ in range(3)]
        for session in (first, second):  # their turns end: both desktops idle, the caller at its bound
            assert (await _screenshot(session))["status"] == "completed"
        assert (await _gauges(sidecar))["desktops_live"] == 2

        await upstream.clear()
        call = await _screenshot(third)  # within the 5 s wait, or it fails saying none is free
        assert call["status"] == "completed" and jpeg(call["output"]["image_url"]).size == (1280, 800)
        assert FRESH not in str((await upstream.last_body())["messages"])  # its first desktop: nothing to tell
        assert (await _gauges(sidecar))["desktops_live"] == 2

        await upstream.clear()  # the first session's desktop was the least recently used: it yielded
        call = await _screenshot(first)
        assert call["status"] == "completed"
        told = (await upstream.last_body())["messages"][-1]["content"]
        assert FRESH in told and "another session needed a desktop" in told, told

        await upstream.clear()  # the control: the third's desktop did not yield (the second's did, just now)
        assert (await _screenshot(third))["status"] == "completed"
        assert FRESH not in str((await upstream.last_body())["messages"])

        # another caller (another key, auth still off): a bound of its own, nobody's desktop yields to it
        async with aiohttp.ClientSession(sidecar.http_url,
                                         headers={**BETA, "Authorization": "Bearer sk-two"}) as other:
            theirs = await _new_session(other)
            assert (await _screenshot(theirs))["status"] == "completed"
            assert (await _gauges(sidecar))["desktops_live"] == 3
            await upstream.clear()
            assert (await _screenshot(third))["status"] == "completed"
            assert FRESH not in str((await upstream.last_body())["messages"])
            async with other.delete(f"/v1/agents/sessions/{theirs.id}") as answer:
                assert answer.status == 200
        for session in (first, second, third):
            async with http.delete(f"/v1/agents/sessions/{session.id}") as answer:
                assert answer.status == 200

