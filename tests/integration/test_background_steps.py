"""Background tool loops survive their process past their completed steps: a run stopped (``kill -9``, or a SIGTERM
whose drain is shorter than the run) between a server-side call's result and the next model call is resumed by the
restarted process from that step. The call whose result was recorded is never made again, the model call that
asked for it is never made again, the response completes once, and its stored stream numbers on without a gap or a
repeat, so a reader resumes it with ``starting_after``. A call with effects that a restart interrupted is not made
again: the model reads that it was interrupted. (Two replicas on PostgreSQL, through Envoy: test_replicas_steps.py.)
"""

from __future__ import annotations

import asyncio
import os
import signal
import uuid
from collections.abc import AsyncIterator

import aiohttp
import pytest

from responses_bridge.demo.procs import wait_http
from tests.integration.test_background import parse_sse
from tests.integration.test_background_resume import (
    TIMEOUT,
    check_whole_stream,
    read_until_deltas,
    stream_after,
    until_ended,
)
from tests.support.bridge import UpstreamLog, start_sidecar
from tests.support.mcp_server import MCPTestServer, running_mcp_server
from tests.support.search_server import SearchServer

pytestmark = pytest.mark.filterwarnings("ignore::pytest.PytestUnraisableExceptionWarning")

MODEL = "fake-model"
ENV = {
    "RESPONSES_BRIDGE_BACKGROUND_LEASE_SECONDS": "3",  # past a loaded host's stalls (test_agents_durable.py)
    "RESPONSES_BRIDGE_DRAIN_TIMEOUT": "1",  # shorter than the run
    "RESPONSES_BRIDGE_MCP_ALLOWED_HOSTS": "127.0.0.1",
}


@pytest.fixture(scope="module")
async def search() -> AsyncIterator[SearchServer]:
    async with SearchServer() as server:
        yield server


@pytest.fixture(scope="module")
async def mcp() -> AsyncIterator[MCPTestServer]:
    async with running_mcp_server() as server:
        yield server


def searching(marker: str) -> dict:
    """A search, then an answer that streams for 4 s (the directives hold for every turn of the loop)."""
    return {"model": MODEL, "input": f"call web_search {marker} [chunks=40] [delay=100]",
            "tools": [{"type": "web_search"}], "background": True, "stream": True}


async def started(tmp_path, fake_upstream: str, db: str, search: SearchServer, **env: str):
    process, http_port, _ = start_sidecar(str(tmp_path), fake_upstream, "--db", db, "--api-key", "sk-upstream",
                                          env={**ENV, "RESPONSES_BRIDGE_WEB_SEARCH": f"searxng:{search.url}", **env},
                                          extproc=False)
    base = f"http://127.0.0.1:{http_port}"
    await wait_http(f"{base}/health", process=process)
    return process, base


async def model_calls(fake_upstream: str, marker: str) -> list[list[str]]:
    """The roles of the messages of every model call made for ``marker``'s response, in order."""
    entries = await UpstreamLog(fake_upstream.removesuffix("/v1")).entries()
    return [[message["role"] for message in entry["body"]["messages"]] for entry in entries
            if marker in str(entry["body"].get("messages"))]


def searches(search: SearchServer, marker: str) -> int:
    return sum(request.query.get("q") == marker for request in search.requests)


async def check_finished_once(base: str, response_id: str, seen: list[dict]) -> dict:
    """Completed once, its stream whole, what the first reader saw a prefix of it, and a reader that resumes
    after the last event it saw gets the rest without a gap or a repeat."""
    ended = await until_ended(base, response_id)
    assert ended["status"] == "completed", ended.get("error")
    whole, done = await stream_after(base, response_id, -1)
    assert done
    check_whole_stream(whole)
    assert whole[:len(seen)] == seen
    assert whole[-1]["response"]["output"] == ended["output"]
    rest, done = await stream_after(base, response_id, seen[-1]["sequence_number"])
    assert done and rest == whole[len(seen):]
    return ended


