"""``scripts/bench-fairness --tenants``: a victim's answers alone and beside 2 and 3 attacking tenants, as ratios,
for a base revision and this checkout in one run.

The attack of issue 56: each attacking tenant (``auth: none``, told apart by its key) keeps one legal request of
``--hold-mib`` MiB (18: 512 MiB of a 1 GiB budget, a whole share) in flight whose answer the fake upstream stalls;
refused, it sends it again a second later. The victim sends small requests one after another. Both sidecars (the
base's from ``--base-src``, a checkout's ``src``; and this one's) run at once over one fake upstream, and the
conditions are dealt in turn (alone, 2 attackers, 3 attackers; each tree in turn; ``--rounds`` times), so that the
machine's own noise falls on all of them.

It prints, per tree: the victim's p95 alone, its p95 under k attackers over that (the ratio), and how many of its
requests were answered and refused (503). Nothing here asserts a bound; tests/integration/test_memory_fairness_many.py
asserts the behaviour.
"""

from __future__ import annotations

import asyncio
import collections
import os
import statistics
import sys
import tempfile
import time
from dataclasses import dataclass, field
from typing import Any

import aiohttp
import orjson

from ..procs import ManagedProcess, free_port, wait_http


@dataclass
class Tree:
    """One sidecar under test and what its victim saw, by the number of attackers."""

    label: str
    src: str | None
    port: int = 0
    latencies: dict[int, list[float]] = field(default_factory=lambda: collections.defaultdict(list))
    statuses: dict[int, collections.Counter[int]] = field(
        default_factory=lambda: collections.defaultdict(collections.Counter))


def p95(samples: list[float]) -> float:
    return statistics.quantiles(samples, n=20)[-1] if len(samples) >= 2 else (samples[0] if samples else 0.0)


async def victim(session: aiohttp.ClientSession, tree: Tree, attackers: int, requests: int) -> None:
    url = f"http://127.0.0.1:{tree.port}/v1/responses"
    for at in range(requests):
        started = time.perf_counter()
        async with session.post(url, json={"model": "fake-model", "input": f"victim {at}"},
                                headers={"Authorization": "Bearer sk-victim"}) as response:
            await response.read()
        tree.statuses[attackers][response.status] += 1
        if response.status == 200:
            tree.latencies[attackers].append(time.perf_counter() - started)


async def attacker(session: aiohttp.ClientSession, port: int, key: str, body: bytes) -> None:
    """One tenant keeping one slow legal request in flight, sent again when it is refused."""
    url = f"http://127.0.0.1:{port}/v1/responses"
    while True:
        try:
            async with session.post(url, data=body, headers={"Authorization": f"Bearer {key}",
                                                             "Content-Type": "application/json"}) as response:
                await response.read()  # a stalled stream: held until the bench ends the attack
        except aiohttp.ClientError:
            pass
        await asyncio.sleep(1.0)


async def run_trees(args: Any) -> list[Tree]:
    trees = [Tree("base", args.base_src)] if args.base_src else []
    trees.append(Tree("this", None))
    body = orjson.dumps({"model": "fake-model", "stream": True,
                         "input": "hold [stall_after=1:600000] " + "x" * (args.hold_mib << 20)})
    with tempfile.TemporaryDirectory(prefix="rb-fairness-many-") as tmp:
        upstream_port = free_port()
        upstream = ManagedProcess([sys.executable, "-m", "responses_bridge", "fake-upstream", "--port",
                                   str(upstream_port)], "fake-upstream")
        processes = [upstream]
        try:
            upstream.start()
            await wait_http(f"http://127.0.0.1:{upstream_port}/health", process=upstream)
            for tree in trees:
                tree.port = free_port()
                env = {"RESPONSES_BRIDGE_MEMORY_BUDGET_BYTES": str(args.budget)}
                env.update(item.split("=", 1) for item in args.sidecar_env)
                if tree.src:
                    env["PYTHONPATH"] = tree.src
                sidecar = ManagedProcess([
                    sys.executable, "-m", "responses_bridge", "serve", "--upstream",
                    f"http://127.0.0.1:{upstream_port}/v1", "--http-port", str(tree.port), "--extproc-port",
                    str(free_port()), "--db", os.path.join(tmp, f"{tree.label}.db"), "--log-level", "error",
                    "--no-extproc"], f"sidecar-{tree.label}", env=env)
                processes.append(sidecar)
                sidecar.start()
                await wait_http(f"http://127.0.0.1:{tree.port}/health", process=sidecar)
            per_round = max(1, args.requests // args.rounds)
            async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=120)) as session:
                for tree in trees:
                    await victim(session, tree, -1, 5)  # warm up
                for _ in range(args.rounds):
                    for count in (0, *args.attackers):
                        for tree in trees:
                            attacks = [asyncio.create_task(attacker(session, tree.port, f"sk-attacker-{at}", body))
                                       for at in range(count)]
                            if attacks:
                                await asyncio.sleep(args.settle)  # the attackers hold what they may
                            await victim(session, tree, count, per_round)
                            for attack in attacks:
                                attack.cancel()
                            await asyncio.gather(*attacks, return_exceptions=True)
                            if attacks:
                                await asyncio.sleep(1.0)  # their streams closed, their budget given back
            return trees
        finally:
            for process in reversed(processes):
                process.stop()


def report(trees: list[Tree], attackers: list[int]) -> None:
    for tree in trees:
        alone = p95(tree.latencies[0])
        print(f"[{tree.label}] victim p95 alone {alone * 1000:.1f} ms, answered {tree.statuses[0][200]}"
              f"/{sum(tree.statuses[0].values())}")
        for count in attackers:
            under = p95(tree.latencies[count])
            ratio = f"{under / alone:.2f}x" if alone and under else "no request served"
            statuses = tree.statuses[count]
            print(f"[{tree.label}] {count} attackers: victim p95 {ratio} of alone, answered {statuses[200]}"
                  f"/{sum(statuses.values())}, 503: {statuses[503]}")


def main(args: Any) -> int:
    if args.base_src:
        args.base_src = os.path.abspath(args.base_src)
    trees = asyncio.run(run_trees(args))
    report(trees, args.attackers)
    return 0
