"""Work the bridge takes back: the request's task is cancelled with a reason, and whoever catches the cancellation
(the turn loop, run/drive.py; the HTTP door's limits, adapters/http/limits.py; the ext_proc stream,
adapters/extproc/servicer.py) asks :func:`absorb_preemption` whether it was this, to answer a retryable 503 /
``response.failed`` ``preempted_for_fairness`` rather than treat it as a client gone away. Used by the memory backstop
(services/tenancy/memory_watch.py) and the egress proxy's connections (share.py: ``make_room``); the shared
pools never end a request's work for its share of the queue (share.py)."""

from __future__ import annotations

import asyncio
import weakref
from typing import Any

from ..protocol.errors import APIError

PREEMPTED = "preempted_for_fairness"
"""The error code of work the bridge took back (fairness, or the memory backstop: services/tenancy/memory_watch.py)."""


_TAKEN_BACK: weakref.WeakKeyDictionary[asyncio.Task[Any], str] = weakref.WeakKeyDictionary()


def current_task() -> asyncio.Task[Any] | None:
    """The running task, or None outside one (nothing to take back then)."""
    try:
        return asyncio.current_task()
    except RuntimeError:
        return None


def take_back_task(task: asyncio.Task[Any] | None, why: str) -> bool:
    """End the work of ``task`` because the bridge takes back what it holds (``why``: which pool, said in the
    error): it is cancelled, and whoever catches the cancellation asks :func:`absorb_preemption` whether it was
    this, to answer ``preempted_for_fairness`` rather than treat it as a client gone away. False: nothing to end."""
    if task is None or task.done() or task in _TAKEN_BACK:
        return False
    _TAKEN_BACK[task] = why
    task.cancel(PREEMPTED)
    return True


def was_taken_back(task: asyncio.Task[Any] | None) -> bool:
    return task is not None and task in _TAKEN_BACK


def absorb_preemption() -> str | None:
    """In an ``except CancelledError`` of the current task: if the cancellation was the bridge taking its work back
    (and nothing else cancelled it too), undo it and return why (the pool); else None (re-raise)."""
    task = asyncio.current_task()
    why = _TAKEN_BACK.pop(task, None) if task is not None else None  # answered once: the task may hold again
    if why is None or task is None:
        return None
    if task.cancelling() and task.uncancel() > 0:
        return None  # cancelled for another reason as well (the client went away): that wins
    return why


def preempted_error(why: str) -> APIError:
    """The answer of work taken back: a retryable 503 (``Retry-After`` where an HTTP answer is still to give)."""
    return APIError(503, f"This request was ended to give {why} back: the process's real memory passed its high "
                    "watermark, and the bridge ends requests in flight until it is back under it; retry shortly.",
                    type="server_error", code=PREEMPTED)
