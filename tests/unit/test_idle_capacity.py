"""Batch lines on idle capacity only (fairness/idle_capacity.py), with fake pools and lines: a line starts only
while no interactive request is in flight beyond the reserve and nobody waits in a pool, a line in flight is never
stopped for an interactive request, an idle gate runs lines up to its concurrency, and places go to the tenant
with the fewest lines running, then its batches in turn. The interactive count itself is the tenants' limits'
(services/tenancy/limits.py): every request's slot raises it while held."""

from __future__ import annotations

import asyncio
from dataclasses import dataclass

import pytest

from responses_bridge.config.settings import Settings
from responses_bridge.fairness.idle_capacity import Activity, IdleCapacity
from responses_bridge.fairness.slots import FairSlots
from responses_bridge.services.tenancy.limits import TenantLimits

pytestmark = pytest.mark.store_free


@dataclass
class FakePool:
    capacity: int = 16
    held: int = 0
    waiting: int = 0
    reserve: int = 8


class Lines:
    """Lines run through a gate: each holds its place until the test lets it end; the order they started in."""

    def __init__(self, gate: IdleCapacity) -> None:
        self.gate = gate
        self.started: list[str] = []
        self.release: dict[str, asyncio.Event] = {}
        self.tasks: dict[str, asyncio.Task[None]] = {}

    def add(self, name: str, tenant: str = "t", batch: str = "batch_1") -> asyncio.Task[None]:
        done = self.release[name] = asyncio.Event()

        async def line() -> None:
            async with self.gate.line_slot(tenant, batch):
                self.started.append(name)
                await done.wait()

        task = self.tasks[name] = asyncio.create_task(line())
        return task

    def end(self, name: str) -> None:
        self.release[name].set()


async def settle() -> None:
    """Every task made runnable so far has run (a few loop turns: no wall-clock wait)."""
    for _ in range(5):
        await asyncio.sleep(0)


def gate_of(activity: Activity | None = None, pools: list[FakePool] | None = None, *, concurrency: int = 2,
            reserve: int = 1, recheck: float = 0.01, quiet: float = 0.0) -> IdleCapacity:
    """A gate over fakes; ``quiet`` 0: the bridge counts as idle as soon as no interactive request is in flight
    (the quiet window has tests of its own)."""
    watched = pools if pools is not None else [FakePool()]
    return IdleCapacity(activity or Activity(), lambda: watched, concurrency=concurrency, reserve=reserve,
                        recheck=recheck, quiet=quiet)


async def test_an_idle_gate_runs_lines_up_to_its_concurrency_and_the_next_when_one_ends() -> None:
    gate = gate_of(concurrency=3)
    lines = Lines(gate)
    for name in "abcde":
        lines.add(name)
    await settle()
    assert lines.started == ["a", "b", "c"]  # work-conserving: nothing but the concurrency holds them back
    assert (gate.running, gate.waiting, gate.blocked()) == (3, 2, "concurrency")
    lines.end("b")
    await settle()
    assert lines.started == ["a", "b", "c", "d"]
    for name in "acde":
        lines.end(name)
    await asyncio.gather(*lines.tasks.values())
    assert (gate.running, gate.waiting, gate.started) == (0, 0, 5)


async def test_interactive_work_holds_new_lines_back_and_never_stops_one_in_flight() -> None:
    activity = Activity()
    gate = gate_of(activity, concurrency=4)
    lines = Lines(gate)
    lines.add("running")
    await settle()
    activity.enter()  # an interactive request arrives while a line runs
    lines.add("next")
    await settle()
    assert lines.started == ["running"] and gate.blocked() == "interactive"
    assert not lines.tasks["running"].done()  # the line in flight goes on: it is never thrown away
    lines.end("running")
    await lines.tasks["running"]
    assert lines.started == ["running"]  # its end does not let the next one past the interactive request
    activity.leave()  # the request ends: the next line starts at once, no poll
    await settle()
    assert lines.started == ["running", "next"]
    assert activity.listener is None  # nothing waits on the count any more: requests pay nothing
    lines.end("next")
    await lines.tasks["next"]


