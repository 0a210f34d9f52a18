"""OpenAI's Agents API (``client.beta.agents``) through both doors: reusable agents, sessions with environment
``none`` whose turns the fake upstream answers, their event streams (resumed after a drop), turns and items, and
tenancy. Every 2xx answer and every event is validated strictly with the SDK's own types."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import aiohttp
import openai
import orjson
import pytest
from openai.types.beta import (
    Agent,
    AgentDeleted,
    AgentSession,
    AgentSessionDeleted,
    AgentSessionEvent,
    AgentSessionItem,
)
from openai.types.beta.agents.sessions import Turn
from pydantic import TypeAdapter

from tests.support.bridge import Sidecar, UpstreamLog, running_sidecar
from tests.support.sdk import async_sdk

pytestmark = pytest.mark.store_proven(
    "tests/integration/test_agents_automations_replicas.py",
    "tests/unit/test_agent_store.py",
    "tests/integration/test_replicas.py",
    reason="every store/postgres line it covers on PostgreSQL is covered by the modules named (scripts/pg-coverage)",
)

MODEL = "fake-model"
BETA = {"OpenAI-Beta": "agents=v1"}
_EVENTS: TypeAdapter[Any] = TypeAdapter(AgentSessionEvent)
_ITEMS: TypeAdapter[Any] = TypeAdapter(AgentSessionItem)


def strict(kind: Any, obj: dict[str, Any]) -> Any:
    """``obj`` validated in pydantic's strict mode, and given back unchanged (no key the type does not define)."""
    adapter = kind if isinstance(kind, TypeAdapter) else TypeAdapter(kind)
    parsed = adapter.validate_python(obj, strict=True)
    dumped = adapter.dump_python(parsed, mode="json", by_alias=True, exclude_unset=True)
    assert _undefined_keys(obj, dumped) == [], f"keys the SDK does not define: {_undefined_keys(obj, dumped)}"
    return parsed


def _undefined_keys(sent: Any, dumped: Any, path: str = "") -> list[str]:
    if isinstance(sent, dict) and isinstance(dumped, dict):
        found = [f"{path}.{key}" for key in sent if key not in dumped]
        for key in sent:
            if key in dumped:
                found += _undefined_keys(sent[key], dumped[key], f"{path}.{key}")
        return found
    if isinstance(sent, list) and isinstance(dumped, list):
        return [key for a, b in zip(sent, dumped, strict=False) for key in _undefined_keys(a, b, path)]
    return []


def frames(raw: bytes) -> list[tuple[str, dict[str, Any]]]:
    """``(id, event)`` of every SSE frame, each event checked against the SDK's ``AgentSessionEvent`` union."""
    found = []
    for block in raw.decode().split("\n\n"):
        fields = dict(line.split(": ", 1) for line in block.splitlines() if line and not line.startswith(":"))
        if "data" not in fields:
            continue
        event = orjson.loads(fields["data"])
        strict(_EVENTS, event)
        assert fields["event"] == event["type"] and fields["id"] == event["event_id"]
        found.append((fields["id"], event))
    return found


async def read_until_idle(answer: aiohttp.ClientResponse) -> bytes:
    raw = b""
    async for chunk in answer.content.iter_any():
        raw += chunk
        if b"event: agent.session.idle\n" in raw and raw.endswith(b"\n\n"):
            break
    return raw


@pytest.fixture
async def beta_client(base_url: str) -> AsyncIterator[openai.AsyncOpenAI]:
    async with async_sdk(base_url=f"{base_url}/v1", api_key="sk-client", max_retries=0,
                                  timeout=60) as sdk:
        yield sdk


async def raw_json(http: aiohttp.ClientSession, method: str, path: str, body: Any = None) -> tuple[int, Any]:
    async with http.request(method, path, json=body, headers=BETA) as answer:
        return answer.status, await answer.json()


