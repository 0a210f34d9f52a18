"""The memory trimmer: when it gives memory back (glibc's ``malloc_trim``), driven here by a scripted RSS and
clock, and that the real call exists and runs where the C library is glibc."""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys

import pytest

from responses_bridge.fairness.allocator import MemoryTrimmer, glibc_malloc_trim, resident_bytes

MB = 1024 * 1024


class Process:
    """A scripted RSS: trimming brings it down to what is live."""

    def __init__(self, rss: int) -> None:
        self.rss = rss
        self.live = rss
        self.now = 0.0
        self.trims = 0

    def trim(self) -> None:
        self.trims += 1
        self.rss = self.live


async def started(process: Process) -> MemoryTrimmer:
    trimmer = MemoryTrimmer(process.trim, interval=3600, growth=32 * MB, retry=10,
                            rss=lambda: process.rss, clock=lambda: process.now)
    trimmer.start()
    return trimmer


async def test_growth_is_trimmed_and_small_changes_are_not() -> None:
    process = Process(100 * MB)
    trimmer = await started(process)
    try:
        process.rss = 120 * MB  # less than the growth worth a trim
        assert not await trimmer.check()
        process.rss = 400 * MB  # a large request came and went: its memory is free but still resident
        assert await trimmer.check()
        assert process.rss == 100 * MB and process.trims == 1
        assert not await trimmer.check()  # back where it started: nothing to do
    finally:
        await trimmer.stop()


async def test_memory_still_live_at_a_trim_is_trimmed_again_later() -> None:
    process = Process(100 * MB)
    trimmer = await started(process)
    try:
        process.rss = process.live = 400 * MB  # a large request is running: nothing can be given back yet
        assert await trimmer.check() and process.rss == 400 * MB
        process.live = 100 * MB  # it ended; the allocator keeps the pages
        process.now = 5.0
        assert not await trimmer.check()  # no new growth, and too soon to try again
        process.now = 10.0
        assert await trimmer.check() and process.rss == 100 * MB
        process.now = 30.0
        assert not await trimmer.check()  # back near the size at start: no more trims
        assert trimmer.trims == process.trims == 2
    finally:
        await trimmer.stop()


async def test_the_real_trim_runs() -> None:
    trim = glibc_malloc_trim()
    assert trim is not None  # the test machines run glibc
    junk = [bytearray(1024 * 1024) for _ in range(64)]
    del junk
    await asyncio.to_thread(trim)
    assert resident_bytes() > 0


def test_finding_the_trim_starts_no_process(monkeypatch: pytest.MonkeyPatch) -> None:
    """Every start looks the trim up: ``ctypes.util.find_library`` forked the whole process for ``ldconfig -p``."""
    def refused(*args: object, **kwargs: object) -> None:
        raise AssertionError(f"a process started: {args}")

    monkeypatch.setattr(subprocess.Popen, "__init__", refused)
    monkeypatch.setattr(os, "posix_spawn", refused)
    assert glibc_malloc_trim() is not None


async def test_memory_let_go_is_trimmed_at_the_next_check_not_the_next_retry() -> None:
    """A burst's requests end and free what they held, the RSS unchanged (the allocator keeps the pages): the growth
    of the allocator's free bytes since the last trim is what triggers the next one, at once; memory still live
    (free bytes unchanged) is not trimmed again before the retry."""
    process = Process(100 * MB)
    free = [0]
    trimmer = MemoryTrimmer(process.trim, interval=3600, growth=32 * MB, retry=10, freed=16 * MB,
                            rss=lambda: process.rss, free=lambda: free[0], clock=lambda: process.now)
    trimmer.start()
    try:
        process.rss = process.live = 400 * MB  # the burst runs: nothing to give back
        assert await trimmer.check() and process.rss == 400 * MB
        process.now = 1.0
        assert not await trimmer.check()  # still live, nothing freed: no trim
        process.live, free[0] = 110 * MB, 290 * MB  # it ended: 290 MiB free in the arenas, still resident
        process.now = 2.0
        assert await trimmer.check() and process.rss == 110 * MB  # at once, not at the retry (10 s)
        process.now = 3.0
        assert not await trimmer.check()  # the same free bytes (trimmed chunks stay free chunks): no trim
        assert process.trims == 2
    finally:
        await trimmer.stop()


def test_the_allocators_free_bytes_are_read() -> None:
    from responses_bridge.fairness.allocator import glibc_free_bytes

    free = glibc_free_bytes()
    assert free is not None  # the test machines run glibc >= 2.33
    assert free() >= 0


