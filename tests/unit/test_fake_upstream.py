"""The fake upstream must be wire-faithful, or every test built on it proves nothing about real backends."""

from __future__ import annotations

import asyncio
import base64
import math
import re
import struct
import time
from collections.abc import AsyncIterator
from typing import Any

import aiohttp
import openai
import orjson
import pytest

from responses_bridge.demo import fake_server, fake_upstream
from tests.support.sdk import async_sdk

WEATHER_TOOL = {
    "type": "function",
    "function": {
        "name": "get_weather",
        "description": "Weather for a city",
        "parameters": {
            "type": "object",
            "properties": {
                "city": {"type": "string"},
                "days": {"type": "integer"},
                "unit": {"type": "string", "enum": ["celsius", "fahrenheit"]},
                "detailed": {"type": "boolean"},
                "tags": {"type": "array", "items": {"type": "string"}},
                "extra": {"type": "object"},
            },
            "required": ["city"],
        },
    },
}
TIME_TOOL = {"type": "function", "function": {"name": "get_time", "parameters": {"type": "object", "properties": {}}}}
WEATHER_ARGS = {"city": "Paris", "days": 42, "unit": "celsius", "detailed": True, "tags": [], "extra": {}}


@pytest.fixture(scope="module")
async def base_url() -> AsyncIterator[str]:
    runner, port = await fake_server.start()
    yield f"http://127.0.0.1:{port}"
    await runner.cleanup()


@pytest.fixture
async def session() -> AsyncIterator[aiohttp.ClientSession]:
    async with aiohttp.ClientSession() as s:
        yield s


def user(text: Any) -> list[dict[str, Any]]:
    return [{"role": "user", "content": text}]


async def post_json(session: aiohttp.ClientSession, base_url: str, body: dict[str, Any]) -> tuple[int, Any]:
    async with session.post(f"{base_url}/v1/chat/completions", json=body) as resp:
        return resp.status, await resp.json()


async def post_stream(session: aiohttp.ClientSession, base_url: str, body: dict[str, Any]) -> list[Any]:
    """Returns the parsed events after checking the SSE framing byte for byte."""
    async with session.post(f"{base_url}/v1/chat/completions", json={**body, "stream": True}) as resp:
        assert resp.status == 200
        assert resp.content_type == "text/event-stream"
        raw = (await resp.read()).decode()
    assert raw.endswith("data: [DONE]\n\n")
    events = raw.split("\n\n")
    assert events[-1] == ""
    parsed: list[Any] = []
    for event in events[:-1]:
        assert event.startswith("data: ") and "\n" not in event
        payload = event[len("data: "):]
        parsed.append(payload if payload == "[DONE]" else orjson.loads(payload))
    assert parsed.count("[DONE]") == 1
    return parsed[:-1]


def choice_chunks(chunks: list[dict[str, Any]]) -> list[dict[str, Any]]:
    return [c["choices"][0] for c in chunks if c["choices"]]


def deltas(chunks: list[dict[str, Any]], key: str) -> list[str]:
    return [c["delta"][key] for c in choice_chunks(chunks) if key in c["delta"] and c["delta"][key]]


def assemble_tool_calls(chunks: list[dict[str, Any]]) -> list[dict[str, Any]]:
    calls: dict[int, dict[str, Any]] = {}
    for choice in choice_chunks(chunks):
        for piece in choice["delta"].get("tool_calls", []):
            if "id" in piece:
                assert piece["type"] == "function" and piece["function"]["arguments"] == ""
                calls[piece["index"]] = {"id": piece["id"], "type": "function",
                                         "function": {"name": piece["function"]["name"], "arguments": ""}}
            else:
                assert set(piece) == {"index", "function"} and len(piece["function"]["arguments"]) <= 8
                calls[piece["index"]]["function"]["arguments"] += piece["function"]["arguments"]
    return [calls[i] for i in sorted(calls)]


# ------------------------------------------------------------------------------------------- answers


async def test_echo_json(session, base_url):
    status, body = await post_json(session, base_url, {"model": "fake-model", "messages": [
        {"role": "system", "content": "be nice"},
        {"role": "user", "content": [{"type": "text", "text": "hello "}, {"type": "text", "text": "world"}]},
    ]})
    assert status == 200
    assert body["object"] == "chat.completion" and body["id"].startswith("chatcmpl-")
    assert body["model"] == "fake-model" and body["system_fingerprint"] == "fp_fake"
    assert isinstance(body["created"], int) and abs(body["created"] - time.time()) < 5
    choice = body["choices"][0]
    assert choice["message"]["role"] == "assistant"
    assert choice["message"]["content"] == "Echo: hello world"
    assert choice["finish_reason"] == "stop" and choice["logprobs"] is None
    assert "tool_calls" not in choice["message"]
    assert body["usage"] == {
        "prompt_tokens": 6, "completion_tokens": 3, "total_tokens": 9,
        "prompt_tokens_details": {"cached_tokens": 0}, "completion_tokens_details": {"reasoning_tokens": 0},
    }


