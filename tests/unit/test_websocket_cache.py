"""The WebSocket connection's cache of its own turns (for ``previous_response_id`` with ``store: false``): bounded
by turns and by the items it holds, so large turns one after another cost one of them, never 64."""

from __future__ import annotations

from collections import OrderedDict
from typing import Any

from responses_bridge.adapters.http.websocket.connection import CACHE_SIZE, ConnectionStore


def _store(cache: OrderedDict[str, list[dict]], max_items: int) -> ConnectionStore:
    return ConnectionStore(Any, cache, max_items=max_items)  # type: ignore[arg-type]  # the real store is unused


def test_large_turns_evict_the_older_ones_past_the_item_bound_and_the_newest_is_always_kept() -> None:
    cache: OrderedDict[str, list[dict]] = OrderedDict()
    store = _store(cache, max_items=10)
    store.remember("resp_1", [{"n": i} for i in range(6)])
    store.remember("resp_2", [{"n": i} for i in range(6)])
    assert list(cache) == ["resp_2"]
    store.remember("resp_3", [{"n": i} for i in range(25)])  # larger than the bound alone: still kept
    assert list(cache) == ["resp_3"]
    store.remember("resp_4", [{"n": 1}])
    assert list(cache) == ["resp_4"]  # 26 items together: the older goes
    store.remember("resp_5", [{"n": 1}] * 3)
    assert list(cache) == ["resp_4", "resp_5"]


def test_small_turns_are_bounded_by_count() -> None:
    cache: OrderedDict[str, list[dict]] = OrderedDict()
    store = _store(cache, max_items=1_000_000)
    for index in range(CACHE_SIZE + 5):
        store.remember(f"resp_{index}", [{"n": index}])
    assert len(cache) == CACHE_SIZE and next(iter(cache)) == "resp_5"
