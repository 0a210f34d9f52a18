"""Programs in their worker processes (run/programs/worker.py, pool.py, host.py): every byte a program can touch,
ArrayBuffers included, is bounded by the kernel in the worker, never held by the bridge; a worker that ends is
replaced; slots are shared fairly among tenants and a program's bound is held in the memory budget while it runs,
its answer (bounded) while the response keeps it."""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import threading
import time
from collections.abc import Iterator

import pytest
from prometheus_client import REGISTRY

from responses_bridge.engine.tools.programs import program_signer
from responses_bridge.fairness.preemption import was_taken_back
from responses_bridge.run.programs.host import ProgramBounds, ProgramHost
from responses_bridge.run.programs.isolate import Limits, ProgramRun
from responses_bridge.run.programs.pool import RunHandle, WorkerPool
from responses_bridge.sealing import Sealer
from responses_bridge.services.tenancy.memory_budget import COST_PER_BODY_BYTE, MemoryBudget, Reservation

pytest.importorskip("py_mini_racer")

BOUND = 128 << 20
BUFFERS = ("const kept = []; for (let i = 0; i < 20; i++) { const b = new Uint8Array(64 << 20); b.fill(1); "
           "kept.push(b); } return kept.length")
SIGN = program_signer(Sealer(b"k" * 32))


@pytest.fixture
def pool() -> Iterator[WorkerPool]:
    # never lowered: a program filling its bound must meet the bound, not its time limit, beside a full run's busy
    # processes (lowering is test_program_priority.py's)
    workers = WorkerPool(BOUND, keep=2, setting="RESPONSES_BRIDGE_PROGRAM_MEMORY_BYTES", lower_after=0)
    yield workers
    workers.close()


def _rss(pid: int) -> int:
    with open(f"/proc/{pid}/status") as status:
        line = next(line for line in status if line.startswith("VmRSS:"))
    return int(line.split()[1]) << 10


def test_typed_arrays_past_the_bound_fail_in_the_worker_and_the_bridge_holds_none(pool: WorkerPool) -> None:
    """20 filled 64 MiB buffers (1.25 GiB): in process they were all held; in a worker the bound stops them."""
    assert pool.run("return 1", [], [], seed=1, clock_ms=0, limits=Limits()).status == "completed"
    before = _rss(os.getpid())
    worker = pool._idle[0]
    peak = [0]
    done = threading.Event()

    def watch() -> None:
        while not done.is_set():
            try:
                peak[0] = max(peak[0], _rss(worker.process.pid))
            except (OSError, StopIteration):
                return
            time.sleep(0.005)

    watcher = threading.Thread(target=watch)
    watcher.start()
    try:
        run = pool.run(BUFFERS, [], [], seed=1, clock_ms=0, limits=Limits())
    finally:
        done.set()
        watcher.join()
    assert run.status == "incomplete" and run.limit == "memory", run
    assert f"memory bound ({BOUND >> 20} MiB)" in run.result
    assert peak[0] < BOUND + (160 << 20), peak[0]  # the bound, beyond V8's own ~70 MiB resident
    assert _rss(os.getpid()) - before < 32 << 20  # the bridge's own memory never held the buffers
    caught = pool.run(f"try {{ {BUFFERS} }} catch (e) {{ return 'caught ' + e.name }}", [], [], seed=1, clock_ms=0,
                      limits=Limits())
    assert caught.status == "completed" and caught.result == "caught RangeError"  # the worker goes on


def test_the_old_bounds_hold_in_a_worker(pool: WorkerPool) -> None:
    loop = pool.run("while (true) {}", [], [], seed=1, clock_ms=0, limits=Limits(timeout=1))
    assert loop.status == "incomplete" and loop.limit == "time"
    growing = pool.run("const a = []; while (true) a.push(new Array(1e6).fill(1.5));", [], [], seed=1, clock_ms=0,
                       limits=Limits(max_memory=64 << 20))
    assert growing.status == "incomplete" and growing.limit == "memory"
    at_once = pool.run("return new ArrayBuffer(2 * 1024 * 1024 * 1024).byteLength", [], [], seed=1, clock_ms=0,
                       limits=Limits())
    assert at_once.status == "incomplete" and "RangeError" in at_once.result
    suspended = pool.run("return await tools.t({a: 1})", ["t"], [], seed=1, clock_ms=0, limits=Limits())
    assert suspended.status == "suspended" and suspended.pending[0].arguments == '{"a":1}'


def until_idle(pool: WorkerPool) -> None:
    """Bounded polling (not a timing check) for an idle worker in the pool."""
    for _ in range(600):
        if pool._idle:
            return
        time.sleep(0.05)
    raise AssertionError("no idle worker")