async def test_echo_without_user_and_after_tool(session, base_url):
    _, body = await post_json(session, base_url, {"model": "m", "messages": [{"role": "system", "content": "x"}]})
    assert body["choices"][0]["message"]["content"] == "Echo: "
    messages = [
        {"role": "user", "content": "call get_weather Paris"},
        {"role": "assistant", "content": None, "tool_calls": [
            {"id": "call_get_weather_0", "type": "function", "function": {"name": "get_weather", "arguments": "{}"}}]},
        {"role": "tool", "tool_call_id": "call_get_weather_0", "content": "sunny"},
    ]
    _, body = await post_json(session, base_url, {"model": "m", "messages": messages, "tools": [WEATHER_TOOL]})
    assert body["choices"][0]["message"]["content"] == "Tool result: sunny"
    assert body["choices"][0]["finish_reason"] == "stop"


async def test_stream_framing_matches_json(session, base_url):
    request = {"model": "m", "messages": user("the quick  brown fox [delay=1]")}
    _, body = await post_json(session, base_url, request)
    chunks = await post_stream(session, base_url, request)
    assert all(c["object"] == "chat.completion.chunk" and c["id"] == chunks[0]["id"] for c in chunks)
    assert all("usage" not in c for c in chunks)
    choices = choice_chunks(chunks)
    assert choices[0]["delta"] == {"role": "assistant", "content": ""}
    assert [c["finish_reason"] for c in choices] == [None] * (len(choices) - 1) + ["stop"]
    assert choices[-1]["delta"] == {}
    content = deltas(chunks, "content")
    assert content == ["Echo: ", "the ", "quick  ", "brown ", "fox"]
    assert "".join(content) == body["choices"][0]["message"]["content"] == "Echo: the quick  brown fox"


async def test_chunks_directive_gives_exact_count(session, base_url):
    request = {"model": "m", "messages": user("hi there [chunks=100]")}
    _, body = await post_json(session, base_url, request)
    content = deltas(await post_stream(session, base_url, request), "content")
    assert len(content) == 100
    assert "".join(content) == body["choices"][0]["message"]["content"]
    assert body["choices"][0]["message"]["content"].startswith("Echo: hi there w1 w2 ")
    assert body["usage"]["completion_tokens"] == 100
    grouped = deltas(await post_stream(session, base_url, {"model": "m", "messages": user("a b c d e [chunks=2]")}),
                     "content")
    assert grouped == ["Echo: a b ", "c d e"]


async def test_app_level_chunk_count_and_delay(session):
    runner, port = await fake_server.start(chunk_count=7, chunk_delay=0.01)
    try:
        started = time.monotonic()
        chunks = await post_stream(session, f"http://127.0.0.1:{port}", {"model": "m", "messages": user("hi")})
        assert len(deltas(chunks, "content")) == 7
        assert time.monotonic() - started >= 0.07
        request = {"model": "m", "messages": user("hi [chunks=3]")}
        chunks = await post_stream(session, f"http://127.0.0.1:{port}", request)
        assert len(deltas(chunks, "content")) == 3
    finally:
        await runner.cleanup()


def test_header_delay_directive_is_parsed_apart_from_delay():
    d, cleaned = fake_upstream.parse_directives("hi [header_delay=250] there [delay=5]")
    assert (d.header_delay_ms, d.delay_ms, cleaned) == (250, 5, "hi there")
    assert fake_upstream.parse_directives("hi")[0].header_delay_ms is None


@pytest.mark.parametrize("stream", [False, True])
async def test_header_delay_holds_the_headers_not_only_the_chunks(session, base_url, stream):
    """The wait is before the status line: a client's time to first byte, not a pause between chunks."""
    body = {"model": "m", "messages": user("a b [header_delay=150]"), "stream": stream}
    plain = {**body, "messages": user("a b [header_delay=0]")}  # the same words: the same usage
    started = time.monotonic()
    async with session.post(f"{base_url}/v1/chat/completions", json=body) as resp:
        headers_after = time.monotonic() - started  # session.post returns once the headers are in
        assert resp.status == 200
        delayed = await resp.read()
    assert headers_after >= 0.15
    async with session.post(f"{base_url}/v1/chat/completions", json=plain) as resp:
        undelayed = await resp.read()
    ids = rb'"id":"chatcmpl-\d+"|"created":\d+'  # the answer is the one it would be without the wait
    assert re.sub(ids, b"", delayed) == re.sub(ids, b"", undelayed)


