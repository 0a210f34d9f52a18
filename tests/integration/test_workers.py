"""``serve --workers``: several processes on one database (a SQLite file; PostgreSQL in the run that puts sidecars
there).

Two workers started by hand as the supervisor starts them (its marker in their environment), each on its own HTTP
port, so every request goes to the worker the test names: a chain continues across them, a background response
running on one is followed and cancelled from the other, and a worker killed with SIGKILL has its run failed by the
other once its lease runs out. Then the supervisor itself: both workers serve, ``/metrics`` adds them up, a worker
killed is started again, SIGTERM drains a stream in flight, a worker that cannot start stops the whole, and an
in-memory database is refused.
"""

from __future__ import annotations

import asyncio
import json
import os
import signal
import socket
import subprocess
import time
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager, contextmanager
from pathlib import Path

import aiohttp
import openai
import pytest
from openai.types.responses import Response

from responses_bridge.demo.procs import free_port, wait_http
from responses_bridge.process import event_loop
from responses_bridge.process.workers import WORKER_ENV
from tests.integration.test_background import parse_sse, wait_status
from tests.support.bridge import PYTHON, UpstreamLog, sidecar_env
from tests.support.sdk import async_sdk

MODEL = "fake-model"
LEASE_SECONDS = 2.0


@contextmanager
def serve(tmp: Path, upstream: str, *args: str, env: dict[str, str] | None = None,
          log_name: str = "serve.log") -> Iterator[tuple[subprocess.Popen[bytes], Path]]:
    """``responses-bridge serve ARGS`` with its log in a file; stopped (its whole group) on exit."""
    log = tmp / log_name
    db = str(tmp / "shared.db")
    environment = {**os.environ, **sidecar_env(db), "RESPONSES_BRIDGE_BACKGROUND_LEASE_SECONDS": str(LEASE_SECONDS),
                   **(env or {})}
    with open(log, "wb") as output:
        process = subprocess.Popen([PYTHON, "-m", "responses_bridge", "serve", "--upstream", upstream, "--db", db,
                                    *args], stdout=output, stderr=output, env=environment, start_new_session=True)
    try:
        yield process, log
    finally:
        if process.poll() is None:
            os.killpg(process.pid, signal.SIGTERM)
            try:
                process.wait(timeout=40)
            except subprocess.TimeoutExpired:
                os.killpg(process.pid, signal.SIGKILL)
                process.wait()


def log_lines(log: Path) -> list[dict]:
    lines = []
    for line in log.read_text(errors="replace").splitlines():
        try:
            lines.append(json.loads(line))
        except ValueError:
            continue
    return lines


@asynccontextmanager
async def worker(tmp: Path, upstream: str, index: int) -> AsyncIterator[tuple[str, subprocess.Popen[bytes]]]:
    """Worker ``index`` of 2 on a port of its own, ready: (its url, its process). Another test process may take the
    port between ``free_port()`` and the worker's bind (the worker then stops, saying so): that port is given up
    and another tried, at most three times."""
    for attempt in range(3):
        port = free_port()
        with serve(tmp, upstream, "--http-port", str(port), "--no-extproc", "--workers", "2",
                   env={WORKER_ENV: f"{index}/2"}, log_name=f"w{index}.log") as (process, log):
            url = f"http://127.0.0.1:{port}"
            if await _ready(f"{url}/health", process):
                yield url, process
                return
            said = log.read_text(errors="replace")
            if "Address already in use" not in said or attempt == 2:
                raise RuntimeError(f"worker {index} did not start: {said[-2000:]}")


async def _ready(url: str, process: subprocess.Popen[bytes], timeout: float = 60.0) -> bool:
    """True once ``url`` answers 200; False if the process stopped first."""
    deadline = time.monotonic() + timeout
    while process.poll() is None:
        try:
            await wait_http(url, timeout=1)
            return True
        except TimeoutError:
            if time.monotonic() > deadline:
                raise
    return False


@asynccontextmanager
async def two_workers(tmp: Path, upstream: str) -> AsyncIterator[tuple[str, str, subprocess.Popen[bytes]]]:
    """Workers 0 and 1 of 2, each on its own HTTP port: (url of 0, url of 1, process of 0)."""
    async with worker(tmp, upstream, 0) as (zero, first), worker(tmp, upstream, 1) as (one, second):
        assert first.poll() is None and second.poll() is None
        yield zero, one, first


