"""Background responses survive their process through the Envoy door, one process on its database: a run POSTed
through Envoy (the ext_proc door) and stopped — ``kill -9``, or a SIGTERM whose drain is shorter than the run —
during its slow model call, or between a server-side call's result and the next model call, is resumed by the
process started again on the same database (SQLite; on PostgreSQL with ``--store=postgres``, the same restart).
It completes once, the recorded search is not made again, and a reader that saw its events through Envoy resumes
them there with ``starting_after``: no gap, no repeat. (Two replicas on PostgreSQL: test_replicas_steps.py.)
An Agents session's running turn with two inputs queued behind it, all sent through Envoy (which routes the
Agents API to the HTTP door), survives the same stops: every input answered once, the reader resuming through
Envoy with ``Last-Event-ID`` gets the rest of the session's stream without a gap or a repeat.

One Envoy for the module, in front of fixed ports: each test's sidecar, and the one started again after the stop,
listen on them, so the stack is not built again per test.
"""

from __future__ import annotations

import asyncio
import os
import signal
import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path

import aiohttp
import pytest

from responses_bridge.demo.procs import ManagedProcess, free_port, wait_http
from responses_bridge.envoy_config import render_bootstrap
from tests.integration import test_agents_durable as sessions
from tests.integration.test_background import parse_sse
from tests.integration.test_background_resume import QUICK, SLOW, TIMEOUT, read_until_deltas
from tests.integration.test_background_steps import check_finished_once, model_calls, searches, searching
from tests.support.bridge import start_sidecar
from tests.support.envoy import have_envoy, start_envoy
from tests.support.search_server import SearchServer

pytestmark = [pytest.mark.envoy, pytest.mark.skipif(not have_envoy(), reason="no envoy binary"),
              pytest.mark.filterwarnings("ignore::pytest.PytestUnraisableExceptionWarning"),
              pytest.mark.store_proven(
                  "tests/integration/test_background_resume.py", "tests/integration/test_agents_durable.py",
                  reason="the same stops and resumes through the HTTP door on PostgreSQL: the Envoy door adds no store "
                         "code (scripts/pg-coverage: no line of store/postgres that only this module covers)")]

ENV = {
    "RESPONSES_BRIDGE_BACKGROUND_LEASE_SECONDS": "3",  # past a loaded host's stalls (test_agents_durable.py)
    "RESPONSES_BRIDGE_DRAIN_TIMEOUT": "1",  # shorter than the run
}


@dataclass
class Door:
    url: str  # Envoy's listener, without /v1
    http_port: int
    extproc_port: int


@pytest.fixture(scope="module")
async def search() -> AsyncIterator[SearchServer]:
    async with SearchServer() as server:
        yield server


@pytest.fixture(scope="module")
async def door(fake_upstream: str) -> AsyncIterator[Door]:
    listen_port, http_port, extproc_port = free_port(), free_port(), free_port()
    envoy = await start_envoy(render_bootstrap(listen_port=listen_port, extproc_port=extproc_port,
                                               http_port=http_port, upstream=fake_upstream, admin_port=0))
    try:
        yield Door(f"http://127.0.0.1:{listen_port}", http_port, extproc_port)
    finally:
        envoy.stop()


async def started(tmp_path: Path, fake_upstream: str, db: str, door: Door, search: SearchServer) -> ManagedProcess:
    """A sidecar on ``db``, on the door's fixed ports, answering through Envoy (a connection Envoy held to the
    stopped one may fail a first request: asked until one is answered)."""
    process, _, _ = start_sidecar(str(tmp_path), fake_upstream, "--db", db, "--api-key", "sk-upstream",
                                  "--http-port", str(door.http_port), "--extproc-port", str(door.extproc_port),
                                  env={**ENV, "RESPONSES_BRIDGE_WEB_SEARCH": f"searxng:{search.url}"})
    await wait_http(f"http://127.0.0.1:{door.http_port}/health", process=process)
    deadline = asyncio.get_running_loop().time() + 30
    async with aiohttp.ClientSession(timeout=TIMEOUT) as session:
        while True:
            async with session.post(f"{door.url}/v1/responses", json={
                    "model": "fake-model", "input": "ready?", "store": False}) as answer:
                if answer.status == 200:
                    return process
            assert asyncio.get_running_loop().time() < deadline, "Envoy never reached the sidecar"
            await asyncio.sleep(0.2)


