"""Uploaded files' bytes in PostgreSQL, through the Files service as the HTTP door uses it: rows of at most
ROW_BYTES written and read one at a time, a download begun before a delete reads to its end, and the sweep and
collection remove what dead uploads and deletes left once their grace has passed."""

from __future__ import annotations

import os
from collections.abc import AsyncIterator

import pytest

from responses_bridge.protocol.errors import APIError
from responses_bridge.services.files.files import FileService
from responses_bridge.store.postgres import PostgresDatabase
from responses_bridge.store.postgres.files import file_bytes as pg_bytes
from responses_bridge.store.postgres.files.file_bytes import PostgresFileBytes
from responses_bridge.store.postgres.files.files import PostgresFileStore
from tests.unit.store_kinds import postgres_database

ROW = 1000  # small rows, so a few kilobytes span several
T = "tenant-a"
LIMITED = "tenant-limited"  # may store 3 rows' worth of bytes


@pytest.fixture
async def pg(request: pytest.FixtureRequest) -> AsyncIterator[PostgresDatabase]:
    async with postgres_database(request) as opened:
        yield opened


@pytest.fixture
async def service(pg: PostgresDatabase, monkeypatch: pytest.MonkeyPatch) -> AsyncIterator[FileService]:
    monkeypatch.setattr(pg_bytes, "ROW_BYTES", ROW)
    files = FileService(PostgresFileStore(pg), None, 10_000, purge_interval=0, contents=PostgresFileBytes(pg),
                        max_stored_bytes=lambda tenant: 3 * ROW if tenant == LIMITED else None)
    await files.start()
    yield files
    await files.aclose()


async def upload(service: FileService, data: bytes, *, expires_after: int | None = None, tenant: str = T) -> dict:
    async with service.receive(tenant=tenant) as received:
        for start in range(0, len(data), 700):  # writes that do not line up with rows
            await received.write(data[start:start + 700])
        return await service.create(received, filename="data.bin", purpose="assistants",
                                    expires_after=expires_after)


async def read_all(service: FileService, file_id: str) -> bytes:
    reader, _ = await service.open_content(file_id, tenant=T)
    try:
        parts = []
        while chunk := await reader.read(333):
            parts.append(chunk)
        assert reader.size == sum(len(part) for part in parts)
        return b"".join(parts)
    finally:
        await reader.aclose()


async def rows(pg: PostgresDatabase, sql: str, *args: object) -> int:
    async with pg.acquire() as conn:
        return int(await conn.fetchval(sql, *args))


async def test_bytes_round_trip_in_rows_of_the_bound(service: FileService, pg: PostgresDatabase) -> None:
    data = os.urandom(3 * ROW + 17)
    created = await upload(service, data)
    assert created["bytes"] == len(data)
    assert await read_all(service, created["id"]) == data
    assert await rows(pg, "SELECT count(*) FROM file_contents WHERE file_id = $1", created["id"]) == 4
    assert await rows(pg, "SELECT max(length(data)) FROM file_contents") == ROW
    empty = await upload(service, b"")
    assert await read_all(service, empty["id"]) == b""
    async with service.local_copy(created["id"]) as path:
        assert path.read_bytes() == data
    assert not path.exists()  # the copy for ingestion is gone with the block


async def test_refused_and_abandoned_uploads_leave_no_rows(service: FileService, pg: PostgresDatabase) -> None:
    with pytest.raises(APIError) as raised:
        await upload(service, b"y" * 10_001)
    assert raised.value.status == 413
    with pytest.raises(RuntimeError):
        async with service.receive(tenant=T) as received:
            await received.write(b"z" * (2 * ROW))
            raise RuntimeError("client went away")
    kept = await upload(service, b"k" * (2 * ROW), tenant=LIMITED)
    with pytest.raises(APIError) as raised:  # over the tenant's stored bytes: refused at the chunk that crosses
        await upload(service, b"w" * (ROW + 1), tenant=LIMITED)
    assert (raised.value.status, raised.value.code) == (400, "storage_limit_exceeded")
    assert await service.delete(kept["id"], tenant=LIMITED)
    await service.contents.collect()
    async with pg.acquire() as conn:
        await conn.execute("UPDATE file_blobs SET deleted_at = deleted_at - interval '2 hours'")
    assert await service.contents.collect() == 1
    assert await rows(pg, "SELECT count(*) FROM file_blobs") == 0
    assert await rows(pg, "SELECT count(*) FROM file_contents") == 0


async def test_a_download_begun_before_a_delete_reads_to_its_end(service: FileService, pg: PostgresDatabase) -> None:
    data = os.urandom(2 * ROW + 5)
    created = await upload(service, data)
    reader, _ = await service.open_content(created["id"], tenant=T)
    try:
        first = await reader.read(10)
        await service.delete(created["id"], tenant=T)
        rest = b""
        while chunk := await reader.read(ROW):
            rest += chunk
        assert first + rest == data
    finally:
        await reader.aclose()
    with pytest.raises(APIError) as raised:
        await service.open_content(created["id"], tenant=T)
    assert raised.value.status == 404
    assert await service.contents.collect() == 0  # within the read grace: kept
    async with pg.acquire() as conn:
        await conn.execute("UPDATE file_blobs SET deleted_at = deleted_at - interval '2 hours'")
    assert await service.contents.collect() == 1
    assert await rows(pg, "SELECT count(*) FROM file_contents") == 0


async def test_sweep_removes_dead_uploads_and_orphans_past_their_grace(service: FileService,
                                                                       pg: PostgresDatabase) -> None:
    kept = await upload(service, b"row and bytes")
    dead = await service.contents.writer("file-" + "a" * 32)  # an upload whose process died
    await dead.write(b"x" * (ROW + 1))
    orphan = await service.contents.writer("file-" + "b" * 32)  # published, but the row was never written
    await orphan.write(b"y")
    await orphan.publish()
    fresh = await service.contents.writer("file-" + "c" * 32)  # maybe another replica, still uploading
    await fresh.write(b"z")
    assert await service.sweep() == 0
    async with pg.acquire() as conn:
        await conn.execute("UPDATE file_blobs SET started_at = started_at - interval '2 days' WHERE file_id <> $1",
                           "file-" + "c" * 32)
    assert await service.sweep() == 2
    async with pg.acquire() as conn:
        left = {row[0] for row in await conn.fetch("SELECT file_id FROM file_blobs")}
    assert left == {kept["id"], "file-" + "c" * 32}
    assert await read_all(service, kept["id"]) == b"row and bytes"


async def test_expiry_purge_takes_the_bytes_too(service: FileService, pg: PostgresDatabase) -> None:
    created = await upload(service, b"soon gone", expires_after=3600)
    service._clock = lambda: created["created_at"] + 3600  # type: ignore[method-assign]
    assert await service.purge_expired() == 1
    assert await rows(pg, "SELECT count(*) FROM file_blobs WHERE deleted_at IS NOT NULL") == 1
