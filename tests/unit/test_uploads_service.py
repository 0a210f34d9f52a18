"""Uploads over both stores (SQLite with bytes on disk, PostgreSQL with bytes in the database): parts counted in the
tenant's ``max_stored_bytes`` while the upload is under way and exactly once after it is completed, tenancy (another
tenant's upload is a missing one), the hour's expiry removing the parts' bytes and the day after it the row, the
bytes sweep keeping parts, the parts' own bound, and parts sent at once against the limit."""

from __future__ import annotations

import asyncio
import contextlib
import errno
import hashlib
import os
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest

from responses_bridge.protocol.errors import APIError
from responses_bridge.services.files.files import FileService, new_file_id
from responses_bridge.services.files.uploads import FORGET_SECONDS, UPLOAD_SECONDS, UploadService
from responses_bridge.store.base_uploads import PART_BLOCK
from responses_bridge.store.postgres.files.file_bytes import PostgresFileBytes
from responses_bridge.store.postgres.files.files import PostgresFileStore
from responses_bridge.store.postgres.files.uploads import PostgresUploadStore
from responses_bridge.store.sqlite.files.files import SQLiteFileStore
from responses_bridge.store.sqlite.files.uploads import SQLiteUploadStore
from tests.support.blobs import read_all
from tests.unit.store_kinds import KINDS, postgres_database, sqlite_database

A, B = "tenant-a", "tenant-b"


class Clock:
    def __init__(self) -> None:
        self.now = 1_800_000_000.0

    def __call__(self) -> float:
        return self.now


@contextlib.asynccontextmanager
async def uploads_over(kind: str, tmp_path: Path, request: pytest.FixtureRequest, clock: Clock, *,
                       max_stored_bytes: int | None = None) -> AsyncIterator[UploadService]:
    def limit(tenant: str) -> int | None:
        return max_stored_bytes

    if kind == "sqlite":
        async with sqlite_database(tmp_path) as db:
            files = FileService(SQLiteFileStore(db), tmp_path / "files", 1 << 20, purge_interval=0, clock=clock,
                                max_stored_bytes=limit)
            await files.start()
            yield UploadService(SQLiteUploadStore(db), files, purge_interval=0, clock=clock)
            await files.aclose()
    else:
        async with postgres_database(request, min_size=2) as pg:
            files = FileService(PostgresFileStore(pg), None, 1 << 20, purge_interval=0, clock=clock,
                                contents=PostgresFileBytes(pg), max_stored_bytes=limit)
            await files.start()
            yield UploadService(PostgresUploadStore(pg), files, purge_interval=0, clock=clock)
            await files.aclose()


@pytest.fixture(params=KINDS)
def kind(request: pytest.FixtureRequest) -> str:
    return str(request.param)


def declared(size: int, **more: Any) -> dict[str, Any]:
    return {"bytes": size, "filename": "f.bin", "mime_type": "application/octet-stream", "purpose": "user_data",
            **more}


async def send_part(service: UploadService, upload_id: str, data: bytes, tenant: str = A) -> dict[str, Any]:
    upload = await service.pending(upload_id, tenant=tenant)
    async with service.receive_part(upload, tenant=tenant) as received:
        await received.write(data)
        return await service.add_part(upload, received)


async def used(service: UploadService, tenant: str = A) -> int:
    return await service.files.store.stored_bytes(int(service.files._clock()), tenant=tenant)


async def content(service: UploadService, file_id: str) -> bytes:
    reader, _ = await service.files.open_content(file_id, tenant=A)
    return await read_all(reader)


async def blob_names(service: UploadService) -> set[str]:
    contents = service.files.contents
    if isinstance(contents, PostgresFileBytes):
        async with contents._db.acquire() as conn:
            return {row[0] for row in await conn.fetch("SELECT file_id FROM file_blobs WHERE deleted_at IS NULL")}
    return {path.name for path in service.files.directory.iterdir() if path.name.startswith("file-")}


async def age_blobs(service: UploadService, seconds: float) -> None:
    """Make every stored blob look ``seconds`` older: past the sweep's grace for bytes no row names."""
    contents = service.files.contents
    if isinstance(contents, PostgresFileBytes):
        async with contents._db.acquire() as conn:
            await conn.execute("UPDATE file_blobs SET started_at = started_at - make_interval(secs => $1)", seconds)
        return
    for path in service.files.directory.iterdir():
        old = path.stat().st_mtime - seconds
        os.utime(path, (old, old))


