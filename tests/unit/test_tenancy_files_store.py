"""Ownership in the stores of files, vector stores (their files and batches) and chunks: with two tenants, every
method that takes a tenant sees and changes only that tenant's rows, another tenant's object answers exactly as a
missing one, only a tenant's own live files can be attached, and rows stored before tenancy belong to the default
tenant. Every store test runs on SQLite and on PostgreSQL (tests/unit/store_kinds.py)."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import aiosqlite
import numpy as np
import pytest

from responses_bridge.store import MIGRATIONS, SQLiteResponseStore, migrate
from responses_bridge.store.base import DEFAULT_TENANT, ChunkIndex, FileStore, VectorStoreStore
from responses_bridge.store.postgres import PostgresDatabase
from responses_bridge.store.postgres.files.chunks import PostgresChunkIndex
from responses_bridge.store.postgres.files.files import PostgresFileStore
from responses_bridge.store.postgres.files.vector_stores import PostgresVectorStoreStore
from responses_bridge.store.records import (
    FileCounts,
    InvalidCursor,
    NewFile,
    StorageLimitExceeded,
    StoredFile,
    StoredVectorStore,
    UnknownCursor,
    UnknownFile,
)
from responses_bridge.store.sqlite.files.chunks import SQLiteChunkIndex
from responses_bridge.store.sqlite.files.files import SQLiteFileStore
from responses_bridge.store.sqlite.files.vector_stores import SQLiteVectorStoreStore
from tests.unit.store_kinds import KINDS, postgres_database, postgres_database_url

A, B = "tenant-a", "tenant-b"
CHUNKING = {"type": "static", "static": {"max_chunk_size_tokens": 800, "chunk_overlap_tokens": 400}}


@dataclass
class Stores:
    kind: str
    db: Any
    files: FileStore
    vector_stores: VectorStoreStore
    chunks: ChunkIndex


@pytest.fixture(params=KINDS)
async def stores(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[Stores]:
    if request.param == "sqlite":
        async with SQLiteResponseStore(str(tmp_path / "bridge.db")) as db:
            yield Stores("sqlite", db, SQLiteFileStore(db), SQLiteVectorStoreStore(db), SQLiteChunkIndex(db))
    else:
        async with postgres_database(request) as pg:
            yield Stores("postgres", pg, PostgresFileStore(pg), PostgresVectorStoreStore(pg), PostgresChunkIndex(pg))


def a_file(file_id: str, size: int = 10, expires_at: int | None = None) -> StoredFile:
    return StoredFile(id=file_id, created_at=100, bytes=size, filename=f"{file_id}.txt", purpose="assistants",
                      expires_at=expires_at)


def a_store(store_id: str) -> StoredVectorStore:
    return StoredVectorStore(id=store_id, created_at=100, name=store_id, description=None, metadata={"k": "v"},
                             expires_after=None, last_active_at=100, embedder="test:hash")


def attach(*file_ids: str) -> list[NewFile]:
    return [NewFile(file_id, {"n": 1}, CHUNKING) for file_id in file_ids]


def unit_rows(count: int, seed: int = 0) -> np.ndarray:
    rows = np.random.default_rng(seed).standard_normal((count, 8)).astype(np.float32)
    return rows / np.linalg.norm(rows, axis=1, keepdims=True)


# -- files ----------------------------------------------------------------------------------------------------

async def test_files_are_their_tenants_only(stores: Stores) -> None:
    files = stores.files
    await files.add_file(a_file("file-a1"), tenant=A, max_stored_bytes=None)
    await files.add_file(a_file("file-a2", size=5), tenant=A, max_stored_bytes=None)
    await files.add_file(a_file("file-b1", size=7), tenant=B, max_stored_bytes=None)

    assert await files.get_file("file-a1", 200, tenant=B) is None
    assert (await files.get_file("file-a1", 200, tenant=A)) == a_file("file-a1")
    page, more = await files.list_files(tenant=B, now=200, purpose=None, after=None, limit=10, order="asc")
    assert [f.id for f in page] == ["file-b1"] and not more
    page, _ = await files.list_files(tenant=A, now=200, purpose="assistants", after=None, limit=10, order="asc")
    assert [f.id for f in page] == ["file-a1", "file-a2"]
    with pytest.raises(UnknownCursor):  # another tenant's id is no cursor, as a missing one
        await files.list_files(tenant=B, now=200, purpose=None, after="file-a1", limit=10, order="asc")
    assert not await files.delete_file("file-a1", tenant=B)
    assert await files.get_file("file-a1", 200, tenant=A) is not None  # untouched
    assert await files.stored_bytes(200, tenant=A) == 15 and await files.stored_bytes(200, tenant=B) == 7
    assert await files.stored_bytes(200, tenant="tenant-c") == 0
    # the workers' methods work across tenants
    assert (await files.get_file_any_tenant("file-b1", 200)) == a_file("file-b1", size=7)
    assert await files.known_ids(["file-a1", "file-b1", "file-x"]) == {"file-a1", "file-b1"}
    assert await files.delete_file("file-a1", tenant=A)
    assert await files.stored_bytes(200, tenant=A) == 5


async def test_the_stored_bytes_limit_is_checked_with_the_insert(stores: Stores) -> None:
    files = stores.files
    await files.add_file(a_file("file-a1", size=60), tenant=A, max_stored_bytes=100)
    await files.add_file(a_file("file-b1", size=90), tenant=B, max_stored_bytes=100)  # B's bytes are B's own
    with pytest.raises(StorageLimitExceeded) as exceeded:
        await files.add_file(a_file("file-a2", size=41), tenant=A, max_stored_bytes=100)
    assert (exceeded.value.limit, exceeded.value.used) == (100, 60)
    assert await files.get_file("file-a2", 200, tenant=A) is None and await files.known_ids(["file-a2"]) == set()
    await files.add_file(a_file("file-a2", size=40), tenant=A, max_stored_bytes=100)  # exactly at the limit
    assert await files.stored_bytes(200, tenant=A) == 100
    # an expired file no longer counts
    await files.add_file(a_file("file-b2", size=10, expires_at=150), tenant=B, max_stored_bytes=100)
    assert await files.stored_bytes(200, tenant=B) == 90
    await files.add_file(StoredFile(id="file-b3", created_at=200, bytes=10, filename="b3", purpose="assistants",
                                    expires_at=None), tenant=B, max_stored_bytes=100)


async def test_inserts_at_once_never_pass_the_limit_together(stores: Stores) -> None:
    """Twenty files of 10 bytes added at once against a limit of 55: exactly five are stored (on PostgreSQL each
    insert has a connection of its own, so the checks really run at once)."""
    results = await asyncio.gather(*(stores.files.add_file(a_file(f"file-{n:02d}"), tenant=A, max_stored_bytes=55)
                                     for n in range(20)), return_exceptions=True)
    refused = [result for result in results if isinstance(result, StorageLimitExceeded)]
    assert len(refused) == 15 and all(result is None or isinstance(result, StorageLimitExceeded)
                                      for result in results)
    assert all(exceeded.limit == 55 and exceeded.used == 50 for exceeded in refused)
    assert await stores.files.stored_bytes(200, tenant=A) == 50


async def test_replicas_on_one_postgres_database_share_the_limit(request: pytest.FixtureRequest) -> None:
    """Two replicas' pools on one database: uploads finishing at once on both stay within the tenant's limit,
    while another tenant's uploads are not held by it."""
    async with postgres_database_url(request) as url, PostgresDatabase(url) as one, PostgresDatabase(url) as two:
        replicas = [PostgresFileStore(one), PostgresFileStore(two)]
        results = await asyncio.gather(*(replicas[n % 2].add_file(a_file(f"file-{n:02d}"), tenant=A,
                                                                   max_stored_bytes=45) for n in range(16)),
                                       *(replicas[n % 2].add_file(a_file(f"file-b{n}"), tenant=B,
                                                                   max_stored_bytes=45) for n in range(4)),
                                       return_exceptions=True)
        assert sum(isinstance(result, StorageLimitExceeded) for result in results[:16]) == 12
        assert all(result is None for result in results[16:])
        assert await replicas[1].stored_bytes(200, tenant=A) == 40
        assert await replicas[0].stored_bytes(200, tenant=B) == 40


