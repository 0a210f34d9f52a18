"""The fake upstream's native mode, judged by the same oracles as the bridge's own answers (the Open Responses
types and the openai SDK), and by the SDK as a client: it must be a faithful stateless Responses backend."""

from __future__ import annotations

from collections.abc import AsyncIterator

import aiohttp
import openai
import pytest

from responses_bridge.demo import fake_server
from tests.support.schema import check_stream, validate_response
from tests.support.sdk import async_sdk


@pytest.fixture(scope="module")
async def native() -> AsyncIterator[str]:
    runner, port = await fake_server.start(native=True)
    try:
        yield f"http://127.0.0.1:{port}/v1"
    finally:
        await runner.cleanup()


async def test_a_response_object_the_sdk_and_the_spec_accept(native: str) -> None:
    async with aiohttp.ClientSession() as session:
        async with session.post(f"{native}/responses", json={"model": "m", "input": "Hello there"}) as response:
            assert response.status == 200
            body = await response.json()
    validate_response(body)
    assert body["status"] == "completed" and body["output"][0]["content"][0]["text"] == "Echo: Hello there"
    async with async_sdk(base_url=native, api_key="sk", max_retries=0) as client:
        answer = await client.responses.create(model="m", input="one two three", max_output_tokens=2)
    assert answer.status == "incomplete" and answer.incomplete_details is not None
    assert answer.incomplete_details.reason == "max_output_tokens" and answer.output_text.rstrip() == "Echo: one"


async def test_a_stream_of_semantic_events(native: str) -> None:
    async with aiohttp.ClientSession() as session:
        async with session.post(f"{native}/responses", json={"model": "m", "input": "Hi you", "stream": True}) as r:
            raw = await r.read()
    assert not raw.endswith(b"[DONE]\n\n")  # Responses streams end with the terminal event
    events = check_stream(raw + b"data: [DONE]\n\n")
    assert events[-1]["type"] == "response.completed"
    assert "".join(e["delta"] for e in events if e["type"] == "response.output_text.delta") == "Echo: Hi you"
    async with async_sdk(base_url=native, api_key="sk", max_retries=0) as client:
        stream = await client.responses.create(model="m", input="Hi you", stream=True)
        types = [event.type async for event in stream]
    assert types[0] == "response.created" and types[-1] == "response.completed"


@pytest.mark.parametrize(("field", "value"), [("previous_response_id", "resp_1"), ("conversation", "conv_1"),
                                              ("store", True), ("background", True)])
async def test_what_needs_storage_is_refused(native: str, field: str, value: object) -> None:
    async with async_sdk(base_url=native, api_key="sk", max_retries=0) as client:
        with pytest.raises(openai.BadRequestError) as caught:
            await client.responses.create(model="m", input="Hi", **{field: value})  # type: ignore[arg-type]
        assert caught.value.body["param"] == field  # type: ignore[index]
        with pytest.raises(openai.NotFoundError):
            await client.responses.retrieve("resp_fake1")


async def test_without_native_the_route_is_an_openai_404() -> None:
    runner, port = await fake_server.start()
    try:
        async with aiohttp.ClientSession() as session:
            async with session.post(f"http://127.0.0.1:{port}/v1/responses", json={"model": "m", "input": "x"}) as r:
                assert r.status == 404 and (await r.json())["error"]["message"].startswith("Invalid URL")
    finally:
        await runner.cleanup()
