"""The memory backstop (services/tenancy/memory_watch.py): the process's real memory read every tick against watermarks;
past the high one (read again after a trim), new work of the holders is refused and the largest request held is
ended, tick after tick, until the reading is under the low one, while a holder holding nothing is still served a
small request — driven by an injected reading, and once by the process's real RSS."""

from __future__ import annotations

import asyncio

import pytest
import structlog

from responses_bridge.fairness.allocator import resident_bytes
from responses_bridge.fairness.preemption import absorb_preemption
from responses_bridge.protocol.errors import APIError
from responses_bridge.services.tenancy.memory_budget import MemoryBudget, Reservation
from responses_bridge.services.tenancy.memory_watch import MemoryWatch

MiB = 1 << 20


class Request:
    """A request of ``holder``'s holding ``size`` of the budget (and ``ballast`` bytes of real memory) until it is
    ended; ``outcome`` says how it ended."""

    def __init__(self, budget: MemoryBudget, holder: str, size: int, ballast: int = 0) -> None:
        self.outcome = "waiting"
        self.task = asyncio.create_task(self._run(budget, holder, size, ballast))

    async def _run(self, budget: MemoryBudget, holder: str, size: int, ballast: int) -> None:
        held: Reservation = await budget.charge(holder, size)
        data = bytearray(ballast)
        for at in range(0, ballast, 4096):  # touched: resident
            data[at] = 1
        self.outcome = "held"
        try:
            await asyncio.Event().wait()
        except asyncio.CancelledError:
            why = absorb_preemption()
            if why is None:
                raise
            self.outcome = f"ended:{why}"
        finally:
            del data
            held.release()


async def settle() -> None:
    for _ in range(20):
        await asyncio.sleep(0)


async def test_past_the_high_watermark_new_work_is_refused_and_the_largest_requests_end_until_the_low_one() -> None:
    budget = MemoryBudget(100 * MiB, 1.0)
    reading = [500 * MiB]
    watch = MemoryWatch(budget, source=lambda: reading[0], interval=0, trim=lambda: None)
    watch.set_watermarks(436 * MiB)  # the use at start, plus the margin (64 MiB), plus the budget
    assert (watch.high, watch.low) == (600 * MiB, 575 * MiB)
    small, large, medium = (Request(budget, "a", 1 * MiB), Request(budget, "b", 20 * MiB),
                            Request(budget, "a", 5 * MiB))
    await settle()
    assert not watch.tick() and not budget.refusing  # under the high watermark: nothing
    reading[0] = 650 * MiB  # something the budget does not know grew the process
    with structlog.testing.capture_logs() as logs:
        assert watch.tick()
        await settle()
        assert budget.refusing and large.outcome == "ended:request memory"
        # new room is refused to a holder that holds some (what is ended is not replaced), and to a large request
        # of one that holds nothing; a small one of a holder holding nothing is served (the bystander)
        for holder, size in (("a", 1024), ("c", 1 << 20)):
            with pytest.raises(APIError) as refused:
                await budget.reserve(size, holder=holder, wait=0.01)
            assert refused.value.code == "server_overloaded"
        bystander = await budget.reserve(1024, holder="c", wait=0.01)
        assert bystander.bytes
        bystander.release()
        reading[0] = 590 * MiB  # between the watermarks: still ending, the largest first
        assert watch.tick()
        await settle()
        assert medium.outcome == "ended:request memory" and small.outcome == "held"
        reading[0] = 560 * MiB
        assert not watch.tick() and not budget.refusing
    events = [entry["event"] for entry in logs]
    assert events == ["memory_high_watermark", "memory_taken_back", "memory_request_ended", "memory_returned",
                      "memory_taken_back", "memory_request_ended", "memory_below_low_watermark"], events
    assert (await budget.reserve(1024, holder="c", wait=0.01)).bytes
    small.task.cancel()
    await asyncio.gather(small.task, return_exceptions=True)


async def test_with_nothing_left_to_end_new_work_is_admitted_again() -> None:
    budget = MemoryBudget(100 * MiB)
    watch = MemoryWatch(budget, source=lambda: 900 * MiB, interval=0, trim=lambda: None)
    watch.set_watermarks(100 * MiB)
    assert not watch.tick()  # past the high watermark, but no request holds anything: not the requests' memory
    assert not budget.refusing and not watch.active


