"""MCP approvals in sessions, through both doors: a call of an agent's MCP tool that does not say it only reads
stops the session (``requires_action`` with an ``mcp_approval_request`` action, the turn ``waiting``); the client's
``agent.session.input.mcp_approval_request_result`` resumes it — approved, the bridge's tool loop makes the call;
denied, it is not made and the model is told. A read-only tool runs at once. Every 2xx answer and every event is
validated strictly with the SDK's types, the client's events sent with the SDK."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import aiohttp
import openai
import pytest
from openai.types.beta import AgentSession
from openai.types.beta.agents.sessions import Turn

from tests.integration.test_agents_api import _ITEMS, BETA, MODEL, frames, read_until_idle, strict
from tests.support.bridge import Sidecar, running_sidecar
from tests.support.gateway import envoy_before
from tests.support.mcp_server import MCPTestServer
from tests.support.sdk import async_sdk

pytestmark = pytest.mark.store_proven(
    "tests/integration/test_agents_automations_replicas.py",
    "tests/integration/test_replicas.py",
    "tests/integration/test_input_references.py",
    reason="every store/postgres line it covers on PostgreSQL is covered by the modules named (scripts/pg-coverage)",
)


@pytest.fixture(scope="module")
async def mcp_sidecar(fake_upstream: str, tmp_path_factory: pytest.TempPathFactory) -> AsyncIterator[Sidecar]:
    async with running_sidecar(str(tmp_path_factory.mktemp("agents-approvals")), fake_upstream,
                               env={"RESPONSES_BRIDGE_MCP_ALLOWED_HOSTS": "127.0.0.1"}) as sidecar:
        yield sidecar


@pytest.fixture(scope="module")
async def mcp_envoy(mcp_sidecar: Sidecar) -> AsyncIterator[str]:
    async with envoy_before(mcp_sidecar) as url:
        yield url


@pytest.fixture(params=["http", "envoy"])
def door_base(request: pytest.FixtureRequest, mcp_sidecar: Sidecar) -> str:
    return mcp_sidecar.http_url if request.param == "http" else str(request.getfixturevalue("mcp_envoy"))


@pytest.fixture
async def door(door_base: str) -> AsyncIterator[aiohttp.ClientSession]:
    async with aiohttp.ClientSession(door_base, headers=BETA, timeout=aiohttp.ClientTimeout(total=60)) as http:
        yield http


@pytest.fixture
async def sdk(door_base: str) -> AsyncIterator[openai.AsyncOpenAI]:
    async with async_sdk(base_url=f"{door_base}/v1", api_key="sk-client", max_retries=0,
                                  timeout=60) as client:
        yield client


async def read_until(answer: aiohttp.ClientResponse, event_type: str) -> bytes:
    raw = b""
    async for chunk in answer.content.iter_any():
        raw += chunk
        if f"event: {event_type}\n".encode() in raw and raw.endswith(b"\n\n"):
            break
    return raw


async def read_approving(door: aiohttp.ClientSession, answer: aiohttp.ClientResponse) -> bytes:
    """A session's stream read until it is idle, each MCP call it asks approval for approved as it asks."""
    raw, answered = b"", set()
    async for chunk in answer.content.iter_any():
        raw += chunk
        if not raw.endswith(b"\n\n"):
            continue
        for _, event in frames(raw):
            if event["type"] != "agent.session.requires_action":
                continue
            for action in event["session"]["required_actions"]:
                if action["type"] == "mcp_approval_request" and action["request_id"] not in answered:
                    answered.add(action["request_id"])
                    async with door.post(f"/v1/agents/sessions/{event['session']['id']}/events", json={"events": [
                            {"type": "agent.session.input.mcp_approval_request_result",
                             "request_id": action["request_id"],
                             "response": {"type": "mcp_tool_call", "decision": "approve"}}]}) as posted:
                        assert posted.status == 202, await posted.text()
        if b"event: agent.session.idle\n" in raw:
            break
    return raw


async def start_and_wait_for_approval(door: aiohttp.ClientSession, mcp: MCPTestServer,
                                      text: str) -> tuple[str, list[tuple[str, dict[str, Any]]], dict[str, Any]]:
    """A session whose first turn calls the test server's ``echo`` with ``text``: its id, its events up to the
    ``requires_action``, and the one required action."""
    tool = {"type": "mcp", "server_label": "tools", "allowed_tools": ["echo", "lookup"],
            "transport": {"type": "http", "server_url": mcp.http_url}}
    async with door.post("/v1/agents/sessions", json={
            "agent": {"model": MODEL, "tools": [tool]}, "environment": {"type": "none"}, "stream": True,
            "input": f'call tools__echo [args={{"text": "{text}"}}]'}) as answer:
        assert answer.status == 200, await answer.text()
        first = frames(await read_until(answer, "agent.session.requires_action"))
    session = first[-1][1]["session"]
    assert session["status"] == "requires_action"
    [action] = session["required_actions"]
    return session["id"], first, action


