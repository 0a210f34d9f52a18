"""Automations of the Agents API (``client.beta.agents.automations``) through both doors: create, retrieve, update,
list, delete, pause and resume; a one-time automation fires once; a periodic one fires on schedule across a restart
of its sidecar; two worker processes on SQLite make exactly one invocation per occurrence (replicas on PostgreSQL:
test_agents_automations_replicas.py). Every 2xx answer is validated strictly with the SDK's types; invocations are
counted, never timed beyond generous deadlines.

Both doors serve the automation routes (the CRUD and bad-input tests go through each); what fires is the scheduler
of the process behind the HTTP door, whichever door the automation was made by, so the firing tests (each waits
out seconds of ticks) make theirs through the HTTP door alone (``SCHEDULER_ONLY``)."""

from __future__ import annotations

import asyncio
import os
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import aiohttp
import openai
import pytest
from openai.types.beta.agents import Automation, AutomationDeleted
from openai.types.beta.agents.automations import AutomationInvocation
from pydantic import TypeAdapter

from tests.integration.test_agents_api import ALPHA, BETA, MODEL, OTHER, raw_json, strict, tenanted
from tests.support.bridge import Sidecar, running_sidecar
from tests.support.sdk import async_sdk

# Envoy hands these requests to the HTTP door unread (the Agents API: envoy_config/routes.py
# ``_agents_routes``, the processor off): on PostgreSQL its HTTP-door tests run the same store code
pytestmark = pytest.mark.store_via_http_door

__all__ = ["tenanted"]  # the tenancy test's sidecar, a fixture of test_agents_api.py

_AUTOMATION: TypeAdapter[Any] = TypeAdapter(Automation)
INPUT = [{"type": "message", "role": "user", "content": [{"type": "input_text", "text": "good morning"}]}]
TARGET = {"type": "new_session", "agent": {"model": MODEL, "instructions": "Answer plainly."},
          "environment": {"type": "none"}, "input": INPUT, "metadata": {"from": "automation"}}
EVERY_SECOND = "* * * * * *"  # six fields: a leading seconds field
SCHEDULER_ONLY = pytest.mark.parametrize("door", ["http"])  # the door is not the point: the scheduler is


@pytest.fixture
async def beta_client(base_url: str) -> AsyncIterator[openai.AsyncOpenAI]:
    async with async_sdk(base_url=f"{base_url}/v1", api_key="sk-client", max_retries=0,
                                  timeout=60) as sdk:
        yield sdk


async def invocations(http: aiohttp.ClientSession, automation_id: str) -> list[dict[str, Any]]:
    """Every invocation of the automation (oldest first), each checked against the SDK's type."""
    found: list[dict[str, Any]] = []
    after = None
    while True:
        query = {"order": "asc", "limit": "100", **({"after": after} if after else {})}
        async with http.get(f"/v1/agents/automations/{automation_id}/invocations", params=query,
                            headers=BETA) as answer:
            assert answer.status == 200, await answer.text()
            page = await answer.json()
        for invocation in page["data"]:
            strict(AutomationInvocation, invocation)
        found += page["data"]
        if not page["has_more"]:
            return found
        after = page["data"][-1]["id"]


async def until(check: Callable[[], Awaitable[bool]], seconds: float = 60) -> None:
    deadline = time.monotonic() + seconds
    while not await check():
        assert time.monotonic() < deadline, "not within the deadline"
        await asyncio.sleep(0.25)


