"""Vector stores across replicas on one PostgreSQL (the fixtures of test_replicas.py): a store ingested through
replica A is searched through replica B, and ingestion cut short by A's death (SIGKILL) is finished by B with each
file indexed once (ingestion claims: one replica at a time per file, taken over once the dead one's lease passed).
"""

from __future__ import annotations

import asyncio
import os
from pathlib import Path

import openai

from responses_bridge.demo.procs import ManagedProcess, free_port, wait_http
from tests.integration.test_replicas import SHARED_ENV, database_url, pytestmark, replicas, sdk
from tests.support.bridge import PYTHON
from tests.support.postgres import PostgresServer
from tests.support.replicas import Replica, running_replica

__all__ = ["database_url", "pytestmark", "replicas"]  # the module fixtures, shared with test_replicas.py

# --- vector stores: ingestion claimed by one replica at a time ------------------------------------------------------

DOCS = {
    "freedonia.txt": "Freedonia is a small country. The capital of Freedonia is Zubrowka, on the river Vlatva.",
    "lighthouse.md": "# The lighthouse keeper\n\nThe keeper of the Skerryvore lighthouse winds the clockwork lamp "
                     "every four hours and logs each passing ship in a leather-bound book.",
}


async def settle_files(client: openai.AsyncOpenAI, store_id: str, count: int, timeout: float = 60) -> list:
    deadline = asyncio.get_running_loop().time() + timeout
    while True:
        files = [f async for f in client.vector_stores.files.list(store_id, limit=100)]
        if len(files) == count and all(f.status != "in_progress" for f in files):
            return files
        assert asyncio.get_running_loop().time() < deadline, [(f.id, f.status) for f in files]
        await asyncio.sleep(0.1)


async def test_a_vector_store_ingested_by_a_is_searched_by_b(replicas: list[Replica]) -> None:
    a, b = replicas
    async with sdk(a) as on_a, sdk(b) as on_b:
        ids = [(await on_a.files.create(file=(name, text.encode()), purpose="assistants")).id
               for name, text in DOCS.items()]
        store = await on_a.vector_stores.create(name="shared", file_ids=ids)
        files = await settle_files(on_a, store.id, len(ids))
        assert {f.status for f in files} == {"completed"}
        found = await on_b.vector_stores.search(store.id, query="capital of Freedonia")
        assert found.data and found.data[0].filename == "freedonia.txt"
        assert "Zubrowka" in found.data[0].content[0].text
        # the file's bytes, uploaded through A, are read through B
        content = await on_b.files.content(ids[1])
        assert content.read() == DOCS["lighthouse.md"].encode()


async def test_kill_a_during_ingestion_and_b_finishes_each_file_once(tmp_path: Path,
                                                                      postgres_server: PostgresServer) -> None:
    """A ingests (slowly: each embedding call waits) and is SIGKILLed with files still in progress; B, started
    afterwards on the same database, takes them over (those A held once their claim's lease has passed) and
    every file ends up completed with its chunk indexed once."""
    port = free_port()
    slow = ManagedProcess([PYTHON, "-m", "responses_bridge", "fake-upstream", "--port", str(port),
                           "--embedding-delay", "0.5"], "fake-upstream-slow-embeddings")
    slow.start()
    name = f"handover_{os.getpid()}"
    database = postgres_server.create_database(name)
    upstream = f"http://127.0.0.1:{port}/v1"
    env = {**SHARED_ENV, "RESPONSES_BRIDGE_EMBEDDING_MODEL": "fake-embedding",
           "RESPONSES_BRIDGE_EMBEDDING_URL": upstream, "RESPONSES_BRIDGE_INGEST_CONCURRENCY": "1",
           "RESPONSES_BRIDGE_INGEST_LEASE_SECONDS": "3"}  # A's claims lapse 3 s after its death
    words = ["amber", "basalt", "cobalt", "dahlia", "ember", "fjord", "garnet", "heron"]
    try:
        await wait_http(f"{upstream.removesuffix('/v1')}/health", process=slow)
        async with running_replica("a", tmp_path, upstream, database, env=env) as a, sdk(a) as on_a:
            ids = [(await on_a.files.create(file=(f"{word}.txt", f"The word of this file is {word}.".encode()),
                                            purpose="assistants")).id for word in words]
            store = await on_a.vector_stores.create(name="handover", file_ids=ids)
            deadline = asyncio.get_running_loop().time() + 60
            while True:  # some done, most not: kill A mid-way
                statuses = [f.status async for f in on_a.vector_stores.files.list(store.id, limit=100)]
                if statuses.count("completed") >= 1:
                    break
                assert asyncio.get_running_loop().time() < deadline, statuses
                await asyncio.sleep(0.05)
            a.kill()
        assert statuses.count("in_progress") >= 2, statuses  # the kill left work to hand over
        async with running_replica("b", tmp_path, upstream, database, env=env) as b, sdk(b) as on_b:
            files = await settle_files(on_b, store.id, len(words), timeout=120)
            assert {f.status for f in files} == {"completed"}
            finished = await on_b.vector_stores.retrieve(store.id)
            assert finished.file_counts.completed == len(words) and finished.file_counts.in_progress == 0
            for word, file_id in zip(words, ids, strict=True):
                found = await on_b.vector_stores.search(store.id, query=f"The word of this file is {word}",
                                                        max_num_results=50)
                mine = [hit for hit in found.data if hit.file_id == file_id]
                assert len(mine) == 1, (word, [hit.content[0].text for hit in mine])  # indexed once
    finally:
        slow.stop()
        postgres_server.drop_database(name)
