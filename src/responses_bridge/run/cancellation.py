"""Keeping a cancellation a cancellation across client libraries that report it as an error of their own."""

from __future__ import annotations

import asyncio


def raise_if_cancelled() -> None:
    """Raise ``CancelledError`` when the current task is being cancelled.

    A client library may turn the cancellation of a call into an error of its own (the MCP client reports a stream
    closed under it as a broken resource). Checked after such an error, this keeps a cancelled tool call from
    becoming a failed item, and a sequential turn from going on to its next call.
    """
    task = asyncio.current_task()
    if task is not None and task.cancelling():
        raise asyncio.CancelledError