async def test_agent_crud(beta_client: openai.AsyncOpenAI, http: aiohttp.ClientSession) -> None:
    agents = beta_client.beta.agents
    created = await agents.create(model=MODEL, name="helper", instructions="Be brief.", metadata={"team": "a"},
                                  tools=[{"type": "function", "name": "lookup", "description": "Look up",
                                          "parameters": {"type": "object", "properties": {}}}],
                                  reasoning={"effort": "low"})
    status, raw = await raw_json(http, "GET", f"/v1/agents/{created.id}")
    assert status == 200
    agent = strict(Agent, raw)
    assert (agent.model, agent.name, agent.instructions, agent.metadata) == (MODEL, "helper", "Be brief.",
                                                                             {"team": "a"})
    assert agent.tools[0].type == "function" and agent.tools[0].defer_loading is False
    assert agent.service_tier == "auto" and agent.multi_agent.enabled is False
    assert agent.reasoning.effort == "low" and agent.text.verbosity == "medium"

    updated = await agents.update(created.id, name=None, metadata={"team": "b"}, tools=None)
    assert (updated.name, updated.metadata, updated.tools, updated.instructions) == (None, {"team": "b"}, [],
                                                                                     "Be brief.")
    status, raw = await raw_json(http, "POST", f"/v1/agents/{created.id}", {"service_tier": "flex"})
    assert status == 200 and strict(Agent, raw).service_tier == "flex"

    second = await agents.create(model=MODEL)
    status, raw = await raw_json(http, "GET", "/v1/agents?limit=1")
    assert status == 200 and raw["has_more"] is True and [a["id"] for a in raw["data"]] == [second.id]
    strict(Agent, raw["data"][0])
    listed = [agent.id async for agent in agents.list(limit=1, order="asc")]
    assert listed[-2:] == [created.id, second.id]

    status, raw = await raw_json(http, "DELETE", f"/v1/agents/{second.id}")
    assert status == 200 and strict(AgentDeleted, raw).deleted is True
    with pytest.raises(openai.NotFoundError):
        await agents.retrieve(second.id)


async def test_agent_bad_input(http: aiohttp.ClientSession) -> None:
    for body, param in [({}, "model"), ({"model": MODEL, "temprature": 1}, "temprature"),
                        ({"model": MODEL, "metadata": {"k" * 65: "v"}}, "metadata"),
                        ({"model": MODEL, "tools": [{"type": "shell"}]}, "tools[0].type"),
                        ({"model": MODEL, "service_tier": "gold"}, "service_tier"),
                        ({"model": MODEL, "tools": [{"type": "function", "name": "f"}]}, "tools[0].description")]:
        status, raw = await raw_json(http, "POST", "/v1/agents", body)
        assert status == 400, body
        assert set(raw["error"]) == {"message", "type", "param", "code"} and raw["error"]["param"] == param


