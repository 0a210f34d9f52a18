"""``responses-bridge bench``: what the bridge adds over calling the upstream directly, measured in one run.

Every server runs in its own process (the fake upstream, the sidecar, the floors, Envoy when asked), and the load
generator in this one, so no measurement shares an event loop with what it measures. Requests to the compared
targets are interleaved one by one, so a slow patch of the shared machine hits every target alike, and the
figures that matter are the differences and ratios within one run, not the absolute numbers.

Targets:
- ``direct``: Chat Completions straight to the upstream;
- ``http-floor``: the same Chat Completions through a bare aiohttp passthrough proxy (floors.py):
the least any
  Python HTTP hop costs;
- ``http``: ``/v1/responses`` through the sidecar's HTTP door;
- ``envoy-direct``: Chat Completions through Envoy to the upstream, no processor (with ``--envoy``);
- ``envoy-floor``: Chat Completions through Envoy's ext_proc filter, in the bridge's processing mode and route,
  with a processor that changes nothing (floors.py; with ``--envoy``): the least any ext_proc
  processor costs;
- ``envoy``: ``/v1/responses`` through Envoy with the ext_proc processor (with ``--envoy``).

So each door is reported against its floor (what the bridge itself adds) as well as against the upstream.
Sections: sequential latency per target (JSON and streamed), time to the first SSE event of a stream whose
upstream holds its headers (``--header-delay``, a model's time to first token), and requests/s at
``--concurrency``. The report and its figures: report.py.

The sidecar runs as ``responses-bridge serve`` plus every ``--sidecar-arg`` (e.g. ``--sidecar-arg=--workers=2``);
its RSS is summed over its processes when it has several.
"""

from __future__ import annotations

import argparse
import asyncio
import functools
import os
import shlex
import sys
import tempfile
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import aiohttp
import orjson

from responses_bridge.demo.procs import ManagedProcess, free_port, wait_http

from ...process_memory import tree_rss_mb
from . import ab as bench_ab
from . import memory as bench_memory
from . import soak as bench_soak
from .cost import BRIDGE_LISTENER, CostTarget, measure_costs, summarise_costs
from .report import RssPeak, print_report, summarise
from .requests import post, synthetic_body, wait_healthy

FLOORS = "tools.bench.latency.floors"


class _WithDefaults(argparse.HelpFormatter):
    """Each option's help ends with its default, when it has one worth saying (not off, unset or empty)."""

    def _get_help_string(self, action: argparse.Action) -> str:
        text = action.help or ""
        if action.default not in (None, False, [], argparse.SUPPRESS) and "%(default)" not in text:
            text += " (default: %(default)s)"
        return text


def add_parser(commands: argparse._SubParsersAction) -> None:
    """``responses-bridge bench``, as cli.py adds it from a source checkout."""
    add_arguments(commands.add_parser("bench", help=PURPOSE, formatter_class=_WithDefaults))


def main(argv: list[str] | None = None, prog: str = "scripts/bench latency") -> int:
    """The same command run as a module of the checkout (``scripts/bench latency``), without the CLI: the tooling
    imports the package's rooms, never its command line, which imports the tooling."""
    parser = argparse.ArgumentParser(prog=prog, description=PURPOSE, formatter_class=_WithDefaults)
    add_arguments(parser)
    args = parser.parse_args(argv)
    return int(args.func(args) or 0)


