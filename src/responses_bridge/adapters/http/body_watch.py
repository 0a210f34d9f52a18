"""The HTTP door's watch on a request body's pace (services/tenancy/body_pace.py), for every route that takes a body.

A timer, not a check made when bytes arrive: a client that sends nothing must be caught too. When the body misses its
deadline, the body's stream is failed with :class:`BodyTooSlow` (the 408), which wakes whoever reads it
(``read_body``, a multipart reader, a file upload) wherever it waits; whatever the route makes of it, the limits
middleware answers the 408 and closes the connection (:func:`answer_too_slow`), and what the request held (its
memory reservation, its tenant's slot) comes back as its handler ends.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Iterator

from aiohttp import web

from ...protocol.errors import APIError
from ...services.tenancy.body_pace import BodyPace
from .errors import error_response


class BodyTooSlow(APIError):
    """What a body's reader raises once its body missed its deadline: the 408 to answer. An :class:`APIError`, so
    that a route cleans up as for any refusal (a partial upload is removed), and never an ``OSError`` (a
    ``TimeoutError`` is one), which an upload would take for a failing disk."""

    def __init__(self, error: APIError) -> None:
        super().__init__(error.status, error.message, type=error.type, param=error.param, code=error.code)


async def answer_too_slow(request: web.Request, error: APIError) -> web.Response:
    """The 408, written now, and the connection closed behind it: the rest of the body is not waited for (aiohttp
    would otherwise linger, reading it, and fail on the body's error)."""
    response = error_response(error)
    response.force_close()
    await response.prepare(request)
    await response.write_eof()
    request.protocol.force_close()  # the transport flushes the answer, then closes
    return response


class BodyWatch:
    """Arms a timer at the body's deadline, moves it as bytes arrive, stops at the body's end."""

    __slots__ = ("_handle", "_loop", "_pace", "_request", "fired")
    fired: BodyTooSlow | None

    def __init__(self, request: web.Request, timeout: float, min_rate: int) -> None:
        self._loop = asyncio.get_running_loop()
        self._request = request
        self._pace = BodyPace(timeout, min_rate, self._loop.time())
        self._handle: asyncio.TimerHandle | None = None
        self.fired = None  # the 408, once the deadline passed
        if self._pace.bounded and not request.content.is_eof():
            self._arm()

    def _arm(self) -> None:
        deadline = self._pace.deadline(self._request.content.total_bytes)
        self._handle = self._loop.call_at(deadline, self._check)

    def _check(self) -> None:
        self._handle = None
        content = self._request.content
        if content.is_eof() or content.exception() is not None:
            return  # whole, or already failed (the client went away)
        now = self._loop.time()
        if not self._pace.late(content.total_bytes, now):
            self._arm()  # bytes came since: the deadline moved
            return
        self.fired = BodyTooSlow(self._pace.too_slow(content.total_bytes, self._request.content_length, now))
        content.set_exception(self.fired)

    @contextlib.contextmanager
    def paused(self) -> Iterator[None]:
        """The bridge does not read meanwhile (it waits for room in the budget): the client's clock stops."""
        if self._handle is None:
            yield
            return
        self._handle.cancel()
        self._pace.pause(self._loop.time())
        try:
            yield
        finally:
            self._pace.resume(self._loop.time())
            if self.fired is None:
                self._arm()

    def stop(self) -> None:
        if self._handle is not None:
            self._handle.cancel()
            self._handle = None


BODY_WATCH: web.RequestKey[BodyWatch | None] = web.RequestKey("body_watch")
"""The request key of its body's watch (limits.py arms it; the body's admission pauses it while it waits for room:
services/tenancy/body_admission.py, handed it by ``read_body``). None for a body with nothing left to watch: set
either way, so ``read_body``'s lookup finds it (a missing key costs ``request.get`` a KeyError raised and caught)."""
