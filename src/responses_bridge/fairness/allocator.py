"""Give memory back to the system once large requests are done.

A 30 MiB request passes through a few buffers of about its size (the raw body, the parsed text, the upstream
body, the stored row). glibc serves a large allocation from a mapping of its own only above its mmap threshold,
and that threshold rises (up to 32 MiB) each time such a mapping is freed; after the first large request, later
ones are carved out of the heap, and freed heap memory below live objects stays resident. Measured: ten 30 MiB
requests left the sidecar 350 MB above idle, through either door.

Fixing the threshold instead (``mallopt``) was measured too, and rejected: orjson reserves several times a long
string's size while it serialises, so with a threshold of 1 to 16 MiB every event or response carrying a 2 MB text
paid for fresh mappings (page faults, and unmapping in a threaded process), and the end of a 2 MB event went from
about 10 ms to about 100 ms. So the allocator keeps its fast defaults, and :class:`MemoryTrimmer` calls
``malloc_trim(0)`` (which returns the free pages of every arena) from a worker thread when the process has grown
well beyond its size after the last trim, and now and then while it stays well above its size at start (memory
still live at one trim may be freed later); while nothing large happens it only reads ``/proc/self/statm``. On
other C libraries it does nothing.

"Now and then" was not soon enough: after a burst (sixteen programs' answers of 1 MiB of call arguments) the
memory freed by the ended requests stayed resident until the next retry, up to ten seconds and more — the memory
backstop (services/tenancy/memory_watch.py) read it as load and refused bystanders. So the trimmer also watches
what the allocator holds free (glibc's ``mallinfo2``: the bytes of free chunks in its arenas, a walk of its bins,
microseconds) and trims, at its next check, once that has grown by :data:`FREED_BYTES` since the last trim while
the process is that much above its size at start: memory let go, not memory still live, is what triggers it. A trim
with little newly freed is cheap (0.4 ms measured on a 290 MiB heap; 15 ms when 290 MiB had just been freed), so
the check runs every second. The other ways were measured and set aside: ``mallopt`` thresholds (above: the
latency of large events), and
jemalloc or mimalloc through ``LD_PRELOAD`` (it has to be in the environment before the interpreter starts — every
way of starting the sidecar, the image, ``pip install`` — for what a trim at the right moment gives as well).

Arenas are not trimmed alike, though: ``malloc_trim`` gives back the free pages inside every arena's bins, but the
top of a thread's arena (the free end of its heap, where what it allocated last comes back to when freed) only the
main arena's. A thread's top is shrunk only by a free in that arena once it passes the trim threshold, which rises
with the mmap threshold to 64 MiB. The programs' answers are read and parsed in their threads (run/programs/host.py):
after sixteen programs' 20 MiB answers, three such tops held 70 MiB resident that no trim could reach, serve +64–90
MiB 10 s after. So the process keeps one arena (:func:`one_arena`, ``M_ARENA_MAX`` 1, set before its threads start
unless the environment sets it: ``MALLOC_ARENA_MAX``, ``GLIBC_TUNABLES``): every thread allocates from the main
arena, whose top the trim gives back (the same burst: serve back to its size at start). Its threads contend for one
lock only where they allocate at the same moment without the GIL (the store's and gRPC's threads), rarely: the small
allocations come from each thread's cache (tcache), without the lock.

Memory a trim cannot give back is memory still live, and objects in reference cycles stay live until the cyclic
collector's full pass finds them: a pass an idle server never makes (its collections are triggered by allocations,
and the objects of its start are frozen: process/startup_gc.py). A response's objects are let go by their reference
counts (the cycles it made are cut at its end: run/response_run.py, run/server_tools_calls.py), but a shape that
still built one (a library's, an exception's frames) would keep what it holds for as long. So when a trim is due and
nothing is held in the memory budget (``quiet``: no request in flight holds anything), the trimmer runs a full
collection first: on the event loop (finalizers may touch it), at most every :data:`COLLECT_EVERY_SECONDS` — a pass
over the objects made since the start's: 0.9 ms measured after a burst (1,740 objects tracked, 132,885 frozen).
"""