def sdk(url: str) -> openai.AsyncOpenAI:
    return async_sdk(base_url=f"{url}/v1", api_key="sk-test", max_retries=0, timeout=60)


async def test_a_chain_continues_across_workers(tmp_path: Path, fake_upstream: str) -> None:
    upstream = UpstreamLog(fake_upstream.removesuffix("/v1"))
    async with two_workers(tmp_path, fake_upstream) as (zero, one, _), sdk(zero) as on_zero, sdk(one) as on_one:
        first = await on_zero.responses.create(model=MODEL, input="my name is Ada")
        await upstream.clear()
        second = await on_one.responses.create(model=MODEL, input="what is my name?", previous_response_id=first.id)
        assert second.status == "completed"
        contents = [m["content"] for m in (await upstream.last_body())["messages"]]
        assert contents[0] == "my name is Ada" and contents[-1] == "what is my name?"
        third = await on_zero.responses.create(model=MODEL, input="and again", previous_response_id=second.id)
        assert third.status == "completed"
        assert (await on_one.responses.retrieve(third.id)).id == third.id


async def test_a_background_run_on_one_worker_is_followed_and_cancelled_from_the_other(
        tmp_path: Path, fake_upstream: str) -> None:
    async with two_workers(tmp_path, fake_upstream) as (zero, one, _), sdk(zero) as on_zero, sdk(one) as on_one:
        started = await on_zero.responses.create(model=MODEL, input="[chunks=400] [delay=50] slow", background=True)
        await wait_status(on_one, started.id, {"in_progress"})
        async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=60)) as session:
            follow = asyncio.ensure_future(_read(session, f"{one}/v1/responses/{started.id}?stream=true"))
            await asyncio.sleep(0.5)
            cancelled = await on_one.responses.cancel(started.id)
            assert cancelled.status == "cancelled"
            events, _ = parse_sse(await asyncio.wait_for(follow, 30))
        assert events[0]["type"] == "response.created"
        assert events[-1]["type"] == "response.failed" and events[-1]["response"]["status"] == "cancelled"
        assert [event["sequence_number"] for event in events] == list(range(len(events)))
        assert (await on_zero.responses.retrieve(started.id)).status == "cancelled"


async def _read(session: aiohttp.ClientSession, url: str) -> bytes:
    async with session.get(url) as answer:
        assert answer.status == 200, await answer.text()
        return await answer.read()


async def test_the_run_of_a_killed_worker_is_finished_by_the_other(tmp_path: Path, fake_upstream: str) -> None:
    async with two_workers(tmp_path, fake_upstream) as (zero, one, first), sdk(one) as on_one:
        # no Authorization: nothing of the client's goes upstream (a run on the client's own is resumed with it,
        # kept sealed: test_background_resume_credentials.py)
        async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=30)) as session, session.post(
                f"{zero}/v1/responses", json={"model": MODEL, "input": "[chunks=40] [delay=100] slow",
                                              "background": True}) as answer:
            started = Response.model_validate(await answer.json())
        await wait_status(on_one, started.id, {"in_progress"})
        os.killpg(first.pid, signal.SIGKILL)  # no drain, no release: only its lease can tell
        ended = await wait_status(on_one, started.id, {"failed", "completed", "cancelled"}, timeout=8 * LEASE_SECONDS)
        assert ended.status == "completed", ended.error  # resumed by a live worker, not failed
        async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=30)) as session:
            events, _ = parse_sse(await _read(session, f"{one}/v1/responses/{started.id}?stream=true"))
        assert events[-1]["type"] == "response.completed"
        assert sum(event["type"] == "response.completed" for event in events) == 1
        assert [event["sequence_number"] for event in events] == list(range(len(events)))


