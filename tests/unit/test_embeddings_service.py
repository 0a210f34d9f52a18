"""The Embeddings API's passthrough to an upstream embedding model when that endpoint misbehaves (over a real
socket to a small aiohttp server): its refusals are kept in exactly OpenAI's error shape, everything else it does
wrong is a 502 ``embedding_failed``; and the 400 that a deployment without any embedder answers."""

from __future__ import annotations

from collections.abc import AsyncIterator

import orjson
import pytest
from aiohttp import web

from responses_bridge.protocol.errors import APIError
from responses_bridge.services.embeddings import EmbeddingService
from responses_bridge.services.retrieval.embedders import UnavailableEmbedder, UpstreamEmbedder

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
