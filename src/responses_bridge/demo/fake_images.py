"""The fake upstream's Images API: ``POST /v1/images/generations``, as OpenAI answers it (an ``ImagesResponse``).

Each image is a real PNG of the size asked for (``1024x1024`` unless ``size`` says otherwise; ``auto`` is that
too), one colour derived from the prompt, so a client can decode it and the same prompt gives the same bytes.
GPT Image models (``gpt-image-*``, ``chatgpt-image-*``) always answer ``b64_json`` and refuse ``response_format``,
as OpenAI does; other models answer a URL unless ``response_format`` is ``b64_json``. Only ``png`` is made
(``output_format`` ``jpeg``/``webp`` is a 400 naming that limit of the fake, not silently a PNG).

Bad input is a 400 in OpenAI's error shape (a missing or empty ``prompt``, ``n`` outside 1–10, an unknown
``size``/``quality``/``background``/``moderation``, ``output_compression`` outside 0–100, a transparent
background with a format that has no alpha). ``[error=CODE]`` in the prompt answers that status instead (a
failing image model); ``create_app(images=False)`` (``--no-images``) has no such route: a 404, as an upstream
without the Images API answers. Requests are recorded like the chat route's (``GET /_fake/requests``).

``stream: true`` (GPT Image models only, as OpenAI's) answers as OpenAI's Images API streams: ``text/event-stream``
events ``image_generation.partial_image`` (``partial_images`` of them, 0–3; each a real PNG of the size asked for,
lighter the earlier it is, with its 0-based ``partial_image_index``) and then ``image_generation.completed`` (the
image the unstreamed call gives, with its usage). ``[delay=MS]`` in the prompt waits MS milliseconds before each
event, as a model drawing would.
"""

from __future__ import annotations

import asyncio
import hashlib
import re
import struct
import time
import zlib
from base64 import b64encode
from typing import Any

import orjson
from aiohttp import web

from .fake_directives import _bad_directive
from .fake_errors import FakeError, _json_response
from .fake_text import _is_int, _word_count
from .fake_upstream import _STATE, RECORDED_HEADERS, _parse_error, _read_json

SIZES = ("1024x1024", "1024x1536", "1536x1024", "256x256", "512x512", "1792x1024", "1024x1792")
QUALITIES = ("auto", "low", "medium", "high", "standard", "hd")
BACKGROUNDS = ("auto", "transparent", "opaque")
_ERROR = re.compile(r"\[error=(\d{3})\]")
_DELAY = re.compile(r"\[delay=(\d+)\]")
MAX_PARTIAL_IMAGES = 3


def png(width: int, height: int, rgb: tuple[int, int, int]) -> bytes:
    """A valid PNG of one colour (8-bit RGB, no interlace)."""
    row = b"\x00" + bytes(rgb) * width
    raw = zlib.compress(row * height, 9)

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    header = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", raw) + chunk(b"IEND", b"")


def _choice(body: dict[str, Any], name: str, allowed: tuple[str, ...]) -> str | None:
    value = body.get(name)
    if value is not None and value not in allowed:
        raise FakeError(400, f"Invalid value: '{value}'. Supported values are: "
                             f"{', '.join(repr(v) for v in allowed)}.", param=name, code="invalid_value")
    return value


def _check(body: Any) -> dict[str, Any]:
    if not isinstance(body, dict):
        raise FakeError(400, "Invalid type for request body: expected an object.", code="invalid_type")
    prompt = body.get("prompt")
    if not isinstance(prompt, str) or not prompt.strip():
        raise FakeError(400, "Missing required parameter: 'prompt'.", param="prompt",
                             code="missing_required_parameter" if prompt is None else "invalid_value")
    model = body.get("model", "dall-e-2")
    if not isinstance(model, str) or not model:
        raise FakeError(400, "Invalid type for 'model': expected a string.", param="model", code="invalid_type")
    n = body.get("n", 1)
    if not _is_int(n) or not 1 <= n <= 10:
        raise FakeError(400, f"Invalid 'n': expected an integer from 1 to 10, got {n!r}.", param="n",
                             code="invalid_value")
    if body.get("size") not in (None, "auto"):
        _choice(body, "size", SIZES)
    _choice(body, "quality", QUALITIES)
    background = _choice(body, "background", BACKGROUNDS)
    _choice(body, "moderation", ("auto", "low"))
    fmt = body.get("output_format", "png")
    if fmt in ("jpeg", "webp"):
        raise FakeError(400, f"fake upstream: output_format '{fmt}' is not made by this fake (png only).",
                             param="output_format", code="invalid_value")
    if fmt != "png":
        _choice(body, "output_format", ("png", "jpeg", "webp"))
    compression = body.get("output_compression")
    if compression is not None and (not _is_int(compression) or not 0 <= compression <= 100):
        raise FakeError(400, "Invalid 'output_compression': expected an integer from 0 to 100.",
                             param="output_compression", code="invalid_value")
    if background == "transparent" and fmt not in ("png", "webp"):
        raise FakeError(400, "A transparent background needs output_format png or webp.", param="background",
                             code="invalid_value")
    gpt_image = model.startswith(("gpt-image", "chatgpt-image"))
    response_format = body.get("response_format")
    if gpt_image and response_format is not None:
        raise FakeError(400, "Unknown parameter: 'response_format'.", param="response_format",
                             code="unknown_parameter")
    stream = body.get("stream", False)
    if not isinstance(stream, bool):
        raise FakeError(400, "Invalid type for 'stream': expected a boolean.", param="stream", code="invalid_type")
    if stream and not gpt_image:
        raise FakeError(400, "Streaming is only supported for the GPT image models.", param="stream",
                             code="invalid_value")
    partial = body.get("partial_images", 0)
    if not _is_int(partial) or not 0 <= partial <= MAX_PARTIAL_IMAGES:
        raise FakeError(400, f"Invalid 'partial_images': expected an integer from 0 to {MAX_PARTIAL_IMAGES}.",
                             param="partial_images", code="invalid_value")
    if response_format not in (None, "url", "b64_json"):
        raise FakeError(400, f"Invalid value: '{response_format}'. Supported values are: 'url' and "
                             "'b64_json'.", param="response_format", code="invalid_value")
    return body