async def test_session_of_two_turns_streamed(beta_client: openai.AsyncOpenAI, http: aiohttp.ClientSession,
                                             upstream_log: UpstreamLog) -> None:
    agent = await beta_client.beta.agents.create(model=MODEL, instructions="Answer plainly.")
    stream = await beta_client.beta.agents.sessions.create(agent_id=agent.id, environment={"type": "none"},
                                                           input="first question", stream=True,
                                                           metadata={"case": "two-turns"})
    seen = [event async for event in stream]
    kinds = [event.type for event in seen]
    assert kinds[0] == "agent.session.created" and kinds[-1] == "agent.session.idle"
    session_id = seen[0].session.id
    text = "".join(event.delta for event in seen if event.type == "agent.session.turn.output_text.delta")
    assert text == "Echo: first question"
    assert "agent.session.turn.completed" in kinds and "agent.session.turn.item.done" in kinds

    # the second turn: a message event, followed on the session's stream from the last event seen
    last = seen[-1].event_id
    await beta_client.beta.agents.sessions.events.create(
        session_id, events=[{"type": "agent.session.input.message",
                             "input": [{"role": "user", "content": [{"type": "input_text",
                                                                     "text": "second question"}]}]}])
    async with http.get(f"/v1/agents/sessions/{session_id}/events", headers={**BETA, "Last-Event-ID": last}) as answer:
        assert answer.status == 200 and answer.content_type == "text/event-stream"
        second = frames(await read_until_idle(answer))
    second_kinds = [event["type"] for _, event in second]
    assert second_kinds[0] == "agent.session.turn.created" and second_kinds[-1] == "agent.session.idle"
    assert "".join(e["delta"] for _, e in second if e["type"] == "agent.session.turn.output_text.delta") \
        == "Echo: second question"
    # the turns share the session's context: the second call carries the first turn
    sent = [entry["body"]["messages"] for entry in await upstream_log.entries()]
    assert any(m.get("content") == "Answer plainly." for m in sent[-1])
    assert [m["role"] for m in sent[-1] if m["role"] != "system"] == ["user", "assistant", "user"]

    status, raw = await raw_json(http, "GET", f"/v1/agents/sessions/{session_id}")
    session = strict(AgentSession, raw)
    assert session.status == "idle" and session.agent.id == agent.id and session.metadata == {"case": "two-turns"}
    assert session.usage is not None and session.usage.total_tokens > 0
    status, raw = await raw_json(http, "GET", f"/v1/agents/sessions/{session_id}/turns?order=asc")
    turns = [strict(Turn, turn) for turn in raw["data"]]
    assert [turn.status for turn in turns] == ["completed", "completed"]
    status, raw = await raw_json(http, "GET", f"/v1/agents/sessions/{session_id}/items?order=asc")
    items = [strict(_ITEMS, item) for item in raw["data"]]
    assert [(item.role, item.turn_id) for item in items] == [("user", turns[0].id), ("assistant", turns[0].id),
                                                              ("user", turns[1].id), ("assistant", turns[1].id)]
    assert items[3].content[0].text == "Echo: second question"
    turn_items = await beta_client.beta.agents.sessions.turns.items.list(turns[1].id, session_id=session_id,
                                                                        order="asc")
    assert [item.id for item in turn_items.data] == [items[2].id, items[3].id]
    status, raw = await raw_json(http, "GET", f"/v1/agents/sessions/{session_id}/turns/{turns[0].id}")
    assert status == 200 and strict(Turn, raw).id == turns[0].id

    status, raw = await raw_json(http, "DELETE", f"/v1/agents/sessions/{session_id}")
    assert status == 200 and strict(AgentSessionDeleted, raw).deleted is True
    with pytest.raises(openai.NotFoundError):
        await beta_client.beta.agents.sessions.retrieve(session_id)


async def test_dropped_stream_resumes_without_loss_or_repeat(http: aiohttp.ClientSession) -> None:
    body = {"agent": {"model": MODEL}, "environment": {"type": "none"}, "stream": True,
            "input": "a long answer [chunks=40] [delay=20]"}
    async with http.post("/v1/agents/sessions", json=body, headers=BETA) as answer:
        assert answer.status == 200
        raw = b""
        async for chunk in answer.content.iter_any():
            raw += chunk
            if raw.count(b"event: agent.session.turn.output_text.delta\n") >= 5 and raw.endswith(b"\n\n"):
                break  # the client goes away mid-turn
    before = frames(raw)
    session_id = before[0][1]["session"]["id"]
    async with http.get(f"/v1/agents/sessions/{session_id}/events", params={"after": before[-1][0]},
                        headers=BETA) as answer:
        after = frames(await read_until_idle(answer))
    async with http.get(f"/v1/agents/sessions/{session_id}/events", params={"until_idle": "true"},
                        headers=BETA) as answer:
        whole = frames(await answer.read())
    assert "agent.session.idle" not in [event["type"] for _, event in before]  # it was dropped mid-turn
    assert any(event["type"] == "agent.session.turn.output_text.delta" for _, event in after)
    assert [event_id for event_id, _ in before + after] == [event_id for event_id, _ in whole]
    assert len({event_id for event_id, _ in whole}) == len(whole)
    text = "".join(e["delta"] for _, e in whole if e["type"] == "agent.session.turn.output_text.delta")
    assert text.startswith("Echo: a long answer") and len(text.split()) == 40


