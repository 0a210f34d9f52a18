"""The ``image_generation`` tool end to end, with the real ``openai`` SDK through both doors.

One sidecar with ``RESPONSES_BRIDGE_IMAGE_GENERATION=upstream`` whose own upstream calls go through Envoy's
listener (``--upstream-via``), and one real Envoy in front of it: the ``http`` door is the sidecar's HTTP server,
the ``envoy`` door is Envoy, which sends a request carrying the tool to that server. Either way the image call is
a ``POST /v1/images/generations`` through Envoy to the fake upstream, which answers a real PNG; without Envoy's
route for it the call would reach the sidecar's catch-all and fail. The fake model asks for an image when the
user writes ``call image_generation [args64=<{"prompt": …} in base64>]`` and then answers
``Tool result: <what it read>``.
The session's default sidecar (image generation ``off``) shows today's behaviour: the tool is dropped.
"""

from __future__ import annotations

import base64
import struct
from collections.abc import AsyncIterator
from typing import Any

import aiohttp
import openai
import orjson
import pytest

from tests.support.bridge import UpstreamLog
from tests.support.envoy import have_envoy
from tests.support.gateway import Gateway, running_gateway
from tests.support.schema import parse_sse
from tests.support.sdk_strict import strict_event
from tests.unit.test_server_tool_turns import _item_adapter, check_event, check_item_order

pytestmark = [
    pytest.mark.skipif(not have_envoy(), reason="envoy binary not available"),
    pytest.mark.store_proven(
        "tests/integration/test_agents_automations_replicas.py",
        "tests/integration/test_replicas.py",
        "tests/integration/test_input_references.py",
        reason="every store/postgres line it covers on PostgreSQL is covered by the modules named "
               "(scripts/pg-coverage)",
    ),
]

PROMPT = "a red kite over a grey sea"
TOOL = {"type": "image_generation", "size": "1024x1536", "quality": "low"}




@pytest.fixture(scope="module")
async def gateway(fake_upstream: str, tmp_path_factory: pytest.TempPathFactory) -> AsyncIterator[Gateway]:
    async with running_gateway(str(tmp_path_factory.mktemp("images")), fake_upstream,
                               env={"RESPONSES_BRIDGE_IMAGE_GENERATION": "upstream"}) as started:
        yield started


@pytest.fixture
async def upstream(gateway: Gateway) -> UpstreamLog:
    log = UpstreamLog(gateway.sidecar.upstream_url.removesuffix("/v1"))
    await log.clear()
    return log


def ask(prompt: str) -> str:
    """The user's message that makes the fake model ask for ``prompt`` (base64: the prompt may hold a ``]``)."""
    return f"call image_generation [args64={base64.b64encode(orjson.dumps({'prompt': prompt})).decode()}]"


def png_size(result: str) -> tuple[int, int]:
    """The width and height of a base64 PNG (a 400 in the test if it is not one)."""
    data = base64.b64decode(result, validate=True)
    assert data[:8] == b"\x89PNG\r\n\x1a\n" and data[12:16] == b"IHDR"
    width, height = struct.unpack(">II", data[16:24])
    return width, height


async def streamed(sdk: openai.AsyncOpenAI, **request: Any) -> list[dict[str, Any]]:
    stream = await sdk.responses.create(model="fake-model", stream=True, **request)
    events = [event.model_dump(mode="json", exclude_unset=True) async for event in stream]
    for event in events:  # the lifecycle events' responses come back from the SDK with float timestamps
        if "response" not in event:
            check_event(event)
    check_item_order(events)
    return events


async def test_an_image_call_end_to_end(sdk: openai.AsyncOpenAI, upstream: UpstreamLog) -> None:
    events = await streamed(sdk, input=ask(PROMPT), tools=[TOOL])
    kinds = [event["type"] for event in events]
    image_events = [kind for kind in kinds if kind.startswith("response.image_generation_call.")]
    assert image_events == ["response.image_generation_call.in_progress",
                            "response.image_generation_call.generating",
                            "response.image_generation_call.completed"]
    assert kinds[-1] == "response.completed"
    final = events[-1]["response"]
    assert [item["type"] for item in final["output"]] == ["image_generation_call", "message"]
    item = final["output"][0]
    assert _item_adapter().validate_python(item).type == "image_generation_call"
    assert item["status"] == "completed"
    assert png_size(item["result"]) == (1024, 1536)
    assert (item["revised_prompt"], item["size"], item["quality"], item["output_format"]) == (
        PROMPT, "1024x1536", "low", "png")
    answer = final["output"][1]["content"][0]["text"]
    assert answer.startswith("Tool result: The image was generated")
    assert item["result"] not in answer
    sent = [entry for entry in await upstream.entries() if entry["path"] == "/v1/images/generations"]
    assert [entry["body"] for entry in sent] == [{"model": "gpt-image-1", "prompt": PROMPT, "n": 1,
                                                  "size": "1024x1536", "quality": "low"}]
    assert sent[0]["headers"]["authorization"] == "Bearer sk-client"
    # stored: retrieve gives the item back whole; a follow-up replays it as a note, never the image
    stored = await sdk.responses.retrieve(final["id"])
    assert stored.output[0].model_dump(exclude_unset=True) == _item_adapter().validate_python(item).model_dump(
        exclude_unset=True)
    await upstream.clear()
    follow = await sdk.responses.create(model="fake-model", input="what did you draw?",
                                        previous_response_id=final["id"], tools=[TOOL])
    assert follow.status == "completed"
    chat = (await upstream.entries())[-1]["body"]
    notes = [message["content"] for message in chat["messages"] if message["role"] == "assistant"
             and isinstance(message.get("content"), str) and "Image generation call" in message["content"]]
    assert len(notes) == 1 and PROMPT in notes[0]
    assert item["result"] not in orjson.dumps(chat).decode()


