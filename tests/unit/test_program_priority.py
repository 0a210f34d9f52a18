"""A long program's worker is lowered (run/programs/pool.py, ``program_lower_priority_after``): once a program has
used that much CPU, every thread of its worker runs at nice 10, so short programs get the cores first; a short
program's worker never is; a lowered worker is raised back for its next program where the bridge may (root with
CAP_SYS_NICE, as here), and replaced where it may not — never reused lowered, a fresh worker started in its
place."""

from __future__ import annotations

import contextlib
import os
import threading
import time
from collections.abc import Iterator

import pytest

from responses_bridge.run.programs import pool as pool_module
from responses_bridge.run.programs.isolate import Limits
from responses_bridge.run.programs.pool import LOWERED_NICE, RunHandle, WorkerPool

pytest.importorskip("py_mini_racer")

LOWER_AFTER = 0.2


@pytest.fixture
def pool() -> Iterator[WorkerPool]:
    workers = WorkerPool(128 << 20, keep=1, lower_after=LOWER_AFTER)
    yield workers
    workers.close()


def _nices(pid: int) -> set[int]:
    return {os.getpriority(os.PRIO_PROCESS, int(tid)) for tid in os.listdir(f"/proc/{pid}/task")}


def _run_watched(pool: WorkerPool, code: str, timeout: float) -> tuple[set[int], set[int]]:
    """Run ``code``; the nice values of its worker's threads seen while it ran, and of the idle workers kept after
    it answered (none: its worker was not kept)."""
    handle = RunHandle()
    seen: set[int] = set()
    ended = threading.Event()

    def watch() -> None:
        while not ended.wait(0.05):
            worker = handle._worker  # the worker running the program (private: the test's window into it)
            if worker is not None:
                with contextlib.suppress(OSError):  # it ended between the two reads: ``seen`` keeps what it showed
                    seen.update(_nices(worker.process.pid))

    watcher = threading.Thread(target=watch)
    watcher.start()
    try:
        run = pool.run(code, [], [], seed=1, clock_ms=0, limits=Limits(timeout=timeout), handle=handle)
    finally:
        ended.set()
        watcher.join()
    assert run.status in {"completed", "incomplete"}, run
    after = set()  # the idle workers kept for the next program (private: as above)
    for worker in pool._idle:
        after |= _nices(worker.process.pid)
    return seen, after


def test_a_long_programs_worker_is_lowered_and_raised_back_for_the_next(pool: WorkerPool) -> None:
    if os.geteuid() != 0:
        pytest.skip("raising a worker back needs CAP_SYS_NICE (root here); the replacement is tested below")
    seen, after = _run_watched(pool, "while (true) {}", 1.0)
    assert LOWERED_NICE in seen, seen
    started = pool.started
    seen, after = _run_watched(pool, "return 2", 5.0)
    assert pool.started == started  # the same worker, reused
    assert seen <= {0} and after == {0}, (seen, after)


def test_a_short_programs_worker_is_never_lowered(pool: WorkerPool) -> None:
    for _ in range(3):
        seen, after = _run_watched(pool, "let x = 0; for (let i = 0; i < 1000; i++) x += i; return x", 5.0)
        assert seen <= {0} and after <= {0}, (seen, after)


def test_a_worker_that_may_not_be_raised_back_is_replaced(pool: WorkerPool, monkeypatch: pytest.MonkeyPatch) -> None:
    real = os.setpriority

    def no_cap_sys_nice(which: int, who: int, nice: int) -> None:
        if nice < LOWERED_NICE:
            raise PermissionError(1, "Operation not permitted")
        real(which, who, nice)

    monkeypatch.setattr(pool_module.os, "setpriority", no_cap_sys_nice)
    seen, after = _run_watched(pool, "while (true) {}", 1.0)
    assert LOWERED_NICE in seen, seen  # lowered, then stopped when it answered
    monkeypatch.setattr(pool_module.os, "setpriority", real)
    for _ in range(600):  # bounded polling: a fresh worker started in its place, off the answer's path
        if pool._idle:
            break
        time.sleep(0.05)
    fresh = pool._idle[0].process.pid
    assert _nices(fresh) == {0}
    started = pool.started
    seen, after = _run_watched(pool, "return 2", 5.0)
    assert pool.started == started and seen <= {0} and after == {0}, (pool.started, seen, after)
    assert pool._idle[0].process.pid == fresh  # the next program ran in it