# -- vector stores, their files and batches ---------------------------------------------------------------------

@pytest.fixture
async def owned(stores: Stores) -> Stores:
    """Tenant A's store vs_a with A's files (one in batch vsfb_a), and tenant B's own file."""
    for file_id in ("file-a1", "file-a2"):
        await stores.files.add_file(a_file(file_id), tenant=A, max_stored_bytes=None)
    await stores.files.add_file(a_file("file-b1"), tenant=B, max_stored_bytes=None)
    await stores.vector_stores.create_store(a_store("vs_a"), attach("file-a1"), tenant=A)
    assert await stores.vector_stores.add_files("vs_a", 110, attach("file-a2"), tenant=A, batch_id="vsfb_a")
    return stores


async def test_another_tenants_vector_store_is_a_missing_one(owned: Stores) -> None:
    vs = owned.vector_stores
    assert await vs.get_store("vs_a", tenant=B) is None
    assert (await vs.list_stores(tenant=B, limit=10, order="asc")).data == []
    with pytest.raises(InvalidCursor):
        await vs.list_stores(tenant=B, limit=10, order="asc", after="vs_a")
    with pytest.raises(InvalidCursor):
        await vs.list_stores(tenant=B, limit=10, order="asc", before="vs_a")
    assert not await vs.update_store("vs_a", {"name": "taken", "metadata": {}}, tenant=B)
    assert not await vs.update_store("vs_a", {}, tenant=B)
    assert await vs.add_files("vs_a", 120, attach("file-b1"), tenant=B) is None
    assert await vs.add_files("vs_a", 120, attach("file-b1"), tenant=B, batch_id="vsfb_b") is None
    assert await vs.get_file("vs_a", "file-a1", tenant=B) is None
    assert (await vs.list_files("vs_a", tenant=B, limit=10, order="asc")).data == []
    assert (await vs.list_files("vs_a", tenant=B, limit=10, order="asc", batch_id="vsfb_a")).data == []
    with pytest.raises(InvalidCursor):
        await vs.list_files("vs_a", tenant=B, limit=10, order="asc", after="file-a1")
    assert not await vs.set_file_attributes("vs_a", "file-a1", {"taken": True}, tenant=B)
    assert not await vs.delete_file("vs_a", "file-a1", tenant=B)
    assert await vs.get_batch("vs_a", "vsfb_a", tenant=B) is None
    assert not await vs.cancel_batch("vs_a", "vsfb_a", tenant=B)
    assert not await vs.delete_store("vs_a", tenant=B)

    # and nothing of A's changed
    store = await vs.get_store("vs_a", tenant=A)
    assert store is not None and store.name == "vs_a" and store.metadata == {"k": "v"}
    assert store.file_counts == FileCounts(in_progress=2)
    assert [s.id for s in (await vs.list_stores(tenant=A, limit=10, order="asc")).data] == ["vs_a"]
    row = await vs.get_file("vs_a", "file-a1", tenant=A)
    assert row is not None and row.attributes == {"n": 1}
    assert [f.file_id for f in (await vs.list_files("vs_a", tenant=A, limit=10, order="asc")).data] == [
        "file-a1", "file-a2"]
    batch = await vs.get_batch("vs_a", "vsfb_a", tenant=A)
    assert batch is not None and not batch.cancelled
    assert await vs.cancel_batch("vs_a", "vsfb_a", tenant=A)
    assert await vs.set_file_attributes("vs_a", "file-a1", {"mine": True}, tenant=A)
    assert await vs.delete_file("vs_a", "file-a1", tenant=A)
    assert await vs.delete_store("vs_a", tenant=A)


