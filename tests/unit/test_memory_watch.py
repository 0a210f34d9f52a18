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
    assert events == ["memory_high_watermark", "memory_taken_back", "memory_request_ended", "memory_taken_back",
                      "memory_request_ended", "memory_below_low_watermark"], events
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
