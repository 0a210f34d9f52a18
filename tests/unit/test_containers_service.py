"""Containers over both stores (SQLite with bytes on disk, PostgreSQL with bytes in the database): expiry and the
purge, limits per file, container and tenant, paging, the write-back of a run's directory (links never followed,
removed files deleted) and the file bytes sweep keeping container blobs."""

from __future__ import annotations

import asyncio
import contextlib
import os
import tempfile
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest

from responses_bridge.protocol.errors import APIError
from responses_bridge.run.tools.code_interpreter import CodeToolOptions
from responses_bridge.sandbox import Sandbox, SandboxLimits
from responses_bridge.sandbox.trees import remove_tree
from responses_bridge.services.containers.containers import ContainerService
from responses_bridge.services.containers.workspace import Workspace
from responses_bridge.services.files.files import FileService
from responses_bridge.services.tools.code_interpreter import CodeInterpreter
from responses_bridge.store.postgres.containers.containers import PostgresContainerStore
from responses_bridge.store.postgres.files.file_bytes import PostgresFileBytes
from responses_bridge.store.postgres.files.files import PostgresFileStore
from responses_bridge.store.records import StoredContainer
from responses_bridge.store.sqlite.containers.containers import SQLiteContainerStore
from responses_bridge.store.sqlite.files.files import SQLiteFileStore
from tests.support.blobs import read_all
from tests.unit.store_kinds import KINDS, postgres_database, sqlite_database


class Clock:
    def __init__(self) -> None:
        self.now = 1_700_000_000.0

    def __call__(self) -> float:
        return self.now


@contextlib.asynccontextmanager
async def service_over(kind: str, tmp_path: Path, request: pytest.FixtureRequest, clock: Clock, *,
                       connections: int = 1, **limits: object) -> AsyncIterator[ContainerService]:
    """``connections``: PostgreSQL connections opened at once (calls at once then really run at once). A
    ``max_stored_bytes`` limit is the files service's too, as the runtime gives it (one budget)."""
    stored: dict[str, object] = {key: value for key, value in limits.items() if key == "max_stored_bytes"}
    if kind == "sqlite":
        async with sqlite_database(tmp_path) as db:
            files = FileService(SQLiteFileStore(db), tmp_path / "files", 1 << 20, clock=clock, purge_interval=0,
                                **stored)  # type: ignore[arg-type]
            await files.start()
            yield ContainerService(SQLiteContainerStore(db), files.contents, files, clock=clock, purge_interval=0,
                                   **{"file_bytes": 1000, "container_bytes": 1500, **limits})  # type: ignore[arg-type]
            await files.aclose()
    else:
        async with postgres_database(request, min_size=connections) as db:
            files = FileService(PostgresFileStore(db), None, 1 << 20, clock=clock, purge_interval=0,
                                contents=PostgresFileBytes(db), **stored)  # type: ignore[arg-type]
            await files.start()
            yield ContainerService(PostgresContainerStore(db), files.contents, files, clock=clock, purge_interval=0,
                                   **{"file_bytes": 1000, "container_bytes": 1500, **limits})  # type: ignore[arg-type]
            await files.aclose()


async def chunks(*parts: bytes) -> AsyncIterator[bytes]:
    for part in parts:
        yield part


async def read(service: ContainerService, container_id: str, file_id: str, tenant: str = "") -> bytes:
    reader, _ = await service.open_file(container_id, file_id, tenant=tenant)
    return await read_all(reader)


async def age_blobs(service: ContainerService, kind: str) -> None:
    """Make every stored blob two hours old, past the sweep's grace for bytes without a row."""
    if kind == "sqlite":
        old = time.time() - 7200
        for path in service.files.directory.iterdir():
            os.utime(path, (old, old))
    else:
        async with service.blobs._db.acquire() as conn:  # type: ignore[attr-defined]
            await conn.execute("UPDATE file_blobs SET started_at = started_at - interval '2 hours'")



@contextlib.asynccontextmanager
async def workspace(service: ContainerService, container: StoredContainer, *, tenant: str,
                    parent: Path) -> AsyncIterator[Workspace]:
    """The container laid out in a directory of its own under ``parent``, as a sandbox call's /mnt/data is."""
    space = Workspace(service, container, tenant, Path(tempfile.mkdtemp(dir=parent)))
    await space.lay_out()
    yield space