async def test_parts_count_while_under_way_and_the_file_once_after(kind: str, tmp_path: Path,
                                                                   request: pytest.FixtureRequest) -> None:
    clock, u = Clock(), PART_BLOCK  # parts of whole blocks: counted at their bytes
    async with uploads_over(kind, tmp_path, request, clock, max_stored_bytes=12 * u) as service:
        upload = await service.create(declared(12 * u), tenant=A)
        first = await send_part(service, upload["id"], b"a" * 6 * u)
        assert await used(service) == 6 * u
        with pytest.raises(APIError) as refused:  # 6 blocks in use: no room for 10 more
            await service.create(declared(10 * u), tenant=A)
        assert refused.value.code == "storage_limit_exceeded"
        other = await service.create(declared(4 * u), tenant=A)
        await send_part(service, other["id"], b"c" * 4 * u)
        with pytest.raises(APIError) as refused:
            await send_part(service, upload["id"], b"b" * 6 * u)  # 6 + 4 + 6 > 12
        assert refused.value.code == "storage_limit_exceeded"
        await service.cancel(other["id"], tenant=A)
        assert await used(service) == 6 * u
        second = await send_part(service, upload["id"], b"b" * 6 * u)
        assert await used(service) == 12 * u  # the whole quota, in two parts: no copy to make room for
        done = await service.complete(upload["id"], {"part_ids": [first["id"], second["id"]]}, tenant=A)
        assert done["status"] == "completed" and done["file"]["bytes"] == 12 * u
        assert done["file"]["id"] in await blob_names(service)  # the first part's bytes are the file's
        assert await used(service) == 12 * u  # the file's bytes, the parts' no more
        assert len(await blob_names(service)) == 1
        assert await content(service, done["file"]["id"]) == b"a" * 6 * u + b"b" * 6 * u
        assert await used(service, B) == 0


async def test_tiny_parts_count_by_the_block(kind: str, tmp_path: Path, request: pytest.FixtureRequest) -> None:
    """A one-byte part takes a block on disk (and a row in PostgreSQL): it counts as one, so parts cannot hide
    files from the quota — ten fit in ten blocks, the eleventh is refused; the completed file counts its bytes."""
    clock = Clock()
    async with uploads_over(kind, tmp_path, request, clock, max_stored_bytes=10 * PART_BLOCK) as service:
        upload = await service.create(declared(10), tenant=A)
        parts = [(await send_part(service, upload["id"], bytes([48 + n])))["id"] for n in range(10)]
        assert await used(service) == 10 * PART_BLOCK
        with pytest.raises(APIError) as refused:
            await send_part(service, upload["id"], b"x")
        assert refused.value.code == "storage_limit_exceeded"
        done = await service.complete(upload["id"], {"part_ids": parts}, tenant=A)
        assert await content(service, done["file"]["id"]) == b"0123456789" and await used(service) == 10


async def test_parts_joined_with_and_without_an_md5_hold_the_same_bytes(kind: str, tmp_path: Path,
                                                                        request: pytest.FixtureRequest) -> None:
    """Without ``md5`` the parts are joined where they are stored, with it they are read and hashed on the way:
    the same file either way, rows of any size (a PostgreSQL blob's last row is short) in order."""
    pieces = [b"x" * 70_000, b"y" * 3, b"z" * 140_001]
    async with uploads_over(kind, tmp_path, request, Clock()) as service:
        files = []
        for md5 in (None, hashlib.md5(b"".join(pieces)).hexdigest()):
            upload = await service.create(declared(sum(map(len, pieces))), tenant=A)
            parts = [(await send_part(service, upload["id"], piece))["id"] for piece in pieces]
            body = {"part_ids": parts} if md5 is None else {"part_ids": parts, "md5": md5}
            files.append((await service.complete(upload["id"], body, tenant=A))["file"]["id"])
        assert [await content(service, file_id) for file_id in files] == [b"".join(pieces)] * 2
        assert await blob_names(service) == set(files)  # the parts' bytes are gone


async def test_another_tenants_upload_is_a_missing_one(kind: str, tmp_path: Path,
                                                       request: pytest.FixtureRequest) -> None:
    async with uploads_over(kind, tmp_path, request, Clock()) as service:
        upload = await service.create(declared(3), tenant=A)
        part = await send_part(service, upload["id"], b"abc")
        for attempt in (service.pending(upload["id"], tenant=B), service.cancel(upload["id"], tenant=B),
                        service.complete(upload["id"], {"part_ids": [part["id"]]}, tenant=B)):
            with pytest.raises(APIError) as refused:
                await attempt
            assert refused.value.status == 404
        assert (await service.complete(upload["id"], {"part_ids": [part["id"]]}, tenant=A))["status"] == "completed"


