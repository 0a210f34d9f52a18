"""``responses-bridge serve``: the HTTP door and the ext_proc door in one process and one event loop.

Both doors share one :class:`Runtime` (one store connection pair), so a response written through Envoy is
immediately readable through the HTTP routes Envoy sends to this process. This module is the composition root:
it builds the concrete parts (the aiohttp upstream client, the doors) and hands them to the runtime, so that the
runtime, the run and the services depend on interfaces only.
"""

from __future__ import annotations

import argparse
import asyncio
import errno
import os
import signal
import sys
import time
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING, Protocol

import structlog

from .commands.durability_check import log_durability
from .commands.upstream_check import check_routing, check_upstreams, configured_upstreams
from .config import file as config_file
from .config.help import environment_help, user_default
from .config.settings import Settings, SettingsError, env_names, load_settings
from .config.upstreams import upstream_flag as upstream_settings
from .fairness.allocator import one_arena
from .observability import configure_logging
from .observability.tracing import configure_tracing, shutdown_tracing
from .process import event_loop, startup_gc
from .process.descriptors import raise_descriptor_limit
from .process.pid1 import serve_behind_init
from .process.workers import WorkerSlot, current_slot, extproc_port, extproc_uds, supervise
from .sealing import SealingKeyError
from .store.database_url import DatabaseUnavailable, describe

if TYPE_CHECKING:  # imported by the process that serves, not by a supervisor of workers, which only watches them
    from .runtime import Runtime

log = structlog.get_logger("responses_bridge.serve")


# (flag, Settings field, what it sets, argparse type): each flag's help names its environment variables and
# default, taken from Settings, and the epilog lists the settings that have no flag.
FLAGS: tuple[tuple[str, str, str, type], ...] = (
    ("--upstream", "upstream", ("Chat Completions base URL, ending in /v1; given several times, replicas serving "
                                "the same models (each request goes to one: docs/upstreams.md, Replicas)"), str),
    ("--upstream-via", "upstream_via", ("base URL for the sidecar's own upstream calls (background runs, "
                                        "WebSocket, compaction), e.g. Envoy's listener http://127.0.0.1:10000/v1; "
                                        "default: the upstream itself. Behind Envoy set it (a warning at Envoy's "
                                        "first request otherwise)"), str),
    ("--api-key", "api_key", ("key sent upstream as Authorization: Bearer, in place of the client's, through "
                              "either door (Envoy's call too, with the bootstrap envoy-config renders); without "
                              "it the client's own Authorization is forwarded"), str),
    ("--http-host", "http_host", "HTTP door address", str),
    ("--http-port", "http_port", "HTTP door port", int),
    ("--allowed-hosts", "allowed_hosts", ("with auth: none, Host names answered besides loopback ones, "
                                          "comma-separated (* for any)"), str),
    ("--extproc-host", "extproc_host", "ext_proc gRPC address", str),
    ("--extproc-port", "extproc_port", "ext_proc gRPC port", int),
    ("--extproc-uds", "extproc_uds", ("ext_proc on this Unix domain socket path instead of TCP (Envoy's pipe "
                                      "address: envoy-config --extproc-uds)"), str),
    ("--workers", "workers", ("processes serving both doors: N or auto (one per usable core); worker i's "
                              "ext_proc door is --extproc-port + i (or PATH.i): render Envoy's config with the "
                              "same envoy-config --workers"), str),
    ("--db", "db", ("SQLite file (default: under the user data directory; ':memory:' allowed); a path, never a URL: "
                    "a PostgreSQL database is RESPONSES_BRIDGE_DATABASE_URL"), str),
    ("--log-level", "log_level", "debug, info, warning, error", str),
    ("--event-loop", "event_loop", "auto (uvloop when installed), uvloop or asyncio", str),
)


