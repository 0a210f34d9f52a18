"""Batches on two replicas sharing one PostgreSQL database, each a sidecar behind its own real Envoy: a replica lost
(SIGKILL) in the middle of a batch, whose lease then lapses, has the batch taken over by the other, which completes
it with each line answered once but the lines in flight at the loss (counted); and a cancel asked of one replica
stops the batch the other runs. The model is this process's counting fake (test_batches.py)."""

from __future__ import annotations

import asyncio
import base64
from collections import Counter
from collections.abc import AsyncIterator

import asyncpg
import openai
import pytest

from tests.support.batches import CountingUpstream, counting_upstream, file_lines, line, marker, settled, upload
from tests.support.envoy import have_envoy
from tests.support.postgres import PostgresServer, fresh_database
from tests.support.replicas import Replica, running_replicas
from tests.support.sdk import async_sdk

pytestmark = [pytest.mark.envoy, pytest.mark.skipif(not have_envoy(), reason="no envoy binary"), pytest.mark.store_free]

LEASE_SECONDS = 2.0
SHARED_ENV = {
    "RESPONSES_BRIDGE_SEALING_KEY": base64.urlsafe_b64encode(b"batches-replicas-sealing-key-32b").decode(),
    "RESPONSES_BRIDGE_BACKGROUND_LEASE_SECONDS": str(LEASE_SECONDS),
}


@pytest.fixture(scope="module")
async def database_url(postgres_server: PostgresServer) -> AsyncIterator[str]:
    with fresh_database(postgres_server, "batches") as url:
        yield url


@pytest.fixture(scope="module")
async def upstream() -> AsyncIterator[CountingUpstream]:
    async with counting_upstream() as counting:
        yield counting


@pytest.fixture(scope="module")
async def replicas(tmp_path_factory: pytest.TempPathFactory, upstream: CountingUpstream,
                   database_url: str) -> AsyncIterator[list[Replica]]:
    async with running_replicas(tmp_path_factory.mktemp("batch-replicas"), upstream.url, database_url,
                                env=SHARED_ENV) as started:
        yield started


def sdk(replica: Replica) -> openai.AsyncOpenAI:
    return async_sdk(base_url=f"{replica.envoy_url}/v1", api_key="sk-client", max_retries=0, timeout=60)


async def completed_at_least(client: openai.AsyncOpenAI, batch_id: str, count: int) -> None:
    deadline = asyncio.get_running_loop().time() + 60
    while (await client.batches.retrieve(batch_id)).request_counts.completed < count:  # type: ignore[union-attr]
        assert asyncio.get_running_loop().time() < deadline
        await asyncio.sleep(0.02)


async def test_a_cancel_on_one_replica_stops_the_batch_the_other_runs(
        replicas: list[Replica], upstream: CountingUpstream) -> None:
    a, b = replicas
    mark = marker()
    lines = [line(n, mark) for n in range(40)]
    for entry in lines:
        entry["body"]["input"] += " [header_delay=150]"
    async with sdk(a) as on_a, sdk(b) as on_b:
        batch = await on_a.batches.create(input_file_id=await upload(on_a, lines), endpoint="/v1/responses",
                                          completion_window="24h")
        await completed_at_least(on_b, batch.id, 2)
        assert (await on_b.batches.cancel(batch.id)).status == "cancelling"
        done = await settled(on_b, batch.id)
    assert done.status == "cancelled" and done.request_counts is not None
    assert done.request_counts.completed < 40
    assert len(upstream.of(mark)) == done.request_counts.completed


async def test_a_lost_replicas_batch_is_finished_by_the_other(
        replicas: list[Replica], upstream: CountingUpstream, database_url: str) -> None:
    a, b = replicas
    mark = marker()
    lines = [line(n, mark) for n in range(60)]
    for entry in lines:
        entry["body"]["input"] += " [header_delay=100]"
    async with sdk(a) as on_a:
        batch = await on_a.batches.create(input_file_id=await upload(on_a, lines), endpoint="/v1/responses",
                                          completion_window="24h")
        await completed_at_least(on_a, batch.id, 8)
    a.kill()  # no drain: its lease is left to lapse
    assert sum(upstream.of(mark).values()) < 60, "the batch ended before the loss: nothing was tested"
    async with sdk(b) as on_b:
        done = await settled(on_b, batch.id, timeout=10 * LEASE_SECONDS + 60)
        assert done.status == "completed" and done.request_counts is not None
        assert done.request_counts.model_dump() == {"total": 60, "completed": 60, "failed": 0}
        output = await file_lines(on_b, done.output_file_id)
    assert sorted(entry["custom_id"] for entry in output) == sorted(f"c{n}" for n in range(60))
    sent = upstream.of(mark)
    assert set(sent) == set(range(60)) and max(sent.values()) <= 2
    connection = await asyncpg.connect(database_url)
    try:
        rerun = await connection.fetchval("SELECT rerun FROM batches WHERE id = $1", batch.id)
    finally:
        await connection.close()
    # a line counted in ``rerun`` was marked started before the loss: sent then, or lost on its way out
    assert Counter(sent.values())[2] <= rerun <= 8
