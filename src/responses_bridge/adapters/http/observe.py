"""The HTTP door's request observation: request id, request metrics, the request's span, one log line — and, as the
door's outermost middleware, every error answered in the OpenAI shape (errors.py's ``error_answer``), so what it
records is the status the client gets.

Its ``request_finished`` line names the upstream that served the request and how (``upstream``, ``mode``: what
``Runtime.route`` noted), when it reached one. The request id is the client's (or Envoy's, when Envoy routed the
request here) ``X-Request-Id`` header, or a new one; it is bound for every log line of the request and echoed in
the answer's ``X-Request-Id`` header (also on event streams: it is set when the answer's headers are prepared).
The request's span is the child of the trace context in the request's headers (``traceparent``, or b3).
"""

from __future__ import annotations

import asyncio
import contextlib
import time

import structlog
from aiohttp import web
from aiohttp.web_middlewares import Handler

from ...observability import metrics, timing, tracing
from ...observability.logs import (
    REQUEST_ID_HEADER,
    bind_request_id,
    clean_request_id,
    new_request_id,
    unbind_request_id,
    unwatch_upstream,
    watch_upstream,
)
from .errors import error_answer, refuse_unreadable
from .identity import TENANT

log = structlog.get_logger("responses_bridge.http")

REQUEST_ID = web.RequestKey("request_id", str)
STARTED = web.RequestKey("started", float)
CLIENT_CLOSED = 499
"""Status recorded for a request whose client went away before its answer ended (nginx's convention)."""


def route_of(request: web.Request) -> str:
    """The route's pattern, never the raw path (bounded label values)."""
    resource = request.match_info.route.resource
    if resource is None:
        return "unmatched"
    return f"{request.method} {resource.canonical}"


@web.middleware
async def observe_middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
    request_id = clean_request_id(request.headers.get(REQUEST_ID_HEADER)) or new_request_id()
    request[REQUEST_ID] = request_id
    started = request[STARTED] = time.perf_counter()
    tokens = bind_request_id(request_id)
    served, watching = watch_upstream()  # the upstream and mode the request is routed to, once it is
    route = route_of(request)
    span = None
    if tracing.ENABLED:
        span = tracing.start_span(route, tracing.extract({k.lower(): v for k, v in request.headers.items()}),
                                  {"http.request.method": request.method, "http.route": route,
                                   "responses_bridge.request_id": request_id}, kind=tracing.SpanKind.SERVER)
    status = 500
    # a POST's clock (observability/timing.py): what it waits for and its model calls, stored with its response
    clock = timing.CURRENT.set(timing.Timing(started)) if request.method == "POST" else None  # timing.begin, inline
    try:
        with tracing.use(span) if span is not None else contextlib.nullcontext():
            try:  # error_middleware's work (errors.py) here: a coroutine a request fewer than a middleware of its own
                refuse_unreadable(request)
                response = await handler(request)
            except Exception as exc:  # noqa: BLE001  (error_answer logs the unexpected; a redirect is raised again)
                response = error_answer(request, exc)
        status = response.status
        return response
    except web.HTTPException as exc:
        status = exc.status
        raise
    except (asyncio.CancelledError, ConnectionResetError):
        status = CLIENT_CLOSED
        raise
    finally:
        seconds = time.perf_counter() - started
        if route != "GET /metrics" and not route.startswith("GET /health"):  # probes are not traffic
            metrics.record_request("http", route, status, seconds)
            tenant = request.get(TENANT)  # who it was, as the identity middleware found (None: not identified)
            log.info("request_finished", door="http", route=route, status=status,
                     duration_ms=round(seconds * 1000, 3), **({} if tenant is None else {"tenant": tenant}),
                     **served)
        if span is not None:
            span.set_attribute("http.response.status_code", status)
            tracing.end(span, f"HTTP {status}" if status >= 500 else None)
        unwatch_upstream(watching)
        unbind_request_id(tokens)
        if clock is not None:
            timing.CURRENT.reset(clock)  # timing.end


async def echo_request_id(request: web.Request, response: web.StreamResponse) -> None:
    """``on_response_prepare``: the answer carries the request's id (a stream too: this runs before its headers
    go out)."""
    request_id = request.get(REQUEST_ID)
    if request_id is not None:
        response.headers["X-Request-Id"] = request_id
