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
    already taken (its body, the run's set-up): the proxy's idle clock started when the request did.

    ``work`` is awaited in this task, under a timer; the task that commits and writes the whitespace (:class:`_Keeper`)
    starts only when the first wait is over. A request that ends sooner (nearly every one) pays for one timer, not
    for a task of its own and a wait on it. Cancelling this (the client went away) cancels ``work`` where it is, so
    whatever records the abandoned run runs after the run has stopped; a write of the keeper that fails cancels
    ``work`` too, and its error is raised in its place — but for a ``ConnectionError`` (a reset, aiohttp's
    ``Cannot write to closing transport``): that is the client gone, not a server error, so the cancellation goes
    on as for a disconnect (the route records the abandoned run; aiohttp drops the connection, nothing logged as
    an error, no 500 tried on a closed socket)."""
    keeper = _Keeper(request, run, every)
    first = max(0.0, every - (time.perf_counter() - request[STARTED]))
    timer = asyncio.get_running_loop().call_later(first, keeper.start)
    try:
        reply = await work
    except asyncio.CancelledError:
        if keeper.failure is not None and not isinstance(keeper.failure, ConnectionError):
            raise keeper.failure from None
        raise
    finally:
        timer.cancel()
        await keeper.stop()
    return reply, keeper.stream


class _Keeper:
    """The whitespace writer of a run that outlasted the first wait: commits the run, sends the status and the
    headers, then a newline every ``every`` seconds until :meth:`stop` (which lets a write under way finish)."""

    def __init__(self, request: web.Request, run: Run, every: float) -> None:
        self.request, self.run, self.every = request, run, every
        self.waiting = asyncio.current_task()  # the request's task, awaiting the run
        self.stream: web.StreamResponse | None = None  # once prepared
        self.failure: Exception | None = None
        self._task: asyncio.Task[None] | None = None
        self._stopping = False
        self._sleeping = False

    def start(self) -> None:
        self._task = asyncio.get_running_loop().create_task(self._keep())

    async def stop(self) -> None:
        # the task let go of: ended by a cancellation, its traceback holds this keeper (its frame's ``self``), which
        # held it — a cycle that kept the whole run (``self.run``) until a full collection of the cyclic collector
        task, self._task = self._task, None
        if task is None or task.done():
            return
        self._stopping = True
        if self._sleeping:
            task.cancel()
        await asyncio.wait((task,))

    async def _keep(self) -> None:
        try:
            self.run.commit()  # before the status goes out: a failure from here on is a failed Response
            stream = web.StreamResponse(status=200, headers=HEADERS)
            stream.content_type = "application/json"
            await stream.prepare(self.request)
            self.stream = stream
            log.info("json_keepalive_committed", response_id=self.run.response_id,
                     after_seconds=round(time.perf_counter() - self.request[STARTED], 3))
            while not self._stopping:
                await stream.write(WHITESPACE)
                if self._stopping:
                    return
                self._sleeping = True
                await asyncio.sleep(self.every)
                self._sleeping = False
        except Exception as error:  # noqa: BLE001 - the write failed: the run is cancelled, this raised for it
            self.failure = error  # a ConnectionError (the client went away) stays a cancellation
            if isinstance(error, ConnectionError):
                log.info("json_keepalive_client_gone", response_id=self.run.response_id, error=type(error).__name__)
            if self.waiting is not None:
                self.waiting.cancel()