async def test_first_byte_delay_sends_the_headers_and_holds_the_first_chunk(session, base_url):
    """llama.cpp's streams: the status line at once, the first chunk with the first token."""
    body = {"model": "m", "messages": user("a b [first_byte_delay=60000]"), "stream": True}
    assert fake_upstream.parse_directives("x [first_byte_delay=5]")[0].first_byte_delay_ms == 5
    async with asyncio.timeout(30):
        response = await session.post(f"{base_url}/v1/chat/completions", json=body)
    try:
        assert response.status == 200
        with pytest.raises(TimeoutError):
            await asyncio.wait_for(response.content.readany(), timeout=0.5)  # a minute before the first token
    finally:
        response.close()


async def test_app_level_header_delay_and_errors_without_it(session):
    runner, port = await fake_server.start(header_delay=0.1)
    try:
        url = f"http://127.0.0.1:{port}/v1/chat/completions"
        started = time.monotonic()
        chunks = await post_stream(session, f"http://127.0.0.1:{port}", {"model": "m", "messages": user("hi")})
        assert time.monotonic() - started >= 0.1 and deltas(chunks, "content") == ["Echo: ", "hi"]
        # a refused request is answered before any "prefill": a minute's wait would end in this client's timeout
        body = {"model": "m", "messages": user("x [error=429] [header_delay=60000]"), "stream": True}
        async with session.post(url, json=body, timeout=aiohttp.ClientTimeout(total=20)) as resp:
            assert resp.status == 429
        status, error = await post_json(session, f"http://127.0.0.1:{port}",
                                        {"model": "m", "messages": user("[header_delay=x]")})
        assert status == 400 and "header_delay" in error["error"]["message"]
    finally:
        await runner.cleanup()
    with pytest.raises(ValueError, match="header_delay"):
        fake_server.create_app(header_delay=-1)


async def test_usage_chunk(session, base_url):
    request = {"model": "m", "messages": user("one two three [think]"), "stream_options": {"include_usage": True}}
    chunks = await post_stream(session, base_url, request)
    *earlier, last = chunks
    assert last["choices"] == []
    assert last["usage"] == {
        "prompt_tokens": 5, "completion_tokens": 5 + 4, "total_tokens": 14,
        "prompt_tokens_details": {"cached_tokens": 0}, "completion_tokens_details": {"reasoning_tokens": 5},
    }
    assert all(c["usage"] is None for c in earlier)
    assert choice_chunks(chunks)[-1]["finish_reason"] == "stop"


async def test_think(session, base_url):
    request = {"model": "m", "messages": user("[think] why sky blue")}
    _, body = await post_json(session, base_url, request)
    message = body["choices"][0]["message"]
    assert message["reasoning_content"] == "Thinking about: why sky blue"
    assert message["content"] == "Echo: why sky blue"
    assert body["usage"]["completion_tokens_details"]["reasoning_tokens"] == 5
    chunks = await post_stream(session, base_url, request)
    assert "".join(deltas(chunks, "reasoning_content")) == message["reasoning_content"]
    kinds = [next(iter(c["delta"]), None) for c in choice_chunks(chunks)[1:-1]]
    assert kinds == ["reasoning_content"] * 5 + ["content"] * 4
    _, body = await post_json(session, base_url, {"model": "m", "messages": user("[think_field=reasoning] x")})
    assert body["choices"][0]["message"]["reasoning"] == "Thinking about: x"
    assert "reasoning_content" not in body["choices"][0]["message"]


async def test_refuse(session, base_url):
    request = {"model": "m", "messages": user("do bad things [refuse]")}
    _, body = await post_json(session, base_url, request)
    message = body["choices"][0]["message"]
    assert message["content"] is None and message["refusal"] == "I can't help with that."
    chunks = await post_stream(session, base_url, request)
    assert "".join(deltas(chunks, "refusal")) == "I can't help with that."
    assert deltas(chunks, "content") == []


async def test_length_and_filter(session, base_url):
    _, body = await post_json(session, base_url, {"model": "m", "messages": user("a b c d e [length]")})
    assert body["choices"][0]["message"]["content"] == "Echo: a b"
    assert body["choices"][0]["finish_reason"] == "length"
    request = {"model": "m", "messages": user("a b c d e"), "max_tokens": 4}
    _, body = await post_json(session, base_url, request)
    assert body["choices"][0]["message"]["content"] == "Echo: a b c"
    assert body["choices"][0]["finish_reason"] == "length" and body["usage"]["completion_tokens"] == 4
    chunks = await post_stream(session, base_url, request)
    assert "".join(deltas(chunks, "content")) == "Echo: a b c"
    assert choice_chunks(chunks)[-1]["finish_reason"] == "length"
    _, body = await post_json(session, base_url, {"model": "m", "messages": user("a b"), "max_completion_tokens": 9})
    assert body["choices"][0]["finish_reason"] == "stop"
    chunks = await post_stream(session, base_url, {"model": "m", "messages": user("a b [filter]")})
    assert deltas(chunks, "content") == ["Echo:"]
    assert choice_chunks(chunks)[-1]["finish_reason"] == "content_filter"


