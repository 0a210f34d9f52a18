"""What a request and a streamed chunk cost, for ``responses-bridge bench``: CPU time and ext_proc messages.

Latency on a shared 2-core machine moves with every neighbour, and the floors move with it; what a deployment pays
is CPU. So each target is given batches of its own, one after another (never interleaved inside one batch, or a
process's CPU could not be told apart between targets), in several rounds that alternate the targets, and each batch
is charged with the CPU time (user + system, from ``/proc/<pid>/stat``, summed over the process and every descendant:
all ``--workers``) its processes spent meanwhile:

* the target's own process: the sidecar for ``http`` and ``envoy``, the passthrough proxy for ``http-floor``, the
  no-op processor for ``envoy-floor``;
* Envoy's, separately, for the targets behind it.

Three batches per target and round: JSON requests, streams whose chunks come back to back (``bursted``), and
streams whose chunks come ``--pace`` ms apart, as a model sends them (``paced``: the fake upstream's ``[delay=MS]``).
A chunk's cost is (a stream's CPU - a JSON request's) / chunks. Figures are medians over the rounds.

Through Envoy, the messages the ext_proc filter exchanged (Envoy's ``http.<listener>.ext_proc.stream_msgs_sent``
and ``stream_msgs_received`` counters, read from its admin page around each batch) are counted per request and per
chunk the same way: what a processing mode costs in gRPC round trips.
"""

from __future__ import annotations

import os
import statistics
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import aiohttp

from responses_bridge.demo.procs import ManagedProcess

from ...process_memory import tree_pids

CLOCK_TICKS = os.sysconf("SC_CLK_TCK")
KINDS = ("json", "bursted", "paced")
MESSAGE_COUNTERS = ("stream_msgs_sent", "stream_msgs_received")
BRIDGE_LISTENER = "responses_bridge"  # the stat prefix of the bootstrap's client-facing listener (listeners.py)


def cpu_seconds(processes: Sequence[ManagedProcess]) -> float:
    """User + system CPU seconds of each process and all its live descendants, summed."""
    total = 0
    for pid in tree_pids(processes):
        try:
            with open(f"/proc/{pid}/stat", "rb") as stat:
                fields = stat.read().rsplit(b")", 1)[1].split()
        except OSError:  # ended meanwhile
            continue
        total += int(fields[11]) + int(fields[12])  # utime, stime: fields 14 and 15 of stat(5)
    return total / CLOCK_TICKS


@dataclass
class CostTarget:
    """One target of the cost section: where to send, its own processes, and, behind Envoy, Envoy's admin port and
    the listener's stat prefix."""

    name: str
    url: str
    bodies: dict[str, bytes]  # per kind of KINDS
    own: list[ManagedProcess]
    envoy: ManagedProcess | None = None
    admin_port: int | None = None
    stat_prefix: str | None = None
    samples: dict[str, list[float]] = field(default_factory=dict)


async def envoy_messages(session: aiohttp.ClientSession, admin_port: int, stat_prefix: str) -> int:
    """Messages the ext_proc filters of listener ``stat_prefix`` have sent and received so far."""
    async with session.get(f"http://127.0.0.1:{admin_port}/stats", params={"filter": "ext_proc"}) as response:
        text = await response.text()
    wanted = {f"http.{stat_prefix}.ext_proc.{counter}" for counter in MESSAGE_COUNTERS}
    total = 0
    for line in text.splitlines():
        name, _, value = line.partition(": ")
        if name in wanted:
            total += int(value)
    return total


