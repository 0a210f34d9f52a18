"""``scripts/bench fairness --tenants``: a victim tenant's answers alone and beside k greedy tenants (2, 4, 8), as
ratios, for a base revision and this checkout in one run — the preemption case of fairness/share.py.

Each sidecar runs with per-tenant keys (``auth: keys``, made with ``responses-bridge keys create`` of its own tree)
for the victim and every greedy tenant. Each greedy tenant keeps ``--streams`` streamed requests open whose answers
the fake upstream stalls after their first chunk; one that ends (refused, or taken back) is sent again half a second
later. ``--pool`` says what they exhaust:

* ``upstream``: the upstream connections (``RESPONSES_BRIDGE_UPSTREAM_MAX_CONNECTIONS=16``; a tenant alone holds 8);
* ``memory``: the memory budget (``RESPONSES_BRIDGE_MEMORY_BUDGET_BYTES`` of 1 MiB, requests of about 2 KB, ~60 KiB
  of it each).

The victim sends small requests one after another. Both sidecars (the base's from ``--base-src``, another
checkout's ``src``; and this one's) run at once over one fake upstream, and the conditions are dealt in turn (alone,
then each k; each tree in turn; ``--rounds`` times), so that the machine's own noise falls on all of them.

It prints, per tree and k: how many of the victim's requests completed and how many were answered 503, and its p95
under attack over its p95 alone. Nothing here asserts a bound; tests/integration/test_fair_preemption.py asserts the
behaviour.
"""

from __future__ import annotations

import asyncio
import collections
import os
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from typing import Any

import aiohttp
import orjson

from responses_bridge.demo.procs import ManagedProcess, free_port, wait_http

PAD = "x" * 1800  # a request of about 2 KB: ~60 KiB of the memory budget
POOLS = {"upstream": {"RESPONSES_BRIDGE_UPSTREAM_MAX_CONNECTIONS": "16",
                      "RESPONSES_BRIDGE_UPSTREAM_CONNECT_TIMEOUT": "3"},
         "memory": {"RESPONSES_BRIDGE_MEMORY_BUDGET_BYTES": str(1 << 20)}}


@dataclass
class Tree:
    """One sidecar under test, its tenants' keys, and what its victim saw by the number of greedy tenants."""

    label: str
    src: str | None
    port: int = 0
    keys: dict[str, str] = field(default_factory=dict)
    latencies: dict[int, list[float]] = field(default_factory=lambda: collections.defaultdict(list))
    outcomes: dict[int, collections.Counter[str]] = field(
        default_factory=lambda: collections.defaultdict(collections.Counter))


def p95(samples: list[float]) -> float:
    return statistics.quantiles(samples, n=20)[-1] if len(samples) >= 2 else (samples[0] if samples else 0.0)


def make_keys(tree: Tree, db: str, tenants: list[str], env: dict[str, str]) -> None:
    """A key per tenant, made by the tree's own CLI on its database."""
    for tenant in tenants:
        made = subprocess.run([sys.executable, "-m", "responses_bridge", "keys", "create", "--tenant", tenant,
                               "--db", db], capture_output=True, text=True, timeout=60, check=False,
                              env={**os.environ, "RESPONSES_BRIDGE_DB": "", **env})
        if made.returncode != 0:
            raise SystemExit(f"[{tree.label}] keys create failed: {made.stderr.strip()}")
        tree.keys[tenant] = made.stdout.strip()


async def victim(session: aiohttp.ClientSession, tree: Tree, greedy: int, requests: int) -> None:
    url = f"http://127.0.0.1:{tree.port}/v1/responses"
    for at in range(requests):
        started = time.perf_counter()
        async with session.post(url, json={"model": "fake-model", "input": f"victim {at} {PAD}"},
                                headers={"Authorization": f"Bearer {tree.keys['victim']}"}) as response:
            body = await response.read()
        elapsed = time.perf_counter() - started
        if response.status == 200 and orjson.loads(body).get("status") == "completed":
            tree.outcomes[greedy]["completed"] += 1
            tree.latencies[greedy].append(elapsed)
        else:
            tree.outcomes[greedy][str(response.status)] += 1


