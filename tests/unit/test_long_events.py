"""A long upstream event (megabytes of text in one Chat Completions chunk) is translated and written in bounded
steps, with the event loop free between them, so one large answer on one door never stalls the other door.

Nothing here is timed: the steps are counted (how many there are, how large each one's bytes are) and so are the
passes a concurrent coroutine gets to make while the work goes on.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable
from typing import Any

import orjson
import pytest

from responses_bridge.adapters.pieces import PIECE_BYTES, joined_pieces, pieces, write_in_pieces
from responses_bridge.engine.options import EngineOptions
from responses_bridge.engine.responses.long_events import LONG_EVENT_BYTES, SLICE_CHARS, split_chunk
from responses_bridge.run.drive import catch_up
from responses_bridge.run.response_run import ResponseRun
from responses_bridge.store import SQLiteResponseStore
from responses_bridge.store.base import DEFAULT_TENANT
from tests.support.schema import check_stream
from tests.unit.test_output_builder import build

BIG = 2 * 1024 * 1024


def frame(delta: dict[str, Any], finish: str | None = None, **extra: Any) -> bytes:
    chunk = {"id": "chatcmpl-1", "object": "chat.completion.chunk", "created": 1, "model": "m",
             "choices": [{"index": 0, "delta": delta, "logprobs": None, "finish_reason": finish}], **extra}
    return b"data: " + orjson.dumps(chunk) + b"\n\n"


def text_of(events: list[dict[str, Any]], kind: str = "response.output_text.delta") -> str:
    return "".join(event["delta"] for event in events if event["type"] == kind)


class Passes:
    """A coroutine that counts the event loop's passes while it runs: proof that the loop was free in between."""

    def __init__(self) -> None:
        self.count = 0
        self._task: asyncio.Task[None] | None = None

    async def _run(self) -> None:
        while True:
            await asyncio.sleep(0)
            self.count += 1

    async def during(self, work: Awaitable[Any]) -> Any:
        self._task = asyncio.ensure_future(self._run())
        await asyncio.sleep(0)  # let it start: the passes counted are the ones the work leaves it
        self.count = 0
        try:
            return await work
        finally:
            self._task.cancel()


async def streaming_run(store: SQLiteResponseStore) -> tuple[ResponseRun, bytes]:
    """A run whose upstream answer is streaming, and the head of its client's stream."""
    run = ResponseRun(store, EngineOptions(), tenant=DEFAULT_TENANT)
    await run.begin(orjson.dumps({"model": "m", "input": "hi", "stream": True, "store": False}))
    head = run.on_upstream_headers(200, "text/event-stream")
    assert head
    return run, head


# --- the engine: a long chunk as the smaller chunks an upstream could have sent ---------------------------------


def test_a_long_text_is_cut_into_slices_and_the_rest_comes_last() -> None:
    text = "".join(chr(0x41 + n % 26) for n in range(3 * SLICE_CHARS + 5))
    chunk = {"id": "c", "usage": {"prompt_tokens": 1},
             "choices": [{"index": 0, "delta": {"role": "assistant", "content": text, "annotations": []},
                          "logprobs": {"content": [{"token": "A", "logprob": -0.1}]}, "finish_reason": "stop"}]}
    parts = split_chunk(chunk)
    assert len(parts) == 4
    deltas = [part["choices"][0]["delta"] for part in parts]
    assert "".join(delta["content"] for delta in deltas) == text
    assert all(len(delta["content"]) <= SLICE_CHARS for delta in deltas)
    assert parts[0]["choices"][0]["logprobs"] == chunk["choices"][0]["logprobs"]  # with the first slice, once
    assert all(not part["choices"][0].get("logprobs") for part in parts[1:])
    assert all("finish_reason" not in part["choices"][0] and "usage" not in part for part in parts[:-1])
    last = parts[-1]
    assert last["usage"] == chunk["usage"] and last["choices"][0]["finish_reason"] == "stop"
    assert deltas[-1]["role"] == "assistant" and deltas[-1]["annotations"] == []
    assert chunk["choices"][0]["delta"]["content"] == text  # the upstream's chunk itself is left as it was


def test_reasoning_comes_before_content_slice_by_slice() -> None:
    reasoning, content = "r" * (SLICE_CHARS + 1), "c" * (SLICE_CHARS * 2)
    parts = split_chunk({"choices": [{"index": 0, "delta": {"reasoning": reasoning, "content": content}}]})
    fields = [next(iter(field for field in part["choices"][0]["delta"])) for part in parts]
    assert fields == ["reasoning_content", "reasoning_content", "content", "content"]


@pytest.mark.parametrize("chunk", [
    {"choices": [{"index": 0, "delta": {"content": "short"}}]},
    {"error": {"message": "x"}, "choices": [{"index": 0, "delta": {"content": "x" * (SLICE_CHARS * 2)}}]},
    {"choices": [{"index": 0, "delta": {"content": [{"type": "text", "text": "x" * (SLICE_CHARS * 2)}]}}]},
    {"choices": {"not": "a list"}},
])
def test_other_chunks_are_left_whole(chunk: dict[str, Any]) -> None:
    assert split_chunk(chunk) == [chunk]


