"""The OpenTelemetry side of :mod:`.tracing`: loaded only once tracing is configured, so a sidecar without the
``otel`` extra (or with tracing off) never imports OpenTelemetry."""

from __future__ import annotations

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

from .kept_traces import KEEPER, KeepingSampler, KeptTrace

SERVICE_NAME = "responses-bridge"
KINDS = {"internal": SpanKind.INTERNAL, "server": SpanKind.SERVER, "client": SpanKind.CLIENT}

_B3 = B3MultiFormat()  # reads the single ``b3`` header as well as the ``x-b3-*`` ones
_tracer: trace.Tracer = trace.NoOpTracer()
_provider: TracerProvider | None = None


def configure(environ: Mapping[str, str], endpoint_variables: tuple[str, ...],
              exporter: SpanExporter | None = None) -> None:
    """Installs the tracer provider: OTLP/HTTP to the configured endpoint, or ``exporter`` (tests pass an in-memory
    one, exported span by span); a kept turn's spans (kept_traces.py) are caught besides."""
    if exporter is None:
        try:
            from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter
        except ImportError as error:
            from ..extras import explain, install_command  # not installed, or installed and broken: which

            raise RuntimeError(
                f"tracing is configured ({', '.join(endpoint_variables)}): " + explain(
                    "otel", "opentelemetry.exporter.otlp.proto.http.trace_exporter", error,
                    f"the OTLP exporter is not installed: {install_command('otel')}")) from error
        processor: SimpleSpanProcessor | BatchSpanProcessor = BatchSpanProcessor(OTLPSpanExporter())
    else:
        processor = SimpleSpanProcessor(exporter)
    _install(environ, processor)


def configure_keeping(environ: Mapping[str, str] | None = None) -> None:
    """A provider for kept turns only (kept_traces.py), when no exporter is configured; configure() replaces it
    with one that has both."""
    if _provider is None:
        _install(environ if environ is not None else os.environ, None)


def _install(environ: Mapping[str, str], processor: SimpleSpanProcessor | BatchSpanProcessor | None) -> None:
    global _tracer, _provider
    attributes: dict[str, Any] = {} if environ.get("OTEL_SERVICE_NAME") else {"service.name": SERVICE_NAME}
    provider = TracerProvider(resource=Resource.create(attributes))  # adds OTEL_RESOURCE_ATTRIBUTES, ...
    provider.sampler = KeepingSampler(provider.sampler)  # OTEL_TRACES_SAMPLER's, but a kept turn is recorded
    provider.add_span_processor(KEEPER)
    if processor is not None:
        provider.add_span_processor(processor)
    if _provider is not None:
        _provider.shutdown()
    _provider = provider
    _tracer = provider.get_tracer("responses_bridge")


def keep(name: str, attributes: Mapping[str, Any]) -> KeptTrace:
    return KEEPER.open(_tracer, name, attributes)


def current() -> Span:
    return trace.get_current_span()


def fail(span_: Span, error: str) -> None:
    span_.set_status(Status(StatusCode.ERROR, error))


def shutdown() -> None:
    global _tracer, _provider
    provider, _provider = _provider, None
    _tracer = trace.NoOpTracer()
    if provider is not None:
        provider.shutdown()


def extract(carrier: Mapping[str, str]) -> Context | None:
    context = propagate.extract(carrier)
    if trace.get_current_span(context).get_span_context().is_valid:
        return context
    if "b3" in carrier or "x-b3-traceid" in carrier:
        context = _B3.extract(carrier)
        if trace.get_current_span(context).get_span_context().is_valid:
            return context
    return None


def inject(headers: MutableMapping[str, str], context: Context | None = None) -> None:
    propagate.inject(headers, context=context)


def span(name: str, attributes: Mapping[str, Any] | None, kind: str,
         parent: Context | None = None) -> AbstractContextManager[Any]:
    return _tracer.start_as_current_span(name, context=parent, attributes=attributes, kind=KINDS[kind])


def start_span(name: str, parent: Context | None, attributes: Mapping[str, Any] | None, kind: str) -> Span:
    return _tracer.start_span(name, context=parent, attributes=attributes, kind=KINDS[kind])


def use(span_: Span) -> AbstractContextManager[Any]:
    return trace.use_span(span_, end_on_exit=False)


def end(span_: Span, error: str | None = None) -> None:
    if error is not None:
        span_.set_status(Status(StatusCode.ERROR, error))
    span_.end()


def context_with(span_: Span, parent: Context | None = None) -> Context:
    return trace.set_span_in_context(span_, parent)
