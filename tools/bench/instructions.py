"""``scripts/bench instructions``: the instructions a sidecar executes per plain request, this tree against another,
counted by valgrind's callgrind — a figure the machine's load does not move.

CPU time per request on a shared 2-core machine spreads by ±10 % from round to round even side by side
(tools/bench/latency/ab.py's control), so a difference of 1–2 % is below what one run resolves. Instructions are
counted, not timed: each side's ``serve`` runs under callgrind (every thread of it, its user space), installed from a
wheel of its tree as ``bench --ab-tree`` installs it (tools/bench/latency/install.py). After a warm-up the counters are
dumped and zeroed (``callgrind_control --dump``), the measured requests are sent, and a second dump holds them alone:
its total over the requests is the figure. With ``--envoy`` the same requests go through an Envoy in front of each side
(Envoy is not counted, only the sidecar's ext_proc door). What still varies from run to run is timing-driven work
(gRPC's poller wakes, a timer that fires or not): a couple of percent on the ext_proc door, less on the HTTP door — so
the sides alternate, ``--rounds`` times, and the report gives each round's ratio.

Work done by the clock rather than by the requests (the automations' scheduler asks the database once a second, the
memory watch reads the RSS) falls on the requests too: under callgrind a request takes ~50× its usual wall time, so a
once-a-second job costs each request ~50× what it would, and more on a loaded machine, where requests take longer.
So each door's counters are also read over ``--idle`` seconds with no request (after the warm-up, before the
measured requests): the report gives each side's idle instructions per second and the figure net of them (the raw
figure less the idle rate times the measured requests' wall time), the part the requests themselves cost.
"""

from __future__ import annotations

import argparse
import asyncio
import re
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import aiohttp

from responses_bridge.demo.procs import ManagedProcess, wait_http

from .callgrind_costs import differences
from .latency.ab import Side, upstream_and_trees
from .latency.requests import post, synthetic_body

_TOTALS = re.compile(rb"^(?:summary|totals):\s+(\d+)", re.M)
_START_SECONDS = 900.0  # an interpreter importing the bridge under callgrind: ~50× its usual time


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="scripts/bench instructions", description=__doc__.split("\n\n")[0])
    parser.add_argument("--ab-tree", default=None, help="the other tree (a checkout); default: this tree twice")
    parser.add_argument("--requests", type=int, default=300, help="measured JSON requests per side and door")
    parser.add_argument("--warmup", type=int, default=30, help="requests sent before the counters are zeroed")
    parser.add_argument("--rounds", type=int, default=1, help="sidecars started per side, A and B alternating")
    parser.add_argument("--envoy", action="store_true", help="also through Envoy (the ext_proc door)")
    parser.add_argument("--chunks", type=int, default=0, help="measured requests streamed, the fake upstream "
                        "answering in this many chunks --delay ms apart (each its own ext_proc message); 0: JSON. "
                        "Per chunk: the difference of two runs' figures over the difference of their chunks")
    parser.add_argument("--delay", type=int, default=15, help="ms between a streamed answer's chunks")
    parser.add_argument("--keep", metavar="DIR", default=None, help="copy each side's measured dump into DIR "
                        "(A-http.1.out, …) and print where the sides differ: by library and by function "
                        "(callgrind_costs.py)")
    parser.add_argument("--idle", type=float, default=10.0, help="seconds of no request counted per door, for the "
                        "idle rate subtracted in the net figures (0: none)")
    return parser


def _patient(node: Any) -> None:
    """An Envoy bootstrap made patient with a sidecar ~50× slower than usual: no health checks (whose 1 s
    timeout the processor under callgrind never meets), its per-message and request timeouts 10 minutes."""
    if isinstance(node, dict):
        node.pop("health_checks", None)
        for key in list(node):
            if key in ("message_timeout", "max_message_timeout", "timeout", "stream_idle_timeout"):
                node[key] = "600s"
            else:
                _patient(node[key])
    elif isinstance(node, list):
        for item in node:
            _patient(item)


def _dump(pid: int, out_dir: Path, keep_as: Path | None = None) -> int:
    """Dump and zero ``pid``'s counters; the instructions of the dump just written (copied to ``keep_as``)."""
    before = set(out_dir.iterdir())
    subprocess.run(["callgrind_control", "--dump", str(pid)], check=True, capture_output=True, timeout=600)
    written = sorted(set(out_dir.iterdir()) - before, key=lambda path: path.stat().st_mtime)
    if not written:
        raise RuntimeError("callgrind wrote no dump")
    found = _TOTALS.search(written[-1].read_bytes())
    if found is None:
        raise RuntimeError(f"no totals in {written[-1]}")
    if keep_as is not None:
        shutil.copyfile(written[-1], keep_as)
    return int(found.group(1))