def test_the_slices_make_the_same_output_as_the_whole_chunk() -> None:
    text = "é\"\\\n" * (SLICE_CHARS // 2)  # characters that escape, and one that is two bytes in UTF-8
    chunk = {"choices": [{"index": 0, "delta": {"content": text}, "finish_reason": "stop"}]}
    outputs = []
    for chunks in ([chunk], split_chunk(chunk)):
        response, events = build(chunks)  # fed as the exchange feeds them, the events checked
        assert text_of(events) == text
        outputs.append(response["output"])
    assert outputs[0][0]["content"] == outputs[1][0]["content"]


# --- the run: each step bounded, the loop free between them ---------------------------------------------------


async def test_a_long_event_is_translated_in_bounded_steps_with_the_loop_free_between(
        store: SQLiteResponseStore) -> None:
    run, head = await streaming_run(store)
    text = "x" * BIG
    raw = frame({"role": "assistant", "content": ""}) + frame({"content": text}) + frame({}, "stop") \
        + b"data: [DONE]\n\n"
    out: list[bytes] = []

    async def write(data: bytes) -> None:
        out.append(data)

    passes, steps = Passes(), 0
    for start in range(0, len(raw), 512):
        data = run.on_upstream_chunk(raw[start:start + 512])
        if data:
            out.append(data)
        if run.backlog:
            before = len(out)
            await passes.during(catch_up(run, write))
            steps += len(out) - before
    assert steps >= BIG // SLICE_CHARS  # one step per slice at least ...
    assert passes.count >= steps  # ... and the loop made a pass before each one
    assert max(len(data) for data in out) < 2 * SLICE_CHARS  # no step's bytes hold the whole text
    passes = Passes()
    reply = await passes.during(run.finish())
    assert passes.count >= 4  # the terminal events, each carrying the text, are encoded a pass apart
    events = check_stream(head + b"".join(out) + reply.body)
    assert text_of(events) == text
    assert events[-1]["response"]["output"][0]["content"][0]["text"] == text


async def test_a_door_that_does_not_catch_up_gets_the_same_events(store: SQLiteResponseStore) -> None:
    """The backlog is only a chance to yield: the next chunk (or the end of the answer) does what is left, in
    order."""
    text = "y" * (LONG_EVENT_BYTES * 2)
    raw = frame({"role": "assistant", "content": ""}) + frame({"content": text}) + frame({"content": " end"}) \
        + frame({}, "stop") + b"data: [DONE]\n\n"
    streams = []
    for catch in (True, False):
        run, out = await streaming_run(store)
        for start in range(0, len(raw), 4096):
            out += run.on_upstream_chunk(raw[start:start + 4096])
            while catch and run.backlog:
                out += run.catch_up()
        events = check_stream(out + (await run.finish()).body)
        streams.append([{key: value for key, value in event.items() if key not in ("item_id", "response", "item")}
                        for event in events])
        assert text_of(events) == text + " end"
    assert streams[0] == streams[1]


async def test_ordinary_answers_take_no_extra_step(store: SQLiteResponseStore) -> None:
    run, _ = await streaming_run(store)
    raw = frame({"role": "assistant", "content": ""}) + frame({"content": "hello"}) + frame({}, "stop") \
        + b"data: [DONE]\n\n"
    assert run.on_upstream_chunk(raw) and not run.backlog
    passes = Passes()
    await passes.during(run.finish())
    assert passes.count == 0  # no terminal event is long: finish yields to nobody


# --- the doors: writes in pieces ------------------------------------------------------------------------------


def test_pieces_are_bounded_and_never_cut_a_short_event() -> None:
    events = [b"event: e\ndata: " + b"a" * size + b"\n\n" for size in (10, 70_000, 300, 5, 140_000, 20)]
    data = b"".join(events)
    cut = [bytes(piece) for piece in pieces(data)]
    assert b"".join(cut) == data and all(len(piece) <= PIECE_BYTES for piece in cut)
    ends = {sum(map(len, events[:n + 1])) for n in range(len(events))}
    boundaries, position = set(), 0
    for piece in cut:
        position += len(piece)
        boundaries.add(position)
    for n, event in enumerate(events):  # every short event lies within one piece
        if len(event) <= PIECE_BYTES:
            start = sum(map(len, events[:n]))
            assert not any(start < boundary < start + len(event) for boundary in boundaries)
    assert ends & boundaries


def test_joined_pieces_join_small_parts_and_cut_large_ones() -> None:
    parts = [b"head\n\n", b"", b"x" * (PIECE_BYTES * 2 + 3) + b"\n\n", b"data: [DONE]\n\n"]
    bodies = list(joined_pieces(parts))
    assert b"".join(bodies) == b"".join(parts) and all(len(body) <= PIECE_BYTES for body in bodies)
    assert list(joined_pieces([b"a\n\n", b"b\n\n"])) == [b"a\n\nb\n\n"]
    assert list(joined_pieces([])) == [b""]


async def test_a_large_write_goes_out_in_pieces_with_the_loop_free_between() -> None:
    data = b"z" * (PIECE_BYTES * 8)
    written: list[int] = []

    async def write(piece: memoryview) -> None:
        written.append(len(piece))

    passes = Passes()
    await passes.during(write_in_pieces(write, data))
    assert written == [PIECE_BYTES] * 8 and passes.count >= 7
