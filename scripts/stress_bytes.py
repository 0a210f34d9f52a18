"""Bounded work per byte, and memory, measured against real processes: the fake upstream, the sidecar with both
doors, and Envoy in front of it (run by ``scripts/stress-bytes``; ``-h`` for the options).

1. **Stall.** One large upstream event (2 MB by default) arrives in small writes (512 bytes) through one door,
   while small non-streamed requests go one after another through the other door. Reported: the probes' median
   latency when idle, their worst latency while the large event streams, and the difference (the delay the large
   event caused), both ways round (large event on the HTTP door, probes through Envoy; and the reverse).
2. **Memory.** The sidecar's RSS when idle, at its peak, and after N sequential requests of M MiB each (10 of
   30 MiB by default: a large first message and a short question, so the answer is small), through the HTTP door
   and then through Envoy.

``--bridge-src DIR`` runs the sidecar from another source tree (e.g. ``git archive <commit> src | tar -x -C DIR``
gives ``DIR/src``) so an older version can be measured the same way; the fake upstream and the Envoy bootstrap
always come from this checkout.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import statistics
import sys
import tempfile
import time
from dataclasses import dataclass, field

import aiohttp
import orjson

from responses_bridge.demo.procs import ManagedProcess, envoy_binary, free_port, wait_http
from responses_bridge.envoy_config import render_bootstrap
from tools.process_memory import process_rss_mb


@dataclass
class Processes:
    upstream_port: int
    http_url: str
    envoy_url: str
    sidecar: ManagedProcess
    all: list[ManagedProcess] = field(default_factory=list)


async def start(tmp: str, bridge_src: str | None, extra_env: list[str]) -> Processes:
    upstream_port, http_port, extproc_port = free_port(), free_port(), free_port()
    envoy_port, admin_port = free_port(), free_port()
    upstream = ManagedProcess([sys.executable, "-m", "responses_bridge", "fake-upstream", "--port",
                               str(upstream_port)], "fake-upstream")
    env = dict(item.split("=", 1) for item in extra_env)
    if bridge_src:
        env["PYTHONPATH"] = os.path.abspath(bridge_src)
    sidecar = ManagedProcess([sys.executable, "-m", "responses_bridge", "serve",
                              "--upstream", f"http://127.0.0.1:{upstream_port}/v1",
                              "--http-port", str(http_port), "--extproc-port", str(extproc_port),
                              "--db", os.path.join(tmp, "stress.db"), "--log-level", "warning"], "sidecar",
                             env=env or None)
    path = os.path.join(tmp, "envoy.yaml")
    with open(path, "w") as file:
        file.write(render_bootstrap(listen_port=envoy_port, extproc_port=extproc_port, http_port=http_port,
                                    upstream=f"http://127.0.0.1:{upstream_port}/v1", admin_port=admin_port))
    envoy = ManagedProcess([envoy_binary(), "-c", path, "--log-level", "error", "--base-id", str(envoy_port),
                            "--concurrency", "1"], "envoy")
    processes = Processes(upstream_port, f"http://127.0.0.1:{http_port}", f"http://127.0.0.1:{envoy_port}",
                          sidecar, [upstream, sidecar, envoy])
    for process in processes.all:
        process.start()
    await wait_http(f"http://127.0.0.1:{upstream_port}/health", process=upstream)
    await wait_http(f"http://127.0.0.1:{http_port}/health", process=sidecar)
    await wait_http(f"http://127.0.0.1:{admin_port}/ready", process=envoy)
    return processes


SETTLE_SECONDS = 15  # the sidecar trims memory within 2 s of growing, and again every 10 s while it stays high
LARGE_CLIENT = """
import sys, urllib.request
request = urllib.request.Request(sys.argv[1], data=sys.stdin.buffer.read(),
                                 headers={"Content-Type": "application/json"})
completed, last = False, b""
with urllib.request.urlopen(request, timeout=600) as response:
    while chunk := response.read(65536):
        window = last + chunk
        completed = completed or b"event: response.completed\\n" in window
        last = window[-64:]