async def test_automation_crud_pause_resume(beta_client: openai.AsyncOpenAI, http: aiohttp.ClientSession) -> None:
    automations = beta_client.beta.agents.automations
    agent = await beta_client.beta.agents.create(model=MODEL, name="reporter")
    periodic = await automations.create(type="periodic", name="daily", expression="0 9 * * 1-5",
                                        timezone="Europe/Paris", metadata={"team": "a"},
                                        target={"type": "new_session", "agent_id": agent.id,
                                                "environment": {"type": "none"}, "input": INPUT})
    status, raw = await raw_json(http, "GET", f"/v1/agents/automations/{periodic.id}")
    assert status == 200
    got = strict(_AUTOMATION, raw)
    assert (got.type, got.status, got.expression, got.timezone, got.metadata) == (
        "periodic", "active", "0 9 * * 1-5", "Europe/Paris", {"team": "a"})
    assert got.created_by.type == "developer" and got.pause_reason is None
    assert got.target.type == "new_session" and got.target.agent_id == agent.id and got.target.agent is None
    assert got.target.input[0].content[0].text == "good morning" and got.target.vault_ids == []

    run_at = int(time.time()) + 3600
    once = await automations.create(type="once", name="later", run_at=run_at, target=TARGET)
    assert once.type == "once" and once.run_at == run_at and once.target.agent.model == MODEL

    status, raw = await raw_json(http, "POST", f"/v1/agents/automations/{periodic.id}",
                                 {"name": "weekly", "expression": "30 8 * * 0", "metadata": {"team": "b"}})
    assert status == 200
    updated = strict(_AUTOMATION, raw)
    assert (updated.name, updated.expression, updated.metadata) == ("weekly", "30 8 * * 0", {"team": "b"})
    moved = await automations.update(once.id, run_at=run_at + 60)
    assert moved.run_at == run_at + 60

    status, raw = await raw_json(http, "POST", f"/v1/agents/automations/{periodic.id}/pause")
    assert status == 200 and strict(_AUTOMATION, raw).status == "paused"
    resumed = await automations.resume(periodic.id)
    assert resumed.status == "active"

    status, raw = await raw_json(http, "GET", "/v1/agents/automations?limit=1")
    assert status == 200 and raw["has_more"] is True and [a["id"] for a in raw["data"]] == [once.id]
    strict(_AUTOMATION, raw["data"][0])
    listed = [a.id async for a in automations.list(order="asc")]
    assert listed[-2:] == [periodic.id, once.id]
    assert [a async for a in automations.list(session_id="sess_none")] == []
    assert [i async for i in automations.invocations.list(once.id)] == []

    for automation_id in (periodic.id, once.id):
        status, raw = await raw_json(http, "DELETE", f"/v1/agents/automations/{automation_id}")
        assert status == 200 and strict(AutomationDeleted, raw).deleted is True
    with pytest.raises(openai.NotFoundError):
        await automations.retrieve(periodic.id)


async def test_automation_bad_input(http: aiohttp.ClientSession) -> None:
    soon = int(time.time()) + 3600
    for body, param in [
            ({"type": "daily", "name": "x", "target": TARGET}, "type"),
            ({"type": "periodic", "name": "x", "expression": "61 * * * *", "timezone": "UTC", "target": TARGET},
             "expression"),
            ({"type": "periodic", "name": "x", "expression": "* * *", "timezone": "UTC", "target": TARGET},
             "expression"),
            ({"type": "periodic", "name": "x", "expression": "* * * * *", "timezone": "Mars/Base", "target": TARGET},
             "timezone"),
            ({"type": "once", "name": "x", "run_at": 1000, "target": TARGET}, "run_at"),
            ({"type": "once", "name": "", "run_at": soon, "target": TARGET}, "name"),
            ({"type": "once", "name": "x", "run_at": soon, "target": TARGET, "expression": "* * * * *"},
             "expression"),
            ({"type": "once", "name": "x", "run_at": soon,
              "target": {**TARGET, "environment": {"type": "self_hosted"}}}, "target.environment.type"),
            ({"type": "once", "name": "x", "run_at": soon,
              "target": {**TARGET, "environment": {"type": "openai_hosted"}}}, "target.environment.type"),
            ({"type": "once", "name": "x", "run_at": soon, "target": {**TARGET, "agent_id": "agent_1"}},
             "target.agent_id"),
            ({"type": "once", "name": "x", "run_at": soon, "target": {**TARGET, "vault_ids": ["vlt_1"]}},
             "target.vault_ids")]:
        status, raw = await raw_json(http, "POST", "/v1/agents/automations", body)
        assert status == 400, (body, raw)
        assert set(raw["error"]) == {"message", "type", "param", "code"} and raw["error"]["param"] == param
    status, raw = await raw_json(http, "POST", "/v1/agents/automations",
                                 {"type": "once", "name": "x", "run_at": soon,
                                  "target": {**TARGET, "agent": None, "agent_id": "agent_missing"}})
    assert status == 404
    status, raw = await raw_json(http, "GET", "/v1/agents/automations/auto_missing/invocations")
    assert status == 404 and raw["error"]["param"] == "automation_id"


