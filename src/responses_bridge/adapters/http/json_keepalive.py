"""A non-streamed answer that takes long is kept alive: its 200 goes out early, then whitespace until its JSON.

A client that asks for one JSON body (``stream`` false) gets nothing until the run ends, and a tool loop may run
for many minutes (a small model calling the code interpreter turn after turn). Every proxy on the way has an
idle timeout (Envoy's ``stream_idle_timeout``, a load balancer's), which cuts such a quiet request although the
bridge is working on it; the client then gets the proxy's 504 and the run's work is thrown away.

So once the run has been working for ``json_keepalive_seconds`` (at most half of ``envoy_stream_idle_timeout``),
the door commits: it sends the status (200) and the headers, tells the run (``Run.commit``: from now on a failure
ends as a ``failed`` Response, stored, since the status can no longer say it), and writes a newline every as many
seconds until the body. JSON allows any amount of whitespace before a value, so every JSON parser (the OpenAI
SDKs' among them) reads the body as if the newlines were not there. A run that ends sooner is answered as before,
with its own status; short requests never see the difference.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable

import structlog
from aiohttp import web

from ...engine.wire import Reply
from ...run.runs import Run
from .observe import STARTED

log = structlog.get_logger("responses_bridge.http")

WHITESPACE = b"\n"
"""What keeps the answer alive: JSON whitespace, one byte."""
HEADERS = {"Cache-Control": "no-cache", "X-Accel-Buffering": "no"}  # proxies must pass the bytes on, not hold them


async def answer_kept_alive(request: web.Request, run: Run, work: Awaitable[Reply], every: float
                            ) -> tuple[Reply, web.StreamResponse | None]:
    """The run's reply (``work``: the driver), and the response it was committed to if the request took longer
    than ``every`` seconds (None: answer it as usual). The first wait is shorter by the time the request has
    already taken (its body, the run's set-up): the proxy's idle clock started when the request did. Cancelling
    this (the client went away) cancels ``work`` and waits for it to unwind, so that whatever records the
    abandoned run runs after the run has stopped."""
    task = asyncio.ensure_future(work)
    stream: web.StreamResponse | None = None
    wait = max(0.0, every - (time.perf_counter() - request[STARTED]))
    try:
        while True:
            done, _ = await asyncio.wait((task,), timeout=wait)
            wait = every
            if done:
                return task.result(), stream
            if stream is None:
                run.commit()  # before the status goes out: a failure from here on is a failed Response
                stream = web.StreamResponse(status=200, headers=HEADERS)
                stream.content_type = "application/json"
                await stream.prepare(request)
                log.info("json_keepalive_committed", response_id=run.response_id,
                         after_seconds=round(time.perf_counter() - request[STARTED], 3))
            await stream.write(WHITESPACE)
    finally:
        if not task.done():
            task.cancel()
            await asyncio.wait((task,))
