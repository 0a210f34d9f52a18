"""Tenancy in the Files and Vector Stores services and the ``file_search`` tool, over a real SQLite file: another
tenant's file or vector store is the same 404 as a missing one, the tool of one tenant never finds another's
chunks, and ``max_stored_bytes`` bounds a tenant's live file bytes, concurrent uploads included, leaving nothing
behind when it refuses."""

from __future__ import annotations

import asyncio
import os
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path
from typing import Any

import pytest

from responses_bridge.demo import fake_upstream
from responses_bridge.engine.responses.request_translation import build_chat_request
from responses_bridge.protocol.errors import APIError
from responses_bridge.run.server_tools import ServerToolRun, ServerTools, ServerToolServices
from responses_bridge.run.tools.file_search import FileSearchToolOptions, run_file_search
from responses_bridge.run.tools.mcp import MCPLimits, MCPTools
from responses_bridge.services.files.files import FileService
from responses_bridge.services.files.retrieval.embedders import LocalStaticEmbedder
from responses_bridge.services.files.vector_stores import VectorStoreService
from responses_bridge.store import SQLiteResponseStore
from responses_bridge.store.sqlite.files.chunks import SQLiteChunkIndex
from responses_bridge.store.sqlite.files.files import SQLiteFileStore
from responses_bridge.store.sqlite.files.vector_stores import SQLiteVectorStoreStore
from tests.unit.test_server_tool_turns import end, text, tool
from tests.unit.test_server_tools_executor import OPTIONS, Loop, item

A, B = "tenant-a", "tenant-b"
S = "tenant-small"  # may keep 100 bytes; the others have no limit
LIMITS = {S: 100}
SECRET = b"The launch code of project lighthouse is amber falcon seven. " * 20
OWN = b"Tenant B keeps notes about turnips and smoked trout in its own store. " * 20


@pytest.fixture
async def db(tmp_path: Path) -> AsyncIterator[SQLiteResponseStore]:
    async with SQLiteResponseStore(str(tmp_path / "bridge.db")) as opened:
        yield opened


async def started(db: SQLiteResponseStore, directory: Path) -> FileService:
    files = FileService(SQLiteFileStore(db), directory, 1 << 20, purge_interval=0,
                        max_stored_bytes=lambda tenant: LIMITS.get(tenant))
    await files.start()
    return files


@pytest.fixture
async def files(db: SQLiteResponseStore, tmp_path: Path) -> AsyncIterator[FileService]:
    service = await started(db, tmp_path / "files")
    yield service
    await service.aclose()


@pytest.fixture
async def vector_stores(db: SQLiteResponseStore, files: FileService) -> AsyncIterator[VectorStoreService]:
    service = VectorStoreService(SQLiteVectorStoreStore(db), files, SQLiteChunkIndex(db), LocalStaticEmbedder())
    await service.start()
    yield service
    await service.close()


async def upload(files: FileService, data: bytes, tenant: str, *, chunk: int = 10) -> dict[str, Any]:
    async with files.receive(tenant=tenant) as received:
        for start in range(0, len(data), chunk):
            await received.write(data[start:start + chunk])
        return await files.create(received, filename="doc.txt", purpose="assistants", expires_after=None)


async def refusal(call: Awaitable[Any]) -> APIError:
    with pytest.raises(APIError) as raised:
        await call
    return raised.value


def on_disk(files: FileService) -> list[str]:
    return sorted(os.listdir(files.directory))


class TenantLoop(Loop):
    """The tool loop of a run owned by ``tenant``."""

    def __init__(self, services: ServerToolServices, request: dict[str, Any], *, tenant: str) -> None:
        super().__init__(services, request)
        self.tenant = tenant

    async def prepare(self) -> ServerToolRun:
        self.run = await ServerTools(self.services).prepare(self.request, self.history, self.plan, self.builder,
                                                            tenant=self.tenant)
        self.builder.lifecycle("response.created")
        self.builder.lifecycle("response.in_progress")
        body = build_chat_request(self.request, self.history, OPTIONS, self.plan)
        body["messages"].extend(self.run.first_turn_messages(OPTIONS))
        fake_upstream.validate_chat_request(body)
        self.bodies.append(body)
        return self.run


