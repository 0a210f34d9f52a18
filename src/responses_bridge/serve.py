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
    """Run until SIGINT/SIGTERM, then close the doors first and the store last, so in-flight writes land."""
    runtime = await Runtime.open(settings)
    stoppers: list[Callable[[], Awaitable[None]]] = []
    try:
        if http:
            from .adapters.http.server import start_http_server

            stoppers.append(await start_http_server(runtime, settings.http_host, settings.http_port))
        if extproc:
            from .adapters.extproc.server import start_extproc_server

            stoppers.append(await start_extproc_server(runtime, settings.extproc_host, settings.extproc_port))
        log.info("serving", upstream=settings.upstream, db=settings.db_path(),
                 http=f"{settings.http_host}:{settings.http_port}" if http else None,
                 extproc=f"{settings.extproc_host}:{settings.extproc_port}" if extproc else None)
        await _wait_for_signal()
    finally:
        for stop in reversed(stoppers):
            await stop()
        await runtime.close()


async def _wait_for_signal() -> None:
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    await stop.wait()