from __future__ import annotations

import asyncio
import ctypes
import gc
import os
import sys
from collections.abc import Callable
from typing import Any

import structlog

from ..process.periodic import Periodic

CHECK_EVERY_SECONDS = 1.0
GROWTH_BYTES = 32 * 1024 * 1024  # growth worth a trim
FREED_BYTES = 16 * 1024 * 1024
"""Bytes newly freed in the allocator (and the RSS above its size at start) worth a trim (module text)."""
RETRY_EVERY_SECONDS = 10.0  # while the RSS stays GROWTH_BYTES above its size at start
COLLECT_EVERY_SECONDS = 5.0
"""Seconds at least between two of the trimmer's full collections (module text)."""
_PAGE_BYTES = os.sysconf("SC_PAGE_SIZE") if hasattr(os, "sysconf") else 4096
log = structlog.get_logger("responses_bridge.memory")


def resident_bytes() -> int:
    """This process's RSS, from ``/proc/self/statm`` (0 where there is none)."""
    try:
        with open("/proc/self/statm", "rb") as statm:
            return int(statm.read().split()[1]) * _PAGE_BYTES
    except (OSError, ValueError, IndexError):
        return 0


def _glibc_function(name: str) -> Any:
    """The C function ``name`` of glibc among the symbols the interpreter has loaded (``dlopen(NULL)``), or None on
    other systems, other C libraries (only glibc has ``gnu_get_libc_version``) or a glibc without it. One lookup for
    every allocator call here, so that they all agree on what counts as glibc."""
    if not sys.platform.startswith("linux"):
        return None
    try:
        libc = ctypes.CDLL(None)
    except OSError:
        return None
    if not hasattr(libc, "gnu_get_libc_version") or not hasattr(libc, name):
        return None
    return getattr(libc, name)


def glibc_malloc_trim() -> Callable[[], None] | None:
    """``malloc_trim(0)`` of glibc, or None on other C libraries and systems. The C library is looked up among the
    symbols the interpreter has loaded (``dlopen(NULL)``), not by ``ctypes.util.find_library``, which runs
    ``ldconfig -p`` in a subprocess: a fork of the whole process at every start (1.5 ms of CPU, ~8 ms of wall)."""
    trim = _glibc_function("malloc_trim")
    if trim is None:
        return None
    trim.argtypes = (ctypes.c_size_t,)
    trim.restype = ctypes.c_int
    return lambda: trim(0)


M_ARENA_MAX = -8  # glibc's mallopt parameter


def one_arena() -> bool:
    """Every thread of this process allocates from glibc's main arena from now on (module text); False where it is
    not glibc or the environment chose the arenas (``MALLOC_ARENA_MAX``, ``GLIBC_TUNABLES``). Called before the
    process starts its threads: one that has allocated already keeps its arena."""
    if "MALLOC_ARENA_MAX" in os.environ or "GLIBC_TUNABLES" in os.environ:
        return False
    mallopt = _glibc_function("mallopt")
    if mallopt is None:
        return False
    mallopt.argtypes = (ctypes.c_int, ctypes.c_int)
    mallopt.restype = ctypes.c_int
    return bool(mallopt(M_ARENA_MAX, 1))


class _MallInfo2(ctypes.Structure):
    _fields_ = [(name, ctypes.c_size_t) for name in (
        "arena", "ordblks", "smblks", "hblks", "hblkhd", "usmblks", "fsmblks", "uordblks", "fordblks", "keepcost")]


