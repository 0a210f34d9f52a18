"""The route table of the HTTP door: every API route is served under ``/v1`` (the base URL OpenAI's clients use)
and without it (clients configured with a base URL that already ends before ``/v1``), registered here once.

    with api_routes(app) as routes:
        routes.post("/conversations", self.create)
        routes.get("/conversations/{conversation_id}", self.retrieve)

The routes are added when the block ends, all of them under the first prefix and then under the next, in the
order given, so the paths of one resource stay together (aiohttp keeps one resource for consecutive methods).
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

from aiohttp import web
from aiohttp.typedefs import Handler

API_PREFIXES = ("/v1", "")


class RouteTable:
    __slots__ = ("entries",)

    def __init__(self) -> None:
        self.entries: list[tuple[str, str, Handler]] = []

    def get(self, path: str, handler: Handler) -> None:
        self.entries.append(("GET", path, handler))

    def post(self, path: str, handler: Handler) -> None:
        self.entries.append(("POST", path, handler))

    def put(self, path: str, handler: Handler) -> None:
        self.entries.append(("PUT", path, handler))

    def delete(self, path: str, handler: Handler) -> None:
        self.entries.append(("DELETE", path, handler))


@contextmanager
def api_routes(app: web.Application) -> Iterator[RouteTable]:
    table = RouteTable()
    yield table
    for prefix in API_PREFIXES:
        for method, path, handler in table.entries:
            app.router.add_route(method, prefix + path, handler)
