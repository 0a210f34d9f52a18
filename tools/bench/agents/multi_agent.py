"""``scripts/bench multi-agent [--envoy] [ROUNDS]``: the cost of a subagent (the multi-agent beta) as a ratio to a
plain turn.

Through the sidecar's HTTP door over the fake upstream: the median time of a plain one-turn response, of a response
whose root spawns one subagent and of one that spawns two (requests interleaved, one after another, so a slow patch
of the shared machine weighs on each alike). A root that spawns and waits makes three turns of its own; the second
subagent's extra time is the marginal cost of one subagent. ``--envoy``: through a real Envoy in front (the ext_proc
door hands the beta requests to the HTTP door, whose model calls go back through Envoy).
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import tempfile
import time
from typing import Any

import aiohttp

from responses_bridge.demo.procs import free_port
from responses_bridge.envoy_config import render_bootstrap
from tests.support.bridge import running_fake_upstream, running_sidecar
from tests.support.envoy import start_envoy

BETA = {"openai-beta": "responses_multi_agent=v1"}
KINDS: dict[str, tuple[str, dict[str, str], dict[str, Any]]] = {
    "plain turn": ("", {}, {"input": "hello there"}),
    "one subagent": ("?beta=true", BETA, {"input": "spawn: hello there", "multi_agent": {"enabled": True}}),
    "two subagents": ("?beta=true", BETA, {"input": "spawn: hello there\nspawn: hello again",
                                           "multi_agent": {"enabled": True}}),
}


async def measure(base: str, rounds: int) -> dict[str, list[float]]:
    times: dict[str, list[float]] = {kind: [] for kind in KINDS}
    async with aiohttp.ClientSession() as session:
        for round_ in range(rounds + 10):
            for kind, (query, headers, body) in KINDS.items():
                started = time.perf_counter()
                async with session.post(f"{base}/v1/responses{query}", headers=headers,
                                        json={"model": "fake-model", "store": False, **body}) as answer:
                    assert answer.status == 200, await answer.text()
                    await answer.read()
                if round_ >= 10:  # the first rounds warm up
                    times[kind].append(time.perf_counter() - started)
    return times


async def run(envoy_door: bool, rounds: int) -> None:
    async with running_fake_upstream() as upstream_url:
        listen_port = free_port()
        via = ["--upstream-via", f"http://127.0.0.1:{listen_port}/v1"] if envoy_door else []
        with tempfile.TemporaryDirectory() as tmp:
            async with running_sidecar(tmp, upstream_url, *via, extproc=envoy_door) as sidecar:
                envoy = None
                base = sidecar.http_url
                if envoy_door:
                    envoy = await start_envoy(render_bootstrap(
                        listen_port=listen_port, extproc_port=sidecar.extproc_port,
                        http_port=int(sidecar.http_url.rsplit(":", 1)[1]), upstream=upstream_url, admin_port=0))
                    base = f"http://127.0.0.1:{listen_port}"
                try:
                    times = await measure(base, rounds)
                finally:
                    if envoy is not None:
                        envoy.stop()
    print("through Envoy (ext_proc door)" if envoy_door else "through the HTTP door")
    plain = statistics.median(times["plain turn"])
    for kind, spent in times.items():
        print(f"{kind:14s} median {statistics.median(spent) * 1000:7.2f} ms  ratio to a plain turn "
              f"{statistics.median(spent) / plain:5.2f}")
    marginal = statistics.median(times["two subagents"]) - statistics.median(times["one subagent"])
    print(f"one more subagent: {marginal * 1000:.2f} ms, ratio to a plain turn {marginal / plain:.2f} "
          f"({rounds} rounds)")



def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="scripts/bench multi-agent", description=__doc__.split("\n\n")[0])
    parser.add_argument("--envoy", action="store_true", help="through a real Envoy in front (the ext_proc door)")
    parser.add_argument("rounds", nargs="?", type=int, default=200, help="measured rounds of the three kinds "
                        "(after 10 that warm up; default 200)")
    args = parser.parse_args(argv)
    asyncio.run(run(args.envoy, args.rounds))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
