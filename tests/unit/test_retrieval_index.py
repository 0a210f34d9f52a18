"""The chunk index: atomic replace, deletes, attributes, the keyword index kept in step (on SQLite and on
PostgreSQL), and on SQLite the in-memory copy of a store's vectors following every change (also one made through
another connection); on PostgreSQL the HNSW path and its exact fallback."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from responses_bridge.store import SQLiteResponseStore
from responses_bridge.store.base import ChunkIndex, VectorStoreStore
from responses_bridge.store.postgres import PostgresDatabase
from responses_bridge.store.postgres.files import chunks as pg_chunks
from responses_bridge.store.postgres.files.chunks import PostgresChunkIndex
from responses_bridge.store.postgres.files.vector_stores import PostgresVectorStoreStore
from responses_bridge.store.records import DimensionMismatch, IndexedFile, StoredVectorStore
from responses_bridge.store.sqlite.files.chunks import SQLiteChunkIndex
from responses_bridge.store.sqlite.files.vector_stores import SQLiteVectorStoreStore
from tests.unit.store_kinds import KINDS, postgres_database

T = "tenant-a"
STORES = ("vs_1", "vs_2", "vs_3")


async def make_stores(stores: VectorStoreStore, tenant: str, *store_ids: str) -> None:
    """The vector stores whose chunks these tests index: the index reads only a tenant's existing stores."""
    for store_id in store_ids:
        await stores.create_store(
            StoredVectorStore(id=store_id, created_at=1, name=store_id, description=None, metadata={},
                              expires_after=None, last_active_at=1, embedder=None), [], tenant=tenant)


def unit_rows(count: int, dims: int = 8, seed: int = 0) -> np.ndarray:
    rows = np.random.default_rng(seed).standard_normal((count, dims)).astype(np.float32)
    return rows / np.linalg.norm(rows, axis=1, keepdims=True)


@pytest.fixture
async def db(tmp_path: Path) -> AsyncIterator[SQLiteResponseStore]:
    async with SQLiteResponseStore(str(tmp_path / "chunks.db")) as opened:
        await make_stores(SQLiteVectorStoreStore(opened), T, *STORES)
        yield opened


@pytest.fixture
def sqlite_index(db: SQLiteResponseStore) -> SQLiteChunkIndex:
    return SQLiteChunkIndex(db)


@pytest.fixture
async def pg(request: pytest.FixtureRequest) -> AsyncIterator[PostgresDatabase]:
    async with postgres_database(request) as opened:
        await make_stores(PostgresVectorStoreStore(opened), T, *STORES, "vs_big", "vs_other")
        yield opened


