"""``responses-bridge bench --ab-tree PATH`` / ``--ab-env NAME=VALUE`` / ``--ab-sidecar-arg ARG``: two sidecars
side by side, and a control.

Sequential runs of one tree, then the other, compare two patches of a shared machine as much as two trees. Here three
sidecars run at once on one fake upstream: ``A`` (this tree), ``B`` (the other tree, and/or other settings), and
``A'``, a second ``A``: the control, whose ratio to ``A`` says how far two identical sidecars drift on this machine
in this run. Each tree runs installed, not from its checkout: a wheel of it in a venv of its own
(install.py), so the two are imported alike. With ``--envoy`` each has its own Envoy,
with the bootstrap *its own tree's* ``envoy-config`` renders (a tree is compared with the processing modes it ships).

Each round deals every door's requests to A, B and A' in turn (latency: JSON and streamed; then ``--cost-requests``
JSON requests, whose CPU is each side's per JSON request: whatever the machine does meanwhile falls on the three
alike), then gives each its cost batches (cost.py: per chunk bursted and paced, ext_proc messages),
then its throughput: ``--throughput-requests`` JSON requests ``--concurrency`` at a time, in JSON requests per second,
dealt too: in ten slices, each side's slice in turn (the first side turned by one each round), a side's rate its
requests over the time its own slices took (and its CPU per request meanwhile: ``cpu_ms_per_json_concurrent``).
Every figure becomes two ratios per round, B/A and A'/A, and the report gives their medians over the rounds: the
pair ratios of one run, not ratios of medians taken at different times.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import aiohttp
import yaml

from responses_bridge.demo.procs import ManagedProcess, envoy_binary, free_port, wait_http
from responses_bridge.envoy_config import EXTPROC_CLUSTER

from .cost import BRIDGE_LISTENER, CostTarget, cpu_seconds, measure_costs, summarise_costs
from .install import installed_python
from .requests import post, synthetic_body, wait_healthy

THIS_TREE = Path(__file__).resolve().parents[3]  # the checkout this benchmark runs from (not in the wheel)
SIDES = ("A", "B", "A'")
CONTROL = "A'/A"
BOTH = "B/mean(A,A')"
SLICES = 10  # of the throughput section, dealt in turn
ROUNDS_SHOWN = ("cpu_ms_per_json", "envoy_cpu_ms_per_json", "json_per_s")  # printed round by round too
FIGURES = ("cpu_ms_per_json", "cpu_us_per_chunk_bursted", "cpu_us_per_chunk_paced", "envoy_cpu_ms_per_json",
           "messages_per_json", "messages_per_chunk", "json_p50_ms", "stream_p50_ms", "json_per_s",
           "cpu_ms_per_json_concurrent")


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--ab-tree", metavar="PATH", help="A/B: side B runs the checkout at PATH, beside A (this "
                        "tree) and a control A'; each tree installed (not editable) into a venv of its own")
    parser.add_argument("--ab-env", action="append", default=[], metavar="NAME=VALUE",
                        help="A/B: side B runs with this environment variable (repeatable), e.g. "
                        "RESPONSES_BRIDGE_EVENT_LOOP=asyncio")
    parser.add_argument("--ab-sidecar-arg", action="append", default=[], metavar="ARG",
                        help="A/B: passed on to side B's `serve` after the --sidecar-arg ones (repeatable)")


def wanted(args: argparse.Namespace) -> bool:
    return bool(args.ab_tree or args.ab_env or args.ab_sidecar_arg)


def _env_of(pairs: list[str]) -> dict[str, str]:
    env = {}
    for pair in pairs:
        name, sep, value = pair.partition("=")
        if not sep or not name:
            raise SystemExit(f"responses-bridge bench: --ab-env {pair!r}: expected NAME=VALUE")
        env[name] = value
    return env


class Side:
    """One sidecar of the comparison (and its Envoy), started on fresh ports."""

    def __init__(self, name: str, tmp: str, upstream_url: str, extra: list[str], env: dict[str, str],
                 python: Path) -> None:
        self.name, self.tmp, self.upstream_url, self.python = name, tmp, upstream_url, str(python)
        self.http_port, self.extproc_port = free_port(), free_port()
        self.env = dict(env)
        db = os.path.join(tmp, f"bench-{self.http_port}.db")
        self.sidecar = ManagedProcess([self.python, "-m", "responses_bridge", "serve", "--upstream", upstream_url,
                                       "--http-port", str(self.http_port), "--extproc-port", str(self.extproc_port),
                                       "--db", db, "--log-level", "warning", *extra], f"sidecar {name}",
                                      quiet=False, env=self.env)
        self.envoy: ManagedProcess | None = None
        self.envoy_port = self.admin_port = 0

    async def start(self, with_envoy: bool) -> None:
        self.sidecar.start()
        await wait_http(f"http://127.0.0.1:{self.http_port}/health", process=self.sidecar)
        if with_envoy:
            await self.start_envoy()

    async def start_envoy(self, healthy_within: float = 30.0,
                          edit: Callable[[dict[str, Any]], None] | None = None) -> None:
        """This side's Envoy in front of its (started) sidecar, its processor cluster healthy within
        ``healthy_within`` seconds; ``edit``: changes the rendered bootstrap first (its health checks gone, the
        processor is not waited for)."""
        self.envoy_port, self.admin_port = free_port(), free_port()
        rendered = await asyncio.to_thread(subprocess.run, [
            self.python, "-m", "responses_bridge", "envoy-config", "--listen-port", str(self.envoy_port),
            "--extproc-port", str(self.extproc_port), "--http-port", str(self.http_port),
            "--upstream", self.upstream_url, "--admin-port", str(self.admin_port)],
            capture_output=True, text=True, check=True, env={**os.environ, **self.env})
        path = os.path.join(self.tmp, f"envoy-{self.envoy_port}.yaml")
        text = rendered.stdout
        if edit is not None:
            bootstrap = yaml.safe_load(text)
            edit(bootstrap)
            text = yaml.safe_dump(bootstrap)
        await asyncio.to_thread(Path(path).write_text, text)
        self.envoy = ManagedProcess([envoy_binary(), "-c", path, "--log-level", "error", "--base-id",
                                     str(self.envoy_port), "--concurrency", "1"], f"envoy {self.name}")
        self.envoy.start()
        await wait_http(f"http://127.0.0.1:{self.admin_port}/ready", process=self.envoy)
        if edit is None:
            await wait_healthy(self.admin_port, (EXTPROC_CLUSTER,), (self.envoy,), timeout=healthy_within)

    def stop(self) -> None:
        for process in (self.envoy, self.sidecar):
            if process is not None:
                process.stop()

    def target(self, door: str, bodies: dict[str, bytes]) -> CostTarget:
        if door == "http":
            return CostTarget(f"http {self.name}", f"http://127.0.0.1:{self.http_port}/v1/responses", bodies,
                              [self.sidecar])
        return CostTarget(f"envoy {self.name}", f"http://127.0.0.1:{self.envoy_port}/v1/responses", bodies,
                          [self.sidecar], self.envoy, self.admin_port, BRIDGE_LISTENER)


async def upstream_and_trees(ab_tree: str | None) -> tuple[ManagedProcess, str, Path, Path]:
    """The fake upstream (not started yet) and its URL; the interpreters of this tree and of ``ab_tree`` (this one
    again without it), each installed (install.py)."""
    upstream_port = free_port()
    upstream = ManagedProcess([sys.executable, "-m", "responses_bridge", "fake-upstream", "--port",
                               str(upstream_port)], "fake-upstream")
    python_a = await asyncio.to_thread(installed_python, THIS_TREE)
    python_b = await asyncio.to_thread(installed_python, Path(ab_tree)) if ab_tree else python_a
    return upstream, f"http://127.0.0.1:{upstream_port}/v1", python_a, python_b


async def run_ab(args: argparse.Namespace, extra: list[str]) -> dict[str, Any]:
    b_extra = extra + [word for arg in args.ab_sidecar_arg for word in arg.split()]
    doors = ("http", "envoy") if args.envoy else ("http",)
    with tempfile.TemporaryDirectory(prefix="rb-bench-ab-") as tmp:
        upstream, upstream_url, python_a, python_b = await upstream_and_trees(args.ab_tree)
        sides = [Side("A", tmp, upstream_url, extra, {}, python_a),
                 Side("B", tmp, upstream_url, b_extra, _env_of(args.ab_env), python_b),
                 Side("A'", tmp, upstream_url, extra, {}, python_a)]
        try:
            upstream.start()
            await wait_http(f"{upstream_url.removesuffix('/v1')}/health", process=upstream)
            for side in sides:
                await side.start(args.envoy)
            bodies = {"json": synthetic_body(True, False, args.chunks),
                      "bursted": synthetic_body(True, True, args.chunks),
                      "paced": synthetic_body(True, True, args.chunks, f" [delay={args.pace}]")}
            targets = {door: [side.target(door, bodies) for side in sides] for door in doors}
            rounds: dict[str, list[dict[str, dict[str, float]]]] = {door: [] for door in doors}
            async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=0)) as session:
                for door in doors:  # warm-up
                    for target in targets[door]:
                        for body in bodies.values():
                            for _ in range(5):
                                await post(session, target.url, body, target.name)
                for round_index in range(max(1, args.cost_rounds)):
                    for door in doors:
                        rounds[door].append(await _round(session, targets[door], args, round_index))
        finally:
            for side in sides:
                side.stop()
            upstream.stop()
    return {"ab": {"tree": args.ab_tree, "env": args.ab_env, "sidecar_args": args.ab_sidecar_arg,
                   "installed": {"A": str(python_a), "B": str(python_b)},
                   "rounds": len(next(iter(rounds.values()))),
                   "doors": {door: _ratios(by_round) for door, by_round in rounds.items()}}}


async def _round(session: aiohttp.ClientSession, targets: list[CostTarget], args: argparse.Namespace,
                 round_index: int) -> dict[str, dict[str, float]]:
    """One round on one door: the figures of each side."""
    latency: dict[str, dict[str, list[float]]] = {t.name: {"json": [], "stream": []} for t in targets}
    for _ in range(args.requests):
        for kind, body in (("json", "json"), ("stream", "bursted")):
            for target in targets:
                latency[target.name][kind].append(await post(session, target.url, target.bodies[body], target.name))
    dealt = await _dealt_json(session, targets, args.cost_requests, round_index)
    for target in targets:
        target.samples.clear()
    await measure_costs(session, targets, rounds=1, requests=args.cost_requests, streams=args.cost_streams,
                        send=post)
    costs = summarise_costs(targets, args.chunks)
    throughput = (await _throughput(session, targets, args.concurrency, args.throughput_requests, round_index)
                  if args.throughput_requests > 0 else {})
    figures = {}
    for side, target in zip(SIDES, targets, strict=True):
        figures[side] = {**costs[target.name], **dealt[target.name],
                         "json_p50_ms": statistics.median(latency[target.name]["json"]),
                         "stream_p50_ms": statistics.median(latency[target.name]["stream"])}
        figures[side].update(throughput.get(target.name, {}))
    return figures


async def _dealt_json(session: aiohttp.ClientSession, targets: list[CostTarget], requests: int,
                      round_index: int) -> dict[str, dict[str, float]]:
    """CPU ms per JSON request of each side (and of its Envoy), ``requests`` of them dealt in turn (A, B, A', A,
    ...; the first turned each round). Each side's processes are its own and an idle sidecar spends next to
    nothing, so a side's CPU over the whole deal is its requests'. Batches one side after another
    (cost.py) compare two moments of a shared machine as much as two sides: on a loaded one the
    control read 1.13 to 1.41."""
    turn = round_index % len(targets)
    order = targets[turn:] + targets[:turn]
    own = {t.name: cpu_seconds(t.own) for t in targets}
    envoy = {t.name: cpu_seconds([t.envoy]) for t in targets if t.envoy}
    for _ in range(requests):
        for target in order:
            await post(session, target.url, target.bodies["json"], target.name)
    dealt: dict[str, dict[str, float]] = {}
    for target in targets:
        dealt[target.name] = {"cpu_ms_per_json": (cpu_seconds(target.own) - own[target.name]) / requests * 1000}
        if target.envoy:
            dealt[target.name]["envoy_cpu_ms_per_json"] = ((cpu_seconds([target.envoy]) - envoy[target.name])
                                                           / requests * 1000)
    return dealt


async def _throughput(session: aiohttp.ClientSession, targets: list[CostTarget], concurrency: int, total: int,
                      round_index: int) -> dict[str, dict[str, float]]:
    """JSON requests per second of each side (and its CPU ms per request meanwhile), ``total`` of them sent
    ``concurrency`` at a time, in slices dealt in turn: a side measured in one stretch of seconds, then the next,
    read the machine's moments more than the sides (the control A'/A read 0.84 to 1.10)."""
    slices = max(1, min(SLICES, total // max(1, 4 * concurrency)))
    turn = round_index % len(targets)
    order = targets[turn:] + targets[:turn]
    seconds = {target.name: 0.0 for target in targets}
    cpu = {target.name: 0.0 for target in targets}
    sent = {target.name: 0 for target in targets}
    for index in range(slices):
        count = total // slices + (1 if index < total % slices else 0)
        for target in order:
            before = cpu_seconds(target.own)
            seconds[target.name] += await _burst(session, target, concurrency, count)
            cpu[target.name] += cpu_seconds(target.own) - before
            sent[target.name] += count
    return {name: {"json_per_s": sent[name] / seconds[name],
                   "cpu_ms_per_json_concurrent": cpu[name] / sent[name] * 1000} for name in seconds}


async def _burst(session: aiohttp.ClientSession, target: CostTarget, concurrency: int, count: int) -> float:
    """Seconds ``count`` JSON requests took, ``concurrency`` at a time."""
    remaining = count

    async def worker() -> None:
        nonlocal remaining
        while remaining > 0:
            remaining -= 1
            await post(session, target.url, target.bodies["json"], target.name)

    started = time.perf_counter()
    await asyncio.gather(*(worker() for _ in range(concurrency)))
    return time.perf_counter() - started


def _ratios(by_round: list[dict[str, dict[str, float]]]) -> dict[str, dict[str, Any]]:
    """Per figure: A's median, B's, and the medians over the rounds of B/A and A'/A."""
    out: dict[str, dict[str, Any]] = {}
    for figure in FIGURES:
        if figure not in by_round[0]["A"]:
            continue
        pairs = [(r["A"][figure], r["B"][figure], r["A'"][figure]) for r in by_round]
        usable = [(a, b, c) for a, b, c in pairs if a > 0]
        out[figure] = {"A": statistics.median(a for a, _, _ in pairs), "B": statistics.median(b for _, b, _ in pairs),
                       "B/A": _median_or_nan([b / a for a, b, _ in usable]),
                       CONTROL: _median_or_nan([c / a for a, _, c in usable]),
                       # B over the mean of the two A's: what drifts between A and A' falls on half the base (a
                       # per-chunk figure is a difference of two streams' costs: in a tiny run A' can be -A)
                       BOTH: _median_or_nan([2 * b / (a + c) for a, b, c in usable if a + c > 0]),
                       "rounds": [[round(b / a, 3), round(c / a, 3)] for a, b, c in usable]}
    return out


