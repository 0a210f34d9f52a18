"""Start and stop the HTTP door inside an already running event loop."""

from __future__ import annotations

from collections.abc import Awaitable, Callable

from aiohttp import web

from ...runtime import Runtime
from .app import create_app


async def start_http_server(runtime: Runtime, host: str, port: int) -> Callable[[], Awaitable[None]]:
    """Returns the coroutine function that stops it. Handlers are cancelled when their client disconnects,
    which cancels the upstream call they are waiting on."""
    runner = web.AppRunner(create_app(runtime), handler_cancellation=True, access_log=None)
    await runner.setup()
    site = web.TCPSite(runner, host, port, backlog=1024, reuse_address=True)
    await site.start()
    return runner.cleanup
