"""``responses-bridge bench --soak SECONDS``: minutes of mixed traffic, and whether the sidecar stays flat.

``--concurrency`` clients each loop over the same mix, through every door measured (HTTP, and Envoy with
``--envoy``): a plain answer, a stream, a stored chain (create, continue with ``previous_response_id``, retrieve,
delete), a stored request of 2,000 input items, a misspelled field (a 400 is its success), and a WebSocket with two
turns (HTTP door). Every second the sidecar's resident memory and open descriptors are read (summed over its
processes). The report: requests and failures by kind (a failure is any other status, a broken stream or an
exception), RSS at the start and the end of the steady part and its slope by least squares over the steady part
(the first quarter is warm-up: caches, connection pools, the allocator's arenas), and descriptors likewise.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import statistics
import time
from collections import Counter
from collections.abc import Awaitable, Callable
from typing import Any

import aiohttp
import orjson

from responses_bridge.demo.procs import ManagedProcess

from .memory import SidecarMemory, long_session

Exchange = Callable[[], Awaitable[None]]
"""One exchange of the mix: it raises on anything but the answer it expects."""

WARM_UP = 0.25
"""The share of the soak left out of the steady figures."""


def add_arguments(parser: Any) -> None:
    parser.add_argument("--soak", type=float, metavar="SECONDS",
                        help="instead of latency, run mixed traffic this long and report the sidecar's memory, "
                        "descriptors and failures over time (soak.py)")


def _descriptors(pid: int) -> int:
    try:
        return len(os.listdir(f"/proc/{pid}/fd"))
    except OSError:
        return 0


class _Traffic:
    """One door's mix. Each method is one exchange; it raises on anything but the answer it expects."""

    def __init__(self, session: aiohttp.ClientSession, url: str, websocket_url: str | None) -> None:
        self.session, self.url, self.websocket_url = session, url, websocket_url
        self.large = orjson.dumps(long_session(2_000, True))

    async def _post(self, body: dict[str, Any] | bytes, expect: int = 200) -> dict[str, Any]:
        data = body if isinstance(body, bytes) else orjson.dumps(body)
        async with self.session.post(self.url, data=data, headers={"Content-Type": "application/json"}) as answer:
            text = await answer.read()
            if answer.status != expect:
                raise RuntimeError(f"HTTP {answer.status}: {text[:200]!r}")
            return orjson.loads(text) if text.startswith(b"{") else {}

    async def json(self) -> None:
        await self._post({"model": "fake-model", "input": "soak", "store": False})

    async def stream(self) -> None:
        body = {"model": "fake-model", "input": "[chunks=20] soak", "stream": True, "store": False}
        async with self.session.post(self.url, json=body) as answer:
            data = await answer.read()
            if answer.status != 200 or b"response.completed" not in data:
                raise RuntimeError(f"a stream ended without response.completed (HTTP {answer.status})")

    async def chain(self) -> None:
        first = await self._post({"model": "fake-model", "input": "one", "store": True})
        second = await self._post({"model": "fake-model", "input": "two", "store": True,
                                   "previous_response_id": first["id"]})
        for response_id in (first["id"], second["id"]):
            async with self.session.get(f"{self.url}/{response_id}") as answer:
                await answer.read()
                if answer.status != 200:
                    raise RuntimeError(f"retrieve: HTTP {answer.status}")
        for response_id in (second["id"], first["id"]):
            async with self.session.delete(f"{self.url}/{response_id}") as answer:
                await answer.read()
                if answer.status != 200:
                    raise RuntimeError(f"delete: HTTP {answer.status}")

    async def large_input(self) -> None:
        await self._post(self.large)

    async def misspelled(self) -> None:
        await self._post({"model": "fake-model", "input": "x", "temprature": 0.5}, expect=400)

    async def websocket(self) -> None:
        if self.websocket_url is None:
            return
        async with self.session.ws_connect(self.websocket_url) as ws:
            for text in ("one", "two"):
                await ws.send_str(orjson.dumps({"type": "response.create", "model": "fake-model", "input": text,
                                                "store": False}).decode())
                while True:
                    event = orjson.loads((await ws.receive(timeout=60)).data)
                    if event["type"] == "response.completed":
                        break
                    if event["type"] in ("error", "response.failed", "response.incomplete"):
                        raise RuntimeError(f"WebSocket turn: {event['type']}")

    def mix(self) -> list[tuple[str, Exchange]]:
        kinds: list[tuple[str, Exchange]] = [
            ("json", self.json), ("stream", self.stream), ("chain", self.chain), ("large_input", self.large_input),
            ("misspelled", self.misspelled)]
        return kinds + ([("websocket", self.websocket)] if self.websocket_url is not None else [])