async def test_an_hour_later_the_parts_are_gone_and_a_day_later_the_row(kind: str, tmp_path: Path,
                                                                        request: pytest.FixtureRequest) -> None:
    clock = Clock()
    async with uploads_over(kind, tmp_path, request, clock, max_stored_bytes=10_000) as service:
        upload = await service.create(declared(8), tenant=A)
        part = await send_part(service, upload["id"], b"12345678")
        clock.now += UPLOAD_SECONDS
        with pytest.raises(APIError) as refused:  # expired before the purge has run
            await service.complete(upload["id"], {"part_ids": [part["id"]]}, tenant=A)
        assert refused.value.code == "upload_expired"
        assert await service.purge_expired() == 1
        assert await used(service) == 0 and await blob_names(service) == set()
        clock.now += FORGET_SECONDS + 1
        assert await service.purge_expired() == 1
        with pytest.raises(APIError) as refused:
            await service.cancel(upload["id"], tenant=A)
        assert refused.value.status == 404


async def test_the_sweep_keeps_the_parts_bytes(kind: str, tmp_path: Path, request: pytest.FixtureRequest) -> None:
    """An aged part is kept by the sweep of bytes no row names, as an aged orphan (bytes written and published
    without a row) is not; completed alone, the part's bytes become the file as they are (no copy)."""
    async with uploads_over(kind, tmp_path, request, Clock()) as service:
        upload = await service.create(declared(4), tenant=A)
        part = await send_part(service, upload["id"], b"keep")
        writer = await service.files.contents.writer(new_file_id())
        await writer.write(b"orphan")
        await writer.publish()
        await age_blobs(service, 3 * 24 * 3600)
        names = await blob_names(service)
        assert writer.file_id in names and len(names) == 2
        assert await service.files.sweep() == 1
        assert await blob_names(service) == names - {writer.file_id}
        done = await service.complete(upload["id"], {"part_ids": [part["id"]]}, tenant=A)
        assert await blob_names(service) == names - {writer.file_id} == {done["file"]["id"]}


async def test_parts_hold_at_most_one_part_more_than_declared(kind: str, tmp_path: Path,
                                                              request: pytest.FixtureRequest) -> None:
    async with uploads_over(kind, tmp_path, request, Clock()) as service:
        upload = await service.create(declared(4), tenant=A)
        await send_part(service, upload["id"], b"1234")
        await send_part(service, upload["id"], b"1234")  # sent again: its answer was lost
        with pytest.raises(APIError) as refused:
            await send_part(service, upload["id"], b"1")
        assert refused.value.code == "upload_parts_full"


async def test_parts_sent_at_once_cannot_pass_the_limit_together(kind: str, tmp_path: Path,
                                                                 request: pytest.FixtureRequest) -> None:
    u = PART_BLOCK
    async with uploads_over(kind, tmp_path, request, Clock(), max_stored_bytes=10 * u) as service:
        uploads = [await service.create(declared(4 * u), tenant=A) for _ in range(2)]
        results = await asyncio.gather(*(send_part(service, upload["id"], b"x" * 4 * u) for upload in uploads
                                         for _ in range(2)), return_exceptions=True)
        refused = [result for result in results if isinstance(result, APIError)]
        assert len(refused) == 2 and all(error.code == "storage_limit_exceeded" for error in refused)
        assert await used(service) == 8 * u


async def test_a_filesystem_without_a_kernel_copy_still_joins(tmp_path: Path, request: pytest.FixtureRequest,
                                                             monkeypatch: pytest.MonkeyPatch) -> None:
    """Where ``copy_file_range`` is refused (an old kernel, a filesystem without it), the parts are copied through
    the process: the same file."""
    def refused(*args: object) -> int:
        raise OSError(errno.EXDEV, "Invalid cross-device link")

    monkeypatch.setattr(os, "copy_file_range", refused)
    async with uploads_over("sqlite", tmp_path, request, Clock()) as service:
        upload = await service.create(declared(9), tenant=A)
        parts = [(await send_part(service, upload["id"], piece))["id"] for piece in (b"abc", b"defg", b"hi")]
        done = await service.complete(upload["id"], {"part_ids": parts}, tenant=A)
        assert await content(service, done["file"]["id"]) == b"abcdefghi"
