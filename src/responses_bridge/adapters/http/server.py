"""Start and stop the HTTP door inside an already running event loop."""

from __future__ import annotations

from aiohttp import web

from ...runtime import Runtime
from .app import create_app
from .drain import DRAIN
from .head_deadline import use_head_deadline
from .parser_errors import PARSER_OPTIONS

CLOSE_TIMEOUT_SECONDS = 1.0
"""Once drained, what aiohttp still waits for handlers that did not end (they are cancelled after it)."""
LISTEN_BACKLOG = 4096
"""Connections the kernel queues before the door accepts them (capped by ``net.core.somaxconn``, 4,096 on
current kernels): thousands of clients that open their streams at once are queued, not dropped to SYN retries."""


class HttpDoor:
    """The running door. Its stop comes in two steps, because the door must outlive every drain of the process:
    :meth:`drain` refuses new work (503 ``server_shutting_down``) and waits for the door's own requests in flight
    (see ``drain.py``; up to ``settings.drain_timeout`` plus a short grace), while ``/health/*`` and ``/metrics``
    go on answering; :meth:`close` then closes the listener. ``serve`` closes it only once the ext_proc door and
    the background runs have drained too, so probes answer for as long as any stream of the process lives.
    Awaiting the door itself (``await door()``) does both at once."""

    def __init__(self, app: web.Application, runner: web.AppRunner, runtime: Runtime) -> None:
        self.app = app
        self.runner = runner
        self.runtime = runtime

    async def drain(self) -> None:
        await self.app[DRAIN].run(self.runtime.settings.drain_timeout)

    async def close(self) -> None:
        await self.runner.cleanup()

    async def __call__(self) -> None:
        await self.drain()
        await self.close()


async def start_http_server(runtime: Runtime, host: str, port: int, *, reuse_port: bool = False) -> HttpDoor:
    """Returns the running door (:class:`HttpDoor`: its drain, then its close). Handlers are cancelled when their
    client disconnects, which cancels the upstream call they are waiting on. ``reuse_port``: one of several workers
    on the same port (``SO_REUSEPORT``: the kernel spreads connections over them)."""
    app = create_app(runtime)
    settings = runtime.settings
    runner = web.AppRunner(app, handler_cancellation=True, access_log=None, shutdown_timeout=CLOSE_TIMEOUT_SECONDS,
                           keepalive_timeout=settings.http_keepalive_timeout, **PARSER_OPTIONS)
    await runner.setup()
    # a head slower than http_head_timeout is answered 408 and closed; even what aiohttp's parser refuses is
    # answered in the OpenAI shape
    use_head_deadline(runner, settings.http_head_timeout)
    site = web.TCPSite(runner, host, port, backlog=LISTEN_BACKLOG, reuse_address=True,
                       reuse_port=reuse_port or None)
    try:
        await site.start()
    except OSError:
        await runner.cleanup()  # the app's upstream session was opened by setup()
        raise
    return HttpDoor(app, runner, runtime)
