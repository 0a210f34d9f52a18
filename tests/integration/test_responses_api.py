"""The Responses API through both doors, driven by the openai SDK and by raw HTTP."""

from __future__ import annotations

import asyncio

import aiohttp
import openai
import orjson
import pytest

from tests.support.schema import (
    check_sequence,
    parse_sse,
    validate_event,
    validate_response,
)

pytestmark = pytest.mark.store_proven(
    "tests/integration/test_postgres_start.py",
    "tests/unit/test_store_contract.py",
    "tests/integration/test_replicas_code.py",
    reason="every store/postgres line it covers on PostgreSQL is covered by the modules named (scripts/pg-coverage)",
)

WEATHER_TOOL = {
    "type": "function",
    "name": "get_weather",
    "description": "Weather for a city",
    "parameters": {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]},
    "strict": True,
}


async def raw_stream(http: aiohttp.ClientSession, body: dict) -> tuple[int, bytes]:
    async with http.post("/v1/responses", json=dict(body, stream=True)) as response:
        return response.status, await response.read()


def without_sdk_fields(value: object) -> object:
    """The SDK's stream helper adds ``parsed`` (its own client-side parsing) to what the server sent."""
    if isinstance(value, dict):
        return {k: without_sdk_fields(v) for k, v in value.items() if k not in ("parsed", "parsed_arguments")}
    if isinstance(value, list):
        return [without_sdk_fields(v) for v in value]
    return value


def assert_no_chat_chunks(raw: bytes) -> None:
    assert b"chat.completion.chunk" not in raw, raw[:500]
    assert b"chat.completion\"" not in raw


async def test_create_non_stream(client: openai.AsyncOpenAI, http: aiohttp.ClientSession) -> None:
    response = await client.responses.create(model="fake-model", input="hello there", instructions="Be brief.",
                                             metadata={"k": "v"}, temperature=0.5)
    assert response.status == "completed"
    assert response.output_text == "Echo: hello there"
    assert response.instructions == "Be brief."
    assert response.metadata == {"k": "v"}
    assert response.usage.input_tokens > 0 and response.usage.output_tokens == 3
    async with http.post("/v1/responses", json={"model": "fake-model", "input": "hi"}) as raw:
        assert raw.status == 200
        body = await raw.json()
    validate_response(body)
    assert_no_chat_chunks(orjson.dumps(body))


async def test_stream_events_validate(http: aiohttp.ClientSession) -> None:
    status, raw = await raw_stream(http, {"model": "fake-model", "input": "[think] stream me please"})
    assert status == 200
    assert_no_chat_chunks(raw)
    events = parse_sse(raw)
    for event in events:
        validate_event(event)
    check_sequence(events)
    final = events[-1]
    assert final["type"] == "response.completed"
    validate_response(final["response"])
    assert [item["type"] for item in final["response"]["output"]] == ["reasoning", "message"]


async def test_sdk_stream_final_response_is_retrievable(client: openai.AsyncOpenAI) -> None:
    async with client.responses.stream(model="fake-model", input="[chunks=20] count") as stream:
        deltas = [event.delta async for event in stream if event.type == "response.output_text.delta"]
        final = await stream.get_final_response()
    assert len(deltas) == 20
    assert final.output_text == "".join(deltas)
    stored = await client.responses.retrieve(final.id)
    assert stored.model_dump() == without_sdk_fields(final.model_dump())


