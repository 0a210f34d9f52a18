"""What one ext_proc stream records: its request id in the log lines, its metrics, its spans.

The request id is the ``x-request-id`` Envoy set on the request (the bootstrap forwards it with the request body:
``envoy_config.OBSERVED_HEADERS``; a bootstrap that sends the request headers gives it there). Its trace context
is the one Envoy's gRPC call to the processor carries (``traceparent`` in the stream's metadata, present when
Envoy itself traces), else the one in the request's headers (the client's ``traceparent`` or b3, which Envoy
passes on); the bridge's spans are children of it.

Cost: a few calls when the stream starts and ends, and one histogram observation per message (the per-phase
children are resolved at import). With tracing off no span is made. The time to the first event is taken by the
servicer itself (one attribute test per chunk) and recorded here at the end.
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import Iterable, Mapping, Sequence
from contextlib import AbstractContextManager
from typing import Any

import grpc
import structlog

from ...envoy_config import OBSERVED_HEADERS
from ...observability import metrics, tracing
from ...observability.logs import (
    REQUEST_ID_HEADER,
    bind_request_id,
    clean_request_id,
    unbind_request_id,
    unwatch_upstream,
    watch_upstream,
)
from . import messages as m
from ._pb.ext_proc_pb2 import ProcessingRequest, ProcessingResponse

log = structlog.get_logger("responses_bridge.extproc")

ROUTE = "POST /v1/responses"
CLIENT_CLOSED = 499
ACTIVE = metrics.ACTIVE["extproc"]
FIRST_EVENT = metrics.FIRST_EVENT["extproc"]
MESSAGE = metrics.EXTPROC_MESSAGE_OBSERVE
OTHER = metrics.EXTPROC_OTHER_OBSERVE
STREAMS_OPENED = metrics.loop_adder(metrics.EXTPROC_STREAMS)
STREAMS_OPEN = metrics.loop_adder(metrics.EXTPROC_ACTIVE)  # +1 / -1
_NOOP: AbstractContextManager[None] = contextlib.nullcontext()


class StreamObservation:
    __slots__ = ("body_span", "first_event_at", "request_id", "served", "span", "started", "status", "streaming",
                 "tenant", "tokens", "upstream_span", "upstream_started", "upstream_status", "watching")

    def __init__(self) -> None:
        self.started = time.perf_counter()
        self.request_id: str | None = None
        self.tokens: Mapping[str, Any] | None = None
        self.status = 0  # the client's status, once a reply settled it
        self.upstream_status = 0
        self.upstream_started = 0.0
        self.streaming = False  # counted in the active streams gauge
        self.first_event_at = 0.0
        self.tenant: str | None = None  # the caller's, once identified (auth keys or header)
        self.span: tracing.Span | None = None
        self.body_span: tracing.Span | None = None
        self.upstream_span: tracing.Span | None = None
        # the upstream and mode the request is routed to (Runtime.route notes them in this stream's context)
        self.served, self.watching = watch_upstream()
        STREAMS_OPENED(1)
        STREAMS_OPEN(1)

    def begin(self, phase: str | None, request: ProcessingRequest, context: grpc.aio.ServicerContext) -> None:
        """The stream's first message: bind its request id, open its span."""
        if phase == "request_headers":
            headers = {name: value for name, value in m.header_map(request.request_headers).items()
                       if name in OBSERVED_HEADERS}
        else:
            headers = m.forwarded_headers(request, OBSERVED_HEADERS)
        request_id = clean_request_id(headers.get(REQUEST_ID_HEADER))
        if request_id is not None:
            self.request_id = request_id
            self.tokens = bind_request_id(request_id)
        if tracing.ENABLED:
            parent = tracing.extract(_grpc_trace_headers(context)) or tracing.extract(headers)
            attributes = {"http.request.method": "POST", "http.route": ROUTE}
            if request_id is not None:
                attributes["responses_bridge.request_id"] = request_id
            self.span = tracing.start_span("extproc", parent, attributes, kind=tracing.SpanKind.SERVER)

    def phase(self, phase: str | None) -> AbstractContextManager[Any]:
        """The span a message's handling runs in: its phase's own, or for the response body the one span that
        covers every body message."""
        if self.span is None:
            return _NOOP
        parent = tracing.context_with(self.span)
        if phase == "response_body":
            if self.body_span is None:
                self.body_span = tracing.start_span("extproc response_body", parent)
            return tracing.use(self.body_span)
        if phase == "request_body" and self.upstream_span is None:
            # the call Envoy makes with the rewritten request. Ended once its answer ends; a request answered
            # without a call never ends it, so it is never exported. Its context goes upstream through the
            # route's headers from metadata (upstream_trace_headers).
            self.upstream_span = tracing.start_span("upstream POST chat/completions", parent,
                                                    {"server.address": "envoy"}, kind=tracing.SpanKind.CLIENT)
        return tracing.span_in(f"extproc {phase}", parent)

    def upstream_trace_headers(self) -> dict[str, str]:
        """The upstream call's span as ``traceparent`` (and ``tracestate``), for Envoy to send with the call; none
        when the sidecar does not trace."""
        headers: dict[str, str] = {}
        if self.upstream_span is not None:
            tracing.inject(headers, tracing.context_with(self.upstream_span))
        return headers

    def message(self, phase: str | None, seconds: float) -> None:
        MESSAGE.get(phase or "", OTHER)(seconds)

    def upstream_called(self) -> None:
        """The rewritten request went to Envoy: the upstream call starts now."""
        self.upstream_started = time.perf_counter()

    def upstream_answered(self, request: ProcessingRequest) -> None:
        """The upstream's response headers reached the processor."""
        status = m.header_value(request.response_headers, ":status") or "0"
        self.upstream_status = int(status) if status.isdigit() else 0
        upstream = metrics.upstream(self.served.get("upstream", "default"), self.served.get("mode", "translate"))
        if self.upstream_started:
            upstream.answered(time.perf_counter() - self.upstream_started)
        if self.upstream_status >= 500:
            upstream.failed("http_5xx")
        if self.upstream_span is not None:
            self.upstream_span.set_attribute("http.response.status_code", self.upstream_status)

    def replied(self, replies: Sequence[ProcessingResponse], sse: bool) -> None:
        """After a message other than a response body chunk (or the last one): what the replies settled."""
        if sse and not self.streaming:
            self.streaming = True
            ACTIVE(1)
        if not self.status:
            self.status = _client_status(replies, self.upstream_status)

    def finish(self, ours: bool | None, abandoned: bool) -> None:
        """The gRPC stream ended."""
        seconds = time.perf_counter() - self.started
        STREAMS_OPEN(-1)
        if self.streaming:
            ACTIVE(-1)
        if ours:
            status = CLIENT_CLOSED if abandoned and not self.status else self.status or 200
            metrics.record_request("extproc", ROUTE, status, seconds)
            if self.first_event_at:
                FIRST_EVENT(self.first_event_at - self.started)
            log.info("request_finished", door="extproc", route=ROUTE, status=status,
                     duration_ms=round(seconds * 1000, 3), **({} if self.tenant is None else {"tenant": self.tenant}),
                     **self.served)
        else:
            status = self.status
        if self.upstream_span is not None and self.upstream_started:
            tracing.end(self.upstream_span, "upstream failed" if self.upstream_status >= 500 else None)
        tracing.end(self.body_span)
        if self.span is not None:
            self.span.set_attribute("http.response.status_code", status)
            tracing.end(self.span, f"HTTP {status}" if status >= 500 or status == CLIENT_CLOSED else None)
        unwatch_upstream(self.watching)
        if self.tokens is not None:
            unbind_request_id(self.tokens)


def _grpc_trace_headers(context: grpc.aio.ServicerContext) -> dict[str, str]:
    metadata: Iterable[tuple[str, Any]] = context.invocation_metadata() or ()
    return {key: value for key, value in metadata if key in tracing.TRACE_HEADERS and isinstance(value, str)}


def _client_status(replies: Sequence[ProcessingResponse], upstream_status: int) -> int:
    """The status the client gets, if these replies decide it: an immediate response's, a ``:status`` the
    processor set, or the upstream's status passed on by a headers reply; 0 when not decided yet."""
    for reply in replies:
        kind = reply.WhichOneof("response")
        if kind == "immediate_response":
            return int(reply.immediate_response.status.code)
        if kind in ("response_headers", "response_body"):
            common = getattr(reply, kind).response
            for option in common.header_mutation.set_headers:
                if option.header.key == ":status":
                    value = (option.header.raw_value or option.header.value.encode()).decode()
                    return int(value) if value.isdigit() else 0
            if kind == "response_headers":
                return upstream_status
    return 0