PURPOSE = "measure the latency the bridge adds over the upstream"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--requests", type=int, default=200, help="sequential requests per target and kind")
    parser.add_argument("--chunks", type=int, default=100, help="content chunks per streamed answer")
    parser.add_argument("--concurrency", type=int, default=32, help="requests in flight in the concurrency test")
    parser.add_argument("--throughput-requests", type=int, default=2000,
                        help="non-stream requests per target in the concurrency test")
    parser.add_argument("--header-delay", type=int, default=50, metavar="MS",
                        help="time to first event: the upstream holds each answer's headers this long, milliseconds")
    parser.add_argument("--first-event-requests", type=int, default=30, metavar="N",
                        help="streamed requests per target in the time-to-first-event section; 0 skips it")
    parser.add_argument("--envoy", action="store_true", help="also measure through Envoy (ext_proc vs direct)")
    parser.add_argument("--sidecar-arg", action="append", default=[], metavar="ARG",
                        help="passed on to `responses-bridge serve` (repeatable; split like a shell line, and "
                        "written with '=' when it starts with '-': --sidecar-arg=--workers=2)")
    parser.add_argument("--extproc-uds", metavar="PATH",
                        help="the ext_proc door on a Unix socket (with --envoy): serve gets --extproc-uds PATH, "
                        "the Envoy bootstrap extproc_uds=PATH")
    parser.add_argument("--replay", metavar="FILE",
                        help="instead of the synthetic requests, replay this recorded /v1/responses body (and its "
                        "Chat Completions translation for the direct targets); latency only")
    parser.add_argument("--cost-rounds", type=int, default=3, metavar="N",
                        help="rounds of the CPU and ext_proc message section (cost.py); 0 skips it")
    parser.add_argument("--cost-requests", type=int, default=100, metavar="N",
                        help="JSON requests per target in one round of the cost section")
    parser.add_argument("--cost-streams", type=int, default=10, metavar="N",
                        help="streams (bursted, then paced) per target in one round of the cost section")
    parser.add_argument("--pace", type=int, default=2, metavar="MS",
                        help="the paced streams' gap between two chunks, milliseconds (a model's time per token)")
    parser.add_argument("--json", action="store_true", help="print the results as JSON")
    bench_ab.add_arguments(parser)
    bench_memory.add_arguments(parser)
    bench_soak.add_arguments(parser)
    parser.set_defaults(func=run)


@dataclass
class Target:
    name: str
    url: str
    responses_api: bool
    samples: dict[str, list[float]] = field(default_factory=dict)


def run(args: argparse.Namespace) -> int:
    ab = bench_ab.wanted(args)
    if sum((ab, args.memory, args.soak is not None, args.replay is not None)) > 1:
        raise SystemExit("responses-bridge bench: --memory, --soak, --replay and the A/B mode are separate runs: "
                         "choose one")
    try:
        results = asyncio.run(bench_ab.run_ab(args, sidecar_args(args)) if ab else bench(args))
    except (RuntimeError, TimeoutError) as exc:  # a server that did not start or answer: its own output is above
        print(f"responses-bridge bench: {exc}", file=sys.stderr)
        return 1
    if args.json:
        print(orjson.dumps(results, option=orjson.OPT_INDENT_2).decode())
    elif ab:
        bench_ab.print_ab(results)
    elif args.memory:
        bench_memory.print_memory(results)
    elif args.soak is not None:
        bench_soak.print_soak(results)
    else:
        print_report(results)
    return 0


def sidecar_args(args: argparse.Namespace) -> list[str]:
    """The extra arguments of ``serve``: every ``--sidecar-arg`` split like a shell line, then ``--extproc-uds``."""
    extra = [word for arg in args.sidecar_arg for word in shlex.split(arg)]
    given = extproc_uds(extra)
    if args.extproc_uds is not None:
        if given is not None and given != args.extproc_uds:
            raise SystemExit(f"responses-bridge bench: --extproc-uds {args.extproc_uds} and --sidecar-arg "
                             f"--extproc-uds {given} name two sockets")
        if given is None:
            extra += ["--extproc-uds", args.extproc_uds]
    return extra


def _flag(extra: list[str], flag: str) -> str | None:
    """The value of ``flag`` among the sidecar's arguments (``--flag V`` or ``--flag=V``), if given."""
    for i, arg in enumerate(extra):
        if arg == flag and i + 1 < len(extra):
            return extra[i + 1]
        if arg.startswith(flag + "="):
            return arg.partition("=")[2]
    return None


def extproc_uds(extra: list[str]) -> str | None:
    """The Unix socket the sidecar's ext_proc door listens on, if its arguments name one."""
    return _flag(extra, "--extproc-uds")


def bootstrap_renderer(extra: list[str]) -> Callable[..., str]:
    """``render_bootstrap`` for the sidecar run with ``extra``: its ext_proc door's Unix socket, and one processor
    endpoint per worker (``--workers``). Without stored chat completions, so that ``envoy-direct`` (the listener's
    ``/v1/chat/completions``) is Envoy with no processor on its path, as its name says."""
    from responses_bridge.envoy_config import render_bootstrap
    from responses_bridge.process.workers import worker_count

    workers = _flag(extra, "--workers")
    return functools.partial(render_bootstrap, extproc_uds=extproc_uds(extra),
                             workers=worker_count(workers) if workers is not None else 1, chat_store=False)