async def test_logprobs(session, base_url):
    request = {"model": "m", "messages": user("hé there"), "logprobs": True, "top_logprobs": 3}
    _, body = await post_json(session, base_url, request)
    entries = body["choices"][0]["logprobs"]["content"]
    assert [e["token"] for e in entries] == ["Echo: ", "hé ", "there"]
    assert entries[1]["bytes"] == list("hé ".encode()) and entries[1]["logprob"] == -0.1
    top = [(t["token"], t["logprob"]) for t in entries[1]["top_logprobs"]]
    assert top == [("hé ", -0.1), ("alt1", -2.0), ("alt2", -3.0)]
    chunks = await post_stream(session, base_url, request)
    streamed = [c["logprobs"]["content"][0] for c in choice_chunks(chunks) if c["delta"].get("content")]
    assert streamed == entries
    assert all(c["logprobs"]["refusal"] is None for c in choice_chunks(chunks) if c["delta"].get("content"))


async def test_json_response_format(session, base_url):
    for fmt in ({"type": "json_object"}, {"type": "json_schema", "json_schema": {"name": "x", "schema": {}}}):
        request = {"model": "m", "messages": user('say "hi"'), "response_format": fmt}
        _, body = await post_json(session, base_url, request)
        assert orjson.loads(body["choices"][0]["message"]["content"]) == {"echo": 'say "hi"'}


# ---------------------------------------------------------------------------------------------- tools


async def test_tool_call_json_and_stream_agree(session, base_url):
    request = {"model": "m", "messages": user("please call get_weather Paris."), "tools": [WEATHER_TOOL, TIME_TOOL]}
    _, body = await post_json(session, base_url, request)
    choice = body["choices"][0]
    assert choice["finish_reason"] == "tool_calls" and choice["message"]["content"] is None
    calls = choice["message"]["tool_calls"]
    assert [c["id"] for c in calls] == ["call_get_weather_0"]
    assert orjson.loads(calls[0]["function"]["arguments"]) == WEATHER_ARGS
    chunks = await post_stream(session, base_url, request)
    assert assemble_tool_calls(chunks) == calls
    assert choice_chunks(chunks)[-1]["finish_reason"] == "tool_calls"
    assert sum(1 for c in choice_chunks(chunks) if "tool_calls" in c["delta"]) > 2  # really in pieces


async def test_tool_topics_calls_the_tool_a_question_is_about(session):
    """--tool-topics: suites written for real models ask questions instead of scripting ``call <name>``."""
    question = {"model": "m", "messages": user("What's the weather like in San Francisco?"),
                "tools": [TIME_TOOL, WEATHER_TOOL]}
    runner, port = await fake_server.start(tool_topics=True)
    try:
        _, body = await post_json(session, f"http://127.0.0.1:{port}", question)
        assert [c["function"]["name"] for c in body["choices"][0]["message"]["tool_calls"]] == ["get_weather"]
        _, body = await post_json(session, f"http://127.0.0.1:{port}", {**question, "tool_choice": "none"})
        assert body["choices"][0]["message"]["content"].startswith("Echo: ")
    finally:
        await runner.cleanup()


async def test_tool_topics_searches_for_the_question(session):
    """A topic tool with a string ``query`` (the bridge's file_search / web_search functions) gets the question."""
    search = {"type": "function", "function": {"name": "file_search", "parameters": {
        "type": "object", "properties": {"query": {"type": "string"}}, "required": ["query"]}}}
    question = {"model": "m", "messages": user("Search the files: how is the pump primed? [chunks=2]"),
                "tools": [search]}
    runner, port = await fake_server.start(tool_topics=True)
    try:
        _, body = await post_json(session, f"http://127.0.0.1:{port}", question)
        (call,) = body["choices"][0]["message"]["tool_calls"]
        assert orjson.loads(call["function"]["arguments"]) == {"query": "Search the files: how is the pump primed?"}
    finally:
        await runner.cleanup()


async def test_without_tool_topics_a_question_is_echoed(session, base_url):
    question = {"model": "m", "messages": user("What's the weather like?"), "tools": [WEATHER_TOOL]}
    _, body = await post_json(session, base_url, question)
    assert body["choices"][0]["message"]["content"] == "Echo: What's the weather like?"


