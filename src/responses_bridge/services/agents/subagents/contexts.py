"""A session's subagents kept past the response that opened them, so that a later turn's model can resume one.

A turn's tree of subagents (run/multi_agent.py) lives as long as its response, and closes every subagent when it
ends. What a subagent knew — its context: each task it was given (with the messages sent to it), and its own items
of each piece of work the root collected — is kept on its ``subagent`` record (under ``_private``, never shown),
as the session told it (tree.py). The next turn's response starts its tree with the
session's kept subagents, closed: ``followup_task`` on one resumes it in its context (the session's
``resume_subagent_call`` item and ``agent.session.subagent.active``), ``interrupt_agent`` with ``close`` closes one
before the response ends (``close_subagent_call``, ``agent.session.subagent.closed``).

Bounds: a context is kept to its newest items within :data:`MAX_CONTEXT_BYTES` (of JSON), and only the session's
:data:`MAX_KEPT` newest subagents (one name each: the newest of a name) keep theirs — an older one's context is
dropped from its record when a turn starts, and it is no longer offered. Kept contexts are in the records' bytes,
so they count in the tenant's ``max_stored_bytes``, and they go with the session when it is deleted.
"""

from __future__ import annotations

from typing import Any

import orjson

from ....store.base_agents import AgentStore, Record

MAX_CONTEXT_BYTES = 128 * 1024
MAX_KEPT = 16
KEPT_KEY = "_kept_subagents"
"""The turn's request body's key of its kept subagents (``[{"name", "context"}]``): taken out of the body before
its response begins (adapters/http/agents/agents_routes.py), never sent upstream nor stored with the response."""


def bounded(context: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """The newest items of ``context`` whose JSON together fits :data:`MAX_CONTEXT_BYTES`, starting at a task
    (a user message), so that the context a resumed subagent reads begins where a piece of work began."""
    kept: list[dict[str, Any]] = []
    size = 0
    for item in reversed(context):
        size += len(orjson.dumps(item))
        if size > MAX_CONTEXT_BYTES:
            break
        kept.append(item)
    kept.reverse()
    while kept and not (kept[0].get("type") == "message" and kept[0].get("role") == "user"):
        kept.pop(0)
    return kept


def context_of(record: dict[str, Any]) -> list[dict[str, Any]] | None:
    kept = (record.get("_private") or {}).get("context")
    return kept if isinstance(kept, list) else None


def with_context(record: dict[str, Any], context: list[dict[str, Any]]) -> dict[str, Any]:
    """A subagent's record as stored: with its context (bounded)."""
    return {**record, "_private": {"context": bounded(context)}}


def shown(record: dict[str, Any]) -> dict[str, Any]:
    """A subagent's record as answered (the SDK's ``Subagent``): without its context."""
    return {key: value for key, value in record.items() if key != "_private"} if "_private" in record else record


async def kept_subagents(store: AgentStore, session: dict[str, Any], *, tenant: str) -> list[dict[str, Any]]:
    """The session's closed subagents a turn starting now may resume (their records, context included), newest
    first; past :data:`MAX_KEPT`, a record's context is dropped (stored without it)."""
    if not session["agent"]["multi_agent"]["enabled"]:
        return []
    page = await store.page("subagent", tenant=tenant, parent=session["id"], limit=100, order="desc")
    kept: list[dict[str, Any]] = []
    names: set[str] = set()
    for record in page.data:
        if context_of(record) is None or record.get("status") != "closed":  # an open one is its turn's to close
            continue
        if len(kept) < MAX_KEPT and record.get("name") not in names:
            kept.append(record)
            names.add(str(record.get("name")))
            continue
        await store.put("subagent", record["id"], shown(record), tenant=tenant, parent=session["id"])
    return kept


def for_the_run(kept: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """What the turn's response's tree is given of them (:data:`KEPT_KEY`)."""
    return [{"name": record["name"], "context": context_of(record) or []} for record in kept]


def record(subagent: dict[str, Any], session_id: str, context: list[dict[str, Any]] | None) -> Record:
    """A subagent's record to store, with its context when it has one."""
    body = with_context(subagent, context) if context is not None else dict(subagent)
    return Record("subagent", subagent["id"], body, parent=session_id)
