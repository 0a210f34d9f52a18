"""Vector store metadata: counts, usage and batch status always agree with the file rows; pages like OpenAI's.
Every test runs on SQLite and on PostgreSQL."""

from __future__ import annotations

import itertools
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from responses_bridge.store import SQLiteResponseStore
from responses_bridge.store.base import FileStore, VectorStoreStore
from responses_bridge.store.postgres.files.files import PostgresFileStore
from responses_bridge.store.postgres.files.vector_stores import PostgresVectorStoreStore
from responses_bridge.store.records import (
    FileCounts,
    InvalidCursor,
    InvalidPageArgs,
    NewFile,
    StoredFile,
    StoredVectorStore,
)
from responses_bridge.store.sqlite.files.files import SQLiteFileStore
from responses_bridge.store.sqlite.files.vector_stores import SQLiteVectorStoreStore
from tests.unit.store_kinds import KINDS, postgres_database

CHUNKING = {"type": "static", "static": {"max_chunk_size_tokens": 800, "chunk_overlap_tokens": 400}}
T = "tenant-a"
FILE_IDS = ["other", *(f"f{n}" for n in range(10)), *(f"f{n:02d}" for n in range(12))]


async def upload_rows(files: FileStore, tenant: str, file_ids: list[str]) -> None:
    """File rows for the ids these tests attach: only a tenant's own live files can be attached."""
    for file_id in file_ids:
        await files.add_file(StoredFile(id=file_id, created_at=1, bytes=1, filename=f"{file_id}.txt",
                                        purpose="assistants", expires_at=None), tenant=tenant, max_stored_bytes=None)