async def test_partial_images_stream_as_the_image_model_draws(sdk: openai.AsyncOpenAI, upstream: UpstreamLog) -> None:
    events = await streamed(sdk, input=ask(PROMPT), tools=[{**TOOL, "partial_images": 2}])
    for event in events:
        strict_event(event)
    image_events = [event for event in events if event["type"].startswith("response.image_generation_call.")]
    assert [event["type"] for event in image_events] == [
        "response.image_generation_call.in_progress", "response.image_generation_call.generating",
        "response.image_generation_call.partial_image", "response.image_generation_call.partial_image",
        "response.image_generation_call.completed"]
    partials = image_events[2:4]
    item = events[-1]["response"]["output"][0]
    assert [event["partial_image_index"] for event in partials] == [0, 1]
    assert all(event["item_id"] == item["id"] and event["output_index"] == 0 for event in partials)
    assert all(png_size(event["partial_image_b64"]) == (1024, 1536) for event in partials)
    assert (partials[0]["size"], partials[0]["quality"], partials[0]["output_format"]) == ("1024x1536", "low", "png")
    assert len({event["partial_image_b64"] for event in partials} | {item["result"]}) == 3  # each a new drawing
    assert item["status"] == "completed" and png_size(item["result"]) == (1024, 1536)
    sent = [entry["body"] for entry in await upstream.entries() if entry["path"] == "/v1/images/generations"]
    assert sent == [{"model": "gpt-image-1", "prompt": PROMPT, "n": 1, "size": "1024x1536", "quality": "low",
                     "stream": True, "partial_images": 2}]
    # a JSON answer has the image, never the partial ones
    answer = await sdk.responses.create(model="fake-model", input=ask(PROMPT), tools=[{**TOOL, "partial_images": 1}])
    assert answer.output[0].type == "image_generation_call" and answer.output[0].status == "completed"
    assert png_size(answer.output[0].result or "") == (1024, 1536)


async def test_a_partial_image_reaches_the_client_before_the_image_is_done(door_url: str) -> None:
    """Live, not sent after the call: the image model waits 3 s before its completed image, and the partial image
    reaches the client on its own, before that — not in the same write as the call's outcome."""
    body = {"model": "fake-model", "input": ask(f"{PROMPT} [delay=3000]"), "stream": True,
            "tools": [{**TOOL, "partial_images": 1}]}
    headers = {"Authorization": "Bearer sk-client"}
    async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=60)) as session, \
            session.post(f"{door_url}/v1/responses", json=body, headers=headers) as answer:
        assert answer.status == 200
        seen = b""
        while b"response.image_generation_call.partial_image" not in seen:
            chunk = await answer.content.readany()
            assert chunk, "the stream ended without a partial image"
            seen += chunk
        assert b"response.image_generation_call.completed" not in seen
        rest = await answer.read()
    assert b"response.image_generation_call.completed" in rest and rest.endswith(b"data: [DONE]\n\n")
    events = parse_sse(seen + rest)
    for event in events:
        strict_event(event)
    check_item_order(events)


async def test_a_failing_image_model_is_a_failed_item_the_model_is_told_about(sdk: openai.AsyncOpenAI) -> None:
    response = await sdk.responses.create(model="fake-model", input=ask("a kite [error=503]"), tools=[TOOL])
    assert response.status == "completed"
    assert [item.type for item in response.output] == ["image_generation_call", "message"]
    item = response.output[0]
    assert item.type == "image_generation_call" and item.status == "failed" and item.result is None
    assert "The image generation failed: the image model answered HTTP 503: fake upstream error 503" in (
        response.output_text)


async def test_tool_choice_forces_the_image_call(sdk: openai.AsyncOpenAI) -> None:
    response = await sdk.responses.create(model="fake-model", input="hello there", tools=[TOOL],
                                          tool_choice={"type": "image_generation"})
    assert [item.type for item in response.output] == ["image_generation_call", "message"]
    assert response.output[0].status == "completed"


async def test_what_cannot_run_is_refused_before_anything_is_sent(sdk: openai.AsyncOpenAI,
                                                                  upstream: UpstreamLog) -> None:
    with pytest.raises(openai.BadRequestError) as refused:
        await sdk.responses.create(model="fake-model", input=ask(PROMPT), tools=[{**TOOL, "partial_images": 4}])
    error = refused.value.body
    assert isinstance(error, dict)
    assert (error["param"], error["code"]) == ("tools[0].partial_images", "invalid_value")
    assert await upstream.entries() == []


async def test_off_drops_the_tool_as_before(client: openai.AsyncOpenAI, upstream_log: UpstreamLog) -> None:
    """The session's sidecar has image generation off: the model is not offered it, the answer has no image."""
    response = await client.responses.create(model="fake-model", input=ask(PROMPT), tools=[TOOL])
    assert response.status == "completed"
    assert [item.type for item in response.output] == ["message"]
    assert "tools" not in await upstream_log.last_body()