async def test_parallel_and_forced_tool_calls(session, base_url):
    base = {"model": "m", "tools": [WEATHER_TOOL, TIME_TOOL]}
    _, body = await post_json(session, base_url, {**base, "messages": user("call get_time then call get_weather")})
    calls = body["choices"][0]["message"]["tool_calls"]
    assert [(c["id"], c["function"]["name"]) for c in calls] == [("call_get_time_0", "get_time"),
                                                                 ("call_get_weather_1", "get_weather")]
    assert orjson.loads(calls[1]["function"]["arguments"])["city"] == "test"
    streamed = assemble_tool_calls(await post_stream(session, base_url, {**base, "messages": user(
        "call get_time then call get_weather")}))
    assert streamed == calls
    _, body = await post_json(session, base_url, {**base, "parallel_tool_calls": False,
                                                  "messages": user("call get_time then call get_weather")})
    assert len(body["choices"][0]["message"]["tool_calls"]) == 1
    forced = {"type": "function", "function": {"name": "get_time"}}
    _, body = await post_json(session, base_url, {**base, "tool_choice": forced, "messages": user("call get_weather")})
    assert [c["function"]["name"] for c in body["choices"][0]["message"]["tool_calls"]] == ["get_time"]
    _, body = await post_json(session, base_url, {**base, "tool_choice": "required", "messages": user("hi")})
    assert body["choices"][0]["message"]["tool_calls"][0]["function"]["name"] == "get_weather"
    _, body = await post_json(session, base_url, {**base, "tool_choice": "none", "messages": user("call get_time")})
    assert body["choices"][0]["message"]["content"] == "Echo: call get_time"
    _, body = await post_json(session, base_url, {"model": "m", "messages": user("call get_time")})
    assert body["choices"][0]["finish_reason"] == "stop"


# ------------------------------------------------------------------------------------------- failures


@pytest.mark.parametrize(("code", "kind"), [(400, "invalid_request_error"), (401, "authentication_error"),
                                            (429, "too_many_requests"), (500, "server_error"), (503, "server_error")])
@pytest.mark.parametrize("stream", [False, True])
async def test_error_directive(session, base_url, code, kind, stream):
    body = {"model": "m", "messages": user(f"boom [error={code}]"), "stream": stream}
    async with session.post(f"{base_url}/v1/chat/completions", json=body) as resp:
        assert resp.status == code and resp.content_type == "application/json"
        error = (await resp.json())["error"]
    assert set(error) == {"message", "type", "param", "code"}
    assert error["message"] == f"fake upstream error {code}" and error["type"] == kind


async def test_cut_breaks_the_body(session, base_url):
    body = {"model": "m", "messages": user("a b c d e f [cut=2]"), "stream": True}
    received = b""
    async with session.post(f"{base_url}/v1/chat/completions", json=body) as resp:
        assert resp.status == 200
        with pytest.raises(aiohttp.ClientPayloadError):
            async for line in resp.content:
                received += line
    events = [orjson.loads(e[6:]) for e in received.decode().split("\n\n") if e]
    assert [c["choices"][0]["delta"].get("content") for c in events] == ["", "Echo: ", "a "]
    assert b"[DONE]" not in received and b"finish_reason\":\"stop" not in received


async def test_stall_and_stall_after(session, base_url):
    started = time.monotonic()
    _, body = await post_json(session, base_url, {"model": "m", "messages": user("x [stall=150]")})
    assert time.monotonic() - started >= 0.15 and body["choices"][0]["message"]["content"] == "Echo: x"
    with pytest.raises(TimeoutError):
        async with session.post(f"{base_url}/v1/chat/completions", timeout=aiohttp.ClientTimeout(total=0.1),
                                json={"model": "m", "messages": user("[stall=2000]")}) as resp:
            await resp.read()
    body = {"model": "m", "messages": user("a b [stall_after=1:150]"), "stream": True}
    async with session.post(f"{base_url}/v1/chat/completions", json=body) as resp:
        first = await resp.content.readuntil(b"\n\n")
        second = await resp.content.readuntil(b"\n\n")
        started = time.monotonic()
        third = await resp.content.readuntil(b"\n\n")
        assert time.monotonic() - started >= 0.1
    assert b"role" in first and b"Echo: " in second and b'"a "' in third


async def test_garbage_line(session, base_url):
    body = {"model": "m", "messages": user("hi [garbage]"), "stream": True}
    async with session.post(f"{base_url}/v1/chat/completions", json=body) as resp:
        events = (await resp.read()).decode().split("\n\n")
    assert b"role" in events[0].encode() and events[1].startswith("data: ")
    with pytest.raises(orjson.JSONDecodeError):
        orjson.loads(events[1][6:])
    assert orjson.loads(events[2][6:])["choices"][0]["delta"] == {"content": "Echo: "}
    assert events[-2] == "data: [DONE]"


async def test_huge_word_streamed_in_small_writes(session, base_url):
    request = {"model": "m", "messages": user("hi there [huge=5000:512]")}
    _, body = await post_json(session, base_url, request)
    assert body["choices"][0]["message"]["content"] == "x" * 5000 + " Echo: hi there"
    content = deltas(await post_stream(session, base_url, request), "content")
    assert content == ["x" * 5000 + " ", "Echo: ", "hi ", "there"]
    http_chunks: list[bytes] = []  # every write of a chunked body is one HTTP chunk
    async with session.post(f"{base_url}/v1/chat/completions", json={**request, "stream": True}) as resp:
        piece = b""
        async for data, end_of_chunk in resp.content.iter_chunks():
            piece += data
            if end_of_chunk:
                http_chunks.append(piece)
                piece = b""
    first = next(i for i, chunk in enumerate(http_chunks) if b"xxxx" in chunk)
    last = next(i for i in range(first, len(http_chunks)) if http_chunks[i].endswith(b"\n\n"))
    assert {len(chunk) for chunk in http_chunks[first:last]} == {512} and len(http_chunks[last]) <= 512
    assert b'"content":"' + b"x" * 5000 + b' "' in b"".join(http_chunks[first:last + 1])


