"""Automations that target an existing session (``target.type: "existing_session"``), through both doors: each
invocation delivers the automation's instructions to the session as a message of the user, queued behind a turn
that runs as any input is; ``GET /v1/agents/automations?session_id=`` lists them; a session deleted before an
occurrence fails its invocation with the session's error; another tenant's session cannot be targeted; an agent's
``automations`` tool makes such automations for its own session (``created_by: {"type": "agent"}``). Every 2xx
answer is validated strictly with the SDK's types. What the scheduler and the agent's tool do is behind the door,
and waits out an occurrence: those tests run on the HTTP door alone (``SCHEDULER_ONLY``); the refusals go through
both."""

from __future__ import annotations

import time
from collections.abc import AsyncIterator
from typing import Any

import aiohttp
import openai
import pytest
from openai.types.beta.agents import Automation

from tests.integration.test_agents_api import ALPHA, MODEL, OTHER, raw_json, strict, tenanted
from tests.integration.test_agents_automations import SCHEDULER_ONLY, invocations, until
from tests.support.bridge import Sidecar
from tests.support.sdk import async_sdk

pytestmark = pytest.mark.store_proven(
    "tests/integration/test_agents_automations_replicas.py",
    "tests/integration/test_replicas.py",
    "tests/unit/test_agent_store.py",
    "tests/integration/test_input_references.py",
    reason="every store/postgres line it covers on PostgreSQL is covered by the modules named (scripts/pg-coverage)",
)

__all__ = ["tenanted"]  # the tenancy test's sidecar, a fixture of test_agents_api.py

LOOKUP = {"type": "function", "name": "lookup", "description": "Look a word up",
          "parameters": {"type": "object", "properties": {"word": {"type": "string"}}}}


@pytest.fixture
async def beta_client(base_url: str) -> AsyncIterator[openai.AsyncOpenAI]:
    async with async_sdk(base_url=f"{base_url}/v1", api_key="sk-client", max_retries=0,
                                  timeout=60) as sdk:
        yield sdk


async def delivered(http: aiohttp.ClientSession, automation_id: str) -> dict[str, Any]:
    async def done() -> bool:
        found = await invocations(http, automation_id)
        return bool(found) and found[0]["status"] != "queued"

    await until(done)
    [invocation] = await invocations(http, automation_id)
    return invocation


@SCHEDULER_ONLY
async def test_instructions_are_queued_behind_the_running_turn_and_listed_by_session(
        beta_client: openai.AsyncOpenAI, http: aiohttp.ClientSession) -> None:
    sessions, automations = beta_client.beta.agents.sessions, beta_client.beta.agents.automations
    agent = await beta_client.beta.agents.create(model=MODEL, tools=[LOOKUP])  # type: ignore[list-item]
    session = await sessions.create(agent_id=agent.id, environment={"type": "none"},
                                    input='call lookup [args={"word": "wren"}]')

    async def waiting() -> bool:
        return (await sessions.retrieve(session.id)).status == "requires_action"

    await until(waiting)
    run_at = int(time.time()) + 2
    note = await automations.create(type="once", name="note", run_at=run_at, target={
        "type": "existing_session", "session_id": session.id, "instructions": "check the inbox"})
    status, raw = await raw_json(http, "GET", f"/v1/agents/automations/{note.id}")
    got = strict(Automation, raw)
    assert status == 200 and got.target.type == "existing_session"
    assert (got.target.session_id, got.target.instructions) == (session.id, "check the inbox")
    other = await sessions.create(agent={"model": MODEL}, environment={"type": "none"}, input="hi")
    elsewhere = await automations.create(type="periodic", name="elsewhere", expression="0 9 * * *",
                                         timezone="UTC", target={"type": "existing_session",
                                                                 "session_id": other.id, "instructions": "x"})
    status, page = await raw_json(http, "GET", f"/v1/agents/automations?session_id={session.id}")
    assert status == 200 and [strict(Automation, a).id for a in page["data"]] == [note.id]
    assert [a.id async for a in automations.list(session_id=other.id)] == [elsewhere.id]
    assert note.id in [a.id async for a in automations.list()]

    invocation = await delivered(http, note.id)
    assert invocation["status"] == "completed" and invocation["session_id"] == session.id
    assert invocation["scheduled_at"] == run_at and invocation["error"] is None
    turns = [t async for t in sessions.turns.list(session.id, order="asc")]
    assert [t.status for t in turns] == ["waiting", "queued"]  # the delivered input waits its turn

    retrieved = await sessions.retrieve(session.id)
    [action] = retrieved.required_actions or []
    assert action.type == "function_call"
    await sessions.events.create(session.id, events=[{
        "type": "agent.session.input.tool_result", "call_id": action.call_id, "turn_id": action.turn_id,
        "success": True, "output": "a small bird"}])

    async def idle() -> bool:
        return (await sessions.retrieve(session.id)).status == "idle" and \
            [t.status async for t in sessions.turns.list(session.id)] == ["completed", "completed"]

    await until(idle)
    items = [item async for item in sessions.turns.items.list(turns[1].id, session_id=session.id, order="asc")]
    assert items[0].type == "message" and items[0].content[0].text == "check the inbox"  # type: ignore[union-attr]
    assert items[-1].type == "message" and items[-1].content[0].text == "Echo: check the inbox"  # type: ignore
    for automation in (note, elsewhere):
        await automations.delete(automation.id)