@pytest.fixture(params=KINDS)
async def stores(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[VectorStoreStore]:
    if request.param == "sqlite":
        async with SQLiteResponseStore(str(tmp_path / "bridge.db")) as db:
            await upload_rows(SQLiteFileStore(db), T, FILE_IDS)
            yield SQLiteVectorStoreStore(db)
    else:
        async with postgres_database(request) as pg:
            await upload_rows(PostgresFileStore(pg), T, FILE_IDS)
            yield PostgresVectorStoreStore(pg)


def _store(store_id: str, created_at: int = 100) -> StoredVectorStore:
    return StoredVectorStore(id=store_id, created_at=created_at, name=store_id, description=None, metadata={},
                             expires_after=None, last_active_at=created_at, embedder="test:hash")


def _files(*file_ids: str) -> list[NewFile]:
    return [NewFile(file_id, {}, CHUNKING) for file_id in file_ids]


async def test_counts_and_usage_follow_the_file_rows(stores: VectorStoreStore) -> None:
    seqs = await stores.create_store(_store("vs_a"), _files("f1", "f2", "f3"), tenant=T)
    got = await stores.get_store("vs_a", tenant=T)
    assert got is not None and got.file_counts == FileCounts(in_progress=3) and got.usage_bytes == 0
    assert await stores.finish_file(seqs[0], "completed", usage_bytes=1000)
    assert await stores.finish_file(seqs[1], "failed", last_error={"code": "invalid_file", "message": "bad"})
    got = await stores.get_store("vs_a", tenant=T)
    assert got is not None
    assert got.file_counts == FileCounts(in_progress=1, completed=1, failed=1) and got.file_counts.total == 3
    assert got.usage_bytes == 1000
    failed = await stores.get_file("vs_a", "f2", tenant=T)
    assert failed is not None and failed.last_error == {"code": "invalid_file", "message": "bad"}
    assert await stores.delete_file("vs_a", "f1", tenant=T)
    got = await stores.get_store("vs_a", tenant=T)
    assert got is not None and got.file_counts == FileCounts(in_progress=1, failed=1) and got.usage_bytes == 0


async def test_a_finished_row_is_never_finished_again(stores: VectorStoreStore) -> None:
    (seq,) = await stores.create_store(_store("vs_a"), _files("f1"), tenant=T)
    assert await stores.finish_file(seq, "completed", usage_bytes=5)
    assert not await stores.finish_file(seq, "failed", last_error={"code": "server_error", "message": "late"})
    row = await stores.get_file("vs_a", "f1", tenant=T)
    assert row is not None and row.status == "completed" and row.last_error is None


async def test_a_readded_file_gets_a_new_row_and_the_old_job_changes_nothing(stores: VectorStoreStore) -> None:
    (old,) = await stores.create_store(_store("vs_a"), _files("f1"), tenant=T)
    new = await stores.add_files("vs_a", 200, _files("f1"), tenant=T)
    assert new is not None and new[0] != old
    assert not await stores.finish_file(old, "completed", usage_bytes=9)
    row = await stores.get_file("vs_a", "f1", tenant=T)
    assert row is not None and row.status == "in_progress" and row.created_at == 200
    assert [r.seq for r in await stores.in_progress_files()] == new


async def test_whether_files_wait_for_ingestion_is_one_read(stores: VectorStoreStore) -> None:
    """What a process reads at start (and, sharing the database, polls) before it loads ingestion: a row in
    progress, and one nobody holds (never claimed, given up, or its lease passed)."""
    assert not await stores.has_files_to_ingest(unclaimed=False)
    assert not await stores.has_files_to_ingest(unclaimed=True)
    (seq,) = await stores.create_store(_store("vs_a"), _files("f1"), tenant=T)
    assert await stores.has_files_to_ingest(unclaimed=False) and await stores.has_files_to_ingest(unclaimed=True)
    assert await stores.claim_file(seq, "worker-a", 60)
    assert await stores.has_files_to_ingest(unclaimed=False)  # a dead process's claim, to a process alone
    assert not await stores.has_files_to_ingest(unclaimed=True)  # another replica's, held
    assert await stores.claim_file(seq, "worker-a", -1)  # its lease passed
    assert await stores.has_files_to_ingest(unclaimed=True)
    assert await stores.release_claims("worker-a") == 1
    assert await stores.has_files_to_ingest(unclaimed=True)
    assert await stores.finish_file(seq, "completed", usage_bytes=5)
    assert not await stores.has_files_to_ingest(unclaimed=False)


async def test_batch_counts_and_cancel(stores: VectorStoreStore) -> None:
    await stores.create_store(_store("vs_a"), _files("other"), tenant=T)
    seqs = await stores.add_files("vs_a", 150, _files("f1", "f2", "f3"), batch_id="vsfb_1", tenant=T)
    assert seqs is not None
    await stores.finish_file(seqs[0], "completed", usage_bytes=1)
    await stores.finish_file(seqs[1], "failed", last_error={"code": "unsupported_file", "message": "x"})
    batch = await stores.get_batch("vs_a", "vsfb_1", tenant=T)
    assert batch is not None and not batch.cancelled
    assert batch.file_counts == FileCounts(in_progress=1, completed=1, failed=1)
    assert await stores.cancel_batch("vs_a", "vsfb_1", tenant=T)
    batch = await stores.get_batch("vs_a", "vsfb_1", tenant=T)
    assert batch is not None and batch.cancelled
    assert batch.file_counts == FileCounts(completed=1, failed=1, cancelled=1)
    other = await stores.get_file("vs_a", "other", tenant=T)
    assert other is not None and other.status == "in_progress"  # not in the batch: untouched
    assert not await stores.finish_file(seqs[2], "completed", usage_bytes=1)
    assert await stores.get_batch("vs_b", "vsfb_1", tenant=T) is None
    assert not await stores.cancel_batch("vs_b", "vsfb_1", tenant=T)


async def test_cancelling_a_finished_batch_changes_nothing(stores: VectorStoreStore) -> None:
    await stores.create_store(_store("vs_a"), [], tenant=T)
    seqs = await stores.add_files("vs_a", 150, _files("f1"), batch_id="vsfb_1", tenant=T)
    assert seqs is not None and await stores.finish_file(seqs[0], "completed", usage_bytes=1)
    assert await stores.cancel_batch("vs_a", "vsfb_1", tenant=T)
    batch = await stores.get_batch("vs_a", "vsfb_1", tenant=T)
    assert batch is not None and not batch.cancelled and batch.file_counts == FileCounts(completed=1)


async def test_unknown_store_adds_nothing(stores: VectorStoreStore) -> None:
    assert await stores.add_files("vs_missing", 1, _files("f1"), batch_id="vsfb_x", tenant=T) is None
    assert await stores.in_progress_files() == []


async def test_deleting_a_store_takes_its_files_and_batches(stores: VectorStoreStore) -> None:
    await stores.create_store(_store("vs_a"), [], tenant=T)
    await stores.add_files("vs_a", 1, _files("f1"), batch_id="vsfb_1", tenant=T)
    assert await stores.delete_store("vs_a", tenant=T)
    assert await stores.get_store("vs_a", tenant=T) is None and await stores.get_file("vs_a", "f1", tenant=T) is None
    assert await stores.get_batch("vs_a", "vsfb_1", tenant=T) is None and await stores.in_progress_files() == []
    assert not await stores.delete_store("vs_a", tenant=T)


async def test_store_pages_walk_both_ways(stores: VectorStoreStore) -> None:
    names = [f"vs_{n}" for n in range(7)]
    for n, name in enumerate(names):
        await stores.create_store(_store(name, created_at=100 + n), [], tenant=T)
    page = await stores.list_stores(limit=3, order="desc", tenant=T)
    assert [s.id for s in page.data] == ["vs_6", "vs_5", "vs_4"] and page.has_more
    page = await stores.list_stores(limit=3, order="desc", after="vs_4", tenant=T)
    assert [s.id for s in page.data] == ["vs_3", "vs_2", "vs_1"] and page.has_more
    page = await stores.list_stores(limit=3, order="desc", after="vs_1", tenant=T)
    assert [s.id for s in page.data] == ["vs_0"] and not page.has_more
    page = await stores.list_stores(limit=2, order="desc", before="vs_2", tenant=T)
    assert [s.id for s in page.data] == ["vs_4", "vs_3"] and page.has_more
    page = await stores.list_stores(limit=3, order="asc", after="vs_1", before="vs_5", tenant=T)
    assert [s.id for s in page.data] == ["vs_2", "vs_3", "vs_4"] and not page.has_more
    page = await stores.list_stores(limit=100, order="asc", tenant=T)
    assert [s.id for s in page.data] == names and not page.has_more


async def test_bad_page_arguments_raise_the_store_errors(stores: VectorStoreStore) -> None:
    await stores.create_store(_store("vs_a"), _files("f1"), tenant=T)
    with pytest.raises(InvalidCursor):
        await stores.list_stores(limit=5, order="asc", after="vs_missing", tenant=T)
    with pytest.raises(InvalidCursor):
        await stores.list_files("vs_a", limit=5, order="asc", before="f_missing", tenant=T)
    with pytest.raises(InvalidPageArgs):
        await stores.list_stores(limit=0, order="asc", tenant=T)
    with pytest.raises(InvalidPageArgs):
        await stores.list_files("vs_a", limit=5, order="sideways", tenant=T)


async def test_file_pages_filter_by_status_and_batch(stores: VectorStoreStore) -> None:
    seqs = await stores.create_store(_store("vs_a"), _files(*(f"f{n}" for n in range(6))), tenant=T)
    for seq in seqs[::2]:
        await stores.finish_file(seq, "completed", usage_bytes=1)
    await stores.add_files("vs_a", 300, _files("f1", "f9"), batch_id="vsfb_1", tenant=T)
    completed = await stores.list_files("vs_a", limit=10, order="asc", status="completed", tenant=T)
    assert [f.file_id for f in completed.data] == ["f0", "f2", "f4"]
    first = await stores.list_files("vs_a", limit=2, order="asc", status="in_progress", tenant=T)
    assert [f.file_id for f in first.data] == ["f3", "f5"] and first.has_more
    rest = await stores.list_files("vs_a", limit=2, order="asc", status="in_progress", after="f5", tenant=T)
    assert [f.file_id for f in rest.data] == ["f1", "f9"] and not rest.has_more
    batch = await stores.list_files("vs_a", limit=10, order="desc", batch_id="vsfb_1", tenant=T)
    assert [f.file_id for f in batch.data] == ["f9", "f1"]


_examples = itertools.count()


@settings(max_examples=40, deadline=None, derandomize=True, database=None,
          suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(count=st.integers(0, 12), limit=st.integers(1, 5), order=st.sampled_from(["asc", "desc"]),
       done=st.sets(st.integers(0, 11)))
async def test_pages_walked_either_way_list_every_file_once_in_order(
        stores: VectorStoreStore, count: int, limit: int, order: str, done: set[int]) -> None:
    store_id = f"vs_{next(_examples)}"  # one database for every example, a new store each
    names = [f"f{n:02d}" for n in range(count)]
    seqs = await stores.create_store(_store(store_id), _files(*names), tenant=T)
    for n in done & set(range(count)):
        await stores.finish_file(seqs[n], "completed", usage_bytes=n)
    expected = names if order == "asc" else names[::-1]
    for status in (None, "completed", "in_progress"):
        wanted = [name for name in expected if status is None
                  or (status == "completed") == (int(name[1:]) in done)]
        forward: list[str] = []
        after: str | None = None
        while True:
            page = await stores.list_files(store_id, limit=limit, order=order, after=after, status=status, tenant=T)
            assert len(page.data) <= limit
            forward += [row.file_id for row in page.data]
            if not page.has_more:
                break
            after = page.data[-1].file_id
        assert forward == wanted
        if not wanted:
            continue
        backward: list[str] = []
        before: str | None = wanted[-1]
        while before is not None:
            page = await stores.list_files(store_id, limit=limit, order=order, before=before, status=status,
                                           tenant=T)
            backward = [row.file_id for row in page.data] + backward
            before = page.data[0].file_id if page.has_more else None
        assert backward == wanted[:-1]
    counted = await stores.get_store(store_id, tenant=T)
    assert counted is not None and counted.file_counts.total == count
    assert counted.file_counts.completed == len(done & set(range(count)))
    assert counted.usage_bytes == sum(done & set(range(count)))
