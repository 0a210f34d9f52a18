"""``scripts/bench batches``: batches (``/v1/batches``) on idle capacity, measured within one run against their own
controls (a new feature has no earlier revision to stand beside).

One sidecar (``responses-bridge serve``, the HTTP door, ``auth: none``: callers told apart by their key, a fresh
SQLite file) over the fake upstream, whose answers take ``--upstream-delay`` seconds (a model's time to its
headers; the bridge's own work is what the ratios weigh). Two measurements, each in ``--rounds`` turns so that the
machine's noise falls on both sides:

1. **An interactive tenant's p95 beside a batch** (target ≤ 1.2×): the tenant (key ``sk-interactive``) sends
   ``--requests`` small ``POST /v1/responses`` one after another, ``--gap`` seconds apart (a person's or an agent's
   pace, not a flood: a bridge never without a request in flight is not idle, and the rule gives batches none of
   it); alone, then while another tenant's batch of ``--lines`` lines (``sk-batch``) runs. Printed: p50/p95 of
   each, the ratio of the p95s, and how many lines the batch finished meanwhile (it must progress in the gaps).
2. **A batch's throughput on an idle bridge** (target ≥ 0.9×): a batch of ``--lines`` lines from creation to
   ``completed`` (its status polled every 0.1 s; validation and the output file included), created once its input
   is uploaded and the bridge has been idle for the gate's quiet second, against the same requests sent by a client
   at the batch concurrency (``RESPONSES_BRIDGE_BATCH_CONCURRENCY``, ``--concurrency``) through the same door.
   Printed: lines per second of each, and the ratio.

Nothing here asserts a bound: the tests assert behaviour (tests/unit/test_idle_capacity.py and the batch tests).
"""

from __future__ import annotations

import argparse
import asyncio
import io
import os
import statistics
import sys
import tempfile
import time
from typing import Any

import aiohttp
import openai
import orjson

from responses_bridge.demo.procs import ManagedProcess, free_port, wait_http
from responses_bridge.fairness.idle_capacity import QUIET_SECONDS

MODEL = "fake-model"
BODY = {"model": MODEL, "input": "Say hello."}
DONE = frozenset({"completed", "failed", "expired", "cancelled"})


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="scripts/bench batches", description=__doc__.split("\n\n")[0])
    parser.add_argument("--lines", type=int, default=2000, help="lines of each batch")
    parser.add_argument("--requests", type=int, default=150,
                        help="the interactive tenant's requests alone, and as many beside the batch (over the rounds)")
    parser.add_argument("--gap", type=float, default=0.05, help="seconds between the interactive tenant's requests")
    parser.add_argument("--rounds", type=int, default=3, help="turns of each measurement")
    parser.add_argument("--concurrency", type=int, default=8,
                        help="the sidecar's batch concurrency, and the control client's")
    parser.add_argument("--upstream-delay", type=float, default=0.05,
                        help="seconds the fake upstream takes to its answer's headers")
    parser.add_argument("--sidecar-env", action="append", default=[], metavar="NAME=VALUE",
                        help="an environment variable for the sidecar (repeatable)")
    parser.add_argument("--keep-logs", metavar="DIR", help="keep the sidecar's log there")
    return parser.parse_args(argv)


def quantile(samples: list[float], at: int) -> float:
    """The ``at``-th percentile (of 100) of ``samples``."""
    if len(samples) < 2:
        return samples[0] if samples else 0.0
    return statistics.quantiles(samples, n=100)[at - 1]


def batch_file(lines: int, tag: str) -> bytes:
    """A batch's input: ``lines`` small ``/v1/responses`` requests, each with its ``custom_id``."""
    return b"".join(orjson.dumps({"custom_id": f"{tag}-{number}", "method": "POST", "url": "/v1/responses",
                                  "body": BODY}) + b"\n" for number in range(lines))


async def upload(client: openai.AsyncOpenAI, lines: int, tag: str) -> str:
    uploaded = await client.files.create(file=(f"{tag}.jsonl", io.BytesIO(batch_file(lines, tag))), purpose="batch")
    return uploaded.id


async def create(client: openai.AsyncOpenAI, file_id: str) -> str:
    batch = await client.batches.create(input_file_id=file_id, endpoint="/v1/responses", completion_window="24h")
    return batch.id


async def start_batch(client: openai.AsyncOpenAI, lines: int, tag: str) -> str:
    return await create(client, await upload(client, lines, tag))


async def until_done(client: openai.AsyncOpenAI, batch_id: str, every: float = 0.1) -> Any:
    """The batch once it ended, its status asked every ``every`` seconds (each ask is a request the bridge's CPU
    serves beside the lines: a tenth of a second is ~1% of a 2,000-line batch's time, and of its CPU)."""
    while True:
        batch = await client.batches.retrieve(batch_id)
        if batch.status in DONE:
            return batch
        await asyncio.sleep(every)


async def interactive(session: aiohttp.ClientSession, url: str, requests: int, gap: float) -> list[float]:
    """The interactive tenant's requests one after another, ``gap`` apart: each one's seconds."""
    seconds: list[float] = []
    for _ in range(requests):
        started = time.perf_counter()
        async with session.post(url, json=BODY, headers={"Authorization": "Bearer sk-interactive"}) as answer:
            await answer.read()
            if answer.status != 200:
                raise RuntimeError(f"an interactive request was answered {answer.status}")
        seconds.append(time.perf_counter() - started)
        await asyncio.sleep(gap)
    return seconds