@SCHEDULER_ONLY
async def test_a_deleted_session_fails_the_invocation(beta_client: openai.AsyncOpenAI,
                                                      http: aiohttp.ClientSession) -> None:
    sessions, automations = beta_client.beta.agents.sessions, beta_client.beta.agents.automations
    session = await sessions.create(agent={"model": MODEL}, environment={"type": "none"}, input="hi")
    note = await automations.create(type="once", name="late", run_at=int(time.time()) + 2, target={
        "type": "existing_session", "session_id": session.id, "instructions": "anyone there?"})
    await sessions.delete(session.id)
    invocation = await delivered(http, note.id)
    assert invocation["status"] == "failed" and invocation["session_id"] == session.id
    assert invocation["error"]["code"] and session.id in invocation["error"]["message"]
    # the automation stays, and is still listed under the session it targets
    assert [a.id async for a in automations.list(session_id=session.id)] == [note.id]
    await automations.delete(note.id)


async def test_existing_session_targets_that_are_not_right_are_refused(beta_client: openai.AsyncOpenAI,
                                                                     http: aiohttp.ClientSession) -> None:
    session = await beta_client.beta.agents.sessions.create(agent={"model": MODEL}, environment={"type": "none"},
                                                            input="hi")
    soon = int(time.time()) + 3600
    base = {"type": "existing_session", "session_id": session.id, "instructions": "go"}
    for target, status, param in [
            ({**base, "session_id": "sess_missing"}, 404, "target.session_id"),
            ({**base, "instructions": ""}, 400, "target.instructions"),
            ({"type": "existing_session", "session_id": session.id}, 400, "target.instructions"),
            ({**base, "session_id": None}, 400, "target.session_id"),
            ({**base, "input": []}, 400, "target.input")]:
        got, raw = await raw_json(http, "POST", "/v1/agents/automations",
                                  {"type": "once", "name": "x", "run_at": soon, "target": target})
        assert got == status, (target, raw)
        assert set(raw["error"]) == {"message", "type", "param", "code"} and raw["error"]["param"] == param


async def test_another_tenants_session_cannot_be_targeted(tenanted: Sidecar) -> None:
    clients = {tenant: async_sdk(base_url=f"{tenanted.http_url}/v1", api_key="sk-client", max_retries=0,
                                          timeout=60, default_headers={"x-tenant-id": tenant})
               for tenant in (ALPHA, OTHER)}
    mine = await clients[ALPHA].beta.agents.sessions.create(agent={"model": MODEL}, environment={"type": "none"},
                                                            input="hi")
    with pytest.raises(openai.NotFoundError):
        await clients[OTHER].beta.agents.automations.create(type="once", name="theirs",
                                                            run_at=int(time.time()) + 3600, target={
                                                                "type": "existing_session", "session_id": mine.id,
                                                                "instructions": "hello"})
    assert [a async for a in clients[OTHER].beta.agents.automations.list(session_id=mine.id)] == []
    for client in clients.values():
        await client.close()


