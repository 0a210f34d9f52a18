"""The Batch API's records (store/base_batches.py: ``BatchStore``) on SQLite and on PostgreSQL: a tenant's batches
and its list, a cancel, the lease claimed by exactly one of several processes at once, every runner write fenced by
it, the lines' states and the counters their results add to, and the lines sent again after a loss counted."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from contextlib import AsyncExitStack
from pathlib import Path
from typing import Any

import pytest

from responses_bridge.store import open as store_open
from responses_bridge.store.base_batches import BatchStore, BatchTotals, LineCounts
from responses_bridge.store.records import UnknownCursor
from tests.support.postgres import migrated_database
from tests.support.stores import KINDS

NOW = 1_800_000_000.0


@pytest.fixture(params=KINDS)
async def store(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[BatchStore]:
    async with AsyncExitStack() as stack:
        url = None
        if request.param == "postgres":
            url = await stack.enter_async_context(migrated_database(request.getfixturevalue("postgres_server")))
        opened = await store_open.open_stores(str(tmp_path / "batches.db"), url)
        try:
            yield opened.batches
        finally:
            await opened.close()


def body(batch_id: str, **changes: Any) -> dict[str, Any]:
    return {"id": batch_id, "object": "batch", "status": "validating", "endpoint": "/v1/responses",
            "expires_at": int(NOW) + 86400, **changes}


async def test_a_tenants_batches_its_list_and_a_cancel(store: BatchStore) -> None:
    for number in range(3):
        await store.add_batch(body(f"batch_{number}"), tenant="a")
    await store.add_batch(body("batch_b"), tenant="b")
    assert await store.get_batch("batch_b", tenant="a") is None
    got = await store.get_batch("batch_1", tenant="a")
    assert got is not None and got.status == "validating" and got.totals == BatchTotals() and got.tenant == "a"
    page, more = await store.list_batches(tenant="a", after=None, limit=2)
    assert [batch.id for batch in page] == ["batch_2", "batch_1"] and more
    page, more = await store.list_batches(tenant="a", after="batch_1", limit=2)
    assert [batch.id for batch in page] == ["batch_0"] and not more
    with pytest.raises(UnknownCursor):
        await store.list_batches(tenant="a", after="batch_b", limit=2)
    assert await store.request_cancel("batch_0", 5, tenant="b") is None
    cancelling = await store.request_cancel("batch_0", 5, tenant="a")
    assert cancelling is not None and cancelling.status == "cancelling" and cancelling.body["cancelling_at"] == 5
    assert await store.status_of("batch_0") == "cancelling"
    again = await store.request_cancel("batch_0", 9, tenant="a")
    assert again is not None and again.body["cancelling_at"] == 5  # the first cancel's time stays


async def test_one_claim_among_many_and_fenced_writes(store: BatchStore) -> None:
    """A lease lapses here by being renewed for a negative time: on PostgreSQL leases are measured by the database's
    clock, whatever the caller's ``now`` says."""
    await store.add_batch(body("batch_x"), tenant="a")
    assert await store.claimable(NOW, limit=10) == ["batch_x"]
    claims = await asyncio.gather(*(store.claim("batch_x", f"owner-{n}", NOW, 30) for n in range(6)))
    winners = [n for n, claim in enumerate(claims) if claim is not None]
    assert len(winners) == 1
    owner, loser = f"owner-{winners[0]}", f"owner-{(winners[0] + 1) % 6}"
    assert await store.claimable(NOW + 10, limit=10) == []  # a live lease
    assert await store.claim("batch_x", loser, NOW + 10, 30) is None
    assert await store.renew(["batch_x"], loser, NOW, 60) == ["batch_x"]
    assert await store.renew(["batch_x"], owner, NOW, 60) == []
    assert not await store.add_lines("batch_x", [(0, "c0", b"{}")], owner=loser)
    assert await store.add_lines("batch_x", [(0, "c0", b'{"a":1}'), (2, "c2", b"{}")], owner=owner)
    assert await store.change_batch("batch_x", "in_progress", {"in_progress_at": 7}, owner=owner)
    assert not await store.change_batch("batch_x", "failed", {}, owner=loser)
    # the lease lapses; another process claims it; the first one's writes change nothing from then on
    assert await store.renew(["batch_x"], owner, NOW, -5) == []
    assert await store.claimable(NOW, limit=10) == ["batch_x"]
    taken = await store.claim("batch_x", loser, NOW, 30)
    assert taken is not None and taken.status == "in_progress" and taken.body["in_progress_at"] == 7
    assert taken.totals.total == 2
    assert not await store.start_line("batch_x", 0, owner=owner)
    assert not await store.finish_line("batch_x", 0, b"{}", LineCounts(failed=False), owner=owner)
    await store.release("batch_x", owner)  # not its lease: nothing happens
    assert await store.claim("batch_x", owner, NOW, 30) is None
    await store.release("batch_x", loser)
    assert await store.claim("batch_x", owner, NOW, 30) is not None  # released: claimed at once
    assert await store.claim("batch_x", loser, NOW, 30, force=True) is not None  # alone at start
    # a cancel recorded while the runner moves on is not overwritten by it; the runner's end is
    await store.request_cancel("batch_x", 70, tenant="a")
    assert await store.change_batch("batch_x", "in_progress", {"model": "m"}, owner=loser)
    kept = await store.get_batch("batch_x", tenant="a")
    assert kept is not None and kept.status == "cancelling" and kept.body["model"] == "m"
    assert await store.change_batch("batch_x", "cancelled", {"cancelled_at": 71}, owner=loser)
    assert (await store.status_of("batch_x")) == "cancelled"


