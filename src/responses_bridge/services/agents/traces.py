"""A session's traces (``client.beta.agents.sessions.traces``): one per root turn, what the turn did — its
responses' model calls (model, tokens, finish reason), the bridge's tool calls (hosted shell, MCP, …) and the
client's (a function, a self-hosted session's commands, from the call to its result), with their timings and
outcomes — as an OTLP JSON ``ExportTraceServiceRequest``.

Nothing is counted twice: the trace is the spans the bridge makes anyway (tracing.py), kept for the turn by the
keeper (observability/kept_traces.py) whether or not they are exported, and stored with the turn's end in the same
write as the turn itself (a ``trace`` record of the session, gone with it). The spans carry no argument, output or
credential of a call (observability/gen_ai.py). Without OpenTelemetry installed (the ``otel`` extra) no turn is
kept, and listing traces is a 400 that says so rather than an empty list.
"""

from __future__ import annotations

from time import perf_counter
from typing import TYPE_CHECKING, Any

import orjson

from ...observability import gen_ai, tracing
from ...observability.timing import Timing
from ...protocol.errors import APIError
from ...protocol.lists import list_of
from ...store.base_agents import AgentStore, Record
from ..pagination import check_page, page_errors
from .environments.environments import session_not_found

if TYPE_CHECKING:
    from ...observability.kept_traces import KeptTrace

MAX_PAGE_BYTES = 16 << 20
"""A list answers at most 16 MiB of traces (OpenAI's bound): past it, a 400 asks for fewer."""
READ_AT_ONCE = 8
"""Traces read from the store at a time while a page is gathered (each at most kept_traces.MAX_TRACE_BYTES)."""
TURN_STATUS = "responses_bridge.turn.status"


class TurnTrace:
    """A running turn's trace: its root span (tracing.keep) and the spans of the client's calls still open."""

    def __init__(self, kept: KeptTrace | None, clock: Timing | None = None) -> None:
        self.kept = kept
        self._calls: dict[str, Any] = {}  # call id -> its span, until the client's result comes
        # the turn's own timing, kept with or without OpenTelemetry (observability/timing.py): its responses' spans
        # join it as each is saved, the client's calls are spans of it
        self.timing = clock
        self._waiting: dict[str, tuple[str, float]] = {}  # call id -> (name, since), the client's calls open

    def call_opened(self, call_id: str, name: str) -> None:
        """The model called one of the client's tools (a function, a self-hosted shell): its span starts."""
        if self.timing is not None and call_id not in self._waiting:
            self._waiting[call_id] = (name, perf_counter())
        if self.kept is None or call_id in self._calls or not tracing.recording():
            return
        self._calls[call_id] = tracing.start_span(f"tool {'shell' if name == 'shell' else 'function'}", None,
                                                  gen_ai.tool_call(name, "function", call_id))

    def call_answered(self, call_id: str, success: bool) -> None:
        opened = self._waiting.pop(call_id, None)
        if opened is not None and self.timing is not None:
            self.timing.add(f"tool {'shell' if opened[0] == 'shell' else 'function'}", "tool", opened[1],
                            perf_counter(), {**gen_ai.tool_call(opened[0], "function", call_id),
                                             **({} if success else {"error": True})})
        tracing.end(self._calls.pop(call_id, None), None if success else "the client's tool failed")

    def record(self, session_id: str, turn: dict[str, Any], usage: dict[str, Any] | None) -> Record | None:
        """Ends the trace with the turn's outcome; the record that stores it (None when nothing was kept). The
        turn's timing document goes into the turn itself (``_private``: never in the API's answers), kept whether
        or not OpenTelemetry is installed: the console's waterfall of the turn."""
        if self.timing is not None:
            turn.setdefault("_private", {})["timing"] = self.timing.document()
            self.timing = None
        if self.kept is None:
            return None
        for span in self._calls.values():  # calls the turn ended without a result for
            tracing.end(span, "no result: the turn ended")
        self._calls.clear()
        error = turn.get("error") or {}
        status = str(turn["status"])
        otlp = self.kept.finish({TURN_STATUS: status, **gen_ai.usage_attributes(usage)},
                                None if status in ("completed", "cancelled") else str(error.get("code") or status))
        self.kept = None
        body = {"id": turn["id"], "object": "agent.session.trace", "created_at": turn["created_at"],
                "session_id": session_id, "otlp": otlp}
        return Record("trace", turn["id"], body, parent=session_id)


def turn_span(session: dict[str, Any], turn: dict[str, Any]) -> tuple[str, dict[str, Any]]:
    """The name and attributes of a turn's root span."""
    agent = session["agent"]
    name = str(agent.get("name") or agent["id"])
    return f"invoke_agent {name}", {
        gen_ai.OPERATION: "invoke_agent", gen_ai.AGENT_ID: agent["id"], gen_ai.AGENT_NAME: name,
        gen_ai.CONVERSATION_ID: session["id"], "responses_bridge.turn.id": turn["id"]}


class SessionTraces:
    def __init__(self, store: AgentStore) -> None:
        self.store = store

    async def list_traces(self, session_id: str, *, after: str | None, limit: int, order: str,
                          tenant: str) -> dict[str, Any]:
        if not tracing.keeping_available():
            raise APIError(400, f"This server keeps no traces: {tracing.keeping_missing()}.",
                           param="session_id", code="unsupported_value")
        if await self.store.get("session", session_id, tenant=tenant) is None:
            raise session_not_found(session_id)
        check_page(limit, order, 100)
        traces: list[dict[str, Any]] = []
        size, has_more = 0, False
        with page_errors("trace"):
            while len(traces) < limit:
                page = await self.store.page("trace", tenant=tenant, parent=session_id, after=after,
                                             limit=min(READ_AT_ONCE, limit - len(traces)), order=order)
                for trace in page.data:
                    size += _size(trace["otlp"])
                    if size > MAX_PAGE_BYTES:
                        raise APIError(400, f"The traces asked for are over {MAX_PAGE_BYTES >> 20} MiB; request "
                                       "fewer (a smaller limit).", param="limit", code="invalid_value")
                    traces.append(trace)
                has_more = page.has_more
                if not page.has_more or not page.data:
                    break
                after = page.data[-1]["id"]
        return list_of(traces, has_more=has_more)


def _size(otlp: dict[str, Any]) -> int:
    return len(orjson.dumps(otlp))