@SCHEDULER_ONLY
async def test_a_one_time_automation_fires_once(beta_client: openai.AsyncOpenAI,
                                                http: aiohttp.ClientSession) -> None:
    automations = beta_client.beta.agents.automations
    run_at = int(time.time()) + 2
    once = await automations.create(type="once", name="soon", run_at=run_at, target=TARGET)

    async def fired() -> bool:
        return len(await invocations(http, once.id)) >= 1 and (await invocations(http, once.id))[0]["status"] != \
            "queued"

    await until(fired)
    await asyncio.sleep(3)  # several ticks more: no second invocation
    [invocation] = await invocations(http, once.id)
    assert invocation["status"] == "completed" and invocation["scheduled_at"] == run_at
    assert invocation["source"]["type"] == "automation" and invocation["source"]["automation"]["id"] == once.id
    again = await automations.invocations.retrieve(invocation["id"], automation_id=once.id)
    assert again.id == invocation["id"] and again.session_id == invocation["session_id"]
    assert (await automations.retrieve(once.id)).status == "completed"

    session_id = invocation["session_id"]

    async def answered() -> bool:
        session = await beta_client.beta.agents.sessions.retrieve(session_id)
        return session.status == "idle" and len([t async for t in beta_client.beta.agents.sessions.turns.list(
            session_id)]) == 1

    await until(answered)
    session = await beta_client.beta.agents.sessions.retrieve(session_id)
    assert session.metadata == {"from": "automation"} and session.agent.model == MODEL
    [turn] = [t async for t in beta_client.beta.agents.sessions.turns.list(session_id)]
    assert turn.status == "completed"
    with pytest.raises(openai.BadRequestError):
        await automations.pause(once.id)
    await automations.delete(once.id)


@SCHEDULER_ONLY
async def test_a_paused_automation_does_not_fire_and_a_failed_delivery_says_why(
        beta_client: openai.AsyncOpenAI, http: aiohttp.ClientSession) -> None:
    automations = beta_client.beta.agents.automations
    periodic = await automations.create(type="periodic", name="paused", expression=EVERY_SECOND, timezone="UTC",
                                        target=TARGET)
    await automations.pause(periodic.id)
    first = await invocations(http, periodic.id)  # one may have fired before the pause
    await asyncio.sleep(3)
    assert len(await invocations(http, periodic.id)) == len(first)
    await automations.resume(periodic.id)

    async def fired() -> bool:
        return len(await invocations(http, periodic.id)) > len(first)

    await until(fired)
    await automations.delete(periodic.id)

    agent = await beta_client.beta.agents.create(model=MODEL)
    once = await automations.create(type="once", name="orphan", run_at=int(time.time()) + 2,
                                    target={**TARGET, "agent": None, "agent_id": agent.id})
    await beta_client.beta.agents.delete(agent.id)

    async def delivered() -> bool:
        found = await invocations(http, once.id)
        return bool(found) and found[0]["status"] != "queued"

    await until(delivered)
    [invocation] = await invocations(http, once.id)
    assert invocation["status"] == "failed" and invocation["session_id"] is None
    assert agent.id in invocation["error"]["message"] and invocation["error"]["code"]
    await automations.delete(once.id)


async def test_another_tenants_automation_is_a_404(tenanted: Sidecar) -> None:
    clients = {tenant: async_sdk(base_url=f"{tenanted.http_url}/v1", api_key="sk-client", max_retries=0,
                                          timeout=60, default_headers={"x-tenant-id": tenant})
               for tenant in (ALPHA, OTHER)}
    mine = await clients[ALPHA].beta.agents.automations.create(type="once", name="mine",
                                                               run_at=int(time.time()) + 3600, target=TARGET)
    other = clients[OTHER].beta.agents.automations
    for call in (other.retrieve(mine.id), other.pause(mine.id), other.delete(mine.id),
                 other.update(mine.id, name="theirs"), other.invocations.list(mine.id)):
        with pytest.raises(openai.NotFoundError):
            await call
    assert mine.id not in [a.id async for a in other.list()]
    await clients[ALPHA].beta.agents.automations.delete(mine.id)
    for client in clients.values():
        await client.close()


