"""Keeping a cancellation a cancellation across client libraries that report it as an error of their own; and, at
the end of a run that an exception ended (a cancellation most often), letting go of the frames it unwound through.

An exception's traceback holds every frame it passed through, and each frame its locals: the run, its translator,
its output builder, the tool calls' items. When one of those frames also holds the exception (a context manager's
``__aexit__`` has it as ``exc_val``; the MCP client's cancel scopes keep it in closures), exception, traceback and
frames are a cycle, and everything the frames held stays in memory until a full collection of the cyclic collector,
which an idle server never runs: a client that went away during an MCP call kept its whole response that way.

:func:`let_go_of_unwound_frames`, called while the exception is handled at the end of the run, clears the locals of
the frames it unwound through (``traceback.clear_frames``: a frame still executing — the handler's own and those
around it — is left as it is), and of those of its cause and context, so the cycle is cut and the response is freed
by reference counts. The traceback keeps its lines for a log; only the locals go.
"""

from __future__ import annotations

import asyncio
import sys
import traceback


def raise_if_cancelled() -> None:
    """Raise ``CancelledError`` when the current task is being cancelled.

    A client library may turn the cancellation of a call into an error of its own (the MCP client reports a stream
    closed under it as a broken resource). Checked after such an error, this keeps a cancelled tool call from
    becoming a failed item, and a sequential turn from going on to its next call.
    """
    task = asyncio.current_task()
    if task is not None and task.cancelling():
        raise asyncio.CancelledError


def let_go_of_unwound_frames() -> None:
    """The exception being handled (none: nothing to do), its cause and its context: the locals of the finished
    frames their tracebacks hold, cleared."""
    pending = [sys.exc_info()[1]]
    seen: set[int] = set()
    while pending:
        error = pending.pop()
        if error is None or id(error) in seen:
            continue
        seen.add(id(error))
        if error.__traceback__ is not None:
            traceback.clear_frames(error.__traceback__)
        pending += (error.__cause__, error.__context__)