print("completed" if completed and last.endswith(b"data: [DONE]\\n\\n") else last)
"""
IN_PROCESS = """
import asyncio, time, orjson
from responses_bridge.run.response_run import ResponseRun
from responses_bridge.engine.options import EngineOptions
from responses_bridge.engine.sse import SSEDecoder
from responses_bridge.store import SQLiteResponseStore
from responses_bridge.store.base import DEFAULT_TENANT

def frame(delta, finish=None):
    chunk = {"id": "chatcmpl-1", "object": "chat.completion.chunk", "created": 1, "model": "m",
             "choices": [{"index": 0, "delta": delta, "logprobs": None, "finish_reason": finish}]}
    return b"data: " + orjson.dumps(chunk) + b"\\n\\n"

big = frame({"content": "x" * (2 * 1024 * 1024)})
decoder, started = SSEDecoder(), time.perf_counter()
out = [p for i in range(0, len(big), 512) for p in decoder.feed(big[i:i + 512])]
big_ms = (time.perf_counter() - started) * 1000
assert len(out) == 1
frames = [frame({"role": "assistant", "content": ""})] + [frame({"content": f"w{i} "}) for i in range(1000)]
frames += [frame({}, "stop"), b"data: [DONE]\\n\\n"]
halves = [p for f in frames for p in (f[:len(f) // 2], f[len(f) // 2:])]

async def per_event(pieces):
    best = float("inf")
    async with SQLiteResponseStore(":memory:") as store:
        for _ in range(30):
            run = ResponseRun(store, EngineOptions(), tenant=DEFAULT_TENANT)
            await run.begin(orjson.dumps({"model": "m", "input": "hi", "stream": True, "store": False}))
            run.on_upstream_headers(200, "text/event-stream")
            started = time.perf_counter()
            for piece in pieces:
                run.on_upstream_chunk(piece)
            best = min(best, (time.perf_counter() - started) / len(frames) * 1e6)
    return best

print(orjson.dumps({"big_event_ms": big_ms, "per_event_us": asyncio.run(per_event(frames)),
                    "per_event_cut_us": asyncio.run(per_event(halves))}).decode())
"""
PROBE = orjson.dumps({"model": "fake-model", "input": "ping", "store": False})


async def probe(session: aiohttp.ClientSession, base: str) -> float:
    started = time.perf_counter()
    async with session.post(f"{base}/v1/responses", data=PROBE,
                            headers={"Content-Type": "application/json"}) as response:
        await response.read()
        if response.status != 200:
            raise RuntimeError(f"probe through {base} answered {response.status}")
    return (time.perf_counter() - started) * 1000


async def stall(session: aiohttp.ClientSession, big_base: str, probe_base: str, event_bytes: int,
                write: int, pause_ms: int) -> dict[str, float]:
    idle = [await probe(session, probe_base) for _ in range(60)]
    body = orjson.dumps({"model": "fake-model", "input": f"large event [huge={event_bytes}:{write}:{pause_ms}]",
                         "stream": True, "store": False})

    async def large() -> tuple[float, bytes]:
        """Read by a client process of its own, so that reading megabytes does not delay this one's probes."""
        started = time.perf_counter()
        reader = await asyncio.create_subprocess_exec(sys.executable, "-c", LARGE_CLIENT, f"{big_base}/v1/responses",
                                                      stdin=asyncio.subprocess.PIPE, stdout=asyncio.subprocess.PIPE)
        outcome, _ = await reader.communicate(body)
        return (time.perf_counter() - started) * 1000, outcome

    task = asyncio.create_task(large())
    during: list[float] = []
    while not task.done():
        during.append(await probe(session, probe_base))
    took, outcome = await task
    if outcome.strip() != b"completed":
        raise RuntimeError(f"the large event's response did not complete: {outcome[-400:]!r}")
    median = statistics.median(idle)
    worst = max(during) if during else 0.0
    return {"idle_median_ms": median, "idle_max_ms": max(idle), "during_max_ms": worst,
            "delay_ms": worst - median, "probes_during": len(during), "large_request_ms": took}


def large_body(mib: int) -> bytes:
    line = "The quick brown fox jumps over the lazy dog, again and again. "
    text = line * (mib * 1024 * 1024 // len(line))
    return orjson.dumps({"model": "fake-model", "input": [
        {"role": "user", "content": text},
        {"role": "user", "content": "How long was that?"},
    ]})


async def memory(session: aiohttp.ClientSession, sidecar: ManagedProcess, base: str, count: int,
                 body: bytes) -> dict[str, float]:
    idle = process_rss_mb(sidecar.pid)
    peak = idle
    sampling = True

    async def sample() -> None:
        nonlocal peak
        while sampling:
            peak = max(peak, process_rss_mb(sidecar.pid))
            await asyncio.sleep(0.02)

    sampler = asyncio.create_task(sample())
    after_each: list[float] = []
    try:
        for _ in range(count):
            async with session.post(f"{base}/v1/responses", data=body,
                                    headers={"Content-Type": "application/json"}) as response:
                answer = await response.read()
                if response.status != 200:
                    raise RuntimeError(f"a large request answered {response.status}: {answer[:300]!r}")
            after_each.append(process_rss_mb(sidecar.pid))
    finally:
        sampling = False
        await sampler
    quiet: list[float] = []  # what the process still holds once it is quiet, each second for SETTLE_SECONDS
    for _ in range(SETTLE_SECONDS):
        await asyncio.sleep(1.0)
        quiet.append(process_rss_mb(sidecar.pid))
    settled = quiet[-1]
    return {"idle_mb": idle, "peak_mb": peak, "after_each_mb": after_each, "quiet_mb": quiet, "settled_mb": settled,
            "settled_over_idle_mb": settled - idle}


async def in_process(bridge_src: str | None) -> dict[str, float]:
    """The decoder and a response run alone, in a process of their own (running the same source as the sidecar)."""
    env = {**os.environ, "PYTHONPATH": os.path.abspath(bridge_src)} if bridge_src else None
    child = await asyncio.create_subprocess_exec(sys.executable, "-c", IN_PROCESS, env=env,
                                                 stdout=asyncio.subprocess.PIPE)
    output, _ = await child.communicate()
    return orjson.loads(output)


async def main(args: argparse.Namespace) -> dict:
    with tempfile.TemporaryDirectory(prefix="rb-stress-") as tmp:
        processes = await start(tmp, args.bridge_src, args.sidecar_env)
        try:
            timeout = aiohttp.ClientTimeout(total=600)
            async with aiohttp.ClientSession(timeout=timeout) as session:
                for base in (processes.http_url, processes.envoy_url):  # warm up: lazy imports, connections
                    for _ in range(20):
                        await probe(session, base)
                results: dict = {"bridge_src": args.bridge_src or "this checkout", "sidecar_env": args.sidecar_env,
                                 "event_bytes": args.event_bytes, "write_bytes": args.write,
                                 "pause_ms": args.pause_ms}
                if args.only in (None, "stall"):
                    results["in_process"] = await in_process(args.bridge_src)
                    for key, big, probes in (("stall_large_on_http_probes_on_envoy", processes.http_url,
                                              processes.envoy_url),
                                             ("stall_large_on_envoy_probes_on_http", processes.envoy_url,
                                              processes.http_url)):
                        results[key] = [await stall(session, big, probes, args.event_bytes, args.write,
                                                    args.pause_ms) for _ in range(args.repeat)]
                if args.only == "stall":
                    return results
                body = large_body(args.mib)
                results["request_mib"] = len(body) / 1024 / 1024
                results["memory_http"] = await memory(session, processes.sidecar, processes.http_url,
                                                      args.requests, body)
                results["memory_envoy"] = await memory(session, processes.sidecar, processes.envoy_url,
                                                       args.requests, body)
                return results
        finally:
            for process in reversed(processes.all):
                process.stop()


def report(results: dict) -> None:
    print(f"bridge: {results['bridge_src']}" + (f" (sidecar env {results['sidecar_env']})"
                                                  if results["sidecar_env"] else ""))
    if "in_process" in results:
        r = results["in_process"]
        print(f"in process: one 2 MB event in 512-byte reads decoded in {r['big_event_ms']:.1f} ms; small events "
              f"through a response run {r['per_event_us']:.2f} us each, {r['per_event_cut_us']:.2f} us each when "
              "every one is cut in two")
    if "stall_large_on_http_probes_on_envoy" in results:
        print(f"stall: one {results['event_bytes']} B upstream event in {results['write_bytes']} B writes "
              f"{results['pause_ms']} ms apart; delay = a probe's worst latency while it streams - the probes' idle "
              "median")
    for key, label in (("stall_large_on_http_probes_on_envoy", "large on HTTP door, probes through Envoy"),
                       ("stall_large_on_envoy_probes_on_http", "large through Envoy, probes on HTTP door")):
        if key not in results:
            continue
        runs = results[key]
        delays = sorted(r["delay_ms"] for r in runs)
        print(f"  {label}: delay median {statistics.median(delays):.1f} ms over {len(runs)} runs "
              f"[{' '.join(f'{d:.1f}' for d in delays)}]")
        for r in runs:
            print(f"    idle median {r['idle_median_ms']:.1f} ms (max {r['idle_max_ms']:.1f}), worst during "
                  f"{r['during_max_ms']:.1f} ms over {r['probes_during']} probes; the large request took "
                  f"{r['large_request_ms']:.0f} ms")
    if "memory_http" not in results:
        return
    print(f"memory: sequential requests of {results['request_mib']:.1f} MiB")
    for key, label in (("memory_http", "HTTP door"), ("memory_envoy", "through Envoy")):
        r = results[key]
        each = " ".join(f"{v:.0f}" for v in r["after_each_mb"])
        quiet = r["quiet_mb"]
        print(f"  {label}: idle {r['idle_mb']:.0f} MB, peak {r['peak_mb']:.0f} MB, after each [{each}] MB, "
              f"quiet 2 s / 10 s / {len(quiet)} s later {quiet[1]:.0f} / {quiet[9]:.0f} / {quiet[-1]:.0f} MB: "
              f"settled = idle + {r['settled_over_idle_mb']:.0f} MB")
    first_idle = results["memory_http"]["idle_mb"]
    last = results["memory_envoy"]["settled_mb"]
    print(f"  after both: {last:.0f} MB = the first idle ({first_idle:.0f} MB) + {last - first_idle:.0f} MB")


def parse_args(argv: list[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="scripts/stress-bytes", description=__doc__.split("\n\n")[0])
    parser.add_argument("--bridge-src", help="run the sidecar from this source directory (holding responses_bridge)")
    parser.add_argument("--event-bytes", type=int, default=2 * 1024 * 1024, help="size of the large event")
    parser.add_argument("--write", type=int, default=512, help="bytes per upstream write of the large event")
    parser.add_argument("--requests", type=int, default=10, help="sequential large requests per door")
    parser.add_argument("--mib", type=int, default=30, help="size of each large request, MiB")
    parser.add_argument("--pause-ms", type=int, default=1, help="pause between the writes of the large event, so "
                        "that they arrive as separate reads (0: just yield)")
    parser.add_argument("--repeat", type=int, default=5, help="stall measurements per direction")
    parser.add_argument("--only", choices=("stall", "memory"), help="measure only one of the two")
    parser.add_argument("--sidecar-env", action="append", default=[], metavar="NAME=VALUE",
                        help="an environment variable for the sidecar (repeatable)")
    parser.add_argument("--json", action="store_true", help="print the results as JSON")
    return parser.parse_args(argv)


if __name__ == "__main__":
    arguments = parse_args(sys.argv[1:])
    measured = asyncio.run(main(arguments))
    if arguments.json:
        print(orjson.dumps(measured, option=orjson.OPT_INDENT_2).decode())
    else:
        report(measured)
