"""Deleting a file through ``DELETE /v1/files/{id}`` takes it out of every vector store holding it, as OpenAI
does: its vector store file rows go (counts and usage follow) and its chunks are no longer searchable."""

from __future__ import annotations

import asyncio
from typing import Any

import openai
import pytest

pytestmark = pytest.mark.store_proven(
    "tests/integration/test_replicas_retrieval.py",
    "tests/unit/test_tenancy_files_store.py",
    "tests/unit/test_retrieval_index.py",
    "tests/integration/test_agents_automations_replicas.py",
    "tests/unit/test_postgres_file_bytes.py",
    "tests/integration/test_input_references.py",
    reason="every store/postgres line it covers on PostgreSQL is covered by the modules named (scripts/pg-coverage)",
)

ZUBROWKA = b"Freedonia is a small country. The capital of Freedonia is Zubrowka, on the river Vlatva."
LIGHTHOUSE = b"The keeper of the Skerryvore lighthouse winds the clockwork lamp every four hours."


async def _settled(client: openai.AsyncOpenAI, store_id: str) -> Any:
    for _ in range(600):
        store = await client.vector_stores.retrieve(store_id)
        if store.file_counts.in_progress == 0:
            return store
        await asyncio.sleep(0.1)
    raise AssertionError(f"vector store {store_id} still ingesting")


async def test_deleted_file_leaves_every_vector_store(client: openai.AsyncOpenAI) -> None:
    capital = (await client.files.create(file=("capital.txt", ZUBROWKA), purpose="assistants")).id
    lamp = (await client.files.create(file=("lamp.txt", LIGHTHOUSE), purpose="assistants")).id
    both = await client.vector_stores.create(name="both", file_ids=[capital, lamp])
    alone = await client.vector_stores.create(name="alone", file_ids=[capital])
    untouched = await client.vector_stores.create(name="untouched", file_ids=[lamp])
    for store in (both, alone, untouched):
        assert (await _settled(client, store.id)).file_counts.completed == store.file_counts.total
    hits = [r.file_id async for r in await client.vector_stores.search(both.id, query="capital of Freedonia")]
    assert capital in hits

    deleted = await client.files.delete(capital)
    assert deleted.deleted and deleted.id == capital

    for store_id in (both.id, alone.id):
        with pytest.raises(openai.NotFoundError):
            await client.vector_stores.files.retrieve(capital, vector_store_id=store_id)
        with pytest.raises(openai.NotFoundError):
            await client.vector_stores.files.content(capital, vector_store_id=store_id)
        assert capital not in [f.id async for f in client.vector_stores.files.list(store_id)]
        found = await client.vector_stores.search(store_id, query="What is the capital of Freedonia? Zubrowka")
        assert capital not in {r.file_id async for r in found}
    after_both = await client.vector_stores.retrieve(both.id)
    assert (after_both.file_counts.total, after_both.file_counts.completed) == (1, 1)
    lamp_row = await client.vector_stores.files.retrieve(lamp, vector_store_id=both.id)
    assert after_both.usage_bytes == lamp_row.usage_bytes > 0
    after_alone = await client.vector_stores.retrieve(alone.id)
    assert after_alone.file_counts.total == 0 and after_alone.usage_bytes == 0

    # the other file and the store without the deleted file are as they were
    kept = [r.file_id async for r in await client.vector_stores.search(untouched.id, query="lighthouse lamp")]
    assert kept[:1] == [lamp]
    assert (await client.vector_stores.retrieve(untouched.id)).file_counts.total == 1
    with pytest.raises(openai.NotFoundError):
        await client.files.delete(capital)
    for store in (both, alone, untouched):
        await client.vector_stores.delete(store.id)


async def test_deleting_a_file_still_being_ingested(client: openai.AsyncOpenAI) -> None:
    text = b" ".join(b"paragraph %d about the walrus colony of Svalbard." % n for n in range(20_000))
    big = (await client.files.create(file=("walrus.txt", text), purpose="assistants")).id
    store = await client.vector_stores.create(name="pending", file_ids=[big])
    await client.files.delete(big)
    settled = await _settled(client, store.id)
    assert settled.file_counts.total == 0 and settled.usage_bytes == 0 and settled.status == "completed"
    assert [f.id async for f in client.vector_stores.files.list(store.id)] == []
    # a file added afterwards is ingested normally, and the deleted one never shows up in search
    seal = (await client.files.create(file=("seal.txt", b"Harbour seals haul out on the sandbank."),
                                      purpose="assistants")).id
    await client.vector_stores.files.create(store.id, file_id=seal)
    assert (await _settled(client, store.id)).file_counts.completed == 1
    await client.vector_stores.delete(store.id)
    await client.files.delete(seal)
