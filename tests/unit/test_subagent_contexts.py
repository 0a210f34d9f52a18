"""A session's kept subagents (services/agents/subagents/contexts.py) on SQLite and PostgreSQL: the newest closed
subagent of each name keeps its context, at most MAX_KEPT of them, each context its newest items within
MAX_CONTEXT_BYTES starting at a task; an older one's context is dropped from its record; another tenant's, and
another session's, are never offered."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from responses_bridge.services.agents.subagents.contexts import (
    MAX_CONTEXT_BYTES,
    MAX_KEPT,
    bounded,
    context_of,
    for_the_run,
    kept_subagents,
    shown,
    with_context,
)
from tests.unit.store_kinds import KINDS
from tests.unit.test_agent_store import agent_store

SESSION = {"id": "sess_1", "agent": {"multi_agent": {"enabled": True}}}


def task(text: str) -> dict[str, Any]:
    return {"type": "message", "role": "user", "content": text}


def subagent(number: int, name: str, status: str = "closed", session: str = "sess_1") -> dict[str, Any]:
    return {"id": f"subagent_{number:03d}", "object": "agent.session.subagent", "name": name, "status": status,
            "session_id": session, "opened_at": number, "closed_at": number, "parent_agent_id": "agent_1",
            "instructions": None}


def test_a_context_is_its_newest_items_within_the_bound_starting_at_a_task() -> None:
    answer = {"type": "message", "role": "assistant", "content": "x" * (MAX_CONTEXT_BYTES // 2)}
    context = [task("one"), answer, task("two"), answer, task("three"), answer]
    kept = bounded(context)
    assert [item.get("content") for item in kept if item["role"] == "user"] == ["three"]
    assert bounded([task("t"), {"type": "message", "role": "assistant", "content": "y" * MAX_CONTEXT_BYTES}]) == []
    stored = with_context(subagent(1, "a"), context)
    assert context_of(stored) == kept and "_private" not in shown(stored)


@pytest.mark.parametrize("kind", KINDS)
async def test_the_newest_closed_subagent_of_each_name_is_kept(kind: str, request: pytest.FixtureRequest,
                                                               tmp_path: Path) -> None:
    async with agent_store(kind, request, tmp_path) as store:
        twin = f"agent_{MAX_KEPT + 2}"  # an older subagent of the newest one's name
        await store.put("subagent", "subagent_099", with_context(subagent(99, twin), [task("older")]), tenant="a",
                        parent="sess_1")
        await store.put("subagent", "subagent_100", with_context(subagent(100, "x", session="sess_0"), [task("x")]),
                        tenant="a", parent="sess_0")
        for number in range(MAX_KEPT + 3):
            await store.put("subagent", f"subagent_{number:03d}", with_context(
                subagent(number, f"agent_{number}"), [task(f"t{number}")]), tenant="a", parent="sess_1")
        await store.put("subagent", "subagent_200", with_context(subagent(200, "open", "active"), [task("open")]),
                        tenant="a", parent="sess_1")
        await store.put("subagent", "subagent_201", subagent(201, "plain"), tenant="a", parent="sess_1")  # no context
        await store.put("subagent", "subagent_202", with_context(subagent(202, "theirs"), [task("theirs")]),
                        tenant="b", parent="sess_1")
        kept = await kept_subagents(store, SESSION, tenant="a")
        assert [entry["name"] for entry in kept] == [f"agent_{n}" for n in range(MAX_KEPT + 2, 2, -1)]
        assert for_the_run(kept)[0] == {"name": f"agent_{MAX_KEPT + 2}", "context": [task(f"t{MAX_KEPT + 2}")]}
        # past the bound, the oldest lost their context (and are no longer offered); the open one keeps its own
        for number in range(3):
            record = await store.get("subagent", f"subagent_{number:03d}", tenant="a")
            assert record is not None and context_of(record) is None and record["name"] == f"agent_{number}"
        assert context_of(await store.get("subagent", "subagent_099", tenant="a") or {}) is None
        assert context_of(await store.get("subagent", "subagent_200", tenant="a") or {}) == [task("open")]
        assert context_of(await store.get("subagent", "subagent_100", tenant="a") or {}) == [task("x")]
        assert await kept_subagents(store, {**SESSION, "agent": {"multi_agent": {"enabled": False}}},
                                    tenant="a") == []
