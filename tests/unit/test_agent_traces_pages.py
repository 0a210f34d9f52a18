"""Listing a session's traces (services/agents/traces.py): pages as the SDK's ``trace_list_params`` say, read a few
traces at a time, and a page over 16 MiB is a 400 asking for a smaller ``limit`` rather than an answer that size."""

from __future__ import annotations

from typing import Any

import pytest

from responses_bridge.protocol.errors import APIError
from responses_bridge.services.agents import traces as agent_traces
from responses_bridge.services.agents.traces import SessionTraces
from responses_bridge.store.base_agents import RecordPage

MIB = 1 << 20


class Traces:
    """The two store calls the listing makes, over one session's traces (ids in the order they were stored)."""

    def __init__(self, count: int, size: int) -> None:
        self.traces = [{"id": f"turn_{index:03d}", "object": "agent.session.trace", "created_at": index,
                        "session_id": "sess_1", "otlp": {"resourceSpans": [], "pad": "x" * size}}
                       for index in range(count)]
        self.reads: list[int] = []

    async def get(self, kind: str, record_id: str, *, tenant: str) -> dict[str, Any] | None:
        return {"id": record_id} if (kind, record_id, tenant) == ("session", "sess_1", "t") else None

    async def page(self, kind: str, *, tenant: str, parent: str | None = None, after: str | None = None,
                   limit: int = 20, order: str = "desc", **_: Any) -> RecordPage:
        assert (kind, tenant, parent) == ("trace", "t", "sess_1")
        ordered = self.traces if order == "asc" else self.traces[::-1]
        start = 0 if after is None else [t["id"] for t in ordered].index(after) + 1
        self.reads.append(limit)
        return RecordPage(ordered[start:start + limit], start + limit < len(ordered))


async def listed(store: Traces, **query: Any) -> dict[str, Any]:
    args = {"after": None, "limit": 20, "order": "desc", **query}
    return await SessionTraces(store).list_traces("sess_1", tenant="t", **args)  # type: ignore[arg-type]


async def test_pages_read_a_few_traces_at_a_time() -> None:
    store = Traces(30, 10)
    page = await listed(store, limit=20)
    assert [t["id"] for t in page["data"]] == [f"turn_{i:03d}" for i in range(29, 9, -1)]
    assert (page["first_id"], page["last_id"], page["has_more"]) == ("turn_029", "turn_010", True)
    assert store.reads == [8, 8, 4]
    page = await listed(store, limit=100, order="asc", after="turn_019")
    assert [t["id"] for t in page["data"]] == [f"turn_{i:03d}" for i in range(20, 30)] and not page["has_more"]


async def test_a_page_over_16_mib_asks_for_fewer() -> None:
    store = Traces(20, MIB - 200)  # each trace just under the bound a trace is kept to
    assert len((await listed(store, limit=16))["data"]) == 16
    with pytest.raises(APIError) as refused:
        await listed(store, limit=17)
    assert (refused.value.status, refused.value.param) == (400, "limit")
    assert max(store.reads) <= agent_traces.READ_AT_ONCE  # the store is read a few traces at a time


async def test_another_tenants_session_is_not_found() -> None:
    with pytest.raises(APIError) as missing:
        await SessionTraces(Traces(1, 10)).list_traces(  # type: ignore[arg-type]
            "sess_1", after=None, limit=20, order="desc", tenant="other")
    assert (missing.value.status, missing.value.param) == (404, "session_id")
