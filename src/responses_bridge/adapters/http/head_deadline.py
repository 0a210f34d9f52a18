"""The HTTP door's bound on a slow request head, beside aiohttp's own idle (keep-alive) timeout.

aiohttp closes a connection that stays idle for ``keepalive_timeout`` (``http_keepalive_timeout``), counted from
its opening or from the end of its last response, but a client that sends its head a byte at a time is not idle
to it: it keeps its descriptor and its task for as long as it likes (1,500 such connections held 1,500 of each
for as long as the test ran). The guard here is a timer, started by the first byte of a head that arrives while
the connection waits for a request and stopped by the parser's finished head, as Envoy's
``request_headers_timeout`` is (``envoy-config`` renders that from the same setting). When it fires, the request
is answered 408 ``request_timeout`` through aiohttp's own error path (the one its parser's refusals take, in the
OpenAI shape of parser_errors.py) and the connection closed: no hand-written HTTP, and the parser keeps doing the
parsing. A head pipelined behind a request still being served is bounded by the keep-alive timeout instead, which
starts once that request is answered (aiohttp's keep-alive timer also runs from a connection's opening, so a first
head must arrive within both: the head deadline, the shorter by default, is the one a slow head meets).
"""

from __future__ import annotations

import asyncio
from typing import Any

from aiohttp import web
from aiohttp.streams import EMPTY_PAYLOAD
from aiohttp.web_protocol import RequestHandler, _ErrInfo
from aiohttp.web_request import BaseRequest

from ...protocol.errors import APIError
from .parser_errors import OpenAIErrorsRequestHandler, OpenAIErrorsServer


class HeadTimeout(Exception):
    """The request head did not arrive within ``http_head_timeout``."""

    def __init__(self, seconds: float) -> None:
        super().__init__(f"the request head did not arrive within {seconds:g} s")
        self.seconds = seconds

    def error(self) -> APIError:
        return APIError(408, f"The request headers did not arrive within {self.seconds:g} s "
                             "(RESPONSES_BRIDGE_HTTP_HEAD_TIMEOUT).", type="invalid_request_error",
                        code="request_timeout")


class HeadDeadlineRequestHandler(OpenAIErrorsRequestHandler):
    """aiohttp's connection handler (with the OpenAI-shaped parser errors), closing a connection whose request
    head takes longer than its server's ``head_timeout`` seconds to arrive."""

    def __init__(self, manager: web.Server, *, head_timeout: float, **kwargs: Any) -> None:
        super().__init__(manager, **kwargs)
        self._head_timeout = head_timeout
        self._head_timer: asyncio.TimerHandle | None = None

    def _waiting_for_head(self) -> bool:
        """Between requests (aiohttp's loop awaits the next one) with no whole head parsed yet."""
        waiter = self._waiter
        return waiter is not None and not waiter.done() and not (self._close or self._force_close)

    def data_received(self, data: bytes) -> None:
        super().data_received(data)
        waiter = self._waiter  # _waiting_for_head() inlined: this runs for every read of every connection
        if waiter is not None and not waiter.done() and not (self._close or self._force_close):
            if self._head_timer is None and self._head_timeout > 0:
                self._head_timer = self._loop.call_later(self._head_timeout, self._head_expired)
        elif self._head_timer is not None:
            self._stop_head_timer()

    def handle_error(self, request: BaseRequest, status: int = 500, exc: BaseException | None = None,
                     message: str | None = None) -> web.StreamResponse:
        if isinstance(exc, HeadTimeout):
            response = web.Response(status=408, body=exc.error().body(), content_type="application/json")
            response.force_close()
            return response
        return super().handle_error(request, status, exc, message)

    def connection_lost(self, exc: BaseException | None) -> None:
        self._stop_head_timer()
        super().connection_lost(exc)

    def _stop_head_timer(self) -> None:
        if self._head_timer is not None:
            self._head_timer.cancel()
            self._head_timer = None

    def _head_expired(self) -> None:
        """Hand aiohttp's request loop an error in place of the request, as its parser does with a bad head:
        the loop answers it (handle_error, 408) and, the answer not being keep-alive, closes the connection."""
        self._head_timer = None
        if not self._waiting_for_head() or self._waiter is None:
            return
        self._messages.append((_ErrInfo(status=408, exc=HeadTimeout(self._head_timeout), message="head timeout"),
                               EMPTY_PAYLOAD))
        self._waiter.set_result(None)
        self.close()  # the rest of the head is not parsed (data_received drops it); the waiter is done already


class HeadDeadlineServer(OpenAIErrorsServer):
    """The server whose connections use :class:`HeadDeadlineRequestHandler`."""

    head_timeout: float = 0.0

    def __call__(self) -> RequestHandler:
        return HeadDeadlineRequestHandler(self, loop=self._loop, head_timeout=self.head_timeout, **self._kwargs)


def use_head_deadline(runner: web.AppRunner, head_timeout: float) -> None:
    """After ``runner.setup()``: new connections get the head deadline (0: none) and the OpenAI-shaped parser
    errors. As parser_errors.use_openai_errors, only the class that makes connection handlers changes."""
    server = runner.server
    assert server is not None, "call runner.setup() first"
    server.__class__ = HeadDeadlineServer
    assert isinstance(server, HeadDeadlineServer)
    server.head_timeout = head_timeout