# -- files --------------------------------------------------------------------------------------------------------

async def test_another_tenants_file_is_the_same_404_as_a_missing_one(files: FileService) -> None:
    mine = await upload(files, b"tenant a's bytes", A)
    calls: list[Callable[[str], Awaitable[Any]]] = [
        lambda file_id: files.retrieve(file_id, tenant=B), lambda file_id: files.open_content(file_id, tenant=B),
        lambda file_id: files.delete(file_id, tenant=B)]
    not_yours = [(await refusal(call(mine["id"]))).body() for call in calls]
    assert await files.retrieve(mine["id"], tenant=A) == mine  # B's delete took nothing
    assert (await files.list(tenant=B, purpose=None, after=None, limit=100, order="asc"))["data"] == []
    cursor = await refusal(files.list(tenant=B, purpose=None, after=mine["id"], limit=10, order="asc"))
    await files.delete(mine["id"], tenant=A)
    missing = [(await refusal(call(mine["id"]))).body() for call in calls]
    assert not_yours == missing and all(b'"code":"not_found"' in body for body in missing)
    gone = await refusal(files.list(tenant=A, purpose=None, after=mine["id"], limit=10, order="asc"))
    assert cursor.body() == gone.body()


async def test_an_upload_over_the_tenants_stored_bytes_is_refused_and_leaves_nothing(files: FileService) -> None:
    kept = await upload(files, b"x" * 60, S)
    refused = await refusal(upload(files, b"y" * 50, S))
    assert (refused.status, refused.type, refused.code, refused.param) == (
        400, "invalid_request_error", "storage_limit_exceeded", "file")
    assert "100 bytes" in refused.message and "60 bytes in use" in refused.message
    assert on_disk(files) == [kept["id"]]  # no partial upload, no stored bytes
    assert [f["id"] for f in (await files.list(tenant=S, purpose=None, after=None, limit=10, order="asc"))["data"]] \
        == [kept["id"]]
    assert files.quota._reserved == {}  # the refused upload gave its reservation back
    assert (await upload(files, b"z" * 40, S))["bytes"] == 40  # exactly up to the limit
    await refusal(upload(files, b"!", S))
    await upload(files, b"b" * 500, B)  # another tenant's limit (none) is its own
    await files.delete(kept["id"], tenant=S)
    assert (await upload(files, b"w" * 60, S))["bytes"] == 60  # deleting frees the room


async def test_two_uploads_at_once_cannot_both_pass_the_limit(files: FileService) -> None:
    """Chunk by chunk in turn: each chunk is reserved before it is written, so the one that crosses the limit
    is refused while both are under way, and the other completes."""
    first_cm, second_cm = files.receive(tenant=S), files.receive(tenant=S)
    first, second = await first_cm.__aenter__(), await second_cm.__aenter__()
    for _ in range(5):
        await first.write(b"1" * 10)
        await second.write(b"2" * 10)
    refused = await refusal(first.write(b"1" * 10))
    assert refused.code == "storage_limit_exceeded" and "50 bytes in use" in refused.message  # the other's
    await first_cm.__aexit__(APIError, refused, None)
    await second.write(b"2" * 10)  # the refused upload's room is free again
    created = await files.create(second, filename="two.txt", purpose="assistants", expires_after=None)
    await second_cm.__aexit__(None, None, None)
    assert created["bytes"] == 60 and on_disk(files) == [created["id"]]
    assert await files.store.stored_bytes(0, tenant=S) == 60 and files.quota._reserved == {}


async def test_a_file_whose_row_is_in_but_whose_insert_has_not_returned_counts_once(
        files: FileService, monkeypatch: pytest.MonkeyPatch) -> None:
    """Between the insert's commit and its return (a round trip on PostgreSQL) the row already counts its bytes
    and the upload still holds its reservation: another upload's read then must count them once, not refuse a
    fitting upload by counting them twice (nor pass the limit by counting them not at all)."""
    committed, returned = asyncio.Event(), asyncio.Event()
    add_file = files.store.add_file

    async def slow_return(*args: Any, **kwargs: Any) -> None:
        await add_file(*args, **kwargs)
        committed.set()
        await returned.wait()

    monkeypatch.setattr(files.store, "add_file", slow_return)
    async with files.receive(tenant=S) as first, files.receive(tenant=S) as second:
        await first.write(b"1" * 60)
        creating = asyncio.create_task(files.create(first, filename="one.txt", purpose="assistants",
                                                    expires_after=None))
        await committed.wait()
        assert await files.store.stored_bytes(0, tenant=S) == 60 and first.reserved == 60
        writing = asyncio.create_task(second.write(b"2" * 40))  # exactly up to the limit: it fits
        await asyncio.sleep(0.01)
        returned.set()
        await writing
        assert (await creating)["bytes"] == 60 and first.reserved == 0 and second.reserved == 40
        assert (await refusal(second.write(b"2"))).code == "storage_limit_exceeded"  # and not a byte past it


