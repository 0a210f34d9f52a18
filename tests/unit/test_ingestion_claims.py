"""Ingestion shared by replicas on one PostgreSQL database: each file is claimed by one worker at a time, so two
workers polling the same files ingest each exactly once; a worker that dies mid-way leaves its claims to run out,
and the other worker then finishes its files."""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections import Counter
from collections.abc import AsyncIterator
from pathlib import Path

import numpy
import pytest

from responses_bridge.services.files.ingestion import IngestionWorker
from responses_bridge.store.postgres import PostgresDatabase
from responses_bridge.store.postgres.files.chunks import PostgresChunkIndex
from responses_bridge.store.postgres.files.files import PostgresFileStore
from responses_bridge.store.postgres.files.vector_stores import PostgresVectorStoreStore
from responses_bridge.store.records import NewFile, StoredFile, StoredVectorStore
from tests.unit.store_kinds import postgres_database_url
from tests.unit.vector_store_doubles import DirectoryFiles, HashEmbedder

CHUNKING = {"type": "static", "static": {"max_chunk_size_tokens": 100, "chunk_overlap_tokens": 0}}
FILES = 24
T = "tenant-a"


class CountingFiles(DirectoryFiles):
    """Counts how often each file's bytes are read for ingestion; ``hold`` makes reads of it wait forever (a
    replica stuck, then killed, mid-file)."""

    def __init__(self, root: Path, reads: Counter[str], hold: bool = False) -> None:
        super().__init__(root)
        self.reads = reads
        self.hold = hold
        self.entered = asyncio.Event()

    @contextlib.asynccontextmanager
    async def local_copy(self, file_id: str) -> AsyncIterator[Path]:
        self.reads[file_id] += 1
        if self.hold:
            self.entered.set()
            await asyncio.Event().wait()
        await asyncio.sleep(0.01)  # long enough that both workers have files in flight at once
        yield self.root / file_id


class SlowEmbedder(HashEmbedder):
    async def embed(self, texts: list[str]) -> numpy.ndarray:
        await asyncio.sleep(0.005)
        return await super().embed(texts)


def _store(store_id: str) -> StoredVectorStore:
    return StoredVectorStore(id=store_id, created_at=1, name=store_id, description=None, metadata={},
                             expires_after=None, last_active_at=1, embedder="test:hash")


async def _attach(db: PostgresDatabase, root: Path) -> list[str]:
    meta = DirectoryFiles(root)
    ids = [meta.add(f"doc{n}.txt", f"document {n} about topic {n % 5}\n".encode() * 20, tenant=T)
           for n in range(FILES)]
    for file_id in ids:  # the metadata rows: a vector store takes only its tenant's live files
        await PostgresFileStore(db).add_file(StoredFile(id=file_id, created_at=1, bytes=1, filename=f"{file_id}.txt",
                                                        purpose="assistants", expires_at=None),
                                             tenant=T, max_stored_bytes=None)
    await PostgresVectorStoreStore(db).create_store(_store("vs_shared"), [NewFile(i, {}, CHUNKING) for i in ids],
                                                    tenant=T)
    return ids


def _files(root: Path, reads: Counter[str], ids: list[str], hold: bool = False) -> CountingFiles:
    files = CountingFiles(root, reads, hold)
    for file_id in ids:
        files.meta[file_id] = {"id": file_id, "filename": f"{file_id}.txt"}
    return files


def _worker(db: PostgresDatabase, files: CountingFiles, *, lease: float = 30.0) -> IngestionWorker:
    return IngestionWorker(PostgresVectorStoreStore(db), files, PostgresChunkIndex(db), SlowEmbedder(),
                           concurrency=2, poll_interval=0.02, lease_seconds=lease)


async def _until_all_completed(db: PostgresDatabase, timeout: float = 60.0) -> None:
    deadline = time.monotonic() + timeout
    while True:
        stored = await PostgresVectorStoreStore(db).get_store("vs_shared", tenant=T)
        assert stored is not None
        if stored.file_counts.completed == FILES:
            return
        assert time.monotonic() < deadline, f"not ingested in time: {stored.file_counts}"
        await asyncio.sleep(0.05)


async def test_two_workers_on_one_database_ingest_each_file_exactly_once(request: pytest.FixtureRequest,
                                                                         tmp_path: Path) -> None:
    reads: Counter[str] = Counter()
    async with postgres_database_url(request) as url, PostgresDatabase(url) as db_a, PostgresDatabase(url) as db_b:
        ids = await _attach(db_a, tmp_path)
        workers = [_worker(db_a, _files(tmp_path, reads, ids)), _worker(db_b, _files(tmp_path, reads, ids))]
        await asyncio.gather(*(worker.start() for worker in workers))
        try:
            await _until_all_completed(db_a)
        finally:
            for worker in workers:
                await worker.close()
        assert reads == Counter({file_id: 1 for file_id in ids})
        chunks = PostgresChunkIndex(db_b)
        assert set(await chunks.indexed_files("vs_shared", tenant=T)) == set(ids)
        for file_id in ids:  # one copy of each file's chunks: no second ingestion appended to the first
            texts = await chunks.file_chunks("vs_shared", file_id, tenant=T)
            assert len(texts) == len(set(texts)) >= 1


async def test_a_killed_worker_leaves_its_files_to_the_other_after_the_lease(request: pytest.FixtureRequest,
                                                                             tmp_path: Path) -> None:
    reads: Counter[str] = Counter()
    async with postgres_database_url(request) as url, PostgresDatabase(url) as db_b:
        ids = await _attach(db_b, tmp_path)
        db_a = PostgresDatabase(url)
        await db_a.open()
        stuck = _files(tmp_path, reads, ids, hold=True)
        dying = _worker(db_a, stuck, lease=1.0)
        await dying.start()
        await asyncio.wait_for(stuck.entered.wait(), 30)
        while sum(reads.values()) < 2:  # both of its slots hold a file it never finishes
            await asyncio.sleep(0.01)
        held = set(reads)
        # the replica dies: its pool goes away first (so it cannot give its claims back), then its tasks
        await db_a.close()
        await dying.close()
        survivor = _worker(db_b, _files(tmp_path, reads, ids), lease=1.0)
        await survivor.start()
        try:
            await _until_all_completed(db_b)
        finally:
            await survivor.close()
        assert len(held) == 2
        assert all(reads[file_id] == 2 for file_id in held)  # begun by the dead worker, ingested by the other
        assert all(reads[file_id] == 1 for file_id in set(ids) - held)
        rows = await PostgresVectorStoreStore(db_b).in_progress_files()
        assert rows == []
