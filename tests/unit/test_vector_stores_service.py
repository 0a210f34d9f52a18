"""The vector store service and its ingestion worker over a real SQLite file: status and counts stay true, one bad
file fails alone, work left in progress resumes, embedders are never mixed, bad input is a 4xx."""

from __future__ import annotations

import io
import zipfile
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest

from responses_bridge.protocol.errors import APIError
from responses_bridge.protocol.files.search_options import SearchOptions
from responses_bridge.services.files.retrieval.embedders import Embedder, LocalStaticEmbedder
from responses_bridge.services.files.vector_stores import VectorStoreService
from responses_bridge.store import SQLiteResponseStore
from responses_bridge.store.sqlite.files.chunks import SQLiteChunkIndex
from responses_bridge.store.sqlite.files.vector_stores import SQLiteVectorStoreStore
from tests.support.memory import reset_peak, status_kb
from tests.unit.vector_store_doubles import HashEmbedder, StoredFiles

TEXT = b"alpha beta gamma delta epsilon " * 200
TENANT = "tenant-a"


class Harness:
    def __init__(self, db: SQLiteResponseStore, root: Path) -> None:
        self.db = db
        self.files = StoredFiles(db, root)
        self.chunks = SQLiteChunkIndex(db)
        self.embedder: Embedder = LocalStaticEmbedder()

    def service(self, embedder: Embedder | None = None, concurrency: int = 2) -> VectorStoreService:
        return VectorStoreService(SQLiteVectorStoreStore(self.db), self.files.service, self.chunks,
                                  embedder or self.embedder, concurrency=concurrency)


@pytest.fixture
async def harness(tmp_path: Path) -> AsyncIterator[Harness]:
    async with SQLiteResponseStore(str(tmp_path / "bridge.db")) as db:
        harness = Harness(db, tmp_path)
        await harness.files.start()
        yield harness
        await harness.files.aclose()


@pytest.fixture
async def service(harness: Harness) -> AsyncIterator[VectorStoreService]:
    running = harness.service()
    await running.start()
    yield running
    await running.close()


async def _settled(service: VectorStoreService, store_id: str) -> dict[str, Any]:
    await service.worker.wait_idle()
    return await service.get(store_id, tenant=TENANT)


async def test_create_with_files_ingests_them_and_keeps_counts_true(harness: Harness,
                                                                    service: VectorStoreService) -> None:
    ids = [await harness.files.add(f"doc{n}.txt", TEXT, tenant=TENANT) for n in range(3)]
    created = await service.create({"name": "docs", "file_ids": ids, "metadata": {"team": "a"}}, tenant=TENANT)
    assert created["object"] == "vector_store" and created["name"] == "docs"
    assert created["file_counts"]["total"] == 3 and created["expires_at"] is None
    done = await _settled(service, created["id"])
    assert done["status"] == "completed"
    assert done["file_counts"] == {"in_progress": 0, "completed": 3, "failed": 0, "cancelled": 0, "total": 3}
    files = (await service.list_files(created["id"], limit=20, order="asc", after=None, before=None,
                                      status=None, tenant=TENANT))["data"]
    assert [f["id"] for f in files] == ids and all(f["usage_bytes"] > 0 for f in files)
    assert done["usage_bytes"] == sum(f["usage_bytes"] for f in files)
    content = await service.file_content(created["id"], ids[0], tenant=TENANT)
    assert content["object"] == "vector_store.file_content.page" and content["data"]
    assert content["data"][0]["type"] == "text" and content["data"][0]["text"].startswith("alpha beta")


