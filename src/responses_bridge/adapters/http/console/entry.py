"""The console's one route on the HTTP door, ``/console`` and everything under it, registered at start when
``RESPONSES_BRIDGE_CONSOLE=on``; the pages themselves (pages.py, jinja2, the templates) are imported on the first
request that reaches it, never by a deployment that does not open it."""

from __future__ import annotations

import importlib.util
from typing import TYPE_CHECKING, Any

from aiohttp import web

from ....settings_error import SettingsError
from ..agents.capability import AGENTS

if TYPE_CHECKING:
    from ....runtime import Runtime
    from ..desktop_watch_tokens import WatchTokens

CONSOLE_PREFIX = "/console"
MISSING_EXTRA = ("RESPONSES_BRIDGE_CONSOLE=on needs the console extra (jinja2): pip install "
                 "'responses-bridge[console]'")


def register(app: web.Application, runtime: Runtime, watch_tokens: WatchTokens) -> None:
    """Adds ``/console`` and ``/console/{anything}``; a console asked for without its extra stops the start with one
    line (found without importing it)."""
    if importlib.util.find_spec("jinja2") is None:
        raise SettingsError(MISSING_EXTRA)
    pages: list[Any] = []  # the Console, made on the first request

    async def console(request: web.Request) -> web.StreamResponse:
        if not pages:
            from .pages import Console

            agents = request.app.get(AGENTS)  # the sessions' pages read the Agents API: loaded with the console
            pages.append(Console(runtime, watch_tokens, await agents.application() if agents is not None else None))
        answered: web.StreamResponse = await pages[0].handle(request)
        return answered

    app.router.add_route("*", CONSOLE_PREFIX, console)
    app.router.add_route("*", CONSOLE_PREFIX + "/{tail:.*}", console)
