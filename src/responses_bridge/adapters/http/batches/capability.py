"""The Batch API on the HTTP door: its routes, and the runner that runs the batches of the store this process
shares, started with the door, drained with it (its leases let go at a line boundary) and stopped with it.

The runner lives with the HTTP door because its lines are served by the door's route code (line_server.py); under
Envoy the sidecar's HTTP door is where ``/v1/batches`` is routed (envoy_config/routes.py), so every deployment
runs its batches here. When a line may start is the runtime's idle-capacity gate's (fairness/idle_capacity.py,
the seam: services/batches/capacity.py): only on capacity interactive requests leave idle.
"""

from __future__ import annotations

from aiohttp import web

from ....runtime import Runtime
from ....services.batches.batches import BatchService
from ....services.batches.runner import BatchRunner
from ..drain import Drain
from .batches_routes import BatchRoutes
from .line_server import DoorLineServer

BATCHES = web.AppKey("batches", BatchService)
RUNNER_CLOSE_SECONDS = 10.0
"""At the door's close, after its drain: how long the lines still in flight get to finish and be recorded before
they are stopped (then they are the ones a later claim sends again)."""


def register(app: web.Application, runtime: Runtime, drain: Drain) -> BatchService:
    settings = runtime.settings
    runner = BatchRunner(runtime.batch_store, runtime.files, DoorLineServer(runtime), runtime.idle_capacity,
                         runtime.kept_authorization, lease_seconds=settings.background_lease_seconds,
                         shared=_shared(runtime), max_line_bytes=settings.max_request_bytes)
    service = BatchService(runtime.batch_store, runtime.files, runtime.kept_authorization, runner)
    BatchRoutes(service).register(app)
    app[BATCHES] = service

    async def start(door: web.Application) -> None:
        await runner.start()
        drain.on_drain(runner.drain)

    async def stop(door: web.Application) -> None:
        await runner.close(RUNNER_CLOSE_SECONDS)

    app.on_startup.append(start)
    app.on_cleanup.append(stop)
    return service


def _shared(runtime: Runtime) -> bool:
    """Other processes on the store (PostgreSQL replicas, ``serve --workers`` on one SQLite file): only lapsed
    leases are taken; alone on a SQLite file, every unfinished batch at start is a dead process's."""
    return runtime.settings.database_url is not None or runtime.settings.worker_count() > 1