def test_a_worker_that_ends_ends_its_program_naming_the_bound_and_is_replaced(pool: WorkerPool) -> None:
    assert pool.run("return 1", [], [], seed=1, clock_ms=0, limits=Limits()).status == "completed"
    worker = pool._idle[0]
    threading.Timer(0.5, os.kill, (worker.process.pid, signal.SIGKILL)).start()
    run = pool.run("while (true) {}", [], [], seed=1, clock_ms=0, limits=Limits(timeout=5))
    assert run.status == "incomplete" and run.limit == "memory", run
    assert "RESPONSES_BRIDGE_PROGRAM_MEMORY_BYTES" in run.result
    until_idle(pool)  # a fresh worker started in its place, off the answer's path
    fresh, started = pool._idle[0].process.pid, pool.started
    assert fresh != worker.process.pid
    assert pool.run("return 2", [], [], seed=1, clock_ms=0, limits=Limits()).result == "2"
    assert pool.started == started and pool._idle[0].process.pid == fresh  # the next program ran in it, no start


def test_a_worker_taken_back_is_replaced_off_the_answers_path(pool: WorkerPool) -> None:
    """A program taken back for another tenant has its worker killed (RunHandle.stop): the program the slot went to
    finds a fresh worker started in its place, rather than paying the start itself."""
    handle = RunHandle()
    threading.Timer(0.5, handle.stop).start()
    run = pool.run("while (true) {}", [], [], seed=1, clock_ms=0, limits=Limits(timeout=30), handle=handle)
    assert run.status == "incomplete" and run.limit == "stopped", run
    until_idle(pool)
    started = pool.started
    assert pool.run("return 3", [], [], seed=1, clock_ms=0, limits=Limits()).result == "3"
    assert pool.started == started


def _programs(state: str) -> float:
    return REGISTRY.get_sample_value(f"responses_bridge_programs_{state}") or 0.0


async def test_the_programs_holding_a_slot_and_waiting_for_one_are_gauged() -> None:
    """``responses_bridge_programs_live`` and ``…_waiting``: whether every slot is busy and how many programs queue
    behind them, each counted until its slot is given back, however it ended (here: taken back while it waited).
    The module's first programs of a host: no program of an earlier test can end during this one."""
    live, waiting = _programs("live"), _programs("waiting")
    host = ProgramHost(SIGN, ProgramBounds(slots=1, slot_wait=60, timeout=1.0))
    try:
        hog = asyncio.create_task(host.run("hog", "while (true) {}", [], [], seed=1, clock_ms=0))
        queued = asyncio.create_task(host.run("hog", "return 1", [], [], seed=1, clock_ms=0))
        for _ in range(600):  # bounded polling
            await asyncio.sleep(0.05)
            if _programs("live") == live + 1 and _programs("waiting") == waiting + 1:
                break
        assert (_programs("live") - live, _programs("waiting") - waiting) == (1, 1)
        queued.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await queued
        assert _programs("waiting") == waiting
        assert (await hog).limit == "time"
        assert (_programs("live"), _programs("waiting")) == (live, waiting)
    finally:
        host.close()


async def test_one_tenants_queue_never_holds_anothers_program_past_one_time_bound() -> None:
    """Eight endless programs of one tenant that may hold both slots: the other tenant's one-line program takes the
    first slot freed (one time bound), not a place behind the queue (four time bounds): a freed slot goes to the
    waiting tenant served least (fairness/share.py); the hog's programs end by their time bound, none taken back."""
    host = ProgramHost(SIGN, ProgramBounds(slots=2, slot_wait=60, timeout=2.0), share=lambda tenant: 2)
    try:
        await host.run("warm", "return 1", [], [], seed=1, clock_ms=0)  # a worker started before the clock runs
        hogs = [asyncio.create_task(host.run("hog", "while (true) {}", [], [], seed=1, clock_ms=0))
                for _ in range(8)]
        await asyncio.sleep(0.2)
        started = time.monotonic()
        run = await host.run("other", "return 'mine'", [], [], seed=1, clock_ms=0)
        waited = time.monotonic() - started
        assert run.result == "mine"
        assert waited < 2 * 2.0, waited  # one program's time bound (and a worker's start), not the queue's 8 s
        # the hogs that ended by now ended by their bound or were taken back; the rest, still running or queued,
        # are cancelled as a gone client's are (their three more rounds of two endless loops prove nothing more)
        ended = [hog for hog in hogs if hog.done()]
        for hog in hogs:
            if not hog.done():
                hog.cancel()
        outcomes = await asyncio.gather(*ended, return_exceptions=True)
        assert all(outcome.limit == "time" if isinstance(outcome, ProgramRun) else was_taken_back(hog)
                   for hog, outcome in zip(ended, outcomes, strict=True)), outcomes
        await asyncio.gather(*hogs, return_exceptions=True)
    finally:
        host.close()


