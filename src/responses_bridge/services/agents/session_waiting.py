"""A session's turn waiting on the client outlives the process it waited in.

A turn whose response left calls for the client — its functions' calls, a ``self_hosted`` session's shell
commands, MCP calls held for the client's approval — waits (``waiting``, the session ``requires_action``) until
every result and decision came, then hands them to its next response. What it waits on is kept in the turn's
record (under ``_private``, which no reader is shown) from the write that makes it wait, and kept current by the
write that stores each answer: the calls still open, the approvals not yet decided, the answers so far (the next
response's input) and the turn's usage so far. A process that stops (``kill -9``, a drain, a lost replica) loses
nothing of it: the process that resumes the session (session_resume.py) gives the runner the same turn,
still ``waiting`` with the same pending calls, without telling ``requires_action`` again (the client was told, and
may be running the calls); the client's later results and decisions complete the turn, once.

When the last answer came, the turn's next step input (the answers) is stored in the same write that ends the
wait (``step_input``, as session_resume.py ``record_step`` keeps it), so a stop after it resumes that step rather
than finding a step response that ended with calls nobody waits for. So are the answers of the calls the session
made itself, without a wait (a computer call on its desktop, the ``automations`` tool): stored with the step's
end, a drain after them resumes the next step elsewhere.

The client's answers themselves (``tool_result`` and approval events, turns.py's ``SessionRunner.tool_result`` and
``approval``) are taken here as well (:func:`answer_call`, :func:`decide`): each lands in what the turn waits on.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from ... import ids
from ...protocol.agents.computer_approvals import ORIGIN, check_against, result_item
from ...protocol.agents.events import call_output_item, result_text
from .async_calls import async_result
from .tool_calls import ToolCalls, unknown_approval, unknown_call
from .turn_queue import STEP_INPUT, STEP_RESPONSE, WAITING, HandOff, QueuedTurn, private, public

if TYPE_CHECKING:
    from .runner_view import TurnRunner


def keep_wait(entry: QueuedTurn, usage: dict[str, Any] | None = None) -> None:
    """The turn's record holds what it waits on now (stored by the caller's next write of the record);
    ``usage``: the turn's usage so far, given when the wait begins (kept as it was otherwise)."""
    calls = entry.calls
    kept = private(entry.turn)
    before = kept.get(WAITING) or {}
    kept[WAITING] = {"open": list(calls.open.values()), "approvals": list(calls.approvals.values()),
                     "answers": list(calls.answers), "decided": list(calls.decided),  # never ``calls.secrets``
                     "usage": usage if usage is not None else before.get("usage")}


def restored(turn: dict[str, Any]) -> QueuedTurn | None:
    """The waiting turn as the stopped process held it; None when its record keeps no wait (it fails, as before)."""
    kept = private(turn).get(WAITING)
    if not isinstance(kept, dict):
        return None
    calls = ToolCalls()
    calls.open = {str(call["call_id"]): call for call in kept.get("open") or []}
    calls.approvals = {str(request["id"]): request for request in kept.get("approvals") or []}
    calls.answers = list(kept.get("answers") or [])
    calls.decided = list(kept.get("decided") or [])  # a sign-in's values were not kept: computer/approvals.py
    entry = QueuedTurn(turn, [], None, calls=calls)
    entry.waiting = True
    return entry


def kept_usage(turn: dict[str, Any]) -> dict[str, Any] | None:
    return (private(turn).get(WAITING) or {}).get("usage")


def forget_wait(turn: dict[str, Any]) -> None:
    (turn.get("_private") or {}).pop(WAITING, None)


def waiting_entry(runner: TurnRunner) -> QueuedTurn | None:
    """The turn answers go to: the running one, or a resumed waiting turn its task has not picked up yet."""
    if runner.current is not None:
        return runner.current
    first = runner.queue[0] if runner.queue else None
    return first if first is not None and first.waiting else None