async def test_an_approved_call_is_made_and_the_turn_goes_on(door: aiohttp.ClientSession, mcp: MCPTestServer,
                                                             sdk: openai.AsyncOpenAI) -> None:
    session_id, first, action = await start_and_wait_for_approval(door, mcp, "approve me")
    assert action["type"] == "mcp_approval_request" and action["request_id"].startswith("mcpr")
    assert action["request"] == {"type": "mcp_tool_call", "server_label": "tools", "name": "echo",
                                 "arguments": {"text": "approve me"},
                                 "message": "Allow the MCP server 'tools' to run its tool 'echo'?"}
    # nothing was called yet: no mcp_call item, and the turn waits
    assert not [e for _, e in first if e["type"].startswith("agent.session.turn.item")
                and e["item"]["type"] == "mcp_call"]
    async with door.get(f"/v1/agents/sessions/{session_id}") as answer:
        retrieved = strict(AgentSession, await answer.json())
    assert retrieved.status == "requires_action" and retrieved.required_actions is not None
    async with door.get(f"/v1/agents/sessions/{session_id}/turns/{action['turn_id']}") as answer:
        assert strict(Turn, await answer.json()).status == "waiting"

    await sdk.beta.agents.sessions.events.create(session_id, events=[{
        "type": "agent.session.input.mcp_approval_request_result", "request_id": action["request_id"],
        "response": {"type": "mcp_tool_call", "decision": "approve"}}])
    async with door.get(f"/v1/agents/sessions/{session_id}/events",
                        headers={"Last-Event-ID": first[-1][0]}) as answer:
        rest = [event for _, event in frames(await read_until_idle(answer))]
    assert rest[0]["type"] == "agent.session.in_progress" and rest[0]["session"]["required_actions"] == []
    [call] = [e["item"] for e in rest if e["type"] == "agent.session.turn.item.done"
              and e["item"]["type"] == "mcp_call"]
    assert (call["name"], call["arguments"], call["status"]) == ("echo", {"text": "approve me"}, "completed")
    assert "approve me" in call["output"]
    text = "".join(e["delta"] for e in rest if e["type"] == "agent.session.turn.output_text.delta")
    assert text.startswith("Tool result:") and "approve me" in text
    assert [e["type"] for e in rest][-2:] == ["agent.session.turn.completed", "agent.session.idle"]
    async with door.get(f"/v1/agents/sessions/{session_id}/items", params={"order": "asc"}) as answer:
        items = [strict(_ITEMS, item) for item in (await answer.json())["data"]]
    assert [item.type for item in items] == ["message", "mcp_call", "message"]


@pytest.mark.parametrize("decision", ["deny", "cancel"])
async def test_a_denied_call_is_not_made_and_the_model_is_told(door: aiohttp.ClientSession, mcp: MCPTestServer,
                                                               sdk: openai.AsyncOpenAI, decision: str) -> None:
    session_id, first, action = await start_and_wait_for_approval(door, mcp, "deny me")
    await sdk.beta.agents.sessions.events.create(session_id, events=[{
        "type": "agent.session.input.mcp_approval_request_result", "request_id": action["request_id"],
        "response": {"type": "mcp_tool_call", "decision": decision}}])  # type: ignore[typeddict-item]
    async with door.get(f"/v1/agents/sessions/{session_id}/events",
                        headers={"Last-Event-ID": first[-1][0]}) as answer:
        rest = [event for _, event in frames(await read_until_idle(answer))]
    assert not [e for e in rest if e["type"].startswith("agent.session.turn.item")
                and e["item"]["type"] == "mcp_call"]
    text = "".join(e["delta"] for e in rest if e["type"] == "agent.session.turn.output_text.delta")
    why = "denied it" if decision == "deny" else "dismissed the request"
    assert text.startswith("Noted: The call of tool 'echo' on MCP server 'tools'") and why in text
    assert [e["type"] for e in rest][-2:] == ["agent.session.turn.completed", "agent.session.idle"]


async def test_a_read_only_tool_runs_without_asking(door: aiohttp.ClientSession, mcp: MCPTestServer) -> None:
    tool = {"type": "mcp", "server_label": "tools", "allowed_tools": ["lookup"],
            "transport": {"type": "http", "server_url": mcp.http_url}}
    async with door.post("/v1/agents/sessions", json={
            "agent": {"model": MODEL, "tools": [tool]}, "environment": {"type": "none"}, "stream": True,
            "input": 'call tools__lookup [args={"key": "k1"}]'}) as answer:
        events = [event for _, event in frames(await read_until_idle(answer))]
    assert "agent.session.requires_action" not in [e["type"] for e in events]
    [call] = [e["item"] for e in events if e["type"] == "agent.session.turn.item.done"
              and e["item"]["type"] == "mcp_call"]
    assert call["output"] == "value of k1"


async def test_approval_results_that_answer_nothing_are_400s(door: aiohttp.ClientSession,
                                                             mcp: MCPTestServer) -> None:
    session_id, _, action = await start_and_wait_for_approval(door, mcp, "twice")
    bad = [({"request_id": "mcpr_unknown", "response": {"type": "mcp_tool_call", "decision": "approve"}},
            "request_id"),
           ({"request_id": action["request_id"], "response": {"type": "mcp_tool_call", "decision": "maybe"}},
            "events[0].response.decision"),
           ({"request_id": action["request_id"]}, "events[0].response")]
    for event, param in bad:
        async with door.post(f"/v1/agents/sessions/{session_id}/events", json={"events": [
                {"type": "agent.session.input.mcp_approval_request_result", **event}]}) as answer:
            assert answer.status == 400, await answer.text()
            assert (await answer.json())["error"]["param"] == param
    # a desktop's answer is not taken for an MCP call's request, nor one that is not the SDK's shape
    for response, param in (({"type": "browser_origin_access", "decision": "approve"}, "request_id"),
                            ({"type": "browser_origin_access", "decision": "allow"}, "events[0].response.decision")):
        async with door.post(f"/v1/agents/sessions/{session_id}/events", json={"events": [
                {"type": "agent.session.input.computer_use_approval_request_result",
                 "request_id": action["request_id"], "response": response}]}) as answer:
            assert answer.status == 400
            error = (await answer.json())["error"]
        assert error["param"] == param, error
    async with door.post(f"/v1/agents/sessions/{session_id}/events", json={"events": [
            {"type": "agent.session.input.cancel"}]}) as answer:
        assert answer.status == 202