async def test_a_program_whose_answer_is_no_longer_wanted_gives_its_slot_back_before_its_time_bound() -> None:
    """Taken back for another tenant (or its client gone), a program's request is cancelled: its worker is killed
    and the slot comes back then — it kept the slot until the program's time bound, so taking a program back freed
    nothing sooner than its end."""
    host = ProgramHost(SIGN, ProgramBounds(slots=1, slot_wait=60, timeout=300.0))
    try:
        hog = asyncio.create_task(host.run("hog", "while (true) {}", [], [], seed=1, clock_ms=0))
        for _ in range(600):  # bounded polling: its worker started and runs the program
            await asyncio.sleep(0.05)
            if host.pool.started and host.slots.busy == 1:
                break
        await asyncio.sleep(0.2)
        hog.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await hog
        for _ in range(600):  # 30 s at most: far below the program's bound of 300 s
            if host.slots.busy == 0:
                break
            await asyncio.sleep(0.05)
        assert host.slots.busy == 0
        run = await host.run("other", "return 'mine'", [], [], seed=1, clock_ms=0)
        assert (run.status, run.result) == ("completed", "mine")
    finally:
        host.close()


async def test_past_its_wait_a_tenants_excess_program_is_refused_saying_so() -> None:
    host = ProgramHost(SIGN, ProgramBounds(slots=2, slot_wait=0.3, timeout=2.0), share=lambda tenant: 1)
    try:
        hog = asyncio.create_task(host.run("hog", "while (true) {}", [], [], seed=1, clock_ms=0))
        await asyncio.sleep(0.1)
        refused = await host.run("hog", "return 1", [], [], seed=1, clock_ms=0)
        assert refused.status == "incomplete" and refused.limit == "slots"
        assert "RESPONSES_BRIDGE_PROGRAM_SLOT_WAIT" in refused.result
        await hog
    finally:
        host.close()


async def test_a_program_the_full_queue_gives_up_is_refused_at_once_saying_so() -> None:
    """Past the queue's bound (four waiting a slot), the newest program of the tenant holding and waiting the most
    is given up at once; it said before that no slot came free within the wait, which it never waited."""
    host = ProgramHost(SIGN, ProgramBounds(slots=1, slot_wait=60, timeout=2.0))
    try:
        running = [asyncio.create_task(host.run("hog", "while (true) {}", [], [], seed=1, clock_ms=0))
                   for _ in range(5)]  # one holds the slot, four wait
        for _ in range(600):  # bounded polling
            await asyncio.sleep(0.05)
            if host.slots.busy == 1 and host.slots.pool.waiting == 4:
                break
        refused = await host.run("hog", "return 1", [], [], seed=1, clock_ms=0)  # a wait of 60 s: at once, or never
        assert (refused.status, refused.limit) == ("incomplete", "slots")
        assert "queue of programs waiting for one is full" in refused.result and "within" not in refused.result
        for task in running:
            task.cancel()
        await asyncio.gather(*running, return_exceptions=True)
    finally:
        host.close()


