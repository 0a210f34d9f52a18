"""One completion of an upload at a time, on both stores and across two replicas sharing one: a completion's claim
refuses another (409, nothing written) on either replica, and a cancel; the join makes no second copy, so an upload
as large as the tenant's free stored bytes completes; a claim whose process died mid-join lapses, and the next
completion joins again over what it left (the same file); the expiry purge removes a dead join's parts too. And the
bound on the parts of one upload."""

from __future__ import annotations

import contextlib
import hashlib
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest

from responses_bridge.ids import new_id
from responses_bridge.protocol.errors import APIError
from responses_bridge.services.files.files import FileService
from responses_bridge.services.files.uploads import UPLOAD_SECONDS, UploadService, claim_seconds
from responses_bridge.store import SQLiteResponseStore
from responses_bridge.store.base_uploads import PART_BLOCK, CompletionClaim
from responses_bridge.store.postgres import PostgresDatabase
from responses_bridge.store.postgres.files.file_bytes import PostgresFileBytes
from responses_bridge.store.postgres.files.files import PostgresFileStore
from responses_bridge.store.postgres.files.uploads import PostgresUploadStore
from responses_bridge.store.sqlite.files.files import SQLiteFileStore
from responses_bridge.store.sqlite.files.uploads import SQLiteUploadStore
from tests.unit.store_kinds import KINDS, postgres_database_url
from tests.unit.test_uploads_service import A, Clock, blob_names, content, declared, send_part, used

LIMIT = 16 * PART_BLOCK


@contextlib.asynccontextmanager
async def replica(kind: str, where: str, tmp_path: Path, clock: Clock, *,
                  max_parts: int = 1000) -> AsyncIterator[UploadService]:
    """One replica's uploads over the database ``where`` (a SQLite file, or a PostgreSQL URL)."""
    def limit(tenant: str) -> int | None:
        return LIMIT

    if kind == "sqlite":
        async with SQLiteResponseStore(where) as db:
            files = FileService(SQLiteFileStore(db), tmp_path / "files", 1 << 20, purge_interval=0, clock=clock,
                                max_stored_bytes=limit)
            await files.start()
            yield UploadService(SQLiteUploadStore(db), files, purge_interval=0, clock=clock, max_parts=max_parts)
            await files.aclose()
    else:
        async with PostgresDatabase(where, min_size=2) as pg:
            files = FileService(PostgresFileStore(pg), None, 1 << 20, purge_interval=0, clock=clock,
                                contents=PostgresFileBytes(pg), max_stored_bytes=limit)
            await files.start()
            yield UploadService(PostgresUploadStore(pg), files, purge_interval=0, clock=clock, max_parts=max_parts)
            await files.aclose()


@contextlib.asynccontextmanager
async def database(kind: str, tmp_path: Path, request: pytest.FixtureRequest) -> AsyncIterator[str]:
    if kind == "sqlite":
        yield str(tmp_path / "bridge.db")
    else:
        async with postgres_database_url(request) as url:
            yield url


@pytest.fixture(params=KINDS)
def kind(request: pytest.FixtureRequest) -> str:
    return str(request.param)


async def dead_claim(service: UploadService, upload_id: str, size: int, now: int) -> CompletionClaim:
    """A completion that claimed the upload, wrote past its first part's bytes, and died before completing it:
    what it left there (the last part twice over) is more than the file and not its bytes."""
    claim = CompletionClaim(token=new_id("claim"), until=now + claim_seconds(size), bytes=0, blob_id=None)
    assert await service.store.claim_completion(upload_id, claim, tenant=A, now=now, max_stored_bytes=LIMIT) is None
    parts = await service.store.parts(upload_id, tenant=A)
    last = (parts[-1].blob_id, parts[-1].bytes)
    await service.files.contents.extend(parts[0].blob_id, parts[0].bytes, [last, last])
    return claim


async def refused(attempt: object) -> APIError:
    with pytest.raises(APIError) as caught:
        await attempt  # type: ignore[misc]
    return caught.value


async def test_a_claim_on_one_replica_refuses_the_other_until_it_lapses(kind: str, tmp_path: Path,
                                                                        request: pytest.FixtureRequest) -> None:
    clock = Clock()
    async with database(kind, tmp_path, request) as where, replica(kind, where, tmp_path, clock) as one, \
            replica(kind, where, tmp_path, clock) as two:
        upload = await one.create(declared(1000), tenant=A)
        parts = [(await send_part(one, upload["id"], piece))["id"] for piece in (b"a" * 400, b"b" * 600)]
        await dead_claim(one, upload["id"], 1000, int(clock.now))
        assert await used(two) == 2 * PART_BLOCK  # the parts, each a block; the join counts nothing more
        names = await blob_names(two)
        for attempt in (two.complete(upload["id"], {"part_ids": parts}, tenant=A),
                        one.complete(upload["id"], {"part_ids": parts}, tenant=A),
                        two.cancel(upload["id"], tenant=A)):
            error = await refused(attempt)
            assert (error.status, error.code, error.param) == (409, "upload_completing", "upload_id")
        assert await blob_names(two) == names  # nothing copied
        clock.now += claim_seconds(1000) + 1  # its process died: the claim lapses
        done = await two.complete(upload["id"], {"part_ids": parts}, tenant=A)
        # joined again over what the dead one left: the file's bytes exactly, in the first part's blob
        assert done["status"] == "completed" and await content(two, done["file"]["id"]) == b"a" * 400 + b"b" * 600
        assert await blob_names(one) == {done["file"]["id"]} and done["file"]["bytes"] == 1000
        assert await used(one) == 1000


