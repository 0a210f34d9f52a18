"""Requests refused before any route or middleware sees them, answered in the OpenAI error shape too.

aiohttp's HTTP parser rejects a request line or a header over its limits (60 KiB here) or more than 128
headers, and answers with a text/plain 400 of its own from ``RequestHandler.handle_error``, which no middleware
wraps. The handler class here answers those in the same ``{"error": {...}}`` shape as every other error, with
the status Envoy gives the same requests (431 for a head over its limits), so both doors agree.

Request bodies are not decompressed by the parser (``auto_decompress=False``): a ``Content-Encoding`` the bridge
does not accept is refused by the middleware in ``errors.py`` with a 415, as Envoy's route does, instead of
failing somewhere inside the parser or the payload stream.
"""

from __future__ import annotations

from typing import Any

from aiohttp import web
from aiohttp.http_exceptions import BadHttpMessage, LineTooLong
from aiohttp.web_protocol import RequestHandler
from aiohttp.web_request import BaseRequest

from ...protocol.errors import APIError

MAX_HEAD_LINE_BYTES = 60 * 1024
"""Longest request line or header line accepted: Envoy's limit for the whole head (HCM
``max_request_headers_kb: 60``, envoy_config.py), so whatever Envoy forwards is read (a sidecar that refused a
forwarded head would answer early and close while Envoy still sends the body, which Envoy reports as a 503), and
a line over it is a 431 on both doors. (aiohttp's 128 headers stay above Envoy's 100 plus the few it adds.)"""

PARSER_OPTIONS: dict[str, Any] = {"auto_decompress": False, "max_line_size": MAX_HEAD_LINE_BYTES,
                                  "max_field_size": MAX_HEAD_LINE_BYTES}


def protocol_error(status: int, exc: BaseException | None) -> APIError:
    """The OpenAI-shaped error for what the HTTP parser refused (``status`` is aiohttp's, 400 or 500)."""
    if isinstance(exc, LineTooLong) or (isinstance(exc, BadHttpMessage) and "Too many headers" in str(exc)):
        return APIError(431, "The request line or headers are larger than this server accepts.",
                        type="invalid_request_error", code="request_header_fields_too_large")
    if status < 500:
        return APIError(status, "The request is not valid HTTP.", type="invalid_request_error",
                        code="invalid_http_request")
    return APIError(500, "The server had an error while processing your request.", code="server_error")


class OpenAIErrorsRequestHandler(RequestHandler):
    """aiohttp's connection handler, answering parser errors as OpenAI-shaped JSON (and still closing the
    connection, as aiohttp does: the rest of the bytes on it cannot be trusted)."""

    def handle_error(self, request: BaseRequest, status: int = 500, exc: BaseException | None = None,
                     message: str | None = None) -> web.StreamResponse:
        if request.writer.output_size > 0:  # part of a response went out already: aiohttp's own handling
            return super().handle_error(request, status, exc, message)
        if status >= 500:
            self.log_exception("Error handling request from %s", request.remote, exc_info=exc)
        error = protocol_error(status, exc)
        response = web.Response(status=error.status, body=error.body(), content_type="application/json")
        response.force_close()
        return response


class OpenAIErrorsServer(web.Server):
    """The server whose connections use :class:`OpenAIErrorsRequestHandler`."""

    def __call__(self) -> RequestHandler:
        return OpenAIErrorsRequestHandler(self, loop=self._loop, **self._kwargs)


def use_openai_errors(runner: web.AppRunner) -> None:
    """After ``runner.setup()``: new connections get the OpenAI-shaped parser errors. The server object stays
    the one the runner made (its routes, its shutdown); only the class that makes connection handlers changes."""
    server = runner.server
    assert server is not None, "call runner.setup() first"
    server.__class__ = OpenAIErrorsServer