async def bench(args: argparse.Namespace) -> dict:
    extra = sidecar_args(args)
    uds = extproc_uds(extra)
    if uds is not None and not args.envoy:
        raise SystemExit("responses-bridge bench: --extproc-uds is the ext_proc door's: measure it with --envoy")
    render = bootstrap_renderer(extra) if args.envoy else None
    with tempfile.TemporaryDirectory(prefix="rb-bench-") as tmp:
        (upstream_port, floor_port, http_port, extproc_port), processes = bench_processes(tmp, extra, args.envoy)
        upstream, http_floor, sidecar = processes
        upstream_url = f"http://127.0.0.1:{upstream_port}/v1"
        try:
            for process in processes:
                process.start()
            await wait_http(f"http://127.0.0.1:{upstream_port}/health", process=upstream)
            await wait_http(f"http://127.0.0.1:{floor_port}/health", process=http_floor)
            await wait_http(f"http://127.0.0.1:{http_port}/health", process=sidecar)
            targets = [Target("direct", f"{upstream_url}/chat/completions", False),
                       Target("http-floor", f"http://127.0.0.1:{floor_port}/v1/chat/completions", False),
                       Target("http", f"http://127.0.0.1:{http_port}/v1/responses", True)]
            if render is not None:
                ports = await _start_envoy(tmp, render, processes, upstream_url, http_port, extproc_port, uds)
                envoy_port, envoy_floor_port, _ = ports
                targets += [Target("envoy-direct", f"http://127.0.0.1:{envoy_port}/v1/chat/completions", False),
                            # the floor listener's Responses route, with a Chat Completions body: the no-op
                            # processor passes it unchanged, the route rewrites the path to chat/completions
                            Target("envoy-floor", f"http://127.0.0.1:{envoy_floor_port}/v1/responses", False),
                            Target("envoy", f"http://127.0.0.1:{envoy_port}/v1/responses", True)]
            doors = {t.name: t.url for t in targets if t.name in ("http", "envoy")}
            websocket_url = f"ws://127.0.0.1:{http_port}/v1/responses"
            if args.memory:
                return await bench_memory.measure_memory(args, sidecar, doors, websocket_url)
            if args.soak is not None:
                return await bench_soak.soak(args, sidecar, doors, websocket_url)
            rss = RssPeak(tree_rss_mb(sidecar))
            costs = _cost_targets(args, targets, processes, ports[2] if render is not None else None)
            return await _measure(args, targets, sidecar, rss, extra, costs)
        finally:
            for process in reversed(processes):
                process.stop()


def bench_processes(tmp: str, extra: Sequence[str], extproc: bool) -> tuple[tuple[int, int, int, int],
                                                                            list[ManagedProcess]]:
    """The fake upstream, the HTTP floor (a proxy that adds nothing) before it and the sidecar under measure (its
    state in ``tmp``, ``extra`` arguments to serve, the ext_proc door only when ``extproc``), not started yet; and
    their ports: upstream, floor, the sidecar's HTTP and ext_proc."""
    upstream_port, floor_port, http_port, extproc_port = free_port(), free_port(), free_port(), free_port()
    upstream_url = f"http://127.0.0.1:{upstream_port}/v1"
    upstream = ManagedProcess([sys.executable, "-m", "responses_bridge", "fake-upstream",
                               "--port", str(upstream_port)], "fake-upstream")
    http_floor = ManagedProcess([sys.executable, "-m", FLOORS, "http-proxy", "--port", str(floor_port),
                                 "--upstream", upstream_url], "http-floor")
    sidecar = ManagedProcess([sys.executable, "-m", "responses_bridge", "serve", "--upstream", upstream_url,
                              "--http-port", str(http_port), "--extproc-port", str(extproc_port),
                              "--db", os.path.join(tmp, "bench.db"), "--log-level", "warning", *extra]
                             + ([] if extproc else ["--no-extproc"]), "sidecar", quiet=False)
    return (upstream_port, floor_port, http_port, extproc_port), [upstream, http_floor, sidecar]


