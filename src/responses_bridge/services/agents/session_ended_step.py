"""A resumed session turn whose step response had already ended: the stop came between that response's end and
the turn's own (a ``kill -9`` there, found by scripts/crash-probe, issue #64). Making the model call again would
answer the input twice (the turn keeping both answers), so the turn is ended from the stored response instead.
``response_id``: the turn's step in flight, as session_resume.py keeps it."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import orjson
import structlog

from ...protocol.agents.automations_tool import FUNCTION_NAME as AUTOMATIONS_FUNCTION
from ...protocol.agents.events import CLIENT_CALL, Shown, token_usage, translate
from .computer.calls import stopped_call
from .turn_queue import WAITING

if TYPE_CHECKING:
    from .runner_view import TurnRunner
    from .turn_queue import QueuedTurn

log = structlog.get_logger("responses_bridge.agents")

ENDED_STEP = ("completed", "incomplete")
"""A step response's own ends (the model's): ``failed`` and ``cancelled`` are also how a stopped or handed-off
run is stored, so a step that ended so is made again."""
CLIENT_PENDING = frozenset({"function_call", "custom_tool_call", "mcp_approval_request"})
STEP_ENDED_WITH_CALLS = ("The server running this turn stopped after its response ended with calls for the client "
                         "(tool calls or approvals), before the turn waited for them; that wait is not rebuilt, and "
                         "the turn is not resumed. Send the input again.")

DESKTOP_STOPPED = ("The server running this turn stopped while it performed the model's computer actions on the "
                   "session's desktop, which stopped with it: what those actions did is unknown, and the turn is not "
                   "resumed. Send the input again: the next computer call starts a fresh desktop (the model is told "
                   "so).")


def _for_client(item: dict[str, Any]) -> bool:
    """An output item the turn waits on the client for (a ``self_hosted`` session's command among them)."""
    return item.get("type") in CLIENT_PENDING or (item.get("type") == "shell_call" and item.get("environment") is None)


async def _rebuildable(runner: TurnRunner, output: list[dict[str, Any]]) -> bool:
    """Can the wait the stopped process was about to begin be begun here: only the client's plain function
    calls, its commands and MCP approvals it decides itself (the calls the session makes itself, the ones it does
    not wait for and the automatic review are the running process's)."""
    session = await runner.session()
    asynchronous = {tool["name"] for tool in session["agent"]["tools"]
                    if tool["type"] == "function" and tool.get("async")}
    for item in output:
        kind = item.get("type")
        if kind == "custom_tool_call" or (kind == "function_call" and (
                item.get("name") in asynchronous or item.get("name") == AUTOMATIONS_FUNCTION)):
            return False
        if kind == "mcp_approval_request" and session.get("review") == "auto_review":
            return False
    return True


async def ended_step(runner: TurnRunner, entry: QueuedTurn, response_id: str | None) -> bool:
    """The stopped process's step response had already ended (the kill came between its end and the turn's): the
    turn ends from it, no model call made again. Its output items the session's log has not told yet are told
    (an item already stored is not told again), then the turn's end and the session's idle, with its usage and
    ``last_response_id``. The stored response, or the one its log's terminal event holds (:func:`_ended_in_log`).
    A response that left calls for the client ends the turn ``failed``
    (``STEP_ENDED_WITH_CALLS``): the wait for them is not rebuilt, and the session's next turn chains on
    the response before it (one whose calls are never answered would be refused upstream). False: the step had
    not ended; it is resumed."""
    turn = entry.turn
    if not response_id:
        return False
    stored = await runner.background.store.get_response(response_id, tenant=runner.tenant)
    if stored is None or stored.get("status") not in ENDED_STEP:
        stored = await _ended_in_log(runner, response_id)
        if stored is None:
            return False
    output = [item for item in stored.get("output") or [] if isinstance(item, dict)]
    usage = token_usage(stored.get("usage"))
    stopped = [(index, item) for index, item in enumerate(output) if item.get("type") == "computer_call"]
    if stopped:  # its desktop went with the stopped process: each call told failed, then the turn
        for index, item in stopped:
            call = stopped_call(item, turn["id"])
            await runner.events.emit({"type": "agent.session.turn.item.done", "session_id": runner.session_id,
                                      "turn_id": turn["id"], "output_index": index, "item": call},
                                     records=[runner.item_record(call)])
        entry.changes = {"usage": usage, "last_response_id": None}  # the session chains on as before this turn
        await runner._end(entry, "failed", {"code": "server_error", "message": DESKTOP_STOPPED}, usage)
        return True
    waits = any(_for_client(item) for item in output)
    if waits and (stored["status"] != "completed" or not await _rebuildable(runner, output)):
        entry.changes = {"usage": usage, "last_response_id": None}  # the session chains on as before this turn
        await runner._end(entry, "failed", {"code": "server_error", "message": STEP_ENDED_WITH_CALLS}, usage)
        return True
    entry.changes = {"usage": usage, "last_response_id": response_id}
    answered_before = list(((turn.get("_private") or {}).get(WAITING) or {}).get("answers") or [])
    kept, added = await _told_items(runner, turn["id"])
    shown = Shown(ids=set(added))
    for index, item in enumerate(output):
        told = str(item.get("id")) in kept
        for kind in ("response.output_item.added", "response.output_item.done"):
            said, done = translate({"type": kind, "output_index": index, "item": item}, runner.session_id,
                                   turn["id"], shown)
            if waits and kind.endswith("done"):  # the calls the turn waits on, told or not: opened again
                _open(entry, item, done)
            if said is None or told or (kind.endswith("added") and str(item.get("id")) in added):
                continue
            await runner.events.emit(said, records=None if done is None else [runner.item_record(done)])
    if waits:  # the wait the stopped process was about to begin: begun by the turn (session_waiting.py)
        _answered(entry, answered_before)
        turn.setdefault("_private", {})[WAITING] = {"usage": usage}  # the turn's usage so far
        entry.wait_first = True
        log.info("agent_turn_waits_from_stored_step", session_id=runner.session_id, turn_id=turn["id"],
                 response_id=response_id)
        return True
    log.info("agent_turn_ended_from_stored_step", session_id=runner.session_id, turn_id=turn["id"],
             response_id=response_id, status=stored["status"])
    if stored["status"] == "completed":
        await runner._end(entry, "completed", None, usage)
    else:
        reason = (stored.get("incomplete_details") or {}).get("reason")
        code = "max_output_tokens" if reason == "max_output_tokens" else "context_length_exceeded"
        await runner._end(entry, "failed", {"code": code, "message": f"The turn ended incomplete: {reason}."}, usage)
    return True


def _open(entry: QueuedTurn, item: dict[str, Any], done: dict[str, Any] | None) -> None:
    """A call of the step's output the turn waits on, as the turn's response follower opens it (turns.py)."""
    if done is not None and done.get("type") == "function_call":
        entry.calls.opened(done)
    elif done is not None and CLIENT_CALL in done:  # a command the client runs (self_hosted)
        entry.calls.opened({**done.pop(CLIENT_CALL), "command_item": done})
    elif item.get("type") == "mcp_approval_request":
        entry.calls.asked({**item, "turn_id": entry.turn["id"]})


def _answered(entry: QueuedTurn, answers: list[dict[str, Any]]) -> None:
    """The client's results and decisions the stopped process had stored for these calls before its wait began
    (the client may answer a call as soon as it is shown): kept, their calls no longer waited on."""
    calls, keep = entry.calls, False
    for answer in answers:
        call_id, request_id = answer.get("call_id"), answer.get("approval_request_id")
        if call_id is not None or request_id is not None:
            keep = calls.open.pop(str(call_id), None) is not None if call_id is not None else \
                calls.approvals.pop(str(request_id), None) is not None
        if keep:  # (a refusal's note, which has neither id, goes with the decision before it)
            calls.answers.append(answer)


async def _ended_in_log(runner: TurnRunner, response_id: str) -> dict[str, Any] | None:
    """The response as its stored log's terminal event holds it, when that event is the model's own end: a run's
    terminal event is made durable before its end is stored (services/responses/background_run.py), so a kill between
    the two leaves it ``in_progress`` (or failed by the next start's sweep, "its stream had already ended")."""
    rows = await runner.background.events.after(response_id, -1, tenant=runner.tenant)
    last = rows[-1][1] if rows else b""
    if not last.startswith((b"event: response.completed\n", b"event: response.incomplete\n")):
        return None
    response = orjson.loads(last[last.index(b"\ndata: ") + 7:]).get("response")
    return response if isinstance(response, dict) and response.get("status") in ENDED_STEP else None


async def _told_items(runner: TurnRunner, turn_id: str) -> tuple[set[str], set[str]]:
    """The turn's items stored (told done), and the ids its log told added."""
    kept: set[str] = set()
    after = None
    while True:
        page = await runner.store.page("item", tenant=runner.tenant, parent=runner.session_id, scope=turn_id,
                                       after=after, limit=100, order="asc")
        kept.update(str(item.get("id")) for item in page.data)
        if not page.has_more or not page.data:
            break
        after = page.data[-1]["id"]
    await runner.events.flush()
    added: set[str] = set()
    position = -1
    while True:
        rows = await runner.store.events_after(runner.session_id, position, tenant=runner.tenant)
        for _, _, frame in rows:
            if b"event: agent.session.turn.item.added\n" in frame and turn_id.encode() in frame:
                event = orjson.loads(frame[frame.index(b"\ndata: ") + 7:])
                if event.get("turn_id") == turn_id:
                    added.add(str((event.get("item") or {}).get("id")))
        if not rows:
            break
        position = rows[-1][0]
    return kept, added
