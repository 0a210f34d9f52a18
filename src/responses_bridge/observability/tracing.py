"""OpenTelemetry traces, on when ``OTEL_EXPORTER_OTLP_ENDPOINT`` (or ``OTEL_EXPORTER_OTLP_TRACES_ENDPOINT``) is
set; everything else follows the standard ``OTEL_*`` variables (service name, resource attributes, headers,
sampler, batch delays, ``OTEL_SDK_DISABLED``, ``OTEL_PROPAGATORS``). Spans go out over OTLP/HTTP (protobuf).

Spans: one per request (``POST /v1/responses`` and the other routes on the HTTP door; ``extproc`` for an ext_proc
stream), one per ext_proc phase (``extproc request_body``, ``extproc response_headers``, ``extproc
response_body``…), one per model call the bridge makes (``chat <model>``: model, tokens, finish reason —
gen_ai.py) holding its upstream call's, one per server-side tool call, one per store operation. A request's
span is the child of the trace context its headers carry: W3C ``traceparent`` (Envoy's, or the client's that
Envoy passed on), else b3 (``b3`` or ``x-b3-*``), so Envoy's span of the request and the bridge's share one trace.
Calls the sidecar makes itself carry ``traceparent`` onwards.

When tracing is off (the default), :data:`ENABLED` is False and :func:`span` returns one shared do-nothing
context manager: no span objects, no context switches, nothing on any path.

An agent session's turn is kept as a trace of its own whether or not spans are exported (:func:`keep`,
kept_traces.py): inside it, and only there, the same spans are made with tracing off, caught by the keeper rather
than an exporter. A plain response outside a session makes none, exported or not, as before.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator, Mapping, MutableMapping
from contextlib import AbstractContextManager
from types import ModuleType
from typing import TYPE_CHECKING, Any

from .keeping import KEEPING, keeping_now

if TYPE_CHECKING:  # the types only: OpenTelemetry itself is imported when tracing is configured (otel.py)
    from opentelemetry.context import Context
    from opentelemetry.sdk.trace.export import SpanExporter
    from opentelemetry.trace import Span

    from .kept_traces import KeptTrace

ENABLED = False
"""True once :func:`configure_tracing` installed an exporter; read it as ``tracing.ENABLED`` (it changes)."""

ENDPOINT_VARIABLES = ("OTEL_EXPORTER_OTLP_ENDPOINT", "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT")
TRACE_HEADERS = ("traceparent", "tracestate", "b3", "x-b3-traceid", "x-b3-spanid", "x-b3-parentspanid",
                 "x-b3-sampled", "x-b3-flags")
"""The headers a request's trace context may come in (Envoy forwards them to the ext_proc door: envoy_config)."""
MISSING_EXTRA = "pip install 'responses-bridge[otel]'"
_NOT_INSTALLED = f"OpenTelemetry is not installed: {MISSING_EXTRA}"
_OTEL_MODULE = "responses_bridge.observability.otel"


class SpanKind:
    """The span kinds the bridge makes (OpenTelemetry's, by name: this module imports none of it)."""

    INTERNAL = "internal"
    SERVER = "server"
    CLIENT = "client"


_NOOP: AbstractContextManager[None] = contextlib.nullcontext()
_otel: ModuleType | None = None  # otel.py, once tracing is on (or a turn is kept)
_KEEPING_MISSING: str | None = None  # why turns cannot be kept (OpenTelemetry not installed), once known


def configure_tracing(environ: Mapping[str, str] = os.environ, *, exporter: SpanExporter | None = None) -> bool:
    """Turns tracing on when an OTLP endpoint is configured (or ``exporter`` is given: tests pass an in-memory
    one, exported span by span). Returns whether it is on. Configured without the ``otel`` extra installed: a
    RuntimeError that names it (the start fails with that one line)."""
    global ENABLED, _otel
    if exporter is None:
        if not any(environ.get(name) for name in ENDPOINT_VARIABLES):
            return False
        if environ.get("OTEL_SDK_DISABLED", "").strip().lower() == "true":
            return False
    try:
        from . import otel
    except ImportError as error:
        from ..extras import explain  # why: not installed, or installed and broken (only on this failure)

        raise RuntimeError(f"tracing is configured ({', '.join(ENDPOINT_VARIABLES)}): "
                           + explain("otel", _OTEL_MODULE, error, _NOT_INSTALLED)) from None
    otel.configure(environ, ENDPOINT_VARIABLES, exporter)
    _otel = otel
    ENABLED = True
    return True


def shutdown_tracing() -> None:
    """Exports the spans still queued (at the end of ``serve``) and turns tracing off."""
    global ENABLED, _otel
    otel, _otel = _otel, None
    ENABLED = False
    if otel is not None:
        otel.shutdown()


