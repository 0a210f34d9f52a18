"""``scripts/bench idle [--base REV] [--rounds N] [--burst]``: a sidecar's resident memory at rest, and after a burst,
this checkout's beside another revision's (the last landed ``main`` by default) in the same run.

**At rest**: ``responses-bridge serve`` as a user starts it — default settings (no ``RESPONSES_BRIDGE_*`` or
``OTEL_*`` in its environment), both doors, a fresh SQLite file, the fake upstream — read once ``/health``
answers and ``--settle`` seconds have passed: its RSS (``VmRSS``) and the part of it that is anonymous (the heap,
the interpreter's objects) rather than mapped files (shared libraries). Each round starts one sidecar of each tree,
in turn (the machine's load weighs on both alike); the medians are printed with this tree's ratio to the base's.
The goal: at most 0.75 of it (a quarter down: nothing imported or allocated for a capability no request has used).

**After a burst** (``--burst``): the sidecar and its program workers (what its cgroup counts) once a program has
run, then sixteen programs at once each answering with a client call of 1 MiB of arguments (``--calls N``: N of
them): the peak, and what remains ``--after`` seconds after the last answer, each above the size before the burst.
The goal: within 64 MiB of it after 10 s (fairness/allocator.py, run/programs/pool.py, adapters/http/responses/
let_go.py, and the cycles a response's end cuts: tests/integration/test_request_cycles.py).

The base revision's package is taken out of git (tools/bench/base_tree.py) and run with this checkout's venv, so the
two differ only by their code.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import os
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import AsyncIterator
from pathlib import Path

import aiohttp

from responses_bridge.demo import fake_server
from responses_bridge.demo.procs import free_port, wait_http
from tests.support.memory import peak_while  # checkout-only, as the bench is
from tools.bench import base_tree
from tools.process_memory import descendants, process_rss_mb

MIB = 1 << 20
WEATHER = {"type": "function", "name": "get_weather", "description": "The weather in a city.",
           "parameters": {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]},
           "allowed_callers": ["programmatic"]}
PROGRAM = 'js: const big = "x".repeat(1 << 20); const r = await tools.get_weather({city: big}); return r'
BURST = 16


def program_of(calls: int) -> str:
    """The burst's program: one client call of 1 MiB of arguments, or ``calls`` of them at once."""
    if calls == 1:
        return PROGRAM
    return ('js: const big = "x".repeat(1 << 20); const r = await Promise.all(Array.from({length: '
            f'{calls}}}, (_, i) => tools.get_weather({{city: big + i}}))); return r.length')


