"""The Vector Stores API with the ``openai`` SDK, through both doors: stores, files, batches, search, and bad input
answered with OpenAI-shaped 4xx (hypothesis-generated requests against every vector store route)."""

from __future__ import annotations

import asyncio
from typing import Any

import aiohttp
import openai
import orjson
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tests.support.fuzz import HOSTILE_VALUE, IDS, ODD_SHORT, QUERY, Request, Tally, _encode, _path, _quote, mutated
from tests.support.memory import reset_peak, status_kb

pytestmark = pytest.mark.store_proven(
    "tests/integration/test_replicas_retrieval.py",
    "tests/unit/test_tenancy_files_store.py",
    "tests/unit/test_retrieval_index.py",
    "tests/unit/test_vector_stores_store.py",
    "tests/integration/test_input_references.py",
    reason="every store/postgres line it covers on PostgreSQL is covered by the modules named (scripts/pg-coverage)",
)

DOCS = {
    "freedonia.txt": "Freedonia is a small country. The capital of Freedonia is Zubrowka, on the river Vlatva. "
                     "Its national dish is a stew of turnips and smoked trout.",
    "lighthouse.md": "# The lighthouse keeper\n\nThe keeper of the Skerryvore lighthouse winds the clockwork lamp "
                     "every four hours and logs each passing ship in a leather-bound book.",
    "orchard.txt": "Apricot trees in the orchard flower in early spring; frost in March can destroy the whole "
                   "harvest, so growers light smudge pots between the rows.",
}
BROKEN = ("broken.pdf", b"%PDF-1.7\n\x00\x01 this is not a PDF at all \xff\xfe" * 20)


async def _upload(client: openai.AsyncOpenAI, name: str, data: bytes) -> str:
    uploaded = await client.files.create(file=(name, data), purpose="assistants")
    return uploaded.id


async def _settle_batch(client: openai.AsyncOpenAI, store_id: str, batch_id: str) -> Any:
    for _ in range(600):
        batch = await client.vector_stores.file_batches.retrieve(batch_id, vector_store_id=store_id)
        if batch.status != "in_progress":
            return batch
        await asyncio.sleep(0.1)
    raise AssertionError(f"batch {batch_id} still in progress: {batch}")


async def test_vector_store_crud_and_pages(client: openai.AsyncOpenAI) -> None:
    created = [await client.vector_stores.create(name=f"page-{n}", metadata={"n": str(n)}) for n in range(5)]
    assert all(store.status == "completed" and store.file_counts.total == 0 for store in created)
    first = await client.vector_stores.list(limit=2, order="desc")
    assert len(first.data) == 2 and first.has_more and first.data[0].id == created[-1].id
    walked = [store.id async for store in client.vector_stores.list(limit=2, order="asc",
                                                                     after=created[0].id)]
    assert walked[:4] == [store.id for store in created[1:]]
    before = await client.vector_stores.list(limit=2, order="desc", before=created[1].id)
    assert [store.id for store in before.data] == [created[3].id, created[2].id]

    store = created[0]
    fetched = await client.vector_stores.retrieve(store.id)
    assert fetched.name == "page-0" and fetched.metadata == {"n": "0"} and fetched.object == "vector_store"
    updated = await client.vector_stores.update(store.id, name="renamed",
                                                expires_after={"anchor": "last_active_at", "days": 3})
    assert updated.name == "renamed" and updated.metadata == {"n": "0"}
    assert updated.expires_after is not None and updated.expires_after.days == 3
    assert updated.expires_at == updated.last_active_at + 3 * 86_400
    for each in created:
        deleted = await client.vector_stores.delete(each.id)
        assert deleted.deleted and deleted.object == "vector_store.deleted"
    with pytest.raises(openai.NotFoundError):
        await client.vector_stores.retrieve(store.id)


