"""The Embeddings API's passthrough to an upstream embedding model when that endpoint misbehaves (over a real
socket to a small aiohttp server): its refusals are kept in exactly OpenAI's error shape, everything else it does
wrong is a 502 ``embedding_failed``; the 400 that a deployment without any embedder answers; and, with the local
model, inputs too long for OpenAI's token limits refused on their length, before the tokenizer sees them."""

from __future__ import annotations

import math
from collections.abc import AsyncIterator
from typing import Any

import numpy as np
import orjson
import pytest
from aiohttp import web

from responses_bridge.config.settings import Settings
from responses_bridge.engine.chat_tokens import load_encoding
from responses_bridge.protocol.errors import APIError
from responses_bridge.services.files import embeddings
from responses_bridge.services.files.embedder_names import names_from_settings
from responses_bridge.services.files.embeddings import (
    LOCAL_MODEL,
    MAX_INPUT_TOKENS,
    MAX_REQUEST_TOKENS,
    MAX_TOKEN_CHARS,
    EmbeddingService,
)
from responses_bridge.services.files.retrieval.embedders import (
    LocalStaticEmbedder,
    UnavailableEmbedder,
    UpstreamEmbedder,
    embedder_from_settings,
    local_embedder_name,
)

ANSWERS: dict[str, tuple[int, bytes]] = {
    "ok": (200, b'{"object": "list", "data": [], "model": "m", "usage": {"prompt_tokens": 1, "total_tokens": 1}}'),
    "refused": (400, b'{"error": {"message": "too long", "type": "invalid_request_error", "param": "input", '
                     b'"code": null, "extra": 1}}'),
    "refused_oddly": (422, b'{"error": {"message": "no", "param": 7}}'),
    "not_json_refusal": (400, b"bad request"),
    "server_error": (500, b'{"error": {"message": "boom"}}'),
    "not_json": (200, b"<html>"),
    "no_data": (200, b'{"object": "list"}'),
}


@pytest.fixture
async def endpoint() -> AsyncIterator[str]:
    async def embeddings(request: web.Request) -> web.Response:
        status, body = ANSWERS[(await request.json())["user"]]
        return web.Response(status=status, body=body, content_type="application/json")

    app = web.Application()
    app.router.add_post("/v1/embeddings", embeddings)
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
    try:
        yield f"http://127.0.0.1:{port}/v1"
    finally:
        await runner.cleanup()


async def _create(service: EmbeddingService, user: str) -> tuple[int, bytes]:
    return await service.create({"model": "m", "input": "x", "user": user})


async def test_the_endpoints_answers_and_refusals_pass_through(endpoint: str) -> None:
    service = EmbeddingService(UpstreamEmbedder(endpoint, "m", None))
    try:
        assert await _create(service, "ok") == ANSWERS["ok"]
        with pytest.raises(APIError) as refused:
            await _create(service, "refused")
        assert (refused.value.status, refused.value.body()) == (400, orjson.dumps({"error": {
            "message": "too long", "type": "invalid_request_error", "param": "input", "code": None}}))
        with pytest.raises(APIError) as odd:
            await _create(service, "refused_oddly")
        assert (odd.value.status, odd.value.param, odd.value.type) == (422, None, "invalid_request_error")
    finally:
        await service.embedder.aclose()


@pytest.mark.parametrize("user", ["not_json_refusal", "server_error", "not_json", "no_data"])
async def test_a_failing_endpoint_is_a_502(endpoint: str, user: str) -> None:
    service = EmbeddingService(UpstreamEmbedder(endpoint, "m", None))
    try:
        with pytest.raises(APIError) as failed:
            await _create(service, user)
        assert (failed.value.status, failed.value.code) == (502, "embedding_failed")
    finally:
        await service.embedder.aclose()


async def test_an_unreachable_endpoint_is_a_502() -> None:
    service = EmbeddingService(UpstreamEmbedder("http://127.0.0.1:9/v1", "m", None))
    try:
        with pytest.raises(APIError) as failed:
            await _create(service, "ok")
        assert (failed.value.status, failed.value.code) == (502, "embedding_failed")
        assert "could not be reached" in failed.value.message
    finally:
        await service.embedder.aclose()