async def test_only_the_tenants_own_live_files_can_be_attached(owned: Stores) -> None:
    vs = owned.vector_stores
    with pytest.raises(UnknownFile) as unknown:  # B's file, in A's store
        await vs.add_files("vs_a", 120, attach("file-a1", "file-b1"), tenant=A)
    assert unknown.value.file_id == "file-b1"
    with pytest.raises(UnknownFile):
        await vs.add_files("vs_a", 120, attach("file-missing"), tenant=A, batch_id="vsfb_x")
    assert await vs.get_batch("vs_a", "vsfb_x", tenant=A) is None  # the failed attach left no batch behind
    with pytest.raises(UnknownFile):  # and creating a store with another tenant's file creates nothing
        await vs.create_store(a_store("vs_b"), attach("file-a1"), tenant=B)
    assert await vs.get_store("vs_b", tenant=B) is None
    await owned.files.add_file(a_file("file-a3", expires_at=150), tenant=A, max_stored_bytes=None)
    with pytest.raises(UnknownFile):  # expired by the time it is attached
        await vs.add_files("vs_a", 200, attach("file-a3"), tenant=A)
    assert await vs.get_file("vs_a", "file-b1", tenant=A) is None
    assert (await vs.get_store("vs_a", tenant=A)).file_counts.total == 2  # type: ignore[union-attr]
    assert await vs.create_store(a_store("vs_b"), attach("file-b1"), tenant=B)


