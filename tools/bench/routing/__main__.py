"""``scripts/bench routing``: Codex-like sessions through the bridge on four simulated vLLM replicas, with the
bridge's picking beside round robin, least-request and the oracle: time to first token p50/p95, throughput, cache
hit rate and each replica's share, and the targets of issue 99 checked in one run.

Each configuration (fleet.py) gets fresh processes — replicas with cold caches, an Envoy in front where it balances,
a sidecar with an empty store (HTTP door) — and the very same sessions (workload.py): ``--sessions`` concurrent
sessions opened over ``--ramp`` seconds, each ``--turns`` turns chained by ``previous_response_id`` with a shared
``--prefix-tokens`` instructions-and-tools prefix, a growing history and the tool loop answered by the client. The
replicas (tools/fakes/vllm_replica.py) prefill ``--prefill-ms`` per uncached token one prefill at a time, decode
``--decode-ms`` per token, and cache ``--capacity-blocks`` blocks of 16 tokens each, least recently used out: all
with sleeps, so the machine's cores are not what is measured. The defaults are a mid-sized model on one GPU per
replica (about 5,000 prefill tokens/s, 65 output tokens/s per sequence) serving agent sessions whose live
histories together are about three times one replica's cache — the regime a fleet is sized for, where which replica
a turn lands on decides whether its history is still there.

Reported per configuration: TTFT p50/p95 twice — at the client (to the first text or arguments delta: the
bridge's own work included, which on a machine shared with other work is tens of milliseconds of it) and at the
replicas (arrival to the prefill's end plus one decode step: what the placement decides) — turns/s over the run,
the replicas' cache hit rate (cached / prompt tokens, what ``vllm:prefix_cache_hits_total`` / ``queries_total``
say), each replica's share of the turns, the turns that moved (landed on another replica than their session's
previous turn) and the turns that failed; then the targets, on both TTFT figures: cache's TTFT p50 >= 5x and p95
>= 3x lower than round robin's, hit rate >= 90% of the oracle's, no replica over 1.25x the mean share, p50 within
1.25x of the oracle's. ``--trace DIR`` keeps every request the replicas served (replica, session, tokens cached and
not, seconds queued and prefilling), a file per configuration.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import statistics
import sys
import time
from dataclasses import asdict
from typing import Any

import aiohttp
import orjson

from .fleet import CONFIGS, Fleet, Replicas
from .workload import Outcome, Shape, run_session, sessions


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="scripts/bench routing", description=__doc__.split("\n\n")[0])
    parser.add_argument("--configs", nargs="+", choices=sorted(CONFIGS),
                        default=["cache", "round-robin", "least-request", "oracle"],
                        help="what to measure, in this order (default: cache round-robin least-request oracle; "
                        "bridge-round-robin and bridge-least-request: the bridge's own policies instead of Envoy's)")
    parser.add_argument("--sessions", type=int, default=32, help="concurrent sessions (default 32)")
    parser.add_argument("--turns", type=int, nargs=2, default=[8, 20], metavar=("MIN", "MAX"),
                        help="turns per session, drawn between (default 8 20)")
    parser.add_argument("--prefix-tokens", type=int, default=6000,
                        help="the shared instructions and tools, tokens (default 6000)")
    parser.add_argument("--ramp", type=float, default=10.0, help="seconds over which sessions start (default 10)")
    parser.add_argument("--replicas", type=int, default=4, help="replicas (default 4)")
    parser.add_argument("--prefill-ms", type=float, default=0.2, help="per uncached prompt token (default 0.2)")
    parser.add_argument("--decode-ms", type=float, default=15.0, help="per output token (default 15)")
    parser.add_argument("--max-batch", type=int, default=32, help="requests running per replica (default 32)")
    parser.add_argument("--capacity-blocks", type=int, default=8000,
                        help="each replica's prefix cache, blocks of 16 tokens (default 8000: 128k tokens)")
    parser.add_argument("--seed", type=int, default=99)
    parser.add_argument("--sidecar-env", action="append", default=[], metavar="NAME=VALUE",
                        help="a setting for the sidecar (repeatable)")
    parser.add_argument("--sidecar-arg", action="append", default=[], metavar="ARG",
                        help="an argument for serve (repeatable)")
    parser.add_argument("--json", metavar="FILE", help="also write the figures there")
    parser.add_argument("--trace", metavar="DIR", help="the replicas' trace of every request, a file per "
                        "configuration (CONFIG.jsonl: replica, session, tokens, seconds queued and prefilling)")
    return parser.parse_args(argv)


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    if not ordered:
        return float("nan")
    return ordered[min(len(ordered) - 1, round(q * (len(ordered) - 1)))]


async def measure(name: str, args: argparse.Namespace, shape: Shape, replicas: Replicas) -> dict[str, Any]:
    """One configuration: its fleet, every session, the figures."""
    env = dict(item.split("=", 1) for item in args.sidecar_env)
    async with Fleet(CONFIGS[name], replicas, env, args.sidecar_arg) as fleet:
        outcomes: list[Outcome] = []
        timeout = aiohttp.ClientTimeout(total=600)
        connector = aiohttp.TCPConnector(limit=0)
        started = time.monotonic()
        async with aiohttp.ClientSession(timeout=timeout, connector=connector) as http:
            await asyncio.gather(*(run_session(http, fleet.responses_url, shape, session, outcomes)
                                   for session in sessions(shape)))
        wall = time.monotonic() - started
        stats = await fleet.replica_stats()
    ttfts = [outcome.ttft for outcome in outcomes if outcome.ttft is not None and outcome.error is None]
    errors = [outcome.error for outcome in outcomes if outcome.error is not None]
    at_replicas = [value for stat in stats for value in stat.pop("first_token_s")]
    requests = sum(stat["requests"] for stat in stats)
    prompt = sum(stat["prompt_tokens"] for stat in stats)
    shares = [stat["requests"] / requests if requests else 0.0 for stat in stats]
    return {"config": name, "described": CONFIGS[name].describe(), "turns": len(outcomes) - len(errors),
            "errors": len(errors), "first_errors": errors[:3], "wall_s": round(wall, 2),
            "ttft_p50_s": percentile(ttfts, 0.50), "ttft_p95_s": percentile(ttfts, 0.95),
            "ttft_mean_s": statistics.fmean(ttfts) if ttfts else float("nan"),
            "replica_ttft_p50_s": percentile(at_replicas, 0.50), "replica_ttft_p95_s": percentile(at_replicas, 0.95),
            "turns_per_s": (len(outcomes) - len(errors)) / wall,
            "hit_rate": sum(stat["cached_tokens"] for stat in stats) / prompt if prompt else 0.0,
            "shares": shares, "max_share_over_mean": max(shares) * len(shares) if requests else float("nan"),
            "prefilled_tokens": sum(stat["prefilled_tokens"] for stat in stats),
            "moved": sum(stat["moved"] for stat in stats),
            "moved_prefilled_tokens": sum(stat["moved_prefilled_tokens"] for stat in stats),
            "evicted_blocks": sum(stat["evicted_blocks"] for stat in stats), "replicas": stats,
            "client_turns": [[outcome.session, outcome.ttft, outcome.seconds, outcome.error] for outcome in outcomes]}


def targets(results: dict[str, dict[str, Any]]) -> list[tuple[str, float, str, bool]]:
    """The issue's targets that these results can say: (what, value, bound, met). Times to first token twice: at
    the client (the bridge's own work included, on whatever else the machine runs) and at the replicas (queue,
    prefill and one decode step: what the placement decides)."""
    found: list[tuple[str, float, str, bool]] = []
    cache = results.get("cache")
    if cache is None:
        return found
    for where, key in (("client", "ttft"), ("replicas", "replica_ttft")):
        for baseline in ("round-robin", "bridge-round-robin"):
            if baseline in results:
                rr = results[baseline]
                p50 = rr[f"{key}_p50_s"] / cache[f"{key}_p50_s"]
                p95 = rr[f"{key}_p95_s"] / cache[f"{key}_p95_s"]
                found += [(f"TTFT p50 at the {where}, {baseline} / cache", p50, ">= 5", p50 >= 5),
                          (f"TTFT p95 at the {where}, {baseline} / cache", p95, ">= 3", p95 >= 3)]
        if "oracle" in results:
            near = cache[f"{key}_p50_s"] / results["oracle"][f"{key}_p50_s"]
            found.append((f"TTFT p50 at the {where}, cache / oracle", near, "<= 1.25", near <= 1.25))
    if "oracle" in results:
        hits = cache["hit_rate"] / results["oracle"]["hit_rate"]
        found.append(("hit rate, cache / oracle", hits, ">= 0.90", hits >= 0.90))
    found.append(("busiest replica's share / mean, cache", cache["max_share_over_mean"], "<= 1.25",
                  cache["max_share_over_mean"] <= 1.25))
    return found


def report(args: argparse.Namespace, shape: Shape, replicas: Replicas, results: dict[str, dict[str, Any]]) -> str:
    lines = [f"workload: {shape.sessions} sessions over {shape.ramp_seconds:g} s, {shape.turns[0]}-{shape.turns[1]} "
             f"turns each (previous_response_id, streamed, HTTP door), shared prefix {shape.prefix_tokens} tokens, "
             f"user {shape.user_tokens[0]}-{shape.user_tokens[1]}, tool outputs {shape.output_tokens[0]}-"
             f"{shape.output_tokens[1]}, answers {shape.answer_tokens[0]}-{shape.answer_tokens[1]} tokens; "
             f"0-3 function calls per task answered by the client",
             f"replicas: {replicas.count}, prefill {replicas.prefill_ms:g} ms/uncached token (one at a time), "
             f"decode {replicas.decode_ms:g} ms/token, batch {replicas.max_batch}, cache "
             f"{replicas.capacity_blocks} blocks x 16 tokens, LRU", ""]
    lines.append(f"{'':<21} {'TTFT at client':^15} {'at replicas':^15}")
    header = f"{'config':<21} {'p50 s':>7} {'p95 s':>7} {'p50 s':>7} {'p95 s':>7} {'turns/s':>8} {'hit %':>6} " \
             f"{'max/mean':>8}  {'shares %':<16} {'moved':>5} {'errors':>6}"
    lines.append(header)
    for name, result in results.items():
        shares = " ".join(f"{share * 100:.0f}" for share in result["shares"])
        lines.append(f"{name:<21} {result['ttft_p50_s']:>7.3f} {result['ttft_p95_s']:>7.3f} "
                     f"{result['replica_ttft_p50_s']:>7.3f} {result['replica_ttft_p95_s']:>7.3f} "
                     f"{result['turns_per_s']:>8.2f} {result['hit_rate'] * 100:>6.1f} "
                     f"{result['max_share_over_mean']:>8.2f}  {shares:<16} {result['moved']:>5} "
                     f"{result['errors']:>6}")
    lines += ["", "TTFT at client: to the first text or arguments delta, the bridge's work included; at replicas: "
              "arrival to the prefill's end plus one decode step (the placement alone)",
              "moved: turns that landed on another replica than their session's previous turn (a chain moved: "
              "its history prefilled again there)"]
    lines += [f"  {name}: {result['described']}" for name, result in results.items()]
    for name, result in results.items():
        if result["first_errors"]:
            lines.append(f"  {name} errors, first: {result['first_errors']}")
    checked = targets(results)
    if checked:
        lines += ["", "targets (issue 99):"]
        lines += [f"  {'met ' if met else 'MISS'} {what}: {value:.2f} ({bound})" for what, value, bound, met in checked]
    return "\n".join(lines)


async def run(args: argparse.Namespace) -> int:
    shape = Shape(sessions=args.sessions, turns=(args.turns[0], args.turns[1]), prefix_tokens=args.prefix_tokens,
                  ramp_seconds=args.ramp, seed=args.seed)
    replicas = Replicas(count=args.replicas, prefill_ms=args.prefill_ms, decode_ms=args.decode_ms,
                        max_batch=args.max_batch, capacity_blocks=args.capacity_blocks,
                        trace_dir=os.path.abspath(args.trace) if args.trace else None)
    if args.trace:
        os.makedirs(args.trace, exist_ok=True)
    results: dict[str, dict[str, Any]] = {}
    for name in args.configs:
        print(f"{name}: running ...", file=sys.stderr, flush=True)
        results[name] = await measure(name, args, shape, replicas)
        print(f"{name}: {results[name]['turns']} turns in {results[name]['wall_s']} s, "
              f"p50 {results[name]['ttft_p50_s']:.3f} s", file=sys.stderr, flush=True)
    print(report(args, shape, replicas, results))
    if args.json:
        with open(args.json, "wb") as file:
            file.write(orjson.dumps({"shape": asdict(shape), "replicas": asdict(replicas), "results": results,
                                     "targets": targets(results)}, option=orjson.OPT_INDENT_2))
    return 0 if all(result["errors"] == 0 for result in results.values()) else 1


def main(argv: list[str] | None = None) -> int:
    return asyncio.run(run(parse_args(argv)))


if __name__ == "__main__":
    sys.exit(main())
