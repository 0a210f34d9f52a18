"""The ``image_generation`` tool: one ``POST images/generations`` to the run's own upstream per call.

A deployment switches it on (``RESPONSES_BRIDGE_IMAGE_GENERATION=upstream``) when its upstream serves OpenAI's
Images API. The request's tool fixes the image's settings (``model``, ``size``, ``quality``, ``output_format``,
``output_compression``, ``background``, ``moderation``); the model writes the prompt, and picks the size when the
tool leaves it ``auto``. The call goes through the client and with the credentials of the run's model turns
(``run/upstream_scope.py``), so through Envoy with ``--upstream-via``.

``partial_images`` (1–3) streams the image as OpenAI does: the call asks the Images API for a stream
(``stream: true``, ``partial_images``), and each ``image_generation.partial_image`` event the upstream sends is
handed on as it comes (:data:`PartialImage`: the run emits ``response.image_generation_call.partial_image``), the
``image_generation.completed`` event giving the item's image. An upstream that answers the streamed call with one
JSON ``ImagesResponse`` (no streaming Images API) still gives the image, with no partial one: it made none.

What the upstream cannot do here is refused before anything is sent (a 400 naming the field): an edit (``action:
edit``, ``input_image_mask``: the Images API's edits route takes the input image as a file upload), and the settings
of image formats the Images API has no field for (``frame_count``, ``frame_duration_ms``, ``svg``, ``complexity``).

A failed call (the upstream refused, answered without an image, or could not be reached) is an
:class:`ImageGenerationError` whose text the model reads; the run marks the item ``failed``.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass
from typing import Any

import orjson

from ...engine.sse import DONE, EventTooLarge, SSEDecoder
from ...engine.wire import UpstreamRequest
from ...protocol.errors import APIError
from ..upstream import UpstreamFailure
from ..upstream_scope import current_upstream

DEFAULT_MODEL = "gpt-image-1"
DEFAULT_TIMEOUT = 120.0
IMAGES_PATH = "images/generations"
FORWARDED = ("size", "quality", "output_format", "output_compression", "background", "moderation")
"""The tool's fields an ``images/generations`` body takes as they are."""
REFUSED = ("input_image_mask", "frame_count", "frame_duration_ms", "svg", "complexity")
ITEM_FIELDS = ("size", "quality", "output_format", "background")
"""What the ``image_generation_call`` item says was made (from the upstream's answer, else the request's)."""
MAX_ERROR_TEXT = 300
MAX_PARTIAL_IMAGES = 3
"""OpenAI's bound on ``partial_images`` (0–3)."""
MAX_IMAGE_EVENT_BYTES = 64 << 20
"""One streamed image event at most (a base64 image of the largest size): the stream's buffer is bounded by it."""

PartialImage = Callable[[str, int, dict[str, Any]], Awaitable[None]]
"""Told of each partial image as it comes: its base64, its 0-based index, and what the upstream says of it
(``size``, ``quality``, ``output_format``, ``background``)."""


class ImageGenerationError(Exception):
    """One call's failure, in words the model reads."""


@dataclass(frozen=True, slots=True)
class ImageSettings:
    """The deployment's image generation: the model when the tool names none, one call's time limit."""

    model: str = DEFAULT_MODEL
    timeout: float = DEFAULT_TIMEOUT


