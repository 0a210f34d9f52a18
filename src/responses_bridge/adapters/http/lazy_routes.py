"""A capability's routes, registered at start by their paths' prefixes only and built by the first request under one.

An idle sidecar pays for every module it has imported (tests/unit/test_idle_imports.py; docs/operations.md, "Memory
given back and idle cost"): the Agents API, the Containers and Skills APIs, the Vector Stores API are most of the
HTTP door's code and of the services behind it, and a deployment that serves plain responses never calls them.
aiohttp's router is frozen once the door starts, so their routes cannot be added on first use; instead each prefix
(``/v1/agents``, ``/agents``, …) is one resource of the door's router whose first match imports the capability (off
the event loop: process/off_loop_import.py), lets it register its routes on an application of its own, starts that
application (its ``on_startup``), and from then on hands every request under the prefix to that application's router.

The capability's application is matched as a sub-application is (aiohttp's ``add_subapp``): its handlers see it as
``request.app`` — with every key of the door's application copied in, so ``request.app[RUNTIME]`` reads as it did —
and the door's middlewares run around them as around any route; a path under the prefix that none of its routes has
answers 404, a method none has 405 with the methods that have, as before. Its ``on_shutdown`` and ``on_cleanup`` run
with the door's, when it was built.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Iterator

from aiohttp import web
from aiohttp.abc import AbstractMatchInfo
from aiohttp.web_urldispatcher import AbstractResource, AbstractRoute, MatchInfoError, UrlMappingMatchInfo
from yarl import URL

from .routes import API_PREFIXES

Register = Callable[[web.Application], Awaitable[None]]
"""Adds a capability's routes (and its start-up and clean-up hooks) to the application it is given."""
Load = Callable[[], Awaitable[Register]]
"""Imports a capability (off the loop) and returns its :data:`Register`."""


class LazyRoutes:
    """One capability's routes under ``prefixes`` (each also under ``/v1``: routes.API_PREFIXES), loaded by
    ``load`` on the first request under one of them."""

    def __init__(self, name: str, prefixes: tuple[str, ...], load: Load) -> None:
        self.name = name
        self.prefixes = prefixes
        self._load = load
        self._door: web.Application | None = None
        self._app: web.Application | None = None
        self._building: asyncio.Lock | None = None

    def register(self, door: web.Application) -> None:
        """Put the prefixes on the door's router; the capability's hooks run with the door's once it is built."""
        self._door = door
        for api in API_PREFIXES:
            for prefix in self.prefixes:
                door.router.register_resource(_Prefix(api + prefix, self))
        door.on_shutdown.append(self._shutdown)
        door.on_cleanup.append(self._cleanup)

    @property
    def loaded(self) -> web.Application | None:
        """The capability's application once a request (or :meth:`application`) built it; None before."""
        return self._app

    async def application(self) -> web.Application:
        """The capability's application, built (imported, its routes registered, started) by the first caller;
        concurrent first callers wait for that one."""
        if self._app is not None:
            return self._app
        if self._building is None:
            self._building = asyncio.Lock()
        async with self._building:
            if self._app is None:
                self._app = await self._build()
        return self._app

    async def _build(self) -> web.Application:
        assert self._door is not None, "LazyRoutes.register comes first"
        register = await self._load()
        app = web.Application()
        for key, value in self._door.items():  # request.app is this application for its routes: the door's state
            app[key] = value  # (the runtime, the upstream clients, the drain) reads there as on the door's
        await register(app)
        app.freeze()
        await app.startup()
        return app

    async def _shutdown(self, door: web.Application) -> None:
        if self._app is not None:
            await self._app.shutdown()

    async def _cleanup(self, door: web.Application) -> None:
        if self._app is not None:
            await self._app.cleanup()


class _Prefix(AbstractResource):
    """One prefix of a :class:`LazyRoutes` on the door's router: the router finds it by the prefix (its index key),
    and it answers for every path at or under it with the capability's routes."""

    def __init__(self, prefix: str, routes: LazyRoutes) -> None:
        super().__init__()
        self._prefix = prefix
        self._routes = routes

    @property
    def canonical(self) -> str:
        return self._prefix

    def url_for(self, **kwargs: str) -> URL:
        raise RuntimeError(f"the routes under {self._prefix} are the {self._routes.name} capability's: name them "
                           "there")

    async def resolve(self, request: web.Request) -> tuple[UrlMappingMatchInfo | None, set[str]]:
        path = request.rel_url.path
        if path != self._prefix and not path.startswith(self._prefix + "/"):
            return None, set()
        app = await self._routes.application()
        match: AbstractMatchInfo = await app.router.resolve(request)
        if isinstance(match, MatchInfoError):  # 404 or 405: the door's router goes on, and says which
            return None, set(getattr(match.http_exception, "allowed_methods", ()) or ())
        assert isinstance(match, UrlMappingMatchInfo)
        match.add_app(app)  # its handlers' request.app; the door adds itself outside it, as for a sub-application
        return match, set()

    def add_prefix(self, prefix: str) -> None:
        self._prefix = prefix + self._prefix

    def get_info(self) -> dict[str, str]:  # type: ignore[override]
        return {"prefix": self._prefix}

    def raw_match(self, path: str) -> bool:
        return False

    def __len__(self) -> int:
        return sum(1 for _ in self)

    def __iter__(self) -> Iterator[AbstractRoute]:
        """The capability's routes under this prefix, once it is built (none before)."""
        app = self._routes.loaded
        for route in app.router.routes() if app is not None else ():
            path = route.resource.canonical if route.resource is not None else ""
            if path == self._prefix or path.startswith(self._prefix + "/"):
                yield route