async def test_retrieve_delete_and_input_items(client: openai.AsyncOpenAI, http: aiohttp.ClientSession) -> None:
    items = [{"role": "user", "content": f"message {i}"} for i in range(5)]
    response = await client.responses.create(model="fake-model", input=items)
    async with http.get(f"/v1/responses/{response.id}") as raw:
        assert raw.status == 200
        validate_response(await raw.json())
    page = await client.responses.input_items.list(response.id, limit=2, order="asc")
    assert [item.content[0].text for item in page.data] == ["message 0", "message 1"]
    assert page.has_more
    rest = await client.responses.input_items.list(response.id, after=page.data[-1].id, order="asc")
    assert [item.content[0].text for item in rest.data] == ["message 2", "message 3", "message 4"]
    assert not rest.has_more
    newest = await client.responses.input_items.list(response.id, limit=1)
    assert newest.data[0].content[0].text == "message 4"
    await client.responses.delete(response.id)
    with pytest.raises(openai.NotFoundError) as caught:
        await client.responses.retrieve(response.id)
    assert caught.value.body["code"] == "not_found"
    assert caught.value.body["type"] == "invalid_request_error"  # as OpenAI types an unknown id
    with pytest.raises(openai.NotFoundError):
        await client.responses.delete(response.id)


async def test_tool_call_round_trip(client: openai.AsyncOpenAI, upstream_log) -> None:
    first = await client.responses.create(model="fake-model", input="call get_weather Paris", tools=[WEATHER_TOOL])
    call = first.output[-1]
    assert call.type == "function_call" and call.name == "get_weather"
    assert orjson.loads(call.arguments) == {"city": "Paris"}
    second = await client.responses.create(
        model="fake-model", previous_response_id=first.id, tools=[WEATHER_TOOL],
        input=[{"type": "function_call_output", "call_id": call.call_id, "output": "sunny, 21 C"}])
    assert second.output_text == "Tool result: sunny, 21 C"
    assert second.previous_response_id == first.id
    sent = await upstream_log.last_body()
    roles = [m["role"] for m in sent["messages"]]
    assert roles == ["user", "assistant", "tool"]
    assert sent["messages"][1]["tool_calls"][0]["id"] == call.call_id
    assert sent["tools"][0] == {"type": "function", "function": {
        "name": "get_weather", "description": "Weather for a city", "parameters": WEATHER_TOOL["parameters"],
        "strict": True}}


async def test_streamed_parallel_tool_calls(http: aiohttp.ClientSession) -> None:
    tools = [WEATHER_TOOL, dict(WEATHER_TOOL, name="get_time")]
    status, raw = await raw_stream(http, {"model": "fake-model", "tools": tools,
                                          "input": "call get_weather Oslo and call get_time Oslo"})
    assert status == 200
    events = parse_sse(raw)
    check_sequence(events)
    output = events[-1]["response"]["output"]
    assert [(item["type"], item["name"]) for item in output] == [("function_call", "get_weather"),
                                                                 ("function_call", "get_time")]
    done = [e for e in events if e["type"] == "response.function_call_arguments.done"]
    assert [orjson.loads(e["arguments"]) for e in done] == [{"city": "Oslo"}, {"city": "Oslo"}]


async def test_instructions_not_carried_over(client: openai.AsyncOpenAI, upstream_log) -> None:
    first = await client.responses.create(model="fake-model", input="one", instructions="First rules.")
    await client.responses.create(model="fake-model", input="two", previous_response_id=first.id,
                                  instructions="Second rules.")
    sent = await upstream_log.last_body()
    assert [(m["role"], m["content"]) for m in sent["messages"]] == [
        ("system", "Second rules."), ("user", "one"), ("assistant", "Echo: one"), ("user", "two")]


async def test_request_mapping_reaches_upstream(client: openai.AsyncOpenAI, upstream_log) -> None:
    await client.responses.create(
        model="fake-model", input=[{"role": "developer", "content": "dev"}, {"role": "user", "content": "q"}],
        max_output_tokens=50, top_p=0.5, reasoning={"effort": "low"},
        text={"format": {"type": "json_schema", "name": "answer", "schema": {
            "type": "object", "properties": {"echo": {"type": "string"}}}, "strict": False}}, stream=False)
    sent = await upstream_log.last_body()
    assert sent["max_tokens"] == 50 and sent["top_p"] == 0.5 and sent["reasoning_effort"] == "low"
    assert sent["response_format"]["type"] == "json_schema"
    assert sent["messages"][0] == {"role": "system", "content": "dev"}
    assert "stream" not in sent or sent["stream"] is False


