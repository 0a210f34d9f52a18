"""``scripts/bench code``: what a code interpreter call costs end to end, and where the time goes.

One sidecar (HTTP door, SQLite) over the fake upstream, in its own process; the load from this one. Measured,
interleaved one by one so a slow patch of the shared machine hits each alike:

- ``call``: ``POST /v1/responses`` whose model runs ``print(1)`` (two model turns, the sandbox run, the
  container's write-back, the store), end to end;
- ``plain``: the same request without the tool (one model turn): the bridge's floor;
- ``python``: a bare ``python -c 'print(1)'`` process, no sandbox: the interpreter's floor;
- the sandbox's own breakdown, from runs of :class:`~responses_bridge.sandbox.Sandbox` in this process: sandbox
  start (bubblewrap spawned until the launcher runs the code), interpreter (the code's own time), and the rest.

Then ``--concurrent`` calls at once (default 20), each must complete. Ratios are the figures that carry between
machines; the milliseconds do not.
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import os
import statistics
import subprocess
import sys
import tempfile
import time
from typing import Any

import aiohttp
import orjson

from responses_bridge.demo.procs import ManagedProcess, free_port, wait_http
from responses_bridge.sandbox import Sandbox, SandboxLimits


def _body(code: str | None) -> bytes:
    if code is None:
        return orjson.dumps({"model": "fake-model", "input": "say hi"})
    encoded = base64.b64encode(orjson.dumps({"code": code})).decode()
    return orjson.dumps({"model": "fake-model", "input": f"call python [args64={encoded}]",
                         "tools": [{"type": "code_interpreter", "container": {"type": "auto"}}]})


async def _post(session: aiohttp.ClientSession, url: str, body: bytes) -> tuple[float, dict[str, Any]]:
    started = time.perf_counter()
    async with session.post(url, data=body, headers={"Content-Type": "application/json"}) as reply:
        answer = await reply.json()
        if reply.status != 200:
            raise RuntimeError(f"{reply.status}: {answer}")
    return time.perf_counter() - started, answer


def _p50(samples: list[float]) -> float:
    return statistics.median(samples) * 1000


async def _sandbox_breakdown(runs: int) -> dict[str, float]:
    sandbox = await asyncio.to_thread(Sandbox.detect, SandboxLimits())
    if sandbox.unavailable is not None:
        raise SystemExit(f"scripts/bench code: {sandbox.unavailable}")
    start, code, total = [], [], []
    for _ in range(runs):
        result = await sandbox.run("print(1)")
        assert result.started is not None and result.finished is not None and result.stdout == "1\n"
        start.append(result.started - result.spawned)
        code.append(result.finished - result.started)
        total.append(result.seconds)
    return {"sandbox_start_ms": _p50(start), "interpreter_ms": _p50(code), "sandbox_total_ms": _p50(total)}


def _bare_python(runs: int) -> float:
    samples = []
    for _ in range(runs):
        started = time.perf_counter()
        subprocess.run([sys.executable, "-I", "-c", "print(1)"], capture_output=True, check=True)
        samples.append(time.perf_counter() - started)
    return _p50(samples)


async def bench(runs: int, concurrent: int) -> dict[str, Any]:
    with tempfile.TemporaryDirectory(prefix="rb-bench.code-") as tmp:
        upstream_port, http_port = free_port(), free_port()
        upstream = ManagedProcess([sys.executable, "-m", "responses_bridge", "fake-upstream", "--port",
                                   str(upstream_port)], "fake-upstream")
        sidecar = ManagedProcess([sys.executable, "-m", "responses_bridge", "serve", "--upstream",
                                  f"http://127.0.0.1:{upstream_port}/v1", "--http-port", str(http_port),
                                  "--no-extproc", "--db", os.path.join(tmp, "bench.db"), "--log-level", "warning"],
                                 "sidecar")
        try:
            upstream.start()
            sidecar.start()
            await wait_http(f"http://127.0.0.1:{upstream_port}/health", process=upstream)
            await wait_http(f"http://127.0.0.1:{http_port}/health", process=sidecar)
            url = f"http://127.0.0.1:{http_port}/v1/responses"
            call, plain = _body("print(1)"), _body(None)
            calls: list[float] = []
            plains: list[float] = []
            async with aiohttp.ClientSession() as session:
                for _ in range(3):  # warm up
                    await _post(session, url, call)
                for _ in range(runs):
                    seconds, answer = await _post(session, url, call)
                    assert answer["output"][0]["status"] == "completed", answer["output"][0]
                    calls.append(seconds)
                    plains.append((await _post(session, url, plain))[0])
                started = time.perf_counter()
                outcomes = await asyncio.gather(*(_post(session, url, call) for _ in range(concurrent)),
                                                return_exceptions=True)
                wall = time.perf_counter() - started
        finally:
            sidecar.stop()
            upstream.stop()
    failures = [outcome for outcome in outcomes if isinstance(outcome, BaseException)
                or outcome[1]["output"][0]["status"] != "completed"]
    breakdown = await _sandbox_breakdown(runs)
    python_ms = await asyncio.to_thread(_bare_python, runs)
    call_ms, plain_ms = _p50(calls), _p50(plains)
    return {
        "runs": runs, "call_p50_ms": round(call_ms, 1), "call_p90_ms": round(sorted(calls)[int(len(calls) * 0.9)]
                                                                             * 1000, 1),
        "plain_p50_ms": round(plain_ms, 1), "bare_python_p50_ms": round(python_ms, 1),
        **{key: round(value, 1) for key, value in breakdown.items()},
        "bridge_ms": round(call_ms - breakdown["sandbox_total_ms"], 1),
        "call_over_plain_plus_python": round(call_ms / (plain_ms + python_ms), 2),
        "sandbox_over_bare_python": round(breakdown["sandbox_total_ms"] / python_ms, 2),
        "concurrent": concurrent, "concurrent_failures": len(failures), "concurrent_wall_s": round(wall, 2),
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="scripts/bench code", description=__doc__.split("\n\n")[0])
    parser.add_argument("--runs", type=int, default=40)
    parser.add_argument("--concurrent", type=int, default=20)
    args = parser.parse_args(argv)
    results = asyncio.run(bench(args.runs, args.concurrent))
    print(orjson.dumps(results, option=orjson.OPT_INDENT_2).decode())
    return 1 if results["concurrent_failures"] else 0


if __name__ == "__main__":
    sys.exit(main())