async def test_with_nothing_held_a_full_collection_comes_before_the_trim_at_most_every_few_seconds() -> None:
    """Memory held only by objects in reference cycles is live until the collector's full pass, which an idle server
    never makes: with nothing held in the budget, the trimmer runs one before its trim (and the trim gives back what
    it freed); with something held, none (the control); and not twice within ``collect_every``."""
    process = Process(100 * MB)
    in_cycles = [300 * MB]  # what the pass frees: a burst's items, kept in cycles

    def collect() -> int:
        freed, in_cycles[0] = in_cycles[0], 0
        process.live -= freed
        return 1 if freed else 0

    trimmer = MemoryTrimmer(process.trim, interval=3600, growth=32 * MB, retry=10, collect=collect, collect_every=5,
                            rss=lambda: process.rss, clock=lambda: process.now)
    trimmer.start()
    held = [1]
    trimmer.quiet = lambda: held[0] == 0
    try:
        process.rss = process.live = 400 * MB
        assert await trimmer.check()  # a request holds room: trimmed, never collected
        assert (trimmer.collections, process.rss) == (0, 400 * MB)
        held[0] = 0
        process.now = 10.0  # still high, nothing held: collected, then trimmed down
        assert await trimmer.check()
        assert (trimmer.collections, process.rss) == (1, 100 * MB)
        process.rss = process.live = 400 * MB  # another burst, 2 s later: trimmed, not collected again so soon
        process.now = 12.0
        assert await trimmer.check() and trimmer.collections == 1
        process.now = 22.0  # past the interval, still high: collected again
        assert await trimmer.check() and trimmer.collections == 2
    finally:
        await trimmer.stop()


async def test_the_runtime_tells_the_trimmer_whether_anything_is_held() -> None:
    """``quiet`` comes from the runtime's memory budget once its backstop starts: True with nothing held, False
    while a request holds room."""
    from responses_bridge.config.settings import Settings
    from responses_bridge.store.sqlite.responses import SQLiteResponseStore
    from tests.support.runtime import runtime_over

    async with SQLiteResponseStore(":memory:") as store:
        runtime = runtime_over(store, Settings(upstream="http://127.0.0.1:9/v1", db=":memory:",
                                               memory_budget_bytes=64 * MB)).watching()
        try:
            quiet = runtime.trimmer.quiet
            assert quiet is not None and quiet()
            reservation = await runtime.memory.reserve(1000)
            assert not quiet()
            reservation.release()
            assert quiet()
        finally:
            await runtime.memory_watch.stop()


ARENA_SCRIPT = """
import sys, threading
from responses_bridge.fairness.allocator import glibc_malloc_trim, one_arena, resident_bytes
if sys.argv[1] == "one":
    assert one_arena()
first = bytearray(20 << 20)  # mapped of its own; freed, it raises the thresholds as a burst's first answer does
del first
def burst():  # what a program's thread reads and parses: freed, it is the free top of that thread's arena
    blocks = [bytearray(1 << 20) for _ in range(30)]
    del blocks
thread = threading.Thread(target=burst)
thread.start()
thread.join()
before = resident_bytes()
glibc_malloc_trim()()
print(before - resident_bytes())
"""


@pytest.mark.skipif(glibc_malloc_trim() is None, reason="glibc only")
@pytest.mark.parametrize("arenas", ["one", "default"])
def test_with_one_arena_a_threads_freed_memory_is_given_back_by_the_trim(arenas: str) -> None:
    """30 MiB a thread allocated and freed: with one arena (what ``serve`` keeps) the trim gives it back; with a
    thread's own arena (the control) the freed top of that arena stays resident, whatever the trim."""
    env = {name: value for name, value in os.environ.items() if name not in ("MALLOC_ARENA_MAX", "GLIBC_TUNABLES")}
    given_back = int(subprocess.run([sys.executable, "-c", ARENA_SCRIPT, arenas], env=env, capture_output=True,
                                    text=True, check=True, timeout=60).stdout)
    if arenas == "one":
        assert given_back > 24 * MB, given_back
    else:
        assert given_back < 8 * MB, given_back


def test_one_arena_leaves_an_arena_setting_of_the_environment_alone(monkeypatch: pytest.MonkeyPatch) -> None:
    from responses_bridge.fairness.allocator import one_arena

    monkeypatch.setenv("MALLOC_ARENA_MAX", "4")
    assert one_arena() is False
