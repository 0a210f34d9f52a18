"""The Containers and Skills APIs on the door by their prefixes only: what a request under ``/containers`` or
``/skills`` needs is imported and built by the first one (lazy_routes.py), never by an idle sidecar."""

from __future__ import annotations

from typing import TYPE_CHECKING

from ....process.off_loop_import import import_off_loop
from ..lazy_routes import LazyRoutes, Register

if TYPE_CHECKING:
    from aiohttp import web

    from ....runtime import Runtime


def lazy_routes(runtime: Runtime) -> LazyRoutes:
    """``/containers`` and ``/skills`` (each also under ``/v1``), built by the first request under one: the routes'
    modules imported off the event loop, the Containers API's service built (runtime_sandbox.py; the sandbox
    itself is detected only by the first call that runs code)."""

    async def load() -> Register:
        await import_off_loop(".containers_routes", __package__)
        await import_off_loop(".skills_routes", __package__)
        from .containers_routes import ContainerRoutes
        from .skills_routes import SkillRoutes

        async def register(app: web.Application) -> None:
            ContainerRoutes(await runtime.sandbox.containers_api()).register(app)
            SkillRoutes(runtime.skills).register(app)

        return register

    return LazyRoutes("containers", ("/containers", "/skills"), load)
