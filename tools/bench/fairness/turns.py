"""``scripts/bench fairness --turns``: a victim tenant's every call alone and beside more greedy tenants than a unit
pool has units (16 by default), arriving together and one after another, on the sandbox slots (8) and the program
slots (4) — the case the quantum's time-sharing was for (fairness/share.py now shares by attained service and takes
nothing back: with sandbox calls that never end, the victim waits for their time limit) — for a base revision and
this checkout.

Each sidecar runs with ``auth: header`` (tenants told apart by ``x-tenant-id``), ``RESPONSES_BRIDGE_CODE_CONCURRENCY=8``
and ``RESPONSES_BRIDGE_PROGRAM_SLOTS=4``, as tests/integration/test_fair_pools.py. Each greedy tenant keeps calls
running that never end by themselves (four ``time.sleep(600)`` sandbox calls; three ``while (true) {}`` programs),
each posted again as soon as it ended; once they fill the pool the victim makes ``--calls`` calls one after another
(``print(n)``; a program returning a string), each timed end to end (a program answered ``503
preempted_for_fairness`` is retried once, as a client honours the retryable 503, and its time counts both).

It prints, per pool, tree and arrival, each call's time as a ratio to the done-when's limit (2 x the victim's p95
alone + 1 s), and the p95 over the limit. Both trees' sidecars run at once over one fake upstream; the cases are
dealt in turn (each tree, each arrival, ``--rounds`` times). Nothing here asserts a bound; the suite asserts
behaviour (tests/integration/test_fair_pools.py, tests/unit/test_fair_service.py).
"""

from __future__ import annotations

import asyncio
import base64
import collections
import contextlib
import os
import statistics
import sys
import tempfile
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from typing import Any

import aiohttp
import orjson

from responses_bridge.demo.procs import ManagedProcess, free_port, wait_http

ENV = {"RESPONSES_BRIDGE_AUTH": "header", "RESPONSES_BRIDGE_CODE_CONCURRENCY": "8",
       "RESPONSES_BRIDGE_CODE_TIMEOUT": "60", "RESPONSES_BRIDGE_PROGRAM_SLOTS": "4",
       "RESPONSES_BRIDGE_PROGRAM_MEMORY_BYTES": str(64 << 20)}
SANDBOX = {"type": "code_interpreter", "container": {"type": "auto"}}
PROGRAMS = [{"type": "programmatic_tool_calling"}]
WORKERS = {"sandbox": 4, "program": 3}
Case = tuple[str, str, str]  # pool, tree, arrival ("alone", "together", "one-after-another")


def _code(code: str) -> dict[str, Any]:
    encoded = base64.b64encode(orjson.dumps({"code": code})).decode()
    return {"input": f"call python [args64={encoded}]", "tools": [SANDBOX],
            "include": ["code_interpreter_call.outputs"]}


def greedy_body(pool: str) -> dict[str, Any]:
    if pool == "sandbox":
        return _code("import time\ntime.sleep(600)")
    return {"input": "js: while (true) {}", "tools": PROGRAMS, "store": False}


def victim_body(pool: str, at: int) -> dict[str, Any]:
    if pool == "sandbox":
        return _code(f"print({at})")
    return {"input": f"js: return 'mine {at}'", "tools": PROGRAMS, "store": False}


def answered(pool: str, at: int, status: int, answer: dict[str, Any]) -> bool:
    for item in answer.get("output") or () if status == 200 else ():
        if pool == "sandbox" and item["type"] == "code_interpreter_call":
            logs = "".join(out.get("logs", "") for out in item.get("outputs") or () if out["type"] == "logs")
            return bool(item.get("status") == "completed" and logs.strip() == str(at))
        if pool == "program" and item["type"] == "program_output":
            return bool(item.get("status") == "completed" and item.get("result") == f"mine {at}")
    return False


@dataclass
class Tree:
    label: str
    src: str | None
    port: int = 0
    calls: dict[Case, list[list[float]]] = field(default_factory=lambda: collections.defaultdict(list))
    failed: collections.Counter[Case] = field(default_factory=collections.Counter)
    retried: collections.Counter[Case] = field(default_factory=collections.Counter)


async def post(session: aiohttp.ClientSession, port: int, tenant: str, body: dict[str, Any]) -> tuple[int, Any]:
    async with session.post(f"http://127.0.0.1:{port}/v1/responses", json={"model": "fake-model", **body},
                            headers={"x-tenant-id": tenant}) as reply:
        return reply.status, await reply.json(content_type=None)


async def sandboxes_live(session: aiohttp.ClientSession, port: int) -> float:
    async with session.get(f"http://127.0.0.1:{port}/metrics") as reply:
        text = await reply.text()
    return sum(float(line.rsplit(" ", 1)[1]) for line in text.splitlines()
               if line.startswith("responses_bridge_sandboxes_live"))


async def _greedy_loop(session: aiohttp.ClientSession, port: int, tenant: str, body: dict[str, Any]) -> None:
    while True:
        with contextlib.suppress(aiohttp.ClientError, TimeoutError, ValueError):
            status, answer = await post(session, port, tenant, body)
            if status == 200 and "queue" in orjson.dumps(answer).decode():  # refused by the full queue: a pause
                await asyncio.sleep(0.5)


