"""The spans of an agent session's turn, kept to be read back as the turn's trace (``GET
/v1/agents/sessions/{session_id}/traces``): the same spans the bridge makes for an exporter (otel.py), caught by one
more span processor on the same tracer provider, so a turn's trace is what a collector would get and nothing is
counted twice. Loaded only with OpenTelemetry (the ``otel`` extra), like otel.py.

A turn is kept from :meth:`Keeper.open` (its root span starts, the root of a trace of its own) to
:meth:`KeptTrace.finish` (the root ends and the trace is encoded as OTLP JSON); only spans of a trace being kept
are held, so a process serving plain responses holds nothing here. Bounds: :data:`MAX_SPANS` spans per turn (the
rest counted as dropped on the root span), :data:`MAX_TRACE_BYTES` of JSON per trace (the latest-starting spans left
out first). Store operations are not kept: they are many per turn and say nothing of the model or the tools.

The encoding is the OTLP exporter's own (``opentelemetry-exporter-otlp-proto-common``), made JSON by protobuf's
``json_format`` with what the OTLP/JSON mapping changes from protobuf's: trace and span ids in hex, enums as
integers. A trace goes to the tenant: exceptions' events are left out and failures' messages masked.
"""

from __future__ import annotations

import threading
from base64 import b64decode
from collections.abc import Mapping, Sequence
from typing import Any

import orjson
from google.protobuf import json_format
from opentelemetry.context import Context
from opentelemetry.exporter.otlp.proto.common.trace_encoder import encode_spans
from opentelemetry.sdk.trace import ReadableSpan, SpanProcessor
from opentelemetry.sdk.trace.sampling import Decision, Sampler, SamplingResult
from opentelemetry.trace import Link, Span, SpanKind, Status, StatusCode, Tracer
from opentelemetry.util.types import Attributes

from ..redact import mask_text
from .keeping import keeping_now

MAX_SPANS = 512
"""Spans kept per turn (its root included): a turn of many model and tool calls makes a few per call."""
MAX_TRACE_BYTES = 1 << 20
"""OTLP JSON bytes per trace: a page of 16 traces stays within the 16 MiB a list answers at most."""
DROPPED = "responses_bridge.trace.dropped_spans"
_SKIPPED = "db.system.name"  # a store operation's span (store/metrics.py): exported, not kept
_IDS = ("traceId", "spanId", "parentSpanId")


