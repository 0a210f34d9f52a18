"""The observability helpers on their own: request ids, the trace context a request carries, spans and their
parents (the SDK's in-memory exporter), the no-op path when tracing is off, and token counting."""

from __future__ import annotations

import io
import json
import logging
import sys
import uuid
from collections.abc import Iterator
from typing import Any

import pytest
import structlog
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from prometheus_client import REGISTRY

from responses_bridge.observability import logs, metrics, tracing

TRACE_ID = "4bf92f3577b34da6a3ce929d0e0e4736"
PARENT_ID = "00f067aa0ba902b7"


@pytest.fixture
def exporter() -> Iterator[InMemorySpanExporter]:
    spans = InMemorySpanExporter()
    assert tracing.configure_tracing({}, exporter=spans)
    try:
        yield spans
    finally:
        tracing.shutdown_tracing()


@pytest.mark.parametrize(("value", "kept"), [
    ("f81d4fae-7dec-11d0-a765-00a0c91e6bf6", True),
    ("abc", True),
    ("", False),
    (None, False),
    ("has space", False),
    ("new\nline", False),
    ("é-not-ascii", False),
    ("x" * 129, False),
])
def test_request_ids_are_taken_only_when_safe_to_echo_and_log(value: str | None, kept: bool) -> None:
    assert logs.clean_request_id(value) == (value if kept else None)


def test_new_request_ids_look_like_envoys() -> None:
    first, second = logs.new_request_id(), logs.new_request_id()
    assert first != second and len(first) == 36 and first.count("-") == 4
    for made in (logs.new_request_id() for _ in range(200)):  # a real UUID4, as Envoy's x-request-id is
        parsed = uuid.UUID(made)
        assert str(parsed) == made and parsed.version == 4 and parsed.variant == uuid.RFC_4122


@pytest.fixture
def json_logs(monkeypatch: pytest.MonkeyPatch) -> Iterator[io.StringIO]:
    """JSON logging into a buffer for one test; the process's configuration is put back after it."""
    root = logging.getLogger()
    handlers, level = root.handlers[:], root.level
    buffer = io.StringIO()
    monkeypatch.setattr(sys, "stderr", buffer)
    logs.configure_logging("info", "json")
    try:
        yield buffer
    finally:
        structlog.reset_defaults()
        root.handlers[:] = handlers
        root.setLevel(level)


def test_the_bound_request_id_is_in_every_json_line_and_gone_after(json_logs: io.StringIO) -> None:
    logging.getLogger("aiohttp.test").warning("from the standard library")
    log = structlog.get_logger("test")
    tokens = logs.bind_request_id("rid-1")
    log.info("inside", detail=1)
    logs.unbind_request_id(tokens)
    log.info("outside")
    lines = [json.loads(line) for line in json_logs.getvalue().splitlines()]
    assert [(line["event"], line.get("request_id")) for line in lines] == [
        ("from the standard library", None), ("inside", "rid-1"), ("outside", None)]


def test_tracing_is_off_without_an_endpoint() -> None:
    assert not tracing.configure_tracing({})
    assert not tracing.configure_tracing({"OTEL_EXPORTER_OTLP_ENDPOINT": "http://127.0.0.1:1",
                                          "OTEL_SDK_DISABLED": "true"})
    assert not tracing.ENABLED
    # off, a span is one shared do-nothing context manager: no span object is made
    assert tracing.span("a") is tracing.span("b")
    with tracing.span("a") as span:
        assert span is None
    headers: dict[str, str] = {}
    tracing.inject(headers)
    assert headers == {}


def test_an_endpoint_turns_tracing_on() -> None:
    try:
        assert tracing.configure_tracing({"OTEL_EXPORTER_OTLP_TRACES_ENDPOINT": "http://127.0.0.1:1/v1/traces"})
        assert tracing.ENABLED
    finally:
        tracing.shutdown_tracing()
    assert not tracing.ENABLED


@pytest.mark.parametrize("headers", [
    {"traceparent": f"00-{TRACE_ID}-{PARENT_ID}-01"},
    {"b3": f"{TRACE_ID}-{PARENT_ID}-1"},
    {"x-b3-traceid": TRACE_ID, "x-b3-spanid": PARENT_ID, "x-b3-sampled": "1"},
], ids=["traceparent", "b3-single", "b3-multi"])
def test_spans_are_children_of_the_context_the_request_carries(exporter: InMemorySpanExporter,
                                                               headers: dict[str, str]) -> None:
    request = tracing.start_span("request", tracing.extract(headers), kind=tracing.SpanKind.SERVER)
    with tracing.use(request):
        with tracing.span("store save"):
            pass
        carried: dict[str, str] = {}
        with tracing.span("upstream call") as call:
            tracing.inject(carried)
    with tracing.span_in("phase", tracing.context_with(request)):
        pass
    tracing.end(request)
    spans = {span.name: span for span in exporter.get_finished_spans()}
    assert set(spans) == {"request", "store save", "upstream call", "phase"}
    root = spans["request"]
    assert format(root.context.trace_id, "032x") == TRACE_ID
    assert format(root.parent.span_id, "016x") == PARENT_ID
    for name in ("store save", "upstream call", "phase"):
        assert spans[name].parent.span_id == root.context.span_id
        assert spans[name].context.trace_id == root.context.trace_id
    assert carried["traceparent"] == f"00-{TRACE_ID}-{format(call.get_span_context().span_id, '016x')}-01"