async def _batch(session: aiohttp.ClientSession, target: CostTarget, kind: str, count: int,
                 send: Callable[[aiohttp.ClientSession, str, bytes], Awaitable[float]]) -> None:
    """``count`` requests of ``kind``, one at a time; the CPU and messages they cost, per request, into samples."""
    messages_before = (await envoy_messages(session, target.admin_port, target.stat_prefix)
                       if target.admin_port and target.stat_prefix else None)
    own_before = cpu_seconds(target.own)
    envoy_before = cpu_seconds([target.envoy]) if target.envoy else 0.0
    for _ in range(count):
        await send(session, target.url, target.bodies[kind])
    own = (cpu_seconds(target.own) - own_before) / count
    target.samples.setdefault(f"{kind}_cpu", []).append(own)
    if target.envoy:
        target.samples.setdefault(f"{kind}_envoy_cpu", []).append((cpu_seconds([target.envoy]) - envoy_before)
                                                                  / count)
    if messages_before is not None:
        assert target.admin_port and target.stat_prefix
        after = await envoy_messages(session, target.admin_port, target.stat_prefix)
        target.samples.setdefault(f"{kind}_messages", []).append((after - messages_before) / count)


async def measure_costs(session: aiohttp.ClientSession, targets: list[CostTarget], *, rounds: int, requests: int,
                        streams: int, send: Callable[[aiohttp.ClientSession, str, bytes], Awaitable[float]]) -> None:
    """``rounds`` rounds; in each, every target gets its JSON, bursted and paced batches, the targets' order
    turned by one each round so no target always runs first."""
    for round_index in range(rounds):
        turn = round_index % len(targets)
        for target in targets[turn:] + targets[:turn]:
            for kind in KINDS:
                await _batch(session, target, kind, requests if kind == "json" else streams, send)


def _per_chunk(samples: dict[str, list[float]], kind: str, prefix: str, chunks: int) -> list[float]:
    """Per round: (a stream's figure - a JSON request's) / chunks."""
    return [(stream - json) / chunks for stream, json in zip(samples[f"{kind}_{prefix}"], samples[f"json_{prefix}"],
                                                             strict=True)]


def summarise_costs(targets: list[CostTarget], chunks: int) -> dict[str, dict[str, Any]]:
    """Per target: CPU ms per JSON request and µs per chunk (bursted, paced), its own and Envoy's; messages per
    JSON request and per chunk. Medians over the rounds."""
    report: dict[str, dict[str, Any]] = {}
    for target in targets:
        s = target.samples
        figures: dict[str, Any] = {"cpu_ms_per_json": statistics.median(s["json_cpu"]) * 1000}
        for kind in ("bursted", "paced"):
            figures[f"cpu_us_per_chunk_{kind}"] = statistics.median(_per_chunk(s, kind, "cpu", chunks)) * 1e6
        if target.envoy:
            figures["envoy_cpu_ms_per_json"] = statistics.median(s["json_envoy_cpu"]) * 1000
            for kind in ("bursted", "paced"):
                figures[f"envoy_cpu_us_per_chunk_{kind}"] = statistics.median(
                    _per_chunk(s, kind, "envoy_cpu", chunks)) * 1e6
        if "json_messages" in s:
            figures["messages_per_json"] = statistics.median(s["json_messages"])
            figures["messages_per_stream"] = statistics.median(s["paced_messages"])
            figures["messages_per_chunk"] = statistics.median(_per_chunk(s, "paced", "messages", chunks))
        report[target.name] = figures
    return report


COLUMNS = (("cpu_ms_per_json", "CPU ms/JSON", ".3f"), ("cpu_us_per_chunk_bursted", "µs/chunk burst", ".1f"),
           ("cpu_us_per_chunk_paced", "µs/chunk paced", ".1f"), ("envoy_cpu_ms_per_json", "Envoy ms/JSON", ".3f"),
           ("envoy_cpu_us_per_chunk_paced", "Envoy µs/chunk", ".1f"), ("messages_per_json", "msgs/JSON", ".1f"),
           ("messages_per_chunk", "msgs/chunk", ".2f"))


def print_costs(costs: dict[str, dict[str, Any]], *, rounds: int, pace_ms: int) -> None:
    print(f"\nCPU per request and per chunk (own process; Envoy's apart), medians of {rounds} rounds; paced: "
          f"chunks {pace_ms} ms apart")
    print(f"{'target':<14}" + "".join(f"{title:>16}" for _, title, _ in COLUMNS))
    for name, figures in costs.items():
        cells = "".join(f"{format(figures[key], spec) if key in figures else '-':>16}" for key, _, spec in COLUMNS)
        print(f"{name:<14}{cells}")
