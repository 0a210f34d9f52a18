"""Start and stop the HTTP door inside an already running event loop."""

from __future__ import annotations

from collections.abc import Awaitable, Callable

from aiohttp import web

from ...runtime import Runtime
from .app import create_app
from .protocol_errors import PARSER_OPTIONS, use_openai_errors


async def start_http_server(runtime: Runtime, host: str, port: int) -> Callable[[], Awaitable[None]]:
    """Returns the coroutine function that stops it. Handlers are cancelled when their client disconnects,
    which cancels the upstream call they are waiting on."""
    runner = web.AppRunner(create_app(runtime), handler_cancellation=True, access_log=None, **PARSER_OPTIONS)
    await runner.setup()
    use_openai_errors(runner)  # even what aiohttp's parser refuses is answered in the OpenAI shape
    site = web.TCPSite(runner, host, port, backlog=1024, reuse_address=True)
    await site.start()
    return runner.cleanup