@pytest.mark.parametrize("directive",
                         ["[huge=5]", "[huge=0:5]", "[huge=5:0]", "[huge=1:2:3:4]", "[huge=99999999999:5]"])
async def test_bad_huge_directive_is_400(session, base_url, directive):
    status, body = await post_json(session, base_url, {"model": "m", "messages": user(f"x {directive}")})
    assert status == 400 and "huge" in body["error"]["message"]


BAD_BODIES: list[tuple[Any, str | None]] = [
    ({"messages": user("x")}, "model"),
    ({"model": 3, "messages": user("x")}, "model"),
    ({"model": "m"}, "messages"),
    ({"model": "m", "messages": []}, "messages"),
    ({"model": "m", "messages": "hi"}, "messages"),
    ({"model": "m", "messages": ["hi"]}, "messages[0]"),
    ({"model": "m", "messages": [{"content": "x"}]}, "messages[0].role"),
    ({"model": "m", "messages": [{"role": "wizard", "content": "x"}]}, "messages[0].role"),
    ({"model": "m", "messages": [{"role": "user"}]}, "messages[0].content"),
    ({"model": "m", "messages": [{"role": "user", "content": 5}]}, "messages[0].content"),
    ({"model": "m", "messages": [{"role": "user", "content": [{"type": "text"}]}]}, "messages[0].content[0].text"),
    ({"model": "m", "messages": [{"role": "user", "content": "x"}, {"role": "tool", "content": "r"}]},
     "messages[1].tool_call_id"),
    ({"model": "m", "messages": [{"role": "user", "content": "x"},
                                 {"role": "tool", "tool_call_id": "c", "content": "r"}]}, "messages.[1].role"),
    ({"model": "m", "messages": [{"role": "assistant", "tool_calls": [
        {"id": "c", "type": "function", "function": {"name": "f", "arguments": "{}"}}]},
        {"role": "user", "content": "x"}]}, "messages.[0].role"),
    ({"model": "m", "messages": user("x"), "tools": []}, "tools"),
    ({"model": "m", "messages": user("x"), "tools": [{"type": "function", "function": {}}]}, "tools[0].function.name"),
    ({"model": "m", "messages": user("x"), "tools": [{"type": "function", "function": {"name": "a b"}}]},
     "tools[0].function.name"),
    ({"model": "m", "messages": user("x"), "tool_choice": "auto"}, "tool_choice"),
    ({"model": "m", "messages": user("x"), "parallel_tool_calls": True}, "parallel_tool_calls"),
    ({"model": "m", "messages": user("x"), "tools": [WEATHER_TOOL],
      "tool_choice": {"type": "function", "function": {"name": "nope"}}}, "tool_choice"),
    ({"model": "m", "messages": user("x"), "stream": "yes"}, "stream"),
    ({"model": "m", "messages": user("x"), "stream_options": {"include_usage": True}}, "stream_options"),
    ({"model": "m", "messages": user("x"), "max_tokens": 0}, "max_tokens"),
    ({"model": "m", "messages": user("x"), "max_completion_tokens": "5"}, "max_completion_tokens"),
    ({"model": "m", "messages": user("x"), "temperature": 3}, "temperature"),
    ({"model": "m", "messages": user("x"), "top_logprobs": 2}, "top_logprobs"),
    ({"model": "m", "messages": user("x"), "response_format": {"type": "yaml"}}, "response_format.type"),
    ({"model": "m", "messages": user("x"), "input": "hi"}, "input"),
    ({"model": "m", "messages": user("x [chunks=abc]")}, "messages"),
    ({"model": "m", "messages": user("x [error=200]")}, "messages"),
    ([1, 2], None),
    ("just a string", None),
]


@pytest.mark.parametrize(("body", "param"), BAD_BODIES)
async def test_bad_input_is_400(session, base_url, body, param):
    async with session.post(f"{base_url}/v1/chat/completions", data=orjson.dumps(body),
                            headers={"Content-Type": "application/json"}) as resp:
        assert resp.status == 400, await resp.text()
        error = (await resp.json())["error"]
    assert error["type"] == "invalid_request_error" and error["param"] == param and error["message"]


@pytest.mark.parametrize("raw", [b"", b"{", b"not json", b"\xff\xfe"])
async def test_invalid_json_is_400(session, base_url, raw):
    async with session.post(f"{base_url}/v1/chat/completions", data=raw) as resp:
        assert resp.status == 400
        assert (await resp.json())["error"]["type"] == "invalid_request_error"


