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
ServiceCall = Callable[..., Awaitable[Any]]


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

    def objects(self, collection: str, *ids: str, create: Handler | None = None, listing: Handler | None = None,
                retrieve: ServiceCall | None = None, update: Handler | None = None,
                delete: ServiceCall | None = None) -> str:
        """The routes every kind of stored object has, each where given, in the API's order: POST ``collection``
        (``create``), GET ``collection`` (``listing``), then on one object, ``collection/{<the last of ids>}``,
        GET (``retrieve``, a service call answered with the path's ``ids``), POST (``update``) and DELETE
        (``delete``, answered like ``retrieve``). Returns the one object's path, for the kind's other routes;
        written once instead of in each kind's route class (and again for the objects inside an object: a
        container's files, a skill's versions)."""
        item = f"{collection}/{{{ids[-1]}}}"
        if create is not None:
            self.post(collection, create)
        if listing is not None:
            self.get(collection, listing)
        if retrieve is not None:
            self.get(item, answer(retrieve, *ids))
        if update is not None:
            self.post(item, update)
        if delete is not None:
            self.delete(item, answer(delete, *ids))
        return item


@contextmanager
def api_routes(app: web.Application) -> Iterator[RouteTable]:
    table = RouteTable()
    yield table
    for prefix in API_PREFIXES:
        for method, path, handler in table.entries:
            app.router.add_route(method, prefix + path, handler)


@contextmanager
def object_routes(app: web.Application, collection: str, id_name: str, *, create: Handler | None = None,
                  listing: Handler | None = None, retrieve: ServiceCall | None = None,
                  update: Handler | None = None,
                  delete: ServiceCall | None = None) -> Iterator[tuple[RouteTable, str]]:
    """:func:`api_routes` opened with :meth:`RouteTable.objects`' routes of one kind of stored object; yields the
    table, for the kind's other routes, and the one object's path they build on."""
    with api_routes(app) as routes:
        yield routes, routes.objects(collection, id_name, create=create, listing=listing, retrieve=retrieve,
                                     update=update, delete=delete)


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
