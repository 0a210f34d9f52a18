"""An agent's function with ``async: true`` (the SDK's "the agent continues without waiting for the function
result"), through both doors: the call is shown as any function call, but the turn does not wait — no required
action, the model told at once that the call runs on its own, the turn completes. The client's result, sent after
the turn ended, closes the call (its item done, a ``function_call_output`` added, both of the call's turn) and
reaches the model at the session's next model call. A result for no open call is the SDK's retried 400. Every 2xx
answer and event validated strictly with the SDK's types; the store is SQLite, or PostgreSQL with ``--store``. The
first test (the agent made with the SDK, the streams, the 400) goes through both doors; a failed result, told as the
first's result is, behind the door, on the HTTP door alone (agent_doors ``doors``)."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import aiohttp
import openai
import pytest
from openai.types.beta import AgentSession

from tests.integration.test_agents_api import _ITEMS, MODEL, frames, read_until_idle, strict
from tests.support.agent_doors import base_fixture, door_fixture, doors, envoy_fixture, sdk_fixture  # noqa: F401
from tests.support.bridge import Sidecar, running_sidecar
from tests.support.envoy import have_envoy

pytestmark = pytest.mark.skipif(not have_envoy(), reason="envoy binary not available")
pytestmark = [pytestmark, pytest.mark.store_proven(
    "tests/integration/test_agents_automations_replicas.py",
    "tests/integration/test_replicas.py",
    "tests/unit/test_agent_store.py",
    "tests/integration/test_input_references.py",
    reason="every store/postgres line it covers on PostgreSQL is covered by the modules named (scripts/pg-coverage)",
)]

LOOKUP = {"type": "function", "name": "lookup", "description": "Look a word up", "async": True,
          "parameters": {"type": "object", "properties": {"word": {"type": "string"}}}}


@pytest.fixture(scope="module")
async def sidecar(fake_upstream: str, tmp_path_factory: pytest.TempPathFactory) -> AsyncIterator[Sidecar]:
    async with running_sidecar(str(tmp_path_factory.mktemp("agents-async")), fake_upstream) as started:
        yield started


def _strict_events(raw: bytes) -> list[dict[str, Any]]:
    events = [event for _, event in frames(raw)]
    for event in events:
        if "item" in event:
            strict(_ITEMS, event["item"])
        if "session" in event:
            strict(AgentSession, event["session"])
    return events


async def test_the_turn_goes_on_and_the_result_reaches_the_next_model_call(
        door: aiohttp.ClientSession, sdk: openai.AsyncOpenAI) -> None:
    agent = await sdk.beta.agents.create(model=MODEL, tools=[LOOKUP])  # type: ignore[list-item]
    assert agent.tools[0].type == "function" and agent.tools[0].async_ is True
    async with door.post("/v1/agents/sessions", json={
            "agent_id": agent.id, "environment": {"type": "none"}, "stream": True,
            "input": 'call lookup [args={"word": "wren"}]'}) as answer:
        assert answer.status == 200, await answer.text()
        first = _strict_events(await read_until_idle(answer))
    kinds = [event["type"] for event in first]
    assert "agent.session.requires_action" not in kinds
    assert kinds[-2:] == ["agent.session.turn.completed", "agent.session.idle"]
    [call] = [e["item"] for e in first if e["type"] == "agent.session.turn.item.added"
              and e["item"]["type"] == "function_call"]
    assert (call["name"], call["arguments"]) == ("lookup", {"word": "wren"})
    text = "".join(e["delta"] for e in first if e["type"] == "agent.session.turn.output_text.delta")
    assert text.startswith("Tool result: The function 'lookup' runs asynchronously")
    session_id = first[0]["session"]["id"]
    assert (await sdk.beta.agents.sessions.retrieve(session_id)).required_actions == []

    # the result comes after the turn ended: taken, told on the stream, kept for the next model call
    await sdk.beta.agents.sessions.events.create(session_id, events=[{
        "type": "agent.session.input.tool_result", "call_id": call["call_id"], "turn_id": call["turn_id"],
        "success": True, "output": '{"meaning": "a small bird"}'}])
    async with door.post(f"/v1/agents/sessions/{session_id}/events", json={"events": [{
            "type": "agent.session.input.tool_result", "call_id": call["call_id"], "turn_id": call["turn_id"],
            "success": True, "output": "twice"}]}) as answer:  # answered already: no open call
        assert answer.status == 400
        assert (await answer.json())["error"]["message"] == f"Unknown pending tool call: {call['call_id']}"
    await sdk.beta.agents.sessions.events.create(session_id, events=[{
        "type": "agent.session.input.message",
        "input": [{"role": "user", "content": [{"type": "input_text", "text": "and?"}]}]}])
    async with door.get(f"/v1/agents/sessions/{session_id}/events",
                        params={"after": frames_last_id(first), "until_idle": "true"}) as answer:
        rest = _strict_events(await answer.read())
    done = [e["item"] for e in rest if e["type"] == "agent.session.turn.item.done"
            and e["item"]["type"] == "function_call"]
    output = [e["item"] for e in rest if e["type"] == "agent.session.turn.item.added"
              and e["item"]["type"] == "function_call_output"]
    assert [(item["status"], item["turn_id"]) for item in done] == [("completed", call["turn_id"])]
    assert [(item["call_id"], item["output"], item["turn_id"]) for item in output] == [
        (call["call_id"], '{"meaning": "a small bird"}', call["turn_id"])]
    text = "".join(e["delta"] for e in rest if e["type"] == "agent.session.turn.output_text.delta")
    assert text == (f"Noted: The asynchronous call {call['call_id']} of function 'lookup' returned: "
                    '{"meaning": "a small bird"}')
    items = [strict(_ITEMS, item) async for item in
             sdk.beta.agents.sessions.items.list(session_id, order="asc")]
    assert [item.type for item in items] == ["message", "function_call", "message", "function_call_output",
                                             "message", "message"]
    assert items[1].status == "completed"
    # a third turn does not hear the result again
    await sdk.beta.agents.sessions.events.create(session_id, events=[{
        "type": "agent.session.input.message",
        "input": [{"role": "user", "content": [{"type": "input_text", "text": "again"}]}]}])
    async with door.get(f"/v1/agents/sessions/{session_id}/events",
                        params={"after": frames_last_id(rest), "until_idle": "true"}) as answer:
        third = _strict_events(await answer.read())
    assert "".join(e["delta"] for e in third if e["type"] == "agent.session.turn.output_text.delta") == \
        "Echo: again"


@doors("http")
async def test_a_failed_result_is_told_as_a_failure(door: aiohttp.ClientSession, sdk: openai.AsyncOpenAI) -> None:
    async with door.post("/v1/agents/sessions", json={
            "agent": {"model": MODEL, "tools": [LOOKUP]}, "environment": {"type": "none"}, "stream": True,
            "input": 'call lookup [args={"word": "kite"}]'}) as answer:
        first = _strict_events(await read_until_idle(answer))
    session_id = first[0]["session"]["id"]
    [call] = [e["item"] for e in first if e["type"] == "agent.session.turn.item.added"
              and e["item"]["type"] == "function_call"]
    await sdk.beta.agents.sessions.events.create(session_id, events=[
        {"type": "agent.session.input.tool_result", "call_id": call["call_id"], "turn_id": call["turn_id"],
         "success": False, "error": "dictionary offline"},
        {"type": "agent.session.input.message",
         "input": [{"role": "user", "content": [{"type": "input_text", "text": "so?"}]}]}])
    async with door.get(f"/v1/agents/sessions/{session_id}/events",
                        params={"after": frames_last_id(first), "until_idle": "true"}) as answer:
        rest = _strict_events(await answer.read())
    text = "".join(e["delta"] for e in rest if e["type"] == "agent.session.turn.output_text.delta")
    assert text == f"Noted: The asynchronous call {call['call_id']} of function 'lookup' failed: dictionary offline"
    [output] = [e["item"] for e in rest if e["type"] == "agent.session.turn.item.added"
                and e["item"]["type"] == "function_call_output"]
    assert (output["status"], output["error"]) == ("failed", "dictionary offline")


def frames_last_id(events: list[dict[str, Any]]) -> str:
    return str(events[-1]["event_id"])