async def test_without_an_embedder_the_answer_says_how_to_get_one() -> None:
    with pytest.raises(APIError) as refused:
        await EmbeddingService(UnavailableEmbedder()).create({"model": "m", "input": "x"})
    assert (refused.value.status, refused.value.code) == (400, "embedder_unavailable")


@pytest.mark.parametrize(("status", "answer", "expected"), [
    # OpenAI's and Ollama's OpenAI-compatible shape: its fields kept
    (404, b'{"error": {"message": "model \\"x\\" not found, try pulling it first", "type": "api_error", '
          b'"param": null, "code": null}}',
     (404, 'model "x" not found, try pulling it first', "api_error", None, None)),
    # vLLM's older flat shape (its code a number, which OpenAI's shape has as a string or null)
    (404, b'{"object": "error", "message": "The model `x` does not exist.", "type": "NotFoundError", '
          b'"param": null, "code": 404}', (404, "The model `x` does not exist.", "NotFoundError", None, None)),
    # a bare string (llama.cpp, Ollama's own API)
    (400, b'{"error": "input is too long"}', (400, "input is too long", "invalid_request_error", None, None)),
    (400, b"bad request", (400, "The upstream answered HTTP 400: bad request", "invalid_request_error", None, None)),
    (401, b"", (401, "The upstream answered HTTP 401.", "authentication_error", None, None)),
    # the upstream's own failure: a 502 that names it
    (500, b'{"error": {"message": "CUDA out of memory"}}',
     (502, "The upstream failed (HTTP 500): CUDA out of memory", "server_error", None, "upstream_error")),
])
def test_an_upstreams_refusal_in_openais_shape(status: int, answer: bytes, expected: tuple[Any, ...]) -> None:
    error = embeddings.upstream_error(status, answer)
    assert (error.status, error.message, error.type, error.param, error.code) == expected
    assert set(orjson.loads(error.body())["error"]) == {"message", "type", "param", "code"}


def test_which_models_the_service_answers_and_lists() -> None:
    """Its embedder's names and the local model's (with another embedder: its 404 naming the one served); every
    other model is an upstream's, passed through by the door."""
    local = EmbeddingService(StubLocalEmbedder())
    assert local.answers(LOCAL_MODEL) and local.answers("local:tokenlearn-static-model@sha256:0000000000000000")
    assert not local.answers("nomic-embed-text") and not local.answers("fake-embedding")
    assert local.listed() == {"id": LOCAL_MODEL, "object": "model", "created": 0, "owned_by": "responses-bridge"}
    upstream = EmbeddingService(UpstreamEmbedder("http://127.0.0.1:9/v1", "text-embedding-3-large", None))
    assert upstream.answers("text-embedding-3-large") and upstream.answers(LOCAL_MODEL)
    assert not upstream.answers("nomic-embed-text")
    assert upstream.listed() is not None and upstream.listed()["id"] == "text-embedding-3-large"  # type: ignore[index]
    none = EmbeddingService(UnavailableEmbedder())
    assert none.answers(LOCAL_MODEL) and not none.answers("nomic-embed-text") and none.listed() is None


@pytest.mark.parametrize("embedding_model", [None, "text-embedding-3-large"])
def test_the_settings_name_the_embedder_they_build(embedding_model: str | None) -> None:
    """GET /v1/models and the choice of who answers POST /v1/embeddings read the embedder's names from the
    settings, without building it: they are the names of the embedder the settings build."""
    settings = Settings(upstream="http://127.0.0.1:9/v1", embedding_model=embedding_model)
    built = EmbeddingService(embedder_from_settings(settings))
    names = names_from_settings(settings)
    assert names.listed() == built.listed() and names.served_model() == built.served_model()
    local_name = local_embedder_name()
    for model in (LOCAL_MODEL, local_name, local_name.removeprefix("local:"), f"{LOCAL_MODEL}@sha256:0",
                  "text-embedding-3-large", "nomic-embed-text"):
        assert names.answers(model) == built.answers(model), model
        assert names.serves(model) == built.names.serves(model), model
    assert names.serves(local_name) == (embedding_model is None)  # else answered: the 404 naming the one served