@dataclass(frozen=True, slots=True)
class ImageToolOptions:
    """A request's ``image_generation`` tool: the image model (None: the deployment's) and the fields sent as
    they are."""

    model: str | None
    fields: dict[str, Any]
    partial_images: int = 0

    @property
    def choose_size(self) -> bool:
        """Does the tool leave the size to the model (unset or ``auto``)?"""
        return self.fields.get("size") in (None, "auto")

    @classmethod
    def from_tool(cls, tool: Mapping[str, Any], position: int) -> ImageToolOptions:
        """The tool's settings; a 400 naming the field for what cannot run here."""
        param = f"tools[{position}]"
        partial = tool.get("partial_images")
        if partial is not None and (type(partial) is not int or not 0 <= partial <= MAX_PARTIAL_IMAGES):
            raise APIError(400, f"Invalid value for the image_generation tool's 'partial_images': expected an integer "
                           f"from 0 to {MAX_PARTIAL_IMAGES}.", param=f"{param}.partial_images", code="invalid_value")
        if tool.get("action") == "edit":
            raise APIError(400, "Image edits are not supported on this deployment: the image_generation tool only "
                           "generates new images (action 'generate' or 'auto').", param=f"{param}.action",
                           code="unsupported_parameter")
        for name in REFUSED:
            if tool.get(name) is not None:
                raise APIError(400, f"The image_generation tool's '{name}' is not supported on this deployment.",
                               param=f"{param}.{name}", code="unsupported_parameter")
        model = tool.get("model")
        if model is not None and not isinstance(model, str):
            raise APIError(400, "Invalid type for the image_generation tool's 'model': expected a string.",
                           param=f"{param}.model", code="invalid_type")
        fields = {name: tool[name] for name in FORWARDED if tool.get(name) is not None}
        return cls(model, fields, partial or 0)


@dataclass(frozen=True, slots=True)
class GeneratedImage:
    """An image the upstream made: ``fields`` are the item's (``result`` and what was made)."""

    fields: dict[str, Any]

    def text_for_model(self) -> str:
        made = ", ".join(str(self.fields[key]) for key in ITEM_FIELDS if self.fields.get(key) is not None)
        return (f"The image was generated{f' ({made})' if made else ''} and is shown to the user. Do not repeat "
                "its data; refer to it in words.")


def images_body(prompt: str, size: str | None, options: ImageToolOptions, settings: ImageSettings) -> dict[str, Any]:
    """The ``images/generations`` body of one call. One image (``n: 1``: one call, one item). GPT Image models
    always answer base64 and refuse ``response_format``; other image models (DALL·E, most local servers) answer
    a URL unless asked for ``b64_json``, and the item must carry the image itself."""
    model = options.model or settings.model
    body: dict[str, Any] = {"model": model, "prompt": prompt, "n": 1, **options.fields}
    if options.choose_size and size is not None:
        body["size"] = size
    if not model.startswith(("gpt-image", "chatgpt-image")):
        body["response_format"] = "b64_json"
    if options.partial_images:
        body.update(stream=True, partial_images=options.partial_images)
    return body


async def generate_image(prompt: str, size: str | None, options: ImageToolOptions, settings: ImageSettings,
                         partial: PartialImage | None = None) -> GeneratedImage:
    """One image from the run's upstream; with ``partial_images``, streamed, ``partial`` told of each partial
    image as it comes. Raises :class:`ImageGenerationError` for every failure but cancellation."""
    if not prompt.strip():
        raise ImageGenerationError("the prompt is empty")
    scope = current_upstream()
    if scope is None:
        raise ImageGenerationError("no upstream is known for this response")
    body = images_body(prompt, size, options, settings)
    if body.get("stream"):
        try:
            async with asyncio.timeout(settings.timeout):
                return await _streamed(scope.client, scope.authorization, body, partial)
        except TimeoutError:
            raise ImageGenerationError(f"the image model did not finish within {settings.timeout:g} s") from None
    try:
        async with scope.client.post_json(IMAGES_PATH, orjson.dumps(body), scope.authorization,
                                          timeout=settings.timeout) as answer:
            status = answer.status
            raw = await scope.client.read_answer(answer)
    except UpstreamFailure as failure:
        raise ImageGenerationError(failure.error.message) from None
    if status >= 400:
        raise ImageGenerationError(f"the image model answered HTTP {status}: {_error_text(raw)}")
    return GeneratedImage(_image_fields(raw, body))


