"""The HTTP door's drain in-process: which requests it refuses, and how a stream is ended at the deadline.
(The whole shutdown, with signals and real processes, is tests/integration/test_drain.py; this file has another
name because pytest imports test modules by basename here.)"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from types import SimpleNamespace

import pytest
from aiohttp import web
from aiohttp.test_utils import TestClient, TestServer

from responses_bridge.adapters.http.drain import Drain, ShutdownDeadline


@pytest.fixture
async def door() -> AsyncIterator[tuple[Drain, TestClient, dict]]:
    runtime = SimpleNamespace(draining=False)
    drain = Drain(runtime)  # type: ignore[arg-type]
    seen: dict = {"entered": asyncio.Event(), "outcome": None}

    async def ok(request: web.Request) -> web.Response:
        return web.Response(text="ok")

    async def slow(request: web.Request) -> web.Response:
        try:
            async with drain.deadline():
                seen["entered"].set()
                await asyncio.Event().wait()  # a stream that would never end on its own
        except ShutdownDeadline:
            seen["outcome"] = "deadline"
        return web.Response(text="ended by the drain")

    app = web.Application(middlewares=[drain.middleware])
    for path in ("/health", "/health/ready", "/metrics", "/v1/responses/x"):
        app.router.add_get(path, ok)
    app.router.add_post("/v1/responses", slow)
    async with TestClient(TestServer(app)) as client:
        yield drain, client, seen


async def test_draining_refuses_new_work_but_not_probes(door: tuple[Drain, TestClient, dict]) -> None:
    drain, client, _ = door
    drain.runtime.draining = True
    for path in ("/health", "/health/ready", "/metrics"):
        assert (await client.get(path)).status == 200, path
    refused = await client.get("/v1/responses/x")
    assert refused.status == 503
    assert refused.headers["Connection"] == "close"
    body = await refused.json()
    assert body["error"]["code"] == "server_shutting_down" and set(body["error"]) == {"message", "type", "param",
                                                                                      "code"}


async def test_the_deadline_ends_a_running_stream_from_inside(door: tuple[Drain, TestClient, dict]) -> None:
    drain, client, seen = door
    request = asyncio.create_task(client.post("/v1/responses"))
    await seen["entered"].wait()
    assert drain.in_flight == 1
    await drain.run(0)  # no time left: the stream is interrupted at once
    response = await request
    assert seen["outcome"] == "deadline"
    assert await response.text() == "ended by the drain"
    assert drain.in_flight == 0


async def test_a_stream_that_starts_after_the_deadline_ends_at_once(door: tuple[Drain, TestClient, dict]) -> None:
    drain, client, seen = door
    await drain.run(0)
    drain.runtime.draining = False  # let the request in, as one already past the middleware would be
    response = await client.post("/v1/responses")
    assert seen["outcome"] == "deadline" and response.status == 200


async def test_other_timeouts_are_not_taken_for_the_deadline() -> None:
    drain = Drain(SimpleNamespace(draining=False))  # type: ignore[arg-type]
    with pytest.raises(TimeoutError):
        async with drain.deadline():
            async with asyncio.timeout(0):  # e.g. an upstream timeout inside the stream
                await asyncio.sleep(1)


async def test_a_session_event_stream_ends_cleanly_at_the_deadline_though_its_log_never_closes() -> None:
    """A session's events reader ends when the drain's hand-off closes its log; on a loaded host that once came
    after the door's close, which cut the reader's connection (read as an error, not an end). At the deadline the
    stream now ends cleanly after the events it was sent, and lets go of its reader."""
    from responses_bridge.adapters.http.agents.agents_routes import _sse
    from responses_bridge.adapters.http.drain import DRAIN

    drain = Drain(SimpleNamespace(draining=False))  # type: ignore[arg-type]
    sent, let_go = asyncio.Event(), asyncio.Event()
    frame = b"id: 1\nevent: agent.session.turn.output_text.delta\ndata: {}\n\n"

    async def log() -> AsyncIterator[bytes]:
        try:
            yield frame
            sent.set()
            await asyncio.Event().wait()  # a log whose hand-off never comes
            yield b""
        finally:
            let_go.set()

    async def events(request: web.Request) -> web.StreamResponse:
        return await _sse(request, log())  # type: ignore[arg-type]

    app = web.Application(middlewares=[drain.middleware])
    app[DRAIN] = drain
    app.router.add_get("/v1/agents/sessions/s/events", events)
    async with TestClient(TestServer(app)) as client:
        answer = await client.get("/v1/agents/sessions/s/events")
        await sent.wait()
        reading = asyncio.create_task(answer.content.read())  # a cut connection raises ClientPayloadError here
        await drain.run(0)
        assert await asyncio.wait_for(reading, 30) == frame
        assert let_go.is_set() and drain.in_flight == 0