async def test_the_store_holds_the_limit_across_processes(db: SQLiteResponseStore, tmp_path: Path) -> None:
    """Two processes sharing the database each see only their own uploads under way: the insert's own check
    refuses the second whole upload, and its bytes are removed."""
    one, two = await started(db, tmp_path / "files"), await started(db, tmp_path / "files")
    try:
        one_cm, two_cm = one.receive(tenant=S), two.receive(tenant=S)
        first, second = await one_cm.__aenter__(), await two_cm.__aenter__()
        await first.write(b"1" * 60)
        await second.write(b"2" * 60)
        created = await one.create(first, filename="one.txt", purpose="assistants", expires_after=None)
        await one_cm.__aexit__(None, None, None)
        refused = await refusal(two.create(second, filename="two.txt", purpose="assistants", expires_after=None))
        await two_cm.__aexit__(APIError, refused, None)
        assert refused.code == "storage_limit_exceeded" and "60 bytes in use" in refused.message
        assert on_disk(one) == [created["id"]]
        assert await one.store.stored_bytes(0, tenant=S) == 60
    finally:
        await one.aclose()
        await two.aclose()


# -- vector stores --------------------------------------------------------------------------------------------

async def test_another_tenants_vector_store_is_the_same_404_as_a_missing_one(
        files: FileService, vector_stores: VectorStoreService) -> None:
    file_a = (await upload(files, SECRET, A, chunk=4096))["id"]
    file_b = (await upload(files, OWN, B, chunk=4096))["id"]
    store = await vector_stores.create({"name": "a's", "file_ids": [file_a]}, tenant=A)
    batch = await vector_stores.create_batch(store["id"], {"file_ids": [file_a]}, tenant=A)
    await vector_stores.worker.wait_idle()
    vs, f, bt = store["id"], file_a, batch["id"]
    page = {"limit": 20, "order": "asc", "after": None, "before": None}
    calls: list[Callable[[], Awaitable[Any]]] = [
        lambda: vector_stores.get(vs, tenant=B),
        lambda: vector_stores.update(vs, {"name": "mine now"}, tenant=B),
        lambda: vector_stores.add_file(vs, {"file_id": file_b}, tenant=B),
        lambda: vector_stores.list_files(vs, tenant=B, status=None, **page),
        lambda: vector_stores.get_file(vs, f, tenant=B),
        lambda: vector_stores.update_file(vs, f, {"attributes": {"x": 1}}, tenant=B),
        lambda: vector_stores.file_content(vs, f, tenant=B),
        lambda: vector_stores.delete_file(vs, f, tenant=B),
        lambda: vector_stores.create_batch(vs, {"file_ids": [file_b]}, tenant=B),
        lambda: vector_stores.get_batch(vs, bt, tenant=B),
        lambda: vector_stores.cancel_batch(vs, bt, tenant=B),
        lambda: vector_stores.list_files(vs, tenant=B, status=None, batch_id=bt, **page),
        lambda: vector_stores.search_store(vs, {"query": "launch code"}, tenant=B),
        lambda: vector_stores.delete(vs, tenant=B),
    ]
    not_yours = [(await refusal(call())).body() for call in calls]
    assert (await vector_stores.list_stores(tenant=B, **page))["data"] == []
    cursor = await refusal(vector_stores.list_stores(tenant=B, limit=20, order="asc", after=vs, before=None))
    # A's store is as it was
    mine = await vector_stores.get(vs, tenant=A)
    assert mine["name"] == "a's" and mine["file_counts"]["completed"] == 1
    assert (await vector_stores.search_store(vs, {"query": "launch code"}, tenant=A))["data"]
    assert (await vector_stores.delete(vs, tenant=A))["deleted"]
    missing = [(await refusal(call())).body() for call in calls]
    assert not_yours == missing and all(b'"code":"not_found"' in body for body in missing)
    assert cursor.body() == (await refusal(vector_stores.list_stores(tenant=A, limit=20, order="asc", after=vs,
                                                                     before=None))).body()