@pytest.mark.parametrize("kind", KINDS)
async def test_expiry_restarts_with_use_and_the_purge_deletes_bytes(kind: str, tmp_path: Path,
                                                                   request: pytest.FixtureRequest) -> None:
    clock = Clock()
    async with service_over(kind, tmp_path, request, clock) as service:
        made = await service.create({"name": "c", "expires_after": {"anchor": "last_active_at", "minutes": 1}},
                                    tenant="")
        container = await service.container_for_files(made["id"], tenant="")
        stored = await service.put_bytes(container, "/mnt/data/a.txt", chunks(b"abc"), source="user", tenant="")
        clock.now += 50
        await service.touch(made["id"], tenant="")
        clock.now += 50  # 100 s after creation, 50 after the last use: alive
        assert (await service.retrieve(made["id"], tenant=""))["last_active_at"] == int(clock.now) - 50
        clock.now += 11
        with pytest.raises(APIError) as gone:
            await service.retrieve(made["id"], tenant="")
        assert gone.value.status == 404
        assert await service.purge_expired() == 1
        assert await service.blobs.open(stored.blob_id) is None
        assert await service.store.expired_containers(int(clock.now), 10) == []


@pytest.mark.parametrize("kind", KINDS)
async def test_limits_of_a_file_a_container_and_a_tenant(kind: str, tmp_path: Path,
                                                         request: pytest.FixtureRequest) -> None:
    async with service_over(kind, tmp_path, request, Clock(), max_stored_bytes=lambda tenant: 2000) as service:
        one = await service.container_for_files((await service.create({"name": "one"}, tenant="t"))["id"],
                                                tenant="t")
        with pytest.raises(APIError) as too_big:
            await service.put_bytes(one, "/mnt/data/big", chunks(b"x" * 600, b"x" * 600), source="user",
                                    tenant="t")
        assert too_big.value.status == 413
        await service.put_bytes(one, "/mnt/data/a", chunks(b"x" * 900), source="user", tenant="t")
        with pytest.raises(APIError) as full:
            await service.put_bytes(one, "/mnt/data/b", chunks(b"x" * 700), source="user", tenant="t")
        assert full.value.code == "storage_limit_exceeded"
        replaced = await service.put_bytes(one, "/mnt/data/a", chunks(b"y" * 950), source="assistant", tenant="t")
        assert replaced.bytes == 950 and replaced.source == "assistant"  # a replacement counts once
        two = await service.container_for_files((await service.create({"name": "two"}, tenant="t"))["id"],
                                                tenant="t")
        await service.put_bytes(two, "/mnt/data/c", chunks(b"z" * 1000), source="user", tenant="t")
        with pytest.raises(APIError) as tenant_full:
            await service.put_bytes(two, "/mnt/data/d", chunks(b"z" * 100), source="user", tenant="t")
        assert tenant_full.value.code == "storage_limit_exceeded"
        listed = await service.list_files(one.id, tenant="t", after=None, limit=10, order="asc")
        assert [(f["path"], f["bytes"]) for f in listed["data"]] == [("/mnt/data/a", 950)]
        assert await read(service, one.id, listed["data"][0]["id"], "t") == b"y" * 950


@pytest.mark.parametrize("kind", KINDS)
async def test_uploads_and_container_files_share_the_tenants_stored_bytes(kind: str, tmp_path: Path,
                                                                         request: pytest.FixtureRequest) -> None:
    """One ``max_stored_bytes`` for ``/v1/files`` and container files: an upload is refused at the chunk that
    crosses what the tenant's container files left (before it is written whole), and a container file for what
    its uploads hold."""
    async with service_over(kind, tmp_path, request, Clock(), container_bytes=5000,
                            max_stored_bytes=lambda tenant: 2000) as service:
        container = await service.container_for_files((await service.create({"name": "c"}, tenant="t"))["id"],
                                                      tenant="t")
        for path in ("a", "b"):
            await service.put_bytes(container, f"/mnt/data/{path}", chunks(b"x" * 750), source="user", tenant="t")
        async with service.files.receive(tenant="t") as upload:
            await upload.write(b"u" * 400)
            with pytest.raises(APIError) as crossing:
                await upload.write(b"u" * 200)
        assert crossing.value.code == "storage_limit_exceeded" and "1500 bytes in use" in crossing.value.message
        async with service.files.receive(tenant="t") as upload:
            await upload.write(b"u" * 500)
            kept = await service.files.create(upload, filename="u.txt", purpose="assistants", expires_after=None)
        with pytest.raises(APIError) as full:
            await service.put_bytes(container, "/mnt/data/c", chunks(b"c"), source="user", tenant="t")
        assert full.value.code == "storage_limit_exceeded" and "2000 bytes in use" in full.value.message
        await service.files.delete(kept["id"], tenant="t")
        await service.put_bytes(container, "/mnt/data/c", chunks(b"c" * 500), source="user", tenant="t")