async def test_one_bad_file_fails_alone_and_the_batch_completes(harness: Harness,
                                                                service: VectorStoreService) -> None:
    store = await service.create({"name": "mixed"}, tenant=TENANT)
    good = [await harness.files.add(f"ok{n}.txt", TEXT, tenant=TENANT) for n in range(3)]
    bad = await harness.files.add("image.png", b"\x89PNG\r\n\x1a\n" + bytes(range(256)), tenant=TENANT)
    batch = await service.create_batch(store["id"], {"file_ids": [good[0], bad, *good[1:]],
                                                     "attributes": {"kind": "doc"}}, tenant=TENANT)
    assert batch["object"] == "vector_store.files_batch" and batch["file_counts"]["total"] == 4
    await service.worker.wait_idle()
    batch = await service.get_batch(store["id"], batch["id"], tenant=TENANT)
    assert batch["status"] == "completed"
    assert batch["file_counts"] == {"in_progress": 0, "completed": 3, "failed": 1, "cancelled": 0, "total": 4}
    failed = await service.get_file(store["id"], bad, tenant=TENANT)
    assert failed["status"] == "failed" and failed["last_error"]["code"] == "unsupported_file"
    assert failed["last_error"]["message"]
    assert (await service.get_file(store["id"], good[0], tenant=TENANT))["attributes"] == {"kind": "doc"}
    assert (await service.get(store["id"], tenant=TENANT))["status"] == "completed"
    listed = await service.list_files(store["id"], limit=20, order="asc", after=None, before=None,
                                      status="failed", batch_id=batch["id"], tenant=TENANT)
    assert [f["id"] for f in listed["data"]] == [bad]


async def test_files_left_in_progress_are_ingested_after_a_restart(harness: Harness) -> None:
    first = harness.service()  # never started: as if the process stopped before ingesting anything
    ids = [await harness.files.add(f"doc{n}.txt", TEXT, tenant=TENANT) for n in range(5)]
    store = await first.create({"file_ids": ids}, tenant=TENANT)
    assert store["file_counts"]["in_progress"] == 5
    second = harness.service()
    await second.start()
    try:
        done = await _settled(second, store["id"])
    finally:
        await second.close()
    assert done["status"] == "completed" and done["file_counts"]["completed"] == 5
    assert sorted(await harness.chunks.indexed_files(store["id"], tenant=TENANT)) == sorted(ids)


async def test_cancel_marks_waiting_files_cancelled_and_leaves_no_chunks(harness: Harness) -> None:
    service = harness.service()  # not started: nothing is ingested before the cancel
    store = await service.create({}, tenant=TENANT)
    ids = [await harness.files.add(f"doc{n}.txt", TEXT, tenant=TENANT) for n in range(3)]
    batch = await service.create_batch(store["id"], {"files": [{"file_id": i} for i in ids]}, tenant=TENANT)
    cancelled = await service.cancel_batch(store["id"], batch["id"], tenant=TENANT)
    assert cancelled["status"] == "cancelled" and cancelled["file_counts"]["cancelled"] == 3
    await service.start()
    try:
        await service.worker.wait_idle()
    finally:
        await service.close()
    assert await harness.chunks.indexed_files(store["id"], tenant=TENANT) == {}
    assert (await service.get(store["id"], tenant=TENANT))["file_counts"]["cancelled"] == 3


async def test_deleting_a_file_or_store_removes_its_chunks(harness: Harness, service: VectorStoreService) -> None:
    ids = [await harness.files.add(f"doc{n}.txt", TEXT, tenant=TENANT) for n in range(2)]
    store = await service.create({"file_ids": ids}, tenant=TENANT)
    await _settled(service, store["id"])
    deleted = await service.delete_file(store["id"], ids[0], tenant=TENANT)
    assert deleted == {"id": ids[0], "object": "vector_store.file.deleted", "deleted": True}
    assert list(await harness.chunks.indexed_files(store["id"], tenant=TENANT)) == [ids[1]]
    assert (await service.get(store["id"], tenant=TENANT))["file_counts"]["total"] == 1
    assert (await service.delete(store["id"], tenant=TENANT))["deleted"] is True
    async with harness.db.reading() as conn:  # gone, not only out of reach now that the store is gone
        left = list(await conn.execute_fetchall("SELECT count(*) FROM vector_store_chunks WHERE vector_store_id = ?",
                                                (store["id"],)))
    assert left == [(0,)]
    with pytest.raises(APIError) as info:
        await service.get(store["id"], tenant=TENANT)
    assert info.value.status == 404


