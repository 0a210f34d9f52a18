"""Read-only trees of one sandbox call (a container's skills at ``/mnt/skills``): a host directory made for the
call alone, filled before the sandbox starts, bound into it with ``--ro-bind`` (sandbox/command.py), and removed
when the call ends, whatever the call did: nothing of it outlives the call on the host.

The code cannot change the tree (the bind is read-only; it is not the code's to write). The directory is made in
the bridge's own scratch directory (sandbox/scratch.py), never directly in a shared one, and is named after the
bridge's process (``responses-bridge-ro-<pid>-…``), so a bridge starting on the same machine removes what a crashed
one left (:func:`sweep_orphans`) and never what a live one is using.
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
from .scratch import ScratchUnsafe, existing_scratch_root, scratch_root
from .trees import remove_tree, sweep

log = structlog.get_logger(__name__)

PREFIX = "responses-bridge-ro-"


@contextlib.asynccontextmanager
async def read_only_tree(parent: Path | None, fill: Callable[[Path], Awaitable[None]]) -> AsyncIterator[Path]:
    """A fresh directory in the bridge's scratch directory under ``parent`` (the ``code_workdir`` setting; the
    system's temporary directory when None), filled by ``fill`` (which does its disk work off the event loop),
    yielded for the call and removed afterwards (also when ``fill`` or the call fails or is cancelled). Raises
    :class:`~.scratch.ScratchUnsafe` when the scratch directory's place is not the bridge's alone."""
    where = await asyncio.to_thread(scratch_root, parent)
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
    """Remove the trees of bridge processes that are gone (a crash between a call's start and its end): how many
    were removed. Looked for in the scratch directory, and where bridges before it made them (``parent`` itself,
    the system's temporary directory when None); in both only directories of this uid, never through a link
    (trees.py's :func:`~.trees.sweep`)."""

    def in_use(name: str) -> bool:
        owner = name[len(PREFIX):].split("-", 1)[0]
        return not owner.isdigit() or int(owner) == os.getpid() or process_alive(int(owner))

    removed = sweep(parent or Path(tempfile.gettempdir()), PREFIX, keep=in_use)
    try:
        scratch = existing_scratch_root(parent)
        if scratch is not None:
            removed += sweep(scratch, PREFIX, keep=in_use)
    except (ScratchUnsafe, OSError) as error:  # said once at start (runtime.py); nothing of ours to sweep there
        log.debug("scratch_not_swept", error=str(error))
    return removed
