"""The frames of a background run's event log: splitting the run's SSE bytes into single events, and the terminal
frames a run that was interrupted, cancelled or abandoned ends with.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from ...engine.event_frames import CANCELLED_EVENT
from ...engine.response_error import response_error
from ...engine.sse import DONE_FRAME, encode_event
from ...store.records import Closer

_TERMINAL = ("completed", "incomplete", "failed", "cancelled")  # cancelled: logs written before CANCELLED_EVENT


INTERRUPTED_CODE = "server_restarted"


INTERRUPTED_MESSAGE = ("The server restarted before this background response completed; it was not finished and "
                       "will not be resumed.")


ABANDONED_MESSAGE = ("The replica running this background response stopped before it completed; it was not finished "
                     "and will not be resumed.")


_TERMINAL_FRAMES = tuple(f"event: response.{status}\n".encode() for status in _TERMINAL)


def split_frames(data: bytes) -> list[bytes]:
    """SSE bytes from the response run into single event frames (``[DONE]`` dropped). Our frames are
    ``event: …\\ndata: <one-line JSON>\\n\\n``, so a blank line only ever ends a frame."""
    if not data:
        return []
    return [frame for frame in (part + b"\n\n" for part in data.split(b"\n\n") if part) if frame != DONE_FRAME]


def terminal_frame(event_type: str, response: dict) -> Callable[[int], bytes]:
    """The frame that ends a stored stream with ``response``, for the sequence number the event log assigns."""
    return lambda sequence_number: encode_event(
        {"type": event_type, "sequence_number": sequence_number, "response": response})


def _ended(response: dict[str, Any], status: str) -> dict[str, Any]:
    response["status"] = status
    response["completed_at"] = None
    for item in response.get("output") or ():
        if isinstance(item, dict) and item.get("status") == "in_progress":
            item["status"] = "incomplete"
    return response


def interrupted(message: str = INTERRUPTED_MESSAGE) -> Closer:
    """Ends a run that no process is running any more: ``failed``, ``server_error`` with ``server_restarted``
    leading its message (engine/response_error.py)."""

    def close(response: dict[str, Any]) -> tuple[dict[str, Any], Callable[[int], bytes]]:
        _ended(response, "failed")["error"] = response_error(INTERRUPTED_CODE, message)
        return response, terminal_frame("response.failed", response)

    return close


def cancelled(response: dict[str, Any]) -> tuple[dict[str, Any], Callable[[int], bytes]]:
    """Ends a run that no process is running any more, at its owner's request: ``cancelled``."""
    _ended(response, "cancelled")
    return response, terminal_frame(CANCELLED_EVENT, response)


def is_terminal_frame(frame: bytes) -> bool:
    return frame.startswith(_TERMINAL_FRAMES)
