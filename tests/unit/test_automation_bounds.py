"""Automations bounded, on SQLite and PostgreSQL: a tick deals the due occurrences across tenants in turn (a greedy
tenant's backlog never delays another's one-time automation past its tick), a tenant's automations fire at most its
rate (a schedule that alone fires more often is a 400; an occurrence past it a ``failed`` invocation saying why),
and an invocation refers to its automation's version instead of copying it, kept within a count and an age — the
database grows by a few hundred bytes per invocation, then not at all. The real store and AutomationService; the
sessions an invocation would start are a recorder (the scheduler's subject is not the session). Ticks are driven
with explicit times (``fire_due(now)``), so nothing here waits on the clock."""

from __future__ import annotations

import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import orjson
import pytest
from openai.types.beta.agents.automations import AutomationInvocation

from responses_bridge.protocol.errors import APIError
from responses_bridge.services.agents.agents import AgentService
from responses_bridge.services.agents.automations.automations import AutomationService
from responses_bridge.services.agents.automations.bounds import AutomationBounds, version_of
from responses_bridge.store.base_agents import AgentStore
from tests.support.sdk_strict import strict_object
from tests.unit.store_kinds import KINDS
from tests.unit.test_agent_store import agent_store

EVERY_SECOND = "* * * * * *"
INSTRUCTIONS = "Report on the night's builds. " * 7000  # ~200 KiB


class Sessions:
    """Records what the scheduler would start or deliver (services/agents/automations: SessionStarter)."""

    agent_automations: Any = None

    def __init__(self) -> None:
        self.started: list[tuple[str, dict[str, Any]]] = []

    async def create(self, body: dict[str, Any], *, tenant: str, authorization: str | None) -> dict[str, Any]:
        self.started.append((tenant, body))
        return {"id": f"sess_{len(self.started)}"}

    async def get(self, session_id: str, *, tenant: str) -> dict[str, Any]:
        return {"id": session_id}

    async def post_events(self, session_id: str, body: dict[str, Any], *, idempotency_key: str | None,
                          tenant: str, authorization: str | None) -> None:
        self.started.append((tenant, body))


def target(text: str = "good morning") -> dict[str, Any]:
    return {"type": "new_session", "agent": {"model": "gpt-test"}, "environment": {"type": "none"},
            "input": [{"type": "message", "role": "user", "content": [{"type": "input_text", "text": text}]}]}


