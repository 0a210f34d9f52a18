"""An agent session's turn kept as a trace (observability/kept_traces.py): the spans made inside ``tracing.keep``
and only those, whether or not spans are exported, bounded in spans and bytes, encoded as OTLP JSON with hex ids;
nothing made or held for work outside a kept turn."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator

import orjson
import pytest
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

from responses_bridge.observability import kept_traces, tracing
from responses_bridge.observability.kept_traces import KEEPER, MAX_SPANS, MAX_TRACE_BYTES


@pytest.fixture(autouse=True)
def tracing_off() -> Iterator[None]:
    tracing.shutdown_tracing()
    yield
    tracing.shutdown_tracing()
    assert KEEPER.keeping == 0  # no turn is left held


def spans_of(otlp: dict[str, object]) -> list[dict[str, object]]:
    return [span for resource in otlp["resourceSpans"] for scope in resource["scopeSpans"]  # type: ignore[attr-defined]
            for span in scope["spans"]]


def attribute(span: dict[str, object], key: str) -> object:
    for entry in span.get("attributes", []):  # type: ignore[attr-defined]
        if entry["key"] == key:
            return next(iter(entry["value"].values()))
    return None


def test_outside_a_kept_turn_no_span_is_made() -> None:
    assert tracing.keeping_available()
    with tracing.span("upstream POST chat/completions") as span:
        assert span is None
    assert not tracing.recording()


async def test_a_turn_keeps_its_spans_and_its_tasks_spans_with_hex_ids() -> None:
    async def tool() -> None:
        with tracing.span("tool hosted_shell", {"gen_ai.tool.name": "shell"}) as span:
            assert span is not None
            tracing.fail_current("the commands ended incomplete")

    with tracing.keep("invoke_agent helper", {"gen_ai.agent.id": "agt_1"}) as kept:
        assert kept is not None and tracing.recording()
        with tracing.span("chat m", {"gen_ai.usage.input_tokens": 7}):
            with tracing.span("store save", {"db.system.name": "sqlite"}):  # a store operation: not kept
                pass
        await asyncio.create_task(tool())  # a task started in the turn (the turn's background response)
        otlp = kept.finish({"responses_bridge.turn.status": "completed"})
    assert not tracing.recording()
    spans = spans_of(otlp)
    assert [span["name"] for span in spans] == ["invoke_agent helper", "chat m", "tool hosted_shell"]
    root = spans[0]
    assert root["traceId"] == format(kept.trace_id, "032x") and len(str(root["spanId"])) == 16
    assert all(span["traceId"] == root["traceId"] for span in spans)
    assert all(span["parentSpanId"] == root["spanId"] for span in spans[1:])
    assert spans[2]["status"] == {"message": "the commands ended incomplete", "code": 2}
    assert attribute(root, "responses_bridge.turn.status") == "completed"
    assert attribute(spans[1], "gen_ai.usage.input_tokens") == "7"  # OTLP JSON: 64-bit ints as strings
    assert spans[1]["kind"] == 1  # enums as integers


def test_a_failures_stack_and_credentials_stay_out_of_the_trace() -> None:
    with tracing.keep("invoke_agent a", {}) as kept:
        assert kept is not None
        with pytest.raises(ConnectionError):
            with tracing.span("tool mcp"):
                raise ConnectionError("refused: Authorization: Bearer tok_abcdef123456 at https://u:pw@mcp.test/")
        otlp = kept.finish({})
    [_, failed] = spans_of(otlp)
    text = orjson.dumps(otlp).decode()
    assert "tok_abcdef123456" not in text and ":pw@" not in text and "Traceback" not in text
    assert failed["status"]["code"] == 2 and "ConnectionError" in failed["status"]["message"]  # type: ignore[index]
    assert failed.get("events", []) == []


def test_a_turns_spans_are_bounded_in_number() -> None:
    with tracing.keep("invoke_agent a", {}) as kept:
        assert kept is not None
        for index in range(MAX_SPANS + 10):
            with tracing.span(f"chat {index}"):
                pass
        otlp = kept.finish({})
    spans = spans_of(otlp)
    assert len(spans) == MAX_SPANS
    assert attribute(spans[0], kept_traces.DROPPED) == "11"


def test_a_trace_is_bounded_in_bytes_keeping_the_earliest_spans() -> None:
    big = "x" * 20_000
    with tracing.keep("invoke_agent a", {}) as kept:
        assert kept is not None
        for index in range(120):  # 2.4 MB of attributes
            with tracing.span(f"tool {index}", {"note": big}):
                pass
        otlp = kept.finish({})
    assert len(orjson.dumps(otlp)) <= MAX_TRACE_BYTES
    spans = spans_of(otlp)
    assert spans[0]["name"] == "invoke_agent a" and spans[1]["name"] == "tool 0"
    assert int(attribute(spans[0], kept_traces.DROPPED)) == 120 - (len(spans) - 1)  # type: ignore[arg-type]


def test_a_turn_that_does_not_finish_holds_nothing_after() -> None:
    with pytest.raises(RuntimeError):
        with tracing.keep("invoke_agent a", {}) as kept:
            assert kept is not None and KEEPER.keeping == 1
            with tracing.span("chat m"):
                pass
            raise RuntimeError("the turn broke")
    assert KEEPER.keeping == 0
    otlp = kept.finish({"responses_bridge.turn.status": "failed"})  # the session's failure ends the turn after
    root, chat = spans_of(otlp)
    assert root["status"] == {"message": "the turn was interrupted", "code": 2} and chat["name"] == "chat m"


def test_kept_turns_are_recorded_whatever_the_exporters_sampler(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("OTEL_TRACES_SAMPLER", "always_off")  # read by the SDK from the environment
    spans = InMemorySpanExporter()
    assert tracing.configure_tracing({}, exporter=spans)
    with tracing.span("POST /v1/responses") as span:  # sampled out: not recorded
        assert not span.is_recording()
    with tracing.keep("invoke_agent a", {}) as kept:
        assert kept is not None
        with tracing.span("chat m"):
            pass
        otlp = kept.finish({})
    assert [span["name"] for span in spans_of(otlp)] == ["invoke_agent a", "chat m"]
    assert sorted(span.name for span in spans.get_finished_spans()) == ["chat m", "invoke_agent a"]  # exported too
