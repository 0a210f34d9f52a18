"""Retention: each tenant's expired responses and idle conversations go, in batches, with everything they own;
running background responses, other tenants' objects and recent ones stay."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Mapping
from pathlib import Path

import pytest

from responses_bridge.config.settings import Settings
from responses_bridge.config.tenants import TenantPolicy
from responses_bridge.services.responses.retention import DAY, RetentionService
from responses_bridge.store import SQLiteResponseStore
from responses_bridge.store.base import DEFAULT_TENANT
from responses_bridge.store.records import ResponseFilter
from responses_bridge.store.sqlite.conversations import SQLiteConversationStore
from responses_bridge.store.sqlite.events import SQLiteEventLog

NOW = int(time.time())  # conversations' last activity is stamped with the real clock
SHORT, MONTH = "short-lived", "a-month"


def message(item_id: str) -> dict:
    return {"id": item_id, "type": "message", "role": "user", "content": [{"type": "input_text", "text": "hi"}]}


def response(response_id: str, created_at: int, status: str = "completed") -> dict:
    return {"id": response_id, "object": "response", "created_at": created_at, "status": status, "model": "m",
            "metadata": {"tag": "t"}, "background": status != "completed", "output": []}


@pytest.fixture
async def db(tmp_path: Path) -> AsyncIterator[SQLiteResponseStore]:
    async with SQLiteResponseStore(str(tmp_path / "retention.db")) as opened:
        yield opened


def settings() -> Settings:
    """No retention by default; SHORT keeps 1 day, MONTH 30."""
    return Settings(tenants={SHORT: TenantPolicy(retention_days=1), MONTH: TenantPolicy(retention_days=30)})


class CountingConversations(SQLiteConversationStore):
    def __init__(self, db: SQLiteResponseStore) -> None:
        super().__init__(db)
        self.batches: list[int] = []

    async def purge_conversations(self, cutoffs: Mapping[str, int], *, limit: int) -> int:
        deleted = await super().purge_conversations(cutoffs, limit=limit)
        self.batches.append(deleted)
        return deleted


async def test_a_sweep_purges_each_tenants_expired_objects_in_batches(db: SQLiteResponseStore) -> None:
    log = SQLiteEventLog(db)
    conversations = CountingConversations(db)
    two_days_ago, forty_days_ago, an_hour_ago = NOW - 2 * DAY, NOW - 40 * DAY, NOW - 3600
    for n in range(7):  # more than one batch of three
        await db.save_response(response(f"resp_short_old{n}", two_days_ago), [message(f"in_{n}")], tenant=SHORT)
    await db.save_response(response("resp_short_new", an_hour_ago), [], tenant=SHORT)
    await db.save_response(response("resp_short_running", forty_days_ago, "in_progress"), [], tenant=SHORT)
    await log.append("resp_short_old0", [(0, b"frame")], tenant=SHORT)
    await db.save_response(response("resp_month_2d", two_days_ago), [], tenant=MONTH)
    await db.save_response(response("resp_month_40d", forty_days_ago), [], tenant=MONTH)
    await db.save_response(response("resp_default_40d", forty_days_ago), [], tenant=DEFAULT_TENANT)  # kept
    await db.save_response(response("resp_other_40d", forty_days_ago), [], tenant="someone-else")  # kept

    await conversations.create_conversation("conv_idle", two_days_ago, {}, [message("c1")], tenant=SHORT)
    await conversations.create_conversation("conv_busy", forty_days_ago, {}, [], tenant=SHORT)
    await conversations.create_conversation("conv_default", forty_days_ago, {}, [], tenant=DEFAULT_TENANT)
    for n in range(4):
        await conversations.create_conversation(f"conv_month{n}", forty_days_ago, {}, [], tenant=MONTH)
    await conversations.append_items("conv_busy", [message("c2")], tenant=SHORT)  # last activity: now

    service = RetentionService(db, conversations, settings().tenant_policy, batch=3, pause=0)
    swept = await service.sweep(now=NOW)
    assert swept.responses == 7 + 1 and swept.conversations == 1 + 4
    assert all(batch <= 3 for batch in conversations.batches)

    assert (await db.list_responses(tenant=SHORT)).ids == ["resp_short_new", "resp_short_running"]
    assert (await db.list_responses(tenant=MONTH)).ids == ["resp_month_2d"]
    assert (await db.list_responses(tenant=DEFAULT_TENANT)).ids == ["resp_default_40d"]
    assert (await db.list_responses(tenant="someone-else")).ids == ["resp_other_40d"]
    assert (await db.list_responses(tenant=SHORT, where=ResponseFilter(metadata=(("tag", "t"),)))).ids == [
        "resp_short_new", "resp_short_running"]  # the metadata rows went with their responses
    assert await log.after("resp_short_old0", -1, tenant=SHORT) == []
    async with db.reading() as conn:
        orphans = await conn.execute_fetchall(
            "SELECT (SELECT count(*) FROM response_items WHERE response_id NOT IN (SELECT id FROM responses)),"
            " (SELECT count(*) FROM response_metadata WHERE response_id NOT IN (SELECT id FROM responses)),"
            " (SELECT count(*) FROM response_events WHERE response_id NOT IN (SELECT id FROM responses)),"
            " (SELECT count(*) FROM conversation_items"
            "  WHERE conversation_id NOT IN (SELECT id FROM conversations))")
    assert list(orphans) == [(0, 0, 0, 0)]

    assert await conversations.get_conversation("conv_idle", tenant=SHORT) is None
    assert await conversations.get_conversation("conv_busy", tenant=SHORT) is not None  # active today
    assert await conversations.get_conversation("conv_default", tenant=DEFAULT_TENANT) is not None
    assert (await conversations.list_conversations(tenant=MONTH)).data == []

    assert await service.sweep(now=NOW) == type(swept)(0, 0)  # nothing left to purge


async def test_without_any_retention_a_sweep_asks_nothing(db: SQLiteResponseStore) -> None:
    await db.save_response(response("resp_old", 1), [], tenant=DEFAULT_TENANT)
    service = RetentionService(db, SQLiteConversationStore(db), Settings().tenant_policy, any_retention=False)
    assert (await service.sweep(now=NOW)).responses == 0
    assert await db.get_response("resp_old", tenant=DEFAULT_TENANT) is not None


async def test_the_background_task_purges_until_stopped(db: SQLiteResponseStore, monkeypatch) -> None:
    monkeypatch.setattr("responses_bridge.services.responses.retention.FIRST_SWEEP_DELAY_SECONDS", 0)
    await db.save_response(response("resp_ancient", 1), [message("in")], tenant=SHORT)
    await db.save_response(response("resp_recent", NOW), [], tenant=SHORT)
    service = RetentionService(db, SQLiteConversationStore(db), settings().tenant_policy, interval=0.01)
    service.start()
    try:
        async with asyncio.timeout(30):
            while await db.get_response("resp_ancient", tenant=SHORT) is not None:
                await asyncio.sleep(0.01)
    finally:
        await service.stop()
    assert await db.get_response("resp_recent", tenant=SHORT) is not None