def add_parser(commands: argparse._SubParsersAction) -> None:
    parser = commands.add_parser(
        "serve", help="run the sidecar: the ext_proc door and the HTTP door",
        description="Run the sidecar. Flags win over environment variables, which win over the configuration "
                    "file (--config), which wins over defaults.",
        epilog="settings without a flag (environment only):\n" + environment_help(
            Settings.model_fields, env_names, {field for _, field, _, _ in FLAGS}),
        formatter_class=argparse.RawDescriptionHelpFormatter)
    for flag, field, meaning, kind in FLAGS:
        shown = f"; default {user_default(Settings.model_fields[field]) or 'none'}" if "default" not in meaning else ""
        parser.add_argument(flag, type=kind, dest=field, action="append" if field == "upstream" else "store",
                            help=f"{meaning} (env: {', '.join(env_names(field))}{shown})")
    parser.add_argument("--config", metavar="FILE", help="YAML configuration file: settings by their names, e.g. "
                        "'http_port: 8081' (env: RESPONSES_BRIDGE_CONFIG); check one with 'config check FILE'")
    parser.add_argument("--no-http", action="store_true", help="run the ext_proc door only")
    parser.add_argument("--no-extproc", action="store_true", help="run the HTTP door only")
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    event_loop.keep_grpc_out_of_forks()  # before gRPC starts (and inherited by --workers' workers)
    one_arena()  # before any thread: every thread's memory can be given back (fairness/allocator.py)
    serve_behind_init()  # PID 1 (a container without an init): the server runs under a minimal init (process/pid1.py)
    raise_descriptor_limit()  # the soft limit up to the hard one, before any bound is derived from it
    if args.no_http and args.no_extproc:
        raise SettingsError("--no-http and --no-extproc leave nothing to run; give at most one")
    given = {field: getattr(args, field) for _, field, _, _ in FLAGS if field != "upstream"}
    settings = load_settings({field: flag for flag, field, _, _ in FLAGS} | {"upstream_urls": "--upstream"},
                             config=args.config, **given, **upstream_settings(args.upstream))
    delegated: tuple[list[str], list[str]] | None = None
    if settings.run_as is not None:  # the sandbox's cgroup modules load only where they are used
        from .sandbox.cgroups.delegation import become

        delegated = become(settings.run_as)  # root with RESPONSES_BRIDGE_RUN_AS: the cgroup handed over, root dropped
    event_loop.loop_factory(settings.event_loop)  # uvloop asked for where it is missing: said before anything starts
    routing = check_routing(settings, config_path=config_file.path_from(args.config))
    if routing.error is not None:  # no request could reach any upstream: a configuration mistake, exit status 2
        raise SettingsError(routing.error)
    slot = current_slot()
    count = settings.worker_count()
    if count > 1 and slot is None:  # this process supervises; the workers are started afresh with these arguments
        problem = workers_problem(settings)
        if problem is not None:
            print(f"responses-bridge serve: {problem}", file=sys.stderr)
            return 2
        configure_logging(settings.log_level, settings.log_format)
        startup_gc.resume()  # the supervisor only watches its workers, which start with it paused again
        return supervise(count, sys.argv[1:])
    configure_logging(settings.log_level, settings.log_format, worker=slot.index if slot is not None else None)
    if delegated is not None:
        log.info("cgroup_delegated", run_as=settings.run_as, cgroups=delegated[0], refused=delegated[1])
    try:
        if configure_tracing():  # OTEL_EXPORTER_OTLP_ENDPOINT and the other standard OTEL_* variables
            log.info("tracing_enabled")
    except RuntimeError as exc:  # configured, but cannot run here (the otel extra missing): one line, no traceback
        print(f"responses-bridge serve: {exc}", file=sys.stderr)
        return 1
    try:
        event_loop.run(serve(settings, http=not args.no_http, extproc=not args.no_extproc, slot=slot,
                             config=args.config, upstream_flag=args.upstream is not None), settings.event_loop)
    except StartupError as exc:
        print(f"responses-bridge serve: {exc}", file=sys.stderr)
        return 1
    finally:
        shutdown_tracing()  # the spans still queued are exported before the process ends
    return 0


