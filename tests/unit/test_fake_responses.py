"""The fake upstream's native ``/v1/responses`` mode, read by the real openai SDK: a stateless backend's answers."""

from __future__ import annotations

from collections.abc import AsyncIterator

import aiohttp
import openai
import pytest

from responses_bridge.demo import fake_server
from tests.support.sdk import async_sdk


@pytest.fixture
async def native_url() -> AsyncIterator[str]:
    runner, port = await fake_server.start(native=True)
    try:
        yield f"http://127.0.0.1:{port}/v1"
    finally:
        await runner.cleanup()


@pytest.fixture
async def client(native_url: str) -> AsyncIterator[openai.AsyncOpenAI]:
    async with async_sdk(base_url=native_url, api_key="sk", max_retries=0) as sdk:
        yield sdk


async def test_a_json_answer_is_a_complete_response_object(client: openai.AsyncOpenAI) -> None:
    response = await client.responses.create(model="m", input="hello there", store=False)
    assert (response.status, response.output_text, response.store) == ("completed", "Echo: hello there", False)
    assert response.id.startswith("resp_")
    assert response.usage is not None and response.usage.total_tokens == (response.usage.input_tokens
                                                                           + response.usage.output_tokens) > 0


async def test_a_stream_is_semantic_events_in_sequence(client: openai.AsyncOpenAI) -> None:
    events = [event async for event in await client.responses.create(
        model="m", input="[think] two words", store=False, stream=True)]
    kinds = [event.type for event in events]
    assert kinds[:2] == ["response.created", "response.in_progress"]
    assert kinds[-1] == "response.completed"
    assert "response.reasoning_text.delta" in kinds and "response.output_text.delta" in kinds
    assert [event.sequence_number for event in events] == list(range(len(events)))
    deltas = "".join(event.delta for event in events if event.type == "response.output_text.delta")
    assert deltas == events[-1].response.output_text == "Echo: two words"  # type: ignore[union-attr]


async def test_function_calls_and_their_outputs(client: openai.AsyncOpenAI) -> None:
    tools = [{"type": "function", "name": "lookup", "parameters": {"type": "object",
                                                                  "properties": {"q": {"type": "string"}}}}]
    first = await client.responses.create(model="m", input="call lookup cats", tools=tools, store=False)  # type: ignore[arg-type]
    call = first.output[0]
    assert (call.type, call.name, call.arguments) == ("function_call", "lookup", '{"q":"cats"}')  # type: ignore[union-attr]
    second = await client.responses.create(model="m", tools=tools, store=False, input=[  # type: ignore[arg-type]
        {"role": "user", "content": "call lookup cats"}, call.model_dump(exclude_none=True),  # type: ignore[list-item]
        {"type": "function_call_output", "call_id": call.call_id, "output": "meow"}])  # type: ignore[union-attr]
    assert second.output_text == "Tool result: meow"


@pytest.mark.parametrize(("extra", "param"), [
    ({"previous_response_id": "resp_1"}, "previous_response_id"),
    ({"conversation": "conv_1"}, "conversation"),
    ({"store": True}, "store"),
    ({"background": True}, "background"),
    ({"tools": [{"type": "web_search"}]}, "tools[0].type"),
])
async def test_what_needs_storage_or_server_tools_is_refused(native_url: str, extra: dict, param: str) -> None:
    async with aiohttp.ClientSession() as session, session.post(
            f"{native_url}/responses", json={"model": "m", "input": "x", **extra}) as response:
        assert response.status == 400
        assert (await response.json())["error"]["param"] == param


async def test_nothing_is_stored(client: openai.AsyncOpenAI) -> None:
    response = await client.responses.create(model="m", input="gone", store=False)
    with pytest.raises(openai.NotFoundError):
        await client.responses.retrieve(response.id)


async def test_the_chat_only_fake_has_no_responses_route() -> None:
    runner, port = await fake_server.start()
    try:
        async with aiohttp.ClientSession() as session, session.post(
                f"http://127.0.0.1:{port}/v1/responses", json={"model": "m", "input": "x"}) as response:
            assert response.status == 404
    finally:
        await runner.cleanup()