async def test_the_supervisor_runs_drains_and_restarts_its_workers(tmp_path: Path, fake_upstream: str,
                                                                   monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("GRPC_ENABLE_FORK_SUPPORT", raising=False)  # the bridge sets it itself (process/event_loop.py)
    http_port = free_port()
    base = f"http://127.0.0.1:{http_port}"
    uds = tmp_path / "extproc.sock"
    with serve(tmp_path, fake_upstream, "--workers", "2", "--http-port", str(http_port),
               "--extproc-uds", str(uds)) as (process, log):
        await wait_http(f"{base}/health", timeout=60)
        await _until(lambda: {line.get("worker") for line in log_lines(log) if line.get("event") == "serving"}
                     == {0, 1})
        # every worker on the loop the run asks for (by default uvloop, a dependency here: process/event_loop.py)
        expected = event_loop.loop_factory(event_loop.choice_from_environment())[0]
        assert {line["loop"] for line in log_lines(log) if line.get("event") == "serving"} == {expected}
        for pid in _worker_pids(process.pid):  # gRPC's fork handlers off: uvloop's spawns fork (process/event_loop.py)
            assert b"GRPC_ENABLE_FORK_SUPPORT=0" in Path(f"/proc/{pid}/environ").read_bytes().split(b"\0")
        assert uds.is_socket() and Path(f"{uds}.1").is_socket()  # one ext_proc socket per worker
        # every request on a new connection: the kernel spreads them; /metrics (from either) counts them all
        served = 20
        for _ in range(served):
            async with sdk(base) as client:
                assert (await client.responses.create(model=MODEL, input="hi")).status == "completed"
        await _until(lambda: len({line.get("worker") for line in log_lines(log)
                                  if line.get("event") == "request_finished"}) == 2)
        for _ in range(4):  # whichever worker answers the scrape, the sum is the same
            assert await _requests_total(base) == served

        victim = _worker_pids(process.pid)[0]
        os.kill(victim, signal.SIGKILL)
        await _until(lambda: any(line.get("event") == "worker_exited" for line in log_lines(log)))
        await _until(lambda: sum(line.get("event") == "serving" for line in log_lines(log)) == 3, timeout=60)
        assert victim not in _worker_pids(process.pid)
        assert await _requests_total(base) == served  # a dead worker's counts stay in the sum

        # SIGTERM while a stream runs: it completes (drain), then every process ends
        async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=60)) as session:
            async with session.post(f"{base}/v1/responses", json={
                    "model": MODEL, "input": "[chunks=30] [delay=50] drained", "stream": True}) as answer:
                first_bytes = await answer.content.readany()
                assert b"response.created" in first_bytes
                process.send_signal(signal.SIGTERM)
                events, _ = parse_sse(first_bytes + await answer.content.read())
        assert events[-1]["type"] == "response.completed"
        assert process.wait(timeout=40) == 0
        assert _worker_pids(process.pid) == []


async def test_a_worker_that_cannot_start_stops_the_supervisor(tmp_path: Path, fake_upstream: str) -> None:
    with socket.socket() as taken:  # a listener without SO_REUSEPORT: no worker may share its port
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        with serve(tmp_path, fake_upstream, "--workers", "2", "--http-port", str(port), "--no-extproc") as (
                process, log):
            assert process.wait(timeout=60) == 1
    text = log.read_text()
    assert "the HTTP door cannot listen on" in text and "Traceback" not in text


def test_workers_refuse_an_in_memory_database(tmp_path: Path) -> None:
    done = subprocess.run([PYTHON, "-m", "responses_bridge", "serve", "--workers", "2", "--db", ":memory:"],
                          capture_output=True, text=True, timeout=60, check=False)
    assert done.returncode == 2
    assert done.stderr.strip().count("\n") == 0 and "':memory:'" in done.stderr


async def _requests_total(base: str) -> float:
    async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(force_close=True)) as session, \
            session.get(f"{base}/metrics") as answer:
        text = await answer.text()
    return sum(float(line.rsplit(" ", 1)[1]) for line in text.splitlines()
               if line.startswith('responses_bridge_requests_total{door="http",route="POST /v1/responses"'))


def _worker_pids(supervisor: int) -> list[int]:
    children = Path(f"/proc/{supervisor}/task/{supervisor}/children")
    try:
        return [int(pid) for pid in children.read_text().split()]
    except OSError:
        return []


async def _until(condition: object, timeout: float = 30) -> None:
    deadline = time.monotonic() + timeout
    while not condition():  # type: ignore[operator]
        assert time.monotonic() < deadline, "condition not met in time"
        await asyncio.sleep(0.1)