async def test_unknown_route_is_openai_404(session, base_url):
    async with session.post(f"{base_url}/v1/nope", json={}) as resp:
        assert resp.status == 404
        assert set((await resp.json())["error"]) == {"message", "type", "param", "code"}


# ---------------------------------------------------------------------------------------------- other


async def test_models_and_health(session, base_url):
    async with session.get(f"{base_url}/v1/models") as resp:
        models = await resp.json()
    assert models["object"] == "list"
    assert [m["id"] for m in models["data"]] == ["fake-model", "fake-reasoner", "fake-embedding"]
    assert all(m["object"] == "model" for m in models["data"])
    async with session.get(f"{base_url}/health") as resp:
        assert resp.status == 200


async def test_embeddings(session, base_url):
    url = f"{base_url}/v1/embeddings"
    model = "fake-embedding"
    async with session.post(url, json={"model": model, "input": ["alpha", "beta", "alpha"]}) as resp:
        body = await resp.json()
    assert body["object"] == "list" and body["model"] == model and body["usage"]["prompt_tokens"] == 3
    vectors = [d["embedding"] for d in body["data"]]
    assert [d["index"] for d in body["data"]] == [0, 1, 2]
    assert all(len(v) == 64 and math.isclose(math.fsum(x * x for x in v), 1.0, rel_tol=1e-5) for v in vectors)
    assert vectors[0] == vectors[2] != vectors[1]
    async with session.post(url, json={"model": model, "input": "alpha", "encoding_format": "base64"}) as resp:
        encoded = (await resp.json())["data"][0]["embedding"]
    assert list(struct.unpack("<64f", base64.b64decode(encoded))) == vectors[0]
    async with session.post(url, json={"model": model, "input": []}) as resp:
        assert resp.status == 400
    async with session.post(url, json={"input": "x"}) as resp:
        assert resp.status == 400


async def test_only_the_listed_embedding_model_embeds(session, base_url):
    """As a real backend: a chat model is no embedding model (400), an unknown one is not found (404), and the
    embedding model is no chat model (OpenAI's 404); each refusal in OpenAI's error shape."""
    url = f"{base_url}/v1/embeddings"
    async with session.post(url, json={"model": "fake-model", "input": "x"}) as resp:
        assert resp.status == 400
        error = (await resp.json())["error"]
    assert error["param"] == "model" and "fake-embedding" in error["message"]
    async with session.post(url, json={"model": "nomic-embed-text", "input": "x"}) as resp:
        assert resp.status == 404
        error = (await resp.json())["error"]
    assert (error["code"], error["param"], error["type"]) == ("model_not_found", "model", "invalid_request_error")
    async with session.post(f"{base_url}/v1/chat/completions",
                            json={"model": "fake-embedding", "messages": user("hi")}) as resp:
        assert resp.status == 404
        assert "not a chat model" in (await resp.json())["error"]["message"]
    async with session.get(f"{base_url}/v1/models/fake-embedding") as resp:
        assert (await resp.json())["id"] == "fake-embedding"


async def test_request_recording(session, base_url):
    url = f"{base_url}/_fake/requests"
    async with session.delete(url) as resp:
        assert resp.status == 200
    for i in range(55):
        await session.post(f"{base_url}/v1/chat/completions", json={"model": "m", "messages": user(str(i))},
                           headers={"Authorization": "Bearer sk-test"})
    async with session.get(url) as resp:
        data = (await resp.json())["data"]
    assert len(data) == 50
    assert data[0]["body"]["messages"][0]["content"] == "5" and data[-1]["body"]["messages"][0]["content"] == "54"
    assert data[-1]["headers"] == {"authorization": "Bearer sk-test", "x-request-id": None, "traceparent": None,
                                   "x-tenant-id": None, "x-responses-bridge-sidecar": None}
    await session.delete(url)
    async with session.get(url) as resp:
        assert (await resp.json())["data"] == []


# ------------------------------------------------------------------------------------------ openai SDK


@pytest.fixture
async def client(base_url) -> AsyncIterator[openai.AsyncOpenAI]:
    sdk = async_sdk(base_url=f"{base_url}/v1", api_key="x", max_retries=0)
    yield sdk
    await sdk.close()


async def test_openai_sdk_text(client):
    completion = await client.chat.completions.create(model="fake-model", messages=user("hi sdk"))
    assert completion.choices[0].message.content == "Echo: hi sdk"
    assert completion.usage is not None and completion.usage.total_tokens == 6
    stream = await client.chat.completions.create(model="fake-model", messages=user("hi sdk [think]"), stream=True,
                                                  stream_options={"include_usage": True})
    text, usage = "", None
    async for chunk in stream:
        if chunk.choices:
            text += chunk.choices[0].delta.content or ""
        usage = chunk.usage or usage
    assert text == "Echo: hi sdk"
    assert usage is not None and usage.completion_tokens_details.reasoning_tokens == 4