@pytest.mark.parametrize("stop", ["kill", "term"])
@pytest.mark.parametrize("during", ["model_call", "tool_step"])
async def test_a_run_stopped_behind_envoy_is_resumed_by_the_restarted_process(
        during: str, stop: str, tmp_path: Path, fake_upstream: str, door: Door, search: SearchServer) -> None:
    marker = f"e{uuid.uuid4().hex[:10]}"
    db = str(tmp_path / "envoy.db")
    # POSTed without ``stream`` (the ext_proc door answers a streamed background POST in one piece, at the end or
    # after 25 s), its events read as a client follows a run: GET …?stream=true, through Envoy too
    body = {**searching(marker), "stream": False} if during == "tool_step" else {
        "model": "fake-model", "input": f"{SLOW} {marker}", "background": True}
    process = await started(tmp_path, fake_upstream, db, door, search)
    try:
        async with aiohttp.ClientSession(timeout=TIMEOUT) as session:
            async with session.post(f"{door.url}/v1/responses", json=body) as answer:
                assert answer.status == 200, await answer.text()
                response_id = (await answer.json())["id"]
            answer = await session.get(f"{door.url}/v1/responses/{response_id}",
                                       params={"stream": "true", "starting_after": "-1"})
            assert answer.status == 200, await answer.text()
            seen = await read_until_deltas(answer)  # a tool loop streams text only after its search
            assert process.pid is not None and process.process is not None
            if stop == "kill":
                os.killpg(process.pid, signal.SIGKILL)
            else:
                os.killpg(process.pid, signal.SIGTERM)
                rest, done = parse_sse(await answer.read())  # ended by the drain, cleanly, through Envoy
                assert done, "the draining process's reader did not get its stream ended cleanly"
                seen += rest
            answer.close()
            await asyncio.get_running_loop().run_in_executor(None, process.process.wait, 60)
    finally:
        process.stop()
    assert not any(event["type"] in ("response.failed", "response.completed") for event in seen)
    assert [event["sequence_number"] for event in seen] == list(range(len(seen)))
    process = await started(tmp_path, fake_upstream, db, door, search)
    try:
        ended = await check_finished_once(door.url, seen[0]["response"]["id"], seen)
        if during == "model_call":
            async with aiohttp.ClientSession(timeout=TIMEOUT) as session, session.post(
                    f"{door.url}/v1/responses", json={"model": "fake-model", "input": f"{QUICK} {marker}",
                                                      "store": False}) as answer:
                expected = (await answer.json())["output"][0]["content"][0]["text"]
            assert ended["output"][-1]["content"][0]["text"] == expected
    finally:
        process.stop()
    if during == "tool_step":
        assert [item["type"] for item in ended["output"]] == ["web_search_call", "message"]
        assert searches(search, marker) == 1  # its recorded result was not searched for again
        calls = await model_calls(fake_upstream, marker)
        assert calls[0][-1] == "user" and all(roles[-1] == "tool" for roles in calls[1:]), calls
        assert len(calls) <= 3  # only the call in flight made again


@pytest.mark.parametrize("stop", ["kill", "term"])
async def test_a_session_turn_stopped_behind_envoy_is_resumed_with_its_queued_input(
        stop: str, tmp_path: Path, fake_upstream: str, door: Door, search: SearchServer) -> None:
    db = str(tmp_path / "sessions.db")
    process = await started(tmp_path, fake_upstream, db, door, search)
    try:
        async with aiohttp.ClientSession(door.url, headers=sessions.BETA, timeout=TIMEOUT) as http:
            session_id = await sessions.slow_turn_and_two_queued(http)
            async with http.get(f"/v1/agents/sessions/{session_id}/events") as reading:
                before = await sessions.read_until_deltas(reading)
                sessions.stop(process, stop)
                if stop == "term":  # the draining process ends its readers' streams cleanly
                    before += await sessions.read_to_end(reading)
        assert process.process is not None
        await asyncio.get_running_loop().run_in_executor(None, process.process.wait, 60)
    finally:
        process.stop()
    seen = sessions.frames(before)
    process = await started(tmp_path, fake_upstream, db, door, search)
    try:
        async with aiohttp.ClientSession(door.url, headers=sessions.BETA, timeout=TIMEOUT) as http:
            after, whole, turns = await sessions.resumed_log(http, session_id,
                                                               {"headers": {"Last-Event-ID": seen[-1][0]}})
    finally:
        process.stop()
    assert [event_id for event_id, _, _ in seen + after] == [event_id for event_id, _, _ in whole]
    kinds = [kind for _, kind, _ in whole]
    assert "agent.session.turn.failed" not in kinds and kinds.count("agent.session.turn.completed") == 3, kinds
    assert [turn["status"] for turn in turns] == ["completed"] * 3
