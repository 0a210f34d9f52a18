"""adapters/http/lazy_routes.py in-process: a capability's routes built by the first request under its prefixes, and
answered from then on as routes registered at start would be (status codes, 405's methods, the door's middlewares
and state, start-up and clean-up hooks); a request outside the prefixes never builds it."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from dataclasses import dataclass, field

import pytest
from aiohttp import web
from aiohttp.test_utils import TestClient, TestServer

from responses_bridge.adapters.http.lazy_routes import LazyRoutes, Register
from responses_bridge.adapters.http.routes import api_routes

pytestmark = pytest.mark.store_free  # its stores are its own SQLite files, whatever the pass

GREETING = web.AppKey("greeting", str)
OWN = web.AppKey("own", str)
SEEN = web.RequestKey("seen", bool)


@dataclass
class Capability:
    loads: int = 0
    events: list[str] = field(default_factory=list)

    async def load(self) -> Register:
        self.loads += 1
        await asyncio.sleep(0.05)  # an import: concurrent first requests must wait for this one

        async def register(app: web.Application) -> None:
            app[OWN] = "the capability's"

            async def item(request: web.Request) -> web.Response:
                return web.json_response({"id": request.match_info["thing_id"], "greeting": request.app[GREETING],
                                          "own": request.app[OWN], "seen": request[SEEN]})

            async def create(request: web.Request) -> web.Response:
                return web.json_response(await request.json(), status=201)

            with api_routes(app) as routes:
                routes.get("/things/{thing_id}", item)
                routes.post("/things", create)
            app.on_startup.append(lambda _: self._note("startup"))
            app.on_shutdown.append(lambda _: self._note("shutdown"))
            app.on_cleanup.append(lambda _: self._note("cleanup"))

        return register

    async def _note(self, event: str) -> None:
        self.events.append(event)


@web.middleware
async def seen(request: web.Request, handler):  # type: ignore[no-untyped-def]
    request[SEEN] = True
    return await handler(request)


async def plain(request: web.Request) -> web.Response:
    return web.Response(text="plain")


@pytest.fixture
async def door() -> AsyncIterator[tuple[TestClient, Capability]]:
    capability = Capability()
    app = web.Application(middlewares=[seen])
    app[GREETING] = "the door's"
    with api_routes(app) as routes:
        routes.get("/plain", plain)
        routes.get("/thingsmith", plain)  # shares the prefix's letters, not its path
    LazyRoutes("things", ("/things",), capability.load).register(app)
    async with TestClient(TestServer(app)) as client:
        yield client, capability
    assert capability.events[-2:] == (["shutdown", "cleanup"] if capability.loads else [])


async def test_a_request_elsewhere_builds_nothing(door: tuple[TestClient, Capability]) -> None:
    client, capability = door
    for path in ("/v1/plain", "/plain", "/v1/thingsmith", "/v1/nothing"):
        async with client.get(path) as answer:
            assert answer.status == (404 if path == "/v1/nothing" else 200)
    assert capability.loads == 0 and capability.events == []


async def test_the_first_request_builds_it_once_and_every_route_answers(door: tuple[TestClient, Capability]) -> None:
    client, capability = door
    answers = await asyncio.gather(*(client.get(f"{prefix}/things/t{n}") for n in range(4) for prefix in ("/v1", "")))
    assert [a.status for a in answers] == [200] * 8
    assert capability.loads == 1 and capability.events == ["startup"]
    body = await answers[0].json()
    assert body == {"id": "t0", "greeting": "the door's", "own": "the capability's", "seen": True}
    async with client.post("/v1/things", json={"name": "x"}) as created:
        assert created.status == 201 and await created.json() == {"name": "x"}
    async with client.delete("/v1/things/t1") as wrong_method:
        assert wrong_method.status == 405 and set(wrong_method.headers["Allow"].split(",")) >= {"GET"}
    async with client.get("/v1/things/t1/nothing") as missing:
        assert missing.status == 404
    async with client.get("/v1/plain") as elsewhere:
        assert elsewhere.status == 200
    assert capability.loads == 1
