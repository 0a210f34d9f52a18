"""A replica that loses its database for a moment never runs an effect twice (issue #86, "fenced writers").

Two replicas on one PostgreSQL, A's connections through a loopback proxy the test cuts (tests/support/db_cut.py).
A background response's first model call, on A, answers with an MCP call after a few seconds; A's database is cut
just after that call went out, so A's lease runs out and B takes the run over (the lease row names B); A's database
comes back a moment before A's own answer arrives. A's writes are fenced by its lease: the checkpoint written
before the MCP call is refused, so A stops at once — the call is made by B alone, the follow-up model call once,
and a reader on A is shown only what the store holds at each sequence number, then the rest of the stream as B
stores it, to its end. The control is the same run without the cut.
"""

from __future__ import annotations

import asyncio
import base64
import uuid
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path

import aiohttp
import asyncpg
import pytest

from responses_bridge.demo.procs import ManagedProcess, wait_http
from tests.integration.test_background import parse_sse
from tests.integration.test_background_resume import TIMEOUT, stream_after, until_ended
from tests.integration.test_background_steps import model_calls
from tests.support.bridge import start_sidecar
from tests.support.db_cut import cut_proxy
from tests.support.mcp_server import MCPTestServer, running_mcp_server
from tests.support.postgres import PostgresServer, fresh_database

pytestmark = [pytest.mark.store_free, pytest.mark.filterwarnings("ignore::pytest.PytestUnraisableExceptionWarning")]

MODEL = "fake-model"
LEASE = 2.0  # heartbeat every 0.67 s: the moment between the database's return and A's answer is shorter
ANSWER_MS = 7000  # every model call's time to its headers: the cut, the takeover and the return fit in the first
RETURN_BEFORE_ANSWER = 0.25  # seconds before A's answer its database comes back
ENV = {
    "RESPONSES_BRIDGE_SEALING_KEY": base64.urlsafe_b64encode(b"fenced-writers-test-sealing-key!").decode(),
    "RESPONSES_BRIDGE_BACKGROUND_LEASE_SECONDS": str(LEASE),
    "RESPONSES_BRIDGE_MCP_ALLOWED_HOSTS": "127.0.0.1",
}


@pytest.fixture(scope="module")
async def mcp() -> AsyncIterator[MCPTestServer]:
    async with running_mcp_server() as server:
        yield server


@pytest.fixture
async def database_url(postgres_server: PostgresServer) -> AsyncIterator[str]:
    with fresh_database(postgres_server, f"outage{uuid.uuid4().hex[:8]}") as url:
        yield url


@asynccontextmanager
async def replica(root: Path, upstream: str, database_url: str) -> AsyncIterator[tuple[ManagedProcess, str]]:
    """A sidecar on ``database_url`` with an upstream key of its own (its runs are resumable elsewhere)."""
    process, http_port, _ = start_sidecar(str(root), upstream, "--api-key", "sk-upstream", extproc=False,
                                          own_sqlite=True,
                                          env={**ENV, "RESPONSES_BRIDGE_DATABASE_URL": database_url})
    base = f"http://127.0.0.1:{http_port}"
    try:
        await wait_http(f"{base}/health/ready", timeout=60, process=process)
        yield process, base
    finally:
        await asyncio.to_thread(process.stop)


async def calls_asking(fake_upstream: str, marker: str) -> list[str]:
    """The role of the last message of every model call made for ``marker``'s response, in order."""
    return [roles[-1] for roles in await model_calls(fake_upstream, marker)]


async def until_calls(fake_upstream: str, marker: str, count: int, deadline: float) -> None:
    loop = asyncio.get_running_loop()
    while len(await calls_asking(fake_upstream, marker)) < count:
        assert loop.time() < deadline, f"fewer than {count} model calls by the deadline"
        await asyncio.sleep(0.05)


async def lease_owner(database_url: str, response_id: str) -> str | None:
    connection = await asyncpg.connect(database_url)
    try:
        owner = await connection.fetchval("SELECT owner FROM background_runs WHERE response_id = $1", response_id)
    finally:
        await connection.close()
    return None if owner is None else str(owner)


async def until_taken_over(database_url: str, response_id: str, first: str, deadline: float) -> None:
    """Until another replica holds the run's lease (A's ran out by the database's clock and B's sweep took it)."""
    loop = asyncio.get_running_loop()
    while await lease_owner(database_url, response_id) in (first, None):
        assert loop.time() < deadline, "the other replica did not take the run over before A's answer"
        await asyncio.sleep(0.05)


@pytest.mark.parametrize("fault", ["cut", "control"])
async def test_a_replica_that_loses_its_database_never_runs_the_tool_twice(
        tmp_path: Path, fake_upstream: str, mcp: MCPTestServer, database_url: str, fault: str) -> None:
    marker = f"f{uuid.uuid4().hex[:10]}"
    body = {"model": MODEL, "input": f"call tools__send_payment {marker} [header_delay={ANSWER_MS}]",
            "background": True, "stream": True,
            "tools": [{"type": "mcp", "server_label": "tools", "server_url": mcp.http_url,
                       "require_approval": "never"}]}
    loop = asyncio.get_running_loop()
    async with cut_proxy(database_url) as proxy, \
            replica(tmp_path / "a", fake_upstream, proxy.url_for(database_url)) as (_, a), \
            replica(tmp_path / "b", fake_upstream, database_url) as (_, b), \
            aiohttp.ClientSession(timeout=TIMEOUT) as http:
        async with http.post(f"{a}/v1/responses", json=body) as answer:  # the reader on A: the POST's own stream
            assert answer.status == 200, await answer.text()
            raw = await answer.content.readuntil(b"\n\n")  # response.created: its id
            response_id = parse_sse(raw)[0][0]["response"]["id"]
            reading = asyncio.ensure_future(answer.content.read())
            first = await lease_owner(database_url, response_id)
            await until_calls(fake_upstream, marker, 1, loop.time() + 30)
            answered_at = loop.time() + ANSWER_MS / 1000  # when A's model call answers (the call just went out)
            if fault == "cut":
                proxy.cut()
                await until_taken_over(database_url, response_id, str(first), answered_at - RETURN_BEFORE_ANSWER)
                await asyncio.sleep(max(answered_at - RETURN_BEFORE_ANSWER - loop.time(), 0))
                proxy.restore()
            raw += await asyncio.wait_for(reading, 90)
        seen, _ = parse_sse(raw)
        ended = await until_ended(b, response_id)
        stored, _ = await stream_after(b, response_id, -1)
    assert ended["status"] == "completed", ended.get("error")
    assert [item["type"] for item in ended["output"]] == ["mcp_list_tools", "mcp_call", "message"]
    assert await mcp.payments(marker) == 1  # the effect ran once
    asked = await calls_asking(fake_upstream, marker)
    assert asked.count("tool") == 1, asked  # and the model was told its result once
    # the first call (no effect yet) may be made again by the replica that took over — under load even in the
    # control, its 3 s lease lapsing — but the follow-up with the tool's result exactly once, and last
    assert asked[-1] == "tool" and set(asked[:-1]) == {"user"}, asked
    if fault == "cut":
        assert asked.count("user") >= 2, asked  # B took the run over and made the first call again
    # the reader on A: each event it was shown is the one the store holds at that number, and its stream ended
    by_number = {event["sequence_number"]: event for event in stored}
    assert [event for event in seen if by_number.get(event["sequence_number"]) != event] == []
    assert [event["sequence_number"] for event in seen] == list(range(len(seen)))
    assert seen[-1]["type"] == "response.completed"
