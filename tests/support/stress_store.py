"""The store-stall measurement: one stored response with a 60 MB input item, then one with 50,000 input items,
while small stored requests probe how long a request waits meanwhile. Run through ``scripts/stress-store``.

Every run starts from nothing (a fresh sidecar on a fresh database, and a fresh Envoy for the ``envoy`` door), since
the stall depended on where the new response's id happened to sort next to the big one. For each run it prints the
longest wait of any probe, how long the two big requests took, and the database's schema version (so a run against
an older checkout, ``--sidecar-src``, shows which schema it measured).
"""

from __future__ import annotations

import argparse
import asyncio
import os
import sqlite3
import sys
import tempfile
import time
from dataclasses import dataclass

import aiohttp
import orjson

from responses_bridge.demo.procs import ManagedProcess, free_port, wait_http
from responses_bridge.envoy_config import render_bootstrap
from tests.support.bridge import PYTHON, start_sidecar
from tests.support.envoy import start_envoy

MODEL = "fake-model"


@dataclass
class RunResult:
    door: str
    run: int
    max_wait: float
    probes: int
    failed_probes: int
    big_seconds: float
    many_seconds: float
    many_status: int
    schema_version: int


async def _post(session: aiohttp.ClientSession, url: str, body: bytes, timeout: float) -> tuple[int, float]:
    started = time.monotonic()
    try:
        async with session.post(url, data=body, headers={"Content-Type": "application/json"},
                                timeout=aiohttp.ClientTimeout(total=timeout)) as response:
            await response.read()
            return response.status, time.monotonic() - started
    except (TimeoutError, aiohttp.ClientError):
        return 0, time.monotonic() - started


async def _probe_until(session: aiohttp.ClientSession, url: str, done: asyncio.Event, timeout: float,
                       waits: list[float], failures: list[int]) -> None:
    """Small stored requests one after another, until ``done`` is set (and two more after it)."""
    after_done = 0
    n = 0
    while after_done < 2:
        if done.is_set():
            after_done += 1
        n += 1
        body = orjson.dumps({"model": MODEL, "input": f"probe {n}", "store": True})
        status, seconds = await _post(session, url, body, timeout)
        waits.append(seconds)
        if status != 200:
            failures.append(status)
        await asyncio.sleep(0.05)


async def one_run(door: str, run: int, upstream: str, args: argparse.Namespace) -> RunResult:
    with tempfile.TemporaryDirectory(prefix="stress-store-") as tmp:
        env = {"PYTHONPATH": args.sidecar_src} if args.sidecar_src else None
        process, http_port, extproc_port = start_sidecar(tmp, upstream, "--log-level", "warning", env=env,
                                                         extproc=door == "envoy")
        envoy = None
        try:
            await wait_http(f"http://127.0.0.1:{http_port}/health", process=process)
            base = f"http://127.0.0.1:{http_port}"
            if door == "envoy":
                listen = free_port()
                envoy = await start_envoy(render_bootstrap(listen_port=listen, extproc_port=extproc_port,
                                                           http_port=http_port, upstream=upstream, admin_port=0))
                base = f"http://127.0.0.1:{listen}"
            url = f"{base}/v1/responses"
            # the big item is followed by a short question, so the (echoing) fake's answer stays small: an answer
            # as large as the item would pass RESPONSES_BRIDGE_MAX_EVENT_BYTES and fail as upstream_too_large
            big = orjson.dumps({"model": MODEL, "store": True,
                                "input": [{"role": "user", "content": "x" * (args.big_mb * 1_000_000)},
                                          {"role": "user", "content": "How long was that?"}]})
            many = orjson.dumps({"model": MODEL, "store": True,
                                 "input": [{"role": "user", "content": f"item {i}"} for i in range(args.items)]})
            async with aiohttp.ClientSession() as session:
                status, big_seconds = await _post(session, url, big, args.timeout)
                if status != 200:
                    raise RuntimeError(f"the {args.big_mb} MB request answered {status}")
                del big
                done = asyncio.Event()
                waits: list[float] = []
                failures: list[int] = []
                prober = asyncio.create_task(_probe_until(session, url, done, args.timeout, waits, failures))
                many_status, many_seconds = await _post(session, url, many, args.timeout)
                done.set()
                await prober
            db = os.path.join(tmp, f"bridge-{http_port}.db")
            with sqlite3.connect(db) as conn:
                version = conn.execute("PRAGMA user_version").fetchone()[0]
            return RunResult(door, run, max(waits), len(waits), len(failures), big_seconds, many_seconds,
                             many_status, version)
        finally:
            if envoy is not None:
                envoy.stop()
            process.stop()


async def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="scripts/stress-store", description=__doc__)
    parser.add_argument("--runs", type=int, default=10, help="fresh runs per door (default 10)")
    parser.add_argument("--doors", default="http,envoy", help="comma-separated: http, envoy")
    parser.add_argument("--big-mb", type=int, default=60, help="size of the big input item in MB (default 60)")
    parser.add_argument("--items", type=int, default=50_000, help="input items of the second request")
    parser.add_argument("--timeout", type=float, default=120.0,
                        help="seconds before one request counts as failed (status 0); default 120")
    parser.add_argument("--bar", type=float, default=2.0, help="longest acceptable wait, seconds (default 2)")
    parser.add_argument("--sidecar-src", default=None,
                        help="a src/ directory to run the sidecar from (e.g. an export of an older commit)")
    args = parser.parse_args(argv)
    port = free_port()
    upstream_process = ManagedProcess([PYTHON, "-m", "responses_bridge", "fake-upstream", "--port", str(port)],
                                      "fake-upstream")
    upstream_process.start()
    results: list[RunResult] = []
    try:
        await wait_http(f"http://127.0.0.1:{port}/health", process=upstream_process)
        upstream = f"http://127.0.0.1:{port}/v1"
        for door in args.doors.split(","):
            for run in range(1, args.runs + 1):
                result = await one_run(door, run, upstream, args)
                results.append(result)
                print(f"{door:5} run {run:2}: max wait {result.max_wait:7.3f} s over {result.probes:4} probes "
                      f"({result.failed_probes} failed); {args.big_mb} MB request {result.big_seconds:6.2f} s; "
                      f"{args.items}-item request {result.many_seconds:7.2f} s (HTTP {result.many_status}); "
                      f"schema v{result.schema_version}", flush=True)
    finally:
        upstream_process.stop()
    worst = max(result.max_wait for result in results)
    failed = sum(result.failed_probes for result in results) + sum(r.many_status != 200 for r in results)
    over = sum(result.max_wait > args.bar for result in results)
    print(f"worst wait {worst:.3f} s; runs over {args.bar:g} s: {over}/{len(results)}; failed requests: {failed}")
    return 0 if over == 0 and failed == 0 else 1


if __name__ == "__main__":
    sys.exit(asyncio.run(main()))
