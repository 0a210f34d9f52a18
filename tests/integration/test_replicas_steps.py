"""Two replicas on one PostgreSQL, each behind its own Envoy: a background tool loop POSTed through A's Envoy and
stopped there between a search's result and the next model call (``kill -9``, or a SIGTERM whose drain is shorter
than the run) is resumed by B from that step: completed once, the search not made again, the model call that asked
for it not made again, and its stream, read through B's Envoy, whole (no gap, no repeat) and continuing what A's
reader saw.
"""

from __future__ import annotations

import base64
import os
import signal
import uuid
from collections.abc import AsyncIterator
from pathlib import Path

import aiohttp
import pytest

from tests.integration.test_background import parse_sse
from tests.integration.test_background_resume import TIMEOUT, read_until_deltas
from tests.integration.test_background_steps import check_finished_once, model_calls, searches, searching
from tests.support.envoy import have_envoy
from tests.support.postgres import PostgresServer, fresh_database
from tests.support.replicas import running_replicas
from tests.support.search_server import SearchServer

pytestmark = [pytest.mark.envoy, pytest.mark.skipif(not have_envoy(), reason="no envoy binary"), pytest.mark.store_free,
              pytest.mark.filterwarnings("ignore::pytest.PytestUnraisableExceptionWarning")]

ENV = {
    "RESPONSES_BRIDGE_SEALING_KEY": base64.urlsafe_b64encode(b"replicas-test-sealing-key-32byte").decode(),
    "RESPONSES_BRIDGE_BACKGROUND_LEASE_SECONDS": "2",
    "RESPONSES_BRIDGE_DRAIN_TIMEOUT": "1",  # shorter than the run
}


@pytest.fixture(scope="module")
async def search() -> AsyncIterator[SearchServer]:
    async with SearchServer() as server:
        yield server


@pytest.fixture
async def database_url(postgres_server: PostgresServer) -> AsyncIterator[str]:
    with fresh_database(postgres_server, f"steps{uuid.uuid4().hex[:8]}") as url:
        yield url


@pytest.mark.parametrize("stop", ["kill", "sigterm"])
async def test_a_stopped_replicas_tool_loop_is_resumed_by_the_other_from_its_step(
        tmp_path: Path, fake_upstream: str, search: SearchServer, database_url: str, stop: str) -> None:
    marker = f"r{uuid.uuid4().hex[:10]}"
    env = {**ENV, "RESPONSES_BRIDGE_WEB_SEARCH": f"searxng:{search.url}"}
    async with running_replicas(tmp_path, fake_upstream, database_url, "--api-key", "sk-upstream",
                                env=env) as (a, b):
        async with aiohttp.ClientSession(timeout=TIMEOUT) as session, session.post(
                f"{a.envoy_url}/v1/responses", json=searching(marker)) as answer:
            assert answer.status == 200, await answer.text()
            seen = await read_until_deltas(answer)  # text comes only in the model call after the search
            if stop == "kill":
                a.kill()
            else:
                os.killpg(a.sidecar.pid, signal.SIGTERM)
                rest, _ = parse_sse(await answer.read())  # A's reader: ended by A's drain
                seen += rest
                assert a.sidecar.process is not None and a.sidecar.process.wait(timeout=60) == 0
        assert not any(event["type"] in ("response.failed", "response.completed") for event in seen)
        ended = await check_finished_once(b.envoy_url, seen[0]["response"]["id"], seen)
        assert [item["type"] for item in ended["output"]] == ["web_search_call", "message"]
    assert searches(search, marker) == 1
    calls = await model_calls(fake_upstream, marker)
    assert [roles[-1] for roles in calls] == ["user", "tool", "tool"]  # only the call in flight made again
