"""``scripts/bench fairness``: what a hostile caller's idle bodies cost another caller and the probes, as ratios
(``--tenants``: what 2, 4 and 8 greedy tenants cost another, base against this checkout: many.py;
``--turns``: a victim's every call beside more greedy tenants than a unit pool's units: turns.py;
``--goodput``: the work 16 greedy tenants get done beside a victim's call, and the rule's bookkeeping CPU per
release at 8, 1,024 and 10,000 holders: goodput.py).

Starts the fake upstream and a sidecar (``auth: none``: callers told apart by their key) with a memory budget of
``--budget`` bytes (1 GiB: a 2 GiB pod's default), optionally behind a real Envoy (``--envoy``). Then, in one run:

1. alone: small ``POST /v1/responses`` of the victim (key ``sk-victim``), one after another, each followed by a
   ``GET /health/ready``;
2. under attack: the attacker (key ``sk-attacker``) keeps ``--attack`` connections open that each declare a
   64 MiB body and send one byte (a connection answered or closed is opened again), and the victim's requests and
   the probes are sent again;

in ``--rounds`` turns (``--requests`` of each in all), so that the machine's own noise falls on both.

It prints the victim's p95 latency under attack over its p95 alone, its 503s, the probe's p95 under attack over
alone, and what the attack's connections were answered. ``--sidecar-src DIR`` runs the sidecar from another
checkout's ``src`` (say, the main branch's) for a before/after comparison on the same machine and run.
Nothing here asserts a bound; the tests assert behaviour (tests/integration/test_memory_fairness.py).
"""

from __future__ import annotations

import argparse
import asyncio
import collections
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import aiohttp

from responses_bridge.demo.procs import ManagedProcess, free_port, wait_http

DECLARED = 64 * 1024 * 1024


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="scripts/bench fairness", description=__doc__.split("\n\n")[0])
    parser.add_argument("--budget", type=int, default=1 << 30, help="the sidecar's memory budget, bytes")
    parser.add_argument("--attack", type=int, default=8, help="idle connections the attacker keeps open")
    parser.add_argument("--requests", type=int, default=300,
                        help="victim requests (and as many probes) alone, and as many under attack")
    parser.add_argument("--rounds", type=int, default=3,
                        help="turns of alone then under attack the requests are spread over")
    parser.add_argument("--envoy", action="store_true",
                        help="through a real Envoy: the attack on /v1/containers (streamed to the HTTP door), the "
                        "victim on /v1/responses (the ext_proc door)")
    parser.add_argument("--sidecar-src", metavar="DIR", help="run the sidecar from this checkout's src directory")
    parser.add_argument("--sidecar-env", action="append", default=[], metavar="NAME=VALUE",
                        help="an environment variable for the sidecar (repeatable)")
    parser.add_argument("--tenants", action="store_true",
                        help="the many-tenant preemption case instead (many.py): a victim tenant alone "
                        "and beside --attackers greedy tenants (auth: keys), each holding --streams stalled streams "
                        "of the --pool they exhaust")
    parser.add_argument("--attackers", type=int, nargs="+", default=[2, 4, 8],
                        help="with --tenants: greedy tenant counts")
    parser.add_argument("--pool", choices=["upstream", "memory"], default="upstream",
                        help="with --tenants: what the greedy tenants' stalled streams hold: upstream connections "
                        "(16) or the memory budget (1 MiB)")
    parser.add_argument("--streams", type=int, default=10, help="with --tenants: each greedy tenant's streams")
    parser.add_argument("--settle", type=float, default=4.0,
                        help="with --tenants: seconds the greedy tenants have to take what they may before the victim")
    parser.add_argument("--base-src", metavar="DIR",
                        help="with --tenants or --turns: also run a sidecar from this checkout's src, side by side")
    parser.add_argument("--turns", action="store_true",
                        help="the time-shared case instead (turns.py): a victim tenant's every call alone "
                        "and beside --greedy tenants (more than the units) on the sandbox and program slots, arriving "
                        "together and one after another, each as a ratio to 2 x its p95 alone + 1 s")
    parser.add_argument("--logs", metavar="DIR", help="with --turns: keep each sidecar's log there")
    parser.add_argument("--sidecar-log-level", default="error", help="with --turns: the sidecars' --log-level")
    parser.add_argument("--greedy", type=int, default=16, help="with --turns: greedy tenants")
    parser.add_argument("--calls", type=int, default=10, help="with --turns: the victim's calls in each case")
    parser.add_argument("--pools", nargs="+", choices=["sandbox", "program"], default=["sandbox", "program"],
                        help="with --turns: the unit pools")
    parser.add_argument("--arrivals", nargs="+", choices=["together", "one-after-another"],
                        default=["together", "one-after-another"], help="with --turns: how the greedy tenants come")
    parser.add_argument("--goodput", action="store_true",
                        help="the goodput case instead (goodput.py): --greedy tenants x 3 loops of --call "
                        "s calls on --places upstream connections for --window s beside a victim's call, and the "
                        "bookkeeping's CPU per release (base and this, with --base-src)")
    parser.add_argument("--places", type=int, default=4, help="with --goodput: upstream connections")
    parser.add_argument("--call", type=float, default=2.5, help="with --goodput: seconds of each call")
    parser.add_argument("--window", type=float, default=20.0, help="with --goodput: seconds of each round")
    parser.add_argument("--quantum", type=float, default=0.5, help="with --goodput: the sidecars' fair_share_quantum")
    parser.add_argument("--no-goodput", action="store_true", help="with --goodput: the bookkeeping part only")
    return parser.parse_args(argv)