async def images_generations(request: web.Request) -> web.StreamResponse:
    state = request.app[_STATE]
    body, ok = await _read_json(request)
    state.requests.append({"body": body, "path": request.path,
                           "headers": {name: request.headers.get(name) for name in RECORDED_HEADERS}})
    if not ok:
        raise _parse_error()
    body = _check(body)
    failure = _ERROR.search(body["prompt"])
    if failure is not None:
        status = int(failure.group(1))
        if not 400 <= status <= 599:
            raise _bad_directive(failure.group(0), "status must be 400-599")
        raise FakeError(status, f"fake upstream error {status}")
    model = body.get("model", "dall-e-2")
    size = str(body["size"]) if body.get("size") not in (None, "auto") else "1024x1024"
    width, height = (int(part) for part in size.split("x"))
    digest = hashlib.sha256(body["prompt"].encode()).digest()
    image = b64encode(png(width, height, (digest[0], digest[1], digest[2]))).decode()
    gpt_image = model.startswith(("gpt-image", "chatgpt-image"))
    as_url = not gpt_image and body.get("response_format") != "b64_json"
    data = [{"url": f"https://fake-upstream.invalid/images/{digest.hex()[:16]}-{i}.png"} if as_url
            else {"b64_json": image} for i in range(body.get("n", 1))]
    if not gpt_image:  # DALL·E 3 rewrites the prompt; the fake says it used it as given
        for entry in data:
            entry["revised_prompt"] = body["prompt"]
    prompt_tokens = _word_count(body["prompt"])
    answer: dict[str, Any] = {"created": int(time.time()), "data": data}
    if gpt_image:
        quality = body.get("quality") if body.get("quality") in ("low", "medium", "high") else "medium"
        background = "transparent" if body.get("background") == "transparent" else "opaque"
        answer.update({"background": background, "output_format": body.get("output_format", "png"),
                       "quality": quality, "size": size,
                       "usage": {"input_tokens": prompt_tokens,
                                 "input_tokens_details": {"image_tokens": 0, "text_tokens": prompt_tokens},
                                 "output_tokens": 272 * len(data), "total_tokens": prompt_tokens + 272 * len(data),
                                 "output_tokens_details": {"image_tokens": 272 * len(data), "text_tokens": 0}}})
    if body.get("stream"):
        return await _stream(request, answer, body, (width, height), (digest[0], digest[1], digest[2]))
    return _json_response(answer)


async def _stream(request: web.Request, answer: dict[str, Any], body: dict[str, Any], size: tuple[int, int],
                  rgb: tuple[int, int, int]) -> web.StreamResponse:
    """The Images API's stream: the partial images, lighter the earlier they are, then the completed image."""
    delay = _DELAY.search(body["prompt"])
    seconds = int(delay.group(1)) / 1000 if delay else 0.0
    response = web.StreamResponse(headers={"Cache-Control": "no-cache"})
    response.content_type = "text/event-stream"
    await response.prepare(request)
    made = {key: answer[key] for key in ("background", "output_format", "quality", "size")}
    created = answer["created"]
    count = body.get("partial_images", 0)
    for index in range(count):
        if seconds:
            await asyncio.sleep(seconds)
        lift = (count - index) * 40
        light = tuple(min(255, value + lift) for value in rgb)
        image = b64encode(png(*size, (light[0], light[1], light[2]))).decode()
        await _event(response, {"type": "image_generation.partial_image", "b64_json": image, "created_at": created,
                                 "partial_image_index": index, **made})
    if seconds:
        await asyncio.sleep(seconds)
    await _event(response, {"type": "image_generation.completed", "b64_json": answer["data"][0]["b64_json"],
                            "created_at": created, **made,
                            "usage": {key: answer["usage"][key] for key in
                                      ("input_tokens", "input_tokens_details", "output_tokens", "total_tokens")}})
    await response.write_eof()
    return response


async def _event(response: web.StreamResponse, event: dict[str, Any]) -> None:
    await response.write(f"event: {event['type']}\ndata: ".encode() + orjson.dumps(event) + b"\n\n")


def add_routes(app: web.Application) -> None:
    app.router.add_post("/v1/images/generations", images_generations)