async def test_real_memory_growth_the_budget_does_not_know_is_ended() -> None:
    """A request charged 2 MiB that really holds 96 MiB: the RSS passes the watermark and that request, the largest
    charged, ends."""
    budget = MemoryBudget(64 * MiB)
    watch = MemoryWatch(budget, source=resident_bytes, interval=0, trim=lambda: None)
    watch.set_watermarks(resident_bytes())
    watch.high = resident_bytes() + 48 * MiB
    quiet = Request(budget, "a", 1 * MiB)
    await settle()
    assert not watch.tick()
    hog = Request(budget, "b", 2 * MiB, ballast=96 * MiB)
    await settle()
    assert hog.outcome == "held"
    assert watch.tick()
    await settle()
    assert hog.outcome == "ended:request memory" and quiet.outcome == "held"
    quiet.task.cancel()
    await asyncio.gather(quiet.task, return_exceptions=True)
    assert budget.held == 0


async def test_what_the_allocator_keeps_is_trimmed_before_it_is_judged() -> None:
    """A reading past the high watermark that a trim brings under it (memory ended requests freed, which the
    allocator kept) refuses nothing and ends nothing; past it after the trim too, the backstop acts."""
    budget = MemoryBudget(100 * MiB, 1.0)
    reading = [650 * MiB]
    trims: list[int] = []

    def trim() -> None:
        trims.append(reading[0])
        reading[0] = kept[0]

    kept = [500 * MiB]
    watch = MemoryWatch(budget, source=lambda: reading[0], interval=0, trim=trim)
    watch.set_watermarks(436 * MiB)
    holder = Request(budget, "a", 20 * MiB)
    await settle()
    await watch.tick_async()
    await settle()
    assert trims == [650 * MiB] and not watch.active and not budget.refusing and holder.outcome == "held"
    reading[0] = kept[0] = 650 * MiB  # held for real: the trim gives nothing back
    await watch.tick_async()
    await settle()
    assert watch.active and holder.outcome == "ended:request memory"


# --- what the backstop never ends, and when it reads again: a fake clock, fake readings ----------------------------

class Clock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


def settling_watch(budget: MemoryBudget, reading: list[int], clock: Clock, trims: list[int] | None = None
                   ) -> MemoryWatch:
    """A backstop over the readings ``reading[0]``, watermarks 600/575 MiB, waiting 5 s at most for what it ended
    to show up as returned; its trims recorded in ``trims`` (the reading then)."""
    def trim() -> None:
        if trims is not None:
            trims.append(reading[0])

    watch = MemoryWatch(budget, source=lambda: reading[0], interval=0, trim=trim, settle=5.0, clock=clock)
    watch.set_watermarks(436 * MiB)
    return watch


class SlowToStop:
    """A request of ``holder``'s charged ``size`` whose work, once ended, takes until ``gate`` is set to stop and
    give its reservation back (a turn loop unwinding, an answer still being written)."""

    def __init__(self, budget: MemoryBudget, holder: str, size: int) -> None:
        self.gate = asyncio.Event()
        self.outcome = "waiting"
        self.task = asyncio.create_task(self._run(budget, holder, size))

    async def _run(self, budget: MemoryBudget, holder: str, size: int) -> None:
        held = await budget.charge(holder, size)
        self.outcome = "held"
        try:
            await asyncio.Event().wait()
        except asyncio.CancelledError:
            self.outcome = f"ended:{absorb_preemption()}"
            await self.gate.wait()
        finally:
            held.release()