def test_no_trace_context_means_a_new_trace(exporter: InMemorySpanExporter) -> None:
    assert tracing.extract({}) is None
    assert tracing.extract({"traceparent": "garbage"}) is None
    tracing.end(tracing.start_span("request", None))
    (span,) = exporter.get_finished_spans()
    assert span.parent is None


def test_a_failing_block_marks_its_span_failed(exporter: InMemorySpanExporter) -> None:
    with pytest.raises(RuntimeError), tracing.span("store save"):
        raise RuntimeError("disk full")
    (span,) = exporter.get_finished_spans()
    assert not span.status.is_ok


def test_usage_counts_tokens_by_model() -> None:
    def count(direction: str) -> float:
        return REGISTRY.get_sample_value("responses_bridge_tokens_total",
                                         {"model": "unit-model", "direction": direction}) or 0.0

    before = count("input"), count("output")
    metrics.record_usage({"model": "unit-model", "usage": {"input_tokens": 7, "output_tokens": 3}})
    metrics.record_usage({"model": "unit-model", "usage": None})  # a failed response: nothing to count
    assert (count("input") - before[0], count("output") - before[1]) == (7, 3)


def test_the_dashboard_queries_only_metrics_the_bridge_serves() -> None:
    """docs/grafana-dashboard.json: every metric a panel queries is one ``/metrics`` has (a renamed metric
    would leave an empty panel)."""
    import re
    from pathlib import Path

    import responses_bridge.adapters.http.app  # every module that defines metrics is loaded
    import responses_bridge.store.sqlite  # noqa: F401

    dashboard = json.loads((Path(__file__).resolve().parents[2] / "docs" / "grafana-dashboard.json").read_text())
    served = {family.name for family in REGISTRY.collect()}  # a counter's family name has no _total
    queried = {re.sub(r"_(total|bucket|count|sum)$", "", name) for panel in dashboard["panels"]
               for target in panel["targets"] for name in re.findall(r"responses_bridge_[a-z_]+", target["expr"])}
    assert len(queried) >= 14
    assert queried <= served, sorted(queried - served)


@pytest.mark.parametrize("make", [metrics.observer, metrics.loop_observer], ids=["observer", "loop_observer"])
def test_observer_counts_as_the_histogram_does(make: Any) -> None:
    """metrics.observer, the per-request observation, and metrics.loop_observer, the ext_proc door's per-message
    one (without the value's mutex): every bucket, count and sum as prometheus_client's own observe gives them, at
    the bounds, between them, past the last and below the first."""
    from prometheus_client import CollectorRegistry, Histogram, generate_latest

    bounds = (0.0005, 0.001, 0.0025, 0.01, 0.1, 1.0)
    theirs, ours = CollectorRegistry(), CollectorRegistry()
    reference = Histogram("x_seconds", "x", ["phase"], buckets=bounds, registry=theirs).labels("a")
    observe = make(Histogram("x_seconds", "x", ["phase"], buckets=bounds, registry=ours).labels("a"))
    for amount in (*bounds, 0.0, -1.0, 0.0007, 0.05, 0.99, 1.5, 1e9, 0.001):
        reference.observe(amount)
        observe(amount)

    def samples(registry: CollectorRegistry) -> list[str]:
        return [line for line in generate_latest(registry).decode().splitlines() if "_created" not in line]

    assert samples(ours) == samples(theirs)
    assert 'x_seconds_bucket{le="0.001",phase="a"} 6.0' in samples(ours)  # -1, 0, 0.0005, 0.0007, 0.001 twice


@pytest.mark.parametrize("make", [metrics.adder, metrics.loop_adder], ids=["adder", "loop_adder"])
def test_adder_and_setter_count_as_the_metric_does(make: Any) -> None:
    """metrics.adder (and metrics.loop_adder, without the value's mutex) and metrics.setter, the per-request
    counts: what inc, dec and set give, exposed alike."""
    from prometheus_client import CollectorRegistry, Counter, Gauge, generate_latest

    theirs, ours = CollectorRegistry(), CollectorRegistry()
    counted = Counter("c_total", "c", ["door"], registry=theirs).labels("x")
    gauged = Gauge("g", "g", registry=theirs)
    held = Gauge("h", "h", registry=theirs)
    add = make(Counter("c_total", "c", ["door"], registry=ours).labels("x"))
    gauge_add = make(Gauge("g", "g", registry=ours))
    held_set = metrics.setter(Gauge("h", "h", registry=ours))
    counted.inc()
    counted.inc(41)
    add(1)
    add(41)
    gauged.inc()
    gauged.inc()
    gauged.dec()
    gauge_add(1)
    gauge_add(1)
    gauge_add(-1)
    held.set(5)
    held_set(5.0)

    def samples(registry: CollectorRegistry) -> list[str]:
        return [line for line in generate_latest(registry).decode().splitlines() if "_created" not in line]

    assert samples(ours) == samples(theirs)
    assert 'c_total{door="x"} 42.0' in samples(ours) and "g 1.0" in samples(ours) and "h 5.0" in samples(ours)
