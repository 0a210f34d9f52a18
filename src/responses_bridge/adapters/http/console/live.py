"""A running response followed from the console: its output's text as it streams, as server-sent events to the
page's script (static/console.js), which adds each piece to the page and reloads it once the response ended.

The text comes from where ``GET /v1/responses/{id}?stream=true`` takes it (the background service's event log:
the run's frames in this process, or the stored log a replica writes), read as the viewer's tenant, so another
tenant's response is no stream at all. Only ``response.output_text.delta`` and ``response.refusal.delta`` pieces
are sent on, each masked as every text the console shows (redact.py), and a terminal event ends the stream with
``done``. A stream lasts at most :data:`LIVE_SECONDS`; the page then shows the response as stored (a reload follows
on).
"""

from __future__ import annotations

import asyncio
import contextlib
import time

import orjson
from aiohttp import web

from ....redact import mask_text
from ....services.responses.background import BackgroundService
from ....services.responses.background_frames import split_frames

LIVE_SECONDS = 600.0
DELTAS = (b"response.output_text.delta", b"response.refusal.delta")
ENDS = (b"response.completed", b"response.failed", b"response.incomplete", b"response.cancelled")


def pieces(frames: bytes) -> tuple[list[str], bool]:
    """The output text pieces of some SSE frames, and whether one of them ended the response."""
    texts: list[str] = []
    for frame in split_frames(frames):
        head, _, rest = frame.partition(b"\n")
        name = head.removeprefix(b"event: ").strip()
        if name in ENDS:
            return texts, True
        if name in DELTAS and rest.startswith(b"data: "):
            event = orjson.loads(rest[len(b"data: "):])
            delta = event.get("delta") if isinstance(event, dict) else None
            if isinstance(delta, str):
                texts.append(mask_text(delta))
    return texts, False


async def follow(request: web.Request, background: BackgroundService, response_id: str, tenant: str,
                 headers: dict[str, str]) -> web.StreamResponse:
    await background.check_streamable(response_id, tenant=tenant)  # unknown, another tenant's: the API's 404
    answer = web.StreamResponse(headers={**headers, "Content-Type": "text/event-stream", "Cache-Control": "no-store"})
    await answer.prepare(request)
    deadline = time.monotonic() + LIVE_SECONDS
    ended = False
    events = background.events_after(response_id, -1, tenant=tenant)
    try:  # a page closed (the viewer went elsewhere) ends the stream quietly
        while not ended:
            left = deadline - time.monotonic()
            if left <= 0:
                break
            try:
                frames = await asyncio.wait_for(anext(events), left)
            except (StopAsyncIteration, TimeoutError):
                break
            texts, ended = pieces(frames)
            if texts:
                await answer.write(b"".join(b"event: delta\ndata: " + orjson.dumps(text) + b"\n\n" for text in texts))
        await answer.write(b"event: done\ndata: {}\n\n")
    except ConnectionResetError:
        pass
    finally:
        with contextlib.suppress(Exception):
            await events.aclose()  # type: ignore[attr-defined]
    return answer
