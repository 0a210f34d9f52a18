"""``scripts/bench agents``: what an Agents API session's turn costs over a plain response, through each door, in one
run, over the fake upstream.

Per door (the sidecar's HTTP door; Envoy with the bridge as its ext_proc processor, which routes ``/v1/agents`` to
the HTTP door), one round after another, requests one at a time and interleaved so a slow patch of the shared
machine hits every kind alike:

- ``floor``: the same answer as Chat Completions through the door's floor (tools/bench/latency/floors.py: a bare aiohttp
passthrough;
  Envoy's ext_proc filter with a processor that changes nothing) — the least any hop costs;
- ``response``: a stored streamed ``/v1/responses``;
- ``chained``: a second response chained on it (``previous_response_id``): the baseline a session's second turn is
  compared with, as both carry the first turn's context;
- ``background``: a background streamed response (what a turn runs on);
- ``session, first turn``: a new session (environment ``none``) streamed to its first idle;
- ``session, second turn``: a message posted to that session (202), then its events read to idle.

Reported: each kind's median time and its ratio to ``chained`` and to the door's floor; then CPU per request
(latency/cost.py's batches: each kind alone, the CPU its processes spent, the sidecar's and Envoy's apart,
medians of the rounds; read from the scheduler's nanosecond counts). The figures that carry between machines are the
ratios. ``--base-src DIR`` runs a second sidecar from another source tree beside this one, its HTTP door measured in the
same rounds (before and after a change, on the same machine at the same time). Usage: ``scripts/bench agents
[--rounds N] [--door http|envoy|both] [--cost-rounds N] [--cost-requests N] [--base-src DIR]``.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import statistics
import sys
import tempfile
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

import aiohttp
import orjson

from responses_bridge.demo.procs import ManagedProcess, free_port, wait_http

from ...process_memory import tree_pids
from ..latency.bench import _start_envoy, bench_processes, bootstrap_renderer

BETA = {"OpenAI-Beta": "agents=v1"}
TEXT = "hello there [chunks=20]"
KINDS = ("floor", "response", "chained", "background", "session, first turn", "session, second turn")
IDLE = b"event: agent.session.idle\n"


@dataclass
class Door:
    name: str
    base: str  # where the Responses and Agents requests go
    floor_url: str  # the door's floor: Chat Completions through a hop that changes nothing
    own: list[ManagedProcess]  # the sidecar
    floor_own: list[ManagedProcess]  # the floor's processor
    envoy: ManagedProcess | None = None
    times: dict[str, list[float]] = field(default_factory=dict)
    cpu: dict[str, list[float]] = field(default_factory=dict)
    envoy_cpu: dict[str, list[float]] = field(default_factory=dict)


def cpu_seconds(processes: list[ManagedProcess]) -> float:
    """CPU seconds spent so far by ``processes``, their descendants and every thread of each, from the scheduler's
    own nanosecond count (``/proc/<pid>/task/<tid>/schedstat``): the clock ticks of ``/proc/<pid>/stat`` (10 ms) are
    coarser than a whole session turn."""
    total = 0
    for pid in tree_pids(processes):
        try:
            tasks = os.listdir(f"/proc/{pid}/task")
        except OSError:  # ended meanwhile
            continue
        for tid in tasks:
            try:
                with open(f"/proc/{pid}/task/{tid}/schedstat", "rb") as stat:
                    total += int(stat.read().split()[0])
            except (OSError, ValueError, IndexError):
                continue
    return total / 1e9


async def _read_to_idle(answer: aiohttp.ClientResponse) -> bytes:
    raw = b""
    async for chunk in answer.content.iter_any():
        raw += chunk
        if IDLE in raw and raw.endswith(b"\n\n"):
            break
    return raw


async def _ok(answer: aiohttp.ClientResponse, what: str) -> bytes:
    raw = await answer.read()
    if answer.status != 200:
        raise RuntimeError(f"{what}: HTTP {answer.status}: {raw[:300]!r}")
    return raw


class Requests:
    """One request of each kind against a door; ``prepare`` makes what a kind builds on (the response a chained one
    names, the idle session a second turn goes to) outside of what is timed."""

    def __init__(self, http: aiohttp.ClientSession, door: Door) -> None:
        self.http, self.door = http, door

    async def floor(self, _: Any = None) -> None:
        body = {"model": "fake-model", "messages": [{"role": "user", "content": TEXT}], "stream": True,
                "stream_options": {"include_usage": True}}
        async with self.http.post(self.door.floor_url, json=body) as answer:
            await _ok(answer, "floor")

    async def response(self, _: Any = None, **extra: Any) -> str:
        body = {"model": "fake-model", "input": TEXT, "stream": True, **extra}
        async with self.http.post(f"{self.door.base}/v1/responses", json=body) as answer:
            raw = await _ok(answer, "response")
        return str(orjson.loads(raw.split(b"data: ", 2)[1].split(b"\n", 1)[0])["response"]["id"])

    async def chained(self, previous: str) -> None:
        await self.response(previous_response_id=previous)

    async def background(self, _: Any = None) -> None:
        await self.response(background=True)

    async def first_turn(self, _: Any = None) -> tuple[str, str]:
        """A new session to idle: its id and the id of its last event."""
        body = {"agent": {"model": "fake-model"}, "environment": {"type": "none"}, "input": TEXT, "stream": True}
        async with self.http.post(f"{self.door.base}/v1/agents/sessions", headers=BETA, json=body) as answer:
            if answer.status != 200:
                raise RuntimeError(f"session: HTTP {answer.status}: {await answer.text()}")
            raw = await _read_to_idle(answer)
        session_id = orjson.loads(raw.split(b"data: ", 1)[1].split(b"\n", 1)[0])["session"]["id"]
        last = raw.rsplit(b"\nid: ", 1)[-1].split(b"\n", 1)[0].decode()
        return session_id, last

    async def second_turn(self, session: tuple[str, str]) -> None:
        session_id, last = session
        message = {"type": "agent.session.input.message",
                   "input": [{"role": "user", "content": [{"type": "input_text", "text": TEXT}]}]}
        url = f"{self.door.base}/v1/agents/sessions/{session_id}/events"
        async with self.http.post(url, headers=BETA, json={"events": [message]}) as answer:
            if answer.status != 202:
                raise RuntimeError(f"message: HTTP {answer.status}: {await answer.text()}")
        async with self.http.get(url, headers=BETA, params={"after": last, "until_idle": "true"}) as answer:
            await _read_to_idle(answer)

    def kinds(self) -> dict[str, tuple[Callable[[], Awaitable[Any]] | None, Callable[[Any], Awaitable[Any]]]]:
        """Per kind: what to prepare (None: nothing) and the timed request."""
        return {"floor": (None, self.floor), "response": (None, self.response),
                "chained": (self.response, self.chained), "background": (None, self.background),
                "session, first turn": (None, self.first_turn),
                "session, second turn": (self.first_turn, self.second_turn)}


async def measure_latency(doors: list[Door], rounds: int) -> None:
    async with aiohttp.ClientSession() as http:
        requests = [Requests(http, door) for door in doors]
        for round_ in range(rounds + 10):
            for request in requests:
                for kind, (prepare, timed) in request.kinds().items():
                    ready = await prepare() if prepare is not None else None
                    started = time.perf_counter()
                    await timed(ready)
                    if round_ >= 10:  # the first rounds warm up
                        request.door.times.setdefault(kind, []).append(time.perf_counter() - started)


async def measure_cpu(doors: list[Door], rounds: int, count: int) -> None:
    """Each kind alone, ``count`` requests a batch, charged with the CPU its processes spent meanwhile."""
    async with aiohttp.ClientSession() as http:
        for round_ in range(rounds):
            for door in doors[round_ % len(doors):] + doors[:round_ % len(doors)]:
                request = Requests(http, door)
                for kind, (prepare, timed) in request.kinds().items():
                    ready = [await prepare() if prepare is not None else None for _ in range(count)]
                    await asyncio.sleep(0.2)  # what preparing left (a turn's last writes) is done before
                    own = door.floor_own if kind == "floor" else door.own
                    before, envoy_before = cpu_seconds(own), cpu_seconds([door.envoy] if door.envoy else [])
                    for each in ready:
                        await timed(each)
                    door.cpu.setdefault(kind, []).append((cpu_seconds(own) - before) / count)
                    if door.envoy is not None:
                        spent = cpu_seconds([door.envoy]) - envoy_before
                        door.envoy_cpu.setdefault(kind, []).append(spent / count)


def report(doors: list[Door], rounds: int, cost_rounds: int) -> None:
    for door in doors:
        chained = statistics.median(door.times["chained"])
        floor = statistics.median(door.times["floor"])
        print(f"\n{door.name} door ({rounds} rounds; CPU: medians of {cost_rounds} rounds)")
        print(f"{'kind':24s}{'median ms':>11s}{'/ chained':>11s}{'/ floor':>9s}{'CPU ms':>9s}{'Envoy CPU ms':>14s}")
        for kind in KINDS:
            median = statistics.median(door.times[kind])
            cpu = f"{statistics.median(door.cpu[kind]) * 1000:9.2f}" if door.cpu.get(kind) else f"{'-':>9s}"
            envoy = (f"{statistics.median(door.envoy_cpu[kind]) * 1000:14.2f}" if door.envoy_cpu.get(kind)
                     else f"{'-':>14s}")
            print(f"{kind:24s}{median * 1000:11.2f}{median / chained:11.2f}{median / floor:9.2f}{cpu}{envoy}")
    for door in doors:
        times = {kind: statistics.median(spent) for kind, spent in door.times.items()}
        second, background = times["session, second turn"] / times["chained"], times["background"] / times["response"]
        line = (f"{door.name}: a session's second turn over a chained response {second:.2f}x, a background response "
                f"over a response {background:.2f}x")
        if door.cpu:
            used = {kind: statistics.median(spent) for kind, spent in door.cpu.items()}
            line += (f"; CPU {used['session, second turn'] / used['chained']:.2f}x and "
                     f"{used['background'] / used['response']:.2f}x")
        print(line)


async def main(args: argparse.Namespace) -> None:
    with tempfile.TemporaryDirectory(prefix="rb-bench.agents-") as tmp:
        envoy_wanted = args.door in ("envoy", "both")
        (upstream_port, floor_port, http_port, extproc_port), processes = bench_processes(tmp, (), envoy_wanted)
        upstream, http_floor, sidecar = processes
        upstream_url = f"http://127.0.0.1:{upstream_port}/v1"
        base, base_port = None, free_port()
        if args.base_src:  # the same sidecar from another source tree, its HTTP door beside this one's
            base = ManagedProcess([sys.executable, "-m", "responses_bridge", "serve", "--upstream", upstream_url,
                                   "--http-port", str(base_port), "--no-extproc", "--db", f"{tmp}/base.db",
                                   "--log-level", "warning"], "base sidecar", quiet=False,
                                  env={"PYTHONPATH": args.base_src})
        try:
            for process in processes:
                process.start()
            for port, process in ((upstream_port, upstream), (floor_port, http_floor), (http_port, sidecar)):
                await wait_http(f"http://127.0.0.1:{port}/health", process=process)
            doors = []
            floor_url = f"http://127.0.0.1:{floor_port}/v1/chat/completions"
            if base is not None:
                processes.insert(3, base)
                base.start()
                await wait_http(f"http://127.0.0.1:{base_port}/health", process=base)
                doors.append(Door("http (base)", f"http://127.0.0.1:{base_port}", floor_url, [base], [http_floor]))
            if args.door in ("http", "both"):
                doors.append(Door("http", f"http://127.0.0.1:{http_port}", floor_url, [sidecar], [http_floor]))
            if envoy_wanted:
                envoy_port, envoy_floor_port, _ = await _start_envoy(tmp, bootstrap_renderer([]), processes,
                                                                     upstream_url, http_port, extproc_port, None)
                noop, envoy = processes[-2:]
                # the floor listener's Responses route with a Chat Completions body: the no-op processor passes it
                # on unchanged and the route sends it to the upstream's /chat/completions
                # (tools/bench/latency/floors.py)
                doors.append(Door("envoy", f"http://127.0.0.1:{envoy_port}",
                                  f"http://127.0.0.1:{envoy_floor_port}/v1/responses", [sidecar], [noop], envoy))
            await measure_latency(doors, args.rounds)
            if args.cost_rounds > 0:
                await measure_cpu(doors, args.cost_rounds, args.cost_requests)
        finally:
            for process in reversed(processes):
                process.stop()
    report(doors, args.rounds, args.cost_rounds)


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="scripts/bench agents", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("rounds_positional", nargs="?", type=int, help=argparse.SUPPRESS)  # the old usage
    parser.add_argument("--rounds", type=int, default=100, help="latency rounds (after 10 to warm up)")
    parser.add_argument("--door", choices=("http", "envoy", "both"), default="both", help="the doors measured")
    parser.add_argument("--cost-rounds", type=int, default=3, help="rounds of the CPU section; 0 skips it")
    parser.add_argument("--cost-requests", type=int, default=20, help="requests a kind in one CPU round")
    parser.add_argument("--base-src", metavar="DIR",
                        help="also run the sidecar from another checkout's src (git archive <commit> src | tar -x "
                        "-C DIR), its HTTP door measured beside this one's in the same rounds: before and after")
    args = parser.parse_args(argv)
    if args.rounds_positional is not None:
        args.rounds = args.rounds_positional
    if args.base_src:
        args.base_src = os.path.join(os.path.abspath(args.base_src), "src")
    return args


if __name__ == "__main__":
    asyncio.run(main(parse_args()))
