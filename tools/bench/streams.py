"""``scripts/bench streams``: one tenant's N concurrent slow streams on each door, and what each costs ``serve``.

An LLM gateway in front of a GPU cluster holds thousands of long streams at once. This opens ``--streams`` streamed
``POST /v1/responses`` of one tenant (``auth: none``), each ``--chunks`` chunks ``--delay`` ms apart from the fake
upstream, opened evenly over ``--ramp`` seconds (less than a stream lasts, so all are open at once), on the HTTP
door and then through Envoy (the bootstrap ``envoy-config`` renders, with its circuit breakers at
``--envoy-max-requests``, 0 the default), one door after the other against one sidecar started with its
defaults. Per door it reports how many streams ended ``response.completed`` and how many did not (a failed event,
an HTTP error, a broken connection), the sidecar's resident memory once every stream was open over before, per
stream, and its CPU time (user + system, all its processes) over the run, per stream. The figures are for
docs/operations.md (Sizing); nothing here asserts a bound (tests/integration/test_many_streams.py does the
behaviour).
"""

from __future__ import annotations

import argparse
import asyncio
import collections
import os
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import aiohttp
import orjson

from responses_bridge.demo.procs import ManagedProcess, envoy_binary, free_port, wait_http
from responses_bridge.process.descriptors import raise_descriptor_limit

from ..process_memory import family_pids, family_rss_mb
from .latency.requests import wait_healthy

TICKS = os.sysconf("SC_CLK_TCK")
SAMPLES: dict[str, str] = {}
"""The first message of each error code seen, printed after the figures."""


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="scripts/bench streams", description=__doc__.split("\n\n")[0])
    parser.add_argument("--streams", type=int, nargs="+", default=[600], help="concurrent streams (several: each "
                        "in turn); default 600")
    parser.add_argument("--chunks", type=int, default=20, help="chunks per stream (default 20)")
    parser.add_argument("--delay", type=int, default=1000, help="milliseconds between chunks (default 1000)")
    parser.add_argument("--ramp", type=float, default=5.0, help="seconds over which the streams are opened, "
                        "evenly (default 5; shorter than a stream, so all are open at once)")
    parser.add_argument("--doors", nargs="+", choices=("http", "envoy"), default=["http", "envoy"])
    parser.add_argument("--envoy-max-requests", type=int, default=0,
                        help="the bootstrap's circuit breakers (0: the default of envoy-config; 1024: Envoy's own)")
    parser.add_argument("--envoy-concurrency", type=int, default=2, help="Envoy's worker threads (default 2)")
    parser.add_argument("--sidecar-env", action="append", default=[], metavar="NAME=VALUE",
                        help="a setting for the sidecar (repeatable), e.g. "
                        "RESPONSES_BRIDGE_UPSTREAM_MAX_CONNECTIONS=256")
    parser.add_argument("--sidecar-log", metavar="FILE", default=None, help="the sidecar's log (default: none)")
    parser.add_argument("--log-level", default="error", help="the sidecar's (default error)")
    return parser.parse_args(argv)


class Sidecar:
    """The sidecar's processes: resident memory and CPU seconds, summed over them."""

    def __init__(self, process: ManagedProcess) -> None:
        self.process = process

    def pids(self) -> list[int]:
        return family_pids(self.process.pid)

    def rss_mib(self) -> float:
        return family_rss_mb(self.process.pid)

    def cpu_seconds(self) -> float:
        total = 0.0
        for pid in self.pids():
            try:
                fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
            except OSError:
                continue
            total += (int(fields[11]) + int(fields[12])) / TICKS  # utime, stime
        return total


async def one_stream(session: aiohttp.ClientSession, url: str, body: bytes, opened: list[int], after: float) -> str:
    """How the stream ended: its last event's type, ``http <status> <error code>`` or the exception's name. It
    starts ``after`` seconds from now."""
    await asyncio.sleep(after)
    counted = False
    try:
        async with session.post(url, data=body, headers={"Content-Type": "application/json"}) as response:
            if response.status != 200:
                return f"http {response.status} {error_code(await response.read())}"
            last, event = "no event", {}
            async for line in response.content:
                if line.startswith(b"data: {"):
                    if not counted:
                        opened[0] += 1
                        counted = True
                    event = orjson.loads(line[6:])
                    last = event["type"]
            if last == "response.failed":
                error = event["response"].get("error") or {}
                message = str(error.get("message"))
                SAMPLES.setdefault(f"failed {error.get('code')} {message.split(':')[0]}", message)
            return last
    except (TimeoutError, aiohttp.ClientError) as exc:
        return type(exc).__name__
    finally:
        if counted:
            opened[0] -= 1


def error_code(body: bytes) -> str:
    """An OpenAI-shaped error's code (Envoy's own replies are shaped so too), else the body's start."""
    try:
        error = orjson.loads(body)["error"]
        SAMPLES.setdefault(str(error["code"]), str(error["message"]))
        return str(error["code"])
    except (orjson.JSONDecodeError, KeyError, TypeError):
        return body[:60].decode(errors="replace")


