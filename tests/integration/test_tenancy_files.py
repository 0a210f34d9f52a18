"""Two tenants against every Files and Vector Stores endpoint of the HTTP door, with ``RESPONSES_BRIDGE_AUTH=header``
(the tenant is the ``x-tenant-id`` header): no read, list, search, attach, batch, cancel, update or delete of the
other tenant's objects, and the answer to "not yours" is byte for byte the answer to "does not exist" (the same
request again once the owner deleted the object). Then the per-tenant stored-bytes limit
(``RESPONSES_BRIDGE_TENANTS``), with two uploads at once."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from typing import Any

import aiohttp
import openai
import orjson
import pytest

from responses_bridge.demo.procs import ManagedProcess, wait_http
from tests.support.bridge import Sidecar, start_sidecar
from tests.support.sdk import async_sdk
from tests.support.sidecar_state import database_of, stored_files

pytestmark = pytest.mark.store_proven(
    "tests/integration/test_replicas_retrieval.py",
    "tests/unit/test_tenancy_files_store.py",
    "tests/unit/test_retrieval_index.py",
    "tests/integration/test_agents_automations_replicas.py",
    "tests/unit/test_uploads_service.py",
    "tests/integration/test_input_references.py",
    reason="every store/postgres line it covers on PostgreSQL is covered by the modules named (scripts/pg-coverage)",
)

A, B = "tenant-a", "tenant-b"
TINY = "tenant-tiny"  # may keep 3000 bytes of files
SECRET = ("The launch code of project lighthouse is amber falcon seven. It opens the north gate of the harbour "
          "depot, where the spare lamps are kept. ") * 8
OWN = "Tenant B keeps notes about turnips and smoked trout; nothing here concerns lighthouses. " * 8


@pytest.fixture(scope="module")
async def bridge(fake_upstream: str, tmp_path_factory: pytest.TempPathFactory) -> AsyncIterator[Sidecar]:
    env = {"RESPONSES_BRIDGE_AUTH": "header",
           "RESPONSES_BRIDGE_TENANTS": orjson.dumps({TINY: {"max_stored_bytes": 3000}}).decode()}
    process, http_port, _ = start_sidecar(str(tmp_path_factory.mktemp("tenancy-files")), fake_upstream, env=env,
                                          extproc=False)
    try:
        url = f"http://127.0.0.1:{http_port}"
        await wait_ready(url, process)
        yield Sidecar(fake_upstream, url, 0, process)
    finally:
        process.stop()


async def wait_ready(url: str, process: ManagedProcess) -> None:
    """Until ``/health`` answers a caller that names a tenant (with auth=header every request must)."""
    await wait_http(f"{url}/health", process=process, headers={"x-tenant-id": A})


def sdk(bridge: Sidecar, tenant: str) -> openai.AsyncOpenAI:
    return async_sdk(base_url=f"{bridge.http_url}/v1", api_key="sk-unused", max_retries=0, timeout=60,
                              default_headers={"x-tenant-id": tenant})


async def call(http: aiohttp.ClientSession, tenant: str, method: str, path: str,
               body: dict[str, Any] | None = None) -> tuple[int, bytes]:
    async with http.request(method, path, headers={"x-tenant-id": tenant},
                            data=orjson.dumps(body) if body is not None else None) as response:
        return response.status, await response.read()


async def settled(client: openai.AsyncOpenAI, store_id: str) -> None:
    for _ in range(600):
        store = await client.vector_stores.retrieve(store_id)
        if store.file_counts.in_progress == 0:
            return
        await asyncio.sleep(0.1)
    raise AssertionError(f"vector store {store_id} still ingesting")


async def files_on_disk(bridge: Sidecar) -> set[str]:
    """The stored bytes of every tenant (tests/support/stored_files.py: on disk or in PostgreSQL)."""
    return {name for name in await stored_files(database_of(bridge.process.argv)) if name.startswith("file-")}


async def test_no_tenant_reaches_anothers_files_or_vector_stores(bridge: Sidecar) -> None:
    async with sdk(bridge, A) as a, sdk(bridge, B) as b, \
            aiohttp.ClientSession(base_url=bridge.http_url) as http:
        file_a = (await a.files.create(file=("secret.txt", SECRET.encode()), purpose="assistants")).id
        file_a2 = (await a.files.create(file=("secret-2.txt", SECRET.encode()), purpose="assistants")).id
        file_b = (await b.files.create(file=("own.txt", OWN.encode()), purpose="assistants")).id
        store_a = (await a.vector_stores.create(name="a's", file_ids=[file_a])).id
        batch_a = (await a.vector_stores.file_batches.create(store_a, file_ids=[file_a2])).id
        store_b = (await b.vector_stores.create(name="b's", file_ids=[file_b])).id
        await settled(a, store_a)
        await settled(b, store_b)

        # lists and searches: only one's own
        assert [f.id async for f in b.files.list()] == [file_b]
        assert [s.id async for s in b.vector_stores.list()] == [store_b]
        assert sorted([f.id async for f in a.files.list()]) == sorted([file_a, file_a2])
        found = await b.vector_stores.search(store_b, query="launch code lighthouse amber falcon")
        assert {hit.file_id for hit in found.data} <= {file_b}
        hits = (await a.vector_stores.search(store_a, query="launch code amber falcon")).data
        assert hits and {hit.file_id for hit in hits} == {file_a, file_a2}

        # B against every endpoint naming A's objects
        requests: list[tuple[str, str, dict[str, Any] | None]] = [
            ("GET", f"/v1/files/{file_a}", None),
            ("GET", f"/v1/files/{file_a}/content", None),
            ("DELETE", f"/v1/files/{file_a}", None),
            ("GET", f"/v1/files?after={file_a}", None),
            ("GET", f"/v1/vector_stores/{store_a}", None),
            ("POST", f"/v1/vector_stores/{store_a}", {"name": "taken"}),
            ("GET", f"/v1/vector_stores?after={store_a}", None),
            ("GET", f"/v1/vector_stores?before={store_a}", None),
            ("POST", f"/v1/vector_stores/{store_a}/search", {"query": "launch code"}),
            ("GET", f"/v1/vector_stores/{store_a}/files", None),
            ("POST", f"/v1/vector_stores/{store_a}/files", {"file_id": file_b}),
            ("GET", f"/v1/vector_stores/{store_a}/files/{file_a}", None),
            ("POST", f"/v1/vector_stores/{store_a}/files/{file_a}", {"attributes": {"x": "y"}}),
            ("GET", f"/v1/vector_stores/{store_a}/files/{file_a}/content", None),
            ("DELETE", f"/v1/vector_stores/{store_a}/files/{file_a}", None),
            ("POST", f"/v1/vector_stores/{store_a}/file_batches", {"file_ids": [file_b]}),
            ("GET", f"/v1/vector_stores/{store_a}/file_batches/{batch_a}", None),
            ("POST", f"/v1/vector_stores/{store_a}/file_batches/{batch_a}/cancel", None),
            ("GET", f"/v1/vector_stores/{store_a}/file_batches/{batch_a}/files", None),
            ("DELETE", f"/v1/vector_stores/{store_a}", None),
            # A's file into B's own store: the file is A's, so it is not there for B
            ("POST", "/v1/vector_stores", {"file_ids": [file_a]}),
            ("POST", f"/v1/vector_stores/{store_b}/files", {"file_id": file_a}),
            ("POST", f"/v1/vector_stores/{store_b}/file_batches", {"file_ids": [file_a]}),
            ("POST", f"/v1/vector_stores/{store_b}/file_batches", {"files": [{"file_id": file_a}]}),
        ]
        not_yours = [await call(http, B, *request) for request in requests]
        for request, (status, body) in zip(requests, not_yours, strict=True):
            error = orjson.loads(body)["error"]
            assert status in (400, 404) and set(error) == {"message", "type", "param", "code"}, (request, body)
            assert (status == 404) == (error["code"] == "not_found"), (request, body)
        assert [status for status, _ in not_yours].count(400) == 3  # the three list cursors

        # nothing of A's moved: same store, same files, same batch, still found by A's search
        store = await a.vector_stores.retrieve(store_a)
        assert store.name == "a's" and store.file_counts.completed == 2 and store.file_counts.total == 2
        assert (await a.files.retrieve(file_a)).id == file_a
        assert (await a.files.content(file_a)).read() == SECRET.encode()
        assert (await a.vector_stores.files.retrieve(file_a, vector_store_id=store_a)).attributes == {}
        assert (await a.vector_stores.file_batches.retrieve(batch_a, vector_store_id=store_a)).status == "completed"
        assert (await b.vector_stores.retrieve(store_b)).file_counts.total == 1  # B attached nothing of A's
        hits = (await a.vector_stores.search(store_a, query="launch code amber falcon")).data
        assert hits and {hit.file_id for hit in hits} == {file_a, file_a2}

        # a file deleted by its owner leaves the owner's store, and no one else's
        await b.files.delete(file_b)
        assert (await a.vector_stores.retrieve(store_a)).file_counts.total == 2
        assert (await b.vector_stores.retrieve(store_b)).file_counts.total == 0

        # once A's objects are gone, B's same requests answer exactly as before: "does not exist"
        await a.files.delete(file_a)
        await a.files.delete(file_a2)
        await a.vector_stores.delete(store_a)
        missing = [await call(http, B, *request) for request in requests]
        assert missing == not_yours
        assert [await call(http, A, *request) for request in requests[:3]] == not_yours[:3]


async def test_stored_bytes_are_bounded_per_tenant(bridge: Sidecar) -> None:
    async with sdk(bridge, TINY) as tiny, sdk(bridge, A) as other, \
            aiohttp.ClientSession(base_url=bridge.http_url) as http:
        kept = await tiny.files.create(file=("a.bin", b"a" * 2000), purpose="user_data")
        before = await files_on_disk(bridge)
        form = aiohttp.FormData()
        form.add_field("purpose", "user_data")
        form.add_field("file", b"b" * 1500, filename="b.bin")
        async with http.post("/v1/files", data=form, headers={"x-tenant-id": TINY}) as response:
            status, body = response.status, await response.json()
        assert status == 400 and set(body) == {"error"}
        error = body["error"]
        assert (error["code"], error["type"], error["param"]) == ("storage_limit_exceeded", "invalid_request_error",
                                                                  "file")
        assert "3000 bytes" in error["message"] and "2000 bytes in use" in error["message"]
        assert await files_on_disk(bridge) == before  # nothing left behind
        assert [f.id async for f in tiny.files.list()] == [kept.id]
        with pytest.raises(openai.BadRequestError) as refused:
            await tiny.files.create(file=("c.bin", b"c" * 1001), purpose="user_data")
        assert refused.value.code == "storage_limit_exceeded"
        await other.files.create(file=("big.bin", b"x" * 5000), purpose="user_data")  # A has no limit
        await tiny.files.delete(kept.id)

        # two uploads at once, each alone within the limit, together over it: exactly one is stored
        before = await files_on_disk(bridge)
        outcomes = await asyncio.gather(*(tiny.files.create(file=(f"{n}.bin", bytes([65 + n]) * 2000),
                                                            purpose="user_data") for n in range(2)),
                                        return_exceptions=True)
        stored = [outcome for outcome in outcomes if not isinstance(outcome, BaseException)]
        failed = [outcome for outcome in outcomes if isinstance(outcome, BaseException)]
        assert len(stored) == 1 and len(failed) == 1, outcomes
        assert isinstance(failed[0], openai.BadRequestError) and failed[0].code == "storage_limit_exceeded"
        assert [f.id async for f in tiny.files.list()] == [stored[0].id]
        assert await files_on_disk(bridge) - before == {stored[0].id}