class StartupError(Exception):
    """A door could not open (its port taken, its address wrong): the user gets one line naming the setting,
    not a traceback."""


async def open_runtime(settings: Settings) -> Runtime:
    """The runtime with its concrete upstream client: aiohttp, to ``upstream_via`` when set, else the upstream."""
    from .adapters.upstream_client import AiohttpUpstreamClient, build_clients
    from .runtime import Runtime

    try:
        router = settings.router()
    except ValueError as exc:  # an api_key_env naming an unset variable
        raise StartupError(str(exc)) from exc
    try:
        if router.single and not router.route(None).upstream.replicated():
            return await Runtime.open(settings, AiohttpUpstreamClient(settings))
        if router.single:  # the lone --upstream given several times: its one client, over its replicas
            from .adapters.replicated_client import with_replicas

            lone = with_replicas(settings, router, {name: AiohttpUpstreamClient(settings, name=name)
                                                    for name in router.upstreams})
            return await Runtime.open(settings, next(iter(lone.values())))
        clients = build_clients(settings, router)
        if any(spec.replicated() for spec in router.upstreams.values()):
            from .adapters.replicated_client import with_replicas

            clients = with_replicas(settings, router, clients)  # type: ignore[assignment]
        default = router.route(None).upstream.name if settings.default_upstream else next(iter(clients))
        runtime = await Runtime.open(settings, clients[default], dict(clients))
    except DatabaseUnavailable as exc:  # one line naming the database and its setting (store/open.py); never a
        raise StartupError(str(exc)) from None  # silent SQLite in place of a shared database out of reach
    except SealingKeyError as exc:  # the key file beside the database is damaged: named, with the fix
        raise StartupError(str(exc)) from None
    await _probe_auto(runtime)
    return runtime


async def _probe_auto(runtime: Runtime) -> None:
    """``mode: auto`` upstreams are probed before the doors open: the mode they are served in, and the switches
    their answers call for (probe/start.py); a failed probe leaves one translated. Without one, the probe's
    modules are never loaded."""
    if not any(spec.mode == "auto" for spec in runtime.routes().upstreams.values()):
        return
    from .probe.cache import cache_path
    from .probe.start import probe_auto_upstreams

    cache = cache_path(runtime.settings.db_path())
    for name, report in (await probe_auto_upstreams(runtime.routes(), cache)).items():
        runtime.probed_modes[name] = report.mode if report is not None else "translate"
        if report is not None:
            runtime.probed_switches[name] = dict(report.switches)


def workers_problem(settings: Settings) -> str | None:
    """What keeps several workers from sharing this configuration's state, if anything."""
    if settings.database_url is None and settings.db_path() == ":memory:":
        return ("--workers needs a database file or RESPONSES_BRIDGE_DATABASE_URL: each worker would have its own "
                "':memory:' database (--db / RESPONSES_BRIDGE_DB)")
    return None


def extproc_listen(settings: Settings, slot: WorkerSlot | None) -> tuple[str, int, str | None]:
    """Where this process's ext_proc door listens: (host, port, Unix socket path or None), its worker's own."""
    index = slot.index if slot is not None else 0
    uds = extproc_uds(settings.extproc_uds, index) if settings.extproc_uds else None
    return settings.extproc_host, extproc_port(settings.extproc_port, index), uds


