"""Every streamed event under the SDK's own name, through both doors (issue 57 items 2 and 6):

* a backend's ``reasoning_content`` streams as ``response.reasoning_text.delta`` / ``.done`` — what the SDK, Codex
  and the Agents SDK read — and as the Open Responses spec's ``response.reasoning.delta`` / ``.done`` only to a
  client that names the spec's version (``OpenResponses-Version``);
* a cancelled background response's stream ends with ``response.failed`` carrying ``status: cancelled`` (no SDK
  union has a ``response.cancelled`` stream event);
* ``prompt_cache_options.prewarm`` only warms: the backend is asked for one token, not streamed, and the answer is
  a completed response with no output.

Every event is validated strictly against the SDK's union (tests/support/sdk_strict.py) and the stream's order by
tests/support/schema.py.
"""

from __future__ import annotations

import asyncio
from typing import Any

import aiohttp
import openai
import orjson
import pytest

from tests.support.bridge import UpstreamLog
from tests.support.schema import check_stream, parse_sse, validate_event
from tests.support.sdk_strict import strict_event, strict_response

pytestmark = pytest.mark.store_proven(
    "tests/integration/test_replicas.py",
    "tests/integration/test_replicas_code.py",
    reason="every store/postgres line it covers on PostgreSQL is covered by the modules named (scripts/pg-coverage)",
)

THINK = {"model": "fake-model", "input": "[think] why is the sky blue", "stream": True}
PREWARM = {"prompt_cache_options": {"prewarm": True}}


async def _stream(http: aiohttp.ClientSession, body: dict[str, Any], headers: dict[str, str] | None = None) -> bytes:
    async with http.post("/v1/responses", json=body, headers=headers or {}) as answer:
        assert answer.status == 200, await answer.text()
        return await answer.read()


async def test_reasoning_streams_under_the_sdks_names(http: aiohttp.ClientSession) -> None:
    events = check_stream(await _stream(http, THINK))
    for event in events:
        strict_event(event)
    kinds = [event["type"] for event in events]
    assert "response.reasoning_text.delta" in kinds and "response.reasoning_text.done" in kinds
    assert not {"response.reasoning.delta", "response.reasoning.done"} & set(kinds)
    done = next(event for event in events if event["type"] == "response.reasoning_text.done")
    assert done["text"].startswith("Thinking about: why is the sky blue")


async def test_the_sdk_reads_the_reasoning_as_its_own_events(client: openai.AsyncOpenAI) -> None:
    async with client.responses.stream(model="fake-model", input="[think] why is the sky blue") as stream:
        deltas = [event.delta async for event in stream if event.type == "response.reasoning_text.delta"]
        final = await stream.get_final_response()
    reasoning = final.output[0]
    assert reasoning.type == "reasoning" and reasoning.content is not None
    assert "".join(deltas) == reasoning.content[0].text and deltas


async def test_an_open_responses_client_gets_the_specs_names(http: aiohttp.ClientSession) -> None:
    events = check_stream(await _stream(http, THINK, {"OpenResponses-Version": "2026-04-24"}))
    for event in events:
        validate_event(event)  # the spec's types, where they know the event
    kinds = [event["type"] for event in events]
    assert "response.reasoning.delta" in kinds and "response.reasoning.done" in kinds
    assert not {"response.reasoning_text.delta", "response.reasoning_text.done"} & set(kinds)
    # the same stream otherwise: the names are the only difference
    plain = [event["type"] for event in check_stream(await _stream(http, THINK))]
    assert [kind.replace("reasoning_text.", "reasoning.") for kind in plain] == kinds


async def test_a_cancelled_background_stream_ends_as_the_sdk_expects(client: openai.AsyncOpenAI,
                                                                     http: aiohttp.ClientSession) -> None:
    response = await client.responses.create(model="fake-model", input="[think] long [chunks=100] [delay=100]",
                                             background=True)
    async with http.get(f"/v1/responses/{response.id}?stream=true") as live:
        async for line in live.content:
            if line.startswith(b"data: ") and b"reasoning_text.delta" in line:
                break
        cancelled = await client.responses.cancel(response.id)
        assert cancelled.status == "cancelled"
        rest = await asyncio.wait_for(live.read(), timeout=30)
    assert rest.endswith(b"data: [DONE]\n\n")
    async with http.get(f"/v1/responses/{response.id}?stream=true") as replay:
        events = parse_sse(await replay.read())
    for event in events:
        strict_event(event)
    last = events[-1]
    assert last["type"] == "response.failed" and last["response"]["status"] == "cancelled"
    assert last["response"]["error"] is None
    assert [event["sequence_number"] for event in events] == list(range(len(events)))
    # the SDK's own replay ends on the same event, typed
    stream = await client.responses.retrieve(response.id, stream=True)
    typed = [event async for event in stream]
    assert typed[-1].type == "response.failed" and typed[-1].response.status == "cancelled"


async def test_a_prewarm_only_warms(client: openai.AsyncOpenAI, upstream_log: UpstreamLog) -> None:
    response = await client.responses.create(model="fake-model", input="a long shared prefix", max_output_tokens=500,
                                             extra_body=PREWARM)
    strict_response(response.model_dump(mode="json", exclude_unset=True))
    assert response.status == "completed" and response.output == []
    assert response.usage is not None and response.usage.input_tokens > 0
    assert response.prompt_cache_options is not None and response.prompt_cache_options.mode == "implicit"
    body = await upstream_log.last_body()
    assert body["max_tokens"] == 1 and body["stream"] is False and "stream_options" not in body
    assert body["messages"][-1]["content"] == "a long shared prefix"  # the same prompt: the same cache entries
    assert (await client.responses.retrieve(response.id)).output == []