async def test_files_batches_search_and_a_bad_file_failing_alone(client: openai.AsyncOpenAI) -> None:
    ids = {name: await _upload(client, name, text.encode()) for name, text in DOCS.items()}
    broken_id = await _upload(client, *BROKEN)
    store = await client.vector_stores.create(name="docs", chunking_strategy={"type": "auto"})
    batch = await client.vector_stores.file_batches.create(
        store.id, files=[{"file_id": ids["freedonia.txt"], "attributes": {"topic": "geography", "year": 2020}},
                         {"file_id": broken_id, "attributes": {"topic": "broken"}},
                         {"file_id": ids["lighthouse.md"], "attributes": {"topic": "sea", "year": 1999}}])
    assert batch.object == "vector_store.files_batch" and batch.file_counts.total == 3
    batch = await _settle_batch(client, store.id, batch.id)
    assert batch.status == "completed"
    assert (batch.file_counts.completed, batch.file_counts.failed, batch.file_counts.in_progress) == (2, 1, 0)

    broken = await client.vector_stores.files.retrieve(broken_id, vector_store_id=store.id)
    assert broken.status == "failed" and broken.last_error is not None
    assert broken.last_error.code in ("invalid_file", "unsupported_file") and broken.last_error.message
    failed = await client.vector_stores.files.list(store.id, filter="failed")
    assert [f.id for f in failed.data] == [broken_id]
    in_batch = await client.vector_stores.file_batches.list_files(batch.id, vector_store_id=store.id,
                                                                  order="asc", limit=2)
    assert [f.id for f in in_batch.data] == [ids["freedonia.txt"], broken_id] and in_batch.has_more

    single = await client.vector_stores.files.create(store.id, file_id=ids["orchard.txt"],
                                                      attributes={"topic": "farming"},
                                                      chunking_strategy={"type": "static", "static": {
                                                          "max_chunk_size_tokens": 200, "chunk_overlap_tokens": 50}})
    assert single.status == "in_progress" and single.object == "vector_store.file"
    for _ in range(600):
        single = await client.vector_stores.files.retrieve(ids["orchard.txt"], vector_store_id=store.id)
        if single.status != "in_progress":
            break
        await asyncio.sleep(0.1)
    assert single.status == "completed" and single.usage_bytes > 0
    assert single.chunking_strategy is not None and single.chunking_strategy.type == "static"

    whole = await client.vector_stores.retrieve(store.id)
    assert whole.status == "completed"
    assert (whole.file_counts.completed, whole.file_counts.failed, whole.file_counts.total) == (3, 1, 4)
    files = [f async for f in client.vector_stores.files.list(store.id, limit=1)]
    assert whole.usage_bytes == sum(f.usage_bytes for f in files) > 0

    content = [part async for part in await client.vector_stores.files.content(ids["freedonia.txt"],
                                                                                vector_store_id=store.id)]
    assert content and "Zubrowka" in " ".join(part.text or "" for part in content)

    found = await client.vector_stores.search(store.id, query="What is the capital of Freedonia?")
    results = [result async for result in found]
    assert results and results[0].file_id == ids["freedonia.txt"] and results[0].filename == "freedonia.txt"
    assert 0 <= results[0].score <= 1 and results[0].attributes == {"topic": "geography", "year": 2020}
    filtered = await client.vector_stores.search(store.id, query="lighthouse keeper lamp",
                                                 filters={"type": "eq", "key": "topic", "value": "geography"})
    assert {r.file_id async for r in filtered} <= {ids["freedonia.txt"]}

    updated = await client.vector_stores.files.update(ids["lighthouse.md"], vector_store_id=store.id,
                                                      attributes={"topic": "coast"})
    assert updated.attributes == {"topic": "coast"}
    coast = await client.vector_stores.search(store.id, query="lighthouse keeper lamp",
                                              filters={"type": "eq", "key": "topic", "value": "coast"})
    assert [r.file_id async for r in coast][:1] == [ids["lighthouse.md"]]

    removed = await client.vector_stores.files.delete(ids["lighthouse.md"], vector_store_id=store.id)
    assert removed.deleted and removed.object == "vector_store.file.deleted"
    after = await client.vector_stores.search(store.id, query="lighthouse keeper lamp")
    assert ids["lighthouse.md"] not in {r.file_id async for r in after}
    assert (await client.vector_stores.retrieve(store.id)).file_counts.total == 3
    await client.vector_stores.delete(store.id)


