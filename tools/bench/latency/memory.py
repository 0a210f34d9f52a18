"""``responses-bridge bench --memory``: what one large request costs the sidecar in memory, and what it keeps.

The case that matters is an agent's long session sent whole: ``--memory-items`` input items in one body. It is
sent per door (HTTP, and Envoy with ``--envoy``) with ``store`` on and off, ``--memory-parallel`` of them at once
(the process's memory budget may answer some with 503: that is the bound working, and is reported), and queued
as ``--memory-queued`` turns on one WebSocket. For each case: the sidecar's RSS at rest just before it, its peak
while it runs, and its RSS ``--memory-settle`` seconds after the last answer, each above that rest, and the peak
per MiB of body. The peak is the kernel's high-water mark (VmHWM, reset through ``/proc/PID/clear_refs`` before
the case) where the kernel lets this process reset it, and RSS sampled every 20 ms besides; the larger is kept.
Summed over the sidecar's processes when it runs workers. The bounds printed beside the figures are the ones the
bridge is built to (peak ≤ 30 × body + 64 MiB, after ≤ 48 MiB); nothing here asserts them.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import os
from collections.abc import Awaitable, Callable
from typing import Any

import aiohttp
import orjson

from responses_bridge.demo.procs import ManagedProcess

from ...process_memory import family_pids, family_rss_mb, process_status_mb

MIB = 1024 * 1024
PEAK_PER_BODY, PEAK_SLACK_MIB, AFTER_MIB = 30, 64, 48
"""The bounds the figures are printed against: peak ≤ 30 × body + 64 MiB above rest, ≤ 48 MiB after settling."""


def add_arguments(parser: Any) -> None:
    parser.add_argument("--memory", action="store_true",
                        help="instead of latency, measure the sidecar's memory for large requests (memory.py)")
    parser.add_argument("--memory-items", type=int, default=100_000, metavar="N",
                        help="input items in each request of the memory section")
    parser.add_argument("--memory-parallel", type=int, default=4, metavar="N",
                        help="such requests sent at once in the memory section's parallel case")
    parser.add_argument("--memory-queued", type=int, default=4, metavar="N",
                        help="such turns queued on one WebSocket in the memory section")
    parser.add_argument("--memory-settle", type=float, default=10.0, metavar="S",
                        help="seconds after a case's last answer before its resident memory is read again")


class SidecarMemory:
    """The resident memory of the sidecar's processes: now, and the most seen since :meth:`start_peak`."""

    def __init__(self, sidecar: ManagedProcess) -> None:
        self.sidecar = sidecar
        self.sampled = 0.0
        self.high_water_reset = False

    def pids(self) -> list[int]:
        return family_pids(self.sidecar.pid)

    def now(self) -> float:
        return family_rss_mb(self.sidecar.pid)

    def start_peak(self) -> None:
        """Reset each process's VmHWM (``5`` to clear_refs, Linux ≥ 4.0) and the sampled peak."""
        self.sampled = self.now()
        try:
            for pid in self.pids():
                with open(f"/proc/{pid}/clear_refs", "w") as clear_refs:
                    clear_refs.write("5")
            self.high_water_reset = True
        except OSError:
            self.high_water_reset = False

    async def sample(self) -> None:
        while True:
            self.sampled = max(self.sampled, self.now())
            await asyncio.sleep(0.02)

    def peak(self) -> float:
        high_water = sum(process_status_mb(pid, "VmHWM") for pid in self.pids()) if self.high_water_reset else 0.0
        return max(self.sampled, self.now(), high_water)


def long_session(items: int, store: bool) -> dict[str, Any]:
    """A request carrying ``items`` short user messages: the shape of a long agent session sent whole."""
    return {"model": "fake-model", "input": [{"role": "user", "content": f"m{i}"} for i in range(items)],
            "store": store}


async def _post(session: aiohttp.ClientSession, url: str, body: bytes) -> int:
    async with session.post(url, data=body, headers={"Content-Type": "application/json"}) as response:
        await response.read()
        return response.status


