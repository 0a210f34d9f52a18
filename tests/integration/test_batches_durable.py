"""A batch survives its process, at the HTTP door of sidecars of their own on one SQLite file (durability is the
runner's, whichever door created the batch), with the real ``openai`` SDK over real sockets: one sidecar drained
(SIGTERM) mid-batch hands the batch over at a line boundary, sending nothing twice; the next is killed (SIGKILL)
mid-batch; the one after that completes the batch. Every line is in the output once, and the counting upstream
(tests/support/batches.py) saw each line once but for those in flight at the kill, which the store counts
(``batches.rerun``)."""

from __future__ import annotations

import asyncio
import os
import signal
import sqlite3
from collections import Counter
from collections.abc import AsyncIterator

import openai
import pytest

from responses_bridge.demo.procs import wait_http
from tests.support.batches import CountingUpstream, counting_upstream, file_lines, line, marker, settled, upload
from tests.support.bridge import Sidecar, start_sidecar
from tests.support.sdk import async_sdk

pytestmark = pytest.mark.store_free  # its sidecars keep their own SQLite file, which the test reads

A = "tenant-a"
ENV = {"RESPONSES_BRIDGE_AUTH": "header"}


@pytest.fixture(scope="module")
async def upstream() -> AsyncIterator[CountingUpstream]:
    async with counting_upstream() as counting:
        yield counting


def tenant_sdk(url: str) -> openai.AsyncOpenAI:
    return async_sdk(base_url=f"{url}/v1", api_key="sk-client", max_retries=0, timeout=120,
                     default_headers={"x-tenant-id": A})


async def test_a_drain_then_a_kill_9_hand_the_batch_over_each_line_answered_once(
        upstream: CountingUpstream, tmp_path_factory: pytest.TempPathFactory) -> None:
    """Sidecars of their own on one SQLite file, at their HTTP door (durability is the runner's, whichever door
    created the batch). First a drain (SIGTERM) mid-batch: the lines in flight finish and are recorded, the lease is
    let go, nothing is sent twice. Then the next process is killed (SIGKILL) mid-batch, and the one after it
    completes the batch: every line in the output once, and the upstream saw each line once but for the lines in
    flight at the kill, which the store counts."""
    folder = tmp_path_factory.mktemp("batches-durable")
    database = str(folder / "bridge.db")
    mark = marker()
    lines = [line(n, mark) for n in range(80)]
    for entry in lines:
        entry["body"]["input"] += " [header_delay=100]"
    first = await _sidecar(str(folder), upstream.url, database)
    try:
        async with tenant_sdk(first.http_url) as sdk:
            batch = await sdk.batches.create(input_file_id=await upload(sdk, lines), endpoint="/v1/responses",
                                             completion_window="24h")
            await _completed_at_least(sdk, batch.id, 5)
    finally:
        await asyncio.to_thread(first.process.stop)  # SIGTERM: the drain
    with sqlite3.connect(database) as db:
        owner, drained, rerun = db.execute("SELECT owner, completed, rerun FROM batches WHERE id = ?",
                                           (batch.id,)).fetchone()
    assert owner is None and 5 <= drained < 80 and rerun == 0  # let go, not lapsed
    assert sum(upstream.of(mark).values()) == drained  # every line sent was recorded before the exit

    second = await _sidecar(str(folder), upstream.url, database)
    try:
        async with tenant_sdk(second.http_url) as sdk:
            await _completed_at_least(sdk, batch.id, drained + 10)
        os.killpg(second.process.pid, signal.SIGKILL)
        second.process.process.wait()  # type: ignore[union-attr]
    finally:
        second.process.stop()
    assert sum(upstream.of(mark).values()) < 80, "the batch ended before the kill: nothing was tested"

    third = await _sidecar(str(folder), upstream.url, database)
    try:
        async with tenant_sdk(third.http_url) as sdk:
            done = await settled(sdk, batch.id)
            assert done.status == "completed"
            assert done.request_counts is not None and done.request_counts.model_dump() == {
                "total": 80, "completed": 80, "failed": 0}
            output = await file_lines(sdk, done.output_file_id)
    finally:
        third.process.stop()
    assert sorted(entry["custom_id"] for entry in output) == sorted(f"c{n}" for n in range(80))  # each once
    sent = upstream.of(mark)
    assert set(sent) == set(range(80)) and max(sent.values()) <= 2
    with sqlite3.connect(database) as db:
        (rerun,) = db.execute("SELECT rerun FROM batches WHERE id = ?", (batch.id,)).fetchone()
    # only lines in flight at the kill were sent again, each counted (a line counted may also have been marked
    # started and lost before it left: sent once); no more than the lines running at once (the default gate: 8)
    assert Counter(sent.values())[2] <= rerun <= 8
    assert upstream.authorizations[mark] == {"Bearer sk-client"}  # kept sealed, sent by each process in turn


async def _completed_at_least(client: openai.AsyncOpenAI, batch_id: str, count: int) -> None:
    deadline = asyncio.get_running_loop().time() + 60
    while (await client.batches.retrieve(batch_id)).request_counts.completed < count:  # type: ignore[union-attr]
        assert asyncio.get_running_loop().time() < deadline
        await asyncio.sleep(0.02)


async def _sidecar(folder: str, upstream_url: str, database: str) -> Sidecar:
    process, http_port, _ = start_sidecar(folder, upstream_url, "--db", database, env=ENV, extproc=False,
                                          own_sqlite=True)
    url = f"http://127.0.0.1:{http_port}"
    try:
        await wait_http(f"{url}/health", process=process, headers={"x-tenant-id": A})
    except BaseException:
        process.stop()
        raise
    return Sidecar(upstream_url, url, 0, process)