async def test_reasoning_summary_streamed(http: aiohttp.ClientSession) -> None:
    body = {"agent": {"model": MODEL, "reasoning": {"summary": "auto"}}, "environment": {"type": "none"},
            "stream": True, "input": "[think] ponder this"}
    async with http.post("/v1/agents/sessions", json=body, headers=BETA) as answer:
        events = [event for _, event in frames(await read_until_idle(answer))]
    kinds = [event["type"] for event in events]
    assert kinds.index("agent.session.turn.reasoning_summary_part.added") \
        < kinds.index("agent.session.turn.reasoning_summary_text.done") \
        < kinds.index("agent.session.turn.output_text.delta")
    summary = "".join(e["delta"] for e in events if e["type"] == "agent.session.turn.reasoning_summary_text.delta")
    done = [e["item"] for e in events if e["type"] == "agent.session.turn.item.done"]
    assert [item["type"] for item in done] == ["reasoning", "message"]
    assert done[0]["summary"] == [{"type": "summary_text", "text": summary}] and "ponder this" in summary


async def test_a_failed_turn_leaves_the_session_usable(beta_client: openai.AsyncOpenAI,
                                                       http: aiohttp.ClientSession) -> None:
    session = await beta_client.beta.agents.sessions.create(agent={"model": MODEL}, environment={"type": "none"},
                                                            input="[error=500] boom")
    await beta_client.beta.agents.sessions.events.create(session.id, events=[
        {"type": "agent.session.input.message",
         "input": [{"role": "user", "content": [{"type": "input_text", "text": "again"}]}]}])
    async with http.get(f"/v1/agents/sessions/{session.id}/events", params={"until_idle": "true"},
                        headers=BETA) as answer:
        events = [event for _, event in frames(await read_until_idle(answer))]
    ends = [(event["type"], event["turn"]["error"]) for event in events
            if event["type"] in ("agent.session.turn.failed", "agent.session.turn.completed")]
    assert ends[0][0] == "agent.session.turn.failed" and ends[0][1]["code"] == "server_error"
    if len(ends) == 1:  # the idle between the turns ended the read: follow on to the second
        async with http.get(f"/v1/agents/sessions/{session.id}/events", headers=BETA,
                            params={"after": events[-1]["event_id"], "until_idle": "true"}) as answer:
            events += [event for _, event in frames(await answer.read())]
        ends = [(event["type"], event["turn"]["error"]) for event in events
                if event["type"] in ("agent.session.turn.failed", "agent.session.turn.completed")]
    assert ends[1] == ("agent.session.turn.completed", None)
    assert "".join(e["delta"] for e in events if e["type"] == "agent.session.turn.output_text.delta") \
        == "Echo: again"
    status, raw = await raw_json(http, "GET", f"/v1/agents/sessions/{session.id}")
    assert status == 200 and strict(AgentSession, raw).status == "idle"


LOOKUP = {"type": "function", "name": "lookup", "description": "Look a word up",
          "parameters": {"type": "object", "properties": {"word": {"type": "string"}}}}