async def greedy_stream(session: aiohttp.ClientSession, port: int, key: str, at: int) -> None:
    """One of a greedy tenant's streams, held while the fake upstream stalls it; sent again once it ends."""
    url = f"http://127.0.0.1:{port}/v1/responses"
    body = orjson.dumps({"model": "fake-model", "stream": True, "input": f"hold {at} [stall_after=1:600000] {PAD}"})
    while True:
        try:
            async with session.post(url, data=body, headers={"Authorization": f"Bearer {key}",
                                                             "Content-Type": "application/json"}) as response:
                await response.read()  # a stalled stream: held until taken back or the bench ends the attack
        except aiohttp.ClientError:
            pass
        await asyncio.sleep(0.5)


async def start_trees(args: Any, trees: list[Tree], tmp: str, upstream_port: int,
                      processes: list[ManagedProcess]) -> None:
    tenants = ["victim", *(f"greedy{at}" for at in range(max(args.attackers)))]
    for tree in trees:
        tree.port = free_port()
        env = {"RESPONSES_BRIDGE_AUTH": "keys", **POOLS[args.pool]}
        env.update(item.split("=", 1) for item in args.sidecar_env)
        if tree.src:
            env["PYTHONPATH"] = tree.src
        db = os.path.join(tmp, f"{tree.label}.db")
        await asyncio.to_thread(make_keys, tree, db, tenants, env)
        sidecar = ManagedProcess([
            sys.executable, "-m", "responses_bridge", "serve", "--upstream", f"http://127.0.0.1:{upstream_port}/v1",
            "--http-port", str(tree.port), "--extproc-port", str(free_port()), "--db", db, "--log-level", "error",
            "--no-extproc"], f"sidecar-{tree.label}", env=env)
        processes.append(sidecar)
        sidecar.start()
        await wait_http(f"http://127.0.0.1:{tree.port}/health", process=sidecar,
                        headers={"Authorization": f"Bearer {tree.keys['victim']}"})


async def run_trees(args: Any) -> list[Tree]:
    trees = [Tree("base", args.base_src)] if args.base_src else []
    trees.append(Tree("this", None))
    with tempfile.TemporaryDirectory(prefix="rb-fairness-many-") as tmp:
        upstream_port = free_port()
        upstream = ManagedProcess([sys.executable, "-m", "responses_bridge", "fake-upstream", "--port",
                                   str(upstream_port)], "fake-upstream")
        processes = [upstream]
        try:
            upstream.start()
            await wait_http(f"http://127.0.0.1:{upstream_port}/health", process=upstream)
            await start_trees(args, trees, tmp, upstream_port, processes)
            per_round = max(1, args.requests // args.rounds)
            async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=120)) as session:
                for tree in trees:
                    await victim(session, tree, -1, 5)  # warm up
                for _ in range(args.rounds):
                    for count in (0, *args.attackers):
                        for tree in trees:
                            attacks = [asyncio.create_task(greedy_stream(session, tree.port,
                                                                         tree.keys[f"greedy{at}"], stream))
                                       for at in range(count) for stream in range(args.streams)]
                            if attacks:
                                await asyncio.sleep(args.settle)  # the greedy tenants hold what they may
                            await victim(session, tree, count, per_round)
                            for attack in attacks:
                                attack.cancel()
                            await asyncio.gather(*attacks, return_exceptions=True)
                            if attacks:
                                await asyncio.sleep(1.0)  # their streams closed, what they held given back
            return trees
        finally:
            for process in reversed(processes):
                process.stop()


def report(trees: list[Tree], attackers: list[int], pool: str) -> None:
    print(f"pool: {pool}")
    for tree in trees:
        alone = p95(tree.latencies[0])
        outcomes = tree.outcomes[0]
        print(f"[{tree.label}] alone: victim completed {outcomes['completed']}/{sum(outcomes.values())}, "
              f"p95 {alone * 1000:.1f} ms")
        for count in attackers:
            under = p95(tree.latencies[count])
            ratio = f"{under / alone:.2f}x" if alone and under else "no request completed"
            outcomes = tree.outcomes[count]
            print(f"[{tree.label}] {count} greedy tenants: victim completed {outcomes['completed']}"
                  f"/{sum(outcomes.values())}, 503: {outcomes['503']}, p95 {ratio} of alone")


def main(args: Any) -> int:
    if args.base_src:
        args.base_src = os.path.abspath(args.base_src)
    trees = asyncio.run(run_trees(args))
    report(trees, args.attackers, args.pool)
    return 0