class StubLocalEmbedder(LocalStaticEmbedder):
    """The local model's place in the service, without its model files: every text embeds as one vector."""

    name = "local:tokenlearn-static-model@sha256:0000000000000000"  # in place of the model files' digest

    def __init__(self) -> None:
        self.dimensions = self.DIMENSIONS
        self.texts: list[str] = []

    async def embed(self, texts: list[str]) -> np.ndarray:
        self.texts += texts
        return np.full((len(texts), self.dimensions), 1 / 8, dtype=np.float32)


class SpyEncoding:
    """Stands for cl100k_base: counts the fewest tokens a text can have (its characters over the longest token's),
    and records what it was asked to tokenize."""

    def __init__(self) -> None:
        self.encoded: list[int] = []

    def encode(self, text: str, disallowed_special: Any = ()) -> list[int]:
        self.encoded.append(len(text))
        return [0] * math.ceil(len(text) / MAX_TOKEN_CHARS)


@pytest.fixture
def spy(monkeypatch: pytest.MonkeyPatch) -> SpyEncoding:
    encoding = SpyEncoding()
    monkeypatch.setattr(embeddings, "load_encoding", lambda: encoding)
    return encoding


LONGEST = MAX_INPUT_TOKENS * MAX_TOKEN_CHARS  # the most characters an input within the limit can have


@pytest.mark.parametrize(("given", "param"), [
    ("x" * (LONGEST + 1), "input"),
    (["short", "x" * (LONGEST + 1)], "input[1]"),
    (["x" * LONGEST] * (MAX_REQUEST_TOKENS // MAX_INPUT_TOKENS + 1), "input"),  # each may fit, not all of them
    ([7] * (MAX_INPUT_TOKENS + 1), "input"),
    ([[7], [7] * (MAX_INPUT_TOKENS + 1)], "input[1]"),
])
async def test_an_input_that_cannot_fit_is_refused_before_it_is_tokenized(spy: SpyEncoding, given: Any,
                                                                          param: str) -> None:
    service = EmbeddingService(StubLocalEmbedder())
    with pytest.raises(APIError) as refused:
        await service.create({"model": LOCAL_MODEL, "input": given})
    assert (refused.value.status, refused.value.param, refused.value.code) == (400, param, "invalid_value")
    assert spy.encoded == []  # refused on its length: the tokenizer never ran


async def test_an_input_as_long_as_can_fit_is_tokenized_and_embedded(spy: SpyEncoding) -> None:
    embedder = StubLocalEmbedder()
    status, body = await EmbeddingService(embedder).create({"model": LOCAL_MODEL, "input": " " * LONGEST})
    assert status == 200 and spy.encoded == [LONGEST] and len(embedder.texts) == 1
    assert orjson.loads(body)["usage"]["prompt_tokens"] == MAX_INPUT_TOKENS


def test_no_cl100k_token_is_longer_than_the_bound() -> None:
    """The bound the length check leans on: no token of cl100k_base (special ones included) stands for more than
    MAX_TOKEN_CHARS characters (it stands for at most that many bytes, and a character is at least one)."""
    encoding = load_encoding()
    if encoding is None:
        pytest.skip("the cl100k_base encoding cannot be loaded here")
    longest = 0
    for token in range(encoding.n_vocab):
        try:
            longest = max(longest, len(encoding.decode_single_token_bytes(token)))
        except KeyError:  # ids between the ordinary and the special tokens name nothing
            continue
    assert longest == MAX_TOKEN_CHARS
    assert len(encoding.encode(" " * LONGEST, disallowed_special=())) == MAX_INPUT_TOKENS  # the bound is reached