async def test_stream_asks_upstream_for_usage(http: aiohttp.ClientSession, upstream_log) -> None:
    _status, raw = await raw_stream(http, {"model": "fake-model", "input": "usage please"})
    sent = await upstream_log.last_body()
    assert sent["stream"] is True and sent["stream_options"] == {"include_usage": True}
    assert parse_sse(raw)[-1]["response"]["usage"]["output_tokens"] == 3  # "Echo: usage please"


async def test_incomplete_when_upstream_hits_length(client: openai.AsyncOpenAI) -> None:
    response = await client.responses.create(model="fake-model", input="one two three four five",
                                             max_output_tokens=2)
    assert response.status == "incomplete"
    assert response.incomplete_details.reason == "max_output_tokens"
    assert response.output[0].status == "incomplete"


async def test_refusal(client: openai.AsyncOpenAI) -> None:
    response = await client.responses.create(model="fake-model", input="[refuse] something")
    part = response.output[0].content[0]
    assert part.type == "refusal" and part.refusal


async def test_store_false_is_not_retrievable(client: openai.AsyncOpenAI) -> None:
    response = await client.responses.create(model="fake-model", input="ephemeral", store=False)
    assert response.store is False
    with pytest.raises(openai.NotFoundError):
        await client.responses.retrieve(response.id)


# --- errors ----------------------------------------------------------------------------------------------------

BAD_BODIES = [
    b"{not json",
    b"[]",
    b'"string"',
    b'{"input": "no model"}',
    b'{"model": 5, "input": "x"}',
    b'{"model": "m", "input": 5}',
    b'{"model": "m", "input": [{"type": "mystery"}]}',
    b'{"model": "m", "input": [{"role": "robot", "content": "x"}]}',
    b'{"model": "m", "input": "x", "temperature": "hot"}',
    b'{"model": "m", "input": "x", "temperature": 9}',
    b'{"model": "m", "input": "x", "tools": [{"type": "function"}]}',
    b'{"model": "m", "input": "x", "tool_choice": "sometimes", "tools": [{"type": "function", "name": "f"}]}',
    b'{"model": "m", "input": "x", "stream": "yes"}',
    b'{"model": "m", "input": "x", "metadata": {"k": 1}}',
    b'{"model": "m", "input": [{"role": "user", "content": [{"type": "input_image"}]}]}',
    b"",
]


@pytest.mark.parametrize("body", BAD_BODIES)
async def test_bad_bodies_get_400_in_openai_shape(http: aiohttp.ClientSession, body: bytes) -> None:
    async with http.post("/v1/responses", data=body, headers={"Content-Type": "application/json"}) as response:
        assert response.status == 400, await response.text()
        error = (await response.json())["error"]
    assert set(error) == {"message", "type", "param", "code"}
    assert error["type"] == "invalid_request_error" and error["message"]


async def test_unknown_item_type_is_named(http: aiohttp.ClientSession) -> None:
    async with http.post("/v1/responses", json={"model": "m", "input": [{"role": "user", "content": "x"},
                                                                         {"type": "mystery"}]}) as response:
        error = (await response.json())["error"]
    assert response.status == 400 and "mystery" in error["message"] and error["param"] == "input[1].type"


async def test_unknown_ids_are_404(client: openai.AsyncOpenAI, http: aiohttp.ClientSession) -> None:
    with pytest.raises(openai.NotFoundError) as caught:
        await client.responses.create(model="fake-model", input="x", previous_response_id="resp_missing")
    assert caught.value.body["code"] == "previous_response_not_found"
    async with http.get("/v1/responses/resp_missing/input_items") as response:
        assert response.status == 404
        assert (await response.json())["error"]["code"] == "not_found"