async def test_a_function_tool_run_by_the_sdks_handler(beta_client: openai.AsyncOpenAI) -> None:
    calls: list[Any] = []

    async def lookup(arguments: dict[str, Any]) -> dict[str, Any]:
        calls.append(arguments)
        return {"meaning": "a small bird"}

    stream = await beta_client.beta.agents.sessions.create(
        agent={"model": MODEL, "tools": [LOOKUP]}, environment={"type": "none"}, stream=True,
        input='call lookup [args={"word": "wren"}]', tool_handlers={"lookup": lookup})
    events = [event async for event in stream]
    assert calls == [{"word": "wren"}]
    kinds = [event.type for event in events]
    assert kinds[-1] == "agent.session.idle" and "agent.session.requires_action" in kinds
    text = "".join(event.delta for event in events if event.type == "agent.session.turn.output_text.delta")
    assert text == 'Tool result: {"meaning":"a small bird"}'
    completed = [event for event in events if event.type == "agent.session.turn.completed"]
    assert len(completed) == 1 and completed[0].turn.usage is not None


async def test_a_function_call_requires_action_until_its_result(beta_client: openai.AsyncOpenAI,
                                                                 http: aiohttp.ClientSession) -> None:
    session = await beta_client.beta.agents.sessions.create(
        agent={"model": MODEL, "tools": [LOOKUP]}, environment={"type": "none"},
        input='call lookup [args={"word": "kite"}]')
    async with http.get(f"/v1/agents/sessions/{session.id}/events", headers=BETA) as answer:
        raw = b""
        async for chunk in answer.content.iter_any():
            raw += chunk
            if b"event: agent.session.requires_action\n" in raw and raw.endswith(b"\n\n"):
                break
    waiting = next(event for _, event in frames(raw) if event["type"] == "agent.session.requires_action")
    status, body = await raw_json(http, "GET", f"/v1/agents/sessions/{session.id}")
    assert status == 200
    held = strict(AgentSession, body)
    assert held.status == "requires_action" and held.required_actions == strict(AgentSession,
                                                                                waiting["session"]).required_actions
    action = held.required_actions[0]
    assert (action.type, action.name, action.arguments) == ("function_call", "lookup", {"word": "kite"})
    turn = await beta_client.beta.agents.sessions.turns.retrieve(action.turn_id, session_id=session.id)
    assert turn.status == "waiting"

    async with http.post(f"/v1/agents/sessions/{session.id}/events", headers=BETA, json={"events": [
            {"type": "agent.session.input.tool_result", "call_id": "call_unknown", "turn_id": action.turn_id,
             "success": True, "output": "x"}]}) as answer:
        assert answer.status == 400
        assert (await answer.json())["error"]["message"] == "Unknown pending tool call: call_unknown"
    await beta_client.beta.agents.sessions.events.create(session.id, events=[
        {"type": "agent.session.input.tool_result", "call_id": action.call_id, "turn_id": action.turn_id,
         "success": False, "error": "dictionary offline"}])
    async with http.get(f"/v1/agents/sessions/{session.id}/events", params={"until_idle": "true"},
                        headers=BETA) as answer:
        events = [event for _, event in frames(await answer.read())]
    text = "".join(e["delta"] for e in events if e["type"] == "agent.session.turn.output_text.delta")
    assert text == "Tool result: The tool call failed: dictionary offline"
    items = [item async for item in beta_client.beta.agents.sessions.items.list(session.id, order="asc")]
    assert [item.type for item in items] == ["message", "function_call", "function_call_output", "message"]
    assert (items[1].status, items[2].status, items[2].error) == ("failed", "failed", "dictionary offline")
    status, body = await raw_json(http, "GET", f"/v1/agents/sessions/{session.id}")
    assert strict(AgentSession, body).required_actions == [] and body["status"] == "idle"