async def test_the_workers_methods_work_across_tenants(owned: Stores) -> None:
    vs = owned.vector_stores
    await vs.create_store(a_store("vs_b"), attach("file-b1"), tenant=B)
    pending = await vs.in_progress_files()
    assert {(row.vector_store_id, row.file_id) for row in pending} == {
        ("vs_a", "file-a1"), ("vs_a", "file-a2"), ("vs_b", "file-b1")}
    by_b = next(row for row in pending if row.vector_store_id == "vs_b")
    assert await vs.get_file_by_seq(by_b.seq) == by_b
    assert await vs.current_seq("vs_b", "file-b1") == by_b.seq and await vs.current_seq("vs_b", "file-a1") is None
    assert await vs.finish_file(by_b.seq, "completed", usage_bytes=3)
    assert await vs.delete_file_everywhere("file-b1") == ["vs_b"]


# -- chunks -----------------------------------------------------------------------------------------------------

async def test_another_tenants_chunks_are_never_read(owned: Stores) -> None:
    chunks = owned.chunks
    vectors = unit_rows(2)
    await chunks.replace_file_chunks("vs_a", "file-a1", "a1.txt", ["secret lighthouse keeper", "second chunk"],
                                     vectors, {"kind": "secret"})
    query = vectors[0]
    mine = await chunks.dense_candidates("vs_a", query, None, 10, tenant=A)
    words = await chunks.keyword_candidates("vs_a", ["lighthouse"], None, 10, tenant=A)
    assert len(mine) == 2 and len(words) == 1
    assert await chunks.file_chunks("vs_a", "file-a1", tenant=A) == ["secret lighthouse keeper", "second chunk"]
    assert set(await chunks.indexed_files("vs_a", tenant=A)) == {"file-a1"}
    ids = [chunk for chunk, _ in mine]
    assert len(await chunks.chunk_rows(ids, tenant=A)) == 2

    # B, even knowing the ids, and with A's vectors already in this process's memory
    assert await chunks.dense_candidates("vs_a", query, None, 10, tenant=B) == []
    assert await chunks.dense_candidates("vs_a", query, ["file-a1"], 10, tenant=B) == []
    assert await chunks.keyword_candidates("vs_a", ["lighthouse"], None, 10, tenant=B) == []
    assert await chunks.keyword_candidates("vs_a", ["lighthouse"], ["file-a1"], 10, tenant=B) == []
    assert await chunks.file_chunks("vs_a", "file-a1", tenant=B) == []
    assert await chunks.indexed_files("vs_a", tenant=B) == {}
    assert await chunks.chunk_rows(ids, tenant=B) == {}
    # a store that does not exist reads as empty alike
    assert await chunks.dense_candidates("vs_none", query, None, 10, tenant=A) == []
    assert await chunks.indexed_files("vs_none", tenant=A) == {}


