"""``scripts/bench programs [--base REV] [N]``: what a program of programmatic tool calling costs, as ratios.

- in process: one program (``return 1``, and one replaying 1000 tool calls) run in a V8 isolate in this thread
  (the old path) and in a worker process of the pool (the path programs take now): median times and the worker
  path's ratio to the in-thread one;
- end to end: one request through the HTTP door whose model writes a program (``js: return 1``: two turns and the
  program), and a plain one-turn request: median time, and CPU seconds per request of the sidecar and every process
  under it (its program workers). With ``--base REV``, that revision's sidecar (its ``src`` from ``git archive``:
  tools/bench/base_tree.py) runs beside this checkout's in the same run (requests dealt in turn, so the machine's
  load weighs on both alike) and each figure is given as this checkout's ratio to the base's.

Median over N runs of each (default 200).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import os
import statistics
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import aiohttp
import psutil  # type: ignore[import-untyped]

from responses_bridge.run.programs.isolate import Limits, run_program
from responses_bridge.run.programs.pool import WorkerPool
from tests.support.bridge import running_fake_upstream, running_sidecar
from tools.bench import base_tree

REPLAYED = 1000
LOOP = f"for (let i = 0; i < {REPLAYED}; i++) await tools.t({{i}}); return 1"
KINDS: dict[str, dict[str, Any]] = {"plain turn": {"input": "hi"},
                                    "program request": {"input": "js: return 1",
                                                        "tools": [{"type": "programmatic_tool_calling"}]}}


def median_of(work: Callable[[], object], runs: int) -> float:
    times = []
    for _ in range(runs):
        started = time.perf_counter()
        work()
        times.append(time.perf_counter() - started)
    return statistics.median(times)


def in_process(runs: int) -> None:
    pool = WorkerPool(256 << 20, keep=1)
    try:
        pool.run("return 1", [], [], seed=0, clock_ms=0, limits=Limits())  # its worker started before the clock
        rows = [("program (no tool call)", lambda: run_program("return 1", [], []),
                 lambda: pool.run("return 1", [], [], seed=0, clock_ms=0, limits=Limits())),
                (f"replaying {REPLAYED} tool calls", lambda: run_program(LOOP, ["t"], ["x"] * REPLAYED),
                 lambda: pool.run(LOOP, ["t"], ["x"] * REPLAYED, seed=0, clock_ms=0, limits=Limits()))]
        print(f"in process, median of {runs}            in thread (old)   worker (new)   ratio")
        for name, old, new in rows:
            thread, worker = median_of(old, runs), median_of(new, runs)
            print(f"  {name:32} {thread * 1000:10.2f} ms {worker * 1000:10.2f} ms   {worker / thread:6.2f}")
    finally:
        pool.close()


def tree_cpu(pid: int) -> float:
    """CPU seconds of the process, its reaped children and every process under it now."""
    process = psutil.Process(pid)
    total = sum(process.cpu_times()[:4])
    for child in process.children(recursive=True):
        with contextlib.suppress(psutil.NoSuchProcess):
            total += sum(child.cpu_times()[:2])
    return total


async def end_to_end(base_dir: str, runs: int) -> None:
    async with running_fake_upstream() as upstream_url:
        with tempfile.TemporaryDirectory() as tmp:
            sides: dict[str, dict[str, str]] = {"this checkout": {}}
            if base_dir:
                sides["base"] = {"PYTHONPATH": os.path.join(base_dir, "src")}
            async with contexts(tmp, upstream_url, sides) as sidecars:
                times, cpu = await measure(sidecars, runs)
    print(f"end to end (HTTP door, fake upstream), median of {runs}")
    for kind in KINDS:
        line = f"  {kind:18}"
        for side in times:
            line += (f"   {side}: {statistics.median(times[side][kind]) * 1000:7.2f} ms, "
                     f"CPU {cpu[side][kind] * 1000:6.2f} ms/request")
        if "base" in times:
            ratio_time = statistics.median(times["this checkout"][kind]) / statistics.median(times["base"][kind])
            line += f"   ratio time {ratio_time:.2f}, CPU {cpu['this checkout'][kind] / cpu['base'][kind]:.2f}"
        print(line)


class contexts:
    """Every side's sidecar running at once."""

    def __init__(self, tmp: str, upstream_url: str, sides: dict[str, dict[str, str]]) -> None:
        self.managers = {side: running_sidecar(os.path.join(tmp, side.replace(" ", "-")), upstream_url, extproc=False,
                                               env=env, own_sqlite=True) for side, env in sides.items()}
        for side in sides:
            os.makedirs(os.path.join(tmp, side.replace(" ", "-")))

    async def __aenter__(self) -> dict[str, Any]:
        return {side: await manager.__aenter__() for side, manager in self.managers.items()}

    async def __aexit__(self, *exc: Any) -> None:
        for manager in self.managers.values():
            await manager.__aexit__(*exc)


async def measure(sidecars: dict[str, Any], runs: int) -> tuple[dict[str, dict[str, list[float]]],
                                                                dict[str, dict[str, float]]]:
    times: dict[str, dict[str, list[float]]] = {side: {kind: [] for kind in KINDS} for side in sidecars}
    cpu = {side: {kind: 0.0 for kind in KINDS} for side in sidecars}
    async with aiohttp.ClientSession() as session:
        for round_ in range(runs + 10):
            for kind, body in KINDS.items():
                for side, sidecar in sidecars.items():
                    used = tree_cpu(sidecar.process.pid)
                    started = time.perf_counter()
                    async with session.post(f"{sidecar.http_url}/v1/responses",
                                            json={"model": "m", "store": False, **body}) as answer:
                        assert answer.status == 200, await answer.text()
                        await answer.read()
                    if round_ >= 10:  # the first rounds warm up (and start the workers)
                        times[side][kind].append(time.perf_counter() - started)
                        cpu[side][kind] += (tree_cpu(sidecar.process.pid) - used) / runs
    return times, cpu



def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="scripts/bench programs", description=__doc__.split("\n\n")[0])
    parser.add_argument("--base", metavar="REV", help="a git revision whose sidecar runs beside this checkout's")
    parser.add_argument("runs", nargs="?", type=int, default=200, help="runs of each (default 200)")
    args = parser.parse_args(argv)
    with tempfile.TemporaryDirectory() as scratch:
        base_dir = ""
        if args.base:
            base_dir = str(base_tree.extract(args.base, Path(scratch)).parent)
        in_process(args.runs)
        asyncio.run(end_to_end(base_dir, args.runs))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