@pytest.mark.parametrize("kind", KINDS)
async def test_auto_containers_made_at_once_stay_within_the_tenants_limit(kind: str, tmp_path: Path,
                                                                         request: pytest.FixtureRequest) -> None:
    """Six responses' ``auto`` containers made at once against ``max_containers: 3`` (the code interpreter's
    path, as each response starts): three are made, and the others get the refusal of a create over the limit."""
    async with service_over(kind, tmp_path, request, Clock(), connections=6,
                            max_containers=lambda tenant: 3) as service:
        interpreter = CodeInterpreter(service, Sandbox(SandboxLimits(), None, unavailable="not needed: no code runs"))
        auto = CodeToolOptions.from_tool({"type": "code_interpreter", "container": {"type": "auto"}}, 0)
        outcomes = await asyncio.gather(*(interpreter.container_for(auto, [], tenant="t") for _ in range(6)),
                                        return_exceptions=True)
        made = [outcome for outcome in outcomes if isinstance(outcome, str)]
        refused = [outcome for outcome in outcomes if isinstance(outcome, APIError)]
        assert len(made) == 3 and len(refused) == 3, outcomes
        assert {(error.status, error.code, error.param) for error in refused} == {(400, "container_limit_exceeded",
                                                                                  None)}
        listed = await service.list(tenant="t", after=None, limit=10, order="asc")
        assert sorted(c["id"] for c in listed["data"]) == sorted(made)


@pytest.mark.parametrize("kind", KINDS)
async def test_pages_of_containers(kind: str, tmp_path: Path, request: pytest.FixtureRequest) -> None:
    async with service_over(kind, tmp_path, request, Clock()) as service:
        made = [(await service.create({"name": f"c{i}"}, tenant="p"))["id"] for i in range(5)]
        first = await service.list(tenant="p", after=None, limit=2, order="desc")
        assert [c["id"] for c in first["data"]] == made[:2:-1][:2] and first["has_more"]
        rest = await service.list(tenant="p", after=first["last_id"], limit=10, order="desc")
        assert [c["id"] for c in rest["data"]] == made[2::-1] and not rest["has_more"]
        assert (await service.list(tenant="other", after=None, limit=10, order="asc"))["data"] == []
        with pytest.raises(APIError):
            await service.list(tenant="other", after=made[0], limit=10, order="asc")


@pytest.mark.parametrize("kind", KINDS)
async def test_a_runs_directory_is_written_back(kind: str, tmp_path: Path, request: pytest.FixtureRequest) -> None:
    async with service_over(kind, tmp_path, request, Clock()) as service:
        container = await service.container_for_files((await service.create({"name": "w"}, tenant=""))["id"],
                                                      tenant="")
        await service.put_bytes(container, "/mnt/data/keep.txt", chunks(b"keep"), source="user", tenant="")
        await service.put_bytes(container, "/mnt/data/sub/gone.txt", chunks(b"gone"), source="user", tenant="")
        secret = tmp_path / "host-secret"
        secret.write_text("host only")
        root = tmp_path / "run"
        root.mkdir()
        space = Workspace(service, container, "", root)
        await space.lay_out()
        assert (root / "keep.txt").read_bytes() == b"keep" and (root / "sub" / "gone.txt").exists()
        (root / "sub" / "gone.txt").unlink()
        (root / "new.csv").write_text("1,2")
        os.symlink(secret, root / "link.txt")
        with open(os.path.join(bytes(root), b"raw-\xff-name"), "wb") as raw:  # not UTF-8: named, not kept
            raw.write(b"x")
        changed, notes = await space.write_back()
        assert [file.path for file in changed] == ["/mnt/data/new.csv"]
        assert len(notes) == 1 and "not UTF-8" in notes[0]
        files = await service.store.all_files(container.id, tenant="")
        assert [(file.path, file.source) for file in files] == [("/mnt/data/keep.txt", "user"),
                                                                ("/mnt/data/new.csv", "assistant")]
        # the blobs of container files survive the files' sweep (they are no uploaded file's), also once past the
        # grace the sweep gives bytes without a row
        await age_blobs(service, kind)
        assert await service.files.sweep() == 0
        assert await read(service, container.id, files[1].id) == b"1,2"


