"""The timing document a stored response keeps (observability/timing.py): milliseconds from the request's arrival,
its waits summed by pool, its spans bounded in number and in the length of what they say, a session turn's
responses joining the turn's own timing once, and a JSON answer's model call settled when it is translated."""

from __future__ import annotations

import asyncio
from collections.abc import Callable

import orjson

from responses_bridge.fairness.share import FairPool
from responses_bridge.observability import timing
from responses_bridge.observability.timing import MAX_ATTRIBUTE_CHARS, MAX_SPANS, Facts, Timing, readable
from responses_bridge.store.timings import timing_columns


def stored(clock: Timing, ended: float) -> dict:  # type: ignore[type-arg]
    """The document as the store keeps it (JSON), read as a page reads it."""
    return readable(orjson.loads(orjson.dumps(clock.document(ended=ended))))


def test_the_document_counts_from_the_arrival() -> None:
    clock = Timing(origin=10.0)
    clock.model_call(10.5, 10.6, 10.7, 10.8, 11.0, ("m", {"output_tokens": 4}, "stop"), (0, 1), failed=False)
    clock.waited("upstream connections", 10.1, 10.4)
    clock.waited("upstream connections", 10.4, 10.5)
    raw = clock.document(ended=11.25)
    assert [round(value, 6) for value in timing_columns(raw)[:2]] == [800.0, 1250.0]  # the row's columns
    assert len(orjson.dumps(raw)) < 600  # a small row part (the blob measured free on a plain save)
    document = stored(clock, 11.25)
    assert document["ttft_ms"] == 800.0 and document["latency_ms"] == 1250.0
    assert document["upstream_headers_ms"] == 600.0 and document["upstream_first_byte_ms"] == 700.0
    assert document["waits_ms"] == {"upstream connections": 400.0}
    model, *waits = document["spans"]
    assert model["name"] == "chat m" and model["kind"] == "model"
    assert (model["start_ms"], model["end_ms"]) == (500, 1000)
    assert model["attributes"]["output"] == [0, 1] and model["attributes"]["first_token_ms"] == 300.0
    assert [wait["kind"] for wait in waits] == ["wait", "wait"]


def test_spans_are_bounded() -> None:
    clock = Timing(origin=0.0)
    for n in range(MAX_SPANS + 10):
        clock.add(f"tool {'x' * 1000}", "tool", n, n + 1, {"gen_ai.tool.name": "y" * 1000})
    document = stored(clock, 1.0)
    assert len(document["spans"]) == MAX_SPANS and document["dropped_spans"] == 10
    span = document["spans"][0]
    assert len(span["name"]) == MAX_ATTRIBUTE_CHARS
    assert len(span["attributes"]["gen_ai.tool.name"]) == MAX_ATTRIBUTE_CHARS


def test_a_json_answer_is_settled_when_it_is_translated() -> None:
    clock = Timing(origin=0.0)
    clock.model_call(0.1, 0.2, 0.3, None, 0.5, None, (0, 0), failed=False)
    asked: list[bool] = []

    def attributes() -> tuple[str, dict[str, int], str]:
        asked.append(True)
        return "m", {"completion_tokens": 3}, "stop"

    clock.settle(2, attributes)
    document = stored(clock, 0.6)
    [call] = document["spans"]
    assert call["attributes"]["output"] == [0, 2] and call["attributes"]["gen_ai.usage.output_tokens"] == 3
    assert document["ttft_ms"] == 500.0
    clock.settle(2, attributes)  # nothing new: not asked again
    assert asked == [True]


def test_a_json_answer_that_asked_for_a_tool_is_settled_as_the_tool_starts() -> None:
    """The tool loop's call: its JSON answer is read after the call ended, then the tool it asked for runs and the
    next call is made. The call's output range, first output and facts are its own, taken before the tool's span
    opens (not the last call's, not never)."""
    clock = Timing(origin=0.0)
    output: list[object] = []
    asked: list[str] = []

    def facts(model: str, tokens: int, finish: str) -> Callable[[], Facts]:
        def read() -> Facts:
            asked.append(finish)
            return model, {"output_tokens": tokens}, finish
        return read

    clock.model_call(0.1, 0.2, 0.3, None, 0.5, None, (0, 0), failed=False,
                     read_later=(output, facts("m", 5, "tool_calls")))
    output.append({"type": "function_call"})  # the answer is read: its call is the response's first item
    token = timing.CURRENT.set(clock)
    try:
        with timing.span("tool lookup", "tool"):
            output.append({"type": "function_call_output"})
    finally:
        timing.CURRENT.reset(token)
    clock.model_call(0.9, 1.0, 1.1, None, 1.3, None, (2, 2), failed=False,
                     read_later=(output, facts("m", 7, "stop")))
    output.append({"type": "message"})
    clock.settle(len(output), facts("m", 7, "stop"))  # the response completes: the last call's answer
    document = stored(clock, 1.4)
    first, tool, last = document["spans"]
    assert tool["kind"] == "tool" and asked == ["tool_calls", "stop"]
    assert first["name"] == "chat m" and first["attributes"]["output"] == [0, 1]
    assert first["attributes"]["gen_ai.usage.output_tokens"] == 5
    assert first["attributes"]["gen_ai.response.finish_reasons"] == ["tool_calls"]
    assert last["attributes"]["output"] == [2, 3] and last["attributes"]["gen_ai.usage.output_tokens"] == 7
    assert document["ttft_ms"] == 500.0  # the first call's item, read as it ended
    assert clock.unsettled is None


def test_a_turns_responses_join_it_once() -> None:
    turn = Timing(origin=0.0)
    response = Timing(origin=1.0, parent=turn)
    response.model_call(1.1, 1.2, 1.3, 1.4, 1.5, None, (0, 1), failed=False)
    response.joined("resp_1", 1.6)
    response.joined("resp_1", 1.7)  # a second save of the same response adds nothing
    document = stored(turn, 2.0)
    names = [(span["name"], span["kind"]) for span in document["spans"]]
    assert names == [("response resp_1", "response"), ("chat", "model")]  # no facts: no model named
    assert document["spans"][1]["attributes"]["response_id"] == "resp_1"
    assert document["spans"][1]["attributes"]["span_index"] == 0
    assert document["ttft_ms"] == 1400.0


async def test_a_pool_records_a_wait_only_when_there_was_one() -> None:
    pool = FairPool(1, lambda tenant: 1, what="test slots", queue=4, units=True)
    token = timing.begin()
    try:
        clock = timing.current()
        assert clock is not None
        await pool.take("a", 1, None)  # at once: nothing recorded
        assert clock.waits is None and clock.spans == []
        waiter = asyncio.ensure_future(pool.take("a", 1, None))
        await asyncio.sleep(0.05)
        pool.give("a", 1)
        await waiter
        assert clock.waits is not None and clock.waits["test slots"] > 0.0
        assert [span[1] for span in clock.spans] == ["wait"]
    finally:
        timing.end(token)


def test_a_replica_noted_is_in_the_document_and_nothing_without_a_timing() -> None:
    timing.note_replica("nowhere")  # no request timed: nothing, no error
    token = timing.begin()
    try:
        timing.note_replica("gpu-2")
        clock = timing.current()
        assert clock is not None and readable(clock.document())["replica"] == "gpu-2"
    finally:
        timing.end(token)