async def wait_for_results(runner: TurnRunner, entry: QueuedTurn, total: dict[str, Any] | None) -> \
        list[dict[str, Any]] | None:
    """The turn's response left calls of the client's functions, or MCP calls held for its approval: the
    session requires action until every result and decision came (they may have come already). They are the
    next response's input; None: cancelled. (The ``automations`` tool's calls were made already.) A resumed
    waiting turn (``entry.waiting``) waits on without telling ``requires_action`` again."""
    calls = entry.calls
    if (calls.waiting or entry.waiting) and not runner.cancelling:  # resumed: the session says requires_action
        if not entry.waiting:
            entry.turn["status"] = "waiting"
            keep_wait(entry, total)
            async with runner._changing(entry) as session:
                session["status"], session["required_actions"] = "requires_action", calls.required_actions()
                await runner.events.emit({"type": "agent.session.requires_action", "session": public(session)},
                                         records=[runner.turn_record(entry.turn), runner.session_record(session)])
        while calls.waiting and not runner.cancelling:
            if runner.computer is not None and calls.ready():  # the desktop's approvals, done on the desktop
                await runner.computer.resolve(runner, entry)
                continue
            if runner.handing_off:  # a drain: the wait is kept in the turn's record, another process waits on
                raise HandOff
            await calls.wait()
        entry.turn["status"] = "in_progress" if not runner.cancelling else "waiting"
        answers = None if runner.cancelling else calls.take_answers()
        forget_wait(entry.turn)
        if answers is not None:  # the next step's input, kept with the wait's end (session_resume.py resumes it)
            private(entry.turn).update({STEP_INPUT: answers, STEP_RESPONSE: None})
        async with runner._changing() as session:
            session["status"], session["required_actions"] = "in_progress", []
            await runner.events.emit({"type": "agent.session.in_progress", "session": public(session)},
                                     records=[runner.turn_record(entry.turn), runner.session_record(session)])
        entry.waiting = False
        return answers
    entry.waiting = False
    made = None if runner.cancelling else calls.take_answers()
    if made:  # the calls the session made itself (computer use, automations): the next step's input, kept with
        private(entry.turn).update({STEP_INPUT: made, STEP_RESPONSE: None})  # the step's end, as a wait's is
    if entry.changes is not None:
        async with runner._changing(entry) as session:
            await runner.events.flush([runner.turn_record(entry.turn), runner.session_record(session)])
    return made


async def answer_call(runner: TurnRunner, result: dict[str, Any], session: dict[str, Any] | None = None) -> None:
    """A client's result for an open call of the running turn, or for an ``async`` call (changing ``session``, the
    caller's copy); a 400 for any other call."""
    entry = waiting_entry(runner)
    call = entry.calls.open.get(result["call_id"]) if entry is not None else None
    if entry is None or call is None or call["turn_id"] != result["turn_id"]:
        if await async_result(runner, result, session):
            return
        raise unknown_call(result["call_id"])
    entry.trace.call_answered(result["call_id"], bool(result["success"]))
    entry.calls.answer(result)
    keep_wait(entry)  # the answer is stored with the event that shows it: a restart keeps it
    if "command_item" in call:  # a command the client ran: its command_execution item is done
        ran = dict(call["command_item"], status="completed" if result["success"] else "failed",
                   output=result_text(result.get("output")) or result.get("error"))
        await runner.events.emit({"type": "agent.session.turn.item.done", "session_id": runner.session_id,
                                  "turn_id": call["turn_id"], "output_index": 0, "item": ran},
                                 records=[runner.item_record(ran), runner.turn_record(entry.turn)])
        return
    item = call_output_item(ids.new_id("fco"), call, result)
    done = dict(call, status="completed" if result["success"] else "failed")
    await runner.events.emit({"type": "agent.session.turn.item.done", "session_id": runner.session_id,
                              "turn_id": call["turn_id"], "output_index": 0, "item": done})
    await runner.events.emit({"type": "agent.session.turn.item.added", "session_id": runner.session_id,
                              "turn_id": call["turn_id"], "output_index": None, "item": item},
                             records=[runner.item_record(done), runner.item_record(item),
                                      runner.turn_record(entry.turn)])


async def decide(runner: TurnRunner, result: dict[str, Any]) -> None:
    """The client's decision on an MCP call the running turn holds (a 400 for any other request id)."""
    entry = waiting_entry(runner)
    if entry is None:
        raise unknown_approval(result["request_id"])
    entry.calls.decide(result["request_id"], result["decision"])
    keep_wait(entry)  # stored before the decision is acknowledged: a restart keeps it
    await runner.events.flush([runner.turn_record(entry.turn)])


async def decide_computer(runner: TurnRunner, answer: dict[str, Any]) -> None:
    """The client's answer to a desktop's approval request the running turn holds (a 400 naming the field for one
    it does not hold, or one that does not fit it): stored without its values (a sign-in's with the session's
    ``computer_use_approval_request_result`` item) before it is acknowledged; the turn's task does it on the
    desktop (computer/approvals.py)."""
    entry = waiting_entry(runner)
    if entry is None:
        raise unknown_approval(answer["request_id"], "computer use approval request")
    request = entry.calls.computer_request(answer["request_id"])
    check_against(request, answer)
    entry.calls.decide_computer(answer["request_id"], answer)
    keep_wait(entry)
    if answer["type"] == ORIGIN:  # the SDK's session items record a sign-in's answer only
        await runner.events.flush([runner.turn_record(entry.turn)])
        return
    item = result_item(ids.new_id("cuar"), request, answer)
    await runner.events.emit({"type": "agent.session.turn.item.added", "session_id": runner.session_id,
                              "turn_id": request["turn_id"], "output_index": None, "item": item},
                             records=[runner.item_record(item), runner.turn_record(entry.turn)])
