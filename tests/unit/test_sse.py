"""SSE in both directions: the incremental decoder for upstream bytes, the encoder for ours, and the promise that
the client's bytes do not depend on how TCP or Envoy cut the upstream body.

Each recording in ``recordings/`` is replayed through a whole :class:`ResponseRun` unsplit, split in two at every
byte offset, and in 1-byte pieces; every run must give the client the same bytes (ids and clocks are made
deterministic), and those bytes must pass the framing, schema and order checks of ``tests.support.schema``.
"""

from __future__ import annotations

from typing import Any

import orjson
import pytest

from responses_bridge.engine.sse import DONE, DONE_FRAME, EventTooLarge, SSEDecoder, encode_event
from responses_bridge.store import SQLiteResponseStore
from responses_bridge.store.base import DEFAULT_TENANT
from tests.support.schema import SchemaError, check_stream, parse_sse
from tests.unit import recordings


def decode(*chunks: bytes, flush: bool = True) -> list[bytes]:
    decoder = SSEDecoder()
    out: list[bytes] = []
    for chunk in chunks:
        out.extend(decoder.feed(chunk))
    if flush:
        out.extend(decoder.flush())
    return out


def decode_steps(*chunks: bytes) -> list[list[bytes]]:
    """What each feed returned: when an event comes out matters as much as what comes out."""
    decoder = SSEDecoder()
    return [decoder.feed(chunk) for chunk in chunks]


# --- decoder -------------------------------------------------------------------------------------------------


def test_lf_events() -> None:
    assert decode(b'data: {"a":1}\n\ndata: {"b":2}\n\ndata: [DONE]\n\n') == [b'{"a":1}', b'{"b":2}', DONE]


def test_crlf_and_cr_only_framing() -> None:
    expected = [b"one", b"two", DONE]
    assert decode(b"data: one\r\n\r\ndata: two\r\n\r\ndata: [DONE]\r\n\r\n") == expected
    assert decode(b"data: one\r\rdata: two\r\rdata: [DONE]\r\r") == expected
    assert decode(b"data: one\r\n\ndata: two\n\r\ndata: [DONE]\r\r\n") == expected  # mixed endings


@pytest.mark.parametrize("ending", [b"\n", b"\r\n", b"\r"])
def test_every_two_way_split_gives_the_same_payloads(ending: bytes) -> None:
    raw = b"".join(b"data: " + payload + ending + ending for payload in (b'{"n":1}', b"x\xc3\xa9", b"[DONE]"))
    raw = raw.replace(b"data: x", b": keep-alive" + ending + b"event: message" + ending + b"data: x")
    whole = decode(raw)
    assert whole == [b'{"n":1}', "xé".encode(), DONE]
    for i in range(len(raw) + 1):
        assert decode(raw[:i], raw[i:]) == whole, i
    assert decode(*[raw[i:i + 1] for i in range(len(raw))]) == whole


def test_cr_split_from_its_lf_across_chunks() -> None:
    # the CR already ends the blank line: the event must come out now, not when the next chunk arrives
    assert decode_steps(b"data: a\r\n\r", b"\ndata: b\r\n\r\n") == [[b"a"], [b"b"]]
    assert decode_steps(b"data: a\r", b"\n\r", b"\n") == [[], [b"a"], []]
    assert decode_steps(b"data: a\r\r", b"data: b\r\r") == [[b"a"], [b"b"]]
    # the LF after a chunk-final CR is dropped exactly once, even after empty chunks
    assert decode_steps(b"data: a\r", b"", b"\n", b"\n") == [[], [], [], [b"a"]]
    assert decode(b"data: a\r", b"\n\n") == [b"a"]


def test_events_come_out_as_soon_as_they_are_complete() -> None:
    assert decode_steps(b"data: a\n", b"\n", b"data: b\n\nda", b"ta: c\n\n") == [[], [b"a"], [b"b"], [b"c"]]


def test_multi_line_data_is_joined_with_newlines() -> None:
    assert decode(b"data: {\"a\":\ndata:  1}\n\n") == [b'{"a":\n 1}']
    assert decode(b"data:first\r\ndata:second\r\n\r\n") == [b"first\nsecond"]


def test_comments_and_other_fields_are_ignored() -> None:
    raw = (b": OPENROUTER PROCESSING\n\n"
           b"event: completion\nid: 7\nretry: 100\ndata: payload\n\n"
           b":ping\n\n"
           b"event: only-an-event\n\n"
           b"id: 8\n\n")
    assert decode(raw) == [b"payload"]


def test_data_without_space_and_empty_data() -> None:
    assert decode(b"data:x\n\ndata:\n\ndata: \n\n") == [b"x", b"", b""]
    assert decode(b"data:  two spaces\n\n") == [b" two spaces"]  # only one space belongs to the framing