def p95(samples: list[float]) -> float:
    return statistics.quantiles(samples, n=20)[-1] if len(samples) >= 2 else (samples[0] if samples else 0.0)


async def timed(session: aiohttp.ClientSession, method: str, url: str, **kwargs: Any) -> tuple[int, float]:
    started = time.perf_counter()
    async with session.request(method, url, **kwargs) as response:
        await response.read()
        return response.status, time.perf_counter() - started


class Samples:
    """One condition's figures, pooled over the rounds."""

    def __init__(self) -> None:
        self.latencies: list[float] = []
        self.probes: list[float] = []
        self.statuses: collections.Counter[int] = collections.Counter()

    def summary(self) -> dict[str, Any]:
        return {"p95": p95(self.latencies), "probe_p95": p95(self.probes),
                "probe_max": max(self.probes, default=0.0), "statuses": dict(self.statuses)}


async def phase(session: aiohttp.ClientSession, victim_url: str, ready_url: str, requests: int,
                samples: Samples) -> None:
    body = {"model": "fake-model", "input": "hello"}
    for _ in range(requests):
        status, seconds = await timed(session, "POST", victim_url, json=body,
                                      headers={"Authorization": "Bearer sk-victim"})
        samples.statuses[status] += 1
        if status == 200:
            samples.latencies.append(seconds)
        _, seconds = await timed(session, "GET", ready_url)
        samples.probes.append(seconds)


async def idle_body(host: str, port: int, path: str, answers: collections.Counter[str]) -> None:
    """One attacking connection, held until it is answered or closed."""
    try:
        reader, writer = await asyncio.open_connection(host, port)
    except OSError:
        answers["refused"] += 1
        await asyncio.sleep(0.1)
        return
    try:
        writer.write((f"POST {path} HTTP/1.1\r\nHost: {host}:{port}\r\nAuthorization: Bearer sk-attacker\r\n"
                      f"Content-Type: application/json\r\nContent-Length: {DECLARED}\r\n\r\n{{").encode())
        await writer.drain()
        line = await reader.readline()
        answers[line.split()[1].decode() if len(line.split()) > 1 else "closed"] += 1
        await reader.read()  # to its close
    except (OSError, asyncio.IncompleteReadError):
        answers["reset"] += 1
    finally:
        writer.close()


async def attack(host: str, port: int, path: str, connections: int, answers: collections.Counter[str]) -> None:
    async def keep_one() -> None:
        while True:
            await idle_body(host, port, path, answers)

    await asyncio.gather(*(keep_one() for _ in range(connections)))


