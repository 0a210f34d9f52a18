"""The image generation leaf (run/tools/image_generation.py) against the fake upstream's real Images API over a real
socket, through the sidecar's own upstream client; the tool's refusals; the item's reader and its replay note."""

from __future__ import annotations

import base64
from collections.abc import AsyncIterator

import pytest
from aiohttp import web

from responses_bridge.adapters.upstream_client import AiohttpUpstreamClient
from responses_bridge.config.settings import Settings
from responses_bridge.demo import fake_server
from responses_bridge.demo.procs import free_port
from responses_bridge.engine.tools.builtin import served_tool_types
from responses_bridge.engine.tools.server import ImageGenerationReader, image_replay_note, image_request_of
from responses_bridge.engine.tools.tools import CallTarget, ToolPlan, plan_tools
from responses_bridge.protocol.errors import APIError
from responses_bridge.protocol.tools.tool_items import image_generation_call
from responses_bridge.run.tools.image_generation import (
    ImageGenerationError,
    ImageSettings,
    ImageToolOptions,
    generate_image,
    images_body,
)
from responses_bridge.run.upstream_scope import upstream_scope

SETTINGS = ImageSettings()


async def _client(images: bool = True) -> AsyncIterator[AiohttpUpstreamClient]:
    runner: web.AppRunner
    runner, port = await fake_server.start(images=images)
    client = AiohttpUpstreamClient(Settings(upstream=f"http://127.0.0.1:{port}/v1"))
    await client.start()
    try:
        yield client
    finally:
        await client.close()
        await runner.cleanup()


@pytest.fixture
async def client() -> AsyncIterator[AiohttpUpstreamClient]:
    async for started in _client():
        yield started


@pytest.fixture
async def no_images() -> AsyncIterator[AiohttpUpstreamClient]:
    async for started in _client(images=False):
        yield started


def options(**tool: object) -> ImageToolOptions:
    return ImageToolOptions.from_tool({"type": "image_generation", **tool}, 0)


async def test_an_image_from_the_upstream(client: AiohttpUpstreamClient) -> None:
    with upstream_scope(client, "Bearer sk-test"):
        image = await generate_image("a blue square", "1536x1024", options(quality="high"), SETTINGS)
    data = base64.b64decode(image.fields["result"])
    assert data.startswith(b"\x89PNG\r\n\x1a\n")
    assert int.from_bytes(data[16:20], "big") == 1536 and int.from_bytes(data[20:24], "big") == 1024
    assert {key: value for key, value in image.fields.items() if key != "result"} == {
        "revised_prompt": "a blue square", "size": "1536x1024", "quality": "high", "output_format": "png",
        "background": "opaque"}
    assert "1536x1024" in image.text_for_model() and image.fields["result"] not in image.text_for_model()


async def test_a_model_that_answers_urls_is_asked_for_base64(client: AiohttpUpstreamClient) -> None:
    with upstream_scope(client, None):
        image = await generate_image("a cat", None, options(model="dall-e-3"), SETTINGS)
    assert base64.b64decode(image.fields["result"]).startswith(b"\x89PNG")


@pytest.mark.parametrize(("prompt", "message"), [
    ("a kite [error=503]", "the image model answered HTTP 503: fake upstream error 503"),
    ("   ", "the prompt is empty"),
])
async def test_failures_are_errors_for_the_model(client: AiohttpUpstreamClient, prompt: str, message: str) -> None:
    with upstream_scope(client, None), pytest.raises(ImageGenerationError) as failed:
        await generate_image(prompt, None, options(), SETTINGS)
    assert str(failed.value) == message


async def test_an_upstream_without_the_images_api(no_images: AiohttpUpstreamClient) -> None:
    with upstream_scope(no_images, None), pytest.raises(ImageGenerationError) as failed:
        await generate_image("a kite", None, options(), SETTINGS)
    assert str(failed.value).startswith("the image model answered HTTP 404: Invalid URL (POST /v1/images/generations)")


async def test_an_unreachable_upstream() -> None:
    client = AiohttpUpstreamClient(Settings(upstream=f"http://127.0.0.1:{free_port()}/v1"))
    await client.start()
    try:
        with upstream_scope(client, None), pytest.raises(ImageGenerationError) as failed:
            await generate_image("a kite", None, options(), SETTINGS)
    finally:
        await client.close()
    assert "Cannot connect to the upstream model server" in str(failed.value)


