"""The upstream idle limit on a streamed answer: silence from the upstream while the sidecar waits for it fails
the answer (504, ``upstream_timeout``); time the sidecar itself spends on a chunk (a slow client) does not count."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import pytest
from aiohttp import web

from responses_bridge.adapters.upstream_client import AiohttpUpstreamClient
from responses_bridge.config.settings import Settings
from responses_bridge.engine.wire import UpstreamRequest
from responses_bridge.run.upstream import UpstreamFailure

IDLE = 0.3


async def _paced(request: web.Request) -> web.StreamResponse:
    """Three chunks with the gaps the query names (seconds), then the end."""
    gaps = [float(g) for g in request.query["gaps"].split(",")]
    response = web.StreamResponse(headers={"Content-Type": "text/event-stream"})
    await response.prepare(request)
    for index, gap in enumerate(gaps):
        await asyncio.sleep(gap)
        await response.write(f"data: {index}\n\n".encode())
    await response.write_eof()
    return response


@pytest.fixture
async def upstream() -> AsyncIterator[str]:
    app = web.Application()
    app.router.add_post("/v1/chat/completions", _paced)
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
    yield f"http://127.0.0.1:{port}/v1"
    await runner.cleanup()


async def _read(base: str, gaps: str, hold: float) -> list[bytes]:
    """Every chunk, holding each one ``hold`` seconds before asking for the next (a slow client)."""
    client = AiohttpUpstreamClient(Settings(upstream=base, upstream_idle_timeout=IDLE))
    await client.start()
    try:
        call = UpstreamRequest(f"chat/completions?gaps={gaps}", b"{}", True)
        async with client.chat(call, None) as answer:
            chunks = []
            async for chunk in answer.chunks():
                chunks.append(chunk)
                await asyncio.sleep(hold)
            return chunks
    finally:
        await client.close()


async def test_a_slow_reader_is_not_upstream_silence(upstream: str) -> None:
    chunks = await _read(upstream, "0,0,0", hold=3 * IDLE)
    assert b"".join(chunks) == b"data: 0\n\ndata: 1\n\ndata: 2\n\n"


async def test_a_silent_upstream_fails_with_a_timeout(upstream: str) -> None:
    # the silence comes after two chunks read on their own: no timer of the headers' wait is left to catch it
    with pytest.raises(UpstreamFailure) as caught:
        await _read(upstream, f"{IDLE / 4},{IDLE / 4},{4 * IDLE}", hold=0)
    assert caught.value.error.status == 504
    assert caught.value.error.code == "upstream_timeout"


async def test_gaps_shorter_than_the_limit_pass(upstream: str) -> None:
    chunks = await _read(upstream, f"{IDLE / 2},{IDLE / 2},{IDLE / 2}", hold=0)
    assert len(b"".join(chunks).split(b"\n\n")) == 4