async def measure(args: argparse.Namespace) -> dict[str, Any]:
    with tempfile.TemporaryDirectory(prefix="rb-fairness-") as tmp:
        upstream_port, http_port, extproc_port = free_port(), free_port(), free_port()
        upstream_url = f"http://127.0.0.1:{upstream_port}/v1"
        env = {"RESPONSES_BRIDGE_MEMORY_BUDGET_BYTES": str(args.budget)}
        env.update(item.split("=", 1) for item in args.sidecar_env)
        if args.sidecar_src:
            env["PYTHONPATH"] = args.sidecar_src
        upstream = ManagedProcess([sys.executable, "-m", "responses_bridge", "fake-upstream", "--port",
                                   str(upstream_port)], "fake-upstream")
        listen_port = free_port()
        via = ["--upstream-via", f"http://127.0.0.1:{listen_port}/v1"] if args.envoy else ["--no-extproc"]
        sidecar = ManagedProcess([sys.executable, "-m", "responses_bridge", "serve", "--upstream", upstream_url,
                                  "--http-port", str(http_port), "--extproc-port", str(extproc_port),
                                  "--db", os.path.join(tmp, "bench.db"), "--log-level", "error", *via],
                                 "sidecar", env=env)
        processes = [upstream, sidecar]
        try:
            for process in processes:
                process.start()
            await wait_http(f"http://127.0.0.1:{upstream_port}/health", process=upstream)
            await wait_http(f"http://127.0.0.1:{http_port}/health", process=sidecar)
            front, attack_path = http_port, "/v1/responses"
            if args.envoy:
                processes.append(await _start_envoy(tmp, listen_port, http_port, extproc_port, upstream_url))
                front, attack_path = listen_port, "/v1/containers"
            victim_url = f"http://127.0.0.1:{front}/v1/responses"
            ready_url = f"http://127.0.0.1:{http_port}/health/ready"
            timeout = aiohttp.ClientTimeout(total=120)
            alone, under = Samples(), Samples()
            answers: collections.Counter[str] = collections.Counter()
            per_round = max(1, args.requests // args.rounds)
            async with aiohttp.ClientSession(timeout=timeout) as session:
                await phase(session, victim_url, ready_url, 5, Samples())  # warm up
                for _ in range(args.rounds):  # alone and under attack in turns: the machine's noise falls on both
                    await phase(session, victim_url, ready_url, per_round, alone)
                    attacking = asyncio.create_task(attack("127.0.0.1", front, attack_path, args.attack, answers))
                    await asyncio.sleep(1.0)  # the attack's connections are open and hold what they hold
                    await phase(session, victim_url, ready_url, per_round, under)
                    attacking.cancel()
                    await asyncio.gather(attacking, return_exceptions=True)
            one, other = alone.summary(), under.summary()
            return {"alone": one, "under_attack": other, "attack_answers": dict(answers),
                    "victim_p95_ratio": other["p95"] / one["p95"] if one["p95"] and other["p95"] else None,
                    "probe_p95_ratio": other["probe_p95"] / one["probe_p95"] if one["probe_p95"] else None}
        finally:
            for process in reversed(processes):
                process.stop()


async def _start_envoy(tmp: str, listen_port: int, http_port: int, extproc_port: int,
                       upstream_url: str) -> ManagedProcess:
    from responses_bridge.demo.procs import envoy_binary
    from responses_bridge.envoy_config import render_bootstrap

    path = os.path.join(tmp, "envoy.yaml")
    await asyncio.to_thread(Path(path).write_text, render_bootstrap(
        listen_port=listen_port, extproc_port=extproc_port, http_port=http_port, upstream=upstream_url,
        admin_port=free_port()))
    envoy = ManagedProcess([envoy_binary(), "-c", path, "--base-id", str(os.getpid() % 60000),
                            "--log-level", "error"], "envoy")
    envoy.start()
    await wait_http(f"http://127.0.0.1:{listen_port}/health", process=envoy)
    return envoy


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    if args.tenants:
        from .many import main as many

        return many(args)
    if args.turns:
        from .turns import main as turns

        return turns(args)
    if args.goodput:
        from .goodput import main as goodput

        return goodput(args)
    if args.sidecar_src:
        args.sidecar_src = os.path.abspath(args.sidecar_src)
    result = asyncio.run(measure(args))
    alone, under = result["alone"], result["under_attack"]
    refused = sum(count for status, count in under["statuses"].items() if status != 200)
    print(f"victim p95: alone {alone['p95'] * 1000:.1f} ms, under attack "
          + (f"{under['p95'] * 1000:.1f} ms (ratio {result['victim_p95_ratio']:.2f})" if under["p95"]
             else "no request served"))
    print(f"victim answers under attack: {under['statuses']} ({refused} not served)")
    print(f"/health/ready p95: alone {alone['probe_p95'] * 1000:.1f} ms, under attack "
          f"{under['probe_p95'] * 1000:.1f} ms (ratio {result['probe_p95_ratio']:.2f}; "
          f"max {under['probe_max'] * 1000:.1f} ms)")
    print(f"the attack's connections were answered: {result['attack_answers'] or 'never (all still held)'}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