async def test_create_with_file_ids_and_cancel(client: openai.AsyncOpenAI) -> None:
    ids = [await _upload(client, f"note{n}.txt", f"note number {n} about walruses".encode()) for n in range(3)]
    store = await client.vector_stores.create(file_ids=ids[:2], expires_after={"anchor": "last_active_at",
                                                                                "days": 1})
    assert store.file_counts.total == 2 and store.expires_at is not None
    batch = await client.vector_stores.file_batches.create(store.id, file_ids=[ids[2]])
    cancelled = await client.vector_stores.file_batches.cancel(batch.id, vector_store_id=store.id)
    # a cancel that reaches the file while it is queued or running stops it; one that comes after leaves the
    # finished batch as it ended
    assert cancelled.file_counts.cancelled + cancelled.file_counts.completed == 1
    assert cancelled.status == ("cancelled" if cancelled.file_counts.cancelled else "completed")
    settled = await _settle_batch(client, store.id, batch.id)
    assert settled.status == cancelled.status and settled.file_counts.in_progress == 0
    await client.vector_stores.delete(store.id)


async def test_errors_are_openai_shaped(client: openai.AsyncOpenAI, http: aiohttp.ClientSession) -> None:
    store = await client.vector_stores.create(name="errors")
    with pytest.raises(openai.NotFoundError) as missing:
        await client.vector_stores.files.create(store.id, file_id="file-missing")
    assert missing.value.body["param"] == "file_id"  # type: ignore[index]
    with pytest.raises(openai.BadRequestError) as bad:
        await client.vector_stores.create(chunking_strategy={"type": "static", "static": {
            "max_chunk_size_tokens": 100, "chunk_overlap_tokens": 90}})
    assert bad.value.body["param"].startswith("chunking_strategy")  # type: ignore[index]
    with pytest.raises(openai.BadRequestError) as bad:
        await client.vector_stores.search(store.id, query="x", max_num_results=51)
    assert bad.value.body["param"] == "max_num_results"  # type: ignore[index]
    with pytest.raises(openai.BadRequestError):
        await client.vector_stores.search(store.id, query="x", filters={"type": "near", "key": "a", "value": 1})
    with pytest.raises(openai.BadRequestError) as bad:
        await client.vector_stores.list(limit=1000)
    assert bad.value.body["param"] == "limit"  # type: ignore[index]
    with pytest.raises(openai.BadRequestError) as bad:
        await client.vector_stores.files.list(store.id, filter="done")  # type: ignore[arg-type]
    assert bad.value.body["param"] == "filter"  # type: ignore[index]
    async with http.post(f"/v1/vector_stores/{store.id}/search", data=b"{not json") as answer:
        assert answer.status == 400 and set((await answer.json())["error"]) == {"message", "type", "param", "code"}
    async with http.get("/v1/vector_stores/vs_missing/file_batches/vsfb_missing") as answer:
        assert answer.status == 404 and (await answer.json())["error"]["param"] == "vector_store_id"
    await client.vector_stores.delete(store.id)


# -- generated requests -----------------------------------------------------------------------------------------

EXAMPLES = 150
_ATTRS = st.dictionaries(st.text(max_size=6), st.one_of(st.text(max_size=6), st.integers(), st.booleans()),
                         max_size=3)
_CHUNKING = st.one_of(st.just({"type": "auto"}), st.fixed_dictionaries({
    "type": st.just("static"), "static": st.fixed_dictionaries({
        "max_chunk_size_tokens": st.integers(50, 5000), "chunk_overlap_tokens": st.integers(-5, 3000)})}))
