"""``scripts/bench console``: the console's pages on a big store, against the issue's target (each page's median
<= 50 ms with 100,000 stored responses, with the Logs' total, spend, timing columns and filters).

A SQLite store is filled with ``--responses`` stored responses of one tenant (three models, one every three seconds,
a realistic body each, a ``project`` metadata pair of ten, a ``user`` of a hundred and a timing; kept in ``--db`` to
be reused by the next run), then the sidecar's HTTP door is started in this process with the console on (``auth:
none``, loopback) and a price for each model, and each page is asked for ``--runs`` times over loopback: the newest
page of the logs (its total counted), a page deep, the newer page back from it, a model filter, the slowest first
(by latency, and by time to first token within a model), a metadata filter, a time range, a user filter and a text
search over the responses and their input items (each finding a page), a text search that finds nothing (its whole
stretch of rows and inputs read), one response, its raw JSON, a Logs CSV of a filter, usage over 24 hours and 7
days (with spend) and its CSV, operations. The first request, which imports the pages and compiles their templates,
is reported apart.
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
TARGET_MS = 50.0
PRICES = {model: {"input": 2.5, "cached_input": 1.25, "output": 10} for model in MODELS}


def response(n: int, total: int, now: int) -> dict[str, Any]:
    text = f"answer number {n} " + "lorem ipsum dolor sit amet " * 8
    return {"id": f"resp_{n:012d}", "object": "response", "created_at": now - (total - n) * 3, "status": "completed",
            "model": MODELS[n % 3], "tools": [], "store": True, "metadata": {"project": f"p{n % 10}"},
            "user": f"user-{n % 100}",
            "previous_response_id": f"resp_{n - 1:012d}" if n else None,
            "output": [{"type": "message", "id": f"msg_{n}", "role": "assistant", "status": "completed",
                        "content": [{"type": "output_text", "text": text, "annotations": []}]}],
            "usage": {"input_tokens": 12, "output_tokens": 40, "total_tokens": 52}}


async def fill(path: str, total: int) -> None:
    async with SQLiteResponseStore(path) as store:
        now, started = int(time.time()), time.perf_counter()
        for batch in range(0, total, 1000):
            await asyncio.gather(*(store.save_response(response(n, total, now), [
                {"type": "message", "role": "user", "content": f"question {n}"}], tenant=DEFAULT_TENANT,
                timing=[3, 20 + n % 97, 200 + n % 991, 0.0, {}, None, None, [], 0])
                for n in range(batch, min(total, batch + 1000))))
        print(f"stored {total} responses in {time.perf_counter() - started:.1f} s", flush=True)


async def main(args: argparse.Namespace) -> int:
    path = args.db or os.path.join(tempfile.mkdtemp(prefix="console-bench-"), "bridge.db")
    if not os.path.exists(path):
        await fill(path, args.responses)
    runtime = await open_runtime(Settings(upstream="http://127.0.0.1:9/v1", db=path, console="on",
                                          console_prices=PRICES))  # type: ignore[arg-type]
    port = free_port()
    door = await start_http_server(runtime, "127.0.0.1", port)
    middle = f"resp_{args.responses // 2:012d}"
    day = time.strftime("%Y-%m-%dT%H:%M", time.gmtime(time.time() - 86400))
    pages = {"logs, newest": "/console/logs", "logs, a page deep": f"/console/logs?after={middle}",
             "logs, newer than a page deep": f"/console/logs?before={middle}",
             "logs, by model": "/console/logs?model=gpt-x", "logs, slowest first": "/console/logs?sort=latency",
             "logs, slowest TTFT of a model": "/console/logs?sort=ttft&model=llama-3",
             "logs, by metadata": "/console/logs?meta=project%3Dp3",
             "logs, a time range": f"/console/logs?start={day}",
             "logs, by user": "/console/logs?user=user-7", "logs, text in inputs": "/console/logs?text=question+9",
             "logs, text found nowhere": "/console/logs?text=zzzz",
             "logs CSV, by metadata": "/console/logs.csv?meta=project%3Dp3",
             "one response and its chain": f"/console/logs/{middle}", "its raw JSON": f"/console/logs/{middle}/raw",
             "usage, 24 h": "/console/usage", "usage, 7 d": "/console/usage?window=7d",
             "usage CSV, 24 h": "/console/usage.csv", "operations": "/console/operations"}
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
                if ".csv" not in url or "usage" in url:
                    worst = max(worst, statistics.median(times))
                print(f"{name:38s} median {statistics.median(times):8.1f} ms   max {max(times):8.1f} ms")
    finally:
        await door.close()
        await runtime.close()
    print(f"slowest page's median: {worst:.1f} ms (target <= {TARGET_MS:.0f} ms with 100,000 stored responses)")
    print("(the Logs CSV is a download of up to 10,000 rows, not a page: its time is shown, not held to the target)")
    return 0 if worst <= TARGET_MS else 1


def parse(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="scripts/bench console", description=__doc__.split("\n\n")[0])
    parser.add_argument("--responses", type=int, default=100_000, help="stored responses to fill a new store with")
    parser.add_argument("--db", default=None, help="the SQLite file to fill, or to reuse when it exists")
    parser.add_argument("--runs", type=int, default=7, help="requests per page")
    return parser.parse_args(argv)


if __name__ == "__main__":
    raise SystemExit(asyncio.run(main(parse())))
