"""Finishing a background run whose stream had ended when its process stopped.

A run makes its terminal event durable (``response.completed``, ``.incomplete``, ``.failed``, ``.cancelled``)
before it stores the response's end (background_run.py ``_before_persist``): a reader that saw the
end can always replay it. A ``kill -9`` (or a lost replica) between the two writes leaves the row
``queued``/``in_progress`` with a complete stream. The run had finished: nothing is made again and nothing is failed.
The process that takes it over (the restarted one, or another replica's sweep, which claimed it once) stores the end the
log holds, as the run itself would have: the response from the terminal event, in that status, with its output items,
its input items as stored when it was accepted, and, for a ``completed``/``incomplete`` turn of a conversation, its
items appended to that conversation, all in the one fenced save (``ResponseStore.save_response``). The row being
still unfinished is what says the conversation had not got them yet: they join it in the same transaction that
ends the row, so exactly once. Found by scripts/crash-probe (issue #64): late kills failed such runs ("its stream
had already ended") though their stored streams said ``completed``.
"""

from __future__ import annotations

from typing import Any

import orjson
import structlog

from ...store.base import ResponseStore
from .background_frames import _TERMINAL, is_terminal_frame

log = structlog.get_logger("responses_bridge.background")

JOINS_CONVERSATION = ("completed", "incomplete")
"""The ends that append a turn to its conversation (run/response_run.py ``finished_turn``)."""

INPUT_PAGE = 100


def logged_end(rows: list[tuple[int, bytes]], response_id: str) -> dict[str, Any] | None:
    """The response the stored stream ends with, when its last event is a terminal one for this response (rows
    below 0 are the run's own records, not its stream); None when the stream has not ended."""
    frames = [frame for sequence, frame in rows if sequence >= 0]
    if not frames or not is_terminal_frame(frames[-1]):
        return None
    last = frames[-1]
    try:
        event = orjson.loads(last[last.index(b"\ndata: ") + 7:])
    except (ValueError, orjson.JSONDecodeError):
        return None
    response = event.get("response")
    if not isinstance(response, dict) or response.get("id") != response_id:
        return None
    status = response.get("status")
    if status not in _TERMINAL or event.get("type") != f"response.{status}":
        return None
    return response


async def stored_inputs(store: ResponseStore, response_id: str, *, tenant: str) -> list[dict[str, Any]]:
    """The response's input items as stored when it was accepted (the end's save replaces the item rows)."""
    items: list[dict[str, Any]] = []
    cursors: set[str] = set()
    after: str | None = None
    while True:
        page = await store.list_input_items(response_id, tenant=tenant, after=after, limit=INPUT_PAGE, order="asc")
        if page is None:
            return items
        items.extend(page.data)
        if not page.has_more:
            return items
        if page.last_id is None or page.last_id in cursors:  # ids the cursor cannot walk past: not guessed at
            raise ValueError("the stored input items cannot be read back in order")
        after = page.last_id
        cursors.add(after)


async def finish_from_log(store: ResponseStore, response: dict[str, Any], *, tenant: str,
                          fence: dict[str, str]) -> None:
    """Store ``response`` (the stream's terminal event's) as the run's end: fenced by the lease the taker holds,
    so a second taker (or the owner come back) cannot store it again (:class:`LeaseLost`)."""
    response_id = str(response["id"])
    inputs = await stored_inputs(store, response_id, tenant=tenant)
    conversation = response.get("conversation")
    conversation_id = (str(conversation["id"]) if isinstance(conversation, dict) and conversation.get("id")
                       and response.get("status") in JOINS_CONVERSATION else None)
    extra: dict[str, Any] = {} if conversation_id is None else {"conversation_id": conversation_id}
    await store.save_response(response, inputs, tenant=tenant, **extra, **fence)
    log.info("background_finished_from_log", response_id=response_id, status=response.get("status"))