def test_flush_without_trailing_blank_line() -> None:
    assert decode(b"data: a\n\ndata: [DONE]") == [b"a", DONE]
    assert decode(b"data: a\n\ndata: [DONE]\n") == [b"a", DONE]
    assert decode(b"data: a\r\n\r\ndata: last\r\n") == [b"a", b"last"]
    assert decode(b"data: last\r") == [b"last"]
    assert decode(b"data: a\n\n: just a comment") == [b"a"]
    assert decode(b"") == []
    assert decode(b"data: a\n\n", flush=False) == [b"a"]
    decoder = SSEDecoder()
    decoder.feed(b"data: partial")
    assert decoder.pending == len(b"data: partial")
    assert decoder.flush() == [b"partial"]
    assert decoder.pending == 0
    assert decoder.flush() == []


def test_blank_lines_between_events() -> None:
    assert decode(b"\n\ndata: a\n\n\n\ndata: b\n\n\n") == [b"a", b"b"]


def big_event(size: int, ending: bytes = b"\n") -> tuple[bytes, bytes]:
    """One ``data:`` event whose payload is ``size`` bytes, framed with ``ending``; and that payload."""
    payload = b'{"choices":[{"index":0,"delta":{"content":"' + b"x" * (size - 45) + b'"}}]}'
    return b"data: " + payload + ending + ending, payload


@pytest.mark.parametrize("ending", [b"\n", b"\r\n", b"\r"])
def test_a_long_event_in_small_reads_is_searched_a_bounded_number_of_times(ending: bytes) -> None:
    """2 MB in 512-byte reads: each read is searched on its own; the tail is searched again only once, when its
    event ends (searching the whole tail on every read would make ~4,000 passes over up to 2 MB)."""
    raw, payload = big_event(2 * 1024 * 1024, ending)
    raw = b"data: a" + ending + ending + raw + b"data: b" + ending + ending
    decoder = SSEDecoder()
    out: list[bytes] = []
    for start in range(0, len(raw), 512):
        out.extend(decoder.feed(raw[start:start + 512]))
    out.extend(decoder.flush())
    assert out == [b"a", payload, b"b"]
    assert decoder.scanned <= len(raw)


def test_a_long_event_cut_anywhere_near_its_end_decodes_the_same() -> None:
    """The separator of a long event may straddle two reads, or sit at the start or end of one."""
    raw, payload = big_event(64 * 1024)
    raw += b"data: next\n\n"
    for cut in range(len(raw) - 30, len(raw) + 1):
        pieces = [raw[i:min(i + 100, cut)] for i in range(0, cut, 100)] + [raw[cut:]]
        assert decode(*pieces) == [payload, b"next"], cut


def test_an_event_over_the_limit_is_refused_while_it_arrives() -> None:
    decoder = SSEDecoder(max_event_bytes=4096)
    raw, _ = big_event(10_000)
    with pytest.raises(EventTooLarge) as refused:
        for start in range(0, len(raw), 512):
            decoder.feed(raw[start:start + 512])
    assert refused.value.limit == 4096
    assert decoder.pending <= 4096 + 512  # refused as soon as the tail passed the limit, not at the event's end


@pytest.mark.parametrize("pieces", [
    lambda raw: [raw],  # whole, in one read
    lambda raw: [raw[:100], raw[100:]],  # a short tail, then the rest at once
    lambda raw: [b"data: a\n\n" + raw],  # after a small event in the same read
])
def test_an_event_over_the_limit_in_one_read_is_refused(pieces: Any) -> None:
    raw, _ = big_event(10_000)
    decoder = SSEDecoder(max_event_bytes=4096)
    with pytest.raises(EventTooLarge):
        for piece in pieces(raw):
            decoder.feed(piece)


def test_events_up_to_the_limit_pass() -> None:
    raw, payload = big_event(4000)
    decoder = SSEDecoder(max_event_bytes=len(raw) - 2)  # the event without its blank line
    assert decoder.feed(raw + raw) == [payload, payload]
    assert [p for start in range(0, len(raw), 300) for p in decoder.feed(raw[start:start + 300])] == [payload]


# --- encoder -------------------------------------------------------------------------------------------------