async def test_lines_their_results_and_the_counters(store: BatchStore) -> None:
    await store.add_batch(body("batch_l"), tenant="a")
    assert await store.claim("batch_l", "me", NOW, 30) is not None
    assert await store.add_lines("batch_l", [(n, f"c{n}", b'{"n":%d}' % n) for n in range(4)], owner="me")
    pending = await store.pending_lines("batch_l", -1, 10)
    assert [(line.index, line.custom_id, line.body, line.started) for line in pending] == [
        (n, f"c{n}", b'{"n":%d}' % n, False) for n in range(4)]
    assert await store.start_line("batch_l", 0, owner="me") and await store.start_line("batch_l", 1, owner="me")
    assert await store.finish_line("batch_l", 0, b'{"ok":0}', LineCounts(False, 10, 2, 5, 1), owner="me")
    assert not await store.finish_line("batch_l", 0, b'{"ok":0}', LineCounts(False, 10), owner="me")  # once
    assert not await store.start_line("batch_l", 0, owner="me")  # done: never sent again
    assert await store.finish_line("batch_l", 3, b'{"bad":3}', LineCounts(True, 1, 0, 0, 0), owner="me")
    pending = await store.pending_lines("batch_l", -1, 10)
    assert [(line.index, line.started) for line in pending] == [(1, True), (2, False)]
    assert [line.index for line in await store.pending_lines("batch_l", 1, 10)] == [2]
    assert await store.start_line("batch_l", 1, owner="me")  # in flight at a loss: sent again, counted
    got = await store.get_batch("batch_l", tenant="a")
    assert got is not None and got.totals == BatchTotals(total=4, completed=1, failed=1, input_tokens=11,
                                                         cached_tokens=2, output_tokens=5, reasoning_tokens=1,
                                                         rerun=1)
    results = await store.line_results("batch_l", -1, 10)
    assert [(result.index, result.failed, result.output) for result in results] == [
        (0, False, b'{"ok":0}'), (3, True, b'{"bad":3}')]
    assert await store.reset_lines("batch_l", owner="me")
    assert await store.pending_lines("batch_l", -1, 10) == []
    assert not await store.reset_lines("batch_l", owner="other")
    assert await store.add_lines("batch_l", [(0, "c0", b"{}")], owner="me")
    await store.forget_lines("batch_l", owner="me")
    assert await store.pending_lines("batch_l", -1, 10) == []
    assert await store.change_batch("batch_l", "completed", {"completed_at": 9}, owner="me")
    await store.renew(["batch_l"], "me", NOW, -5)
    assert await store.claimable(NOW, limit=10) == []  # ended: nobody's work any more
    assert await store.claim("batch_l", "other", NOW, 30, force=True) is None
