"""Every whole answer the bridge reads from another server has a ceiling, checked while reading: a declared length
over it is refused unread, and an undeclared (chunked) body is dropped at the ceiling. The servers here are real
aiohttp servers on loopback that answer more than the reader may take."""

from __future__ import annotations

from collections.abc import AsyncIterator

import aiohttp
import pytest
from aiohttp import web

from responses_bridge.net.bounded_body import BodyTooLarge, read_bounded
from responses_bridge.services.files.retrieval.embedders import EmbeddingError, UpstreamEmbedder

MB = 1024 * 1024


async def _endless(request: web.Request) -> web.StreamResponse:
    """A chunked answer that never says how long it is: 1 MB pieces until the client hangs up (or 200 MB)."""
    response = web.StreamResponse(headers={"Content-Type": "application/json"})
    await response.prepare(request)
    piece = b" " * MB
    try:
        for _ in range(200):
            await response.write(piece)
    except (ConnectionResetError, RuntimeError):
        pass
    return response


async def _declared(request: web.Request) -> web.Response:
    return web.Response(body=b"[" + b"0," * (3 * MB) + b"0]", content_type="application/json")


@pytest.fixture
async def server() -> AsyncIterator[str]:
    app = web.Application()
    app.router.add_route("*", "/endless", _endless)
    app.router.add_route("*", "/declared", _declared)
    app.router.add_post("/v1/embeddings", _endless)
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        await runner.cleanup()


@pytest.mark.parametrize(("path", "declared"), [("/endless", False), ("/declared", True)])
async def test_read_bounded_stops_at_the_ceiling(server: str, path: str, declared: bool) -> None:
    async with aiohttp.ClientSession() as session, session.get(server + path) as response:
        with pytest.raises(BodyTooLarge) as raised:
            await read_bounded(response, 2 * MB)
    assert raised.value.limit == 2 * MB and (raised.value.declared is not None) == declared


async def test_read_bounded_reads_what_fits(server: str) -> None:
    async with aiohttp.ClientSession() as session, session.get(server + "/declared") as response:
        body = await read_bounded(response, 8 * MB)
    assert body.startswith(b"[0,") and len(body) == 6 * MB + 3


async def test_an_embeddings_endpoint_answering_without_end_is_an_embedding_error(server: str) -> None:
    embedder = UpstreamEmbedder(f"{server}/v1", "any-model", None)
    try:
        with pytest.raises(EmbeddingError, match="answered more than"):
            await embedder.embed(["one text"])
    finally:
        await embedder.aclose()
