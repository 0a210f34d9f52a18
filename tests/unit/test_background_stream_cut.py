"""A background response's event stream whose reading fails once its head is sent (the database away past the
store's retries) ends, cut short (no ``[DONE]``), so the client follows again with ``starting_after``. Before, the
error middleware's 503 could not replace the head already sent, and the connection stayed open with nothing more."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import aiohttp
from aiohttp import web
from aiohttp.test_utils import TestServer

from responses_bridge.adapters.http.errors import error_middleware
from responses_bridge.adapters.http.responses.background_routes import _stream
from responses_bridge.engine.sse import DONE_FRAME

FRAME = b'event: response.created\ndata: {"type":"response.created","sequence_number":0}\n\n'


class _FailingFollower:
    async def events_after(self, response_id: str, after: int, *, tenant: str) -> AsyncIterator[bytes]:
        yield FRAME
        await asyncio.sleep(0)
        raise ConnectionResetError(104, "Connection reset by peer")  # the store's, past its retries


async def test_a_stream_whose_reading_fails_ends_cut_short_and_never_hangs() -> None:
    async def handler(request: web.Request) -> web.StreamResponse:
        return await _stream(request, _FailingFollower(), "resp_x", -1, "")  # type: ignore[arg-type]

    app = web.Application(middlewares=[error_middleware])
    app.router.add_get("/stream", handler)
    server = TestServer(app, host="127.0.0.1")
    await server.start_server()
    try:
        async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=10)) as session, \
                session.get(server.make_url("/stream")) as answer:
            assert answer.status == 200
            body = await answer.content.read()  # to its end: before, this waited for ever
    finally:
        await server.close()
    assert body == FRAME and DONE_FRAME not in body
