"""Uploaded files: the metadata store, the service's rules (validation, limit, expiry, purge, sweep) and the bytes on
disk, addressed by id only."""

from __future__ import annotations

import os
import time
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from responses_bridge.protocol.errors import APIError
from responses_bridge.services.files.files import (
    BATCH_DEFAULT_EXPIRES_SECONDS,
    FileService,
    check_expires_after,
    check_purpose,
    clean_filename,
    files_directory,
)
from responses_bridge.store import SQLiteResponseStore
from responses_bridge.store.base import FileStore
from responses_bridge.store.postgres.files.files import PostgresFileStore
from responses_bridge.store.records import StoredFile, UnknownCursor
from responses_bridge.store.sqlite.files.files import SQLiteFileStore
from tests.unit.store_kinds import KINDS, postgres_database

T = "tenant-a"


class Clock:
    def __init__(self) -> None:
        self.now = 1_700_000_000.0

    def __call__(self) -> float:
        return self.now


@pytest.fixture
async def db(tmp_path: Path) -> AsyncIterator[SQLiteResponseStore]:
    async with SQLiteResponseStore(str(tmp_path / "files.db")) as opened:
        yield opened


@pytest.fixture
def store(db: SQLiteResponseStore) -> SQLiteFileStore:
    return SQLiteFileStore(db)


@pytest.fixture(params=KINDS)
async def any_store(request: pytest.FixtureRequest, db: SQLiteResponseStore) -> AsyncIterator[FileStore]:
    if request.param == "sqlite":
        yield SQLiteFileStore(db)
    else:
        async with postgres_database(request) as pg:
            yield PostgresFileStore(pg)


@pytest.fixture
def clock() -> Clock:
    return Clock()


@pytest.fixture
async def service(store: SQLiteFileStore, tmp_path: Path, clock: Clock) -> AsyncIterator[FileService]:
    files = FileService(store, tmp_path / "files", 1024, purge_interval=0, clock=clock)
    await files.start()
    yield files
    await files.aclose()


async def upload(service: FileService, data: bytes, *, filename: str = "notes.txt", purpose: str = "assistants",
                 expires_after: int | None = None, tenant: str = T) -> dict:
    async with service.receive(tenant=tenant) as received:
        for start in range(0, len(data), 100):
            await received.write(data[start:start + 100])
        return await service.create(received, filename=filename, purpose=purpose, expires_after=expires_after)


def stored(file_id: str, created_at: int = 100, purpose: str = "assistants", expires_at: int | None = None
           ) -> StoredFile:
    return StoredFile(id=file_id, created_at=created_at, bytes=3, filename="a.txt", purpose=purpose,
                      expires_at=expires_at)


async def test_store_pages_filters_and_hides_expired(any_store: FileStore) -> None:
    store = any_store
    assert isinstance(store, FileStore)
    for index in range(5):
        await store.add_file(stored(f"file-{index}", purpose="batch" if index % 2 else "assistants"), tenant=T,
                             max_stored_bytes=None)
    await store.add_file(stored("file-expired", expires_at=150), tenant=T, max_stored_bytes=None)

    page, more = await store.list_files(now=100, purpose=None, after=None, limit=2, order="desc", tenant=T)
    assert [file.id for file in page] == ["file-expired", "file-4"] and more
    page, more = await store.list_files(now=200, purpose=None, after=None, limit=2, order="desc", tenant=T)
    assert [file.id for file in page] == ["file-4", "file-3"] and more  # expired: gone from every read at once
    page, more = await store.list_files(now=200, purpose=None, after="file-3", limit=10, order="desc", tenant=T)
    assert [file.id for file in page] == ["file-2", "file-1", "file-0"] and not more
    page, more = await store.list_files(now=200, purpose=None, after="file-1", limit=2, order="asc", tenant=T)
    assert [file.id for file in page] == ["file-2", "file-3"] and more
    page, _ = await store.list_files(now=200, purpose="batch", after=None, limit=10, order="asc", tenant=T)
    assert [file.id for file in page] == ["file-1", "file-3"]
    with pytest.raises(UnknownCursor):
        await store.list_files(now=200, purpose=None, after="file-expired", limit=2, order="asc", tenant=T)

    assert await store.get_file("file-expired", 149, tenant=T) is not None
    assert await store.get_file("file-expired", 150, tenant=T) is None
    assert await store.expired_files(200, 10) == ["file-expired"]
    assert await store.known_ids(["file-1", "file-expired", "file-nope"]) == {"file-1", "file-expired"}
    assert await store.delete_file("file-1", tenant=T) and not await store.delete_file("file-1", tenant=T)
    assert not await store.delete_expired_file("file-2", 200)  # not expired: the purge leaves it
    assert await store.delete_expired_file("file-expired", 200)