def extract(carrier: Mapping[str, str]) -> Context | None:
    """The trace context in a request's headers (lower-case names): ``traceparent`` (or whatever
    ``OTEL_PROPAGATORS`` names), else b3; None when there is none (or tracing is off)."""
    return _otel.extract(carrier) if _otel is not None else None


def inject(headers: MutableMapping[str, str], context: Context | None = None) -> None:
    """Puts the current span's context (or ``context``'s) in an outgoing call's headers (only when tracing is
    on)."""
    if _otel is not None:
        _otel.inject(headers, context)


def span(name: str, attributes: Mapping[str, Any] | None = None, *,
         kind: str = SpanKind.INTERNAL, kept: bool = True) -> AbstractContextManager[Any]:
    """A child of the current span for the ``with`` block (an exception marks it failed); ``None`` as the
    ``with`` target when no span is made. ``kept=False``: made only when spans are exported, never for a kept
    turn alone (a store operation: many a turn, none of them what the turn did)."""
    if _otel is None or not (ENABLED or (kept and KEEPING.get())):
        return _NOOP
    return _otel.span(name, attributes, kind)


def span_in(name: str, parent: Context, attributes: Mapping[str, Any] | None = None) -> AbstractContextManager[Any]:
    """Like :func:`span`, as a child of ``parent`` rather than of the current span."""
    if _otel is None or not (ENABLED or KEEPING.get()):
        return _NOOP
    return _otel.span(name, attributes, SpanKind.INTERNAL, parent)


def recording() -> bool:
    """Spans are made here (exported, or a kept turn's): what :func:`start_span` callers check."""
    return _otel is not None and (ENABLED or KEEPING.get())


def keeping_available() -> bool:
    """Turns can be kept as traces: OpenTelemetry is installed (the ``otel`` extra), exported or not."""
    return _load_keeping() is None


def keeping_missing() -> str:
    """Why turns are not kept, for the error of the route that lists them."""
    return _load_keeping() or ""


def _load_keeping() -> str | None:
    global _otel, _KEEPING_MISSING
    if _otel is not None:
        return None
    if _KEEPING_MISSING is not None:
        return _KEEPING_MISSING
    try:
        from . import otel
    except ImportError as error:
        from ..extras import explain

        _KEEPING_MISSING = explain("otel", _OTEL_MODULE, error, _NOT_INSTALLED, public=True)
        return _KEEPING_MISSING
    otel.configure_keeping()
    _otel = otel
    return None


@contextlib.contextmanager
def keep(name: str, attributes: Mapping[str, Any]) -> Iterator[KeptTrace | None]:
    """Inside the block, the spans made here and in the tasks started here are a trace of their own, rooted at
    a span ``name`` and kept (``KeptTrace.finish`` ends it and gives the OTLP JSON); None, and nothing kept,
    without OpenTelemetry. A trace not finished in the block ends failed and is not kept."""
    if _load_keeping() is not None:
        yield None
        return
    assert _otel is not None
    token = KEEPING.set(True)
    kept = _otel.keep(name, attributes)
    try:
        with _otel.use(kept.root):
            yield kept
    finally:
        kept.close()
        KEEPING.reset(token)


def fail_current(error: str) -> None:
    """Marks the current span failed (a tool call's, from inside the tool: an outcome that raised nothing)."""
    if _otel is not None and (ENABLED or KEEPING.get()):
        _otel.fail(_otel.current(), error)


def fail(span_: Any, error: str) -> None:
    """Marks ``span_`` (a ``with`` target of :func:`span`, maybe None) failed, for an outcome that raised
    nothing."""
    if span_ is not None and _otel is not None:
        _otel.fail(span_, error)


def start_span(name: str, parent: Context | None = None, attributes: Mapping[str, Any] | None = None, *,
               kind: str = SpanKind.INTERNAL) -> Span:
    """A span ended by the caller (one that outlives a ``with`` block: a request, an ext_proc phase). Only when
    :data:`ENABLED`."""
    assert _otel is not None, "start_span() while tracing is off"
    return _otel.start_span(name, parent, attributes, kind)


def use(span_: Span) -> AbstractContextManager[Any]:
    """``span_`` is the current span inside the block (its children attach to it); it is not ended there."""
    assert _otel is not None
    return _otel.use(span_)


def end(span_: Span | None, error: str | None = None) -> None:
    if span_ is None or _otel is None:
        return
    _otel.end(span_, error)


def context_with(span_: Span, parent: Context | None = None) -> Context:
    assert _otel is not None
    return _otel.context_with(span_, parent)


__all__ = [
    "ENABLED",
    "SpanKind",
    "configure_tracing",
    "context_with",
    "end",
    "extract",
    "fail",
    "fail_current",
    "inject",
    "keep",
    "keeping_available",
    "keeping_now",
    "recording",
    "shutdown_tracing",
    "span",
    "span_in",
    "start_span",
    "use",
]