def _slope_per_minute(samples: list[tuple[float, float]]) -> float:
    """The least-squares slope of (seconds, value) samples, per minute; 0 for fewer than two."""
    if len(samples) < 2:
        return 0.0
    return statistics.linear_regression([t for t, _ in samples], [v for _, v in samples]).slope * 60


async def soak(args: Any, sidecar: ManagedProcess, doors: dict[str, str], websocket_url: str) -> dict[str, Any]:
    """``doors`` maps each door's name to its ``/v1/responses`` URL; the WebSocket goes with the HTTP door's."""
    done: Counter[str] = Counter()
    failed: Counter[str] = Counter()
    examples: dict[str, str] = {}
    samples: list[tuple[float, float, int]] = []
    started = time.monotonic()
    deadline = started + args.soak

    memory = SidecarMemory(sidecar)

    def read() -> None:
        samples.append((time.monotonic() - started, memory.now(), sum(map(_descriptors, memory.pids()))))

    async def sampler() -> None:
        while True:
            read()
            await asyncio.sleep(1.0)

    async def client(mix: list[tuple[str, Exchange]], offset: int) -> None:
        turn = offset
        while time.monotonic() < deadline:
            kind, exchange = mix[turn % len(mix)]
            turn += 1
            try:
                await exchange()
                done[kind] += 1
            except (TimeoutError, RuntimeError, aiohttp.ClientError, KeyError, ValueError) as exc:
                failed[kind] += 1
                examples.setdefault(kind, f"{type(exc).__name__}: {exc}"[:300])

    timeout = aiohttp.ClientTimeout(total=120)
    async with aiohttp.ClientSession(timeout=timeout, connector=aiohttp.TCPConnector(limit=0)) as session:
        mixes = {door: _Traffic(session, url, websocket_url if door == "http" else None).mix()
                 for door, url in doors.items()}
        sampling = asyncio.create_task(sampler())
        try:
            await asyncio.gather(*(client(mix, i) for mix in mixes.values() for i in range(args.concurrency)))
        finally:
            sampling.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await sampling
        read()
    steady = [s for s in samples if s[0] >= args.soak * WARM_UP] or samples
    return {"soak": {"seconds": args.soak, "doors": list(doors), "concurrency_per_door": args.concurrency,
                     "requests": dict(done), "failures": dict(failed), "failure_examples": examples,
                     "rss_mib": {"start": samples[0][1], "steady_start": steady[0][1], "end": steady[-1][1],
                                 "max": max(s[1] for s in samples),
                                 "slope_per_minute": _slope_per_minute([(t, rss) for t, rss, _ in steady])},
                     "descriptors": {"start": samples[0][2], "steady_start": steady[0][2], "end": steady[-1][2],
                                     "max": max(s[2] for s in samples),
                                     "slope_per_minute": _slope_per_minute([(t, float(fds)) for t, _, fds in steady])}}}


def print_soak(results: dict[str, Any]) -> None:
    figures = results["soak"]
    total, failures = sum(figures["requests"].values()), sum(figures["failures"].values())
    print(f"soak: {figures['seconds']:.0f} s, doors {', '.join(figures['doors'])}, {figures['concurrency_per_door']} "
          f"clients per door: {total} exchanges, {failures} failures")
    for kind in sorted(set(figures["requests"]) | set(figures["failures"])):
        example = figures["failure_examples"].get(kind)
        print(f"  {kind:<12}{figures['requests'].get(kind, 0):>8} ok{figures['failures'].get(kind, 0):>6} failed"
              + (f"  ({example})" if example else ""))
    for name, unit in (("rss_mib", "MiB"), ("descriptors", "")):
        row = figures[name]
        print(f"  {name:<12} start {row['start']:.0f}, steady {row['steady_start']:.0f} → {row['end']:.0f} {unit}, "
              f"max {row['max']:.0f}, slope {row['slope_per_minute']:+.2f}{(' ' + unit) if unit else ''}/min")