@pytest.fixture(params=KINDS)
async def store(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[AgentStore]:
    async with agent_store(request.param, request, tmp_path) as opened:
        yield opened


def service(store: AgentStore, **bounds: Any) -> AutomationService:
    return AutomationService(store, AgentService(store), Sessions(), AutomationBounds(**bounds))


async def all_invocations(automations: AutomationService, automation_id: str, tenant: str) -> list[dict[str, Any]]:
    page = await automations.list_invocations(automation_id, after=None, limit=100, order="asc", tenant=tenant)
    for found in page["data"]:
        strict_object(AutomationInvocation, found)
    return list(page["data"])


async def test_a_greedy_tenants_backlog_never_delays_anothers_occurrence_past_its_tick(store: AgentStore) -> None:
    automations = service(store, tick_occurrences=4, tenant_per_minute=10_000)
    greedy = [await automations.create({"type": "periodic", "name": f"g{n}", "expression": EVERY_SECOND,
                                        "timezone": "UTC", "target": target()}, tenant="greedy")
              for n in range(12)]
    # the clock read once every greedy automation is made, so each is due from the first tick on (made over more
    # than a second, on a loaded machine, the last ones' first occurrences came after it)
    now = int(time.time())
    once = await automations.create({"type": "once", "name": "mine", "run_at": now + 4, "target": target()},
                                    tenant="other")
    for tick in range(now + 1, now + 5):  # the greedy tenant has 12 due a tick, 4 fire: its backlog only grows
        await automations.fire_due(tick)
    fired = await all_invocations(automations, once["id"], "other")
    assert [(found["scheduled_at"], found["status"]) for found in fired] == [(now + 4, "completed")]
    greedy_fired = [await all_invocations(automations, made["id"], "greedy") for made in greedy]
    assert sum(len(found) for found in greedy_fired) == 3 * 4 + 3  # the tick the other fired in, greedy had 3


GREEDY_AT_SCALE = 10_000
_CLONE_SQLITE = ("INSERT INTO agent_records (kind, id, tenant, parent, scope, body, bytes) "
                 "SELECT kind, id || '_' || n, tenant, parent, scope, json_set(body, '$.id', id || '_' || n), bytes "
                 "FROM agent_records, (WITH RECURSIVE c(n) AS (SELECT 1 UNION ALL SELECT n + 1 FROM c WHERE n < ?2) "
                 "SELECT n FROM c) WHERE kind = 'automation' AND id = ?1")
_CLONE_POSTGRES = ("INSERT INTO agent_records (kind, id, tenant, parent, scope, body, bytes) "
                   "SELECT kind, id || '_' || n, tenant, parent, scope, "
                   "jsonb_set(body, '{id}', to_jsonb(id || '_' || n)), bytes FROM agent_records, "
                   "generate_series(1, $2::int) AS n WHERE kind = 'automation' AND id = $1")


async def clone_automation(store: AgentStore, automation_id: str, copies: int) -> None:
    """``copies`` more of an automation made through the service, written at once (10,000 creates through the
    service would be the test's whole time; the scheduler reads them as any)."""
    db: Any = store._db  # type: ignore[attr-defined]
    if hasattr(db, "writing"):
        async with db.writing() as conn:
            await conn.execute(_CLONE_SQLITE, (automation_id, copies))
    else:
        async with db.acquire("write") as conn:
            await conn.execute(_CLONE_POSTGRES, automation_id, copies)


async def test_another_tenants_occurrence_fires_in_its_tick_beside_10_000_every_second_automations(
        store: AgentStore) -> None:
    """The due automations are found through an index: each tick reads the keys of what is due and the bodies of
    what it fires, where it read and parsed every automation's body (0.4 s a tick at 10,000 small ones, seconds with
    large instructions: a tick outran its second and delayed every tenant's)."""
    automations = service(store, tenant_per_minute=600)
    now = int(time.time())
    greedy = await automations.create({"type": "periodic", "name": "g", "expression": EVERY_SECOND,
                                       "timezone": "UTC", "target": target()}, tenant="greedy")
    await clone_automation(store, greedy["id"], GREEDY_AT_SCALE - 1)
    once = await automations.create({"type": "once", "name": "mine", "run_at": now + 3, "target": target()},
                                    tenant="other")
    due = await store.due_automations(now + 3, 100)
    assert len(due) == 100 and due[0][0] != due[1][0]  # dealt in turn: the other tenant's among the first two
    assert ("other", once["id"]) in [(tenant, found["id"]) for tenant, found in due[:2]]
    for tick in range(now + 1, now + 4):
        await automations.fire_due(tick)
    fired = await all_invocations(automations, once["id"], "other")
    assert [(found["scheduled_at"], found["status"]) for found in fired] == [(now + 3, "completed")]
    if hasattr(store._db, "reading"):  # type: ignore[attr-defined]  # SQLite: the plan reads the index
        from responses_bridge.store.sqlite.agents.automations import _DUE
        async with store._db.reading() as conn:  # type: ignore[attr-defined]
            plan = " ".join(str(row[-1]) for row in await conn.execute_fetchall(f"EXPLAIN QUERY PLAN {_DUE}",
                                                                                  (now + 3, 100)))
        assert "agent_records_due" in plan


async def test_a_tenants_rate_refuses_a_schedule_and_fails_the_occurrences_past_it(store: AgentStore) -> None:
    automations = service(store, tenant_per_minute=5)
    with pytest.raises(APIError) as refused:
        await automations.create({"type": "periodic", "name": "often", "expression": EVERY_SECOND,
                                  "timezone": "UTC", "target": target()}, tenant="busy")
    assert (refused.value.status, refused.value.param, refused.value.code) == (
        400, "expression", "automation_rate_exceeded")
    # hourly, half an hour from now: never due at ``now + 2`` below (at minute 0, a run two seconds before the hour
    # fired it there, the tenant's sixth occurrence of the minute, and one of the eight below was refused for it)
    half_past = (int(time.time()) // 60 + 30) % 60
    hourly = await automations.create({"type": "periodic", "name": "hourly", "expression": f"{half_past} * * * *",
                                       "timezone": "UTC", "target": target()}, tenant="busy")
    with pytest.raises(APIError):  # nor may an update make it so
        await automations.update(hourly["id"], {"expression": "*/5 * * * * *"}, tenant="busy")
    now = int(time.time())
    made = [await automations.create({"type": "once", "name": f"o{n}", "run_at": now + 2, "target": target()},
                                     tenant="busy") for n in range(8)]
    theirs = await automations.create({"type": "once", "name": "t", "run_at": now + 2, "target": target()},
                                      tenant="calm")
    assert await automations.fire_due(now + 2) == 5 + 1
    outcomes = [(await all_invocations(automations, one["id"], "busy"))[0] for one in made]
    assert sorted(found["status"] for found in outcomes) == ["completed"] * 5 + ["failed"] * 3
    failed = [found for found in outcomes if found["status"] == "failed"]
    assert all(found["error"]["code"] == "rate_limit_exceeded" and found["session_id"] is None
               for found in failed)
    assert (await all_invocations(automations, theirs["id"], "calm"))[0]["status"] == "completed"


async def test_invocations_refer_to_a_version_and_are_kept_within_count_and_age(store: AgentStore) -> None:
    automations = service(store, invocations_kept=10, tenant_per_minute=10_000, invocation_days=1)
    made = await automations.create({"type": "periodic", "name": "big", "expression": EVERY_SECOND,
                                     "timezone": "UTC", "target": target(INSTRUCTIONS)}, tenant="t")
    now = int(time.time())
    for tick in range(now + 1, now + 31):
        await automations.fire_due(tick)
    kept = await all_invocations(automations, made["id"], "t")
    assert len(kept) == 10 and [found["scheduled_at"] for found in kept] == list(range(now + 21, now + 31))
    # the wire is the SDK's: each shows the automation it fired, 200 KiB instructions and all
    assert all(found["source"]["automation"]["target"]["input"][0]["content"][0]["text"] == INSTRUCTIONS
               for found in kept)
    one = await automations.get_invocation(made["id"], kept[0]["id"], tenant="t")
    assert one == kept[0]
    # stored, each is a few hundred bytes and the snapshot is kept once
    stored = (await store.page("invocation", tenant="t", parent=made["id"], limit=100)).data
    assert len(stored) == 10 and max(len(orjson.dumps(found)) for found in stored) < 2048
    digest, _ = version_of(await store.get("automation", made["id"], tenant="t") or {})
    assert {found["_source_version"] for found in stored} == {digest}
    # past their age they go, and the version with them (the sweep runs once a minute)
    await automations.pause(made["id"], tenant="t")
    await automations.fire_due(now + 2 * 86400)
    assert (await store.page("invocation", tenant="t", parent=made["id"], limit=100)).data == []
    assert await store.automation_versions(made["id"], [digest], tenant="t") == {}


async def test_the_database_stops_growing_at_the_retention_bound(tmp_path: Path, request: pytest.FixtureRequest
                                                                  ) -> None:
    """On SQLite, the file's size: 10 more firings of a 200 KiB automation grow it by at most a few KiB each, and
    once the count is reached, the space of the forgotten is reused."""
    async with agent_store("sqlite", request, tmp_path) as store:
        automations = service(store, invocations_kept=10, tenant_per_minute=10_000)
        await automations.create({"type": "periodic", "name": "big", "expression": EVERY_SECOND,
                                  "timezone": "UTC", "target": target(INSTRUCTIONS)}, tenant="t")
        now = int(time.time())
        sizes = []
        for tick in range(now + 1, now + 41):
            await automations.fire_due(tick)
            if (tick - now) % 10 == 0:
                sizes.append(database_bytes(tmp_path / "agents.db"))
        assert sizes[1] - sizes[0] <= 10 * 4096, sizes  # a copy of the automation each was 200 KiB each
        assert sizes[3] - sizes[1] <= 4 * 4096, sizes  # past the bound: the forgotten's space is reused


def database_bytes(path: Path) -> int:
    import sqlite3

    with sqlite3.connect(path) as conn:
        conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    return path.stat().st_size


async def test_an_occurrence_read_before_a_pause_answered_never_fires(store: AgentStore,
                                                                     monkeypatch: pytest.MonkeyPatch) -> None:
    """A tick reads the due occurrences, then claims each: a pause answered between the two stops the claim, so
    once ``pause`` has answered no invocation appears (a replica's tick under load once listed one 0.3 s after the
    pause). A firing claimed is listed from the claim on, before its session is started."""
    automations = service(store, tenant_per_minute=10_000)
    made = await automations.create({"type": "periodic", "name": "paused", "expression": EVERY_SECOND,
                                     "timezone": "UTC", "target": target()}, tenant="t")
    read = store.due_automations

    async def due_then_paused(now: float, limit: int = 100) -> list[tuple[str, dict[str, Any]]]:
        due = await read(now, limit)
        assert [automation["id"] for _, automation in due] == [made["id"]]
        await automations.pause(made["id"], tenant="t")
        return due

    monkeypatch.setattr(store, "due_automations", due_then_paused)
    now = int(time.time())
    assert await automations.fire_due(now + 2) == 0
    assert await all_invocations(automations, made["id"], "t") == []
    monkeypatch.setattr(store, "due_automations", read)

    listed_when_started: list[list[str]] = []
    sessions = automations.sessions
    start = sessions.create

    async def create(body: dict[str, Any], *, tenant: str, authorization: str | None) -> dict[str, Any]:
        listed_when_started.append([found["status"] for found in await all_invocations(automations, made["id"],
                                                                                         tenant)])
        return await start(body, tenant=tenant, authorization=authorization)

    monkeypatch.setattr(sessions, "create", create)
    await automations.resume(made["id"], tenant="t")
    assert await automations.fire_due(now + 5) == 1
    assert listed_when_started == [["queued"]]
    assert [found["status"] for found in await all_invocations(automations, made["id"], "t")] == ["completed"]