async def client_throughput(session: aiohttp.ClientSession, url: str, lines: int, concurrency: int) -> float:
    """The control: ``lines`` requests sent by a client, ``concurrency`` at a time. Lines per second."""
    left = iter(range(lines))

    async def worker() -> None:
        for _ in left:
            async with session.post(url, json=BODY, headers={"Authorization": "Bearer sk-client"}) as answer:
                await answer.read()
                if answer.status != 200:
                    raise RuntimeError(f"a control request was answered {answer.status}")

    started = time.perf_counter()
    await asyncio.gather(*(worker() for _ in range(concurrency)))
    return lines / (time.perf_counter() - started)


async def batch_throughput(client: openai.AsyncOpenAI, lines: int, tag: str) -> float:
    """A batch's lines a second, from its creation to ``completed`` (validation and its files included), created
    on an idle bridge: its input uploaded first (an interactive request), then the quiet that makes the bridge idle
    (fairness/idle_capacity.py's ``QUIET_SECONDS``) let pass."""
    file_id = await upload(client, lines, tag)
    await asyncio.sleep(QUIET_SECONDS + 0.2)
    started = time.perf_counter()
    batch_id = await create(client, file_id)
    batch = await until_done(client, batch_id)
    elapsed = time.perf_counter() - started
    counts = batch.request_counts
    if batch.status != "completed" or counts is None or counts.completed != lines:
        raise RuntimeError(f"the batch ended {batch.status} with {counts}")
    return lines / elapsed


async def measure(args: argparse.Namespace) -> dict[str, Any]:
    with tempfile.TemporaryDirectory(prefix="rb-batches-") as tmp:
        upstream_port, http_port = free_port(), free_port()
        env = {"RESPONSES_BRIDGE_BATCH_CONCURRENCY": str(args.concurrency)}
        env.update(item.split("=", 1) for item in args.sidecar_env)
        upstream = ManagedProcess([sys.executable, "-m", "responses_bridge", "fake-upstream", "--port",
                                   str(upstream_port), "--header-delay", str(args.upstream_delay)], "fake-upstream")
        log = os.path.join(args.keep_logs or tmp, "sidecar.log")
        sidecar = ManagedProcess([sys.executable, "-m", "responses_bridge", "serve", "--upstream",
                                  f"http://127.0.0.1:{upstream_port}/v1", "--http-port", str(http_port),
                                  "--no-extproc", "--db", os.path.join(tmp, "bench.db"), "--log-level", "error"],
                                 "sidecar", env=env, log_file=log)
        processes = [upstream, sidecar]
        base = f"http://127.0.0.1:{http_port}"
        url = f"{base}/v1/responses"
        alone: list[float] = []
        beside: list[float] = []
        progressed: list[str] = []
        batch_rates: list[float] = []
        client_rates: list[float] = []
        try:
            for process in processes:
                process.start()
            await wait_http(f"http://127.0.0.1:{upstream_port}/health", process=upstream)
            await wait_http(f"{base}/health", process=sidecar)
            per_round = max(1, args.requests // args.rounds)
            timeout = aiohttp.ClientTimeout(total=300)
            async with aiohttp.ClientSession(timeout=timeout) as session, openai.AsyncOpenAI(
                    base_url=f"{base}/v1", api_key="sk-batch", max_retries=0, timeout=300) as client:
                await interactive(session, url, 10, 0)  # warm up
                await client_throughput(session, url, 50, args.concurrency)
                for number in range(args.rounds):
                    alone += await interactive(session, url, per_round, args.gap)
                    batch_id = await start_batch(client, args.lines, f"beside-{number}")
                    await until_running(client, batch_id)
                    beside += await interactive(session, url, per_round, args.gap)
                    batch = await client.batches.retrieve(batch_id)
                    counts = batch.request_counts
                    progressed.append(f"{counts.completed} done, {counts.failed} failed" if counts else batch.status)
                    if batch.status not in DONE:
                        await client.batches.cancel(batch_id)
                        await until_done(client, batch_id)
                    client_rates.append(await client_throughput(session, url, args.lines, args.concurrency))
                    batch_rates.append(await batch_throughput(client, args.lines, f"idle-{number}"))
        finally:
            for process in reversed(processes):
                process.stop()
    return {"alone": alone, "beside": beside, "progressed": progressed, "batch": batch_rates,
            "client": client_rates}


async def until_running(client: openai.AsyncOpenAI, batch_id: str) -> None:
    """The batch validated and its lines started (or already ended)."""
    while True:
        batch = await client.batches.retrieve(batch_id)
        if batch.status in DONE or batch.status == "in_progress":
            return
        await asyncio.sleep(0.02)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    result = asyncio.run(measure(args))
    alone, beside = result["alone"], result["beside"]
    p95_alone, p95_beside = quantile(alone, 95), quantile(beside, 95)
    print(f"interactive p50/p95: alone {quantile(alone, 50) * 1000:.1f}/{p95_alone * 1000:.1f} ms, beside a "
          f"{args.lines}-line batch {quantile(beside, 50) * 1000:.1f}/{p95_beside * 1000:.1f} ms: "
          f"p95 ratio {p95_beside / p95_alone:.2f} (target <= 1.2)")
    print(f"the batch's lines done while the interactive tenant ran, per round: {result['progressed']}")
    batch, client = statistics.median(result["batch"]), statistics.median(result["client"])
    print(f"throughput on an idle bridge (median of {args.rounds}): batch {batch:.1f} lines/s, a client at "
          f"concurrency {args.concurrency} {client:.1f} requests/s: ratio {batch / client:.2f} (target >= 0.9)")
    print("per round: batch " + ", ".join(f"{rate:.1f}" for rate in result["batch"]) + "; client "
          + ", ".join(f"{rate:.1f}" for rate in result["client"]))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
