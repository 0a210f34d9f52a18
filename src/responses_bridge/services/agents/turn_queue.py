"""A session's queued turns: what is kept of each while it waits and runs, in memory and in the store.

A queued turn's input waits in the store, not in memory: it is stored with the turn's record when the turn is
queued (under ``_private``, which no reader is shown) and read back when the turn starts, whose first write replaces
that record with the turn's without it (the messages become the turn's items then). Held in memory, 32 queued
inputs of 8 MB each held 245 MiB per session, which no budget counted; charged to the memory budget instead, the
input would be counted twice while the request that brings it holds its body's own reservation (30 times its bytes,
up to a share), so a body over a thirtieth of a share would be refused even alone. Stored, waiting costs nothing,
and a session holds at most its running turn's input.
"""

from __future__ import annotations

import asyncio
import time
from dataclasses import dataclass, field
from typing import Any

from ... import ids
from ...store.base_agents import AgentStore
from .tool_calls import ToolCalls
from .traces import TurnTrace
from .vaults.mcp_secrets import shown_record

MAX_QUEUED_TURNS = 32  # a session's input waiting behind its running turn, stored until it runs
QUEUED_INPUT = "input"  # where a queued turn's record keeps its messages until it starts (under ``_private``)
WAITING = "waiting"  # where a turn waiting on the client keeps what it waits on (session_waiting.py)
LOST_INPUT = "The turn's input could not be read back from the store; send it again."
STEP_INPUT = "step_input"  # where a running turn keeps its step's input, to resume that step (session_resume.py)
STEP_RESPONSE = "step_response"  # and the step's response, once it has one
EXECUTOR_STARTED = "executor_started"  # the calls sent to an exec-server: never sent again (executor_calls.py)
# the client's Authorization its model calls carry, sealed (services/responses/kept_authorization.py): from the turn's
# queueing to its end, so the process that resumes it makes its calls with it (session_resume.py)
CLIENT_AUTHORIZATION = "client_authorization"


class HandOff(Exception):
    """A drain stops the turn here, at a step boundary; another process (or the next start) resumes it."""


def private(turn: dict[str, Any]) -> dict[str, Any]:
    """The turn's own fields no reader is shown (``_private``), made on first use."""
    kept: dict[str, Any] = turn.setdefault("_private", {})
    kept.setdefault("response_ids", [])
    return kept


@dataclass
class QueuedTurn:
    turn: dict[str, Any]
    messages: list[dict[str, Any]]  # the user's messages, as the session's items: read from the store at its start
    authorization: str | None = field(repr=False)  # the caller's, for the upstream; stored sealed only (turns.py)
    calls: ToolCalls = field(default_factory=ToolCalls)
    changes: dict[str, Any] | None = None  # what the turn's last response changes of the session, not stored yet
    span: tuple[str, dict[str, Any]] = ("invoke_agent", {})  # its root span's name and attributes (agent_traces)
    trace: TurnTrace = field(default_factory=lambda: TurnTrace(None))
    review: str | None = None  # the session's ``review`` when the turn started: its mode for the whole turn
    review_usage: dict[str, Any] | None = None  # the automatic reviews' tokens, not yet in the turn's usage
    resuming: bool = False  # a stopped process's running turn, continued from its step in flight
    kept: list[dict[str, Any]] = field(default_factory=list)  # its step's resumable subagents (subagents/contexts.py)
    waiting: bool = False  # a stopped process's turn waiting on the client, waiting on here (session_waiting.py)
    wait_first: bool = False  # its step response had ended with calls for the client, not waited on yet
    recovered: bool = False  # resumed by its own process after a database outage: not a resume of a crash


def new_turn(session: dict[str, Any]) -> dict[str, Any]:
    return {"id": ids.new_id("turn"), "object": "agent.session.turn", "agent_id": session["agent"]["id"],
            "session_id": session["id"], "created_at": int(time.time()), "started_at": None, "completed_at": None,
            "status": "queued", "error": None, "subagent_id": None, "usage": None,
            "prompt_cache_options": session.get("prompt_cache_options")}


def public(record: dict[str, Any]) -> dict[str, Any]:
    """A stored record without the bridge's own fields (``_private``, a session's sealed MCP transport secrets)."""
    return shown_record({key: value for key, value in record.items() if key != "_private"})


async def queued_input(store: AgentStore, entry: QueuedTurn, tenant: str) -> bool:
    """The turn's messages, read back from its stored record (turns.py ``SessionRunner.submit`` stored them);
    False when they are gone."""
    if entry.messages:
        return True
    stored = await store.get("turn", entry.turn["id"], tenant=tenant)
    if stored is None:
        raise asyncio.CancelledError  # the session was deleted meanwhile
    entry.messages = (stored.get("_private") or {}).get(QUEUED_INPUT) or []
    return bool(entry.messages)


async def stored_response_ids(store: AgentStore, session_id: str, tenant: str) -> list[str]:
    """The ids of every response the session's stored turns made (kept under ``_private``: :func:`private`), for
    the session's delete to delete them with it."""
    found: list[str] = []
    after = None
    while True:
        page = await store.page("turn", tenant=tenant, parent=session_id, after=after, limit=100, order="asc")
        found += [response_id for turn in page.data
                  for response_id in (turn.get("_private") or {}).get("response_ids", [])]
        if not page.has_more or not page.data:
            return found
        after = page.data[-1]["id"]