async def serve(settings: Settings, *, http: bool = True, extproc: bool = True,
                slot: WorkerSlot | None = None, config: str | None = None, upstream_flag: bool = False) -> None:
    """Run until SIGINT/SIGTERM, then drain (see :func:`shutdown`) and close the store last, so in-flight
    writes land. ``slot``: which worker this is (``serve --workers``), whose HTTP port is shared with the others
    and whose ext_proc address is its own. ``config`` (the ``--config`` flag) and ``upstream_flag``
    (``--upstream`` given) say where the upstreams were configured, for the hints of the start check."""
    host, port, uds = extproc_listen(settings, slot)
    check_ports(settings, http=http, extproc=extproc and uds is None, extproc_port=port, shared=slot is not None,
                uds=uds if extproc else None)
    runtime = await open_runtime(settings)
    stoppers: list[Callable[[], Awaitable[None]]] = []
    door: Door | None = None
    try:
        if http:
            from .adapters.http.server import start_http_server

            try:
                door = await start_http_server(runtime, settings.http_host, settings.http_port,
                                               reuse_port=slot is not None)
            except OSError as exc:
                reason = os.strerror(exc.errno) if exc.errno else str(exc)
                raise StartupError(f"the HTTP door cannot listen on {settings.http_host}:{settings.http_port}: "
                                   f"{reason} (--http-port / RESPONSES_BRIDGE_HTTP_PORT)") from exc
        if extproc:
            from .adapters.extproc.server import start_extproc_server

            try:
                stoppers.append(await start_extproc_server(runtime, host, port, uds=uds))
            except OSError as exc:
                flag = ("--extproc-uds / RESPONSES_BRIDGE_EXTPROC_UDS" if uds
                        else "--extproc-port / RESPONSES_BRIDGE_EXTPROC_PORT")
                raise StartupError(f"{exc} ({flag})") from exc
        upstreams = configured_upstreams(settings, config_path=config_file.path_from(config),
                                         flag_given=upstream_flag)
        log.info("serving", upstreams=[entry.described() for entry in upstreams], db=_where(settings),
                 http=f"{settings.http_host}:{settings.http_port}" if http else None,
                 extproc=(f"unix:{uds}" if uds else f"{host}:{port}") if extproc else None,
                 loop=event_loop.running_loop_name())
        startup_gc.resume()  # started: the collector back on, what the start built frozen (process/startup_gc.py)
        log_durability(settings, runtime, log)  # do runs outlive this process, and if not, why
        warn_if_open(settings, http=http, extproc=extproc)
        for name in check_routing(settings).unreached:
            log.warning("upstream_unrouted", upstream=name,
                        hint="no models entry names it and it is not default_upstream: no request reaches it")
        probe = asyncio.create_task(check_upstreams(upstreams))  # in the background: start is not delayed
        await _wait_for_signal()
        probe.cancel()
    finally:
        await shutdown(runtime, stoppers, door, worker=slot.index if slot is not None else None)


def check_ports(settings: Settings, *, http: bool, extproc: bool, extproc_port: int, shared: bool,
                uds: str | None = None) -> None:
    """A taken port, a host that is not this machine's, a socket path in no directory stop the start before
    anything opens or logs: one line naming the address and its flag (process/listen_check.py). ``shared``: a worker's
    HTTP door, whose port the workers share (SO_REUSEPORT). ``uds``: the ext_proc door's socket path, if any."""
    if uds is not None and not os.path.isdir(os.path.dirname(os.path.abspath(uds))):
        raise StartupError(f"the ext_proc door cannot listen on unix:{uds}: its directory does not exist "
                           f"(--extproc-uds / RESPONSES_BRIDGE_EXTPROC_UDS)")
    from .process.listen_check import host_problem, in_use

    for door, host, setting, wanted in (("HTTP", settings.http_host, "HTTP_HOST", http),
                                        ("ext_proc", settings.extproc_host, "EXTPROC_HOST", extproc)):
        problem = host_problem(host) if wanted else None
        if problem is not None:
            flag = "--" + setting.lower().replace("_", "-")
            raise StartupError(f"the {door} door cannot listen on {host}: {problem} ({flag} / "
                               f"RESPONSES_BRIDGE_{setting})")
    if http and in_use(settings.http_host, settings.http_port, reuse_port=shared):
        raise StartupError(f"the HTTP door cannot listen on {settings.http_host}:{settings.http_port}: "
                           f"{os.strerror(errno.EADDRINUSE)} (--http-port / RESPONSES_BRIDGE_HTTP_PORT)")
    if extproc and in_use(settings.extproc_host, extproc_port):
        raise StartupError(f"the ext_proc door cannot listen on {settings.extproc_host}:{extproc_port}: "
                           f"{os.strerror(errno.EADDRINUSE)} (--extproc-port / RESPONSES_BRIDGE_EXTPROC_PORT)")


