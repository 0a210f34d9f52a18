"""``responses-bridge serve``: the HTTP door and the ext_proc door in one process and one event loop.

Both doors share one :class:`Runtime` (one store connection pair), so a response written through Envoy is
immediately readable through the HTTP routes Envoy sends to this process.
"""

from __future__ import annotations

import argparse
import asyncio
import signal
from collections.abc import Awaitable, Callable

import structlog

from .config import Settings, load_settings
from .observability import configure_logging
from .runtime import Runtime

log = structlog.get_logger("responses_bridge.serve")


def add_parser(commands: argparse._SubParsersAction) -> None:
    parser = commands.add_parser("serve", help="run the sidecar: the ext_proc door and the HTTP door")
    parser.add_argument("--upstream", help="Chat Completions base URL, ending in /v1 (env: OPENAI_BASE_URL)")
    parser.add_argument("--upstream-via", help="base URL for the sidecar's own upstream calls (background runs, "
                        "WebSocket, compaction), e.g. Envoy's listener http://127.0.0.1:8080/v1 "
                        "(env: RESPONSES_BRIDGE_UPSTREAM_VIA; default: the upstream itself)")
    parser.add_argument("--api-key", help="key sent upstream as Authorization: Bearer (env: OPENAI_API_KEY)")
    parser.add_argument("--http-host", help="HTTP door address (default 127.0.0.1)")
    parser.add_argument("--http-port", type=int, help="HTTP door port (default 8080)")
    parser.add_argument("--extproc-host", help="ext_proc gRPC address (default 127.0.0.1)")
    parser.add_argument("--extproc-port", type=int, help="ext_proc gRPC port (default 50051)")
    parser.add_argument("--no-http", action="store_true", help="run the ext_proc door only")
    parser.add_argument("--no-extproc", action="store_true", help="run the HTTP door only")
    parser.add_argument("--db", help="SQLite file (default: under the user data directory; ':memory:' allowed)")
    parser.add_argument("--log-level", help="debug, info, warning, error (default info)")
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    if args.no_http and args.no_extproc:
        raise SystemExit("serve: --no-http and --no-extproc leave nothing to run")
    settings = load_settings(
        upstream=args.upstream, upstream_via=args.upstream_via, api_key=args.api_key, http_host=args.http_host,
        http_port=args.http_port,
        extproc_host=args.extproc_host, extproc_port=args.extproc_port, db=args.db, log_level=args.log_level,
    )
    configure_logging(settings.log_level, settings.log_format)
    asyncio.run(serve(settings, http=not args.no_http, extproc=not args.no_extproc))
    return 0


async def serve(settings: Settings, *, http: bool = True, extproc: bool = True) -> None:
    """Run until SIGINT/SIGTERM, then drain (see :func:`shutdown`) and close the store last, so in-flight
    writes land."""
    runtime = await Runtime.open(settings)
    stoppers: list[Callable[[], Awaitable[None]]] = []
    try:
        if http:
            from .adapters.http.server import start_http_server

            stoppers.append(await start_http_server(runtime, settings.http_host, settings.http_port))
        if extproc:
            from .adapters.extproc.server import start_extproc_server

            server = await start_extproc_server(runtime, settings.extproc_host, settings.extproc_port)
            stoppers.append(lambda: server.stop(grace=settings.drain_timeout + 1.0))
        log.info("serving", upstream=settings.upstream, db=settings.db_path(),
                 http=f"{settings.http_host}:{settings.http_port}" if http else None,
                 extproc=f"{settings.extproc_host}:{settings.extproc_port}" if extproc else None)
        await _wait_for_signal()
    finally:
        await shutdown(runtime, stoppers)


async def shutdown(runtime: Runtime, stoppers: list[Callable[[], Awaitable[None]]]) -> None:
    """Stop taking new work at once (``runtime.draining``: both doors refuse new requests, readiness fails),
    then drain the doors and the background runs together, so the whole shutdown takes the drain timeout
    plus a moment rather than one drain after another. Each door ends its own streams still running at the
    deadline with ``response.failed``; background runs still going then are failed (``server_shutdown``),
    which also ends the streams following them. The store closes last."""
    runtime.draining = True
    timeout = runtime.settings.drain_timeout
    log.info("draining", timeout_seconds=timeout)
    try:
        results = await asyncio.gather(*(stop() for stop in stoppers), _drain_background(runtime, timeout),
                                       return_exceptions=True)
        for result in results:
            if isinstance(result, BaseException):
                log.error("drain_failed", error=repr(result))
    finally:
        await runtime.close()
    log.info("stopped")


async def _drain_background(runtime: Runtime, timeout: float) -> None:
    """Background runs may finish within the drain timeout; those still running then are failed and stored."""
    service = runtime.background
    if service is None:
        return
    tasks = [run.task for run in service.runs.values() if run.task is not None and not run.task.done()]
    if tasks:
        await asyncio.wait(tasks, timeout=timeout)
    await service.close()


async def _wait_for_signal() -> None:
    """Returns at the first SIGINT/SIGTERM; a second one gets the default action (stop at once, no drain)."""
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    await stop.wait()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.remove_signal_handler(sig)
