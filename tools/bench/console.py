"""``scripts/bench console``: the console's pages on a big store, against the issue's target (a page answers in
<= 200 ms of server time with 100,000 stored responses).

A SQLite store is filled with ``--responses`` stored responses of one tenant (three models, one every three seconds,
a realistic body each; kept in ``--db`` to be reused by the next run), then the sidecar's HTTP door is started in
this process with the console on (``auth: none``, loopback), and each page is asked for ``--runs`` times over
loopback: the newest page of the logs, a page deep, a model filter, a text search that finds nothing (its whole
stretch of rows read), one response, usage over 24 hours and 7 days, operations. The first request, which imports
the pages and compiles their templates, is reported apart.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import statistics
import tempfile
import time
from typing import Any

import aiohttp

from responses_bridge.adapters.http.server import start_http_server
from responses_bridge.config.settings import Settings
from responses_bridge.demo.procs import free_port
from responses_bridge.serve import open_runtime
from responses_bridge.store.base import DEFAULT_TENANT
from responses_bridge.store.sqlite.responses import SQLiteResponseStore

MODELS = ("fake-model", "gpt-x", "llama-3")
TARGET_MS = 200.0


def response(n: int, total: int, now: int) -> dict[str, Any]:
    text = f"answer number {n} " + "lorem ipsum dolor sit amet " * 8
    return {"id": f"resp_{n:012d}", "object": "response", "created_at": now - (total - n) * 3, "status": "completed",
            "model": MODELS[n % 3], "tools": [], "store": True,
            "previous_response_id": f"resp_{n - 1:012d}" if n else None,
            "output": [{"type": "message", "id": f"msg_{n}", "role": "assistant", "status": "completed",
                        "content": [{"type": "output_text", "text": text, "annotations": []}]}],
            "usage": {"input_tokens": 12, "output_tokens": 40, "total_tokens": 52}}


async def fill(path: str, total: int) -> None:
    async with SQLiteResponseStore(path) as store:
        now, started = int(time.time()), time.perf_counter()
        for batch in range(0, total, 1000):
            await asyncio.gather(*(store.save_response(response(n, total, now), [
                {"type": "message", "role": "user", "content": f"question {n}"}], tenant=DEFAULT_TENANT)
                for n in range(batch, min(total, batch + 1000))))
        print(f"stored {total} responses in {time.perf_counter() - started:.1f} s", flush=True)


async def main(args: argparse.Namespace) -> int:
    path = args.db or os.path.join(tempfile.mkdtemp(prefix="console-bench-"), "bridge.db")
    if not os.path.exists(path):
        await fill(path, args.responses)
    runtime = await open_runtime(Settings(upstream="http://127.0.0.1:9/v1", db=path, console="on"))
    port = free_port()
    door = await start_http_server(runtime, "127.0.0.1", port)
    middle = f"resp_{args.responses // 2:012d}"
    pages = {"logs, newest": "/console/logs", "logs, a page deep": f"/console/logs?after={middle}",
             "logs, by model": "/console/logs?model=gpt-x", "logs, text found nowhere": "/console/logs?text=zzzz",
             "one response and its chain": f"/console/logs/{middle}", "usage, 24 h": "/console/usage",
             "usage, 7 d": "/console/usage?window=7d", "operations": "/console/operations"}
    worst = 0.0
    try:
        async with aiohttp.ClientSession(f"http://127.0.0.1:{port}") as http:
            started = time.perf_counter()
            async with http.get("/console/logs") as answer:
                assert answer.status == 200, answer.status
                await answer.read()
            print(f"{'first request (imports, templates)':38s} {1000 * (time.perf_counter() - started):8.1f} ms")
            for name, url in pages.items():
                times = []
                for _ in range(args.runs):
                    started = time.perf_counter()
                    async with http.get(url) as answer:
                        assert answer.status == 200, (url, answer.status)
                        await answer.read()
                    times.append(1000 * (time.perf_counter() - started))
                worst = max(worst, statistics.median(times))
                print(f"{name:38s} median {statistics.median(times):8.1f} ms   max {max(times):8.1f} ms")
    finally:
        await door.close()
        await runtime.close()
    print(f"slowest page's median: {worst:.1f} ms (target <= {TARGET_MS:.0f} ms with 100,000 stored responses)")
    return 0 if worst <= TARGET_MS else 1


def parse(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="scripts/bench console", description=__doc__.split("\n\n")[0])
    parser.add_argument("--responses", type=int, default=100_000, help="stored responses to fill a new store with")
    parser.add_argument("--db", default=None, help="the SQLite file to fill, or to reuse when it exists")
    parser.add_argument("--runs", type=int, default=7, help="requests per page")
    return parser.parse_args(argv)


if __name__ == "__main__":
    raise SystemExit(asyncio.run(main(parse())))
