"""Graceful shutdown of the HTTP door: refuse new work, let live streams finish, end the rest properly.

On SIGTERM/SIGINT ``serve`` sets ``runtime.draining``; from then on the door answers every new request with a
503 (``server_shutting_down``) except ``/health…`` and ``/metrics`` (load balancers and probes must still see
it), open WebSockets are closed once their running turn has ended, and :meth:`Drain.run` waits for the requests
already in flight. A stream still running at the deadline (``RESPONSES_BRIDGE_DRAIN_TIMEOUT``) is ended from
inside its own handler: its upstream read is interrupted (an ``asyncio.timeout`` scope the drain expires), the
run stores the response as failed and the client gets ``response.failed`` (code ``server_shutdown``) and
``[DONE]``, or in WebSocket mode the turn's ``response.failed`` and then a close frame. Interrupting the handler
rather than cancelling it keeps one code path for the terminal bytes: the run's own ``fail``.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from types import TracebackType

from aiohttp import web

from ...protocol.errors import shut_down_mid_response, shutting_down
from ...run.drive import ShutdownDeadline  # raised by deadline(), caught by the driver
from ...runtime import Runtime
from .errors import Handler, error_response

FINAL_WRITE_GRACE_SECONDS = 1.0
"""After the deadline: how long the interrupted handlers get to store their response and write its last bytes
before the server closes what is left."""


shutdown_error = shut_down_mid_response  # what a stream still running at the drain deadline ends with
shutting_down_error = shutting_down  # what a request arriving while the door drains gets


def _exempt(path: str) -> bool:
    """Probes and metrics keep answering while the door drains (readiness says 503 itself)."""
    return path == "/metrics" or path == "/health" or path.startswith("/health/")


class Drain:
    """The HTTP door's in-flight requests, the deadline scopes of its streams and its open WebSockets."""

    def __init__(self, runtime: Runtime) -> None:
        self.runtime = runtime
        self.in_flight = 0
        self._idle = asyncio.Event()
        self._idle.set()
        self._scopes: set[asyncio.Timeout] = set()
        self._expired = False
        self._on_drain: set[Callable[[], None]] = set()

    @web.middleware
    async def middleware(self, request: web.Request, handler: Handler) -> web.StreamResponse:
        if self.runtime.draining and not _exempt(request.path):
            response = error_response(shutting_down_error())
            response.force_close()  # a keep-alive client should reconnect, to an instance that is not stopping
            return response
        self.in_flight += 1
        self._idle.clear()
        try:
            return await handler(request)
        finally:
            self.in_flight -= 1
            if not self.in_flight:
                self._idle.set()

    def deadline(self) -> _Deadline:
        """Around a stream's upstream read: raises :class:`ShutdownDeadline` when the drain deadline passes."""
        return _Deadline(self)

    def on_drain(self, callback: Callable[[], None]) -> Callable[[], None]:
        """Call ``callback`` when the drain starts (a WebSocket closes itself after its turn); returns the
        function that unregisters it."""
        self._on_drain.add(callback)
        if self.runtime.draining:
            callback()
        return lambda: self._on_drain.discard(callback)

    async def run(self, timeout: float) -> None:
        """Refuse new work, wait up to ``timeout`` seconds for what is in flight, then interrupt the streams
        still running and give them :data:`FINAL_WRITE_GRACE_SECONDS` to write their terminal events."""
        self.runtime.draining = True
        for callback in list(self._on_drain):
            callback()
        if await self._until_idle(timeout):
            return
        self._expired = True
        now = asyncio.get_running_loop().time()
        for scope in list(self._scopes):
            scope.reschedule(now)
        await self._until_idle(FINAL_WRITE_GRACE_SECONDS)

    async def _until_idle(self, timeout: float) -> bool:
        try:
            await asyncio.wait_for(self._idle.wait(), timeout)
        except TimeoutError:
            return False
        return True


DRAIN = web.AppKey("drain", Drain)


class _Deadline:
    """:meth:`Drain.deadline`'s scope: an ``asyncio.timeout`` the drain expires, among the door's scopes while it
    runs; a timeout of its own becomes :class:`ShutdownDeadline`. A class rather than a generator context manager:
    every request through the door enters one, and an async generator's ``async with`` costs the generator, its
    two resumptions and the StopAsyncIteration that ends it."""

    __slots__ = ("_drain", "_scope")

    def __init__(self, drain: Drain) -> None:
        self._drain = drain
        self._scope = asyncio.timeout(None)

    async def __aenter__(self) -> None:
        scope, drain = self._scope, self._drain
        await scope.__aenter__()
        drain._scopes.add(scope)
        if drain._expired:  # the drain's deadline passed already: expired at once
            scope.reschedule(asyncio.get_running_loop().time())

    async def __aexit__(self, kind: type[BaseException] | None, error: BaseException | None,
                        trace: TracebackType | None) -> None:
        scope = self._scope
        self._drain._scopes.discard(scope)
        try:
            await scope.__aexit__(kind, error, trace)  # the drain's expiry: the block's cancellation a TimeoutError
        except TimeoutError:
            if scope.expired():
                raise ShutdownDeadline() from None
            raise
        if kind is not None and issubclass(kind, TimeoutError) and scope.expired():
            raise ShutdownDeadline() from None  # the block's own TimeoutError, once the drain expired the scope