async def test_session_update_and_lists(beta_client: openai.AsyncOpenAI, http: aiohttp.ClientSession) -> None:
    sessions = beta_client.beta.agents.sessions
    agent = await beta_client.beta.agents.create(model=MODEL, name="lister")
    first = await sessions.create(agent_id=agent.id, environment={"type": "none"}, input="one",
                                  metadata={"run": "lists", "n": "1"})
    second = await sessions.create(agent_id=agent.id, agent={"instructions": "Override."},
                                   environment={"type": "none"}, input="two", metadata={"run": "lists", "n": "2"})
    assert (second.agent.id, second.agent.name, second.agent.instructions) == (agent.id, "lister", "Override.")
    status, raw = await raw_json(http, "POST", f"/v1/agents/sessions/{first.id}", {
        "metadata": {"run": "lists", "n": "3"}, "agent": {"model": "other-model", "reasoning": {"effort": "high"},
                                                          "service_tier": None},
        "prompt_cache_options": {"ttl": "12h"}})
    assert status == 200
    updated = strict(AgentSession, raw)
    assert (updated.metadata, updated.agent.model, updated.agent.reasoning.effort, updated.agent.service_tier,
            updated.prompt_cache_options.ttl) == ({"run": "lists", "n": "3"}, "other-model", "high", "auto", "12h")
    assert (await sessions.retrieve(first.id)).agent.model == "other-model"
    status, raw = await raw_json(http, "GET", f"/v1/agents/sessions?agent_id={agent.id}&metadata[run]=lists")
    assert status == 200 and [s["id"] for s in raw["data"]] == [second.id, first.id]
    for entry in raw["data"]:
        strict(AgentSession, entry)
    assert [s.id async for s in sessions.list(agent_id=agent.id, metadata={"n": "3"})] == [first.id]
    assert [s.id async for s in sessions.list(agent_id=agent.id, order="asc", limit=1)] == [first.id, second.id]
    status, raw = await raw_json(http, "POST", f"/v1/agents/sessions/{first.id}", {"agent": {"name": "x"}})
    assert status == 400 and raw["error"]["param"] == "agent.name"
    status, raw = await raw_json(http, "GET", f"/v1/agents/sessions/{first.id}/turns?after=turn_nope")
    assert status == 400 and raw["error"]["param"] == "after"


async def test_session_refusals(http: aiohttp.ClientSession) -> None:
    for body, param in [({"agent": {"model": MODEL}, "environment": {"type": "none"}}, "input"),
                        ({"environment": {"type": "none"}, "input": "x"}, "agent"),
                        ({"agent_id": "agent_missing", "environment": {"type": "none"}, "input": "x"}, "agent_id"),
                        ({"agent": {"model": MODEL, "tools": [{"type": "computer_use"}]},
                          "environment": {"type": "none"}, "input": "x"}, "agent.tools[0].type")]:
        async with http.post("/v1/agents/sessions", json=body, headers=BETA) as answer:
            raw = await answer.json()
            assert answer.status in (400, 404), raw
            assert raw["error"]["param"] == param


async def test_idempotent_events_and_cancel(beta_client: openai.AsyncOpenAI, http: aiohttp.ClientSession) -> None:
    session = await beta_client.beta.agents.sessions.create(agent={"model": MODEL}, environment={"type": "none"},
                                                            input="slow [chunks=30] [delay=50]")
    message = [{"type": "agent.session.input.message",
                "input": [{"role": "user", "content": [{"type": "input_text", "text": "queued"}]}]}]
    for _ in range(2):  # the same key twice: one turn queued
        await beta_client.beta.agents.sessions.events.create(session.id, events=message, idempotency_key="k-1")
    with pytest.raises(openai.ConflictError):
        await beta_client.beta.agents.sessions.events.create(session.id, events=[
            {"type": "agent.session.input.cancel"}], idempotency_key="k-1")
    await beta_client.beta.agents.sessions.events.create(session.id, events=[{"type": "agent.session.input.cancel"}])
    async with http.get(f"/v1/agents/sessions/{session.id}/events", params={"until_idle": "true"},
                        headers=BETA) as answer:
        events = [event for _, event in frames(await answer.read())]
    ended = [event["turn"]["status"] for event in events if event["type"].startswith("agent.session.turn.")
             and event["type"].rsplit(".", 1)[-1] in ("completed", "failed", "cancelled")]
    assert ended == ["cancelled", "cancelled"]
    turns = await beta_client.beta.agents.sessions.turns.list(session.id)
    assert sorted(turn.status for turn in turns.data) == ["cancelled", "cancelled"]


