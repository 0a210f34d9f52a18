"""``responses-bridge bench``: what the bridge adds over calling the upstream directly, measured in one run.

Every server runs in its own process (the fake upstream, the sidecar, Envoy when asked), and the load generator
in this one, so no measurement shares an event loop with what it measures. Requests to the compared targets are
interleaved one by one, so a slow patch of the shared machine hits every target alike, and the figures that
matter are the differences and ratios within one run, not the absolute numbers.

Targets:
- ``direct``: Chat Completions straight to the upstream;
- ``http``: ``/v1/responses`` through the sidecar's HTTP door;
- ``envoy-direct``: Chat Completions through Envoy to the upstream, no processor (with ``--envoy``);
- ``envoy``: ``/v1/responses`` through Envoy with the ext_proc processor (with ``--envoy``).
"""

from __future__ import annotations

import argparse
import asyncio
import os
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import aiohttp
import orjson

from ..procs import ManagedProcess, free_port, wait_http


def add_parser(commands: argparse._SubParsersAction) -> None:
    parser = commands.add_parser("bench", help="measure the latency the bridge adds over the upstream")
    parser.add_argument("--requests", type=int, default=200, help="sequential requests per target and kind")
    parser.add_argument("--chunks", type=int, default=100, help="content chunks per streamed answer")
    parser.add_argument("--concurrency", type=int, default=32)
    parser.add_argument("--throughput-requests", type=int, default=2000,
                        help="non-stream requests per target in the concurrency test")
    parser.add_argument("--envoy", action="store_true", help="also measure through Envoy (ext_proc vs direct)")
    parser.add_argument("--replay", metavar="FILE",
                        help="instead of the synthetic requests, replay this recorded /v1/responses body (and its "
                        "Chat Completions translation for the direct targets); latency only")
    parser.add_argument("--json", action="store_true", help="print the results as JSON")
    parser.set_defaults(func=run)


@dataclass
class Target:
    name: str
    url: str
    responses_api: bool
    samples: dict[str, list[float]] = field(default_factory=dict)


def run(args: argparse.Namespace) -> int:
    results = asyncio.run(bench(args))
    if args.json:
        print(orjson.dumps(results, option=orjson.OPT_INDENT_2).decode())
    else:
        print_report(results)
    return 0


async def bench(args: argparse.Namespace) -> dict:
    with tempfile.TemporaryDirectory(prefix="rb-bench-") as tmp:
        upstream_port, http_port, extproc_port = free_port(), free_port(), free_port()
        upstream = ManagedProcess([sys.executable, "-m", "responses_bridge", "fake-upstream",
                                   "--port", str(upstream_port)], "fake-upstream")
        sidecar = ManagedProcess([sys.executable, "-m", "responses_bridge", "serve",
                                  "--upstream", f"http://127.0.0.1:{upstream_port}/v1",
                                  "--http-port", str(http_port), "--extproc-port", str(extproc_port),
                                  "--db", os.path.join(tmp, "bench.db"), "--log-level", "warning"]
                                 + ([] if args.envoy else ["--no-extproc"]), "sidecar")
        processes = [upstream, sidecar]
        try:
            upstream.start()
            sidecar.start()
            await wait_http(f"http://127.0.0.1:{upstream_port}/health")
            await wait_http(f"http://127.0.0.1:{http_port}/health")
            targets = [Target("direct", f"http://127.0.0.1:{upstream_port}/v1/chat/completions", False),
                       Target("http", f"http://127.0.0.1:{http_port}/v1/responses", True)]
            if args.envoy:
                envoy, envoy_port = await _start_envoy(tmp, upstream_port, http_port, extproc_port)
                processes.append(envoy)
                targets += [Target("envoy-direct", f"http://127.0.0.1:{envoy_port}/v1/chat/completions", False),
                            Target("envoy", f"http://127.0.0.1:{envoy_port}/v1/responses", True)]
            idle_rss = sidecar.rss_mb()
            return await _measure(args, targets, sidecar, idle_rss)
        finally:
            for process in reversed(processes):
                process.stop()


async def _start_envoy(tmp: str, upstream_port: int, http_port: int, extproc_port: int
                       ) -> tuple[ManagedProcess, int]:
    from ...envoy_config import render_bootstrap
    from ..procs import envoy_binary

    envoy_port, admin_port = free_port(), free_port()
    path = os.path.join(tmp, "envoy.yaml")
    bootstrap = render_bootstrap(listen_port=envoy_port, extproc_port=extproc_port, http_port=http_port,
                                 upstream=f"http://127.0.0.1:{upstream_port}/v1", admin_port=admin_port)
    await asyncio.to_thread(Path(path).write_text, bootstrap)
    envoy = ManagedProcess([envoy_binary(), "-c", path, "--log-level", "error", "--base-id", str(envoy_port),
                            "--concurrency", "1"], "envoy")
    envoy.start()
    await wait_http(f"http://127.0.0.1:{admin_port}/ready")
    return envoy, envoy_port


def _bodies(args: argparse.Namespace, targets: list[Target]) -> dict[tuple[str, str], bytes]:
    """The request body for each (target, kind): the same question asked of the bridge and of the upstream."""
    if args.replay:
        from ...engine.options import EngineOptions
        from ...engine.request_translation import build_chat_request
        from ...protocol.request import parse_request

        recorded = Path(args.replay).read_bytes()
        translated = orjson.dumps(build_chat_request(parse_request(recorded), [], EngineOptions()))
        return {(t.name, "replay"): recorded if t.responses_api else translated for t in targets}
    return {(t.name, kind): _synthetic_body(t, kind == "stream", args.chunks) for t in targets
            for kind in ("json", "stream")}


