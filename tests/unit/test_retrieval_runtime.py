"""The runtime carries the chunk index (on its own database) and the configured embedder, and the two search
together: with the local model, and with an embedding model served by the (fake) upstream."""

from __future__ import annotations

from pathlib import Path

from responses_bridge.config.settings import Settings
from responses_bridge.demo import fake_server
from responses_bridge.protocol.files.search_options import SearchOptions
from responses_bridge.serve import open_runtime
from responses_bridge.services.files.retrieval.embedders import LocalStaticEmbedder, UpstreamEmbedder
from responses_bridge.services.files.retrieval.search import search
from responses_bridge.store.base import DEFAULT_TENANT
from responses_bridge.store.sqlite.files.chunks import SQLiteChunkIndex
from responses_bridge.store.sqlite.files.vector_stores import SQLiteVectorStoreStore
from tools.bench.retrieval import new_store

TEXTS = ["The lighthouse keeper trims the lamp at dusk.", "Sourdough needs a starter fed with flour and water."]


async def index_and_search(settings: Settings) -> list[dict]:
    runtime = await open_runtime(settings)
    try:
        assert isinstance(runtime.chunks, SQLiteChunkIndex) and runtime.embedder is not None
        await new_store(SQLiteVectorStoreStore(runtime.store), "vs_1")
        await runtime.chunks.replace_file_chunks("vs_1", "file_a", "notes.txt", TEXTS,
                                                 await runtime.embedder.embed(TEXTS), {"topic": "misc"})
        return await search(runtime.chunks, runtime.embedder, ["vs_1"], "sourdough starter flour",
                            SearchOptions(max_num_results=1), tenant=DEFAULT_TENANT)
    finally:
        await runtime.close()


async def test_local_embedder_by_default(tmp_path: Path) -> None:
    settings = Settings(upstream="http://127.0.0.1:9/v1", db=str(tmp_path / "bridge.db"))
    runtime = await open_runtime(settings)
    try:
        assert isinstance(runtime.embedder, LocalStaticEmbedder)
    finally:
        await runtime.close()
    results = await index_and_search(settings)
    assert [result["content"][0]["text"] for result in results] == [TEXTS[1]]
    assert results[0]["filename"] == "notes.txt" and results[0]["attributes"] == {"topic": "misc"}


async def test_upstream_embedder_when_a_model_is_named(tmp_path: Path) -> None:
    runner, port = await fake_server.start()
    try:
        settings = Settings(upstream=f"http://127.0.0.1:{port}/v1", db=str(tmp_path / "bridge.db"),
                            embedding_model="fake-embedding")  # the fake upstream's embedding model
        runtime = await open_runtime(settings)
        try:
            assert isinstance(runtime.embedder, UpstreamEmbedder)
        finally:
            await runtime.close()
        results = await index_and_search(settings)
        assert results and results[0]["file_id"] == "file_a" and 0 < results[0]["score"] <= 1
    finally:
        await runner.cleanup()