@pytest.mark.parametrize("kind", KINDS)
async def test_a_5000_level_tree_is_written_back_without_recursion(kind: str, tmp_path: Path,
                                                                     request: pytest.FixtureRequest) -> None:
    async with service_over(kind, tmp_path, request, Clock()) as service:
        container = await service.container_for_files((await service.create({"name": "deep"}, tenant=""))["id"],
                                                      tenant="")
        root = tmp_path / "run"
        root.mkdir()
        space = Workspace(service, container, "", root)
        await space.lay_out()
        (root / "top.txt").write_text("kept")
        level = os.open(root, os.O_RDONLY)
        for _ in range(5000):  # deeper than any path can name, and than Python's recursion limit
            os.mkdir("a", dir_fd=level)
            deeper = os.open("a", os.O_RDONLY, dir_fd=level)
            os.close(level)
            level = deeper
        os.close(os.open("bottom.txt", os.O_WRONLY | os.O_CREAT, dir_fd=level))
        os.close(level)
        changed, notes = await space.write_back()
        assert [file.path for file in changed] == ["/mnt/data/top.txt"]
        assert any("deeper than a stored path can name" in note for note in notes)
        assert remove_tree(root) and not root.exists()  # and it goes, however deep


@pytest.mark.parametrize("kind", KINDS)
async def test_a_file_and_a_directory_of_one_name_are_refused(kind: str, tmp_path: Path,
                                                              request: pytest.FixtureRequest) -> None:
    """``a`` and ``a/b`` in one container cannot both be laid out for a run: the second is a 400 naming both
    paths, nothing of it is kept, and the container still runs."""
    async with service_over(kind, tmp_path, request, Clock()) as service:
        container = await service.container_for_files((await service.create({"name": "p"}, tenant=""))["id"],
                                                      tenant="")
        await service.put_bytes(container, "/mnt/data/a", chunks(b"file"), source="user", tenant="")
        await service.put_bytes(container, "/mnt/data/x/y/z", chunks(b"deep"), source="user", tenant="")
        for path, existing, param in (("/mnt/data/a/b", "/mnt/data/a", "file"),
                                      ("/mnt/data/a/b/c", "/mnt/data/a", "file"),
                                      ("/mnt/data/x", "/mnt/data/x/y/z", "file_id"),
                                      ("/mnt/data/x/y", "/mnt/data/x/y/z", "file")):
            with pytest.raises(APIError) as refused:
                await service.put_bytes(container, path, chunks(b"no"), source="user", tenant="", param=param)
            assert (refused.value.status, refused.value.code, refused.value.param) == (400, "path_conflict", param)
            assert path in refused.value.message and existing in refused.value.message
        # names that only share a prefix are no conflict; replacing a file at its own path is none either
        for path in ("/mnt/data/a-b", "/mnt/data/ab", "/mnt/data/a.txt", "/mnt/data/x/y0", "/mnt/data/a"):
            await service.put_bytes(container, path, chunks(b"ok"), source="user", tenant="")
        files = await service.store.all_files(container.id, tenant="")
        assert sorted(file.path for file in files) == ["/mnt/data/a", "/mnt/data/a-b", "/mnt/data/a.txt",
                                                       "/mnt/data/ab", "/mnt/data/x/y/z", "/mnt/data/x/y0"]
        await age_blobs(service, kind)
        assert await service.files.sweep() == 0  # every refused file's bytes were removed at once, none left over
        assert await service.store.known_blobs([f.blob_id for f in files]) == {f.blob_id for f in files}
        async with workspace(service, container, tenant="", parent=tmp_path) as space:
            assert (space.root / "a").read_bytes() == b"ok" and (space.root / "x" / "y" / "z").read_bytes() == b"deep"
            assert await space.write_back() == ([], [])


@pytest.mark.parametrize("kind", KINDS)
async def test_a_run_turning_a_file_into_a_directory_is_written_back(kind: str, tmp_path: Path,
                                                                     request: pytest.FixtureRequest) -> None:
    """The code may delete the file ``a`` and write ``a/b`` (or the other way round): the removed file goes before
    the new one is stored, so the new one is kept and the container holds what the run's directory held."""
    async with service_over(kind, tmp_path, request, Clock()) as service:
        container = await service.container_for_files((await service.create({"name": "t"}, tenant=""))["id"],
                                                      tenant="")
        await service.put_bytes(container, "/mnt/data/a", chunks(b"was a file"), source="user", tenant="")
        await service.put_bytes(container, "/mnt/data/d/e", chunks(b"was in a directory"), source="user",
                                tenant="")
        async with workspace(service, container, tenant="", parent=tmp_path) as space:
            (space.root / "a").unlink()
            (space.root / "a").mkdir()
            (space.root / "a" / "b").write_bytes(b"now in a directory")
            (space.root / "d" / "e").unlink()
            (space.root / "d").rmdir()
            (space.root / "d").write_bytes(b"now a file")
            changed, notes = await space.write_back()
        assert notes == [] and sorted(file.path for file in changed) == ["/mnt/data/a/b", "/mnt/data/d"]
        files = await service.store.all_files(container.id, tenant="")
        assert sorted((file.path, file.source) for file in files) == [("/mnt/data/a/b", "assistant"),
                                                                      ("/mnt/data/d", "assistant")]
        assert {await read(service, container.id, file.id) for file in files} == {b"now in a directory",
                                                                                  b"now a file"}