_STORE = st.fixed_dictionaries({}, optional={
    "name": st.text(max_size=10), "metadata": st.dictionaries(st.text(max_size=5), st.text(max_size=5), max_size=3),
    "expires_after": st.fixed_dictionaries({"anchor": st.just("last_active_at"), "days": st.integers(-2, 400)}),
    "chunking_strategy": _CHUNKING})
_FILTER = st.recursive(
    st.fixed_dictionaries({"type": st.sampled_from(["eq", "ne", "gt", "gte", "lt", "lte", "in", "nin", "like"]),
                           "key": st.text(max_size=5),
                           "value": st.one_of(st.text(max_size=5), st.integers(),
                                              st.lists(st.integers(), max_size=2))}),
    lambda inner: st.fixed_dictionaries({"type": st.sampled_from(["and", "or", "xor"]),
                                         "filters": st.lists(inner, max_size=3)}), max_leaves=5)
_SEARCH = st.fixed_dictionaries({"query": st.one_of(st.text(max_size=20), st.lists(st.text(max_size=8), max_size=3))},
                                optional={"max_num_results": st.integers(-1, 60), "filters": _FILTER,
                                          "rewrite_query": st.booleans(),
                                          "ranking_options": st.fixed_dictionaries({}, optional={
                                              "ranker": st.sampled_from(["auto", "none", "default-2024-11-15", "x"]),
                                              "score_threshold": st.floats(-1, 2)})})


def _requests(store_id: str, file_id: str) -> st.SearchStrategy[Request]:
    file_ids = st.lists(st.one_of(st.just(file_id), IDS), max_size=3)
    bodies: dict[str, st.SearchStrategy[Any]] = {
        "POST /v1/vector_stores": mutated(_STORE.map(lambda b: {**b, "file_ids": []}),
                                          ("name", "metadata", "expires_after", "file_ids", "chunking_strategy")),
        "POST /v1/vector_stores/{id}": mutated(_STORE, ("name", "metadata", "expires_after")),
        "POST /v1/vector_stores/{id}/search": mutated(_SEARCH, ("query", "filters", "max_num_results",
                                                                 "ranking_options", "rewrite_query")),
        "POST /v1/vector_stores/{id}/files": mutated(
            st.fixed_dictionaries({"file_id": st.one_of(st.just(file_id), IDS)},
                                  optional={"attributes": _ATTRS, "chunking_strategy": _CHUNKING}),
            ("file_id", "attributes", "chunking_strategy")),
        "POST /v1/vector_stores/{id}/files/{item}": mutated(st.fixed_dictionaries({"attributes": _ATTRS}),
                                                            ("attributes",)),
        "POST /v1/vector_stores/{id}/file_batches": mutated(
            st.one_of(st.fixed_dictionaries({"file_ids": file_ids}, optional={"attributes": _ATTRS}),
                      st.fixed_dictionaries({"files": st.lists(st.fixed_dictionaries(
                          {"file_id": st.one_of(st.just(file_id), IDS)}, optional={"attributes": _ATTRS,
                                                                                    "chunking_strategy": _CHUNKING}),
                          max_size=3)})),
            ("file_ids", "files", "attributes", "chunking_strategy")),
    }
    no_body = ["GET /v1/vector_stores", "GET /v1/vector_stores/{id}", "GET /v1/vector_stores/{id}/files",
               "GET /v1/vector_stores/{id}/files/{item}", "GET /v1/vector_stores/{id}/files/{item}/content",
               "GET /v1/vector_stores/{id}/file_batches/{item}", "GET /v1/vector_stores/{id}/file_batches/{item}/files",
               "POST /v1/vector_stores/{id}/file_batches/{item}/cancel"]
    ident = st.one_of(st.just(store_id), st.just(store_id), IDS)
    query = st.one_of(QUERY, st.dictionaries(st.just("filter"), st.one_of(ODD_SHORT, st.sampled_from(
        ["completed", "failed", "in_progress", "cancelled"])), max_size=1))

    def path(template: str, store: str, item: str, params: dict[str, str]) -> str:
        return _path(template.replace("{item}", item), store, params)  # item: already quoted

    def with_body(route: str) -> st.SearchStrategy[Request]:
        method, template = route.split(" ", 1)
        raw = st.one_of(bodies[route].map(_encode), bodies[route].map(_encode), st.binary(max_size=30),
                        HOSTILE_VALUE.map(_encode))
        return st.builds(lambda s, i, q, body: Request(method, path(template, s, i, q), body,
                                                       (("Content-Type", "application/json"),)),
                         ident, st.one_of(st.just(file_id), IDS.map(_quote)), query, raw)

    def without_body(route: str) -> st.SearchStrategy[Request]:
        method, template = route.split(" ", 1)
        return st.builds(lambda s, i, q: Request(method, path(template, s, i, q)), ident,
                         st.one_of(st.just(file_id), IDS.map(_quote)), query)

    return st.one_of([with_body(route) for route in bodies] + [without_body(route) for route in no_body])


