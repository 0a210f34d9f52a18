"""The fake upstream's Embeddings API: ``POST /v1/embeddings`` for the embedding model it lists (``fake-embedding``),
shaped as OpenAI's (and vLLM's and Ollama's OpenAI-compatible) answer, so a gateway passing embeddings through
meets what a real backend sends: the vectors, ``usage``, and its refusals in OpenAI's error shape.

* Vectors: a unit vector per input seeded by a hash of it (:func:`embed`), 64 floats unless ``dimensions`` says
  otherwise, float32-exact so that ``encoding_format: "base64"`` (little-endian float32 bytes) and ``float`` agree.
* ``usage``: whitespace-separated words of the text inputs, or the count of token ids.
* A chat model named (``fake-model``): 400, as OpenAI and vLLM refuse embeddings from a model not served for them;
  a model it does not list: 404 ``model_not_found``, OpenAI's wording.
"""

from __future__ import annotations

import asyncio
import base64
import hashlib
import struct
from typing import Any

import orjson
from aiohttp import web

from .fake_checks import _check_range
from .fake_errors import FakeError, _json_response, _missing
from .fake_text import _is_int, _word_count
from .fake_upstream import _STATE, EMBEDDING_MODELS, MODELS, _parse_error, _read_json

EMBEDDING_DIMENSIONS = 64


def embed(item: str | list[int], dimensions: int = EMBEDDING_DIMENSIONS) -> list[float]:
    """A unit vector seeded by a hash of the input, rounded to float32 so both encodings agree."""
    seed = item.encode() if isinstance(item, str) else orjson.dumps(item)
    raw = struct.unpack(f"<{dimensions}I", hashlib.shake_256(seed).digest(4 * dimensions))
    vector = [v / 2**31 - 1.0 for v in raw]
    norm = sum(v * v for v in vector) ** 0.5 or 1.0
    return list(struct.unpack(f"<{dimensions}f", struct.pack(f"<{dimensions}f", *(v / norm for v in vector))))


def _embedding_inputs(value: Any) -> list[str | list[int]]:
    def bad() -> FakeError:
        return FakeError(400, "'$.input' is invalid. Please check the API reference: "
                         "https://platform.openai.com/docs/api-reference.", param="input")

    if value is None:
        raise _missing("input")
    if isinstance(value, str):
        value = [value]
    if not isinstance(value, list) or not value:
        raise bad()
    if all(_is_int(v) for v in value):
        return [value]
    for item in value:
        ok = (isinstance(item, str) and item) or (isinstance(item, list) and item and all(_is_int(v) for v in item))
        if not ok:
            raise bad()
    return value


def _check_model(model: str) -> None:
    """Only the embedding model embeds: a chat model is refused (400), an unknown one is not found (404)."""
    if model in EMBEDDING_MODELS:
        return
    if model in MODELS:
        raise FakeError(400, f"The model '{model}' does not support embeddings: it is a chat model. Embedding "
                        f"models here: {', '.join(EMBEDDING_MODELS)}.", param="model", code="model_not_supported")
    raise FakeError(404, f"The model '{model}' does not exist or you do not have access to it.",
                    param="model", code="model_not_found", type="invalid_request_error")


async def embeddings(request: web.Request) -> web.Response:
    body, ok = await _read_json(request)
    if not ok:
        raise _parse_error()
    if not isinstance(body, dict):
        raise FakeError(400, "Invalid type for request body: expected an object.", code="invalid_type")
    if not isinstance(body.get("model"), str) or not body["model"]:
        raise FakeError(400, "you must provide a model parameter", param="model", code="missing_required_parameter")
    _check_model(body["model"])
    inputs = _embedding_inputs(body.get("input"))
    fmt = body.get("encoding_format") or "float"
    if fmt not in ("float", "base64"):
        raise FakeError(400, f"Invalid value: {fmt!r}. Supported values are: 'float' and 'base64'.",
                        param="encoding_format", code="invalid_value")
    _check_range(body, "dimensions", 1, 4096, integer=True)
    dims = body.get("dimensions") or EMBEDDING_DIMENSIONS
    delay = request.app[_STATE].embedding_delay
    if delay:
        await asyncio.sleep(delay)
    data = []
    for i, item in enumerate(inputs):
        vector = embed(item, dims)
        encoded: Any = vector
        if fmt == "base64":
            encoded = base64.b64encode(struct.pack(f"<{dims}f", *vector)).decode()
        data.append({"object": "embedding", "index": i, "embedding": encoded})
    tokens = sum(_word_count(x) if isinstance(x, str) else len(x) for x in inputs)
    return _json_response({"object": "list", "data": data, "model": body["model"],
                           "usage": {"prompt_tokens": tokens, "total_tokens": tokens}})