async def test_openai_sdk_tool_call(client):
    request = {"model": "fake-model", "messages": user("call get_weather Paris"), "tools": [WEATHER_TOOL]}
    completion = await client.chat.completions.create(**request)
    call = completion.choices[0].message.tool_calls[0]
    assert call.id == "call_get_weather_0" and orjson.loads(call.function.arguments) == WEATHER_ARGS
    arguments, names = "", []
    async for chunk in await client.chat.completions.create(**request, stream=True):
        for piece in chunk.choices[0].delta.tool_calls or []:
            names += [piece.function.name] if piece.function.name else []
            arguments += piece.function.arguments or ""
    assert names == ["get_weather"] and arguments == call.function.arguments


async def test_openai_sdk_errors(client):
    with pytest.raises(openai.RateLimitError):
        await client.chat.completions.create(model="m", messages=user("[error=429]"))
    with pytest.raises(openai.BadRequestError):
        await client.chat.completions.create(model="m", messages=[])


@pytest.mark.parametrize("stream", [False, True])
async def test_context_directive_answers_like_vllm(session, base_url, stream):
    short = {"model": "m", "messages": user("hi there [context=5]"), "stream": stream}
    status, _ = await post_json(session, base_url, dict(short, stream=False))
    assert status == 200  # 3 words (the directive is one) + 1 message = 4 tokens
    status, body = await post_json(session, base_url, {**short, "max_tokens": 2})
    assert status == 400  # 4 + 2 > 5
    assert body == {"error": {"message": "This model's maximum context length is 5 tokens. However, you requested 6 "
                                         "tokens (4 in the messages, 2 in the completion). Please reduce the length "
                                         "of the messages or completion.", "type": "BadRequestError", "param": None,
                              "code": 400}}


async def test_args64_directive_carries_arrays(session, base_url):
    arguments = {"commands": ["ls", "pwd"]}
    text = f"call shell [args64={base64.b64encode(orjson.dumps(arguments)).decode()}]"
    tools = [{"type": "function", "function": {"name": "shell", "parameters": {"type": "object"}}}]
    status, body = await post_json(session, base_url, {"model": "m", "messages": user(text), "tools": tools})
    assert status == 200
    assert orjson.loads(body["choices"][0]["message"]["tool_calls"][0]["function"]["arguments"]) == arguments
    status, _ = await post_json(session, base_url, {"model": "m", "messages": user("x [args64=!!]")})
    assert status == 400


@pytest.mark.parametrize("stream", [False, True])
async def test_args_raw64_directive_writes_the_arguments_verbatim(session, base_url, stream):
    spaced = '{"commands": ["ls",  "pwd"], "a": 1}'  # spacing and key order no re-encoding keeps
    text = f"call shell [args_raw64={base64.b64encode(spaced.encode()).decode()}]"
    tools = [{"type": "function", "function": {"name": "shell", "parameters": {"type": "object"}}}]
    body = {"model": "m", "messages": user(text), "tools": tools, "stream": stream}
    if stream:
        async with session.post(f"{base_url}/v1/chat/completions", json=body) as answer:
            assert answer.status == 200
            chunks = [orjson.loads(line[6:]) for line in (await answer.text()).splitlines()
                      if line.startswith("data: {")]
        pieces = [call["function"].get("arguments") or "" for chunk in chunks for choice in chunk["choices"]
                  for call in choice["delta"].get("tool_calls") or ()]
        assert "".join(pieces) == spaced
    else:
        status, answered = await post_json(session, base_url, body)
        assert status == 200
        assert answered["choices"][0]["message"]["tool_calls"][0]["function"]["arguments"] == spaced
    for bad in ("!!", base64.b64encode(b"[1, 2").decode(), base64.b64encode(b"[1]").decode()):
        status, _ = await post_json(session, base_url, {"model": "m", "messages": user(f"x [args_raw64={bad}]")})
        assert status == 400


async def test_then_directive_calls_one_tool_per_round_of_results(session, base_url):
    base = {"model": "m", "tools": [WEATHER_TOOL, TIME_TOOL]}
    opened = user("call get_time [then=get_weather]")
    _, body = await post_json(session, base_url, {**base, "messages": opened})
    first = body["choices"][0]["message"]
    assert [c["function"]["name"] for c in first["tool_calls"]] == ["get_time"]
    after_one = [*opened, first, {"role": "tool", "tool_call_id": "call_get_time_0", "content": "noon"}]
    _, body = await post_json(session, base_url, {**base, "messages": after_one})
    second = body["choices"][0]["message"]
    assert [c["function"]["name"] for c in second["tool_calls"]] == ["get_weather"]
    after_two = [*after_one, second, {"role": "tool", "tool_call_id": "call_get_weather_0", "content": "sun"}]
    _, body = await post_json(session, base_url, {**base, "messages": after_two})
    assert body["choices"][0]["message"]["content"] == "Tool result: sun"
