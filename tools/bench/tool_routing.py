"""``scripts/bench tool-routing [N]``: what one model turn costs on each path through Envoy, for the server-side tool
routing (envoy/README.md).

- ``direct``: client -> fake upstream (Chat Completions), no Envoy, no bridge: the floor;
- ``envoy-chat``: client -> Envoy listener -> upstream (Chat Completions passthrough): what every follow-up turn of
  the tool loop costs the sidecar on top of the model (HTTP door -> Envoy -> upstream);
- ``ext_proc``: client -> Envoy + processor -> upstream: today's path, one turn, a request without server tools;
- ``door``: client -> HTTP door -> Envoy listener -> upstream: one model turn the HTTP door makes through Envoy,
  translation included: what each follow-up turn of the loop costs, plus one loopback hop;
- ``routed``: client -> Envoy -> processor (routes) -> HTTP door -> Envoy -> upstream: a request with a server tool
  (tool_search) whose model answers at once: the first turn of the chosen design.

Median and p90 in ms over N sequential requests of each (default 300), JSON and streamed (20 chunks), the targets
interleaved one request at a time so the machine's load weighs on each alike; the differences between paths are
what chose the design.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import statistics
import sys
import tempfile
from pathlib import Path

import aiohttp
import orjson

from responses_bridge.demo.procs import ManagedProcess, envoy_binary, free_port, wait_http
from responses_bridge.envoy_config import render_bootstrap
from tools.bench.latency.bench import Target, _one
from tools.bench.latency.report import _percentile
from tools.bench.latency.requests import synthetic_body

CHUNKS = 20
TOOLS = [{"type": "tool_search"},
         {"type": "function", "name": "lookup_order", "parameters": {"type": "object", "properties": {}},
          "defer_loading": True}]


def body(target: Target, stream: bool) -> bytes:
    plain = synthetic_body(target.responses_api, stream, CHUNKS)
    if target.name != "routed":
        return plain
    return orjson.dumps({**orjson.loads(plain), "tools": TOOLS})


async def run(requests: int) -> None:
    with tempfile.TemporaryDirectory(prefix="rb-routing-") as tmp:
        upstream_port, http_port, extproc_port = free_port(), free_port(), free_port()
        listen_port, admin_port = free_port(), free_port()
        upstream = f"http://127.0.0.1:{upstream_port}/v1"
        processes = [
            ManagedProcess([sys.executable, "-m", "responses_bridge", "fake-upstream", "--port", str(upstream_port)],
                           "fake-upstream"),
            ManagedProcess([sys.executable, "-m", "responses_bridge", "serve", "--upstream", upstream,
                            "--upstream-via", f"http://127.0.0.1:{listen_port}/v1", "--http-port", str(http_port),
                            "--extproc-port", str(extproc_port), "--db", os.path.join(tmp, "bench.db"),
                            "--log-level", "warning"], "sidecar"),
        ]
        config = Path(tmp, "envoy.yaml")
        config.write_text(render_bootstrap(listen_port=listen_port, extproc_port=extproc_port, http_port=http_port,
                                           upstream=upstream, admin_port=admin_port))
        processes.append(ManagedProcess([envoy_binary(), "-c", str(config), "--log-level", "error",
                                         "--base-id", str(listen_port), "--concurrency", "1"], "envoy"))
        try:
            for process in processes:
                process.start()
            await wait_http(f"http://127.0.0.1:{upstream_port}/health")
            await wait_http(f"http://127.0.0.1:{http_port}/health")
            await wait_http(f"http://127.0.0.1:{admin_port}/ready")
            envoy = f"http://127.0.0.1:{listen_port}"
            targets = [Target("direct", f"{upstream}/chat/completions", False),
                       Target("envoy-chat", f"{envoy}/v1/chat/completions", False),
                       Target("ext_proc", f"{envoy}/v1/responses", True),
                       Target("door", f"http://127.0.0.1:{http_port}/v1/responses", True),
                       Target("routed", f"{envoy}/v1/responses", True)]
            await measure(targets, requests)
        finally:
            for process in reversed(processes):
                process.stop()


async def measure(targets: list[Target], requests: int) -> None:
    kinds = ("json", "stream")
    bodies = {(t.name, kind): body(t, kind == "stream") for t in targets for kind in kinds}
    async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=0)) as session:
        for target in targets:
            for kind in kinds:
                for _ in range(20):
                    await _one(session, target, bodies[(target.name, kind)])
        for _ in range(requests):
            for kind in kinds:
                for target in targets:
                    target.samples.setdefault(kind, []).append(
                        await _one(session, target, bodies[(target.name, kind)]))
    print(f"{requests} sequential requests per target and kind; ms")
    for kind in kinds:
        medians = {t.name: statistics.median(t.samples[kind]) for t in targets}
        for target in targets:
            samples = target.samples[kind]
            print(f"  {kind:6} {target.name:10} median {medians[target.name]:6.2f}  "
                  f"p90 {_percentile(samples, 0.9):6.2f}")
        print(f"  {kind:6} follow-up turn through Envoy (envoy-chat - direct): "
              f"{medians['envoy-chat'] - medians['direct']:+.2f}")
        print(f"  {kind:6} door turn through Envoy over ext_proc turn: {medians['door'] - medians['ext_proc']:+.2f} "
              f"(ratio {medians['door'] / medians['ext_proc']:.2f})")
        print(f"  {kind:6} routed first turn over ext_proc turn: {medians['routed'] - medians['ext_proc']:+.2f} "
              f"(ratio {medians['routed'] / medians['ext_proc']:.2f})")



def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="scripts/bench tool-routing", description=__doc__.split("\n\n")[0])
    parser.add_argument("requests", nargs="?", type=int, default=300, help="sequential requests per target and "
                        "kind (default 300)")
    args = parser.parse_args(argv)
    asyncio.run(run(args.requests))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
