"""Agent sessions for the console: a tenant's sessions, one session's items on a timeline (its computer calls'
screenshots in order), what it waits for (approvals answerable from the page, through the same service call the
API's ``POST …/events`` makes, so the same rules hold), its live desktop and its artifacts; and a turn's spans as a
waterfall, from the traces the session keeps (services/agents/traces.py).

Everything goes through the sessions service with the viewer's tenant: another tenant's session is the API's 404.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from ....protocol.errors import APIError
from ....services.agents.sessions import SessionService
from ....services.agents.traces import SessionTraces
from .items import ItemView, pretty, view
from .logs import when

PAGE = 25
SCREENSHOTS = frozenset({"computer_use_call", "computer_call_output"})
"""The items a screenshot comes with: a session's computer call (its output, when the agent keeps screenshots), or a
computer call's output given back as input."""
ITEMS_SHOWN = 100
DECISIONS = ("approve", "deny")
ANSWERABLE = {"mcp_approval_request": ("agent.session.input.mcp_approval_request_result", "mcp_tool_call"),
              "computer_use_approval_request": ("agent.session.input.computer_use_approval_request_result", None)}
"""The required actions the page answers, each with its event's type and the answer's ``response.type`` (None:
the request's own, ``browser_origin_access``); a sign-in form's values are given through the API only."""


@dataclass(slots=True)
class Pending:
    request_id: str
    kind: str
    what: str  # the question, as text


@dataclass(slots=True)
class PendingCall:
    """A call of the client's function the session waits on (answered through the API, with its output)."""

    call_id: str
    name: str
    arguments: str  # indented, credentials masked (items.py's pretty)
    turn_id: str


@dataclass(slots=True)
class SessionDetail:
    session: dict[str, Any]
    items: list[ItemView]
    more_items: bool
    screenshots: list[str]  # data: URLs, in the order the calls were answered
    pending: list[Pending] = field(default_factory=list)
    calls: list[PendingCall] = field(default_factory=list)
    facts: list[tuple[str, str]] = field(default_factory=list)
    artifacts: list[dict[str, Any]] = field(default_factory=list)


async def session_page(sessions: SessionService, tenant: str, after: str | None) -> dict[str, Any]:
    page = await sessions.list_sessions(after=after, limit=PAGE, order="desc", agent_id=None, metadata=[],
                                        tenant=tenant)
    rows = [{"id": session["id"], "status": session.get("status", ""), "created": when(session.get("created_at")),
             "agent": (session.get("agent") or {}).get("name") or (session.get("agent") or {}).get("id", ""),
             "title": str(session.get("title") or (session.get("metadata") or {}).get("title") or "")}
            for session in page["data"]]
    return {"rows": rows, "next_after": rows[-1]["id"] if page.get("has_more") and rows else None}


async def session_detail(sessions: SessionService, tenant: str, session_id: str) -> SessionDetail:
    session = await sessions.get(session_id, tenant=tenant)  # another tenant's: the API's 404
    listed = await sessions.list_items(session_id, turn_id=None, after=None, limit=ITEMS_SHOWN, order="asc",
                                       tenant=tenant)
    items = [view(item) for item in listed["data"] if isinstance(item, dict)]
    detail = SessionDetail(session, items, bool(listed.get("has_more")),
                           [image for item in items if item.kind in SCREENSHOTS for image in item.images])
    for action in session.get("required_actions") or ():
        if isinstance(action, dict) and action.get("type") == "function_call":
            detail.calls.append(PendingCall(str(action.get("call_id") or ""), str(action.get("name") or ""),
                                            pretty(action.get("arguments") or ""), str(action.get("turn_id") or "")))
        elif isinstance(action, dict) and action.get("type") in ANSWERABLE:
            request = action.get("request") or {}
            question = str(request.get("message") or request.get("origin") or request.get("type") or "")
            if action["type"] == "computer_use_approval_request" and request.get("type") != "browser_origin_access":
                question += " (a sign-in form: answer it through the API)"
            detail.pending.append(Pending(str(action.get("request_id")), str(action["type"]), question))
    agent = session.get("agent") or {}
    detail.facts = [("status", str(session.get("status") or "")), ("created", when(session.get("created_at"))),
                    ("agent", str(agent.get("name") or agent.get("id") or "")),
                    ("model", str(agent.get("model") or ""))]
    try:
        found = await sessions.environments.list_artifacts(session_id, environment_id=None, after=None, limit=50,
                                                           order="desc", tenant=tenant)
        detail.artifacts = [artifact for artifact in found.get("data") or () if isinstance(artifact, dict)]
    except APIError:  # a session without an environment has no artifacts to list
        detail.artifacts = []
    return detail


def approval_event(kind: str, request_id: str, decision: str, request_type: str) -> dict[str, Any]:
    """The event the API's client would post for this decision."""
    event_type, response_type = ANSWERABLE[kind]
    return {"type": event_type, "request_id": request_id,
            "response": {"type": response_type or request_type, "decision": decision}}


@dataclass(slots=True)
class Span:
    name: str
    depth: int
    offset: float  # percent of the trace's length
    width: float
    millis: float
    failed: bool


@dataclass(slots=True)
class Waterfall:
    title: str
    millis: float
    spans: list[Span]


async def waterfalls(traces: SessionTraces, session_id: str, tenant: str) -> list[Waterfall]:
    listed = await traces.list_traces(session_id, after=None, limit=20, order="desc", tenant=tenant)
    return [waterfall(trace) for trace in listed["data"]]


def waterfall(trace: dict[str, Any]) -> Waterfall:
    """A trace's spans placed on its time line, each under its parent, in start order."""
    spans: list[dict[str, Any]] = []
    for resource in (trace.get("otlp") or {}).get("resourceSpans", ()):
        for scope in resource.get("scopeSpans", ()):
            spans.extend(scope.get("spans", ()))
    if not spans:
        return Waterfall(str(trace.get("id", "")), 0.0, [])
    start = min(int(span.get("startTimeUnixNano", 0)) for span in spans)
    end = max(int(span.get("endTimeUnixNano", 0)) for span in spans)
    length = max(1, end - start)
    children: dict[str, list[dict[str, Any]]] = {}
    ids = {span.get("spanId") for span in spans}
    for span in sorted(spans, key=lambda span: int(span.get("startTimeUnixNano", 0))):
        parent = span.get("parentSpanId") if span.get("parentSpanId") in ids else ""
        children.setdefault(parent or "", []).append(span)
    placed: list[Span] = []

    def place(parent: str, depth: int) -> None:
        for span in children.get(parent, ()):
            began, ended = int(span.get("startTimeUnixNano", 0)), int(span.get("endTimeUnixNano", 0))
            placed.append(Span(str(span.get("name", "")), depth, 100 * (began - start) / length,
                               max(0.3, 100 * (ended - began) / length), (ended - began) / 1e6,
                               (span.get("status") or {}).get("code") == 2))
            place(str(span.get("spanId")), depth + 1)

    place("", 0)
    return Waterfall(str(trace.get("id", "")), length / 1e6, placed)