async def test_a_periodic_automation_fires_through_a_restart(fake_upstream: str,
                                                             tmp_path_factory: pytest.TempPathFactory) -> None:
    directory = str(tmp_path_factory.mktemp("automations-restart"))
    db = ["--db", os.path.join(directory, "bridge.db")]
    timeout = aiohttp.ClientTimeout(total=60)
    async with running_sidecar(directory, fake_upstream, *db, extproc=False) as first, \
            aiohttp.ClientSession(first.http_url, timeout=timeout) as http:
        status, raw = await raw_json(http, "POST", "/v1/agents/automations", {
            "type": "periodic", "name": "tick", "expression": "*/2 * * * * *", "timezone": "UTC",
            "target": TARGET})
        assert status == 200, raw
        automation_id = raw["id"]

        async def two() -> bool:
            return len(await invocations(http, automation_id)) >= 2

        await until(two)
    stopped = len(await _invocations_at(directory, fake_upstream, db, automation_id, wait_for=0))
    seen = await _invocations_at(directory, fake_upstream, db, automation_id, wait_for=stopped + 2)
    occurrences = [invocation["scheduled_at"] for invocation in seen]
    assert len(occurrences) == len(set(occurrences)) >= stopped + 2
    assert all(at % 2 == 0 for at in occurrences) and occurrences == sorted(occurrences)
    assert all(invocation["status"] in ("queued", "completed") for invocation in seen)
    assert sum(invocation["status"] == "completed" for invocation in seen) >= stopped + 1


async def _invocations_at(directory: str, fake_upstream: str, db: list[str], automation_id: str, *,
                          wait_for: int) -> list[dict[str, Any]]:
    """A new sidecar on the same database, until the automation has ``wait_for`` invocations: its list then."""
    async with running_sidecar(directory, fake_upstream, *db, extproc=False) as sidecar, \
            aiohttp.ClientSession(sidecar.http_url, timeout=aiohttp.ClientTimeout(total=60)) as http:
        async def enough() -> bool:
            return len(await invocations(http, automation_id)) >= wait_for

        await until(enough)
        if wait_for == 0:  # the count the restart found, before it fires more
            return await invocations(http, automation_id)
        await raw_json(http, "POST", f"/v1/agents/automations/{automation_id}/pause")

        async def handed_off_finished() -> bool:
            # the invocations the earlier sidecars' drains handed off are resumed here: their turns finish (on a
            # loaded machine, after the count is reached; the newest may still run when this sidecar stops)
            found = await invocations(http, automation_id)
            return sum(invocation["status"] == "completed" for invocation in found) >= wait_for - 1

        await until(handed_off_finished)
        return await invocations(http, automation_id)


@pytest.fixture(scope="module")
async def workers(fake_upstream: str, tmp_path_factory: pytest.TempPathFactory) -> AsyncIterator[Sidecar]:
    async with running_sidecar(str(tmp_path_factory.mktemp("automations-workers")), fake_upstream, "--workers",
                               "2", extproc=False) as sidecar:
        yield sidecar


async def test_two_workers_make_one_invocation_per_occurrence(workers: Sidecar) -> None:
    async with aiohttp.ClientSession(workers.http_url, timeout=aiohttp.ClientTimeout(total=60)) as http:
        await one_invocation_per_occurrence(http)


async def one_invocation_per_occurrence(http: aiohttp.ClientSession, *, keep: bool = False) -> str:
    """A periodic automation every second, until it made 6 invocations: each occurrence once, each with its own
    session (the sessions its target's metadata names are as many). Deleted after, unless ``keep``: its id."""
    marker = os.urandom(6).hex()
    status, raw = await raw_json(http, "POST", "/v1/agents/automations", {
        "type": "periodic", "name": "every second", "expression": EVERY_SECOND, "timezone": "UTC",
        "target": {**TARGET, "metadata": {"run": marker}}})
    assert status == 200, raw
    automation_id = raw["id"]

    async def six() -> bool:
        return len(await invocations(http, automation_id)) >= 6

    await until(six)
    status, _ = await raw_json(http, "POST", f"/v1/agents/automations/{automation_id}/pause")
    assert status == 200
    await asyncio.sleep(2)  # a firing under way when the pause came is stored by now
    seen = await invocations(http, automation_id)
    occurrences = [invocation["scheduled_at"] for invocation in seen]
    assert len(occurrences) == len(set(occurrences)), occurrences

    async def sessions_stored() -> bool:
        return all(invocation["status"] != "queued" for invocation in await invocations(http, automation_id))

    await until(sessions_stored)
    seen = await invocations(http, automation_id)
    async with http.get("/v1/agents/sessions", params={"metadata[run]": marker, "limit": "100"},
                        headers=BETA) as answer:
        sessions = (await answer.json())["data"]
    assert sorted(s["id"] for s in sessions) == sorted(i["session_id"] for i in seen)
    if not keep:
        await raw_json(http, "DELETE", f"/v1/agents/automations/{automation_id}")
    return automation_id