async def test_attribute_updates_reach_the_chunks(harness: Harness, service: VectorStoreService) -> None:
    file_id = await harness.files.add("doc.txt", TEXT, tenant=TENANT)
    store = await service.create({}, tenant=TENANT)
    await service.add_file(store["id"], {"file_id": file_id, "attributes": {"year": 2023}}, tenant=TENANT)
    await service.worker.wait_idle()
    updated = await service.update_file(store["id"], file_id, {"attributes": {"year": 2024, "draft": False}},
                                        tenant=TENANT)
    assert updated["attributes"] == {"year": 2024, "draft": False}
    indexed = await harness.chunks.indexed_files(store["id"], tenant=TENANT)
    assert indexed[file_id].attributes == {"year": 2024, "draft": False}


async def test_search_page_and_searcher(harness: Harness, service: VectorStoreService) -> None:
    file_id = await harness.files.add("doc.txt", TEXT, tenant=TENANT)
    store = await service.create({"file_ids": [file_id]}, tenant=TENANT)
    await _settled(service, store["id"])
    page = await service.search_store(store["id"], {"query": "gamma", "max_num_results": 2}, tenant=TENANT)
    assert page["object"] == "vector_store.search_results.page" and page["search_query"] == ["gamma"]
    assert page["has_more"] is False and page["next_page"] is None
    assert page["data"] and page["data"][0]["file_id"] == file_id
    rewritten = await service.search_store(store["id"], {"query": "What is the gamma of it?", "rewrite_query": True},
                                           tenant=TENANT)
    assert rewritten["search_query"] == ["gamma"] and rewritten["data"][0]["file_id"] == file_id
    with pytest.raises(APIError) as info:
        await service.search([store["id"], "vs_missing"], "gamma", SearchOptions(), tenant=TENANT)
    assert info.value.status == 404 and info.value.param == "vector_store_ids"


async def test_a_store_built_by_another_embedder_is_refused(harness: Harness, service: VectorStoreService) -> None:
    store = await service.create({}, tenant=TENANT)
    other = harness.service(HashEmbedder("test:other"))
    file_id = await harness.files.add("doc.txt", TEXT, tenant=TENANT)
    for call in (other.search_store(store["id"], {"query": "alpha"}, tenant=TENANT),
                 other.add_file(store["id"], {"file_id": file_id}, tenant=TENANT)):
        with pytest.raises(APIError) as info:
            await call
        assert info.value.status == 400 and info.value.code == "embedder_mismatch"
        assert harness.embedder.name in info.value.message and "test:other" in info.value.message


async def test_an_expired_store_says_so_and_refuses_search(harness: Harness, service: VectorStoreService) -> None:
    store = await service.create({"expires_after": {"anchor": "last_active_at", "days": 1}}, tenant=TENANT)
    assert store["expires_at"] == store["last_active_at"] + 86_400 and store["status"] == "completed"
    await service.store.update_store(store["id"], {"last_active_at": store["last_active_at"] - 2 * 86_400},
                                     tenant=TENANT)
    assert (await service.get(store["id"], tenant=TENANT))["status"] == "expired"
    with pytest.raises(APIError) as info:
        await service.search_store(store["id"], {"query": "alpha"}, tenant=TENANT)
    assert info.value.status == 400 and info.value.code == "vector_store_expired"


async def test_update_changes_only_what_is_given(service: VectorStoreService) -> None:
    store = await service.create({"name": "a", "metadata": {"k": "v"}}, tenant=TENANT)
    updated = await service.update(store["id"], {"name": "b"}, tenant=TENANT)
    assert updated["name"] == "b" and updated["metadata"] == {"k": "v"}
    updated = await service.update(store["id"], {"expires_after": {"anchor": "last_active_at", "days": 7},
                                                  "metadata": None}, tenant=TENANT)
    assert updated["expires_after"] == {"anchor": "last_active_at", "days": 7} and updated["metadata"] == {}
    assert (await service.update(store["id"], {"expires_after": None}, tenant=TENANT))["expires_at"] is None


