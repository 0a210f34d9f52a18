"""Start the ext_proc door: a ``grpc.aio`` server with the processor and the gRPC health service."""

from __future__ import annotations

import asyncio
import os
from typing import Any

import grpc
import structlog
from grpc_health.v1 import health, health_pb2, health_pb2_grpc

from ...envoy_config import EXTPROC_SERVICE, upstream_path_prefix
from ...runtime import Runtime
from ...services.readiness import check_readiness
from .decode import add_processor
from .servicer import ExtProcServicer

log = structlog.get_logger("responses_bridge.extproc")

MIN_MESSAGE_BYTES = 128 * 1024 * 1024
"""gRPC's default 4 MiB cap would refuse big request bodies; a translated body (with replayed history) can be
larger than the request itself, hence the headroom over ``max_request_bytes``."""


class ExtProcDoor:
    """The running door. Awaiting it (``await door()``) is the graceful stop: it sets ``runtime.draining`` (new
    responses get a 503), lets the responses in flight run for up to ``settings.drain_timeout`` seconds, ends the
    rest with ``response.failed`` (``server_shutdown``) and ``[DONE]``, and only then stops the gRPC server, so
    those terminal bytes reach Envoy. ``stop(grace)`` stops the server at once, as ``grpc.aio.Server.stop``."""

    def __init__(self, server: grpc.aio.Server, servicer: ExtProcServicer, runtime: Runtime, bound_port: int) -> None:
        self.server = server
        self.servicer = servicer
        self.runtime = runtime
        self.bound_port = bound_port
        self.readiness_task: asyncio.Task[None] | None = None  # keeps gRPC health in step with readiness

    async def __call__(self) -> None:
        self.runtime.draining = True
        timeout = self.runtime.settings.drain_timeout
        log.info("extproc_draining", timeout=timeout)
        await self.servicer.drain(timeout)
        await self.stop(grace=1)

    async def stop(self, grace: float | None = None) -> None:
        if self.readiness_task is not None:
            self.readiness_task.cancel()
        await self.server.stop(grace)


PENDING_CALLS = 1 << 16
"""New calls gRPC core keeps for the server before the event loop takes them up. Its defaults (1,000, and 3,000 at
once) cancel the rest (Envoy answers ``processor_unavailable``, ``CANCELLED``): 5,000 streams opened at once through
Envoy lost 1,002 so. Envoy's circuit breakers (``envoy_max_requests``) bound how many come instead."""


def server_options(max_request_bytes: int) -> list[tuple[str, int]]:
    """The gRPC server's options, for requests of up to ``max_request_bytes``. Also what the benchmark's no-op
    processor runs with (tools/bench/latency/floors.py), so that its floor is this server's."""
    limit = max(MIN_MESSAGE_BYTES, 2 * max_request_bytes + 1024 * 1024)
    return [
        ("grpc.max_receive_message_length", limit),
        ("grpc.max_send_message_length", limit),
        ("grpc.so_reuseport", 0),  # a second server on a taken port must fail, not share it
        ("grpc.http2.max_pings_without_data", 0),
        ("grpc.keepalive_permit_without_calls", 1),
        ("grpc.server.max_pending_requests", PENDING_CALLS),
        ("grpc.server.max_pending_requests_hard_limit", PENDING_CALLS),
    ]


async def start_extproc_server(runtime: Runtime, host: str, port: int, *, uds: str | None = None,
                               upstream_path_prefix_override: str | None = None) -> ExtProcDoor:
    """Starts the server and returns the door, whose call drains and stops it (see :class:`ExtProcDoor`).
    ``port`` 0 picks a free port; the bound port is ``door.bound_port``. ``uds``: listen on this Unix domain
    socket path instead of ``host``:``port``. The rewritten request's path is
    ``<upstream base path>/chat/completions``, the base path taken from ``runtime.settings.upstream`` unless
    overridden."""
    server = grpc.aio.server(options=server_options(runtime.settings.max_request_bytes))
    prefix = (upstream_path_prefix_override if upstream_path_prefix_override is not None
              else upstream_path_prefix(runtime.settings.upstream))
    servicer = ExtProcServicer(runtime, prefix)
    add_processor(servicer, server)  # a message that fails to decode is refused, never a clean close (decode.py)
    health_servicer = health.aio.HealthServicer()  # type: ignore[attr-defined]  # at run time; not in the stubs
    health_pb2_grpc.add_HealthServicer_to_server(health_servicer, server)
    for service in ("", EXTPROC_SERVICE):
        await health_servicer.set(service, health_pb2.HealthCheckResponse.SERVING)
    if uds is not None:
        await asyncio.to_thread(_check_socket_free, uds)
        address = f"unix:{uds}"
    else:
        address = f"[{host}]:{port}" if ":" in host else f"{host}:{port}"
    try:
        bound = server.add_insecure_port(address)
    except RuntimeError as exc:  # grpc's way of saying the port is taken
        raise OSError(f"the ext_proc server could not listen on {address} (port in use?)") from exc
    if not bound:
        raise OSError(f"the ext_proc server could not listen on {address}")
    await server.start()
    door = ExtProcDoor(server, servicer, runtime, bound)
    door.readiness_task = asyncio.create_task(_report_readiness(runtime, health_servicer))
    return door


READINESS_INTERVAL_SECONDS = 1.0


def _check_socket_free(path: str) -> None:
    """gRPC replaces a socket file it finds at ``path``: a second sidecar on the same path would take the first
    one's place silently. A path a live server answers on is an error; a stale socket file is left for gRPC to
    replace; anything else in the way (a directory, a regular file) is an error too."""
    import socket
    import stat

    try:
        mode = os.stat(path).st_mode
    except FileNotFoundError:
        return
    if not stat.S_ISSOCK(mode):
        raise OSError(f"the ext_proc socket path {path} exists and is not a socket")
    probe = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    try:
        probe.connect(path)
    except OSError:
        return  # nobody listens: a leftover of a process that is gone
    finally:
        probe.close()
    raise OSError(f"the ext_proc server could not listen on unix:{path} (another process listens there)")


async def _report_readiness(runtime: Runtime, health_servicer: Any) -> None:
    """``health_servicer`` is a ``grpc_health.v1.health.aio.HealthServicer`` (its stubs do not declare ``aio``).
    Keep the gRPC health status in step with readiness (Envoy's health checks of the processor see a stalled
    store or a draining process as NOT_SERVING). Ends once the store has closed."""
    serving: bool | None = True
    while True:
        ready = check_readiness(runtime.store, stall_limit_seconds=runtime.settings.store_stall_seconds,
                                draining=runtime.draining).ready
        if ready != serving:
            status = health_pb2.HealthCheckResponse.SERVING if ready else health_pb2.HealthCheckResponse.NOT_SERVING
            for service in ("", EXTPROC_SERVICE):
                await health_servicer.set(service, status)
            serving = ready
        if not runtime.store.is_open:
            return
        await asyncio.sleep(READINESS_INTERVAL_SECONDS)
