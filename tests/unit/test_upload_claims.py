"""One completion of an upload at a time, on both stores and across two replicas sharing one: a completion's claim
refuses another (409, nothing copied) on either replica, and a cancel; it counts its join's bytes in the tenant's
stored bytes while it holds; a claim whose process died lapses, and the next completion removes its join; the
expiry purge removes a dead claim's join too. And the bound on the parts of one upload."""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest

from responses_bridge.ids import new_id
from responses_bridge.protocol.errors import APIError
from responses_bridge.services.files import FileService, new_file_id
from responses_bridge.services.uploads import UPLOAD_SECONDS, UploadService, claim_seconds
from responses_bridge.store import SQLiteResponseStore
from responses_bridge.store.base_uploads import CompletionClaim
from responses_bridge.store.postgres import PostgresDatabase
from responses_bridge.store.postgres.file_bytes import PostgresFileBytes
from responses_bridge.store.postgres.files import PostgresFileStore
from responses_bridge.store.postgres.uploads import PostgresUploadStore
from responses_bridge.store.sqlite.files import SQLiteFileStore
from responses_bridge.store.sqlite.uploads import SQLiteUploadStore
from tests.unit.store_kinds import KINDS, postgres_database_url
from tests.unit.test_uploads_service import A, Clock, blob_names, content, declared, send_part, used

LIMIT = 10_000


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
    """A completion that claimed the upload, published its join, and died before completing it."""
    claim = CompletionClaim(token=new_id("claim"), until=now + claim_seconds(size), bytes=size,
                            blob_id=new_file_id())
    assert await service.store.claim_completion(upload_id, claim, tenant=A, now=now, max_stored_bytes=LIMIT) is None
    writer = await service.files.contents.writer(str(claim.blob_id))
    await writer.write(b"j" * size)
    await writer.publish()
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
        claim = await dead_claim(one, upload["id"], 1000, int(clock.now))
        assert await used(two) == 2000  # the parts, and the join while its claim holds
        names = await blob_names(two)
        for attempt in (two.complete(upload["id"], {"part_ids": parts}, tenant=A),
                        one.complete(upload["id"], {"part_ids": parts}, tenant=A),
                        two.cancel(upload["id"], tenant=A)):
            error = await refused(attempt)
            assert (error.status, error.code, error.param) == (409, "upload_completing", "upload_id")
        assert await blob_names(two) == names  # nothing copied
        clock.now += claim_seconds(1000) + 1  # its process died: the claim lapses
        done = await two.complete(upload["id"], {"part_ids": parts}, tenant=A)
        assert done["status"] == "completed" and await content(two, done["file"]["id"]) == b"a" * 400 + b"b" * 600
        assert await blob_names(one) == {done["file"]["id"]}  # the dead join and the parts are gone
        assert claim.blob_id not in await blob_names(one)
        assert await used(one) == 1000


async def test_a_failed_completion_lets_go_and_counts_nothing_more(kind: str, tmp_path: Path,
                                                                   request: pytest.FixtureRequest) -> None:
    clock = Clock()
    async with database(kind, tmp_path, request) as where, replica(kind, where, tmp_path, clock) as service:
        upload = await service.create(declared(10), tenant=A)
        parts = [(await send_part(service, upload["id"], piece))["id"] for piece in (b"01234", b"56789")]
        error = await refused(service.complete(upload["id"], {"part_ids": parts, "md5": "0" * 32}, tenant=A))
        assert error.code == "md5_mismatch"
        assert await used(service) == 10 and len(await blob_names(service)) == 2  # the parts alone
        done = await service.complete(upload["id"], {"part_ids": parts}, tenant=A)  # at once: nothing holds it
        assert done["status"] == "completed"


async def test_the_join_must_fit_in_the_tenants_stored_bytes(kind: str, tmp_path: Path,
                                                             request: pytest.FixtureRequest) -> None:
    clock = Clock()
    async with database(kind, tmp_path, request) as where, replica(kind, where, tmp_path, clock) as service:
        upload = await service.create(declared(6000), tenant=A)
        parts = [(await send_part(service, upload["id"], piece))["id"] for piece in (b"a" * 3000, b"b" * 3000)]
        error = await refused(service.complete(upload["id"], {"part_ids": parts}, tenant=A))
        assert (error.status, error.code) == (400, "storage_limit_exceeded")
        assert f"storage limit of {LIMIT} bytes" in error.message and "(6000 bytes in use)" in error.message
        assert await used(service) == 6000 and len(await blob_names(service)) == 2
        one_part = await service.create(declared(3000), tenant=A)  # one part is the file itself: no copy to count
        part = await send_part(service, one_part["id"], b"c" * 3000)
        assert (await service.complete(one_part["id"], {"part_ids": [part["id"]]}, tenant=A))["file"]["bytes"] == 3000
        assert (await service.cancel(upload["id"], tenant=A))["status"] == "cancelled"


async def test_the_purge_removes_a_dead_claims_join(kind: str, tmp_path: Path, request: pytest.FixtureRequest) -> None:
    clock = Clock()
    async with database(kind, tmp_path, request) as where, replica(kind, where, tmp_path, clock) as service:
        upload = await service.create(declared(8), tenant=A)
        await send_part(service, upload["id"], b"1234")
        await send_part(service, upload["id"], b"5678")
        await dead_claim(service, upload["id"], 8, int(clock.now))
        assert len(await blob_names(service)) == 3 and await used(service) == 16
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
        assert len(await blob_names(service)) == 3 and await used(service) == 3  # the refused part's bytes are gone
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
