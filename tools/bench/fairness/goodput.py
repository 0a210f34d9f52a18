"""``scripts/bench fairness --goodput``: what the shared pools' rule (fairness/share.py) gets done, and what it costs to
keep, for a base revision (``--base-src``) and this checkout in one run.

1. **Goodput beside the victim's latency.** Each tree's sidecar (``auth: keys``, the upstream connections at
   ``--places``, ``RESPONSES_BRIDGE_FAIR_SHARE_QUANTUM`` at ``--quantum``) serves ``--greedy`` tenants × 3 loops of
   non-streamed calls the fake upstream answers after ``--call`` seconds, for ``--window`` seconds; a second in, a
   victim tenant makes one call as long. Printed per tree: the greedy tenants' completed calls per second and the
   unit-seconds of completed work per second (goodput), the calls ended ``preempted_for_fairness`` (work thrown
   away), and the victim's outcome and latency. The trees take turns (``--rounds``), so the machine's noise falls
   on both.
2. **Bookkeeping CPU per release**, in-process (a micro-bench of ``FairPool`` itself, in a subprocess per tree):
   a unit pool with N holders (N units, all held) and min(N, 1,024) tenants waiting, one waiter each; each release
   gives one unit back, which goes to a waiter, which asks again — so the queue stays full. CPU (``process_time``)
   of the ``give`` calls only, per release, for N = 8, 1,024 and 10,000; and the uncontended admit + release (room
   free, nobody waiting) per pair.

Nothing here asserts a bound; tests/integration/test_fair_by_service.py asserts the behaviour.
"""

from __future__ import annotations

import asyncio
import collections
import json
import os
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from typing import Any

import aiohttp

from responses_bridge.demo.procs import ManagedProcess, free_port, wait_http

from .many import make_keys

BOOKKEEPING = r'''
import asyncio, collections, json, sys, time
from responses_bridge.fairness.share import FairPool

async def releases(holders, waiting, count):
    pool = FairPool(holders, lambda tenant: holders, what="bench", queue=waiting + 16, units=True)
    held = collections.deque()
    for at in range(holders):
        assert pool.try_take(f"h{at}", 1)
        held.append(f"h{at}")

    async def waiter(tenant):
        while True:
            await pool.take(tenant, 1, 1e9)
            held.append(tenant)

    tasks = [asyncio.create_task(waiter(f"w{at}")) for at in range(waiting)]
    for _ in range(3):
        await asyncio.sleep(0)
    spent = 0.0
    for _ in range(count):
        tenant = held.popleft()
        began = time.process_time()
        pool.give(tenant, 1)
        spent += time.process_time() - began
        await asyncio.sleep(0)
        await asyncio.sleep(0)
    for task in tasks:
        task.cancel()
    await asyncio.gather(*tasks, return_exceptions=True)
    return spent / count

def uncontended(count):
    pool = FairPool(64, lambda tenant: 32, what="bench", queue=64, units=True)
    names = [f"t{at % 8}" for at in range(count)]
    began = time.process_time()
    for name in names:
        pool.try_take(name, 1)
        pool.give(name, 1)
    return (time.process_time() - began) / count

async def main():
    found = {}
    for holders in (8, 1024, 10000):
        found[str(holders)] = await releases(holders, min(holders, 1024), 2000 if holders < 10000 else 500)
    found["uncontended"] = min(uncontended(200000) for _ in range(3))
    print(json.dumps(found))

asyncio.run(main())
'''


@dataclass
class Tree:
    label: str
    src: str | None
    port: int = 0
    keys: dict[str, str] = field(default_factory=dict)
    done: list[int] = field(default_factory=list)  # greedy calls completed, per round
    preempted: list[int] = field(default_factory=list)
    victim: list[tuple[str, float]] = field(default_factory=list)
    bookkeeping: list[dict[str, float]] = field(default_factory=list)


async def _call(session: aiohttp.ClientSession, tree: Tree, tenant: str, call: float) -> str:
    body = {"model": "fake-model", "input": f"[stall={int(call * 1000)}] work"}
    try:
        async with session.post(f"http://127.0.0.1:{tree.port}/v1/responses", json=body,
                                headers={"Authorization": f"Bearer {tree.keys[tenant]}"}) as reply:
            answer = await reply.json(content_type=None)
    except aiohttp.ClientError:
        return "error"
    if reply.status == 200:
        return str(answer.get("status"))
    return str((answer.get("error") or {}).get("code"))


async def _round(session: aiohttp.ClientSession, tree: Tree, args: Any) -> None:
    outcomes: collections.Counter[str] = collections.Counter()
    stop = time.monotonic() + args.window

    async def loop(tenant: str) -> None:
        while time.monotonic() < stop:
            ended = await _call(session, tree, tenant, args.call)
            if time.monotonic() <= stop:
                outcomes[ended] += 1
            if ended != "completed":
                await asyncio.sleep(0.2)

    loops = [asyncio.create_task(loop(f"greedy{at}")) for at in range(args.greedy) for _ in range(3)]
    await asyncio.sleep(1.0)
    began = time.perf_counter()
    ended = await _call(session, tree, "victim", args.call)
    tree.victim.append((ended, time.perf_counter() - began))
    await asyncio.sleep(max(0.0, stop - time.monotonic()))
    for task in loops:
        task.cancel()
    await asyncio.gather(*loops, return_exceptions=True)
    tree.done.append(outcomes["completed"])
    tree.preempted.append(outcomes["preempted_for_fairness"])
    await asyncio.sleep(args.call + 0.5)  # the calls cut at the window's end given back


