"""The Vector Stores API on the door by its prefix only: its routes, its service and retrieval are imported and
built by the first request under ``/vector_stores`` (lazy_routes.py), never by an idle sidecar
(services/files/vector_stores_on_demand.py says what else builds them, and what start checks)."""

from __future__ import annotations

from typing import TYPE_CHECKING

from ....process.off_loop_import import import_off_loop
from ..lazy_routes import LazyRoutes, Register

if TYPE_CHECKING:
    from aiohttp import web

    from ....runtime import Runtime


def lazy_routes(runtime: Runtime) -> LazyRoutes:
    """``/vector_stores`` (also under ``/v1``): the routes' module imported off the event loop and the service built
    and started by the first request under it."""

    async def load() -> Register:
        await import_off_loop(".vector_stores_routes", __package__)
        from .vector_stores_routes import VectorStoreRoutes

        routes = VectorStoreRoutes(await runtime.vector_stores.service())

        async def register(app: web.Application) -> None:
            routes.register(app)

        return register

    return LazyRoutes("vector stores", ("/vector_stores",), load)