async def test_kill_9_after_a_search_result_resumes_at_the_next_model_call(tmp_path, fake_upstream: str,
                                                                             search: SearchServer) -> None:
    marker = f"w{uuid.uuid4().hex[:10]}"
    db = str(tmp_path / "steps.db")
    process, base = await started(tmp_path, fake_upstream, db, search)
    try:
        async with aiohttp.ClientSession(timeout=TIMEOUT) as session, session.post(
                f"{base}/v1/responses", json=searching(marker)) as answer:
            seen = await read_until_deltas(answer)  # text comes only in the model call after the search
            os.kill(process.pid, signal.SIGKILL)
            process.process.wait()
    finally:
        process.stop()
    assert searches(search, marker) == 1
    process, base = await started(tmp_path, fake_upstream, db, search)
    try:
        ended = await check_finished_once(base, seen[0]["response"]["id"], seen)
        assert [item["type"] for item in ended["output"]] == ["web_search_call", "message"]
        assert ended["output"][0]["status"] == "completed"
        assert ended["output"][1]["content"][0]["text"].startswith("Tool result: ")
    finally:
        process.stop()
    assert searches(search, marker) == 1  # its recorded result was not searched for again
    calls = await model_calls(fake_upstream, marker)
    assert [roles[-1] for roles in calls] == ["user", "tool", "tool"]  # the call after it made again, only it
    assert calls[1] == calls[2]


async def test_sigterm_hands_the_run_off_at_its_step_boundary(tmp_path, fake_upstream: str) -> None:
    """The drain (60 s, longer than the run) does not wait for the run to end: at its first step boundary the run
    is handed off, the draining process makes no further model call and exits."""
    marker = f"w{uuid.uuid4().hex[:10]}"
    db = str(tmp_path / "boundary.db")
    async with SearchServer(mode="slow") as held:  # the search answers when the test lets it
        process, base = await started(tmp_path, fake_upstream, db, held, RESPONSES_BRIDGE_DRAIN_TIMEOUT="60")
        try:
            async with aiohttp.ClientSession(timeout=TIMEOUT) as session, session.post(
                    f"{base}/v1/responses", json=searching(marker)) as answer:
                raw = await answer.content.readuntil(b"\n\n")
                while searches(held, marker) == 0:  # the search began: its turn is recorded
                    await asyncio.sleep(0.05)
                os.kill(process.pid, signal.SIGTERM)
                await asyncio.sleep(0.3)
                held.release()
                raw += await answer.read()  # ends at the step boundary, long before the drain's deadline
            seen, done = parse_sse(raw)
            assert done, "the draining process's reader did not get its stream ended cleanly"
            assert process.process.wait(timeout=60) == 0
        finally:
            process.stop()
        assert not any(event["type"] in ("response.failed", "response.completed") for event in seen)
        assert [roles[-1] for roles in await model_calls(fake_upstream, marker)] == ["user"]
        process, base = await started(tmp_path, fake_upstream, db, held)
        try:
            ended = await check_finished_once(base, seen[0]["response"]["id"], seen)
            assert [item["type"] for item in ended["output"]] == ["web_search_call", "message"]
        finally:
            process.stop()
        assert searches(held, marker) == 1
    assert [roles[-1] for roles in await model_calls(fake_upstream, marker)] == ["user", "tool"]


async def test_sigterm_during_the_next_model_call_resumes_it(tmp_path, fake_upstream: str,
                                                             search: SearchServer) -> None:
    marker = f"w{uuid.uuid4().hex[:10]}"
    db = str(tmp_path / "drain.db")
    process, base = await started(tmp_path, fake_upstream, db, search)
    try:
        async with aiohttp.ClientSession(timeout=TIMEOUT) as session, session.post(
                f"{base}/v1/responses", json=searching(marker)) as answer:
            seen = await read_until_deltas(answer)
            os.kill(process.pid, signal.SIGTERM)
            rest, done = parse_sse(await answer.read())  # ends at the drain deadline (1 s)
        assert done
        seen += rest
        assert process.process.wait(timeout=60) == 0
    finally:
        process.stop()
    process, base = await started(tmp_path, fake_upstream, db, search)
    try:
        ended = await check_finished_once(base, seen[0]["response"]["id"], seen)
        assert [item["type"] for item in ended["output"]] == ["web_search_call", "message"]
    finally:
        process.stop()
    assert searches(search, marker) == 1
    assert [roles[-1] for roles in await model_calls(fake_upstream, marker)] == ["user", "tool", "tool"]