def _where(settings: Settings) -> str:
    """Where the state is, for the log: the SQLite path, or the PostgreSQL host and database (no password)."""
    if settings.database_url is None:
        return settings.db_path()
    return f"postgresql {describe(settings.database_url.get_secret_value())}"


LOOPBACK_HOSTS = frozenset(("127.0.0.1", "::1", "localhost"))


def warn_if_open(settings: Settings, *, http: bool = True, extproc: bool = True) -> list[str]:
    """``auth: none`` with a door bound beyond loopback: anyone who reaches it reads, continues and deletes every
    stored object. One warning line naming those doors (returned too); nothing when auth is on or all is local."""
    if settings.auth != "none":
        return []
    doors = [f"{name}={host}:{port}" for name, on, host, port in (
        ("http", http, settings.http_host, settings.http_port),
        ("extproc", extproc, settings.extproc_host, settings.extproc_port)) if on and host not in LOOPBACK_HOSTS]
    if doors:
        log.warning("auth_none_beyond_loopback", doors=doors,
                    hint="every caller shares one tenant: set RESPONSES_BRIDGE_AUTH=keys or header")
    return doors


class Door(Protocol):
    """The HTTP door as the shutdown sees it (adapters/http/server.py): drained with the rest, closed last."""

    async def drain(self) -> None: ...

    async def close(self) -> None: ...


DOOR_CLOSE_MARGIN_SECONDS = 5.0
"""Past the drain timeout: how long the HTTP door waits at most for the other workers to end their drains (each
takes the drain timeout, its final writes and the ext_proc server's stop grace) before it closes anyway."""


async def shutdown(runtime: Runtime, stoppers: list[Callable[[], Awaitable[None]]], door: Door | None = None, *,
                   worker: int | None = None) -> None:
    """Stop taking new work at once (``runtime.draining``: both doors refuse new requests, readiness fails),
    then drain the doors and the background runs together, so the whole shutdown takes the drain timeout
    plus a moment rather than one drain after another. Each door ends its own streams still running at the
    deadline with ``response.failed``; background runs still going then are handed off (their lease let go,
    for the next start or another replica to resume; services/responses/background_resume.py), or failed
    (``server_shutdown``) when they cannot be resumed, which also ends the streams following them. The HTTP door
    (``door``) closes only after all of that, and, for worker ``worker`` of ``serve --workers``, once every
    other worker has drained too (process/drain_barrier.py): until then it keeps answering ``/health/*`` and
    ``/metrics`` (and a 503 to anything else), whichever door held the streams. The store closes last."""
    from .process.drain_barrier import done_draining

    runtime.draining = True
    timeout = runtime.settings.drain_timeout
    until = time.monotonic() + timeout + DOOR_CLOSE_MARGIN_SECONDS
    log.info("draining", timeout_seconds=timeout)
    try:
        drains = [*(stop() for stop in stoppers), _drain_background(runtime, timeout)]
        if door is not None:
            drains.append(door.drain())
        results = await asyncio.gather(*drains, return_exceptions=True)
        for result in results:
            if isinstance(result, BaseException):
                log.error("drain_failed", error=repr(result))
        if door is not None:
            await done_draining(worker, until)
            await door.close()
    finally:
        await runtime.close()
    log.info("stopped")


async def _drain_background(runtime: Runtime, timeout: float) -> None:
    """Background runs may finish within the drain timeout, or are handed off at their next step boundary; those
    still running then are handed off (or failed)."""
    service = runtime.background
    if service is None:
        return
    service.drain()
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