def test_encode_event_frames_one_line_of_json() -> None:
    event = {"type": "response.output_text.delta", "sequence_number": 3, "item_id": "msg_1", "output_index": 0,
             "content_index": 0, "delta": "line one\nline two\r\n\u2028é", "logprobs": []}
    frame = encode_event(event)
    assert frame.startswith(b"event: response.output_text.delta\ndata: {")
    assert frame.endswith(b"}\n\n") and frame.count(b"\n") == 3 and b"\r" not in frame
    assert orjson.loads(frame.split(b"\n")[1][len(b"data: "):]) == event
    assert parse_sse(frame + DONE_FRAME) == [event]
    assert decode(frame) == [orjson.dumps(event)]  # our own decoder reads our own frames


@pytest.mark.parametrize("raw", [
    b'event: a\ndata: {"type":"a"}\n\n',  # no [DONE]
    b'event: a\ndata: {"type":"b"}\n\ndata: [DONE]\n\n',  # event line does not match the type
    b'data: {"type":"a"}\n\ndata: [DONE]\n\n',  # no event line
    b'event: a\ndata: {"type":\ndata: "a"}\n\ndata: [DONE]\n\n',  # data over two lines
    b'event: a\r\ndata: {"type":"a"}\r\n\r\ndata: [DONE]\r\n\r\n',  # CRLF
    b'event: a\ndata: {"type":"a"}\ndata: [DONE]\n\n',  # event not terminated
    b'event: a\ndata: [1]\n\ndata: [DONE]\n\n',  # not an object
    b'event: a\ndata: {"type":"a"}\n\n\ndata: [DONE]\n\n',  # stray blank line
])
def test_parse_sse_rejects_bad_framing(raw: bytes) -> None:
    with pytest.raises(SchemaError):
        parse_sse(raw)


# --- whole exchanges, cut anywhere ---------------------------------------------------------------------------


@pytest.mark.parametrize("name", recordings.names())
async def test_client_bytes_do_not_depend_on_how_the_upstream_body_is_cut(
        name: str, store: SQLiteResponseStore, determinism: recordings.Determinism) -> None:
    raw = recordings.load(name)
    body = recordings.request(name, stream=True, store=False)

    async def run(pieces: list[bytes]) -> bytes:
        determinism.reset()
        result = await recordings.drive(store, body, pieces)
        assert result.status == 200 and result.reply.continues_stream
        return result.body

    whole = await run([raw])
    events = check_stream(whole)
    assert events[-1]["type"] in ("response.completed", "response.incomplete")
    for pieces in recordings.split_two(raw):
        if await run(pieces) != whole:
            split = len(pieces[0])
            pytest.fail(f"{name}: cut at byte {split} ({raw[max(0, split - 20):split]!r} | "
                        f"{raw[split:split + 20]!r}) changes what the client gets")
    assert await run(recordings.split_bytes(raw)) == whole


@pytest.mark.parametrize("name", ["text_usage", "think", "parallel_tools"])
async def test_line_endings_do_not_change_the_client_bytes(
        name: str, store: SQLiteResponseStore, determinism: recordings.Determinism) -> None:
    raw = recordings.load(name)
    body = recordings.request(name, stream=True, store=False)
    outputs = []
    for variant in (raw, raw.replace(b"\n", b"\r\n"), raw.replace(b"\n", b"\r"), raw.removesuffix(b"\n\n")):
        determinism.reset()
        outputs.append((await recordings.drive(store, body, recordings.split_bytes(variant))).body)
    assert outputs[1:] == outputs[:1] * 3


async def test_events_reach_the_client_while_the_upstream_streams(
        store: SQLiteResponseStore, determinism: recordings.Determinism) -> None:
    """Each upstream event yields its client events in the same call: nothing waits for the end of the body."""
    from responses_bridge.engine.options import EngineOptions
    from responses_bridge.run.response_run import ResponseRun

    raw = recordings.load("text_usage")
    exchange = ResponseRun(store, EngineOptions(), tenant=DEFAULT_TENANT)
    await exchange.begin(orjson.dumps(recordings.request("text_usage", stream=True, store=False)))
    head = exchange.on_upstream_headers(200, recordings.SSE)
    assert head is not None and [e["type"] for e in parse_sse(head + DONE_FRAME)] == [
        "response.created", "response.in_progress"]
    sent = [head]
    deltas = 0
    for frame in raw.split(b"\n\n")[:-1]:
        out = exchange.on_upstream_chunk(frame + b"\n\n")
        sent.append(out)
        if b'"content":"' in frame and b'"content":""' not in frame:
            events = parse_sse(out + DONE_FRAME)
            assert events and events[-1]["type"] == "response.output_text.delta"
            deltas += 1
    assert deltas >= 3
    reply = await exchange.finish()
    assert [e["type"] for e in parse_sse(reply.body)] == [  # the upstream's end closes the open item
        "response.output_text.done", "response.content_part.done", "response.output_item.done",
        "response.completed"]
    check_stream(b"".join(sent) + reply.body)
