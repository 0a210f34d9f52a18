"""Test doubles for the vector store service: a second embedder (to test that embedders are never mixed) and a
real Files service to upload files with, as one tenant or another."""

from __future__ import annotations

import hashlib
from pathlib import Path

import numpy

from responses_bridge.services.files import FileService
from responses_bridge.store import SQLiteResponseStore
from responses_bridge.store.files import SQLiteFileStore


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


class StoredFiles:
    """Uploaded files for vector store tests: the real Files service over the test's database, with :meth:`add`
    to upload bytes as a tenant. Pass :attr:`service` where vector stores want their file source."""

    def __init__(self, db: SQLiteResponseStore, root: Path) -> None:
        self.service = FileService(SQLiteFileStore(db), root / "files", 1 << 30, purge_interval=0)

    async def start(self) -> None:
        await self.service.start()

    async def aclose(self) -> None:
        await self.service.aclose()

    async def add(self, filename: str, data: bytes, *, tenant: str) -> str:
        async with self.service.receive(tenant=tenant) as upload:
            await upload.write(data)
            stored = await self.service.create(upload, filename=filename, purpose="assistants", expires_after=None)
        return str(stored["id"])