@pytest.mark.parametrize(("body", "param"), [
    ({"name": 5}, "name"),
    ({"metadata": {"k": 1}}, "metadata"),
    ({"expires_after": {"anchor": "created_at", "days": 3}}, "expires_after.anchor"),
    ({"expires_after": {"anchor": "last_active_at", "days": 0}}, "expires_after.days"),
    ({"file_ids": "file-1"}, "file_ids"),
    ({"file_ids": [7]}, "file_ids[0]"),
    ({"chunking_strategy": {"type": "static", "static": {"max_chunk_size_tokens": 50,
                                                          "chunk_overlap_tokens": 10}}}, "chunking_strategy"),
])
async def test_bad_create_bodies_are_400s(service: VectorStoreService, body: dict[str, Any], param: str) -> None:
    with pytest.raises(APIError) as info:
        await service.create(body, tenant=TENANT)
    assert info.value.status == 400 and info.value.param is not None
    # the chunking parser may name the field inside the strategy (chunking_strategy.static.…)
    assert info.value.param == param or (param == "chunking_strategy" and info.value.param.startswith(param + "."))
    assert (await service.list_stores(limit=10, order="asc", after=None, before=None, tenant=TENANT))["data"] == []


async def test_bad_file_and_batch_bodies(harness: Harness, service: VectorStoreService) -> None:
    store = await service.create({}, tenant=TENANT)
    file_id = await harness.files.add("doc.txt", TEXT, tenant=TENANT)
    cases: list[tuple[Any, int, str | None]] = [
        (service.add_file(store["id"], {}, tenant=TENANT), 400, "file_id"),
        (service.add_file(store["id"], {"file_id": "file-missing"}, tenant=TENANT), 404, "file_id"),
        (service.add_file(store["id"], {"file_id": file_id, "attributes": {"k" * 65: 1}}, tenant=TENANT), 400,
         "attributes"),
        (service.add_file(store["id"], {"file_id": file_id, "attributes": {"k": [1]}}, tenant=TENANT), 400,
         "attributes"),
        (service.add_file("vs_missing", {"file_id": file_id}, tenant=TENANT), 404, "vector_store_id"),
        (service.create_batch(store["id"], {"file_ids": [file_id], "files": []}, tenant=TENANT), 400, "files"),
        (service.create_batch(store["id"], {}, tenant=TENANT), 400, "file_ids"),
        (service.create_batch(store["id"], {"file_ids": []}, tenant=TENANT), 400, "file_ids"),
        (service.create_batch(store["id"], {"files": [{"attributes": {}}]}, tenant=TENANT), 400, "files[0].file_id"),
        (service.create_batch(store["id"], {"files": [{"file_id": file_id, "chunking_strategy": {"type": "x"}}]},
                              tenant=TENANT), 400, "files[0].chunking_strategy"),
        (service.update_file(store["id"], file_id, {"attributes": {}}, tenant=TENANT), 404, "file_id"),
        (service.get_batch(store["id"], "vsfb_missing", tenant=TENANT), 404, "batch_id"),
        (service.list_files(store["id"], tenant=TENANT, limit=20, order="asc", after=None, before=None,
                            status="done"), 400, "filter"),
        (service.list_files(store["id"], tenant=TENANT, limit=20, order="asc", after="file-x", before=None,
                            status=None), 400, "after"),
        (service.search_store(store["id"], {"query": ""}, tenant=TENANT), 400, "query"),
        (service.search_store(store["id"], {"query": ["a", 3]}, tenant=TENANT), 400, "query"),
        (service.search_store(store["id"], {}, tenant=TENANT), 400, "query"),
    ]
    for call, status, param in cases:
        with pytest.raises(APIError) as info:
            await call
        got = info.value.param or ""
        if param and param.endswith("chunking_strategy") and got.startswith(param + "."):
            got = param  # the chunking parser may name the field inside the strategy
        assert (info.value.status, got) == (status, param), info.value
    assert (await service.get(store["id"], tenant=TENANT))["file_counts"]["total"] == 0


async def test_long_batches_log_their_progress(harness: Harness, monkeypatch: pytest.MonkeyPatch) -> None:
    from structlog.testing import capture_logs

    from responses_bridge.services.files import ingestion

    monkeypatch.setattr(ingestion, "PROGRESS_EVERY_SECONDS", 0.0)  # every file counts as "a while" here
    service = harness.service(concurrency=1)
    ids = [await harness.files.add(f"doc{n}.txt", TEXT,
                                   tenant=TENANT) for n in range(3)] + [await harness.files.add("x.png", b"\x89PNG",
                                                                                                tenant=TENANT)]
    with capture_logs() as logs:
        await service.start()
        try:
            await service.create({"file_ids": ids}, tenant=TENANT)
            await service.worker.wait_idle()
        finally:
            await service.close()
    progress = [entry for entry in logs if entry["event"] == "ingestion_progress"]
    assert [entry["done"] for entry in progress] == [1, 2, 3, 4]
    assert progress[-1]["failed"] == 1 and progress[-1]["remaining"] == 0