async def test_after_ending_a_request_it_waits_for_its_memory_and_never_ends_a_bystanders_small_one() -> None:
    """The issue's scene: the attacker's request is ended while the reading stays high (it is still letting go of
    what it held); the next is ended only once the last has shown what it held as returned — here not before the
    wait ran out (5 s), then once it had given its reservation back two readings ago — and the bystander's
    1,120-byte request, and the attacker's own small one, are never ended, however long the reading stays high:
    with only those left, the backstop stands down."""
    budget = MemoryBudget(100 * MiB, 1.0)
    reading, clock = [500 * MiB], Clock()
    watch = settling_watch(budget, reading, clock)
    first, second = Request(budget, "attacker", 20 * MiB), SlowToStop(budget, "attacker", 20 * MiB)
    attackers_small = Request(budget, "attacker", 2_000)
    bystander = Request(budget, "bystander", 1_120)
    await settle()
    reading[0] = 650 * MiB
    with structlog.testing.capture_logs() as logs:
        assert watch.tick()
        await settle()
        assert second.outcome == "ended:request memory" and first.outcome == "held"  # the newest among equals
        for at in (0.5, 1.0, 2.0, 4.9):  # still stopping: the reading still counts what it is letting go
            clock.now = at
            reading[0] = 645 * MiB  # fallen by a quarter of its charge: not yet returned
            assert not watch.tick()
            await settle()
            assert first.outcome == "held" and bystander.outcome == "held"
        clock.now = 5.0  # the wait ran out: the reading is load again
        assert watch.tick()
        await settle()
        assert first.outcome == "ended:request memory"  # it gave its reservation back at once
        second.gate.set()  # and the one ended before has stopped at last
        await settle()
        clock.now = 5.2
        assert not watch.tick()  # one reading since: what was let go just after may still show
        clock.now = 5.4
        assert not watch.tick()  # two: returned; nothing but small requests left, the backstop stands down
        assert not watch.active and not budget.refusing
        for at in (6.0, 12.0, 60.0):  # however long it stays past the high watermark
            clock.now = at
            assert not watch.tick()
            await settle()
    assert bystander.outcome == "held" and attackers_small.outcome == "held"
    assert watch.ended == 2
    ended = [entry for entry in logs if entry["event"] == "memory_taken_back"]
    assert [entry["holder"] for entry in ended] == ["attacker", "attacker"], ended
    returned = [(entry["returned"], entry["waited"], entry["released_readings"]) for entry in logs
                if entry["event"] == "memory_returned"]
    assert returned == [(5 * MiB, 5.0, 0), (0, 0.4, 2)], returned
    assert "memory_backstop_nothing_to_end" in [entry["event"] for entry in logs]
    for request in (bystander, attackers_small):
        request.task.cancel()
    await asyncio.gather(bystander.task, attackers_small.task, second.task, return_exceptions=True)
    assert budget.held == 0


async def test_the_next_request_is_ended_as_soon_as_the_last_ones_memory_shows_up_returned() -> None:
    """Its control: a reading fallen by half the ended request's charge is what it waits for, not the time, even
    while the request is still stopping."""
    budget = MemoryBudget(100 * MiB, 1.0)
    reading, clock = [650 * MiB], Clock()
    watch = settling_watch(budget, reading, clock)
    first, second = SlowToStop(budget, "a", 20 * MiB), Request(budget, "b", 10 * MiB)
    await settle()
    assert watch.tick()
    await settle()
    assert first.outcome == "ended:request memory"
    clock.now = 0.1
    reading[0] = 641 * MiB  # 9 MiB: under half of 20
    assert not watch.tick()
    reading[0] = 640 * MiB  # 10 MiB: half, 0.1 s after it was ended
    assert watch.tick()
    await settle()
    assert second.outcome == "ended:request memory"
    first.gate.set()
    await asyncio.gather(first.task, second.task, return_exceptions=True)
    assert budget.held == 0


async def test_what_an_ended_request_frees_is_trimmed_once_it_has_let_go_then_judged() -> None:
    """The trim's place: past the high watermark it trims, then reads; while the request it ended still holds its
    reservation (stopping) it trims nothing and ends nothing more; once it has let go, the trim comes before the
    reading that judges it — the allocator's share of what it freed is never read as load."""
    budget = MemoryBudget(100 * MiB, 1.0)
    reading, clock, trims = [650 * MiB], Clock(), []
    watch = settling_watch(budget, reading, clock, trims)
    slow, other = SlowToStop(budget, "a", 20 * MiB), Request(budget, "b", 10 * MiB)
    await settle()
    await watch.tick_async()  # a trim first (past the high watermark), then ended
    await settle()
    assert trims == [650 * MiB] and slow.outcome == "ended:request memory"
    clock.now = 1.0
    await watch.tick_async()
    await settle()
    assert trims == [650 * MiB] and other.outcome == "held"  # still stopping: neither trimmed nor judged
    slow.gate.set()
    await settle()
    watch._trim = lambda: (trims.append(reading[0]), reading.__setitem__(0, 630 * MiB))  # the trim gives it back
    clock.now = 1.5
    await watch.tick_async()
    await settle()
    assert trims == [650 * MiB, 650 * MiB]
    assert other.outcome == "ended:request memory"  # returned (20 MiB) once trimmed: the next one at that reading
    await asyncio.gather(slow.task, other.task, return_exceptions=True)
    assert budget.held == 0
