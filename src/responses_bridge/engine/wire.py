"""What the translator hands a door: the upstream call to make, and the client's reply with its framing.

These are plain values (bytes and a few fields), so a door can deliver them over aiohttp, gRPC or a WebSocket
without knowing anything about the translation that made them.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Literal

import orjson

SSE_CONTENT_TYPE = "text/event-stream; charset=utf-8"
JSON_CONTENT_TYPE = "application/json"
EVENTS_JSON_CONTENT_TYPE = "application/x-ndjson"
"""Events framed as JSON lines (one event object per line, no SSE framing, no ``[DONE]``): WebSocket mode."""

Framing = Literal["sse", "json"]
"""How events are framed for the client: SSE (``event:``/``data:`` lines, then ``[DONE]``), or JSON lines."""

UPSTREAM_PATH = "chat/completions"


def encode_json_event(event: dict[str, Any]) -> bytes:
    """One event as one JSON line (orjson never writes a raw newline inside a document; it adds the line's end
    itself, so the event is never copied again)."""
    return orjson.dumps(event, option=orjson.OPT_APPEND_NEWLINE)


@dataclass(frozen=True, slots=True)
class UpstreamRequest:
    """The Chat Completions call to make, relative to the upstream base URL (which ends in ``/v1``)."""

    path: str
    body: bytes
    stream: bool


@dataclass(frozen=True, slots=True)
class Reply:
    """The end of a response. When ``continues_stream`` is true the client's SSE stream is already open
    (status and content type were sent with the head) and ``body`` is its remaining bytes."""

    status: int
    content_type: str
    body: bytes
    continues_stream: bool = False