def _bookkeeping(tree: Tree) -> dict[str, float]:
    env = {**os.environ}
    if tree.src:
        env["PYTHONPATH"] = tree.src
    ran = subprocess.run([sys.executable, "-c", BOOKKEEPING], capture_output=True, text=True, timeout=600,
                         check=False, env=env)
    if ran.returncode != 0:
        raise SystemExit(f"[{tree.label}] bookkeeping bench failed: {ran.stderr.strip()}")
    found: dict[str, float] = json.loads(ran.stdout.strip().splitlines()[-1])
    return found


async def _run(args: Any, trees: list[Tree]) -> None:
    with tempfile.TemporaryDirectory(prefix="rb-goodput-") as tmp:
        upstream_port = free_port()
        upstream = ManagedProcess([sys.executable, "-m", "responses_bridge", "fake-upstream", "--port",
                                   str(upstream_port)], "fake-upstream")
        processes = [upstream]
        try:
            upstream.start()
            await wait_http(f"http://127.0.0.1:{upstream_port}/health", process=upstream)
            tenants = ["victim", *(f"greedy{at}" for at in range(args.greedy))]
            for tree in trees:
                tree.port = free_port()
                env = {"RESPONSES_BRIDGE_AUTH": "keys", "RESPONSES_BRIDGE_UPSTREAM_MAX_CONNECTIONS": str(args.places),
                       "RESPONSES_BRIDGE_UPSTREAM_CONNECT_TIMEOUT": str(args.window),
                       "RESPONSES_BRIDGE_FAIR_SHARE_QUANTUM": str(args.quantum)}
                if tree.src:
                    env["PYTHONPATH"] = tree.src
                db = os.path.join(tmp, f"{tree.label}.db")
                await asyncio.to_thread(make_keys, tree, db, tenants, env)  # type: ignore[arg-type]
                sidecar = ManagedProcess([
                    sys.executable, "-m", "responses_bridge", "serve", "--upstream",
                    f"http://127.0.0.1:{upstream_port}/v1", "--http-port", str(tree.port), "--extproc-port",
                    str(free_port()), "--db", db, "--log-level", "error", "--no-extproc"], f"sidecar-{tree.label}",
                    env=env)
                processes.append(sidecar)
                sidecar.start()
                await wait_http(f"http://127.0.0.1:{tree.port}/health", process=sidecar,
                                headers={"Authorization": f"Bearer {tree.keys['victim']}"})
            async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=args.window + 60)) as session:
                for _ in range(args.rounds):
                    for tree in trees:
                        await _round(session, tree, args)
        finally:
            for process in reversed(processes):
                process.stop()


def _report(trees: list[Tree], args: Any) -> None:
    if not args.no_goodput:
        _report_goodput(trees, args)
    _report_bookkeeping(trees)


def _report_goodput(trees: list[Tree], args: Any) -> None:
    print(f"goodput: {args.greedy} greedy tenants x 3 loops of {args.call:g} s calls on {args.places} upstream "
          f"connections for {args.window:g} s, quantum {args.quantum:g} s; {args.rounds} round(s) per tree")
    for tree in trees:
        calls = sum(tree.done) / (args.window * len(tree.done))
        victims = ", ".join(f"{ended} in {seconds:.2f} s" for ended, seconds in tree.victim)
        print(f"[{tree.label}] completed {calls:.2f} calls/s ({calls * args.call:.2f} unit-s of work per s, "
              f"{calls * args.call / args.places:.0%} of the pool); taken back {sum(tree.preempted)}; "
              f"victim: {victims}")
    done = [sum(tree.done) for tree in trees]
    if len(trees) == 2 and done[0]:
        print(f"goodput this/base: {done[1] / done[0]:.2f}")


def _report_bookkeeping(trees: list[Tree]) -> None:
    print("bookkeeping CPU per release (min of rounds), N holders with min(N, 1024) waiting:")
    for tree in trees:
        best = {key: min(found[key] for found in tree.bookkeeping) for key in tree.bookkeeping[0]}
        print(f"[{tree.label}] " + ", ".join(f"N={key}: {best[key] * 1e6:.2f} us" for key in ("8", "1024", "10000"))
              + f"; uncontended admit+release {best['uncontended'] * 1e6:.3f} us")
    if len(trees) == 2:
        base, this = ({key: min(found[key] for found in tree.bookkeeping) for key in tree.bookkeeping[0]}
                      for tree in trees)
        print("ratios this/base: " + ", ".join(f"{key}: {this[key] / base[key]:.3f}" for key in base))


def main(args: Any) -> int:
    trees = [Tree("base", os.path.abspath(args.base_src))] if args.base_src else []
    trees.append(Tree("this", None))
    for _ in range(args.rounds):
        for tree in trees:
            tree.bookkeeping.append(_bookkeeping(tree))
    if not args.no_goodput:
        asyncio.run(_run(args, trees))
    _report(trees, args)
    return 0