# -- rows stored before tenancy ---------------------------------------------------------------------------------

async def test_rows_stored_without_a_tenant_in_postgres_belong_to_the_default_tenant(
        request: pytest.FixtureRequest) -> None:
    async with postgres_database(request) as pg:
        async with pg.acquire() as conn:
            await conn.execute("INSERT INTO files (id, created_at, bytes, filename, purpose) "
                               "VALUES ('file-old', 1, 4, 'old.txt', 'assistants')")
            await conn.execute("INSERT INTO vector_stores (id, created_at, name, metadata, last_active_at) "
                               "VALUES ('vs_old', 1, 'old', '{}', 1)")
        files, vs = PostgresFileStore(pg), PostgresVectorStoreStore(pg)
        assert (await files.get_file("file-old", 2, tenant=DEFAULT_TENANT)) is not None
        assert await files.get_file("file-old", 2, tenant=A) is None
        assert await files.stored_bytes(2, tenant=DEFAULT_TENANT) == 4
        assert (await vs.get_store("vs_old", tenant=DEFAULT_TENANT)) is not None
        assert await vs.get_store("vs_old", tenant=A) is None
        assert await vs.add_files("vs_old", 2, attach("file-old"), tenant=DEFAULT_TENANT)
        async with pg.transaction() as conn:
            await conn.execute("SET LOCAL enable_seqscan = off")  # an empty table: ask which index would serve
            plan = "\n".join(row[0] for row in await conn.fetch(
                "EXPLAIN SELECT id FROM vector_stores WHERE tenant = 'x' ORDER BY seq LIMIT 10"))
        assert "vector_stores_listed" in plan  # a tenant's list is an index range


async def test_rows_stored_before_migration_11_belong_to_the_default_tenant(tmp_path: Path) -> None:
    path = tmp_path / "old.db"
    async with aiosqlite.connect(path, isolation_level=None) as conn:
        before = [m for m in MIGRATIONS if m[0] < 11]
        assert await migrate(conn, before) == before[-1][0]
        await conn.execute("INSERT INTO files (id, created_at, bytes, filename, purpose) "
                           "VALUES ('file-old', 1, 4, 'old.txt', 'assistants')")
        await conn.execute("INSERT INTO vector_stores (id, created_at, name, metadata, last_active_at) "
                           "VALUES ('vs_old', 1, 'old', '{}', 1)")
    async with SQLiteResponseStore(str(path)) as db:
        files, vs = SQLiteFileStore(db), SQLiteVectorStoreStore(db)
        assert (await files.get_file("file-old", 2, tenant=DEFAULT_TENANT)) is not None
        assert await files.get_file("file-old", 2, tenant=A) is None
        assert await files.stored_bytes(2, tenant=DEFAULT_TENANT) == 4
        assert (await vs.get_store("vs_old", tenant=DEFAULT_TENANT)) is not None
        assert await vs.get_store("vs_old", tenant=A) is None
        assert await vs.add_files("vs_old", 2, attach("file-old"), tenant=DEFAULT_TENANT)
        async with db.reading() as conn:
            plans = [row[-1] for row in await conn.execute_fetchall(
                "EXPLAIN QUERY PLAN SELECT id FROM vector_stores WHERE tenant = ? ORDER BY seq", ("x",))]
        assert any("vector_stores_listed" in plan for plan in plans)  # a tenant's list is an index range