@pytest.fixture(params=KINDS)
async def index(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[ChunkIndex]:
    if request.param == "sqlite":
        async with SQLiteResponseStore(str(tmp_path / "chunks.db")) as opened:
            await make_stores(SQLiteVectorStoreStore(opened), T, *STORES)
            yield SQLiteChunkIndex(opened)
    else:
        async with postgres_database(request) as opened:
            await make_stores(PostgresVectorStoreStore(opened), T, *STORES)
            yield PostgresChunkIndex(opened)


async def keyword_files(index: ChunkIndex, store: str, term: str) -> set[str]:
    found = await index.keyword_candidates(store, [term], None, 50, tenant=T)
    rows = await index.chunk_rows([chunk for chunk, _ in found], tenant=T)
    return {row.file_id for row in rows.values()}


async def test_replace_keeps_document_order_and_replaces_everything(index: ChunkIndex) -> None:
    await index.replace_file_chunks("vs_1", "file_a", "a.txt", ["alpha one", "beta two", "gamma three"],
                                    unit_rows(3), {"k": 1})
    assert await index.file_chunks("vs_1", "file_a", tenant=T) == ["alpha one", "beta two", "gamma three"]
    assert await index.indexed_files("vs_1", tenant=T) == {"file_a": IndexedFile("a.txt", {"k": 1})}
    await index.replace_file_chunks("vs_1", "file_a", "a2.txt", ["delta four"], unit_rows(1, seed=1), {"k": 2})
    assert await index.file_chunks("vs_1", "file_a", tenant=T) == ["delta four"]
    assert await index.indexed_files("vs_1", tenant=T) == {"file_a": IndexedFile("a2.txt", {"k": 2})}
    assert await keyword_files(index, "vs_1", "beta") == set()  # the keyword index forgot the old text
    assert await keyword_files(index, "vs_1", "delta") == {"file_a"}


async def test_a_failed_replace_leaves_the_previous_chunks(index: ChunkIndex) -> None:
    await index.replace_file_chunks("vs_1", "file_a", "a.txt", ["kept text"], unit_rows(1), {})
    with pytest.raises(ValueError):
        await index.replace_file_chunks("vs_1", "file_a", "a.txt", ["x", "y"], unit_rows(1), {})
    with pytest.raises(Exception):  # noqa: B017 - a value the database cannot bind fails inside the transaction
        await index.replace_file_chunks("vs_1", "file_a", "a.txt", ["new", {"not": "text"}],  # type: ignore[list-item]
                                        unit_rows(2), {})
    assert await index.file_chunks("vs_1", "file_a", tenant=T) == ["kept text"]
    assert await keyword_files(index, "vs_1", "new") == set()


async def test_deletes_reach_text_vectors_and_keywords(index: ChunkIndex) -> None:
    vectors = unit_rows(4)
    await index.replace_file_chunks("vs_1", "file_a", "a.txt", ["shared word apple"], vectors[:1], {})
    await index.replace_file_chunks("vs_1", "file_b", "b.txt", ["shared word banana"], vectors[1:2], {})
    await index.replace_file_chunks("vs_2", "file_a", "a.txt", ["shared word cherry"], vectors[2:3], {})
    assert await keyword_files(index, "vs_1", "shared") == {"file_a", "file_b"}
    assert len(await index.dense_candidates("vs_1", vectors[0], None, 10, tenant=T)) == 2
    await index.delete_file_chunks("vs_1", "file_a")
    assert await index.file_chunks("vs_1", "file_a", tenant=T) == []
    assert set(await index.indexed_files("vs_1", tenant=T)) == {"file_b"}
    assert await keyword_files(index, "vs_1", "shared") == {"file_b"}
    assert len(await index.dense_candidates("vs_1", vectors[0], None, 10, tenant=T)) == 1
    await index.delete_store_chunks("vs_1")
    assert await index.indexed_files("vs_1", tenant=T) == {}
    assert await index.dense_candidates("vs_1", vectors[0], None, 10, tenant=T) == []
    assert await keyword_files(index, "vs_1", "shared") == set()
    assert await index.file_chunks("vs_2", "file_a", tenant=T) == ["shared word cherry"]  # the other store is untouched


async def test_attributes_update_without_touching_chunks(index: ChunkIndex) -> None:
    await index.replace_file_chunks("vs_1", "file_a", "a.txt", ["text"], unit_rows(1), {"old": True})
    await index.set_file_attributes("vs_1", "file_a", {"new": "value", "n": 3})
    assert await index.indexed_files("vs_1", tenant=T) == {"file_a": IndexedFile("a.txt", {"new": "value", "n": 3})}
    assert await index.file_chunks("vs_1", "file_a", tenant=T) == ["text"]


async def test_dense_candidates_are_exact_best_first_and_filtered(index: ChunkIndex) -> None:
    vectors = unit_rows(30, seed=3)
    for number in range(3):
        await index.replace_file_chunks("vs_1", f"file_{number}", f"{number}.txt", [f"t{n}" for n in range(10)],
                                        vectors[number * 10:(number + 1) * 10], {})
    query = vectors[17]
    found = await index.dense_candidates("vs_1", query, None, 5, tenant=T)
    expected = np.sort(vectors @ query)[::-1][:5]
    assert np.allclose([score for _, score in found], expected, atol=1e-6)
    rows = await index.chunk_rows([chunk for chunk, _ in found], tenant=T)
    assert rows[found[0][0]].file_id == "file_1" and rows[found[0][0]].text == "t7"
    only = await index.dense_candidates("vs_1", query, ["file_0", "file_2"], 50, tenant=T)
    assert len(only) == 20 and {row.file_id for row in (await index.chunk_rows([c for c, _ in only],
                                                                               tenant=T)).values()} \
        == {"file_0", "file_2"}
    assert await index.dense_candidates("vs_1", query, [], 5, tenant=T) == []
    with pytest.raises(DimensionMismatch):
        await index.dense_candidates("vs_1", unit_rows(1, dims=4)[0], None, 5, tenant=T)


async def test_the_vector_copy_follows_changes_from_another_connection(db: SQLiteResponseStore,
                                                                       tmp_path: Path) -> None:
    index = SQLiteChunkIndex(db)
    vectors = unit_rows(3, seed=5)
    await index.replace_file_chunks("vs_1", "file_a", "a.txt", ["one"], vectors[:1], {})
    assert len(await index.dense_candidates("vs_1", vectors[0], None, 10, tenant=T)) == 1  # loaded and kept
    async with SQLiteResponseStore(db.path) as other_db:  # another process's connections on the same file
        await SQLiteChunkIndex(other_db).replace_file_chunks("vs_1", "file_b", "b.txt", ["two", "three"],
                                                             vectors[1:], {})
    found = await index.dense_candidates("vs_1", vectors[2], None, 10, tenant=T)
    assert len(found) == 3 and found[0][1] == pytest.approx(1.0, abs=1e-5)
    assert (await index.indexed_files("vs_1", tenant=T))["file_b"].attributes == {}  # the files are cached now
    async with SQLiteResponseStore(db.path) as other_db:
        await SQLiteChunkIndex(other_db).set_file_attributes("vs_1", "file_b", {"seen": True})
    assert (await index.indexed_files("vs_1", tenant=T))["file_b"].attributes == {"seen": True}


async def test_keyword_search_takes_terms_literally(index: ChunkIndex) -> None:
    await index.replace_file_chunks("vs_1", "file_a", "a.txt", ['say "NEAR" or AND text: col*'], unit_rows(1), {})
    for term in ['"', "NEAR", "AND", "text:", "col*", "OR", "(", "^"]:
        await index.keyword_candidates("vs_1", [term], None, 5, tenant=T)  # operators and quotes are words, not syntax
    assert await keyword_files(index, "vs_1", "near") == {"file_a"}
    assert await index.keyword_candidates("vs_1", [], None, 5, tenant=T) == []


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(st.lists(st.text(min_size=1, max_size=8), min_size=1, max_size=5))
async def test_any_terms_are_searched_without_error(index: ChunkIndex, terms: list[str]) -> None:
    if not await index.file_chunks("vs_1", "file_a", tenant=T):
        await index.replace_file_chunks("vs_1", "file_a", "a.txt", ["plain words here"], unit_rows(1), {})
    found = await index.keyword_candidates("vs_1", terms, None, 5, tenant=T)
    assert all(score > 0 for _, score in found)


async def test_own_changes_patch_the_vector_copy_without_reading_the_store(sqlite_index: SQLiteChunkIndex,
                                                                           monkeypatch: pytest.MonkeyPatch) -> None:
    index = sqlite_index
    vectors = unit_rows(6, seed=9)
    await index.replace_file_chunks("vs_1", "file_a", "a.txt", ["a0", "a1"], vectors[:2], {})
    await index.replace_file_chunks("vs_1", "file_b", "b.txt", ["b0"], vectors[2:3], {})
    assert len(await index.dense_candidates("vs_1", vectors[0], None, 10, tenant=T)) == 3
    loads = 0
    real_load = index._load

    async def counted(*args: object) -> object:
        nonlocal loads
        loads += 1
        return await real_load(*args)  # type: ignore[arg-type]

    monkeypatch.setattr(index, "_load", counted)
    await index.replace_file_chunks("vs_1", "file_a", "a.txt", ["a-new"], vectors[3:4], {})  # 2 rows become 1
    await index.replace_file_chunks("vs_1", "file_c", "c.txt", ["c0", "c1"], vectors[4:6], {})  # a new file
    found = await index.dense_candidates("vs_1", vectors[3], None, 10, tenant=T)
    rows = await index.chunk_rows([chunk for chunk, _ in found], tenant=T)
    assert rows[found[0][0]].text == "a-new" and len(found) == 4
    assert sorted(row.text for row in rows.values()) == ["a-new", "b0", "c0", "c1"]
    await index.delete_file_chunks("vs_1", "file_b")
    found = await index.dense_candidates("vs_1", vectors[2], None, 10, tenant=T)
    assert sorted(row.text for row in (await index.chunk_rows([c for c, _ in found], tenant=T)).values()) == [
        "a-new", "c0", "c1"]
    only_c = await index.dense_candidates("vs_1", vectors[4], ["file_c"], 10, tenant=T)
    assert len(only_c) == 2 and only_c[0][1] == pytest.approx(1.0, abs=1e-5)
    assert loads == 0  # every change was applied to the copy in memory
    # a fresh index over the same file reads the store and agrees
    fresh = await SQLiteChunkIndex(index._db).dense_candidates("vs_1", vectors[2], None, 10, tenant=T)
    assert sorted(fresh) == sorted(found)


async def test_vector_copies_beyond_the_bound_are_dropped_least_recent_first(
        sqlite_index: SQLiteChunkIndex, monkeypatch: pytest.MonkeyPatch) -> None:
    index = sqlite_index
    from responses_bridge.store.sqlite.files import chunks

    vectors = unit_rows(30, seed=4)
    for store in ("vs_1", "vs_2", "vs_3"):
        await index.replace_file_chunks(store, "file_a", "a.txt", [f"t{n}" for n in range(10)], vectors[:10], {})
    monkeypatch.setattr(chunks, "MAX_CACHED_BYTES", 2 * vectors[:10].nbytes)  # room for two stores' vectors
    for store in ("vs_1", "vs_2", "vs_1", "vs_3"):
        assert len(await index.dense_candidates(store, vectors[0], None, 5, tenant=T)) == 5
    assert list(index._dense) == ["vs_1", "vs_3"]  # vs_2 was the least recently searched
    assert len(await index.dense_candidates("vs_2", vectors[0], None, 5, tenant=T)) == 5  # and loads again when needed


async def test_postgres_file_cache_follows_another_replica(pg: PostgresDatabase) -> None:
    """Two replicas' indexes on one database: the attributes one of them changes reach the other's cached files."""
    mine, theirs = PostgresChunkIndex(pg), PostgresChunkIndex(pg)
    await mine.replace_file_chunks("vs_1", "file_a", "a.txt", ["one"], unit_rows(1), {"v": 1})
    first = await mine.indexed_files("vs_1", tenant=T)
    assert await mine.indexed_files("vs_1", tenant=T) is first  # cached while nothing changed
    await theirs.set_file_attributes("vs_1", "file_a", {"v": 2})
    assert (await mine.indexed_files("vs_1", tenant=T))["file_a"].attributes == {"v": 2}
    await theirs.delete_store_chunks("vs_1")
    assert await mine.indexed_files("vs_1", tenant=T) == {}


async def test_postgres_large_stores_search_through_hnsw_and_fall_back_when_filtered_short(
        pg: PostgresDatabase, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(pg_chunks, "EXACT_LIMIT", 10)  # every store below is "large"
    index = PostgresChunkIndex(pg)
    vectors = unit_rows(60, seed=11)
    for number in range(3):
        await index.replace_file_chunks("vs_big", f"file_{number}", f"{number}.txt", [f"t{n}" for n in range(15)],
                                        vectors[number * 15:(number + 1) * 15], {})
    await index.replace_file_chunks("vs_other", "file_x", "x.txt", [f"x{n}" for n in range(15)], vectors[45:], {})
    async with pg.acquire() as conn:
        # made on the first write of 8-d vectors (whether the planner takes it over the store's b-tree is its
        # cost decision: for a store this small it sorts the few rows)
        assert await conn.fetchval("SELECT count(*) FROM pg_indexes WHERE indexname = 'vector_store_chunks_hnsw_8'")
    query = vectors[20]
    found = await index.dense_candidates("vs_big", query, None, 5, tenant=T)
    expected = np.sort(vectors[:45] @ query)[::-1][:5]
    assert np.allclose([score for _, score in found], expected, atol=1e-5)
    # a filter that leaves fewer rows than asked for: the exact scan answers, every allowed row once
    only = await index.dense_candidates("vs_big", query, ["file_2"], 50, tenant=T)
    assert len(only) == 15 and {row.file_id for row in (await index.chunk_rows([c for c, _ in only],
                                                                               tenant=T)).values()} == {"file_2"}
    assert [score for _, score in only] == sorted((score for _, score in only), reverse=True)
    assert len(await index.dense_candidates("vs_other", query, None, 50, tenant=T)) == 15  # never another store's
