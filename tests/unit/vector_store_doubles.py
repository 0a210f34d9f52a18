"""Test doubles for the vector store service: a second embedder (to test that embedders are never mixed) and a
file source over a temporary directory (the Files API's part that ingestion uses)."""

from __future__ import annotations

import contextlib
import hashlib
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import numpy


class HashEmbedder:
    dimensions = 8

    def __init__(self, name: str = "test:hash") -> None:
        self.name = name

    async def embed(self, texts: list[str]) -> numpy.ndarray:
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

    @contextlib.asynccontextmanager
    async def local_copy(self, file_id: str) -> AsyncIterator[Path]:
        yield self.root / file_id
