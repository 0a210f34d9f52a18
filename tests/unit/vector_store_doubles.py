"""Test doubles for the vector store service: a second embedder (to test that embedders are never mixed) and a
real Files service to upload files with, as one tenant or another; and a bare file source over a directory (the
part of the Files API that ingestion uses) for workers sharing a PostgreSQL database."""

from __future__ import annotations

import contextlib
import hashlib
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import numpy

from responses_bridge.services.files.files import FileService
from responses_bridge.store import SQLiteResponseStore
from responses_bridge.store.sqlite.files.files import SQLiteFileStore


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


class DirectoryFiles:
    """A file source: ``add`` writes bytes under the directory and returns the new file's id (its metadata row,
    where attaching needs one, is the test's to store)."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self.meta: dict[str, dict[str, Any]] = {}
        self.owners: dict[str, str] = {}

    def add(self, filename: str, data: bytes, *, tenant: str) -> str:
        file_id = f"file-{len(self.meta) + 1:032x}"
        (self.root / file_id).write_bytes(data)
        self.meta[file_id] = {"id": file_id, "object": "file", "bytes": len(data), "filename": filename,
                              "purpose": "assistants", "created_at": 0}
        self.owners[file_id] = tenant
        return file_id

    async def get(self, file_id: str, *, tenant: str) -> dict[str, Any] | None:
        return self.meta.get(file_id) if self.owners.get(file_id) == tenant else None

    async def get_any_tenant(self, file_id: str) -> dict[str, Any] | None:
        return self.meta.get(file_id)

    @contextlib.asynccontextmanager
    async def local_copy(self, file_id: str) -> AsyncIterator[Path]:
        yield self.root / file_id
