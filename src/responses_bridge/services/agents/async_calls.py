"""The calls of an agent's functions marked ``async: true`` ("the agent continues without waiting for the function
result", the SDK's ``PersistedAgentTool``): the call is shown as any function call (a ``function_call`` item, which
the SDK's tool dispatcher runs), but the turn does not wait for it — no required action, the session never
``requires_action`` for it. The model is told at once that the call runs on its own (:data:`STARTED`, the call's
output in the turn's next response) and goes on.

The client's ``agent.session.input.tool_result`` for such a call is taken whenever it comes, while its turn runs or
after it ended: the call's item is done, a ``function_call_output`` item is added (both of the call's turn), and the
result waits in the session's stored state until the session's next model call (the running turn's next response,
or the next turn), where the model reads it as a developer message (its own ``function_call_output`` was the
:data:`STARTED` note, so the result cannot be a second output of the same call). The open calls and the waiting
results are the session's, in its stored record (``_private``), so they outlive the turn, the runner and a restart,
and they are bounded: :data:`MAX_ASYNC_CALLS` open at once."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from ... import ids
from ...protocol.agents.events import call_output_item, result_text
from ...protocol.errors import APIError

if TYPE_CHECKING:
    from .runner_view import TurnRunner
    from .turn_queue import QueuedTurn

OPEN = "async_calls"  # session["_private"][OPEN]: call id -> the function_call item, no result yet
RESULTS = "async_results"  # session["_private"][RESULTS]: developer messages for the next model call
MAX_ASYNC_CALLS = 128
MAX_RESULT_CHARS = 100_000  # of one result as the model reads it; a longer one is cut, saying so

STARTED = ("The function '{name}' runs asynchronously: the agent does not wait for it. Its result will be given "
           "in a later message once the client has it; go on without it.")


def async_functions(session: dict[str, Any]) -> frozenset[str]:
    """The names of the session's agent's functions the turn does not wait for."""
    return frozenset(tool["name"] for tool in session["agent"]["tools"]
                     if tool["type"] == "function" and tool.get("async"))


def open_call(session: dict[str, Any], call: dict[str, Any]) -> None:
    """Keep ``call`` open in the session's state (stored by the caller); over the bound, a 500 as for the
    calls a turn waits on."""
    calls = session.setdefault("_private", {}).setdefault(OPEN, {})
    if len(calls) >= MAX_ASYNC_CALLS:
        raise APIError(500, f"The model left more than {MAX_ASYNC_CALLS} asynchronous calls without a result.",
                       type="server_error", code="server_error")
    calls[str(call["call_id"])] = {key: call[key] for key in ("id", "type", "call_id", "name", "arguments",
                                                              "turn_id")}


def pending_call(session: dict[str, Any], call_id: str, turn_id: str) -> dict[str, Any] | None:
    call = ((session.get("_private") or {}).get(OPEN) or {}).get(call_id)
    return call if call is not None and call["turn_id"] == turn_id else None


def answer_call(session: dict[str, Any], call: dict[str, Any], result: dict[str, Any]) -> None:
    """The client's result for an open asynchronous call: the call is closed, and the model will read the result
    (:func:`take_results`)."""
    private = session.setdefault("_private", {})
    private.get(OPEN, {}).pop(str(call["call_id"]), None)
    if result["success"]:
        told = result_text(result.get("output"))
        if len(told) > MAX_RESULT_CHARS:
            told = told[:MAX_RESULT_CHARS] + f" … (cut at {MAX_RESULT_CHARS} characters)"
        note = f"The asynchronous call {call['call_id']} of function '{call['name']}' returned: {told}"
    else:
        note = (f"The asynchronous call {call['call_id']} of function '{call['name']}' failed: "
                f"{result.get('error') or 'no reason given'}")
    results = private.setdefault(RESULTS, [])
    results.append({"type": "message", "role": "developer", "content": [{"type": "input_text", "text": note}]})
    del results[:-MAX_ASYNC_CALLS]  # the latest results, if a client answers faster than the session runs


def take_results(session: dict[str, Any]) -> list[dict[str, Any]]:
    """The results that came since the session's last model call (removed from its state: the caller stores it)."""
    return (session.get("_private") or {}).pop(RESULTS, None) or []


def has_results(session: dict[str, Any]) -> bool:
    return bool((session.get("_private") or {}).get(RESULTS))


async def started(runner: TurnRunner, entry: QueuedTurn, call: dict[str, Any], said: dict[str, Any] | None) -> None:
    """A call of an ``async`` function in the running turn's response: shown (stored with the session's state that
    keeps it open), and the model told at once that it runs on its own (the turn's next response hears it)."""
    async with runner._changing() as session:
        open_call(session, call)
        entry.calls.made(str(call["call_id"]), STARTED.format(name=call["name"]))
        records = [runner.item_record(call), runner.session_record(session)]
        if said is not None:
            await runner.events.emit(said, records=records)
        else:
            await runner.events.flush(records)


async def async_result(runner: TurnRunner, result: dict[str, Any], session: dict[str, Any] | None) -> bool:
    """A client's result for an open ``async`` call of any of the session's turns (the caller holds the session's
    lock; ``session``: the caller's copy of it, changed here and stored, so the caller's later writes keep the
    change): the call's item done, its ``function_call_output`` added, the result kept for the session's next
    model call. False: no such call is open."""
    if session is None:
        session = await runner.session()
    call = pending_call(session, result["call_id"], result["turn_id"])
    if call is None:
        return False
    answer_call(session, call, result)
    item = call_output_item(ids.new_id("fco"), call, result)
    done = dict(call, status="completed" if result["success"] else "failed")
    await runner.events.emit({"type": "agent.session.turn.item.done", "session_id": runner.session_id,
                              "turn_id": call["turn_id"], "output_index": 0, "item": done})
    await runner.events.emit({"type": "agent.session.turn.item.added", "session_id": runner.session_id,
                              "turn_id": call["turn_id"], "output_index": None, "item": item},
                             records=[runner.item_record(done), runner.item_record(item),
                                      runner.session_record(session)])
    return True


async def async_results(runner: TurnRunner, session: dict[str, Any]) -> list[dict[str, Any]]:
    """The results of ``async`` calls that came since the session's last model call, taken from its stored state
    (``session``: as last read, so a session that never had one costs no read)."""
    if not has_results(session) and not async_functions(session):
        return []
    async with runner._changing() as stored:
        results = take_results(stored)
        if results:
            await runner.save_session(stored)
    return results