class KeptTrace:
    """One turn's trace while it runs: its root span and the finished spans of the trace so far."""

    def __init__(self, keeper: Keeper, root: Span) -> None:
        self._keeper = keeper
        self.root = root
        self.trace_id = root.get_span_context().trace_id
        self.spans: list[ReadableSpan] = []
        self.dropped = 0
        self.closed = False  # the root span ended
        self.otlp: dict[str, Any] | None = None

    def add(self, span: ReadableSpan) -> None:
        if len(self.spans) >= MAX_SPANS - 1:  # room for the root
            self.dropped += 1
        else:
            self.spans.append(span)

    def finish(self, attributes: Mapping[str, Any], error: str | None = None) -> dict[str, Any]:
        """Ends the root span with ``attributes`` (and failed with ``error``); the trace as an OTLP JSON
        ``ExportTraceServiceRequest``. Called once; the trace is no longer kept after it."""
        if self.otlp is not None:
            return self.otlp
        ended = self.closed  # the turn's block ended first (the session failed): its root as it ended
        self.closed = True
        spans = sorted(self.spans, key=lambda span: span.start_time or 0)
        encoded = otlp_json(spans)  # once: the trimming below is for a turn past the bound only
        while spans and len(orjson.dumps(encoded)) > MAX_TRACE_BYTES - 4096:  # room for the root
            self.dropped += len(spans) - len(spans) // 2
            spans = spans[:len(spans) // 2]
            encoded = otlp_json(spans)
        if not ended:
            self.root.set_attributes(dict(attributes))
            if self.dropped:
                self.root.set_attribute(DROPPED, self.dropped)
            if error is not None:
                self.root.set_status(Status(StatusCode.ERROR, error))
            self._keeper.forget(self)
            self.root.end()
        root: ReadableSpan = self.root  # type: ignore[assignment]  # the SDK's spans are readable ones
        # the root in a resourceSpans entry of its own, first (OTLP lets a resource come in several)
        self.otlp = {"resourceSpans": [*otlp_json([root])["resourceSpans"], *encoded.get("resourceSpans", ())]}
        return self.otlp

    def close(self) -> None:
        """The turn's block ended before its trace was finished (it raised, or was cancelled): the root span
        ends failed and no more spans are kept; a :meth:`finish` after it (the session's failure ends the turn)
        gives what was kept."""
        if not self.closed:
            self.closed = True
            self._keeper.forget(self)
            self.root.set_status(Status(StatusCode.ERROR, "the turn was interrupted"))
            self.root.end()


class Keeper(SpanProcessor):
    """The span processor that holds the finished spans of the traces being kept (and only theirs)."""

    def __init__(self) -> None:
        self._traces: dict[int, KeptTrace] = {}
        self._lock = threading.Lock()  # spans may end on another thread (the SDK makes no promise)

    def open(self, tracer: Tracer, name: str, attributes: Mapping[str, Any],
             links: Sequence[Link] = ()) -> KeptTrace:
        """Starts a turn's root span, the root of a new trace (not a child of the request that queued the
        turn: the request ends long before the turn), and keeps the spans of that trace."""
        root = tracer.start_span(name, context=Context(), attributes=attributes, kind=SpanKind.INTERNAL,
                                 links=links)
        kept = KeptTrace(self, root)
        with self._lock:
            self._traces[kept.trace_id] = kept
        return kept

    def forget(self, kept: KeptTrace) -> None:
        with self._lock:
            self._traces.pop(kept.trace_id, None)

    def on_end(self, span: ReadableSpan) -> None:
        context = span.context
        if context is None or not self._traces:
            return
        kept = self._traces.get(context.trace_id)
        if kept is None or (span.attributes and _SKIPPED in span.attributes):
            return
        with self._lock:
            kept.add(span)

    @property
    def keeping(self) -> int:
        """How many turns are being kept now (tests: none is left behind)."""
        return len(self._traces)

    def shutdown(self) -> None:
        """Nothing: the keeper outlives a provider (otel.configure replaces the keeping-only one), and a turn
        being kept lets go of its trace itself."""

    def force_flush(self, timeout_millis: int = 30000) -> bool:
        return True


class KeepingSampler(Sampler):
    """The provider's sampler (``OTEL_TRACES_SAMPLER``), except that a kept turn's spans are always recorded:
    a session's trace does not depend on the share of traces an operator exports."""

    def __init__(self, sampler: Sampler) -> None:
        self._sampler = sampler

    def should_sample(self, parent_context: Context | None, trace_id: int, name: str,
                      kind: SpanKind | None = None, attributes: Attributes = None,
                      links: Sequence[Link] | None = None, trace_state: Any = None) -> SamplingResult:
        if keeping_now():
            return SamplingResult(Decision.RECORD_AND_SAMPLE, attributes)
        return self._sampler.should_sample(parent_context, trace_id, name, kind, attributes, links, trace_state)

    def get_description(self) -> str:
        return f"KeepingSampler{{{self._sampler.get_description()}}}"


def otlp_json(spans: Sequence[ReadableSpan]) -> dict[str, Any]:
    """``spans`` as an OTLP JSON ``ExportTraceServiceRequest`` (``resourceSpans``), as the tenant may see them: no
    ``exception`` event (a stack trace of the bridge's, and an exception's text may quote what it was given), a
    failure's message masked of credential-shaped text (redact.py)."""
    message: dict[str, Any] = json_format.MessageToDict(encode_spans(spans), use_integers_for_enums=True)
    for resource in message.get("resourceSpans", ()):
        for scope in resource.get("scopeSpans", ()):
            for span in scope.get("spans", ()):
                _hex_ids(span)
                for link in span.get("links", ()):
                    _hex_ids(link)
                if "events" in span:
                    span["events"] = [event for event in span["events"] if event.get("name") != "exception"]
                status = span.get("status")
                if status and "message" in status:
                    status["message"] = mask_text(status["message"])
    return message


def _hex_ids(span: dict[str, Any]) -> None:
    """protobuf's JSON gives bytes in base64; OTLP/JSON gives trace and span ids in hex."""
    for key in _IDS:
        value = span.get(key)
        if value:
            span[key] = b64decode(value).hex()


KEEPER = Keeper()
"""The one keeper, added to every tracer provider otel.py installs."""