async def _start_envoy(tmp: str, render: Callable[..., str], processes: list[ManagedProcess], upstream_url: str,
                       http_port: int, extproc_port: int, uds: str | None) -> tuple[int, int, int]:
    """Envoy with the bootstrap ``render`` makes plus the floor listener, and the no-op processor behind that
    (on a socket file when the door uses one). Returns the ports of the bridge's listener, the floor's and
    Envoy's admin page."""
    import yaml

    from responses_bridge.demo.procs import envoy_binary
    from responses_bridge.envoy_config import EXTPROC_CLUSTER, to_yaml

    from .floors import FLOOR_EXTPROC_CLUSTER, add_floor_listener, processor_address

    noop_port, envoy_port, floor_port, admin_port = free_port(), free_port(), free_port(), free_port()
    noop_uds = os.path.join(tmp, "floor-extproc.sock") if uds is not None else None
    noop = ManagedProcess([sys.executable, "-m", FLOORS, "noop-extproc",
                           *(["--uds", noop_uds] if noop_uds else ["--port", str(noop_port)])], "noop-extproc")
    processes.append(noop)
    noop.start()
    bootstrap = yaml.safe_load(render(listen_port=envoy_port, extproc_port=extproc_port, http_port=http_port,
                                      upstream=upstream_url, admin_port=admin_port))
    add_floor_listener(bootstrap, port=floor_port, processor=processor_address(port=noop_port, uds=noop_uds))
    path = os.path.join(tmp, "envoy.yaml")
    await asyncio.to_thread(Path(path).write_text, to_yaml(bootstrap))
    envoy = ManagedProcess([envoy_binary(), "-c", path, "--log-level", "error", "--base-id", str(envoy_port),
                            "--concurrency", "1"], "envoy")
    processes.append(envoy)
    envoy.start()
    await wait_http(f"http://127.0.0.1:{admin_port}/ready", process=envoy)
    await wait_healthy(admin_port, (EXTPROC_CLUSTER, FLOOR_EXTPROC_CLUSTER), (noop, envoy))
    return envoy_port, floor_port, admin_port


def _cost_targets(args: argparse.Namespace, targets: list[Target], processes: list[ManagedProcess],
                  admin_port: int | None) -> list[CostTarget]:
    """The doors and their floors, each with the processes whose CPU it spends (processes: the upstream, the
    HTTP floor, the sidecar, then with Envoy the no-op processor and Envoy)."""
    from .floors import FLOOR_LISTENER

    if args.replay or args.cost_rounds <= 0:
        return []
    _, http_floor, sidecar, *behind = processes
    noop, envoy = behind if behind else (None, None)
    own = {"http": sidecar, "http-floor": http_floor, "envoy": sidecar, "envoy-floor": noop}
    listeners = {"envoy": BRIDGE_LISTENER, "envoy-floor": FLOOR_LISTENER}
    paced = f" [delay={args.pace}]"
    chosen = []
    for target in targets:
        owner = own.get(target.name)
        if owner is None:
            continue
        bodies = {"json": synthetic_body(target.responses_api, False, args.chunks),
                  "bursted": synthetic_body(target.responses_api, True, args.chunks),
                  "paced": synthetic_body(target.responses_api, True, args.chunks, paced)}
        behind_envoy = target.name in listeners
        chosen.append(CostTarget(target.name, target.url, bodies, [owner], envoy if behind_envoy else None,
                                 admin_port if behind_envoy else None, listeners.get(target.name)))
    return chosen


def _bodies(args: argparse.Namespace, targets: list[Target]) -> dict[tuple[str, str], bytes]:
    """The request body for each (target, kind): the same question asked of the bridge and of the upstream."""
    if args.replay:
        from responses_bridge.engine.options import EngineOptions
        from responses_bridge.engine.responses.request_translation import build_chat_request
        from responses_bridge.protocol.responses.request import parse_request

        recorded = Path(args.replay).read_bytes()
        translated = orjson.dumps(build_chat_request(parse_request(recorded), [], EngineOptions()))
        return {(t.name, "replay"): recorded if t.responses_api else translated for t in targets}
    return {(t.name, kind): synthetic_body(t.responses_api, kind == "stream", args.chunks) for t in targets
            for kind in ("json", "stream")}