async def test_a_container_holding_both_from_before_still_runs(tmp_path: Path,
                                                               request: pytest.FixtureRequest) -> None:
    """Rows stored before the store refused such pairs (``a`` and ``a/b``): a run lays out what it can, names the
    file it could not lay out, and keeps it; the call is not failed."""
    async with service_over("sqlite", tmp_path, request, Clock()) as service:
        container = await service.container_for_files((await service.create({"name": "old"}, tenant=""))["id"],
                                                      tenant="")
        kept = await service.put_bytes(container, "/mnt/data/a", chunks(b"file"), source="user", tenant="")
        under = await service.put_bytes(container, "/mnt/data/c", chunks(b"under"), source="user", tenant="")
        async with service.store._db.writing() as conn:  # type: ignore[attr-defined]  # as an older bridge wrote
            await conn.execute("UPDATE container_files SET path = '/mnt/data/a/b' WHERE id = ?", (under.id,))
        async with workspace(service, container, tenant="", parent=tmp_path) as space:
            assert (space.root / "a").read_bytes() == b"file"
            changed, notes = await space.write_back()
        assert changed == [] and len(notes) == 1 and "/mnt/data/a/b was not laid out" in notes[0]
        assert sorted(f.id for f in await service.store.all_files(container.id, tenant="")) == sorted(
            [kept.id, under.id])


@pytest.mark.parametrize("kind", KINDS)
async def test_file_ids_are_checked_before_the_container_is_made(kind: str, tmp_path: Path,
                                                                 request: pytest.FixtureRequest) -> None:
    """A file whose name makes no container path is refused before anything is made: no container is left half
    made (with the files before it copied) behind the 400."""
    async with service_over(kind, tmp_path, request, Clock()) as service:
        ids = []
        for name in ("good.txt", " "):
            async with service.files.receive(tenant="") as upload:
                await upload.write(b"x")
                ids.append((await service.files.create(upload, filename=name, purpose="user_data",
                                                       expires_after=None))["id"])
        with pytest.raises(APIError) as refused:
            await service.create({"name": "c", "file_ids": ids}, tenant="")
        assert (refused.value.status, refused.value.param) == (400, "file_ids[1]")
        assert await service.store.count_containers(service.now(), tenant="") == 0


async def test_sparse_files_are_judged_by_their_apparent_size_before_a_byte_is_copied(
        tmp_path: Path, request: pytest.FixtureRequest) -> None:
    """Twenty files of 1,000 apparent bytes each and no real ones (``truncate -s``, as code can make them for free in
    its in-memory /mnt/data): write-back copies what fits the container's 1,500 bytes and no more, naming the rest;
    none of the refused files is written to the host's disk first."""
    async with service_over("sqlite", tmp_path, request, Clock()) as service:
        container = await service.container_for_files((await service.create({"name": "s"}, tenant=""))["id"],
                                                      tenant="")
        written = [0]
        real_writer = service.blobs.writer

        async def counting_writer(blob_id: str) -> Any:
            writer = await real_writer(blob_id)
            real_write = writer.write

            async def write(chunk: bytes) -> None:
                written[0] += len(chunk)
                await real_write(chunk)

            writer.write = write  # type: ignore[method-assign]
            return writer

        service.blobs.writer = counting_writer  # type: ignore[method-assign]
        root = tmp_path / "run"
        root.mkdir()
        space = Workspace(service, container, "", root)
        await space.lay_out()
        for index in range(20):
            with open(root / f"sparse-{index:02d}", "wb") as handle:
                handle.truncate(1000)
        changed, notes = await space.write_back()
        assert len(changed) == 1 and written[0] == 1000  # was 20,000 bytes written, most of them then refused
        assert sum("holes included" in note for note in notes) == 19, notes
        late = Workspace(service, container, "", root)
        (root / "late.txt").write_text("x")
        changed, notes = await late.write_back(deadline=time.monotonic() - 1)
        assert not changed and any("time ran out" in note for note in notes)
