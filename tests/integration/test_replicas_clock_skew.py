"""A replica whose clock is wrong takes no live session (issue #86, "one clock").

Two replicas on one PostgreSQL; B is started with its wall clock 20 s ahead (tests/support/clock_skew: ``time.time``
and ``datetime.now`` moved, the event loop's monotonic clock not), and shown to be so. Sessions whose turns stream
for a few seconds run on A, a healthy replica renewing their leases, while B's sweep looks for sessions whose lease
ran out. Leases are taken and judged by the database's clock, so B takes none of them: each input is answered
once (one completed turn, one assistant message), the model asked once per input. The control is the same with
B's clock right.
"""

from __future__ import annotations

import asyncio
import base64
import time
import uuid
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path

import aiohttp
import pytest

from responses_bridge.demo.procs import ManagedProcess, wait_http
from tests.integration.test_agents_durable import frames
from tests.integration.test_background_steps import model_calls
from tests.support.bridge import start_sidecar
from tests.support.clock_skew import skewed_env
from tests.support.postgres import PostgresServer, fresh_database

pytestmark = [pytest.mark.store_free, pytest.mark.filterwarnings("ignore::pytest.PytestUnraisableExceptionWarning")]

BETA = {"OpenAI-Beta": "agents=v1"}
SKEW = 20.0
SESSIONS = 3
TIMEOUT = aiohttp.ClientTimeout(total=90)
ENV = {
    "RESPONSES_BRIDGE_SEALING_KEY": base64.urlsafe_b64encode(b"one-clock-replicas-sealing-key!!").decode(),
    "RESPONSES_BRIDGE_BACKGROUND_LEASE_SECONDS": "3",  # sessions' leases too: B's sweep looks every second
}


@pytest.fixture
async def database_url(postgres_server: PostgresServer) -> AsyncIterator[str]:
    with fresh_database(postgres_server, f"skew{uuid.uuid4().hex[:8]}") as url:
        yield url


@asynccontextmanager
async def replica(root: Path, upstream: str, database_url: str,
                  env: dict[str, str] | None = None) -> AsyncIterator[tuple[ManagedProcess, str]]:
    process, http_port, _ = start_sidecar(str(root), upstream, "--api-key", "sk-upstream", extproc=False,
                                          own_sqlite=True,
                                          env={**ENV, "RESPONSES_BRIDGE_DATABASE_URL": database_url, **(env or {})})
    base = f"http://127.0.0.1:{http_port}"
    try:
        await wait_http(f"{base}/health/ready", timeout=60, process=process)
        yield process, base
    finally:
        await asyncio.to_thread(process.stop)


async def wall_clock_offset(base: str) -> float:
    """How far the replica's wall clock is from this process's: a response's ``created_at`` is its ``time.time()``."""
    async with aiohttp.ClientSession(timeout=TIMEOUT) as http, http.post(
            f"{base}/v1/responses", json={"model": "fake-model", "input": "what time is it", "store": False}) as answer:
        assert answer.status == 200, await answer.text()
        return float((await answer.json())["created_at"]) - time.time()


@pytest.mark.parametrize("skew", [SKEW, 0.0], ids=["skewed", "control"])
async def test_a_replica_with_a_wrong_clock_takes_no_live_session(tmp_path: Path, fake_upstream: str,
                                                                   database_url: str, skew: float) -> None:
    markers = [f"k{uuid.uuid4().hex[:10]}" for _ in range(SESSIONS)]
    async with replica(tmp_path / "a", fake_upstream, database_url) as (_, a), \
            replica(tmp_path / "b", fake_upstream, database_url, skewed_env(skew)) as (_, b):
        assert abs(await wall_clock_offset(b) - skew) < 5  # the interposer works: B's wall clock is off by skew
        assert abs(await wall_clock_offset(a)) < 5
        async with aiohttp.ClientSession(a, headers=BETA, timeout=TIMEOUT) as http:
            sessions = []
            for marker in markers:  # each turn streams for 4 s: B's sweep looks at it several times meanwhile
                async with http.post("/v1/agents/sessions", json={
                        "agent": {"model": "fake-model"}, "environment": {"type": "none"},
                        "input": f"{marker} [chunks=40] [delay=100]"}) as answer:
                    assert answer.status == 200, await answer.text()
                    sessions.append((await answer.json())["id"])
            answers: list[list[str]] = []
            kinds: list[list[str]] = []
            for session_id in sessions:
                async with http.get(f"/v1/agents/sessions/{session_id}/events",
                                    params={"until_idle": "true"}) as answer:
                    kinds.append([kind for _, kind, _ in frames(await answer.read())])
                async with http.get(f"/v1/agents/sessions/{session_id}/turns", params={"order": "asc"}) as answer:
                    turns = (await answer.json())["data"]
                assert [turn["status"] for turn in turns] == ["completed"], turns
                async with http.get(f"/v1/agents/sessions/{session_id}/turns/{turns[0]['id']}/items",
                                    params={"order": "asc"}) as answer:
                    items = (await answer.json())["data"]
                answers.append([item["content"][0]["text"] for item in items
                                if item["type"] == "message" and item["role"] == "assistant"])
    for marker, texts, seen in zip(markers, answers, kinds, strict=True):
        assert len(texts) == 1 and texts[0].startswith(f"Echo: {marker}"), texts  # answered once
        assert seen.count("agent.session.turn.in_progress") == 1, seen  # never resumed elsewhere
        assert len(await model_calls(fake_upstream, marker)) == 1  # the model asked once
