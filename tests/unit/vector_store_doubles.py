"""Test doubles for the vector store service: an in-memory chunk index, a small deterministic embedder and a file
source over a temporary directory.

Until the retrieval package is present, ``install_retrieval_stand_ins`` registers minimal modules under its
names (word chunking, plain-text extraction, keyword search) so the service can be imported and exercised.
"""

from __future__ import annotations

import hashlib
import importlib
import sys
import types
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy


class MemoryChunkIndex:
    def __init__(self) -> None:
        self.files: dict[tuple[str, str], tuple[str, list[str], numpy.ndarray, dict[str, Any]]] = {}

    async def replace_file_chunks(self, vector_store_id: str, file_id: str, filename: str, texts: Sequence[str],
                                  vectors: numpy.ndarray, attributes: Mapping[str, Any]) -> None:
        assert vectors.shape[0] == len(texts)
        self.files[(vector_store_id, file_id)] = (filename, list(texts), vectors, dict(attributes))

    async def delete_file_chunks(self, vector_store_id: str, file_id: str) -> None:
        self.files.pop((vector_store_id, file_id), None)

    async def delete_store_chunks(self, vector_store_id: str) -> None:
        for key in [key for key in self.files if key[0] == vector_store_id]:
            del self.files[key]

    async def set_file_attributes(self, vector_store_id: str, file_id: str, attributes: Mapping[str, Any]) -> None:
        if (vector_store_id, file_id) in self.files:
            filename, texts, vectors, _ = self.files[(vector_store_id, file_id)]
            self.files[(vector_store_id, file_id)] = (filename, texts, vectors, dict(attributes))

    async def file_chunks(self, vector_store_id: str, file_id: str) -> list[str]:
        found = self.files.get((vector_store_id, file_id))
        return list(found[1]) if found else []


class HashEmbedder:
    dimensions = 8

    def __init__(self, name: str = "test:hash") -> None:
        self.name = name
        self.calls = 0

    async def embed(self, texts: list[str]) -> numpy.ndarray:
        self.calls += 1
        rows = [numpy.frombuffer(hashlib.sha256(t.encode()).digest()[:8], dtype=numpy.uint8).astype(numpy.float32)
                + 1.0 for t in texts]
        matrix = numpy.array(rows, dtype=numpy.float32).reshape(len(texts), self.dimensions)
        return matrix / numpy.linalg.norm(matrix, axis=1, keepdims=True)

    async def aclose(self) -> None:
        return None


class DirectoryFiles:
    """A file source: ``add`` writes bytes under the directory and returns the new file's id."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self.meta: dict[str, dict[str, Any]] = {}

    def add(self, filename: str, data: bytes) -> str:
        file_id = f"file-{len(self.meta) + 1:04d}"
        (self.root / file_id).write_bytes(data)
        self.meta[file_id] = {"id": file_id, "object": "file", "bytes": len(data), "filename": filename,
                              "purpose": "assistants", "created_at": 0}
        return file_id

    async def get(self, file_id: str) -> dict[str, Any] | None:
        return self.meta.get(file_id)

    def content_path(self, file_id: str) -> Path:
        return self.root / file_id


# -- stand-ins for the retrieval package until it is present ---------------------------------------------------

def install_retrieval_stand_ins() -> None:
    try:
        importlib.import_module("responses_bridge.services.retrieval.search")
        importlib.import_module("responses_bridge.store.chunks")
    except ImportError:
        pass
    else:
        return
    from responses_bridge.protocol.errors import APIError

    @dataclass(frozen=True, slots=True)
    class StaticChunking:
        max_chunk_size_tokens: int = 800
        chunk_overlap_tokens: int = 400

    def parse_chunking_strategy(value: object | None) -> StaticChunking:
        if value is None or value == {"type": "auto"}:
            return StaticChunking()
        if isinstance(value, dict) and value.get("type") == "static" and isinstance(value.get("static"), dict):
            size = value["static"].get("max_chunk_size_tokens")
            overlap = value["static"].get("chunk_overlap_tokens")
            if isinstance(size, int) and isinstance(overlap, int) and 100 <= size <= 4096 and 0 <= overlap <= size // 2:
                return StaticChunking(size, overlap)
        raise APIError(400, "Invalid 'chunking_strategy'.", param="chunking_strategy", code="invalid_value")

    def chunking_strategy_object(strategy: StaticChunking) -> dict[str, Any]:
        return {"type": "static", "static": {"max_chunk_size_tokens": strategy.max_chunk_size_tokens,
                                             "chunk_overlap_tokens": strategy.chunk_overlap_tokens}}

    def chunk_text(text: str, strategy: StaticChunking) -> list[str]:
        words = text.split()
        step = strategy.max_chunk_size_tokens - strategy.chunk_overlap_tokens
        return [" ".join(words[i:i + strategy.max_chunk_size_tokens]) for i in range(0, len(words), step)]

    class ExtractionError(Exception):
        def __init__(self, code: str, message: str) -> None:
            super().__init__(message)
            self.code, self.message = code, message

    def extract_text(path: Path, filename: str) -> str:
        if not filename.endswith((".txt", ".md")):
            raise ExtractionError("unsupported_file", f"Files of this type are not supported: {filename}")
        try:
            return path.read_bytes().decode()
        except UnicodeDecodeError:
            raise ExtractionError("invalid_file", "not UTF-8 text") from None

    @dataclass(frozen=True, slots=True)
    class SearchOptions:
        max_num_results: int = 10
        filters: Any = None
        ranker: str = "auto"
        score_threshold: float = 0.0
        rewrite_query: bool = False

    def parse_search_options(body: Mapping[str, Any]) -> SearchOptions:
        number = body.get("max_num_results", 10)
        if not isinstance(number, int) or not 1 <= number <= 50:
            raise APIError(400, "Invalid 'max_num_results'.", param="max_num_results", code="invalid_value")
        return SearchOptions(max_num_results=number)

    async def search(index: Any, embedder: Any, vector_store_ids: Sequence[str], query: str | Sequence[str],
                     options: SearchOptions) -> list[dict[str, Any]]:
        words = {w.lower() for q in ([query] if isinstance(query, str) else query) for w in q.split()}
        results = []
        for (store_id, file_id), (filename, texts, _, attributes) in index.files.items():
            if store_id not in vector_store_ids:
                continue
            for text in texts:
                hits = len(words & {w.lower() for w in text.split()})
                if hits:
                    results.append({"file_id": file_id, "filename": filename, "score": hits / len(words),
                                    "attributes": attributes, "content": [{"type": "text", "text": text}]})
        results.sort(key=lambda r: -r["score"])
        return results[:options.max_num_results]

    modules = {
        "responses_bridge.services.retrieval": {},
        "responses_bridge.services.retrieval.chunking": {
            "StaticChunking": StaticChunking, "parse_chunking_strategy": parse_chunking_strategy,
            "chunking_strategy_object": chunking_strategy_object, "chunk_text": chunk_text},
        "responses_bridge.services.retrieval.extract": {"ExtractionError": ExtractionError,
                                                        "extract_text": extract_text},
        "responses_bridge.services.retrieval.embedders": {"Embedder": HashEmbedder},
        "responses_bridge.services.retrieval.search": {"SearchOptions": SearchOptions,
                                                       "parse_search_options": parse_search_options,
                                                       "search": search},
        "responses_bridge.store.chunks": {"ChunkIndex": MemoryChunkIndex},
    }
    for name, members in modules.items():
        module = types.ModuleType(name)
        module.__dict__.update(members)
        module.__path__ = []  # type: ignore[attr-defined]
        sys.modules[name] = module
