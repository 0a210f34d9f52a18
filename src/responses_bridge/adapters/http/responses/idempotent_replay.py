"""What a retry with an ``Idempotency-Key`` already answered gets (services/responses/idempotency.py): the first
request's stored Response, and nothing runs.

* Not streamed: the Response, as ``GET /v1/responses/{id}`` returns it (status 200, ``Idempotent-Replayed: true``).
* Streamed, a background response: its kept events, replayed from the start, then live ones while it still runs (as
  ``GET /v1/responses/{id}?stream=true``).
* Streamed, any other: its events were never kept, so the stream is the one terminal event that carries the whole
  Response (``response.completed``, ``response.incomplete`` or ``response.failed``, sequence number 0), then
  ``[DONE]``: the SDKs' stream iterators read it as they read the last event of a live stream.
* The Response was not stored (``store: false``, deleted, purged): 400 ``idempotency_key_used``; the request is not
  run again (it may have had effects), and a new key runs it again.
"""

from __future__ import annotations

from typing import Any

import orjson
from aiohttp import web

from ....engine.event_frames import CANCELLED_EVENT
from ....engine.sse import DONE_FRAME, encode_event
from ....protocol.errors import APIError
from ....protocol.responses.request import parse_json_object
from ....runtime import Runtime
from ....services.responses.idempotency import Answered, not_kept
from . import background_routes

REPLAYED_HEADER = "Idempotent-Replayed"
SSE_HEADERS = {"Cache-Control": "no-cache", "X-Accel-Buffering": "no", REPLAYED_HEADER: "true"}
TERMINAL_EVENTS = {"completed": "response.completed", "incomplete": "response.incomplete", "failed": "response.failed",
                   "cancelled": CANCELLED_EVENT}


async def replay(request: web.Request, runtime: Runtime, answered: Answered, body: bytes, *,
                 tenant: str) -> web.StreamResponse:
    """The answer to a retry of ``answered``'s request (``body``: the retry's, the same bytes as the first's)."""
    response = await runtime.store.get_response(answered.response_id, tenant=tenant)
    if response is None:
        raise not_kept(answered.response_id)
    if not _streamed(body):
        return web.Response(body=orjson.dumps(response), content_type="application/json",
                            headers={REPLAYED_HEADER: "true"})
    if response.get("background"):
        try:
            return await background_routes.stream_events(request, runtime, answered.response_id)
        except APIError:
            pass  # gone meanwhile: its Response as one event
    return await _terminal_stream(request, response)


def _streamed(body: bytes) -> bool:
    try:
        return parse_json_object(body).get("stream") is True
    except APIError:
        return False


async def _terminal_stream(request: web.Request, response: dict[str, Any]) -> web.StreamResponse:
    kind = TERMINAL_EVENTS.get(str(response.get("status")), "response.in_progress")
    stream = web.StreamResponse(status=200, headers=SSE_HEADERS)
    stream.content_type = "text/event-stream"
    stream.charset = "utf-8"
    await stream.prepare(request)
    await stream.write(encode_event({"type": kind, "sequence_number": 0, "response": response}))
    await stream.write(DONE_FRAME)
    await stream.write_eof()
    return stream