async def test_outside_a_driven_run_there_is_no_upstream() -> None:
    with pytest.raises(ImageGenerationError, match="no upstream is known"):
        await generate_image("a kite", None, options(), SETTINGS)


def test_the_body_sent_upstream() -> None:
    body = images_body("p", "1024x1024", options(output_format="png", moderation="low", background="auto"), SETTINGS)
    assert body == {"model": "gpt-image-1", "prompt": "p", "n": 1, "size": "1024x1024", "output_format": "png",
                    "moderation": "low", "background": "auto"}
    fixed = images_body("p", "1024x1024", options(size="1536x1024", model="dall-e-3"), ImageSettings(model="x"))
    assert fixed == {"model": "dall-e-3", "prompt": "p", "n": 1, "size": "1536x1024", "response_format": "b64_json"}
    assert options(size="auto").choose_size and not options(size="1024x1024").choose_size
    streamed = images_body("p", None, options(partial_images=2), SETTINGS)
    assert streamed == {"model": "gpt-image-1", "prompt": "p", "n": 1, "stream": True, "partial_images": 2}
    assert "stream" not in images_body("p", None, options(partial_images=0), SETTINGS)


@pytest.mark.parametrize(("tool", "param"), [
    ({"partial_images": 4}, "tools[0].partial_images"),
    ({"partial_images": "2"}, "tools[0].partial_images"),
    ({"partial_images": True}, "tools[0].partial_images"),
    ({"action": "edit"}, "tools[0].action"),
    ({"input_image_mask": {"file_id": "file_1"}}, "tools[0].input_image_mask"),
    ({"model": 5}, "tools[0].model"),
])
def test_what_cannot_run_is_a_400(tool: dict[str, object], param: str) -> None:
    with pytest.raises(APIError) as refused:
        options(**tool)
    assert (refused.value.status, refused.value.param) == (400, param)


def test_the_plan_offers_a_prompt_and_a_size_only_when_the_tool_leaves_it() -> None:
    plan = ToolPlan()
    name = plan.add_image_generation(choose_size=False)
    assert plan.targets[name] == CallTarget("image_generation")
    assert list(plan.functions[0]["parameters"]["properties"]) == ["prompt"]
    assert plan.add_image_generation(choose_size=True) == name and len(plan.functions) == 1
    chooser = ToolPlan()
    chooser.add_image_generation(choose_size=True)
    assert list(chooser.functions[0]["parameters"]["properties"]) == ["prompt", "size"]


def test_the_reader_events_and_the_prompt() -> None:
    reader = ImageGenerationReader({"id": "ig_1", "type": "image_generation_call", "status": "in_progress",
                                    "result": None}, 3)
    assert [event["type"] for event in reader.opened()] == ["response.image_generation_call.in_progress"]
    arguments = '{"prompt": "a kite", "size": "1024x1536"}'
    assert [event["type"] for event in reader.close(arguments, "completed")] == [
        "response.image_generation_call.generating"]
    assert reader.pending and reader.item["status"] == "generating"
    assert image_request_of(arguments) == ("a kite", "1024x1536")
    assert image_request_of("just a kite") == ("just a kite", None)
    cut = ImageGenerationReader({"id": "ig_2", "type": "image_generation_call", "status": "in_progress"}, 0)
    assert cut.close('{"prompt": "a', "incomplete") == [] and cut.item["status"] == "incomplete"


def test_a_replayed_item_is_kept_whole_and_told_as_a_note() -> None:
    item = image_generation_call({"type": "image_generation_call", "id": "ig_9", "status": "completed",
                                  "result": "iVBORw0KGgo=", "revised_prompt": "a kite", "size": "1024x1024"},
                                 "input[0]")
    assert item["result"] == "iVBORw0KGgo="
    note = image_replay_note(item)
    assert "a kite" in note and "1024x1024" in note and "iVBORw0KGgo" not in note
    assert "no image was generated" in image_replay_note({**item, "status": "failed", "result": None})
    with pytest.raises(APIError):
        image_generation_call({"type": "image_generation_call", "result": 5}, "input[0]")


def test_off_keeps_the_unsupported_tool_policy() -> None:
    tools = [{"type": "image_generation"}]
    assert plan_tools(tools, "drop", served=served_tool_types(False)).dropped == ["image_generation"]
    with pytest.raises(APIError) as refused:
        plan_tools(tools, "reject", served=served_tool_types(False))
    assert refused.value.code == "unsupported_tool_type"
    assert plan_tools(tools, "reject", served=served_tool_types(False, images=True)).dropped == []