async def _streamed(client: Any, authorization: str | None, body: dict[str, Any],
                    partial: PartialImage | None) -> GeneratedImage:
    """A streamed ``images/generations`` call: each partial image handed to ``partial`` as its event arrives,
    the ``image_generation.completed`` event's image returned. An answer that is JSON, not a stream, is read as
    the unstreamed call's."""
    call = UpstreamRequest(IMAGES_PATH, orjson.dumps(body), True)
    try:
        async with client.chat(call, authorization) as answer:
            if answer.status >= 400 or "text/event-stream" not in (answer.content_type or ""):
                raw = bytearray()
                async for chunk in answer.chunks():
                    raw += chunk
                    if len(raw) > MAX_IMAGE_EVENT_BYTES:
                        raise ImageGenerationError("the image model's answer is too large")
                if answer.status >= 400:
                    raise ImageGenerationError(f"the image model answered HTTP {answer.status}: "
                                               f"{_error_text(bytes(raw))}")
                return GeneratedImage(_image_fields(bytes(raw), body))
            decoder = SSEDecoder(MAX_IMAGE_EVENT_BYTES)
            async for chunk in answer.chunks():
                for payload in decoder.feed(chunk):
                    done = await _image_event(payload, body, partial)
                    if done is not None:
                        return done
            for payload in decoder.flush():
                done = await _image_event(payload, body, partial)
                if done is not None:
                    return done
    except UpstreamFailure as failure:
        raise ImageGenerationError(failure.error.message) from None
    except EventTooLarge:
        raise ImageGenerationError("the image model sent an event too large to read") from None
    raise ImageGenerationError("the image model's stream ended without the image")


async def _image_event(payload: bytes, body: dict[str, Any], partial: PartialImage | None) -> GeneratedImage | None:
    """One event of the Images API's stream (``ImageGenStreamEvent``): a partial image handed on; the completed
    image returned; an ``error`` event raised."""
    if payload == DONE:
        return None
    try:
        event = orjson.loads(payload)
    except orjson.JSONDecodeError:
        raise ImageGenerationError("the image model's stream is not JSON") from None
    if not isinstance(event, dict):
        raise ImageGenerationError("the image model's stream is not JSON objects")
    kind = event.get("type")
    if kind == "image_generation.partial_image":
        image, index = event.get("b64_json"), event.get("partial_image_index")
        if isinstance(image, str) and image and type(index) is int and partial is not None:
            await partial(image, index, {key: event[key] for key in ITEM_FIELDS if isinstance(event.get(key), str)})
        return None
    if kind == "image_generation.completed":
        return GeneratedImage(_image_fields(orjson.dumps({**event, "data": [{"b64_json": event.get("b64_json")}]}),
                                            body))
    if kind == "error" or "error" in event:
        raise ImageGenerationError(f"the image model failed: {_error_text(payload)}")
    return None


def _error_text(raw: bytes) -> str:
    """An error answer's message (OpenAI's shape), or its first bytes."""
    try:
        decoded = orjson.loads(raw)
    except orjson.JSONDecodeError:
        decoded = None
    error = decoded.get("error") if isinstance(decoded, dict) else None
    message = error.get("message") if isinstance(error, dict) else error if isinstance(error, str) else None
    text = message if isinstance(message, str) else raw.decode("utf-8", "replace")
    return " ".join(text.split())[:MAX_ERROR_TEXT] or "no details"


def _image_fields(raw: bytes, body: dict[str, Any]) -> dict[str, Any]:
    """The item's fields from an ``ImagesResponse``: the first image's base64 (checked: it must decode), its
    revised prompt (else the prompt sent), and what was made (the answer's, else the request's own choice)."""
    try:
        answer = orjson.loads(raw)
    except orjson.JSONDecodeError:
        raise ImageGenerationError("the image model's answer is not JSON") from None
    data = answer.get("data") if isinstance(answer, dict) else None
    first = data[0] if isinstance(data, list) and data and isinstance(data[0], dict) else None
    if first is None:
        raise ImageGenerationError("the image model answered without an image")
    result = first.get("b64_json")
    if not isinstance(result, str) or not result:
        raise ImageGenerationError("the image model answered without base64 image data"
                                   + (" (only a URL)" if first.get("url") else ""))
    try:
        base64.b64decode(result, validate=True)
    except (binascii.Error, ValueError):
        raise ImageGenerationError("the image model's base64 image data does not decode") from None
    revised = first.get("revised_prompt")
    fields: dict[str, Any] = {"result": result,
                              "revised_prompt": revised if isinstance(revised, str) and revised else body["prompt"]}
    for key in ITEM_FIELDS:
        value = answer.get(key)
        if not isinstance(value, str):
            chosen = body.get(key)
            value = chosen if isinstance(chosen, str) and chosen != "auto" else None
        if value is not None:
            fields[key] = value
    return fields