def parse(argv: list[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="scripts/bench idle", description=__doc__.split("\n\n")[0])
    parser.add_argument("--base", default="main", metavar="REV", help="the revision measured beside this checkout")
    parser.add_argument("--rounds", type=int, default=3, help="sidecars started per tree")
    parser.add_argument("--settle", type=float, default=3.0, help="seconds at rest before the reading")
    parser.add_argument("--burst", action="store_true", help="also the programs' burst and what remains after it")
    parser.add_argument("--after", type=float, default=10.0, help="seconds after the burst's last answer")
    parser.add_argument("--calls", type=int, default=1, help="client calls of 1 MiB each program of the burst makes "
                        "(issue 98 measured 20)")
    return parser.parse_args(argv)


def anonymous_kb(pid: int) -> int:
    """The anonymous part of a process's RSS in kB (``RssAnon``), 0 if it is gone."""
    try:
        with open(f"/proc/{pid}/status") as status:
            return next((int(line.split()[1]) for line in status if line.startswith("RssAnon:")), 0)
    except OSError:
        return 0


def family_mb(pid: int) -> float:
    """The RSS of ``pid`` and of every process under it (its program workers), in MB (MiB)."""
    return process_rss_mb(pid) + sum(process_rss_mb(child) for child in descendants(pid))


@contextlib.asynccontextmanager
async def sidecar(src: Path, upstream: str, tmp: Path) -> AsyncIterator[tuple[int, str]]:
    """``responses-bridge serve`` of the tree at ``src``, default settings, both doors: (pid, HTTP URL)."""
    http_port, extproc_port = free_port(), free_port()
    env = {name: value for name, value in os.environ.items() if not name.startswith(("RESPONSES_BRIDGE_", "OTEL_"))}
    env["PYTHONPATH"] = str(src)
    tmp.mkdir(parents=True, exist_ok=True)
    process = await asyncio.to_thread(
        subprocess.Popen,
        [sys.executable, "-m", "responses_bridge", "serve", "--upstream", upstream, "--db", str(tmp / "bridge.db"),
         "--http-port", str(http_port), "--extproc-port", str(extproc_port), "--log-level", "error"],
        env=env, cwd=tmp, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        url = f"http://127.0.0.1:{http_port}"
        await wait_http(f"{url}/health", timeout=120)
        yield process.pid, url
    finally:
        process.terminate()
        try:
            process.wait(30)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


async def at_rest(src: Path, upstream: str, tmp: Path, settle: float) -> tuple[float, float]:
    """(RSS, its anonymous part) of a sidecar at rest, in MiB."""
    async with sidecar(src, upstream, tmp) as (pid, _):
        await asyncio.sleep(settle)
        return process_rss_mb(pid), anonymous_kb(pid) / 1024


async def program(session: aiohttp.ClientSession, url: str, code: str = PROGRAM) -> int:
    async with session.post(f"{url}/v1/responses", json={
            "model": "fake-model", "input": code, "store": False,
            "tools": [{"type": "programmatic_tool_calling"}, WEATHER]}) as answer:
        await answer.read()
        return answer.status


async def burst(src: Path, upstream: str, tmp: Path, after: float, calls: int = 1) -> tuple[float, float, float]:
    """(before, peak above it, after above it) of a sidecar and its workers around the programs' burst, in MiB."""
    async with sidecar(src, upstream, tmp) as (pid, url), \
            aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=300)) as session:
        if await program(session, url) != 200:
            raise SystemExit("scripts/bench idle: a program did not run (the 'programs' extra: py_mini_racer)")
        await asyncio.sleep(1)
        before = family_mb(pid)
        peak, statuses = await peak_while(lambda: family_mb(pid), before, asyncio.gather(
            *(program(session, url, program_of(calls)) for _ in range(BURST))))
        if set(statuses) != {200}:
            raise SystemExit(f"scripts/bench idle: the burst was answered {sorted(set(statuses))}")
        ended = time.monotonic()
        await asyncio.sleep(max(0.0, ended + after - time.monotonic()))
        return before, peak - before, family_mb(pid) - before


async def run(args: argparse.Namespace) -> None:
    runner, upstream_port = await fake_server.start()
    upstream = f"http://127.0.0.1:{upstream_port}/v1"
    try:
        with tempfile.TemporaryDirectory(prefix="bench-idle-") as scratch:
            root = Path(scratch)
            trees = {"this": Path(__file__).resolve().parents[2] / "src",
                     args.base: base_tree.extract(args.base, root / "base")}
            rest: dict[str, list[tuple[float, float]]] = {name: [] for name in trees}
            for round_ in range(args.rounds):
                for name, src in trees.items():
                    rest[name].append(await at_rest(src, upstream, root / f"{name}-{round_}", args.settle))
            print(f"at rest ({args.rounds} sidecars each, median; MiB = 1,048,576 bytes):")
            medians = {name: (statistics.median(r for r, _ in readings), statistics.median(a for _, a in readings))
                       for name, readings in rest.items()}
            for name, (rss, anon) in medians.items():
                print(f"  {name:>12}: RSS {rss:6.1f} MiB ({rss * MIB / 1e6:6.1f} MB), anonymous {anon:6.1f} MiB")
            ratio = medians["this"][0] / medians[args.base][0]
            print(f"  this / {args.base}: {ratio:.3f} (goal <= 0.75)")
            if args.burst:
                print(f"\nsixteen programs' {args.calls} x 1 MiB call arguments (the sidecar and its workers; "
                      f"{args.after:g} s after):")
                for name, src in trees.items():
                    before, peak, left = await burst(src, upstream, root / f"{name}-burst", args.after, args.calls)
                    print(f"  {name:>12}: before {before:6.1f} MiB, peak +{peak:6.1f}, after +{left:6.1f} "
                          f"(goal <= +64)")
    finally:
        await runner.cleanup()


def main(argv: list[str] | None = None) -> None:
    asyncio.run(run(parse(sys.argv[1:] if argv is None else argv)))


if __name__ == "__main__":
    main()
