"""A process's memory as Linux reports it, for the tests that hold a request to a memory budget (a budget, not a
timing: the peak is what the kernel recorded)."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import TypeVar

Amount = TypeVar("Amount", int, float)
Result = TypeVar("Result")


def status_kb(pid: int | str, key: str) -> int:
    """A field of ``/proc/<pid>/status`` in kB (``VmRSS``: now, ``VmHWM``: the peak); ``pid`` may be ``"self"``."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith(f"{key}:"):
            return int(line.split()[1])
    raise AssertionError(f"no {key} in /proc/{pid}/status")


def reset_peak(pid: int | str) -> int:
    """Starts the peak RSS (``VmHWM``) again from the current RSS (``clear_refs`` 5); returns that RSS in kB."""
    Path(f"/proc/{pid}/clear_refs").write_text("5")
    return status_kb(pid, "VmRSS")


async def peak_while(measure: Callable[[], Amount], start: Amount, work: Awaitable[Result], *,
                     every: float = 0.05) -> tuple[Amount, Result]:
    """The highest of ``start`` and ``measure()`` (taken every ``every`` s while ``work`` runs) beside the work's
    result: the peak of a burst, sampled (a family of processes has no kernel-kept peak of its own, unlike one
    process's ``VmHWM``). The sampling ends with the work, whatever way it ends."""
    peak = start
    running = True

    async def sample() -> None:
        nonlocal peak
        while running:
            peak = max(peak, measure())
            await asyncio.sleep(every)

    sampler = asyncio.create_task(sample())
    try:
        result = await work
    finally:
        running = False
        await sampler
    return peak, result