def _run(tally: Tally, store_id: str, file_id: str) -> Tally:
    @settings(max_examples=EXAMPLES, derandomize=True, database=None, deadline=None, print_blob=False,
              suppress_health_check=list(HealthCheck))
    @given(_requests(store_id, file_id))
    def one(request: Request) -> None:
        tally.send(request)

    one()
    return tally


async def test_generated_requests_get_openai_shaped_answers(client: openai.AsyncOpenAI, base_url: str) -> None:
    file_id = await _upload(client, "fuzz.txt", b"fuzzing vector store routes with generated requests")
    store = await client.vector_stores.create(name="fuzz", file_ids=[file_id])
    tally = await asyncio.to_thread(_run, Tally(base_url), store.id, file_id)  # raises on the first broken promise
    assert tally.sent >= EXAMPLES
    assert sum(n for status, n in tally.statuses.items() if 400 <= status < 500) > 0
    assert sum(n for status, n in tally.statuses.items() if status < 300) > 0
    await client.vector_stores.retrieve(store.id)  # the store survived whatever was sent at it



async def test_a_huge_search_query_is_refused_while_health_keeps_answering(client: openai.AsyncOpenAI, base_url: str,
                                                                          sidecar: Any) -> None:
    """A 30 MB query once held the event loop for 12-19 s (every tenant and /health with it) and took 2.6 GB:
    now it is a 400 naming the field, /health answers meanwhile, and the sidecar's peak RSS stays in budget."""
    store = await client.vector_stores.create(name="huge-query")
    body = orjson.dumps({"query": "freedonia capital " * (30 * 1024 * 1024 // 18)})
    pid = sidecar.process.pid
    before = reset_peak(pid)  # the peak RSS (VmHWM) starts again from here
    timeout = aiohttp.ClientTimeout(total=120)
    async with aiohttp.ClientSession(timeout=timeout) as session:
        async def search() -> tuple[int, dict[str, Any]]:
            async with session.post(f"{base_url}/v1/vector_stores/{store.id}/search", data=body,
                                    headers={"Content-Type": "application/json"}) as response:
                return response.status, await response.json()

        async def health_while(pending: asyncio.Task[Any]) -> int:
            answered = 0
            while not pending.done():  # a liveness probe's view: each check answers (a hang bound, not a timing)
                async with session.get(f"{sidecar.http_url}/health",
                                       timeout=aiohttp.ClientTimeout(total=5)) as response:
                    assert response.status == 200
                    answered += 1
                await asyncio.sleep(0.05)
            return answered

        searching = asyncio.create_task(search())
        await health_while(searching)
        status, answer = await searching
    assert status == 400, answer
    assert answer["error"]["param"] == "query" and answer["error"]["code"] == "string_above_max_length"
    growth_mb = (status_kb(pid, "VmHWM") - before) // 1024
    assert growth_mb < 300, f"the sidecar's peak RSS grew {growth_mb} MB"
    queries = [" ".join(["freedonia"] * 1600), "capital"]  # a long query within the limit, in a list, is fine
    results = await client.vector_stores.search(store.id, query=queries)
    assert results.data == []