@contextlib.asynccontextmanager
async def greedy(session: aiohttp.ClientSession, port: int, pool: str, count: int,
                 together: bool) -> AsyncIterator[None]:
    tasks = []
    try:
        for at in range(count):
            tasks += [asyncio.create_task(_greedy_loop(session, port, f"greedy{at}", greedy_body(pool)))
                      for _ in range(WORKERS[pool])]
            if not together:
                await asyncio.sleep(0.5)
        if pool == "sandbox":
            for _ in range(600):  # until every slot is a greedy tenant's (bounded)
                if await sandboxes_live(session, port) >= 8:
                    break
                await asyncio.sleep(0.1)
        else:
            await asyncio.sleep(1.0)  # their programs hold the slots and queue (as the suite's test)
        yield
    finally:
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        for _ in range(300):  # what they held given back before the next case
            if pool != "sandbox" or not await sandboxes_live(session, port):
                break
            await asyncio.sleep(0.1)
        await asyncio.sleep(1.0 if pool == "sandbox" else 3.0)


async def victim(session: aiohttp.ClientSession, tree: Tree, case: Case, calls: int) -> None:
    pool = case[0]
    times = []
    for at in range(calls):
        started = time.perf_counter()
        for attempt in range(2):
            status, answer = await post(session, tree.port, "victim", victim_body(pool, at))
            code = (answer.get("error") or {}).get("code") if isinstance(answer, dict) else None
            if not (status == 503 and code == "preempted_for_fairness" and attempt == 0):
                break
            tree.retried[case] += 1
        times.append(time.perf_counter() - started)
        if not answered(pool, at, status, answer):
            tree.failed[case] += 1
    tree.calls[case].append(times)


async def run(args: Any) -> list[Tree]:
    trees = [Tree("base", args.base_src)] if args.base_src else []
    trees.append(Tree("this", None))
    with tempfile.TemporaryDirectory(prefix="rb-fair-turns-") as tmp:
        upstream_port = free_port()
        processes = [ManagedProcess([sys.executable, "-m", "responses_bridge", "fake-upstream", "--port",
                                     str(upstream_port)], "fake-upstream")]
        try:
            processes[0].start()
            await wait_http(f"http://127.0.0.1:{upstream_port}/health", process=processes[0])
            for tree in trees:
                tree.port = free_port()
                env = {**ENV, **dict(item.split("=", 1) for item in args.sidecar_env)}
                if tree.src:
                    env["PYTHONPATH"] = tree.src
                sidecar = ManagedProcess([
                    sys.executable, "-m", "responses_bridge", "serve", "--upstream",
                    f"http://127.0.0.1:{upstream_port}/v1", "--http-port", str(tree.port), "--extproc-port",
                    str(free_port()), "--db", os.path.join(tmp, f"{tree.label}.db"), "--no-extproc",
                    "--log-level", args.sidecar_log_level], f"sidecar-{tree.label}", env=env,
                    log_file=os.path.join(args.logs, f"sidecar-{tree.label}.log") if args.logs else None)
                processes.append(sidecar)
                sidecar.start()
                await wait_http(f"http://127.0.0.1:{tree.port}/health", process=sidecar,
                                headers={"x-tenant-id": "victim"})
            async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=300)) as session:
                for _ in range(args.rounds):
                    for pool in args.pools:
                        for tree in trees:
                            await victim(session, tree, (pool, tree.label, "warm-up"), 2)
                            await victim(session, tree, (pool, tree.label, "alone"), args.calls)
                            for arrival in args.arrivals:
                                async with greedy(session, tree.port, pool, args.greedy, arrival == "together"):
                                    await victim(session, tree, (pool, tree.label, arrival), args.calls)
            return trees
        finally:
            for process in reversed(processes):
                process.stop()


def p95(samples: list[float]) -> float:
    return statistics.quantiles(samples, n=20)[-1] if len(samples) >= 2 else (samples[0] if samples else 0.0)


def report(trees: list[Tree], args: Any) -> None:
    print(f"victim: {args.calls} calls beside {args.greedy} greedy tenants; each call / limit (2 x p95 alone + 1 s)")
    for pool in args.pools:
        for tree in trees:
            alone = p95([one for calls in tree.calls[(pool, tree.label, "alone")] for one in calls])
            limit = 2 * alone + 1
            print(f"[{tree.label}] {pool}: alone p95 {alone * 1000:.0f} ms, limit {limit:.2f} s")
            for arrival in ("alone", *args.arrivals):
                case = (pool, tree.label, arrival)
                for calls in tree.calls[case]:
                    ratios = " ".join(f"{one / limit:.2f}" for one in calls)
                    print(f"  {arrival:>17}: {ratios}   p95/limit {p95(calls) / limit:.2f}")
                if tree.failed[case] or tree.retried[case]:
                    print(f"  {arrival:>17}: {tree.failed[case]} not answered, {tree.retried[case]} retried")


def main(args: Any) -> int:
    if args.base_src:
        args.base_src = os.path.abspath(args.base_src)
    report(asyncio.run(run(args)), args)
    return 0