def _docx_bomb(megabytes: int) -> bytes:
    """A DOCX of a few hundred KB whose document part inflates to ``megabytes`` MB of XML (written part by part, so
    the test itself never holds it whole)."""
    paragraph = b"<w:p><w:r><w:t>" + b"A" * 200 + b"</w:t></w:r></w:p>"
    block = paragraph * (1024 * 1024 // len(paragraph))
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", zipfile.ZIP_DEFLATED, compresslevel=9) as archive:
        with archive.open("word/document.xml", "w", force_zip64=True) as member:
            member.write(b'<?xml version="1.0"?><w:document xmlns:w="http://schemas.openxmlformats.org/'
                         b'wordprocessingml/2006/main"><w:body>')
            for _ in range(megabytes):
                member.write(block)
            member.write(b"</w:body></w:document>")
    return buffer.getvalue()




async def test_bombs_and_poison_files_fail_alone_with_a_reason(harness: Harness, service: VectorStoreService) -> None:
    """A zip bomb is stopped by its decompressed size, not read whole; JSON nested 100k levels deep (which once
    raised an uncaught RecursionError and left the file in progress forever) fails; the worker goes on and still
    ingests the good file after them. The peak RSS of the whole ingestion stays within a fixed budget."""
    bomb = _docx_bomb(200)
    assert len(bomb) < 1024 * 1024
    deep = b"[" * 100_000 + b"]" * 100_000
    store = await service.create({"name": "hostile"}, tenant=TENANT)
    ids = {
        "bomb": await harness.files.add("bomb.docx", bomb, tenant=TENANT),
        "deep": await harness.files.add("deep.json", deep, tenant=TENANT),
        "deep_lines": await harness.files.add("deep.jsonl", b'{"a": 1}\n' + deep + b"\n", tenant=TENANT),
    }
    del bomb, deep
    before = reset_peak("self") * 1024
    await service.create_batch(store["id"], {"file_ids": list(ids.values())}, tenant=TENANT)
    await service.worker.wait_idle()
    peak_growth = status_kb("self", "VmHWM") * 1024 - before
    assert peak_growth < 300 * 1024 * 1024, f"peak RSS grew {peak_growth // (1024 * 1024)} MB"
    errors = {}
    for name, file_id in ids.items():
        row = await service.get_file(store["id"], file_id, tenant=TENANT)
        assert row["status"] == "failed", (name, row)
        errors[name] = row["last_error"]
    assert errors["bomb"]["code"] == "invalid_file" and "too large" in errors["bomb"]["message"]
    assert "nested too deeply" in errors["deep"]["message"]
    assert "Line 2" in errors["deep_lines"]["message"]
    good = await harness.files.add("after.txt", TEXT, tenant=TENANT)
    await service.create_batch(store["id"], {"file_ids": [good]}, tenant=TENANT)
    await service.worker.wait_idle()
    assert (await service.get_file(store["id"], good, tenant=TENANT))["status"] == "completed"


async def test_a_file_that_crashes_the_extractor_fails_instead_of_staying_in_progress(
        harness: Harness, service: VectorStoreService, monkeypatch: pytest.MonkeyPatch) -> None:
    """Any exception while extracting (not only the foreseen ones) fails that file with a reason."""
    from responses_bridge.services.files import ingestion

    def crash(*args: object) -> list[str]:
        raise RuntimeError("an extractor bug")

    monkeypatch.setattr(ingestion, "_extract_and_chunk", crash)
    store = await service.create({"name": "crash"}, tenant=TENANT)
    file_id = await harness.files.add("doc.txt", TEXT, tenant=TENANT)
    await service.create_batch(store["id"], {"file_ids": [file_id]}, tenant=TENANT)
    await service.worker.wait_idle()
    row = await service.get_file(store["id"], file_id, tenant=TENANT)
    assert row["status"] == "failed" and "RuntimeError" in row["last_error"]["message"]
