"""What a stored request's items cost the sidecar's memory, counted by tracemalloc (bytes, not time): an item's JSON
as kept for its row costs about its own size, not orjson's 4 KiB write buffer, and nothing of a saved batch stays
alive once its transaction is done (aiosqlite's thread kept the last function it ran)."""

from __future__ import annotations

import gc
import tracemalloc
from pathlib import Path

import orjson

from responses_bridge.store import SQLiteResponseStore
from responses_bridge.store.base import DEFAULT_TENANT
from responses_bridge.store.items import item_rows
from tests.unit.test_store import make_response, user_item

ITEMS = 5_000


def _traced(snapshot: tracemalloc.Snapshot, filename: str) -> int:
    return sum(stat.size for stat in snapshot.statistics("filename") if stat.traceback[0].filename.endswith(filename))


def test_an_items_row_costs_about_its_own_json() -> None:
    items = [user_item(f"msg_{index:08d}", "hi") for index in range(ITEMS)]
    json_bytes = sum(len(orjson.dumps(item)) for item in items)
    tracemalloc.start()
    try:
        rows = item_rows(items)
        kept = tracemalloc.get_traced_memory()[0]
    finally:
        tracemalloc.stop()
    assert len(rows) == ITEMS
    assert kept < 3 * json_bytes + 200 * ITEMS, (kept / ITEMS, json_bytes / ITEMS)  # was ~4 KiB an item


async def test_nothing_of_a_saved_batch_stays_alive(tmp_path: Path) -> None:
    async with SQLiteResponseStore(str(tmp_path / "bridge.db")) as store:
        items = [user_item(f"msg_{index:08d}", "hi") for index in range(ITEMS)]
        await store.save_response(make_response("resp_one"), items, tenant=DEFAULT_TENANT)  # threads, caches warm
        items = [user_item(f"msg_{index:08d}", "hi") for index in range(ITEMS, 2 * ITEMS)]
        tracemalloc.start(3)
        try:
            await store.save_response(make_response("resp_two"), items, tenant=DEFAULT_TENANT)
            gc.collect()
            snapshot = tracemalloc.take_snapshot()
        finally:
            tracemalloc.stop()
        assert _traced(snapshot, "store/items.py") < 64 * 1024  # the rows were ~1 MiB while the save ran
        page = await store.list_input_items("resp_two", tenant=DEFAULT_TENANT, limit=1, order="asc")
        assert page is not None and page.data and "msg_00005000" in str(page.data[0])
