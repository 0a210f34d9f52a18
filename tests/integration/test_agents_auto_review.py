"""A session's ``review: "auto_review"``, through both doors: a call of an MCP tool that would ask the client's
approval is judged by a model call instead — never a required action — and the decision is the turn's
``agent_message`` item (sender ``auto_review``). Approved, the call is made; denied (by the review, or because the
review gave no decision), it is not, and the model is told why. The session shows its mode, an update changes it
for later turns, and the review's tokens count in the turn's usage. The fake model's review decides as the
action's arguments script it (``[args64=…]`` in the action, the review's last message). Every 2xx answer and event
is validated strictly with the SDK's types; the store is SQLite, or PostgreSQL with ``--store``. The review's
decisions are behind the door: on the HTTP door alone (agent_doors ``doors``); the mode shown and updated (a 400,
a later turn's stream) goes through both."""

from __future__ import annotations

import base64
from collections.abc import AsyncIterator
from typing import Any

import aiohttp
import openai
import orjson
import pytest
from openai.types.beta import AgentSession

from tests.integration.test_agents_api import _ITEMS, MODEL, frames, read_until_idle, strict
from tests.support.agent_doors import base_fixture, door_fixture, doors, envoy_fixture, sdk_fixture  # noqa: F401
from tests.support.bridge import Sidecar, running_sidecar
from tests.support.envoy import have_envoy
from tests.support.mcp_server import MCPTestServer

pytestmark = pytest.mark.skipif(not have_envoy(), reason="envoy binary not available")
pytestmark = [pytestmark, pytest.mark.store_proven(
    "tests/integration/test_agents_automations_replicas.py",
    "tests/integration/test_replicas.py",
    "tests/unit/test_agent_store.py",
    "tests/integration/test_input_references.py",
    reason="every store/postgres line it covers on PostgreSQL is covered by the modules named (scripts/pg-coverage)",
)]


@pytest.fixture(scope="module")
async def sidecar(fake_upstream: str, tmp_path_factory: pytest.TempPathFactory) -> AsyncIterator[Sidecar]:
    async with running_sidecar(str(tmp_path_factory.mktemp("agents-review")), fake_upstream,
                               env={"RESPONSES_BRIDGE_MCP_ALLOWED_HOSTS": "127.0.0.1"}) as started:
        yield started


def _b64(value: dict[str, Any]) -> str:
    return base64.b64encode(orjson.dumps(value)).decode()


def _echo_input(text: str) -> str:
    """The session's message that makes the fake model call the MCP tool ``echo`` with ``text``."""
    return f"call tools__echo [args64={_b64({'text': text})}]"


def _events(raw: bytes) -> list[dict[str, Any]]:
    events = [event for _, event in frames(raw)]
    for event in events:
        if "item" in event:
            strict(_ITEMS, event["item"])
        if "session" in event:
            strict(AgentSession, event["session"])
    return events


async def _session(door: aiohttp.ClientSession, mcp: MCPTestServer, text: str,
                   review: str | None = "auto_review") -> list[dict[str, Any]]:
    tool = {"type": "mcp", "server_label": "tools", "allowed_tools": ["echo"],
            "transport": {"type": "http", "server_url": mcp.http_url}}
    body: dict[str, Any] = {"agent": {"model": MODEL, "tools": [tool]}, "environment": {"type": "none"},
                            "stream": True, "input": _echo_input(text)}
    if review is not None:
        body["review"] = review
    async with door.post("/v1/agents/sessions", json=body) as answer:
        assert answer.status == 200, await answer.text()
        return _events(await read_until_idle(answer))


def _decisions(events: list[dict[str, Any]]) -> list[dict[str, Any]]:
    return [e["item"] for e in events if e["type"] == "agent.session.turn.item.added"
            and e["item"]["type"] == "agent_message"]