async def test_a_running_program_holds_its_bound_in_the_memory_budget_for_its_tenant() -> None:
    budget = MemoryBudget(1 << 30, 1.0)
    seen: list[int] = []

    async def hold(tenant: str, size: int) -> Reservation:
        return await budget.reserve(-(-size // COST_PER_BODY_BYTE), holder=tenant)

    host = ProgramHost(SIGN, ProgramBounds(slots=2, memory_bytes=BOUND, timeout=1.0), hold=hold)
    try:
        running = asyncio.create_task(host.run("acme", "while (true) {}", [], [], seed=1, clock_ms=0))
        for _ in range(200):
            await asyncio.sleep(0.05)
            if budget.held_by("acme"):
                break
        seen.append(budget.held_by("acme"))
        await running
        assert seen[0] >= BOUND and budget.held_by("acme") == 0
        small = MemoryBudget(BOUND // 2, 1.0)  # no room for the bound: the program does not run

        async def no_room(tenant: str, size: int) -> Reservation:
            return await small.reserve(-(-size // COST_PER_BODY_BYTE), holder=tenant, wait=0.1)

        host.hold = no_room
        small_reserved = await small.reserve(BOUND // 2 // COST_PER_BODY_BYTE, holder="other")
        refused = await host.run("acme", "return 1", [], [], seed=1, clock_ms=0)
        small_reserved.release()
        assert refused.status == "incomplete" and refused.limit == "memory_budget", refused
        assert host.slots.busy == 0  # its slot given back: refused twice more, a program would find none
    finally:
        host.close()


def test_an_idle_worker_is_stopped_and_a_program_after_starts_another() -> None:
    workers = WorkerPool(BOUND, keep=2, idle_seconds=0.5)
    try:
        assert workers.run("return 1", [], [], seed=1, clock_ms=0, limits=Limits()).result == "1"
        process = workers._idle[0].process
        for _ in range(100):
            if process.poll() is not None:
                break
            time.sleep(0.05)
        assert process.poll() is not None and not workers._idle  # nothing idle holds memory
        assert workers.run("return 2", [], [], seed=1, clock_ms=0, limits=Limits()).result == "2"
        assert workers.started == 2
    finally:
        workers.close()


def test_past_a_burst_one_worker_stays_warm_and_the_spares_are_stopped() -> None:
    """Three programs at once leave three idle workers (~70 MiB each): the two least recently used, the spares,
    are stopped once unused for the spare time, the warm one only after the idle time, and the next program runs in
    the warm one without starting another."""
    workers = WorkerPool(BOUND, keep=3, idle_seconds=60, spare_seconds=0.3)
    try:
        done = []
        threads = [threading.Thread(target=lambda: done.append(
            workers.run("return 1", [], [], seed=1, clock_ms=0, limits=Limits()).result)) for _ in range(3)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
        assert done == ["1"] * 3 and workers.started == 3, (done, workers.started)
        processes = [worker.process for worker in workers._idle]
        warm = max(workers._idle, key=lambda worker: worker.last_used).process
        for _ in range(200):
            if sum(process.poll() is None for process in processes) == 1:
                break
            time.sleep(0.05)
        assert [process for process in processes if process.poll() is None] == [warm]
        assert [worker.process for worker in workers._idle] == [warm]
        assert workers.run("return 2", [], [], seed=1, clock_ms=0, limits=Limits()).result == "2"
        assert workers.started == 3
    finally:
        workers.close()


WIDE = 'const big = "x".repeat(1 << 18); await Promise.all([1, 2, 3, 4].map(i => tools.t({a: big + i})))'
"""Four pending calls of 256 KiB of arguments each: an answer of about 1 MiB."""


def test_an_answer_past_what_a_program_may_return_is_never_read() -> None:
    workers = WorkerPool(BOUND, keep=1, setting="RESPONSES_BRIDGE_PROGRAM_MEMORY_BYTES", answer_bytes=512 << 10)
    try:
        run = workers.run(WIDE, ["t"], [], seed=1, clock_ms=0, limits=Limits())
        assert (run.status, run.limit, run.calls) == ("incomplete", "answer", []), run
        assert "more than a program may return (0.5 MiB" in run.result and "PROGRAM_MEMORY_BYTES" in run.result
        assert workers.run("return 3", [], [], seed=1, clock_ms=0, limits=Limits()).result == "3"  # another worker
    finally:
        workers.close()


async def test_what_a_program_answered_is_held_for_its_tenant_until_let_go() -> None:
    """Its bound is given back when it ends; its answer (the calls' arguments) is held in the budget at
    ANSWER_COST per byte until the response lets it go, and a budget with no room for it ends the program
    incomplete, naming the budget, holding nothing."""
    from responses_bridge.run.programs.host import ANSWER_COST

    budget = MemoryBudget(1 << 30, 1.0)

    async def charge(tenant: str, size: int) -> Reservation:
        return await budget.charge(tenant, size)

    host = ProgramHost(SIGN, ProgramBounds(slots=1, memory_bytes=BOUND, timeout=2.0), hold=charge)
    try:
        run = await host.run("acme", WIDE, ["t"], [], seed=1, clock_ms=0)
        assert run.status == "suspended" and len(run.pending) == 4, run
        assert run.answer_bytes > 1 << 20 and budget.held_by("acme") == run.answer_bytes * ANSWER_COST
        run.release()
        run.release()
        assert budget.held == 0
        taken = MemoryBudget(2 << 20, 1.0)  # the room the bound gave back, taken by another caller meanwhile
        await taken.charge("other", 2 << 20)

        async def bound_then_none(tenant: str, size: int) -> Reservation:
            return await (budget if size == BOUND else taken).charge(tenant, size)

        host.hold = bound_then_none
        refused = await host.run("acme", WIDE, ["t"], [], seed=1, clock_ms=0)
        assert (refused.status, refused.limit, refused.calls) == ("incomplete", "memory_budget", []), refused
        assert "no room to keep what it returned" in refused.result
        assert budget.held == 0 and taken.held_by("acme") == 0
    finally:
        host.close()