async def _one(session: aiohttp.ClientSession, target: Target, body: bytes) -> float:
    return await post(session, target.url, body, target.name)




async def _first_event(session: aiohttp.ClientSession, target: Target, body: bytes) -> float:
    """Milliseconds from sending a streamed request to the arrival of the first byte of its first SSE event
    (``response.created`` from the bridge, the first chunk from the upstream); the rest is read as usual."""
    started, first, head = time.perf_counter(), 0.0, b""
    async with session.post(target.url, data=body, headers={"Content-Type": "application/json"}) as response:
        async for chunk in response.content.iter_any():
            if not first:
                head += chunk
                if event_started(head):
                    first = time.perf_counter()
        if response.status != 200:
            raise RuntimeError(f"{target.name}: HTTP {response.status}")
    if not first:
        raise RuntimeError(f"{target.name}: a stream without any event")
    return (first - started) * 1000


def event_started(head: bytes) -> bool:
    """Has ``head`` (a stream's first bytes) a byte of an event, not only blank lines and ``:`` comments?"""
    while head:
        if head[:1] in (b"\n", b"\r"):
            head = head[1:]
        elif head[:1] == b":":
            end = head.find(b"\n")
            if end < 0:
                return False
            head = head[end + 1:]
        else:
            return True
    return False


async def _measure(args: argparse.Namespace, targets: list[Target], sidecar: ManagedProcess, rss: RssPeak,
                   extra: list[str], costs: list[CostTarget]) -> dict:
    bodies = _bodies(args, targets)
    kinds = sorted({kind for _, kind in bodies})
    connector = aiohttp.TCPConnector(limit=0)
    async with aiohttp.ClientSession(connector=connector) as session:
        for target in targets:  # warm-up: connections, caches, the first calls of every code path
            for kind in kinds:
                for _ in range(10):
                    await _one(session, target, bodies[(target.name, kind)])
        for _ in range(args.requests):
            for kind in kinds:
                for target in targets:
                    sample = await _one(session, target, bodies[(target.name, kind)])
                    target.samples.setdefault(kind, []).append(sample)
        first_event: dict[str, list[float]] = {}
        if not args.replay and args.first_event_requests > 0:
            first_event = await _first_events(session, args, targets)
        throughput: dict[str, float] = {}
        if not args.replay:
            for target in targets:
                probe = (lambda: rss.probe(tree_rss_mb(sidecar))) if target.name in ("http", "envoy") else None
                throughput[target.name] = await _throughput(session, target, bodies[(target.name, "json")],
                                                            args.concurrency, args.throughput_requests, probe)
        if costs:
            await measure_costs(session, costs, rounds=args.cost_rounds, requests=args.cost_requests,
                                streams=args.cost_streams, send=post)
    results = summarise(args, {t.name: t.samples for t in targets}, kinds, throughput, first_event, rss, extra)
    results["cost"] = summarise_costs(costs, args.chunks) if costs else None
    results["pace_ms"], results["cost_rounds"] = args.pace, args.cost_rounds
    return results


async def _first_events(session: aiohttp.ClientSession, args: argparse.Namespace,
                        targets: list[Target]) -> dict[str, list[float]]:
    """Streamed requests whose upstream holds its headers ``--header-delay`` ms, interleaved across targets."""
    directive = f" [header_delay={args.header_delay}]"
    bodies = {t.name: synthetic_body(t.responses_api, True, args.chunks, directive) for t in targets}
    samples: dict[str, list[float]] = {t.name: [] for t in targets}
    for target in targets:
        await _first_event(session, target, bodies[target.name])
    for _ in range(args.first_event_requests):
        for target in targets:
            samples[target.name].append(await _first_event(session, target, bodies[target.name]))
    return samples


async def _throughput(session: aiohttp.ClientSession, target: Target, body: bytes, concurrency: int,
                      total: int, probe: Callable[[], None] | None) -> float:
    remaining = total

    async def worker() -> None:
        nonlocal remaining
        while remaining > 0:
            remaining -= 1
            await _one(session, target, body)
            if probe is not None and remaining % 100 == 0:
                probe()

    started = time.perf_counter()
    await asyncio.gather(*(worker() for _ in range(concurrency)))
    return total / (time.perf_counter() - started)