@doors("http")
async def test_an_approved_call_is_made_without_asking(door: aiohttp.ClientSession, mcp: MCPTestServer,
                                                       sdk: openai.AsyncOpenAI) -> None:
    events = await _session(door, mcp, "hello [args64=" + _b64({"decision": "approve", "reason": "harmless"}) + "]")
    kinds = [e["type"] for e in events]
    assert "agent.session.requires_action" not in kinds
    assert kinds[-2:] == ["agent.session.turn.completed", "agent.session.idle"]
    assert events[0]["session"]["review"] == "auto_review"
    [decision] = _decisions(events)
    assert (decision["sender_agent_id"], decision["turn_id"]) == ("auto_review", events[-2]["turn_id"])
    assert decision["content"][0]["text"].startswith("Approved the call of tool 'echo' on MCP server 'tools'")
    assert decision["content"][0]["text"].endswith(": harmless")
    [call] = [e["item"] for e in events if e["type"] == "agent.session.turn.item.done"
              and e["item"]["type"] == "mcp_call"]
    assert call["status"] == "completed" and "hello" in call["output"]
    session_id = events[0]["session"]["id"]
    turn = await sdk.beta.agents.sessions.turns.retrieve(events[-2]["turn_id"], session_id=session_id)
    assert turn.usage is not None and turn.usage.input_tokens > 0
    items = [item async for item in sdk.beta.agents.sessions.items.list(session_id, order="asc")]
    assert [item.type for item in items] == ["message", "agent_message", "mcp_call", "message"]
    assert (await sdk.beta.agents.sessions.retrieve(session_id)).review == "auto_review"


@doors("http")
async def test_a_denied_call_is_not_made_and_the_model_is_told(door: aiohttp.ClientSession,
                                                               mcp: MCPTestServer) -> None:
    events = await _session(door, mcp, "rm -rf [args64=" + _b64({"decision": "deny", "reason": "destructive"}) + "]")
    assert "agent.session.requires_action" not in [e["type"] for e in events]
    assert not [e for e in events if e["type"].startswith("agent.session.turn.item")
                and e["item"]["type"] == "mcp_call"]
    [decision] = _decisions(events)
    assert decision["content"][0]["text"].startswith("Denied the call of tool 'echo'")
    text = "".join(e["delta"] for e in events if e["type"] == "agent.session.turn.output_text.delta")
    assert text.startswith("Noted: The call of tool 'echo' on MCP server 'tools'")
    assert text.endswith("was not made: the automatic review denied it (destructive).")


@doors("http")
async def test_a_review_without_a_decision_denies(door: aiohttp.ClientSession, mcp: MCPTestServer) -> None:
    # the fake's review answers an unknown decision: no fallback to the client, the call is denied
    events = await _session(door, mcp, "maybe [args64=" + _b64({"decision": "ask", "reason": "unsure"}) + "]")
    assert "agent.session.requires_action" not in [e["type"] for e in events]
    [decision] = _decisions(events)
    assert decision["content"][0]["text"].endswith(": the review gave no decision")


async def test_review_is_shown_and_updated_for_later_turns(door: aiohttp.ClientSession, mcp: MCPTestServer,
                                                           sdk: openai.AsyncOpenAI) -> None:
    tool = {"type": "mcp", "server_label": "tools", "allowed_tools": ["echo"],
            "transport": {"type": "http", "server_url": mcp.http_url}}
    async with door.post("/v1/agents/sessions", json={
            "agent": {"model": MODEL, "tools": [tool]}, "environment": {"type": "none"}, "stream": True,
            "input": "hello"}) as answer:
        first = _events(await read_until_idle(answer))
    session_id = first[0]["session"]["id"]
    assert "review" not in first[0]["session"]
    async with door.post(f"/v1/agents/sessions/{session_id}", json={"review": "sometimes"}) as answer:
        assert answer.status == 400 and (await answer.json())["error"]["param"] == "review"
    async with door.post(f"/v1/agents/sessions/{session_id}", json={"review": "auto_review"}) as answer:
        assert answer.status == 200
        assert strict(AgentSession, await answer.json()).review == "auto_review"
    await sdk.beta.agents.sessions.events.create(session_id, events=[{
        "type": "agent.session.input.message", "input": [{"role": "user", "content": [
            {"type": "input_text", "text": _echo_input("later")}]}]}])
    async with door.get(f"/v1/agents/sessions/{session_id}/events",
                        params={"after": first[-1]["event_id"], "until_idle": "true"}) as answer:
        rest = _events(await answer.read())
    assert "agent.session.requires_action" not in [e["type"] for e in rest]
    [decision] = _decisions(rest)  # the fake review approves what nothing scripts (the enum's first value)
    assert decision["content"][0]["text"].startswith("Approved the call of tool 'echo'")
    updated = await sdk.beta.agents.sessions.update(session_id, review="none")
    assert updated.review is None