async def _side(name: str, python: Path, tmp: str, upstream_url: str, args: argparse.Namespace
                ) -> dict[str, float]:
    """One sidecar of ``python``'s tree under callgrind, by door: instructions per JSON request (``door``), the
    idle instructions per second (``door idle/s``) and the figure net of them (``door net``)."""
    side = Side(name, tmp, upstream_url, [], {}, python)
    out_dir = Path(tmp, f"callgrind-{side.http_port}")
    await asyncio.to_thread(out_dir.mkdir)
    side.sidecar = ManagedProcess(["valgrind", "--tool=callgrind", f"--callgrind-out-file={out_dir}/out.%p",
                                   "--trace-children=no",
                                   "--compress-strings=no",  # each dump names its functions: --keep's annotatable
                                   *side.sidecar.argv],
                                  f"sidecar {name} (callgrind)", env=side.env)
    body = (synthetic_body(True, True, args.chunks, f" [delay={args.delay}]") if args.chunks > 0
            else synthetic_body(True, False, 1))
    figures: dict[str, float] = {}
    try:
        side.sidecar.start()
        await wait_http(f"http://127.0.0.1:{side.http_port}/health", timeout=_START_SECONDS, process=side.sidecar)
        doors = {"http": f"http://127.0.0.1:{side.http_port}/v1/responses"}
        if args.envoy:
            await side.start_envoy(edit=_patient)
            doors["envoy"] = f"http://127.0.0.1:{side.envoy_port}/v1/responses"
        async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=600)) as session:
            for door, url in doors.items():
                for _ in range(args.warmup):
                    await post(session, url, body, f"{name} {door}")
                await asyncio.to_thread(_dump, side.sidecar.pid, out_dir)
                idle_rate = 0.0
                if args.idle > 0:
                    started = time.monotonic()
                    await asyncio.sleep(args.idle)
                    idle = await asyncio.to_thread(_dump, side.sidecar.pid, out_dir)
                    idle_rate = idle / (time.monotonic() - started)
                started = time.monotonic()
                for _ in range(args.requests):
                    await post(session, url, body, f"{name} {door}")
                keep_as = None if args.keep is None else Path(args.keep, f"{name}-{door}.{args.round}.out")
                counted = await asyncio.to_thread(_dump, side.sidecar.pid, out_dir, keep_as)
                elapsed = time.monotonic() - started
                figures[door] = counted / args.requests
                figures[f"{door} idle/s"] = idle_rate
                figures[f"{door} net"] = (counted - idle_rate * elapsed) / args.requests
    finally:
        side.stop()
    return figures


async def run(args: argparse.Namespace) -> list[dict[str, dict[str, float]]]:
    """Each round's figures by side (A: this tree, B: ``--ab-tree``)."""
    for tool in ("valgrind", "callgrind_control"):
        if shutil.which(tool) is None:
            raise SystemExit(f"scripts/bench instructions: {tool} is not installed (apt-get install valgrind)")
    with tempfile.TemporaryDirectory(prefix="rb-bench-instr-") as tmp:
        upstream, upstream_url, python_a, python_b = await upstream_and_trees(args.ab_tree)
        upstream.start()
        rounds = []
        try:
            await wait_http(f"{upstream_url.removesuffix('/v1')}/health", process=upstream)
            for index in range(max(1, args.rounds)):
                order = [("A", python_a), ("B", python_b)][::1 if index % 2 == 0 else -1]
                args.round = index + 1
                rounds.append({name: await _side(name, python, tmp, upstream_url, args) for name, python in order})
        finally:
            upstream.stop()
    return rounds


def main() -> int:
    args = _parser().parse_args()
    if args.keep is not None:
        Path(args.keep).mkdir(parents=True, exist_ok=True)
    rounds = asyncio.run(run(args))
    kind = f"streamed request of {args.chunks} chunks" if args.chunks > 0 else "JSON request"
    print(f"instructions per {kind} (callgrind, {args.requests} requests after {args.warmup}, the sidecar's "
          "every thread); B: " + (args.ab_tree or "this tree again"))
    for index, figures in enumerate(rounds):
        for door in figures["A"]:
            if door.endswith(" idle/s") or door.endswith(" net"):
                continue
            a, b = figures["A"][door], figures["B"][door]
            line = f"  round {index + 1} {door:6} A {a / 1e6:7.3f} M   B {b / 1e6:7.3f} M   A/B {a / b:6.3f}"
            if args.idle > 0:
                net_a, net_b = figures["A"][f"{door} net"], figures["B"][f"{door} net"]
                line += (f"   net of idle: A {net_a / 1e6:7.3f} M   B {net_b / 1e6:7.3f} M   A/B {net_a / net_b:6.3f}"
                         f"   (idle: A {figures['A'][f'{door} idle/s'] / 1e3:5.0f} k/s   "
                         f"B {figures['B'][f'{door} idle/s'] / 1e3:5.0f} k/s)")
            print(line)
            if args.keep is None:
                continue
            kept = (Path(args.keep, f"A-{door}.{index + 1}.out"), Path(args.keep, f"B-{door}.{index + 1}.out"))
            if all(path.exists() for path in kept):
                print("\n".join(differences(*kept, args.requests)))
    return 0


if __name__ == "__main__":
    sys.exit(main())