async def test_a_reserve_lets_lines_start_beside_fewer_interactive_requests() -> None:
    activity = Activity()
    gate = gate_of(activity, concurrency=4, reserve=3)
    lines = Lines(gate)
    activity.enter()
    activity.enter()
    lines.add("a")
    await settle()
    assert lines.started == ["a"]  # two in flight, below a reserve of three
    activity.enter()
    lines.add("b")
    await settle()
    assert lines.started == ["a"] and gate.blocked() == "interactive"
    activity.leave()
    await settle()
    assert lines.started == ["a", "b"]
    for name in "ab":
        lines.end(name)
    await asyncio.gather(*lines.tasks.values())


async def test_beside_recent_interactive_work_one_line_runs_at_a_time_until_it_has_been_quiet() -> None:
    activity = Activity()
    gate = gate_of(activity, concurrency=4, quiet=3600)  # never quiet within the test
    lines = Lines(gate)
    activity.enter()
    activity.leave()  # a request came and went: the bridge is not idle yet
    for name in "abc":
        lines.add(name)
    await settle()
    assert lines.started == ["a"] and gate.blocked() == "recent"  # in the gap, one line, not the concurrency
    lines.end("a")
    await settle()
    assert lines.started == ["a", "b"]  # the batch goes on, a line at a time
    activity.enter()
    lines.end("b")
    await settle()
    assert lines.started == ["a", "b"] and gate.blocked() == "interactive"  # none at all while one is in flight
    activity.leave()
    await settle()
    assert lines.started == ["a", "b", "c"]
    lines.end("c")
    await asyncio.gather(*lines.tasks.values())

    quick = gate_of(activity, concurrency=3, quiet=0.05)  # the quiet passes: the full concurrency again
    activity.enter()
    activity.leave()
    lines = Lines(quick)
    for name in "xyz":
        lines.add(name)
    await settle()
    assert lines.started == ["x"]
    async with asyncio.timeout(30):  # no line ends: the gate looks again by itself once the quiet may have passed
        while len(lines.started) < 3:
            await asyncio.sleep(0.01)
    for name in "xyz":
        lines.end(name)
    await asyncio.gather(*lines.tasks.values())


@pytest.mark.parametrize("busy", ["waiting", "headroom"])
async def test_a_pool_waited_for_or_at_its_headroom_holds_new_lines_back_until_it_clears(busy: str) -> None:
    upstream, memory = FakePool(), FakePool(capacity=1000, reserve=125)
    gate = gate_of(pools=[upstream, memory], concurrency=4)
    if busy == "waiting":
        memory.waiting = 1  # an interactive request waits for room: no line takes any before it
    else:
        upstream.held = upstream.capacity - upstream.reserve  # only the headroom is free: kept for arrivals
    lines = Lines(gate)
    lines.add("a")
    await settle()
    assert lines.started == [] and gate.blocked() == "pool" and gate.waiting == 1
    memory.waiting, upstream.held = 0, 0
    async with asyncio.timeout(30):  # the gate looks at the pools again while lines wait (they have no hook)
        while not lines.started:
            await asyncio.sleep(0.005)
    lines.end("a")
    await lines.tasks["a"]


async def test_a_real_pool_with_a_waiting_tenant_holds_lines_back() -> None:
    """The gate reads share.py's pools as they are: a waiter there is an interactive request held up."""
    slots = FairSlots(4, lambda tenant: 4, what="upstream connections")
    gate = IdleCapacity(Activity(), lambda: [slots.pool], concurrency=4, recheck=0.01, quiet=0)
    for _ in range(4):
        assert slots.try_acquire("busy")
    waiter = asyncio.create_task(slots.acquire("other", None))
    await settle()
    assert slots.pool.waiting == 1 and gate.blocked() == "pool"
    slots.release("busy")
    assert await waiter
    for _ in range(2):
        slots.release("busy")
    assert gate.blocked() == "pool"  # nobody waits, but only the headroom (half of a unit pool) is free
    slots.release("other")
    assert gate.blocked() is None  # room above it: a line may take one