def glibc_free_bytes() -> Callable[[], int] | None:
    """The bytes of free chunks glibc's arenas hold (``mallinfo2().fordblks``: resident until trimmed, if touched),
    or None without glibc 2.33's ``mallinfo2``. Trimmed chunks stay free chunks (their pages given back), so it is
    its growth since a trim that says memory was let go."""
    info = _glibc_function("mallinfo2")
    if info is None:
        return None
    info.argtypes = ()
    info.restype = _MallInfo2
    return lambda: int(info().fordblks)


class MemoryTrimmer:
    """Every ``interval`` seconds, trims in a worker thread if the RSS is ``growth`` bytes above what it was after
    the last trim, if the allocator's free bytes (``free``) grew by ``freed`` since then while the RSS is ``freed``
    above its size at start, or if ``retry`` seconds have passed since then and it is still ``growth`` above its
    size at start. Before such a trim, when :attr:`quiet` says nothing is held (None: never), a full collection
    (``collect``), at most every ``collect_every`` seconds."""

    def __init__(self, trim: Callable[[], None] | None = None, *, interval: float = CHECK_EVERY_SECONDS,
                 growth: int = GROWTH_BYTES, retry: float = RETRY_EVERY_SECONDS, freed: int = FREED_BYTES,
                 rss: Callable[[], int] = resident_bytes, free: Callable[[], int] | None = None,
                 clock: Callable[[], float] | None = None, collect: Callable[[], int] = gc.collect,
                 collect_every: float = COLLECT_EVERY_SECONDS) -> None:
        self._trim = trim if trim is not None else glibc_malloc_trim()
        self._collect = collect
        self._collect_every = collect_every
        self._collected_at: float | None = None
        # set once the memory budget exists (Runtime.watching): True while no request holds anything of it
        self.quiet: Callable[[], bool] | None = None
        self.collections = 0
        self._growth = growth
        self._retry = retry
        self._freed = freed
        self._rss = rss
        self._free = free if free is not None or trim is not None else glibc_free_bytes()
        self._clock = clock
        self._base = 0  # the RSS at start
        self._after_trim = 0  # the RSS after the last trim (at start: the base)
        self._free_after_trim = 0  # the allocator's free bytes after the last trim
        self._trimmed_at = 0.0
        self._checker = Periodic(interval, self.check, name="memory-trimmer", failure="memory_trim_failed",
                                 failure_level="warning")  # housekeeping must never take the process down
        self.trims = 0

    def start(self) -> None:
        if self._trim is None or self._checker.running:
            return
        self._base = self._after_trim = self._rss()
        self._free_after_trim = self._free() if self._free is not None else 0
        self._trimmed_at = self._now()
        self._checker.start()

    def _now(self) -> float:
        return self._clock() if self._clock is not None else asyncio.get_running_loop().time()

    async def stop(self) -> None:
        await self._checker.stop()

    async def check(self) -> bool:
        """One check; True if it trimmed."""
        if self._trim is None:
            return False
        rss = self._rss()
        grew = rss > self._after_trim + self._growth
        freed = (self._free is not None and rss > self._base + self._freed
                 and self._free() > self._free_after_trim + self._freed)
        stays_high = rss > self._base + self._growth and self._now() - self._trimmed_at >= self._retry
        if not (grew or freed or stays_high):
            return False
        self._collect_if_quiet()
        await asyncio.to_thread(self._trim)
        self.trims += 1
        self._after_trim, self._trimmed_at = self._rss(), self._now()
        if self._free is not None:
            self._free_after_trim = self._free()
        return True

    def _collect_if_quiet(self) -> None:
        """A full collection before the trim, when nothing is held and none ran in the last ``collect_every``
        seconds: what only sat in cycles is freed, and the trim that follows gives it back."""
        if self.quiet is None or not self.quiet():
            return
        now = self._now()
        if self._collected_at is not None and now - self._collected_at < self._collect_every:
            return
        self._collected_at = now
        found = self._collect()
        self.collections += 1
        if found:
            log.debug("memory_cycles_collected", objects=found)
