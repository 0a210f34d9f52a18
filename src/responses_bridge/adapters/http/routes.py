"""The route table of the HTTP door: every API route is served under ``/v1`` (the base URL OpenAI's clients use)
and without it (clients configured with a base URL that already ends before ``/v1``), registered here once.

    with api_routes(app) as routes:
        routes.post("/conversations", self.create)
        routes.get("/conversations/{conversation_id}", self.retrieve)

A route that only hands the path's ids (and the JSON body, and the page asked for) to a service call and answers
with what it returns is ``answer(service.get, "conversation_id")``; a route doing more keeps its own handler.

The routes are added when the block ends, all of them under the first prefix and then under the next, in the
order given, so the paths of one resource stay together (aiohttp keeps one resource for consecutive methods).
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Iterator
from contextlib import contextmanager
from typing import Any

from aiohttp import web
from aiohttp.typedefs import Handler

from .identity import request_tenant
from .params import json_object, json_reply, page_query

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


def answer(call: Callable[..., Awaitable[Any]], *ids: str, body: str | bool = False, optional: bool = False,
           page: bool = False) -> Handler:
    """The handler of a route that is one service call: ``call(<the path's ids, in order>, [the JSON body],
    [after/limit/order], tenant=<the caller's>)``, its result the JSON answer. Most of the API's routes are just
    that; written once here instead of as a method per route. ``body``: the SDK's name for the route's method
    (``conversations.update``), whose known fields the body is checked against, or True for a body checked against
    none; ``optional``: an empty body is ``{}``; ``page``: the list's ``after``, ``limit`` and ``order`` (no
    ``before``) as keywords."""
    fields = body if isinstance(body, str) else None

    async def handler(request: web.Request) -> web.StreamResponse:
        args: list[Any] = [request.match_info[name] for name in ids]
        if body is not False:
            args.append(await json_object(request, optional=optional, fields=fields))
        paging = page_query(request, before=False) if page else {}
        return json_reply(await call(*args, **paging, tenant=request_tenant(request)))

    return handler