async def test_attaching_another_tenants_file_is_the_same_404_as_a_missing_file(
        files: FileService, vector_stores: VectorStoreService) -> None:
    file_a = (await upload(files, SECRET, A, chunk=4096))["id"]
    store = (await vector_stores.create({}, tenant=B))["id"]
    attempts: list[Callable[[str], Awaitable[Any]]] = [
        lambda file_id: vector_stores.create({"file_ids": [file_id]}, tenant=B),
        lambda file_id: vector_stores.add_file(store, {"file_id": file_id}, tenant=B),
        lambda file_id: vector_stores.create_batch(store, {"file_ids": [file_id]}, tenant=B),
        lambda file_id: vector_stores.create_batch(store, {"files": [{"file_id": file_id}]}, tenant=B)]
    not_yours = [(await refusal(attempt(file_a))).body() for attempt in attempts]
    await files.delete(file_a, tenant=A)
    missing = [(await refusal(attempt(file_a))).body() for attempt in attempts]
    assert not_yours == missing and all(b'"code":"not_found"' in body for body in missing)
    assert (await vector_stores.list_stores(tenant=B, limit=20, order="asc", after=None, before=None))["data"][0][
        "file_counts"]["total"] == 0


async def test_the_file_search_tool_of_one_tenant_never_finds_anothers_chunks(
        files: FileService, vector_stores: VectorStoreService) -> None:
    store_a = (await vector_stores.create({"file_ids": [(await upload(files, SECRET, A, chunk=4096))["id"]]},
                                          tenant=A))["id"]
    store_b = (await vector_stores.create({"file_ids": [(await upload(files, OWN, B, chunk=4096))["id"]]},
                                          tenant=B))["id"]
    await vector_stores.worker.wait_idle()
    tool_of = FileSearchToolOptions.from_tool
    found = await run_file_search(vector_stores, ["launch code lighthouse"],
                                  tool_of({"type": "file_search", "vector_store_ids": [store_a]}, 0), tenant=A)
    assert found and "amber falcon" in found[0].text
    # B naming A's store: the same failure as an unknown store, nothing of A's shown to the model
    services = ServerToolServices(MCPTools(MCPLimits()), file_search=vector_stores)
    outputs = []
    for ids in ([store_a, store_b], ["vs_unknown", store_b]):
        loop = TenantLoop(services, {"input": "x", "tools": [{"type": "file_search", "vector_store_ids": ids}],
                               "include": ["file_search_call.results"]}, tenant=B)
        await loop.prepare()
        turn, outcome = await loop.step([tool(0, id="c1", name="file_search",
                                              arguments='{"query": "launch code lighthouse amber falcon"}'),
                                         *end("tool_calls", 3, 3)])
        outputs.append(outcome.results[0].content.replace(ids[0], "<id>"))
        assert item(loop, turn.calls[0].output_index)["status"] == "failed"
        await loop.step([text("nothing"), *end("stop", 3, 3)])
        loop.finish()
    assert outputs[0] == outputs[1] == "The file search failed: No vector store found with id '<id>'."
    assert "falcon seven" not in loop.raw.decode()  # the query has the words; the chunk never shows
    # B's own store answers B, and never with A's chunk
    loop = TenantLoop(services, {"input": "x", "tools": [{"type": "file_search", "vector_store_ids": [store_b]}]},
                tenant=B)
    await loop.prepare()
    _, outcome = await loop.step([tool(0, id="c1", name="file_search",
                                       arguments='{"query": "launch code lighthouse amber falcon turnips"}'),
                                  *end("tool_calls", 3, 3)])
    assert "turnips" in outcome.results[0].content and "falcon seven" not in outcome.results[0].content
    await loop.step([text("done"), *end("stop", 3, 3)])
    loop.finish()