async def test_a_failed_completion_lets_go_and_counts_nothing_more(kind: str, tmp_path: Path,
                                                                   request: pytest.FixtureRequest) -> None:
    clock = Clock()
    async with database(kind, tmp_path, request) as where, replica(kind, where, tmp_path, clock) as service:
        upload = await service.create(declared(10), tenant=A)
        parts = [(await send_part(service, upload["id"], piece))["id"] for piece in (b"01234", b"56789")]
        error = await refused(service.complete(upload["id"], {"part_ids": parts, "md5": "0" * 32}, tenant=A))
        assert error.code == "md5_mismatch"
        assert await used(service) == 2 * PART_BLOCK and len(await blob_names(service)) == 2  # the parts alone
        # at once (nothing holds it), and in another order: the second part's bytes, then the first's own only
        done = await service.complete(upload["id"], {"part_ids": parts[::-1]}, tenant=A)
        assert done["status"] == "completed" and await content(service, done["file"]["id"]) == b"5678901234"


async def test_an_upload_as_large_as_the_free_stored_bytes_completes(kind: str, tmp_path: Path,
                                                                     request: pytest.FixtureRequest) -> None:
    """The join makes no second copy: two parts filling the tenant's stored bytes complete into the file (before,
    the join's copy had to fit beside the parts: a 400 past half the free bytes)."""
    clock = Clock()
    async with database(kind, tmp_path, request) as where, replica(kind, where, tmp_path, clock) as service:
        half = b"a" * (LIMIT // 2), b"b" * (LIMIT // 2)  # whole blocks, as the SDK's 64 MiB parts are
        upload = await service.create(declared(LIMIT), tenant=A)
        parts = [(await send_part(service, upload["id"], piece))["id"] for piece in half]
        assert await used(service) == LIMIT
        done = await service.complete(upload["id"], {"part_ids": parts, "md5": hashlib.md5(b"".join(half)).hexdigest()},
                                      tenant=A)
        assert done["status"] == "completed" and done["file"]["bytes"] == LIMIT
        assert await content(service, done["file"]["id"]) == b"".join(half) and await used(service) == LIMIT
        assert await blob_names(service) == {done["file"]["id"]}


async def test_the_purge_removes_a_dead_claims_join(kind: str, tmp_path: Path, request: pytest.FixtureRequest) -> None:
    clock = Clock()
    async with database(kind, tmp_path, request) as where, replica(kind, where, tmp_path, clock) as service:
        upload = await service.create(declared(8), tenant=A)
        await send_part(service, upload["id"], b"1234")
        await send_part(service, upload["id"], b"5678")
        await dead_claim(service, upload["id"], 8, int(clock.now))
        assert len(await blob_names(service)) == 2 and await used(service) == 2 * PART_BLOCK
        clock.now += UPLOAD_SECONDS
        assert await service.purge_expired() == 1
        assert await blob_names(service) == set() and await used(service) == 0


async def test_an_upload_holds_at_most_max_parts(kind: str, tmp_path: Path, request: pytest.FixtureRequest) -> None:
    clock = Clock()
    async with database(kind, tmp_path, request) as where, \
            replica(kind, where, tmp_path, clock, max_parts=3) as service:
        upload = await service.create(declared(6), tenant=A)
        parts = [(await send_part(service, upload["id"], b"x"))["id"] for _ in range(3)]
        error = await refused(send_part(service, upload["id"], b"y"))
        assert (error.status, error.code, error.param) == (400, "too_many_parts", "data")
        assert "max_upload_parts" in error.message
        assert len(await blob_names(service)) == 3 and await used(service) == 3 * PART_BLOCK  # the refused one's gone
        assert len(parts) == 3


async def test_a_complete_that_finds_the_parts_gone_answers_with_the_uploads_state(
        kind: str, tmp_path: Path, request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> None:
    """Another completion committed between this one's check of the upload and its read of the parts (a fast join,
    many completes at once): the answer is the upload's state, a 400 ``upload_completed``, not a complaint about
    part ids that were right when sent."""
    clock = Clock()
    async with database(kind, tmp_path, request) as where, replica(kind, where, tmp_path, clock) as service:
        upload = await service.create(declared(10), tenant=A)
        parts = [(await send_part(service, upload["id"], piece))["id"] for piece in (b"01234", b"56789")]
        read_parts = service.store.parts

        async def after_the_other_completed(upload_id: str, *, tenant: str) -> Any:
            monkeypatch.setattr(service.store, "parts", read_parts)
            assert (await service.complete(upload_id, {"part_ids": parts}, tenant=tenant))["status"] == "completed"
            return await read_parts(upload_id, tenant=tenant)

        monkeypatch.setattr(service.store, "parts", after_the_other_completed)
        error = await refused(service.complete(upload["id"], {"part_ids": parts}, tenant=A))
        assert (error.status, error.code, error.param) == (400, "upload_completed", "upload_id")