async def test_upstream_4xx_is_passed_through(client: openai.AsyncOpenAI) -> None:
    with pytest.raises(openai.RateLimitError) as caught:
        await client.responses.create(model="fake-model", input="[error=429]")
    assert "fake upstream error 429" in caught.value.body["message"]
    # its code kept; its type the one OpenAI gives a limit on requests, not the backend's own "too_many_requests"
    assert (caught.value.body["code"], caught.value.body["type"]) == ("rate_limit_exceeded", "requests")
    with pytest.raises(openai.BadRequestError):
        await client.responses.create(model="fake-model", input="[error=400]", stream=True)


async def test_upstream_5xx(client: openai.AsyncOpenAI, http: aiohttp.ClientSession) -> None:
    with pytest.raises(openai.APIStatusError) as caught:
        await client.responses.create(model="fake-model", input="[error=500]")
    assert caught.value.status_code == 502
    assert "fake upstream error 500" in caught.value.body["message"]
    _status, raw = await raw_stream(http, {"model": "fake-model", "input": "[error=503]"})
    events = parse_sse(raw)
    check_sequence(events)
    assert [e["type"] for e in events] == ["response.created", "response.in_progress", "response.failed"]
    assert "503" in events[-1]["response"]["error"]["message"]


# Through Envoy a broken upstream connection resets the client's stream (Envoy's router does that whatever the
# filters say): test_extproc_door.py::test_cut_mid_stream checks that path's own guarantees.
@pytest.mark.parametrize("door", ["http"])
async def test_stream_cut_mid_way_fails_and_is_stored_failed(client: openai.AsyncOpenAI,
                                                             http: aiohttp.ClientSession) -> None:
    status, raw = await raw_stream(http, {"model": "fake-model", "input": "[cut=3] one two three four five six"})
    assert status == 200
    assert_no_chat_chunks(raw)
    events = parse_sse(raw)
    check_sequence(events)
    failed = events[-1]
    assert failed["type"] == "response.failed"
    validate_event(failed)
    stored = await client.responses.retrieve(failed["response"]["id"])
    assert stored.status == "failed"


async def test_garbage_mid_stream_fails(http: aiohttp.ClientSession) -> None:
    _status, raw = await raw_stream(http, {"model": "fake-model", "input": "[garbage] hello"})
    events = parse_sse(raw)
    assert events[-1]["type"] == "response.failed"
    assert_no_chat_chunks(raw)


async def test_models_come_from_upstream(client: openai.AsyncOpenAI) -> None:
    models = await client.models.list()
    assert {m.id for m in models.data} >= {"fake-model", "fake-reasoner"}


async def test_unprefixed_route(http: aiohttp.ClientSession) -> None:
    async with http.post("/responses", json={"model": "fake-model", "input": "no prefix"}) as response:
        assert response.status == 200
        assert (await response.json())["output"][0]["content"][0]["text"] == "Echo: no prefix"


async def test_client_authorization_is_forwarded(client: openai.AsyncOpenAI, upstream_log) -> None:
    await client.responses.create(model="fake-model", input="auth")
    assert (await upstream_log.entries())[-1]["headers"]["authorization"] == "Bearer sk-client"


async def test_large_input(client: openai.AsyncOpenAI) -> None:
    text = "word " * (2 * 1024 * 1024)  # 10 MiB
    response = await client.responses.create(model="fake-model", input=text, store=False)
    assert response.status == "completed"
    assert response.usage.input_tokens > 2_000_000


async def test_fifty_concurrent_streams(http: aiohttp.ClientSession) -> None:
    async def one(i: int) -> list[dict]:
        status, raw = await raw_stream(http, {"model": "fake-model", "input": f"[chunks=30] stream {i}"})
        assert status == 200
        assert_no_chat_chunks(raw)
        return parse_sse(raw)

    results = await asyncio.gather(*(one(i) for i in range(50)))
    for i, events in enumerate(results):
        check_sequence(events)
        assert events[-1]["type"] == "response.completed"
        assert events[-1]["response"]["output"][0]["content"][0]["text"].startswith(f"Echo: stream {i}")