async def test_upload_is_stored_by_id_with_the_client_name_as_metadata(service: FileService) -> None:
    created = await upload(service, b"x" * 250, filename="../../etc/passwd")
    assert created["object"] == "file" and created["bytes"] == 250 and created["filename"] == "passwd"
    assert created["status"] == "processed" and created["expires_at"] is None
    path = service.content_path(created["id"])
    assert path.parent == service.directory and path.name == created["id"]
    assert path.read_bytes() == b"x" * 250
    assert sorted(os.listdir(service.directory)) == [created["id"]]  # no temporary file left
    assert await service.get(created["id"], tenant=T) == created


async def test_over_the_limit_is_a_413_and_leaves_nothing(service: FileService) -> None:
    with pytest.raises(APIError) as raised:
        await upload(service, b"y" * 1025)
    assert raised.value.status == 413 and raised.value.code == "file_too_large" and raised.value.param == "file"
    assert "1 KiB (1024 bytes" in raised.value.message
    assert os.listdir(service.directory) == []
    assert (await upload(service, b"y" * 1024))["bytes"] == 1024  # exactly the limit is fine


async def test_an_upload_abandoned_midway_removes_its_temporary_file(service: FileService) -> None:
    with pytest.raises(RuntimeError):
        async with service.receive(tenant=T) as received:
            await received.write(b"half")
            path = received.writer.path  # type: ignore[attr-defined]  # the disk writer's temporary file
            assert path.exists() and path.parent == service.directory
            raise RuntimeError("client went away")
    assert os.listdir(service.directory) == []


@pytest.mark.parametrize("file_id", ["../files.db", "file-../../x", "file-", "FILE-" + "a" * 32, "file-" + "g" * 32,
                                     "file-" + "a" * 32 + "/x", "file-" + "a" * 31 + "\x00"])
async def test_content_path_takes_only_ids_the_bridge_makes(service: FileService, file_id: str) -> None:
    with pytest.raises(ValueError):
        service.content_path(file_id)
    assert await service.get(file_id, tenant=T) is None
    with pytest.raises(APIError) as raised:
        await service.retrieve(file_id, tenant=T)
    assert raised.value.status == 404


async def test_expiry_hides_then_purges_row_and_bytes(service: FileService, clock: Clock) -> None:
    created = await upload(service, b"soon gone", expires_after=3600)
    kept = await upload(service, b"kept")
    assert created["expires_at"] == created["created_at"] + 3600
    clock.now += 3600
    assert await service.get(created["id"], tenant=T) is None  # expired: never returned, purged or not
    listed = await service.list(purpose=None, after=None, limit=10, order="desc", tenant=T)
    assert [file["id"] for file in listed["data"]] == [kept["id"]]
    with pytest.raises(APIError):
        await service.delete(created["id"], tenant=T)
    assert service.content_path(created["id"]).exists()
    assert await service.purge_expired() == 1
    assert not service.content_path(created["id"]).exists()
    assert await service.store.known_ids([created["id"]]) == set()
    assert service.content_path(kept["id"]).exists()


async def test_batch_files_expire_after_30_days_by_default(service: FileService) -> None:
    created = await upload(service, b'{"custom_id": "1"}\n', purpose="batch")
    assert created["expires_at"] == created["created_at"] + BATCH_DEFAULT_EXPIRES_SECONDS
    chosen = await upload(service, b"{}\n", purpose="batch", expires_after=7200)
    assert chosen["expires_at"] == chosen["created_at"] + 7200


async def test_delete_removes_row_and_bytes_once(service: FileService) -> None:
    created = await upload(service, b"bye")
    assert await service.delete(created["id"], tenant=T) == {"id": created["id"], "object": "file", "deleted": True}
    assert not service.content_path(created["id"]).exists()
    with pytest.raises(APIError) as raised:
        await service.delete(created["id"], tenant=T)
    assert raised.value.status == 404 and raised.value.param == "file_id"


async def test_list_arguments_are_checked(service: FileService) -> None:
    for limit in (0, 10_001):
        with pytest.raises(APIError) as raised:
            await service.list(purpose=None, after=None, limit=limit, order="desc", tenant=T)
        assert raised.value.status == 400 and raised.value.param == "limit"
    with pytest.raises(APIError) as raised:
        await service.list(purpose=None, after=None, limit=10, order="up", tenant=T)
    assert raised.value.param == "order"
    with pytest.raises(APIError) as raised:
        await service.list(purpose=None, after="file-missing", limit=10, order="desc", tenant=T)
    assert raised.value.status == 400 and raised.value.param == "after"
    empty = await service.list(purpose="vision", after=None, limit=10, order="desc", tenant=T)
    assert empty == {"object": "list", "data": [], "first_id": None, "last_id": None, "has_more": False}


