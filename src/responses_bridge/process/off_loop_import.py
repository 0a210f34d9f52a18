"""Importing on a worker thread what a request needs only on its first use in a process.

Such a module stays out of ``serve``'s start (tests/unit/test_idle_imports.py holds the idle process to what it
answers with), but importing it is Python code run under the GIL: done on the event loop, the MCP client's first
use (~1.2 CPU-s of imports) held up every stream, probe and lease heartbeat of the process for that long, and three
times that on a busy machine, long enough for another replica to take over a session whose process was alive.
Imported on a thread, the import and the loop take turns at the GIL (every switch interval) and the loop goes on
serving. The caller then imports the names it uses as usual, which finds the module loaded (and keeps its types).
"""

from __future__ import annotations

import asyncio
import importlib
import importlib.util
import sys


async def import_off_loop(name: str, package: str | None = None) -> None:
    """Make sure ``name`` (relative to ``package`` when it starts with a dot) is imported, on a worker thread
    unless it is loaded already. Concurrent first uses wait on the import system's own lock for the module."""
    absolute = importlib.util.resolve_name(name, package)
    loaded = sys.modules.get(absolute)
    spec = getattr(loaded, "__spec__", None)
    if loaded is not None and not getattr(spec, "_initializing", False):
        return
    await asyncio.to_thread(importlib.import_module, absolute)