def _synthetic_body(target: Target, stream: bool, chunks: int) -> bytes:
    text = f"[chunks={chunks}] benchmark" if stream else "benchmark"
    if target.responses_api:
        return orjson.dumps({"model": "fake-model", "input": text, "stream": stream})
    body: dict = {"model": "fake-model", "messages": [{"role": "user", "content": text}], "stream": stream}
    if stream:
        body["stream_options"] = {"include_usage": True}
    return orjson.dumps(body)


async def _one(session: aiohttp.ClientSession, target: Target, body: bytes) -> float:
    started = time.perf_counter()
    async with session.post(target.url, data=body, headers={"Content-Type": "application/json"}) as response:
        async for _ in response.content.iter_any():
            pass
        if response.status != 200:
            raise RuntimeError(f"{target.name}: HTTP {response.status}")
    return (time.perf_counter() - started) * 1000


async def _measure(args: argparse.Namespace, targets: list[Target], sidecar: ManagedProcess,
                   idle_rss: float) -> dict:
    bodies = _bodies(args, targets)
    kinds = sorted({kind for _, kind in bodies})
    connector = aiohttp.TCPConnector(limit=0)
    async with aiohttp.ClientSession(connector=connector) as session:
        for target in targets:  # warm-up: connections, caches, the first calls of every code path
            for kind in kinds:
                for _ in range(10):
                    await _one(session, target, bodies[(target.name, kind)])
        for _ in range(args.requests):
            for kind in kinds:
                for target in targets:
                    sample = await _one(session, target, bodies[(target.name, kind)])
                    target.samples.setdefault(kind, []).append(sample)
        throughput: dict[str, float] = {}
        peak_rss = idle_rss
        if not args.replay:
            for target in targets:
                rss_probe: Callable[[], None] = lambda: None  # noqa: E731
                if target.name in ("http", "envoy"):
                    def rss_probe() -> None:
                        nonlocal peak_rss
                        peak_rss = max(peak_rss, sidecar.rss_mb())
                throughput[target.name] = await _throughput(session, target, bodies[(target.name, "json")],
                                                            args.concurrency, args.throughput_requests, rss_probe)
    return _summarise(args, targets, kinds, throughput, idle_rss, peak_rss)


async def _throughput(session: aiohttp.ClientSession, target: Target, body: bytes, concurrency: int,
                      total: int, probe: Callable[[], None]) -> float:
    remaining = total

    async def worker() -> None:
        nonlocal remaining
        while remaining > 0:
            remaining -= 1
            await _one(session, target, body)
            if remaining % 100 == 0:
                probe()

    started = time.perf_counter()
    await asyncio.gather(*(worker() for _ in range(concurrency)))
    return total / (time.perf_counter() - started)


def _percentile(samples: list[float], fraction: float) -> float:
    ordered = sorted(samples)
    return ordered[min(len(ordered) - 1, round(fraction * (len(ordered) - 1)))]


def _summarise(args: argparse.Namespace, targets: list[Target], kinds: list[str], throughput: dict[str, float],
               idle_rss: float, peak_rss: float) -> dict:
    by_name = {t.name: t for t in targets}
    latency = {
        t.name: {kind: {"median_ms": statistics.median(s), "p99_ms": _percentile(s, 0.99)}
                 for kind, s in t.samples.items()}
        for t in targets
    }
    added = {}
    for bridge, baseline in (("http", "direct"), ("envoy", "envoy-direct")):
        if bridge in by_name and baseline in by_name:
            added[f"{bridge} over {baseline}"] = {
                kind: {"median_ms": latency[bridge][kind]["median_ms"] - latency[baseline][kind]["median_ms"],
                       "p99_ms": latency[bridge][kind]["p99_ms"] - latency[baseline][kind]["p99_ms"]}
                for kind in kinds
            }
    return {"requests": args.requests, "chunks": args.chunks, "concurrency": args.concurrency,
            "replay": args.replay, "kinds": kinds, "latency": latency, "added": added,
            "requests_per_second": throughput, "sidecar_rss_mb": {"idle": idle_rss, "under_load": peak_rss}}


def print_report(results: dict) -> None:
    what = f"replaying {results['replay']}" if results["replay"] else f"streams of {results['chunks']} chunks"
    print(f"{results['requests']} sequential requests per target and kind; {what}")
    header = "".join(f"{kind + ' p50':>13}{kind + ' p99':>13}" for kind in results["kinds"])
    rps = f"req/s@{results['concurrency']}" if results["requests_per_second"] else ""
    print(f"{'target':<14}{header}{rps:>12}")
    for name, kinds in results["latency"].items():
        cells = "".join(f"{kinds[k]['median_ms']:>13.2f}{kinds[k]['p99_ms']:>13.2f}" for k in results["kinds"])
        rate = results["requests_per_second"].get(name)
        print(f"{name:<14}{cells}{'' if rate is None else f'{rate:>12.0f}'}")
    for label, kinds in results["added"].items():
        print(f"added, {label}: " + ", ".join(
            f"{kind} median {v['median_ms']:+.2f} ms (p99 {v['p99_ms']:+.2f})" for kind, v in kinds.items()))
    rss = results["sidecar_rss_mb"]
    print(f"sidecar RSS: idle {rss['idle']:.1f} MB, under load {rss['under_load']:.1f} MB")