async def test_start_sweeps_dead_uploads_and_orphans_past_their_grace(store: SQLiteFileStore, tmp_path: Path,
                                                                      clock: Clock) -> None:
    directory = tmp_path / "files"
    first = FileService(store, directory, 1024, purge_interval=0, clock=clock)
    await first.start()
    kept = await upload(first, b"row and bytes")
    await first.aclose()
    old = time.time() - 2 * 24 * 3600
    for name in (".upload-dead.part", "file-" + "a" * 32):  # a dead upload; bytes whose row never got written
        (directory / name).write_bytes(b"left behind")
        os.utime(directory / name, (old, old))
    (directory / ("file-" + "b" * 32)).write_bytes(b"fresh: maybe another process between rename and insert")
    os.utime(directory / kept["id"], (old, old))

    second = FileService(store, directory, 1024, purge_interval=0, clock=clock)
    await second.start()
    try:
        assert sorted(os.listdir(directory)) == sorted([kept["id"], "file-" + "b" * 32])
    finally:
        await second.aclose()


async def test_in_memory_database_gets_a_private_directory_removed_on_close(clock: Clock) -> None:
    assert files_directory(":memory:") is None
    async with SQLiteResponseStore(":memory:") as db:
        service = FileService(SQLiteFileStore(db), None, 1024, purge_interval=0, clock=clock)
        await service.start()
        created = await upload(service, b"temporary")
        directory = service.directory
        assert service.content_path(created["id"]).read_bytes() == b"temporary"
        await service.aclose()
    assert not directory.exists()


def test_files_directory_is_next_to_the_database(tmp_path: Path) -> None:
    assert files_directory(str(tmp_path / "data" / "bridge.db")) == (tmp_path / "data" / "files").resolve()


@pytest.mark.parametrize("value", [None, "", "fine_tune", "assistants_output", "ASSISTANTS", "batch\x00", 7])
def test_purpose_must_be_one_a_client_may_upload_for(value: object) -> None:
    with pytest.raises(APIError) as raised:
        check_purpose(value)
    assert raised.value.status == 400 and raised.value.param == "purpose"


def test_expires_after_bounds() -> None:
    assert check_expires_after("created_at", 3600) == 3600
    assert check_expires_after("created_at", "2592000") == 2592000
    for anchor, seconds, param in [(None, 3600, "expires_after.anchor"), ("last_active_at", 3600,
                                                                          "expires_after.anchor"),
                                   ("created_at", None, "expires_after.seconds"),
                                   ("created_at", 3599, "expires_after.seconds"),
                                   ("created_at", 2592001, "expires_after.seconds"),
                                   ("created_at", True, "expires_after.seconds"),
                                   ("created_at", "1e4", "expires_after.seconds"),
                                   ("created_at", "\u00b2", "expires_after.seconds"),
                                   ("created_at", 3600.5, "expires_after.seconds")]:
        with pytest.raises(APIError) as raised:
            check_expires_after(anchor, seconds)
        assert raised.value.status == 400 and raised.value.param == param, (anchor, seconds)


def test_filenames_keep_only_their_last_component() -> None:
    assert clean_filename("../../x") == "x"
    assert clean_filename("C:\\Users\\me\\report.pdf") == "report.pdf"
    assert clean_filename("résumé 2024.txt") == "résumé 2024.txt"
    for bad in [None, "", "..", "dir/", "a\x00b", "tab\there", "x" * 1025, "bad\ud800.txt"]:
        with pytest.raises(APIError) as raised:
            clean_filename(bad)
        assert raised.value.status == 400 and raised.value.param == "file", bad


async def test_open_content_survives_a_delete_and_is_a_404_when_the_bytes_are_gone(service: FileService) -> None:
    created = await upload(service, b"still readable")
    reader, found = await service.open_content(created["id"], tenant=T)
    try:
        assert found == created and reader.size == len(b"still readable")
        await service.delete(created["id"], tenant=T)
        assert await reader.read(1 << 20) == b"still readable"  # opened before the delete: not cut short
    finally:
        await reader.aclose()
    lost = await upload(service, b"bytes removed behind the store's back")
    service.content_path(lost["id"]).unlink()
    with pytest.raises(APIError) as raised:
        await service.open_content(lost["id"], tenant=T)
    assert raised.value.status == 404 and raised.value.param == "file_id"