async def test_a_streamed_prewarm_only_warms(http: aiohttp.ClientSession, upstream_log: UpstreamLog) -> None:
    raw = await _stream(http, {"model": "fake-model", "input": "[think] a long shared prefix", "stream": True,
                               **PREWARM})
    events = check_stream(raw)
    for event in events:
        strict_event(event)
    assert [event["type"] for event in events] == ["response.created", "response.in_progress", "response.completed"]
    assert events[-1]["response"]["output"] == [] and events[-1]["response"]["usage"]["input_tokens"] > 0
    body = await upstream_log.last_body()
    assert body["max_tokens"] == 1 and body["stream"] is False
    assert b"Thinking about" not in raw and b"Echo:" not in raw and orjson.loads(raw.split(b"data: ")[-2])


WEATHER = {"type": "function", "name": "get_weather", "description": "Weather for a city", "strict": True,
           "parameters": {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"],
                          "additionalProperties": False}}
GRAMMAR = {"type": "custom", "name": "run_sql", "description": "Run one SQL query"}
# Streams over the core paths: reasoning with its summary, text with logprobs, refusals, a cut answer,
# function and custom tool calls, an upstream stream that is not JSON, an upstream error before the stream.
CORE_STREAMS: list[dict[str, Any]] = [
    {"input": "[think] hello there", "reasoning": {"summary": "auto"}},
    {"input": "hello there", "top_logprobs": 2},
    {"input": "[refuse] do the thing"},
    {"input": "[length] tell me a long story"},
    {"input": "call get_weather Paris", "tools": [WEATHER]},
    {"input": "call run_sql", "tools": [GRAMMAR]},
    {"input": "[garbage] a stream that sends what is not JSON"},
    {"input": "[error=503] an upstream that fails"},
]
CORE_EVENTS = {
    "response.created", "response.in_progress", "response.completed", "response.incomplete", "response.failed",
    "response.output_item.added", "response.output_item.done", "response.content_part.added",
    "response.content_part.done", "response.output_text.delta", "response.output_text.done",
    "response.refusal.delta", "response.refusal.done", "response.reasoning_text.delta",
    "response.reasoning_text.done", "response.reasoning_summary_part.added", "response.reasoning_summary_part.done",
    "response.reasoning_summary_text.delta", "response.reasoning_summary_text.done",
    "response.function_call_arguments.delta", "response.function_call_arguments.done",
    "response.custom_tool_call_input.delta", "response.custom_tool_call_input.done",
}


async def test_every_event_of_the_core_paths_is_one_of_the_sdks(http: aiohttp.ClientSession) -> None:
    """Each core path's stream, every event strictly one of the SDK's union under its own type; together they
    emit every core event type (the server tools' events are checked as strictly by their own suites through
    tests/unit/test_server_tool_turns.py's check_event: MCP, web and file search, code interpreter, image
    generation, shell, programs)."""
    seen: set[str] = set()
    for request in CORE_STREAMS:
        async with http.post("/v1/responses", json={"model": "fake-model", "stream": True, **request}) as answer:
            raw = await answer.read()
        if answer.status != 200:  # a failure before the stream opened (Envoy's door waits for the first bytes)
            error = orjson.loads(raw)["error"]
            assert set(error) == {"message", "type", "param", "code"} and answer.status >= 500, raw
            continue
        events = parse_sse(raw)
        for event in events:
            strict_event(event)
        assert events[-1]["type"] in ("response.completed", "response.incomplete", "response.failed")
        seen |= {event["type"] for event in events}
    assert seen >= CORE_EVENTS, sorted(CORE_EVENTS - seen)


async def _socket_turn(base_url: str, headers: dict[str, str]) -> list[dict[str, Any]]:
    async with aiohttp.ClientSession(base_url=base_url) as session, \
            session.ws_connect("/v1/responses", headers=headers) as socket:
        await socket.send_str(orjson.dumps({"type": "response.create", "model": "fake-model",
                                            "input": "[think] why is the sky blue"}).decode())
        events: list[dict[str, Any]] = []
        while not events or events[-1]["type"] not in ("response.completed", "response.failed", "error"):
            message = await socket.receive(timeout=30)
            assert message.type == aiohttp.WSMsgType.TEXT, message
            events.append(orjson.loads(message.data))
    return events


async def test_websocket_mode_names_events_as_its_client_reads_them(base_url: str) -> None:
    """A socket's events as its upgrade request asked: the SDK's names, or the spec's for an Open Responses
    client."""
    events = await _socket_turn(base_url, {})
    for event in events:
        strict_event(event)
    kinds = {event["type"] for event in events}
    assert {"response.reasoning_text.delta", "response.reasoning_text.done"} <= kinds
    spec = await _socket_turn(base_url, {"OpenResponses-Version": "2026-04-24"})
    for event in spec:
        validate_event(event)
    assert [event["type"] for event in spec] == [event["type"].replace("reasoning_text.", "reasoning.")
                                                 for event in events]