async def test_queued_turns_are_bounded(beta_client: openai.AsyncOpenAI, http: aiohttp.ClientSession) -> None:
    session = await beta_client.beta.agents.sessions.create(agent={"model": MODEL}, environment={"type": "none"},
                                                            input="slow [chunks=40] [delay=100]")
    message = {"type": "agent.session.input.message",
               "input": [{"role": "user", "content": [{"type": "input_text", "text": "later"}]}]}
    for _ in range(2):
        await beta_client.beta.agents.sessions.events.create(session.id, events=[message] * 16)
    async with http.post(f"/v1/agents/sessions/{session.id}/events", headers=BETA,
                         json={"events": [message, {"type": "agent.session.input.cancel"}]}) as answer:
        assert answer.status == 429  # none of the two was done
        assert (await answer.json())["error"]["code"] == "too_many_queued_turns"
    await beta_client.beta.agents.sessions.events.create(session.id, events=[{"type": "agent.session.input.cancel"}])
    async with http.get(f"/v1/agents/sessions/{session.id}/events", params={"until_idle": "true"},
                        headers=BETA) as answer:
        events = [event for _, event in frames(await answer.read())]
    assert [e["type"] for e in events].count("agent.session.turn.cancelled") == 33


ALPHA, OTHER = "alpha", "beta"


@pytest.fixture(scope="module")
async def tenanted(fake_upstream: str, tmp_path_factory: pytest.TempPathFactory) -> AsyncIterator[Sidecar]:
    """A sidecar whose tenant is the ``x-tenant-id`` header (RESPONSES_BRIDGE_AUTH=header), HTTP door."""
    async with running_sidecar(str(tmp_path_factory.mktemp("agents-tenancy")), fake_upstream, extproc=False,
                               env={"RESPONSES_BRIDGE_AUTH": "header"},
                               ready_headers={"x-tenant-id": ALPHA}) as sidecar:
        yield sidecar


async def test_another_tenants_session_is_a_404(tenanted: Sidecar) -> None:
    clients = {tenant: async_sdk(base_url=f"{tenanted.http_url}/v1", api_key="sk-client", max_retries=0,
                                          timeout=60, default_headers={"x-tenant-id": tenant})
               for tenant in (ALPHA, OTHER)}
    try:
        alpha, other = clients[ALPHA].beta.agents, clients[OTHER].beta.agents
        agent = await alpha.create(model=MODEL)
        session = await alpha.sessions.create(agent_id=agent.id, environment={"type": "none"}, input="mine")
        for call in (other.retrieve(agent.id), other.update(agent.id, name="x"), other.delete(agent.id),
                     other.sessions.retrieve(session.id), other.sessions.update(session.id, metadata={"a": "b"}),
                     other.sessions.delete(session.id), other.sessions.turns.list(session.id),
                     other.sessions.items.list(session.id),
                     other.sessions.events.create(session.id, events=[{"type": "agent.session.input.cancel"}]),
                     other.sessions.create(agent_id=agent.id, environment={"type": "none"}, input="theirs")):
            with pytest.raises(openai.NotFoundError):
                await call
        async with aiohttp.ClientSession() as http:
            async with http.get(f"{tenanted.http_url}/v1/agents/sessions/{session.id}/events",
                                headers={**BETA, "x-tenant-id": OTHER}) as answer:
                assert answer.status == 404
        assert [a.id async for a in other.list()] == [] and [s.id async for s in other.sessions.list()] == []
        assert [s.id async for s in alpha.sessions.list(agent_id=agent.id)] == [session.id]
    finally:
        for client in clients.values():
            await client.close()
