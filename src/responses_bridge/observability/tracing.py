"""OpenTelemetry traces, on when ``OTEL_EXPORTER_OTLP_ENDPOINT`` (or ``OTEL_EXPORTER_OTLP_TRACES_ENDPOINT``) is
set; everything else follows the standard ``OTEL_*`` variables (service name, resource attributes, headers,
sampler, batch delays, ``OTEL_SDK_DISABLED``, ``OTEL_PROPAGATORS``). Spans go out over OTLP/HTTP (protobuf).

Spans: one per request (``POST /v1/responses`` and the other routes on the HTTP door; ``extproc`` for an ext_proc
stream), one per ext_proc phase (``extproc request_body``, ``extproc response_headers``, ``extproc
response_body``…), one per upstream call, one per server-side tool call, one per store operation. A request's
span is the child of the trace context its headers carry: W3C ``traceparent`` (Envoy's, or the client's that
Envoy passed on), else b3 (``b3`` or ``x-b3-*``), so Envoy's span of the request and the bridge's share one trace.
Calls the sidecar makes itself carry ``traceparent`` onwards.

When tracing is off (the default), :data:`ENABLED` is False and :func:`span` returns one shared do-nothing
context manager: no span objects, no context switches, nothing on any path.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Mapping, MutableMapping
from contextlib import AbstractContextManager
from typing import Any

from opentelemetry import propagate, trace
from opentelemetry.context import Context
from opentelemetry.propagators.b3 import B3MultiFormat
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import BatchSpanProcessor, SimpleSpanProcessor, SpanExporter
from opentelemetry.trace import Span, SpanKind, Status, StatusCode

ENABLED = False
"""True once :func:`configure_tracing` installed an exporter; read it as ``tracing.ENABLED`` (it changes)."""

ENDPOINT_VARIABLES = ("OTEL_EXPORTER_OTLP_ENDPOINT", "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT")
SERVICE_NAME = "responses-bridge"
TRACE_HEADERS = ("traceparent", "tracestate", "b3", "x-b3-traceid", "x-b3-spanid", "x-b3-parentspanid",
                 "x-b3-sampled", "x-b3-flags")
"""The headers a request's trace context may come in (Envoy forwards them to the ext_proc door: envoy_config)."""

_NOOP: AbstractContextManager[None] = contextlib.nullcontext()
_B3 = B3MultiFormat()  # reads the single ``b3`` header as well as the ``x-b3-*`` ones
_tracer: trace.Tracer = trace.NoOpTracer()
_provider: TracerProvider | None = None


def configure_tracing(environ: Mapping[str, str] = os.environ, *, exporter: SpanExporter | None = None) -> bool:
    """Turns tracing on when an OTLP endpoint is configured (or ``exporter`` is given: tests pass an in-memory
    one, exported span by span). Returns whether it is on."""
    global ENABLED, _tracer, _provider
    if exporter is None:
        if not any(environ.get(name) for name in ENDPOINT_VARIABLES):
            return False
        if environ.get("OTEL_SDK_DISABLED", "").strip().lower() == "true":
            return False
        try:
            from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter
        except ImportError as error:
            # xds-protos (the ext_proc stubs) ships an older copy of ``opentelemetry/proto``; installed after
            # opentelemetry-proto it replaces the exporter's message classes. The project's install scripts put
            # them back; say how, rather than failing the start with a bare import error.
            raise RuntimeError(
                f"tracing is configured ({', '.join(ENDPOINT_VARIABLES)}) but the OTLP exporter cannot be imported "
                f"({error}); reinstall its message classes: pip install --force-reinstall --no-deps "
                "opentelemetry-proto") from error

        processor: SimpleSpanProcessor | BatchSpanProcessor = BatchSpanProcessor(OTLPSpanExporter())
    else:
        processor = SimpleSpanProcessor(exporter)
    attributes: dict[str, Any] = {} if environ.get("OTEL_SERVICE_NAME") else {"service.name": SERVICE_NAME}
    provider = TracerProvider(resource=Resource.create(attributes))  # adds OTEL_RESOURCE_ATTRIBUTES, ...
    provider.add_span_processor(processor)
    if _provider is not None:
        _provider.shutdown()
    _provider = provider
    _tracer = provider.get_tracer("responses_bridge")
    ENABLED = True
    return True


def shutdown_tracing() -> None:
    """Exports the spans still queued (at the end of ``serve``) and turns tracing off."""
    global ENABLED, _tracer, _provider
    provider, _provider = _provider, None
    ENABLED = False
    _tracer = trace.NoOpTracer()
    if provider is not None:
        provider.shutdown()


def extract(carrier: Mapping[str, str]) -> Context | None:
    """The trace context in a request's headers (lower-case names): ``traceparent`` (or whatever
    ``OTEL_PROPAGATORS`` names), else b3; None when there is none."""
    context = propagate.extract(carrier)
    if trace.get_current_span(context).get_span_context().is_valid:
        return context
    if "b3" in carrier or "x-b3-traceid" in carrier:
        context = _B3.extract(carrier)
        if trace.get_current_span(context).get_span_context().is_valid:
            return context
    return None


def inject(headers: MutableMapping[str, str], context: Context | None = None) -> None:
    """Puts the current span's context (or ``context``'s) in an outgoing call's headers (only when tracing is
    on)."""
    if ENABLED:
        propagate.inject(headers, context=context)


def span(name: str, attributes: Mapping[str, Any] | None = None, *,
         kind: SpanKind = SpanKind.INTERNAL) -> AbstractContextManager[Any]:
    """A child of the current span for the ``with`` block (an exception marks it failed)."""
    if not ENABLED:
        return _NOOP
    return _tracer.start_as_current_span(name, attributes=attributes, kind=kind)


def span_in(name: str, parent: Context, attributes: Mapping[str, Any] | None = None) -> AbstractContextManager[Any]:
    """Like :func:`span`, as a child of ``parent`` rather than of the current span."""
    if not ENABLED:
        return _NOOP
    return _tracer.start_as_current_span(name, context=parent, attributes=attributes)


def start_span(name: str, parent: Context | None = None, attributes: Mapping[str, Any] | None = None, *,
               kind: SpanKind = SpanKind.INTERNAL) -> Span:
    """A span ended by the caller (one that outlives a ``with`` block: a request, an ext_proc phase). Only when
    :data:`ENABLED`."""
    return _tracer.start_span(name, context=parent, attributes=attributes, kind=kind)


def use(span_: Span) -> AbstractContextManager[Any]:
    """``span_`` is the current span inside the block (its children attach to it); it is not ended there."""
    return trace.use_span(span_, end_on_exit=False)


def end(span_: Span | None, error: str | None = None) -> None:
    if span_ is None:
        return
    if error is not None:
        span_.set_status(Status(StatusCode.ERROR, error))
    span_.end()


def context_with(span_: Span, parent: Context | None = None) -> Context:
    return trace.set_span_in_context(span_, parent)


__all__ = [
    "ENABLED",
    "Span",
    "SpanKind",
    "configure_tracing",
    "context_with",
    "end",
    "extract",
    "inject",
    "shutdown_tracing",
    "span",
    "span_in",
    "start_span",
    "use",
]