async def measure(sidecar: Sidecar, url: str, streams: int, body: bytes, ramp: float) -> dict[str, Any]:
    await asyncio.sleep(1.0)  # the previous run's connections closed, the allocator settled
    before_rss, before_cpu, started = sidecar.rss_mib(), sidecar.cpu_seconds(), time.monotonic()
    opened = [0]
    peak_open, rss_all_open = 0, before_rss
    connector = aiohttp.TCPConnector(limit=0, force_close=True)
    async with aiohttp.ClientSession(connector=connector, timeout=aiohttp.ClientTimeout(total=None)) as session:
        tasks = [asyncio.create_task(one_stream(session, url, body, opened, ramp * at / streams))
                 for at in range(streams)]
        pending: set[asyncio.Task[str]] = set(tasks)
        while pending:
            _done, pending = await asyncio.wait(pending, timeout=0.25)
            if opened[0] >= peak_open:
                peak_open, rss_all_open = opened[0], max(rss_all_open, sidecar.rss_mib())
        ends = collections.Counter(task.result() for task in tasks)
    cpu = sidecar.cpu_seconds() - before_cpu
    completed = ends.pop("response.completed", 0)
    return {"streams": streams, "completed": completed, "failed": dict(ends), "peak_open": peak_open,
            "seconds": time.monotonic() - started, "rss_before_mib": before_rss, "rss_open_mib": rss_all_open,
            "rss_per_stream_kib": (rss_all_open - before_rss) * 1024 / max(1, peak_open),
            "cpu_seconds": cpu, "cpu_per_stream_ms": cpu * 1000 / max(1, streams)}


async def start_envoy(tmp: str, processes: list[ManagedProcess], upstream_url: str, http_port: int,
                      extproc_port: int, args: argparse.Namespace) -> int:
    from responses_bridge.envoy_config import EXTPROC_CLUSTER, render_bootstrap

    envoy_port, admin_port = free_port(), free_port()
    path = os.path.join(tmp, "envoy.yaml")
    bootstrap = render_bootstrap(listen_port=envoy_port, extproc_port=extproc_port, http_port=http_port,
                                 upstream=upstream_url, admin_port=admin_port, max_requests=args.envoy_max_requests)
    await asyncio.to_thread(Path(path).write_text, bootstrap)
    envoy = ManagedProcess([envoy_binary(), "-c", path, "--log-level", "error", "--base-id", str(envoy_port),
                            "--concurrency", str(args.envoy_concurrency)], "envoy")
    processes.append(envoy)
    envoy.start()
    await wait_http(f"http://127.0.0.1:{admin_port}/ready", process=envoy)
    await wait_healthy(admin_port, (EXTPROC_CLUSTER,), (envoy,))
    return envoy_port


async def run(args: argparse.Namespace) -> list[dict[str, Any]]:
    body = orjson.dumps({"model": "fake-model", "stream": True,
                         "input": f"{' '.join(['word'] * args.chunks)} [chunks={args.chunks}] [delay={args.delay}]"})
    results: list[dict[str, Any]] = []
    processes: list[ManagedProcess] = []
    with tempfile.TemporaryDirectory(prefix="rb-bench.streams-") as tmp:
        try:
            upstream_port, http_port, extproc_port = free_port(), free_port(), free_port()
            upstream_url = f"http://127.0.0.1:{upstream_port}/v1"
            upstream = ManagedProcess([sys.executable, "-m", "responses_bridge", "fake-upstream", "--port",
                                       str(upstream_port)], "fake-upstream")
            processes.append(upstream)
            upstream.start()
            await wait_http(f"http://127.0.0.1:{upstream_port}/health", process=upstream)
            env = dict(item.split("=", 1) for item in args.sidecar_env)
            process = ManagedProcess([sys.executable, "-m", "responses_bridge", "serve", "--upstream", upstream_url,
                                      "--http-port", str(http_port), "--extproc-port", str(extproc_port),
                                      "--db", os.path.join(tmp, "bridge.db"), "--log-level", args.log_level],
                                     "sidecar", env=env or None, log_file=args.sidecar_log)
            processes.append(process)
            process.start()
            await wait_http(f"http://127.0.0.1:{http_port}/health", process=process)
            doors = {"http": f"http://127.0.0.1:{http_port}/v1/responses"}
            if "envoy" in args.doors:
                envoy_port = await start_envoy(tmp, processes, upstream_url, http_port, extproc_port, args)
                doors["envoy"] = f"http://127.0.0.1:{envoy_port}/v1/responses"
            sidecar = Sidecar(process)
            for streams in args.streams:
                for door in args.doors:
                    result = {"door": door, **await measure(sidecar, doors[door], streams, body, args.ramp)}
                    results.append(result)
                    print_result(result)
        finally:
            for started in reversed(processes):
                started.stop()
    return results


def print_result(result: dict[str, Any]) -> None:
    failed = ", ".join(f"{count} {end}" for end, count in sorted(result["failed"].items())) or "none"
    print(f"[{result['door']}] {result['streams']} streams: {result['completed']} completed "
          f"({result['completed'] / result['streams']:.0%}), failed: {failed}; {result['peak_open']} open at once; "
          f"{result['seconds']:.1f} s. serve RSS {result['rss_before_mib']:.0f} -> {result['rss_open_mib']:.0f} MiB "
          f"= {result['rss_per_stream_kib']:.1f} KiB per open stream; CPU {result['cpu_seconds']:.1f} s = "
          f"{result['cpu_per_stream_ms']:.1f} ms per stream", flush=True)
    for code, message in SAMPLES.items():
        print(f"    {code}: {message}")
    SAMPLES.clear()


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    raise_descriptor_limit()  # thousands of client sockets in this process
    asyncio.run(run(args))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
