"""The Agents API on the HTTP door as a capability loaded by its first use: ``/agents`` and ``/vaults`` (each also
under ``/v1``) are registered at start by their prefixes only (lazy_routes.py), and the Agents API — its routes,
sessions, automations, environments, vaults, executors, subagents, traces and the sessions' desktops, ~1 MB of
modules, ~3 MiB resident — is imported by the first request under them.

What the Agents API must do without any request — resume the turns a stopped process left (sessions.py
``recover``), fire automations (automations.py: every process ticks), sweep the sessions whose replica's lease
lapsed — there can only be work for when its store holds something, so: at start, when the store holds any record
of it (:meth:`AgentStore.in_use`, one indexed row read), it is loaded before the door serves, as every start loaded
it before; when it holds none, the store is asked again every second (as often as the automations' scheduler asks
it what is due) until a record appears — one made through another worker or replica of the same database, which
the others must then tick for too — and the Agents API is loaded then.
"""

from __future__ import annotations

import asyncio
import contextlib
from typing import TYPE_CHECKING

import structlog
from aiohttp import web

from ....process.off_loop_import import import_off_loop
from ..lazy_routes import LazyRoutes, Register

if TYPE_CHECKING:
    from ....runtime import Runtime
    from ..desktop_watch_tokens import WatchTokens

log = structlog.get_logger(__name__)

PREFIXES = ("/agents", "/vaults")
WAKE_SECONDS = 1.0
"""How often a door without the Agents API asks the store whether it holds anything of it."""

AGENTS = web.AppKey("agents", LazyRoutes)
"""The Agents API on the door's application: the console reaches the sessions through it (console/entry.py)."""


def register(app: web.Application, runtime: Runtime, watch_tokens: WatchTokens) -> LazyRoutes:
    """Puts the Agents API's prefixes on the door, and its start-up check (then its wake-up) among the door's
    hooks."""

    async def load() -> Register:
        await import_off_loop(".agents_routes", __package__)
        from .agents_routes import AgentRoutes

        await runtime.sandbox.open()  # the containers and the hosted shell it reads: built off the loop first

        routes = AgentRoutes(runtime, watch_tokens)

        async def register_routes(capability: web.Application) -> None:
            routes.register(capability)

        return register_routes

    agents = LazyRoutes("agents", PREFIXES, load)
    agents.register(app)
    app[AGENTS] = agents
    waking: list[asyncio.Task[None]] = []

    async def start(door: web.Application) -> None:
        if await _in_use(runtime):
            await agents.application()
        else:
            waking.append(asyncio.create_task(_wake_when_used(runtime, agents), name="agents-wake"))

    async def stop(door: web.Application) -> None:
        for task in waking:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task

    app.on_startup.append(start)
    app.on_cleanup.append(stop)
    return agents


async def _in_use(runtime: Runtime) -> bool:
    """Whether the store holds anything of the Agents API; a store not open (a door composed before it, readiness
    failing) or not answering holds nothing yet — the wake-up asks again."""
    if not runtime.store.is_open:
        return False
    try:
        return await runtime.agent_store.in_use()
    except Exception:  # an outage at start must not stop the door: asked again each second
        log.warning("agents_in_use_check_failed", exc_info=True)
        return False


async def _wake_when_used(runtime: Runtime, agents: LazyRoutes) -> None:
    while agents.loaded is None:
        await asyncio.sleep(WAKE_SECONDS)
        if agents.loaded is None and await _in_use(runtime):
            await agents.application()
