"""The cyclic garbage collector paused while a command starts, and what it built frozen once it is up.

Starting ``serve`` imports about a thousand modules and builds their classes, tables and routes: some 140,000
objects that live as long as the process. With the collector on, the allocations on the way trigger dozens of
collections, each walking the objects made so far, for almost nothing to free (about two thousand objects are
garbage by the end). Paused, the start takes about a tenth less CPU — paid again by every process that starts the
bridge (each sidecar of a test run, each ``keys`` call, each worker of ``serve --workers``). Once the doors are open,
:func:`resume` moves what exists to the collector's permanent generation (``gc.freeze``), so the full collections
of the running server do not walk the start's objects again (that start garbage is kept: a few hundred KB), and
turns it back on.

Only a process started as the command pauses it (``cli.main`` with no arguments given, as the console script and
``python -m responses_bridge`` call it): a test calling ``main([...])`` in its own process leaves its collector as
it is."""

from __future__ import annotations

import gc

_paused = False


def pause() -> None:
    """Turn the collector off until :func:`resume`, if it is on."""
    global _paused
    if gc.isenabled():
        gc.disable()
        _paused = True


def resume() -> None:
    """The collector back on, with what was built meanwhile frozen; nothing when :func:`pause` did not turn it off
    (or it was resumed already)."""
    global _paused
    if _paused:
        _paused = False
        gc.freeze()
        gc.enable()
