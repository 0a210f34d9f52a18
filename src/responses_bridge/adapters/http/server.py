"""Start and stop the HTTP door inside an already running event loop."""

from __future__ import annotations

from collections.abc import Awaitable, Callable

from aiohttp import web

from ...runtime import Runtime
from .app import create_app
from .drain import DRAIN
from .parser_errors import PARSER_OPTIONS, use_openai_errors

CLOSE_TIMEOUT_SECONDS = 1.0
"""Once drained, what aiohttp still waits for handlers that did not end (they are cancelled after it)."""


async def start_http_server(runtime: Runtime, host: str, port: int, *,
                            reuse_port: bool = False) -> Callable[[], Awaitable[None]]:
    """Returns the coroutine function that stops it: it drains the door (see ``drain.py``; up to
    ``settings.drain_timeout`` plus a short grace) and then closes it. Handlers are cancelled when their client
    disconnects, which cancels the upstream call they are waiting on. ``reuse_port``: one of several workers on
    the same port (``SO_REUSEPORT``: the kernel spreads connections over them)."""
    app = create_app(runtime)
    runner = web.AppRunner(app, handler_cancellation=True, access_log=None, shutdown_timeout=CLOSE_TIMEOUT_SECONDS,
                           **PARSER_OPTIONS)
    await runner.setup()
    use_openai_errors(runner)  # even what aiohttp's parser refuses is answered in the OpenAI shape
    site = web.TCPSite(runner, host, port, backlog=1024, reuse_address=True, reuse_port=reuse_port or None)
    try:
        await site.start()
    except OSError:
        await runner.cleanup()  # the app's upstream session was opened by setup()
        raise

    async def stop() -> None:
        await app[DRAIN].run(runtime.settings.drain_timeout)
        await runner.cleanup()

    return stop
