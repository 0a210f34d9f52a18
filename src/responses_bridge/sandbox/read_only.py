"""Read-only trees of one sandbox call (a container's skills at ``/mnt/skills``): a host directory made for the
call alone, filled before the sandbox starts, bound into it with ``--ro-bind`` (sandbox/command.py), and removed
when the call ends, whatever the call did: nothing of it outlives the call on the host.

The code cannot change the tree (the bind is read-only; it is not the code's to write), and the directory is
named after the bridge's process (``responses-bridge-ro-<pid>-…``), so a bridge starting on the same machine
removes what a crashed one left (:func:`sweep_orphans`) and never what a live one is using.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import tempfile
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path

import structlog

from .cgroups import process_alive
from .trees import remove_tree

log = structlog.get_logger(__name__)

PREFIX = "responses-bridge-ro-"


@contextlib.asynccontextmanager
async def read_only_tree(parent: Path | None, fill: Callable[[Path], Awaitable[None]]) -> AsyncIterator[Path]:
    """A fresh directory under ``parent`` (the system's temporary directory when None), filled by ``fill`` (which
    does its disk work off the event loop), yielded for the call and removed afterwards (also when ``fill`` or
    the call fails or is cancelled)."""
    where = parent or Path(tempfile.gettempdir())
    root = Path(await asyncio.to_thread(tempfile.mkdtemp, prefix=f"{PREFIX}{os.getpid()}-", dir=where))
    try:
        await fill(root)
        await asyncio.to_thread(os.chmod, root, 0o755)
        yield root
    finally:
        removal = asyncio.ensure_future(asyncio.to_thread(remove_tree, root))
        try:
            await asyncio.shield(removal)  # a second cancellation leaves the removal running to its end
        except asyncio.CancelledError:
            await removal
            raise



def sweep_orphans(parent: Path | None) -> int:
    """Remove the trees of bridge processes that are gone (a crash between a call's start and its end): how
    many were removed."""
    where = parent or Path(tempfile.gettempdir())
    removed = 0
    try:
        entries = [entry for entry in where.iterdir() if entry.name.startswith(PREFIX)]
    except OSError:
        return 0
    for entry in entries:
        owner = entry.name[len(PREFIX):].split("-", 1)[0]
        if not owner.isdigit() or int(owner) == os.getpid() or process_alive(int(owner)):
            continue  # not such a tree, or one in use
        if entry.is_dir() and not entry.is_symlink() and remove_tree(entry):
            removed += 1
    return removed
