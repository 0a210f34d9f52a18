"""Embedders: the local static model (offline, from its wheel) and the upstream's /v1/embeddings, over a real
socket to the fake upstream; and which one the settings choose."""

from __future__ import annotations

import importlib.metadata
import shutil
from pathlib import Path

import numpy as np
import pytest
from aiohttp import web

from responses_bridge.config.settings import Settings
from responses_bridge.demo import fake_embeddings, fake_server
from responses_bridge.services.files.retrieval.embedders import (
    EmbeddingError,
    LocalStaticEmbedder,
    UpstreamEmbedder,
    embedder_from_settings,
    local_embedder_name,
    local_model_digest,
)


async def test_local_model_gives_unit_vectors_that_know_topics() -> None:
    embedder = LocalStaticEmbedder()
    assert embedder.name == local_embedder_name() and embedder.dimensions == 64
    texts = ["The cat sat on the warm mat and purred.", "A kitten naps on the rug.",
             "Quarterly revenue grew by eight percent."]
    vectors = await embedder.embed(texts)
    assert vectors.shape == (3, 64) and vectors.dtype == np.float32
    assert np.allclose(np.linalg.norm(vectors, axis=1), 1.0, atol=1e-5)
    assert vectors[0] @ vectors[1] > vectors[0] @ vectors[2]
    again = await embedder.embed(texts[:1])
    assert np.allclose(again[0], vectors[0], atol=1e-6)  # deterministic, batch or not
    assert (await embedder.embed([])).shape == (0, 64)
    many = [f"sentence {n} about {'cats' if n % 2 else 'markets'}" for n in range(700)]  # in several encoder steps
    assert np.allclose(await embedder.embed(many), embedder.embed_sync(many), atol=1e-6)
    await embedder.aclose()


def test_local_name_is_the_model_files_not_the_package_version(tmp_path: Path) -> None:
    """An upgrade shipping the same model files keeps the name (stores keep working); changed weights (or
    tokenizer) give another name, so stores built with the old vectors refuse it (embedder_mismatch)."""
    from static_model import _model_dir

    shipped = Path(_model_dir())
    name = local_embedder_name()
    assert name.startswith("local:tokenlearn-static-model@sha256:")
    assert importlib.metadata.version("tokenlearn-static-model") not in name.split("@", 1)[1]
    same = tmp_path / "same"
    shutil.copytree(shipped, same)
    assert local_embedder_name(str(same)) == name
    for changed_file in ("model.safetensors", "tokenizer.json"):
        changed = tmp_path / f"changed-{changed_file}"
        shutil.copytree(shipped, changed)
        data = bytearray((changed / changed_file).read_bytes())
        data[-2] ^= 0x01
        (changed / changed_file).write_bytes(bytes(data))
        assert local_embedder_name(str(changed)) != name


def test_the_local_model_files_are_read_when_a_name_is_asked_not_at_start(tmp_path: Path) -> None:
    """A sidecar builds its embedder at start, and most never embed: the model's 14 MB are hashed only when a
    vector store asks the embedder's name."""
    from static_model import _model_dir

    model = tmp_path / "model"
    shutil.copytree(Path(_model_dir()), model)
    local_model_digest.cache_clear()
    embedder = LocalStaticEmbedder(str(model))
    assert local_model_digest.cache_info().currsize == 0  # nothing read yet
    (model / "tokenizer.json").write_bytes(b"{}")  # what the name is taken from is what lies there when asked
    assert embedder.name == local_embedder_name(str(model)) != local_embedder_name()
    assert local_model_digest.cache_info().currsize >= 1


async def test_upstream_embeddings_in_batches() -> None:
    runner, port = await fake_server.start()
    try:
        embedder = UpstreamEmbedder(f"http://127.0.0.1:{port}/v1/", "fake-embedding", "sk-test")
        assert embedder.name == "upstream:fake-embedding" and embedder.dimensions == 0
        texts = [f"text number {n}" for n in range(300)]  # more than one request's batch
        vectors = await embedder.embed(texts)
        assert vectors.shape == (300, fake_embeddings.EMBEDDING_DIMENSIONS) == (300, embedder.dimensions)
        expected = np.asarray(fake_embeddings.embed(texts[299], embedder.dimensions), dtype=np.float32)
        assert np.allclose(vectors[299], expected / np.linalg.norm(expected), atol=1e-5)
        shortened = UpstreamEmbedder(f"http://127.0.0.1:{port}/v1", "fake-embedding", None, dimensions=16)
        assert (await shortened.embed(["a"])).shape == (1, 16)
        await shortened.aclose()
        await embedder.aclose()
    finally:
        await runner.cleanup()


async def test_upstream_failures_are_embedding_errors() -> None:
    async def broken(request: web.Request) -> web.Response:
        if request.headers.get("Authorization") != "Bearer good":
            return web.json_response({"error": {"message": "bad key"}}, status=401)
        return web.json_response({"data": [{"index": 0, "embedding": "not a vector"}]})

    app = web.Application()
    app.router.add_post("/v1/embeddings", broken)
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
    try:
        for key, message in (("bad", "HTTP 401"), ("good", "something other than embeddings")):
            embedder = UpstreamEmbedder(f"http://127.0.0.1:{port}/v1", "m", key)
            with pytest.raises(EmbeddingError, match=message):
                await embedder.embed(["x"])
            await embedder.aclose()
    finally:
        await runner.cleanup()
    unreachable = UpstreamEmbedder(f"http://127.0.0.1:{port}/v1", "m", None)
    with pytest.raises(EmbeddingError, match="could not be reached"):
        await unreachable.embed(["x"])
    await unreachable.aclose()


def test_settings_choose_the_embedder(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in ("RESPONSES_BRIDGE_EMBEDDING_MODEL", "RESPONSES_BRIDGE_EMBEDDING_URL"):
        monkeypatch.delenv(name, raising=False)
    assert isinstance(embedder_from_settings(Settings()), LocalStaticEmbedder)
    monkeypatch.setenv("RESPONSES_BRIDGE_EMBEDDING_MODEL", "text-embedding-3-large")
    monkeypatch.setenv("RESPONSES_BRIDGE_UPSTREAM", "http://127.0.0.1:9/v1")
    chosen = embedder_from_settings(Settings())
    assert isinstance(chosen, UpstreamEmbedder) and chosen.name == "upstream:text-embedding-3-large"
    assert chosen._url == "http://127.0.0.1:9/v1/embeddings"
    monkeypatch.setenv("RESPONSES_BRIDGE_EMBEDDING_URL", "http://127.0.0.1:10/v1")
    assert embedder_from_settings(Settings())._url == "http://127.0.0.1:10/v1/embeddings"  # type: ignore[union-attr]