async def test_a_tenant_with_a_long_batch_does_not_starve_another_with_a_short_one() -> None:
    gate = gate_of(concurrency=1)
    lines = Lines(gate)
    lines.add("big-0", tenant="big", batch="batch_big")
    await settle()
    for at in range(1, 50):
        lines.add(f"big-{at}", tenant="big", batch="batch_big")
    await settle()
    for at in range(3):
        lines.add(f"small-{at}", tenant="small", batch="batch_small")
    await settle()
    for _ in range(8):  # one line at a time, each ended in turn
        lines.end(lines.started[-1])
        await settle()
    # after big-0, the tenants alternate: the short batch's three lines are done within its first seven starts
    assert lines.started[:8] == ["big-0", "big-1", "small-0", "big-2", "small-1", "big-3", "small-2", "big-4"]
    for task in lines.tasks.values():
        task.cancel()
    await asyncio.gather(*lines.tasks.values(), return_exceptions=True)
    assert (gate.running, gate.waiting) == (0, 0)


async def test_the_tenant_running_fewest_lines_goes_first_and_its_batches_take_turns() -> None:
    gate = gate_of(concurrency=3)
    lines = Lines(gate)
    for at in range(2):
        lines.add(f"a-{at}", tenant="a", batch="batch_a1")
    await settle()
    assert lines.started == ["a-0", "a-1"]
    for at in range(3):  # tenant a: a second batch beside its first
        lines.add(f"a1-{at}", tenant="a", batch="batch_a1")
        lines.add(f"a2-{at}", tenant="a", batch="batch_a2")
    lines.add("b-0", tenant="b", batch="batch_b")
    await settle()
    assert lines.started[2] == "a1-0"  # the third place was free as a's lines came
    lines.end("a-0")
    await settle()
    assert lines.started[3] == "b-0"  # b runs none, a three: b first, though a waited longer
    lines.end("a-1")
    lines.end("a1-0")
    await settle()
    assert lines.started[4:6] == ["a2-0", "a1-1"]  # a's batches in turn
    for task in lines.tasks.values():
        task.cancel()
    await asyncio.gather(*lines.tasks.values(), return_exceptions=True)
    assert (gate.running, gate.waiting) == (0, 0)


async def test_a_line_that_stops_waiting_leaves_the_queue_and_nothing_stays_held() -> None:
    activity = Activity()
    gate = gate_of(activity, concurrency=2)
    activity.enter()
    lines = Lines(gate)
    lines.add("a")
    lines.add("b", batch="batch_2")
    await settle()
    assert gate.waiting == 2
    lines.tasks["a"].cancel()  # its batch cancelled: the waiting line goes
    await asyncio.gather(lines.tasks["a"], return_exceptions=True)
    assert (gate.waiting, gate.running) == (1, 0)
    activity.leave()
    await settle()
    assert lines.started == ["b"]
    # a line given its place in the same turn as it is cancelled gives the place back
    lines.add("c")
    lines.add("d")
    await settle()
    assert lines.started == ["b", "c"] and gate.waiting == 1
    lines.end("c")
    await asyncio.sleep(0)  # c's exit runs first and hands d its place...
    lines.tasks["d"].cancel()  # ...which d, cancelled before it ran, gives back
    await asyncio.gather(lines.tasks["c"], lines.tasks["d"], return_exceptions=True)
    lines.end("b")
    await lines.tasks["b"]
    assert (gate.running, gate.waiting, gate._tenants) == (0, 0, {})
    assert activity.listener is None


async def test_every_request_slot_counts_as_interactive_until_released() -> None:
    limits = TenantLimits(Settings(tenants={"capped": {"max_concurrent_requests": 2}}))
    activity = limits.activity
    free, capped = limits.acquire("anyone"), limits.acquire("capped")
    assert activity.count == 2 and activity.entered == 2  # a tenant with no limit counts as well as one with
    line = limits.acquire("capped", interactive=False)  # a Batch API request: a tenant slot, not interactive work
    assert activity.count == 2 and limits.in_flight("capped") == 2
    line.release()
    free.release()
    free.release()  # idempotent: counted down once
    assert activity.count == 1
    capped.release()
    assert activity.count == 0
    # a background run keeps its request counted until it ends, whatever the request's own end
    done: asyncio.Future[None] = asyncio.get_running_loop().create_future()
    held = limits.acquire("anyone")
    held.hold_until(done)
    held.release()
    assert activity.count == 1
    done.set_result(None)
    await settle()
    assert activity.count == 0
    # a WebSocket connection between its turns: its slot held, not counted as work in flight
    connection = limits.acquire("anyone")
    connection.quiet()
    assert activity.count == 0 and limits.in_flight("anyone") == 0
    connection.release()
    assert activity.count == 0