async def _queued_turns(session: aiohttp.ClientSession, url: str, frames: list[bytes]) -> list[int]:
    """Every frame sent at once on one WebSocket (the turns queue behind the first), then each turn's outcome:
    200 for ``response.completed``, the error's status otherwise."""
    statuses: list[int] = []
    async with session.ws_connect(url, max_msg_size=0) as ws:
        for frame in frames:
            await ws.send_bytes(frame)
        while len(statuses) < len(frames):
            message = await ws.receive(timeout=600)
            if message.type != aiohttp.WSMsgType.TEXT:
                raise RuntimeError(f"the WebSocket closed with {len(statuses)} of {len(frames)} turns answered")
            event = orjson.loads(message.data)
            if event["type"] == "response.completed":
                statuses.append(200)
            elif event["type"] in ("error", "response.failed", "response.incomplete"):
                statuses.append(int(event.get("status") or 500))
    return statuses


async def _case(memory: SidecarMemory, name: str, body_bytes: int, settle: float,
                send: Callable[[], Awaitable[list[int]]]) -> dict[str, Any]:
    rest = memory.now()
    memory.start_peak()
    sampler = asyncio.create_task(memory.sample())
    try:
        statuses = await send()
    finally:
        sampler.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await sampler
    peak = memory.peak()
    await asyncio.sleep(settle)
    after = memory.now()
    body_mib = body_bytes / MIB
    return {"case": name, "body_mib": body_mib, "statuses": statuses, "rest_mib": rest,
            "peak_above_rest_mib": peak - rest, "peak_per_body_mib": (peak - rest) / body_mib,
            "after_above_rest_mib": after - rest, "peak_bound_mib": PEAK_PER_BODY * body_mib + PEAK_SLACK_MIB,
            "after_bound_mib": AFTER_MIB, "high_water_mark": memory.high_water_reset}


async def measure_memory(args: Any, sidecar: ManagedProcess, doors: dict[str, str], websocket_url: str) -> dict:
    """Every case, one after another (each measured from the rest the one before it left). ``doors`` maps a door's
    name to its ``/v1/responses`` URL."""
    memory = SidecarMemory(sidecar)
    cases: list[dict[str, Any]] = []
    timeout = aiohttp.ClientTimeout(total=900)
    async with aiohttp.ClientSession(timeout=timeout, connector=aiohttp.TCPConnector(limit=0)) as session:
        for url in doors.values():
            await _post(session, url, orjson.dumps(long_session(10, True)))  # warm: connections, first code paths
        for door, url in doors.items():
            for store in (True, False):
                body = orjson.dumps(long_session(args.memory_items, store))
                cases.append(await _case(memory, f"{door} store={str(store).lower()}", len(body), args.memory_settle,
                                         functools.partial(_gather_posts, session, url, [body])))
            bodies = [orjson.dumps(long_session(args.memory_items, True))] * args.memory_parallel
            cases.append(await _case(memory, f"{door} {args.memory_parallel} at once", sum(map(len, bodies)),
                                     args.memory_settle, functools.partial(_gather_posts, session, url, bodies)))
        frames = [orjson.dumps({"type": "response.create", **long_session(args.memory_items, True)})
                  for _ in range(args.memory_queued)]
        cases.append(await _case(memory, f"websocket {args.memory_queued} queued", sum(map(len, frames)),
                                 args.memory_settle, functools.partial(_queued_turns, session, websocket_url, frames)))
    return {"memory": cases, "memory_items": args.memory_items, "sidecar_pid": sidecar.pid,
            "malloc_arena_max": os.environ.get("MALLOC_ARENA_MAX")}


async def _gather_posts(session: aiohttp.ClientSession, url: str, bodies: list[bytes]) -> list[int]:
    return list(await asyncio.gather(*(_post(session, url, body) for body in bodies)))


def print_memory(results: dict[str, Any]) -> None:
    print(f"memory: {results['memory_items']:,} input items per request; MiB above the sidecar's rest before each "
          "case; bounds: peak ≤ 30 × body + 64, after ≤ 48")
    print(f"{'case':<26}{'body':>8}{'peak':>9}{'bound':>9}{'per body':>10}{'after':>8}  statuses")
    for case in results["memory"]:
        statuses = ",".join(str(status) for status in case["statuses"])
        print(f"{case['case']:<26}{case['body_mib']:>8.1f}{case['peak_above_rest_mib']:>+9.0f}"
              f"{case['peak_bound_mib']:>9.0f}{case['peak_per_body_mib']:>10.1f}"
              f"{case['after_above_rest_mib']:>+8.0f}  {statuses}")