def _median_or_nan(values: list[float]) -> float:
    return statistics.median(values) if values else float("nan")


def print_ab(results: dict[str, Any]) -> None:
    ab = results["ab"]
    what = ", ".join(filter(None, [f"tree {ab['tree']}" if ab["tree"] else "",
                                   *(f"env {pair}" for pair in ab["env"]),
                                   *(f"serve {arg}" for arg in ab["sidecar_args"])]))
    print(f"A/B: A = this tree, B = {what}, A' = a second A (the control); medians over {ab['rounds']} rounds "
          "of the ratios within each round")
    if "installed" in ab:
        print(f"each tree installed (not editable) into its own venv: A and A' {ab['installed']['A']}, "
              f"B {ab['installed']['B']}")
    for door, figures in ab["doors"].items():
        print(f"\n{door + ' door':<32}{'A':>10}{'B':>10}{'B/A':>8}{CONTROL:>8}{BOTH:>15}")
        for figure, v in figures.items():
            print(f"{figure:<32}{_cell(v['A'], 10, '.3f')}{_cell(v['B'], 10, '.3f')}{_cell(v['B/A'], 8, '.2f')}"
                  f"{_cell(v[CONTROL], 8, '.2f')}{_cell(v[BOTH], 15, '.2f')}")
        for figure in ROUNDS_SHOWN:  # each round's pair: how far the medians can be trusted
            if figure in figures:
                pairs = " ".join(f"{b:.2f}/{c:.2f}" for b, c in figures[figure]["rounds"])
                print(f"  {figure} by round (B/A / A'/A): {pairs}")


def _cell(value: float | None, width: int, spec: str) -> str:
    """A figure, or '-' where a ratio had no base (a figure of 0: too few requests for the CPU clock's tick)."""
    return f"{'-' if value is None or value != value else format(value, spec):>{width}}"