async def test_an_interrupted_call_with_effects_is_not_made_again(tmp_path, fake_upstream: str,
                                                                  search: SearchServer, mcp: MCPTestServer) -> None:
    """``kill -9`` while an MCP call runs (``slow``: 42 s): after the restart its item fails as interrupted, the
    model reads so, and the call is not made again (no second ``mcp_call`` item, no second model call asking for
    it); the listing, safe to repeat, is made again but shown once."""
    marker = f"m{uuid.uuid4().hex[:10]}"
    db = str(tmp_path / "effects.db")
    body = {"model": MODEL, "input": f"call tools__slow {marker} [chunks=5]", "background": True, "stream": True,
            "tools": [{"type": "mcp", "server_label": "tools", "server_url": mcp.http_url,
                       "require_approval": "never"}]}
    process, base = await started(tmp_path, fake_upstream, db, search)
    try:
        async with aiohttp.ClientSession(timeout=TIMEOUT) as session, session.post(
                f"{base}/v1/responses", json=body) as answer:
            raw = b""
            while b"response.mcp_call.in_progress" not in raw:  # shown once stored, with its turn's record
                chunk = await answer.content.readuntil(b"\n\n")
                assert chunk, "the stream ended before the call began"
                raw += chunk
            os.kill(process.pid, signal.SIGKILL)
            process.process.wait()
    finally:
        process.stop()
    seen, _ = parse_sse(raw)
    process, base = await started(tmp_path, fake_upstream, db, search)
    try:
        ended = await check_finished_once(base, seen[0]["response"]["id"], seen)
    finally:
        process.stop()
    assert [item["type"] for item in ended["output"]] == ["mcp_list_tools", "mcp_call", "message"]
    call = ended["output"][1]
    assert call["status"] == "failed" and "interrupted by a server restart" in str(call["error"])
    assert "interrupted by a server restart" in ended["output"][2]["content"][0]["text"]
    assert [roles[-1] for roles in await model_calls(fake_upstream, marker)] == ["user", "tool"]


async def test_a_search_a_restart_interrupted_is_made_again(tmp_path, fake_upstream: str,
                                                             search: SearchServer) -> None:
    """``kill -9`` while the search runs: a read, safe to repeat, so the restarted process searches again (on its
    own search backend here) and goes on; the model call that asked for it is not made again."""
    marker = f"w{uuid.uuid4().hex[:10]}"
    db = str(tmp_path / "reread.db")
    async with SearchServer(mode="slow") as held:
        process, base = await started(tmp_path, fake_upstream, db, held)
        try:
            async with aiohttp.ClientSession(timeout=TIMEOUT) as session, session.post(
                    f"{base}/v1/responses", json=searching(marker)) as answer:
                raw = b""
                while b"response.web_search_call.searching" not in raw:  # shown once stored
                    chunk = await answer.content.readuntil(b"\n\n")
                    assert chunk, "the stream ended before the search began"
                    raw += chunk
                while searches(held, marker) == 0:
                    await asyncio.sleep(0.05)
                await asyncio.sleep(0.5)  # the turn's record goes with the run's next batch (0.1 s)
                os.kill(process.pid, signal.SIGKILL)
                process.process.wait()
        finally:
            process.stop()
        held.release()
    seen, _ = parse_sse(raw)
    process, base = await started(tmp_path, fake_upstream, db, search)
    try:
        ended = await check_finished_once(base, seen[0]["response"]["id"], seen)
    finally:
        process.stop()
    assert [item["type"] for item in ended["output"]] == ["web_search_call", "message"]
    assert ended["output"][0]["status"] == "completed"
    assert searches(search, marker) == 1  # searched again after the restart
    assert [roles[-1] for roles in await model_calls(fake_upstream, marker)] == ["user", "tool"]
