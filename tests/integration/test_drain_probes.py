"""The HTTP door keeps answering its probes through the whole drain, whichever door holds the live streams.

Through a real Envoy, streams run on the ext_proc door (a slow fake upstream) when the sidecar gets SIGTERM. Until
the last of them has ended, the HTTP door must go on answering ``/health/live`` (200), ``/health/ready`` (503: it
is draining) and ``/metrics`` (200), and answer a new API request with 503 ``server_shutting_down``: a liveness
probe that fails mid-drain gets the pod killed before its streams end. Once alone (the drain timeout ends the
streams), then with ``--workers 2``, where the door's port is shared and each worker drains on its own.
"""

from __future__ import annotations

import asyncio
import json
import os
import signal
import sys
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from datetime import datetime
from pathlib import Path

import aiohttp
import pytest

from responses_bridge.demo.procs import ManagedProcess, free_port, port_is_free, wait_http
from responses_bridge.envoy_config import render_bootstrap
from tests.support.envoy import have_envoy, start_envoy
from tests.support.postgres import sidecar_env

pytestmark = [pytest.mark.envoy, pytest.mark.skipif(not have_envoy(), reason="no envoy binary")]

MODEL = "fake-model"
DRAIN_SECONDS = 4
STREAMS = 4
LONG = "[chunks=600] [delay=100] long"  # 60 s: still running at the drain deadline
BOUND_SECONDS = 40  # generous: a loaded machine must not fail the test, a hang still must


def _extproc_ports(count: int) -> int:
    """A base port with ``count`` free ports from it (a worker's ext_proc door is the base + its index)."""
    for _ in range(50):
        base = free_port()
        if all(port_is_free(base + index) for index in range(1, count)):
            return base
    raise RuntimeError("no run of free ports")


@asynccontextmanager
async def deployed(tmp: Path, upstream: str, workers: int) -> AsyncIterator[tuple[ManagedProcess, str, str]]:
    """``serve`` (with ``--workers`` when more than one) behind Envoy: (the process, its HTTP door, Envoy)."""
    http_port, extproc_port = free_port(), _extproc_ports(workers)
    db = str(tmp / "bridge.db")
    argv = [sys.executable, "-m", "responses_bridge", "serve", "--upstream", upstream, "--db", db,
            "--http-port", str(http_port), "--extproc-port", str(extproc_port), "--workers", str(workers)]
    process = ManagedProcess(argv, f"sidecar:{http_port}", log_file=tmp / "serve.log",
                             env={**sidecar_env(db), "RESPONSES_BRIDGE_DRAIN_TIMEOUT": str(DRAIN_SECONDS)})
    process.start()
    try:
        door = f"http://127.0.0.1:{http_port}"
        await wait_http(f"{door}/health", timeout=60, process=process)
        listen_port = free_port()
        envoy = await start_envoy(render_bootstrap(listen_port=listen_port, extproc_port=extproc_port,
                                                   http_port=http_port, upstream=upstream, admin_port=0,
                                                   workers=workers))
        try:
            yield process, door, f"http://127.0.0.1:{listen_port}"
        finally:
            envoy.stop()
    finally:
        process.stop(timeout=BOUND_SECONDS)


async def _stream(session: aiohttp.ClientSession, url: str, started: asyncio.Event) -> bytes:
    async with session.post(f"{url}/v1/responses", json={"model": MODEL, "input": LONG, "stream": True}) as answer:
        assert answer.status == 200, await answer.text()
        raw = b""
        async for chunk in answer.content.iter_any():
            raw += chunk
            if b"\n\n" in raw:
                started.set()
        return raw


async def _probe(door: str) -> tuple[int, int, int, int, str]:
    """One round of what a kubelet and a scraper ask, each on a new connection (as they do): the statuses of
    ``/health/live``, ``/health/ready``, ``/metrics`` and a new ``POST /v1/responses``, and that one's code."""
    async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(force_close=True),
                                     timeout=aiohttp.ClientTimeout(total=10)) as session:
        async with session.get(f"{door}/health/live") as live:
            live_status = live.status
        async with session.get(f"{door}/health/ready") as ready:
            ready_status = ready.status
        async with session.get(f"{door}/metrics") as metrics:
            metrics_status = metrics.status
        async with session.post(f"{door}/v1/responses", json={"model": MODEL, "input": "late"}) as late:
            code = (await late.json())["error"]["code"] if late.status != 200 else ""
            return live_status, ready_status, metrics_status, late.status, code


def _stream_ends(log: Path) -> list[float]:
    """When the sidecar ended each ext_proc stream (its ``request_finished`` lines), as POSIX seconds."""
    ends = []
    for line in log.read_text().splitlines():
        if line.startswith("{"):
            entry = json.loads(line)
            if entry.get("event") == "request_finished" and entry.get("door") == "extproc":
                ends.append(datetime.fromisoformat(entry["timestamp"].replace("Z", "+00:00")).timestamp())
    return ends


async def _drain_with_live_extproc_streams(tmp: Path, upstream: str, workers: int) -> None:
    async with deployed(tmp, upstream, workers) as (process, door, envoy_url):
        async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=BOUND_SECONDS)) as session:
            started = [asyncio.Event() for _ in range(STREAMS)]
            streams = [asyncio.create_task(_stream(session, envoy_url, event)) for event in started]
            await asyncio.wait_for(asyncio.gather(*(event.wait() for event in started)), BOUND_SECONDS)
            os.kill(process.pid, signal.SIGTERM)
            rounds = []
            refused: tuple[float, Exception] | None = None
            while not all(stream.done() for stream in streams):  # the whole drain: until the last stream ends
                try:
                    rounds.append(await _probe(door))
                except aiohttp.ClientConnectionError as exc:
                    refused = (time.time(), exc)  # the same clock as the sidecar's log
                    break
                await asyncio.sleep(0.1)
            raws = await asyncio.gather(*streams)
        if refused is not None:  # the sidecar may end its streams and close before the client has read their end
            assert process.process is not None
            await asyncio.to_thread(process.process.wait, BOUND_SECONDS)
            ends = _stream_ends(tmp / "serve.log")
            if len(ends) < STREAMS or refused[0] < max(ends):
                pytest.fail(f"the HTTP door refused a probe while streams were still live: {refused[1]!r}")
        assert len(rounds) >= 3, rounds  # the drain lasts DRAIN_SECONDS: there was time for several rounds
        for live, ready, metrics, late, code in rounds[1:]:  # the first may come before the signal is handled
            assert (live, ready, metrics, late, code) == (200, 503, 200, 503, "server_shutting_down")
        for raw in raws:
            assert b'"code":"server_error","message":"server_shutdown: ' in raw and raw.endswith(b"data: [DONE]\n\n")
        assert process.process is not None
        assert await asyncio.to_thread(process.process.wait, BOUND_SECONDS) == 0


async def test_probes_answer_through_a_drain_of_extproc_streams(tmp_path: Path, fake_upstream: str) -> None:
    await _drain_with_live_extproc_streams(tmp_path, fake_upstream, workers=1)


async def test_probes_answer_through_a_drain_of_extproc_streams_with_workers(tmp_path: Path,
                                                                              fake_upstream: str) -> None:
    await _drain_with_live_extproc_streams(tmp_path, fake_upstream, workers=2)