@SCHEDULER_ONLY
async def test_an_agents_automations_tool_schedules_its_own_session(beta_client: openai.AsyncOpenAI,
                                                                  http: aiohttp.ClientSession) -> None:
    sessions, automations = beta_client.beta.agents.sessions, beta_client.beta.agents.automations
    run_at = int(time.time()) + 3
    session = await sessions.create(agent={"model": MODEL, "tools": [{"type": "automations"}]},
                                    environment={"type": "none"},
                                    input=f'call create_automation [args={{"name": "plants", "instructions": '
                                          f'"water the plants", "run_at": {run_at}}}]')

    async def idle(turns: int) -> bool:
        return (await sessions.retrieve(session.id)).status == "idle" and \
            [t.status async for t in sessions.turns.list(session.id)] == ["completed"] * turns

    await until(lambda: idle(1))
    [made] = [a async for a in automations.list(session_id=session.id)]
    status, raw = await raw_json(http, "GET", f"/v1/agents/automations/{made.id}")
    got = strict(Automation, raw)
    assert status == 200 and got.created_by.type == "agent" and got.created_by.session_id == session.id
    assert got.created_by.tool_call_id and (got.type, got.name, got.run_at) == ("once", "plants", run_at)
    assert got.target.type == "existing_session" and got.target.instructions == "water the plants"
    items = [item async for item in sessions.items.list(session.id, order="asc")]
    assert [item.type for item in items] == ["message", "message"]  # the bridge's own call is no client's item
    assert items[1].content[0].text.startswith(f'Tool result: {{"automation_id":"{made.id}"')  # type: ignore

    invocation = await delivered(http, made.id)
    assert invocation["status"] == "completed" and invocation["session_id"] == session.id
    await until(lambda: idle(2))
    items = [item async for item in sessions.items.list(session.id, order="asc")]
    assert [item.content[0].text for item in items[2:]] == ["water the plants", "Echo: water the plants"]  # type: ignore

    await sessions.events.create(session.id, events=[{"type": "agent.session.input.message", "input": [
        {"role": "user", "content": [{"type": "input_text", "text":
                                      'call create_automation [args={"name": "x", "instructions": "y", '
                                      '"run_at": 1000}]'}]}]}])
    await until(lambda: idle(3))
    items = [item async for item in sessions.items.list(session.id, order="desc", limit=1)]
    assert items[0].content[0].text.startswith("Tool result: The automation was not created: ")  # type: ignore
    assert len([a async for a in automations.list(session_id=session.id)]) == 1
    await automations.delete(made.id)


@SCHEDULER_ONLY
async def test_a_sessions_agent_keeps_a_bounded_number_of_automations(beta_client: openai.AsyncOpenAI) -> None:
    """A model that calls its ``automations`` tool in a loop fills its session's bound, not the tenant's: past
    MAX_AGENT_AUTOMATIONS_PER_SESSION the call is refused (as its output), and a deleted one makes room."""
    from responses_bridge.services.agents.automations.automations import MAX_AGENT_AUTOMATIONS_PER_SESSION

    sessions, automations = beta_client.beta.agents.sessions, beta_client.beta.agents.automations
    ask = 'call create_automation [args={"name": "n", "instructions": "i", "run_at": 4102444800}]'
    session = await sessions.create(agent={"model": MODEL, "tools": [{"type": "automations"}]},
                                    environment={"type": "none"}, input=ask)

    async def last_output(turns: int) -> str:
        async def idle() -> bool:
            return (await sessions.retrieve(session.id)).status == "idle" and \
                [t.status async for t in sessions.turns.list(session.id)] == ["completed"] * turns
        await until(idle)
        item = (await sessions.items.list(session.id, order="desc", limit=1)).data[0]
        return str(item.content[0].text)  # type: ignore[union-attr]

    turns = 1
    assert (await last_output(turns)).startswith('Tool result: {"automation_id"')
    for _ in range(MAX_AGENT_AUTOMATIONS_PER_SESSION):
        turns += 1
        await sessions.events.create(session.id, events=[{"type": "agent.session.input.message", "input": [
            {"role": "user", "content": [{"type": "input_text", "text": ask}]}]}])
        said = await last_output(turns)
    refused = "Tool result: The automation was not created: this session's agent keeps"
    assert said.startswith(f"{refused} {MAX_AGENT_AUTOMATIONS_PER_SESSION} automations already")
    made = [a async for a in automations.list(session_id=session.id)]
    assert len(made) == MAX_AGENT_AUTOMATIONS_PER_SESSION
    await automations.delete(made[0].id)
    await sessions.events.create(session.id, events=[{"type": "agent.session.input.message", "input": [
        {"role": "user", "content": [{"type": "input_text", "text": ask}]}]}])
    assert (await last_output(turns + 1)).startswith('Tool result: {"automation_id"')
    for automation in [a async for a in automations.list(session_id=session.id)]:
        await automations.delete(automation.id)
