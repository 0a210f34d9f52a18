"""``serve --workers``: no worker closes the shared HTTP port while another one still drains.

The workers share the HTTP door's port (``SO_REUSEPORT``), and each drains on its own after SIGTERM: a worker whose
ext_proc door held no stream is done at once, the one holding Envoy's streams only at the drain deadline. Were
the first one to close its HTTP door then, the probes (``/health/live``, ``/metrics``) the kernel hands to its
socket would be refused mid-drain, and a liveness probe failing then gets the pod killed before its streams end.

So the supervisor marks every worker as draining (a file per worker in a directory it made, named in the workers'
environment) *before* it passes SIGTERM on; each worker removes its own mark once its own drain has ended, then
waits until no mark is left (or its bound passes: a worker that died keeps its mark) before it closes its HTTP
door. A sidecar started alone has no such directory and waits for nobody. The supervisor side is synchronous (it
imports no asyncio); the worker side is a coroutine, polled, because the mark files are all there is to watch.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import time
from pathlib import Path

DRAIN_DIR_ENV = "RESPONSES_BRIDGE_WORKER_DRAIN_DIR"
"""Set by the supervisor in each worker's environment: where the draining marks are. Not a setting."""
POLL_SECONDS = 0.1


def _mark(directory: str | os.PathLike[str], index: int) -> Path:
    return Path(directory) / f"{index}.draining"


def mark_draining(directory: str | os.PathLike[str], index: int) -> None:
    """The supervisor, before it passes SIGTERM to worker ``index``: that worker is draining."""
    _mark(directory, index).touch()


def clear_mark(directory: str | os.PathLike[str], index: int) -> None:
    """A worker's drain ended (or the worker is gone): its mark goes."""
    with contextlib.suppress(FileNotFoundError):
        _mark(directory, index).unlink()


def draining(directory: str | os.PathLike[str]) -> list[str]:
    """The marks still there."""
    try:
        return sorted(entry.name for entry in Path(directory).iterdir() if entry.name.endswith(".draining"))
    except FileNotFoundError:  # the supervisor removed the directory: it has stopped waiting for anyone
        return []


async def done_draining(index: int | None, until: float) -> None:
    """This worker's (``index``) drain has ended: remove its mark and return once every worker's has, or at
    ``until`` (``time.monotonic()``) at the latest. Returns at once when this process is not a supervised worker."""
    directory = os.environ.get(DRAIN_DIR_ENV)
    if not directory or index is None:
        return
    clear_mark(directory, index)
    while time.monotonic() < until:  # polled: the other workers' marks are files, with nothing to wait on
        if not draining(directory):
            return
        await asyncio.sleep(POLL_SECONDS)
