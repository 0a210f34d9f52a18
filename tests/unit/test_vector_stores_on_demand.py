"""services/files/vector_stores_on_demand.py over a real SQLite file: the vector store service is built by its first
use, or at start only when the store says files wait for ingestion, or on a shared database when the light poll
finds a file nobody holds; a deleted file leaves every vector store without building it."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from responses_bridge.config.settings import Settings
from responses_bridge.protocol.files.search_options import SearchOptions
from responses_bridge.services.files.vector_stores_on_demand import VectorStoresOnDemand
from responses_bridge.store import SQLiteResponseStore
from responses_bridge.store.records import NewFile, StoredVectorStore
from responses_bridge.store.sqlite.files.chunks import SQLiteChunkIndex
from responses_bridge.store.sqlite.files.vector_stores import SQLiteVectorStoreStore
from tests.unit.vector_store_doubles import StoredFiles

TEXT = b"alpha beta gamma delta epsilon " * 200
TENANT = "tenant-a"
SETTINGS = Settings(upstream="http://127.0.0.1:9/v1")  # the local embedder
CHUNKING = {"type": "static", "static": {"max_chunk_size_tokens": 800, "chunk_overlap_tokens": 400}}


class Harness:
    def __init__(self, db: SQLiteResponseStore, root: Path) -> None:
        self.db = db
        self.files = StoredFiles(db, root)
        self.store = SQLiteVectorStoreStore(db)
        self.chunks = SQLiteChunkIndex(db)

    def on_demand(self, poll_interval: float | None = None) -> VectorStoresOnDemand:
        return VectorStoresOnDemand(self.store, self.files.service, self.chunks, SETTINGS, concurrency=1,
                                    poll_interval=poll_interval)

    async def left_in_progress(self, vector_store_id: str) -> str:
        """A vector store with one file attached and not ingested: what a process that stopped leaves."""
        file_id = await self.files.add("doc.txt", TEXT, tenant=TENANT)
        stored = StoredVectorStore(id=vector_store_id, created_at=1, name="left", description=None, metadata={},
                                   expires_after=None, last_active_at=1, embedder=None)
        await self.store.create_store(stored, [NewFile(file_id, {}, CHUNKING)], tenant=TENANT)
        return file_id


@pytest.fixture
async def harness(tmp_path: Path) -> AsyncIterator[Harness]:
    async with SQLiteResponseStore(str(tmp_path / "bridge.db")) as db:
        harness = Harness(db, tmp_path)
        await harness.files.start()
        yield harness
        await harness.files.aclose()


async def _completed(on_demand: VectorStoresOnDemand, vector_store_id: str) -> str:
    service = on_demand.loaded
    assert service is not None
    await service.worker.wait_idle()
    return str((await service.get(vector_store_id, tenant=TENANT))["status"])


async def test_nothing_is_built_without_a_use_and_a_first_use_builds_it_once(harness: Harness) -> None:
    on_demand = harness.on_demand()
    await on_demand.start()
    try:
        assert on_demand.loaded is None  # nothing waits for ingestion
        file_id = await harness.files.add("plain.txt", TEXT, tenant=TENANT)
        await on_demand.forget_file(file_id)  # a file in no vector store: one statement, nothing built
        assert on_demand.loaded is None
        first, second = await asyncio.gather(on_demand.service(), on_demand.service())
        assert first is second is on_demand.loaded
        created = await first.create({"file_ids": [await harness.files.add("doc.txt", TEXT, tenant=TENANT)]},
                                     tenant=TENANT)
        assert await _completed(on_demand, created["id"]) == "completed"
        found = await on_demand.search([created["id"]], "gamma delta", SearchOptions(max_num_results=1),
                                       tenant=TENANT)  # the file_search tool's searcher
        assert found and found[0]["filename"] == "doc.txt"
    finally:
        await on_demand.close()


async def test_files_left_in_progress_build_it_at_start(harness: Harness) -> None:
    await harness.left_in_progress("vs_left")
    on_demand = harness.on_demand()
    await on_demand.start()
    try:
        assert on_demand.loaded is not None
        assert await _completed(on_demand, "vs_left") == "completed"
    finally:
        await on_demand.close()


async def test_on_a_shared_database_the_light_poll_builds_it_when_a_file_waits(harness: Harness) -> None:
    on_demand = harness.on_demand(poll_interval=0.05)
    await on_demand.start()
    try:
        await asyncio.sleep(0.2)  # several polls over a database with nothing to ingest
        assert on_demand.loaded is None
        await harness.left_in_progress("vs_other")  # attached through another replica, or left by a dead one
        for _ in range(200):
            if on_demand.loaded is not None:
                break
            await asyncio.sleep(0.05)
        # the built service's ingestion claims the file on its own poll: its worker is idle until then (a full
        # run's load once had the status read first, in_progress), so the status is awaited, bounded
        for _ in range(200):
            status = await _completed(on_demand, "vs_other")
            if status == "completed":
                break
            await asyncio.sleep(0.05)
        assert status == "completed"
    finally:
        await on_demand.close()


async def test_a_deleted_file_leaves_every_vector_store_without_building_it(harness: Harness) -> None:
    first = harness.on_demand()
    file_id = await harness.files.add("doc.txt", TEXT, tenant=TENANT)
    created = await (await first.service()).create({"file_ids": [file_id]}, tenant=TENANT)
    assert await _completed(first, created["id"]) == "completed"
    await first.close()
    restarted = harness.on_demand()  # a later process, which has not used vector stores
    await restarted.start()
    try:
        await restarted.forget_file(file_id)
        assert restarted.loaded is None
        assert await harness.chunks.indexed_files(created["id"], tenant=TENANT) == {}
        stored = await harness.store.get_store(created["id"], tenant=TENANT)
        assert stored is not None and stored.file_counts.total == 0
    finally:
        await restarted.close()
