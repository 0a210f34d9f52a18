"""A session's ``review: "auto_review"`` ("review eligible actions automatically; deny manual approval fallbacks",
the SDK's session type): the actions a session would ask its client to approve — the MCP calls of tools that do not
say they only read (protocol/agents/approvals.py) — are judged by a model call instead, and never asked.

The review is one response of the bridge's own (a background response over the agent's model, the caller's
credentials and the tenant's places, chained on nothing), given the turn's user messages and the action, and made
to answer with one call of :data:`DECISION_FUNCTION` (``decision``: ``approve`` or ``deny``, and a ``reason``).
Anything else — the review's response failed, it answered without the call, or with a decision it cannot read — is
a deny: there is no manual fallback to ask the client for. An approved call is made by the turn's next response (an
``mcp_approval_response``, as a client's approval); a denied one is not, and the model is told why.

The decision is recorded in the session as an ``agent_message`` item (sender ``auto_review``, recipient the
session's agent; told by ``agent.session.turn.item.added`` and listed among the turn's items), the SDK's item for
what passes between agents. The review's tokens count in the turn's usage; its response is the turn's, deleted
with the session."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import orjson

from ... import ids
from ...protocol.agents.events import TERMINAL, add_usage, token_usage
from ...protocol.errors import APIError
from ..responses.background_frames import split_frames

if TYPE_CHECKING:
    from .runner_view import TurnRunner
    from .turn_queue import QueuedTurn

REVIEWER = "auto_review"  # the ``sender_agent_id`` of the decision's item
DECISION_FUNCTION = "review_decision"
MAX_TASK_CHARS = 8_000  # of the turn's user messages shown to the review
MAX_REASON_CHARS = 1_000

INSTRUCTIONS = (
    "You review one action an AI agent wants to take for its user, before it is taken. Approve it when the "
    "user's request plausibly needs it and it does no harm beyond that request; deny it when it would destroy or "
    "leak data, spend money, reach people or systems the request does not concern, or cannot be undone and the "
    "request does not clearly ask for that. When in doubt, deny. Answer with one call of "
    f"{DECISION_FUNCTION}, with a short reason.")

DECISION_TOOL = {
    "type": "function", "name": DECISION_FUNCTION, "description": "Record the review's decision on the action.",
    "strict": False,
    "parameters": {"type": "object", "properties": {
        "decision": {"type": "string", "enum": ["approve", "deny"]},
        "reason": {"type": "string", "description": "Why, in one or two sentences."}},
        "required": ["decision", "reason"]}}


def review_request(session: dict[str, Any], task: str, request: dict[str, Any]) -> dict[str, Any]:
    """The review's response body: the turn's user messages, then the action to judge (the last message)."""
    action = (f"The agent wants to call the tool '{request.get('name')}' of the MCP server "
              f"'{request.get('server_label')}' with the arguments {request.get('arguments') or '{}'}.")
    return {"model": session["agent"]["model"], "background": True, "stream": True, "store": True,
            "instructions": INSTRUCTIONS, "tools": [DECISION_TOOL], "parallel_tool_calls": False,
            "tool_choice": {"type": "function", "name": DECISION_FUNCTION},
            "input": [{"type": "message", "role": "user", "content": [
                          {"type": "input_text", "text": f"The user's request:\n{task[:MAX_TASK_CHARS]}"}]},
                      {"type": "message", "role": "user", "content": [{"type": "input_text", "text": action}]}]}


def read_decision(response: dict[str, Any]) -> tuple[str, str]:
    """The review's decision and reason from its response; a deny, saying why, for anything unreadable."""
    if response.get("status") != "completed":
        return "deny", f"the review did not complete ({response.get('status') or 'no answer'})"
    for item in response.get("output") or []:
        if item.get("type") == "function_call" and item.get("name") == DECISION_FUNCTION:
            try:
                arguments = orjson.loads(item.get("arguments") or "{}")
            except orjson.JSONDecodeError:
                break
            decision = arguments.get("decision") if isinstance(arguments, dict) else None
            reason = arguments.get("reason") if isinstance(arguments, dict) else None
            if decision in ("approve", "deny"):
                return str(decision), str(reason or "no reason given")[:MAX_REASON_CHARS]
            break
    return "deny", "the review gave no decision"


def decision_answer(request: dict[str, Any], decision: str, reason: str) -> list[dict[str, Any]]:
    """The turn's next response's input for the decision: the call made when approved; when denied, not made and
    the model told why."""
    answer: dict[str, Any] = {"type": "mcp_approval_response", "approval_request_id": request["id"],
                              "approve": decision == "approve"}
    if decision == "approve":
        return [answer]
    note = (f"The call of tool '{request.get('name')}' on MCP server '{request.get('server_label')}' with "
            f"arguments {request.get('arguments') or '{}'} was not made: the automatic review denied it ({reason}).")
    return [{**answer, "reason": "denied by the automatic review"},
            {"type": "message", "role": "developer", "content": [{"type": "input_text", "text": note}]}]


async def auto_review(runner: TurnRunner, entry: QueuedTurn, session: dict[str, Any],
                      request: dict[str, Any]) -> None:
    """Judge the held MCP call ``request`` of the running turn; its decision goes to the turn's next response and
    is told and stored as the turn's ``agent_message`` item."""
    task = "\n".join(part.get("text", "") for message in entry.messages for part in message["content"]
                     if part.get("type") == "input_text")
    response: dict[str, Any] = {}
    try:
        response_id = await runner.start(review_request(session, task, request), runner.tenant,
                                         entry.authorization, {})  # the review's call names no MCP server
        entry.turn.setdefault("_private", {"response_ids": []})["response_ids"].append(response_id)
        async for data in runner.background.events_after(response_id, -1, tenant=runner.tenant):
            for frame in split_frames(data):
                start = frame.find(b"data: ")
                event = orjson.loads(frame[start + 6:]) if start >= 0 else {}
                if event.get("type") in TERMINAL:
                    response = event.get("response") or {}
        decision, reason = read_decision(response)
    except APIError as error:  # no fallback to the client: a review that cannot be made denies
        decision, reason = "deny", f"the review could not be made: {error.message}"
    entry.review_usage = add_usage(entry.review_usage, token_usage(response.get("usage")))
    entry.calls.answers.extend(decision_answer(request, decision, reason))
    verb = "approved" if decision == "approve" else "denied"
    item = {"id": ids.message_id(), "type": "agent_message", "turn_id": request["turn_id"],
            "sender_agent_id": REVIEWER, "recipient_agent_id": session["agent"]["id"],
            "content": [{"type": "output_text", "text": (
                f"{verb.capitalize()} the call of tool '{request.get('name')}' on MCP server "
                f"'{request.get('server_label')}' with arguments {request.get('arguments') or '{}'}: {reason}")}]}
    await runner.events.emit({"type": "agent.session.turn.item.added", "session_id": runner.session_id,
                              "turn_id": request["turn_id"], "output_index": None, "item": item},
                             records=[runner.item_record(item)])
