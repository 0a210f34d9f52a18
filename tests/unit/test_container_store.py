"""The container store's rows on SQLite and on PostgreSQL (tests/unit/store_kinds.py): a container is its tenant's
only (another tenant's answers exactly as a missing one), an expired one answers as a missing one until the purge
deletes it, pages follow creation order, a file at a path already taken replaces that row in place, a path that
would be a file and a directory at once is refused, the tenant's container limit and the container's and the
tenant's byte limits are checked in the write's transaction (the tenant's bytes being its uploads' and its
container files' together, one budget), also under writes at once, and container blobs are known to the files'
bytes sweep (they share its storage)."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from responses_bridge.store.base import ContainerStore, FileStore
from responses_bridge.store.base_agents import AgentStore
from responses_bridge.store.postgres import PostgresDatabase
from responses_bridge.store.postgres.agents.agents import PostgresAgentStore
from responses_bridge.store.postgres.containers.containers import PostgresContainerStore
from responses_bridge.store.postgres.files.files import PostgresFileStore
from responses_bridge.store.records import (
    ContainerLimitExceeded,
    PathConflict,
    StorageLimitExceeded,
    StoredContainer,
    StoredContainerFile,
    StoredFile,
    UnknownCursor,
)
from responses_bridge.store.sqlite.agents.agents import SQLiteAgentStore
from responses_bridge.store.sqlite.containers.containers import SQLiteContainerStore
from responses_bridge.store.sqlite.files.files import SQLiteFileStore
from tests.unit.store_kinds import KINDS, postgres_database, postgres_database_url, sqlite_database

A, B = "tenant-a", "tenant-b"
T = 1_700_000_000  # creation time of every container below
MINUTES = 20
LIVE = T + 60  # a time at which every container made at T is live
EXPIRY = T + MINUTES * 60  # the first second a container made at T (and never used) is expired


@dataclass
class Stores:
    kind: str
    containers: ContainerStore
    files: FileStore
    agents: AgentStore


@pytest.fixture(params=KINDS)
async def stores(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[Stores]:
    if request.param == "sqlite":
        async with sqlite_database(tmp_path) as db:
            yield Stores("sqlite", SQLiteContainerStore(db), SQLiteFileStore(db), SQLiteAgentStore(db))
    else:
        async with postgres_database(request) as pg:
            yield Stores("postgres", PostgresContainerStore(pg), PostgresFileStore(pg), PostgresAgentStore(pg))


def a_container(container_id: str, *, at: int = T, minutes: int = MINUTES,
                memory_limit: str | None = None) -> StoredContainer:
    return StoredContainer(id=container_id, name=f"name of {container_id}", created_at=at, last_active_at=at,
                           expires_minutes=minutes, memory_limit=memory_limit)


def a_file(file_id: str, container_id: str, path: str, *, size: int = 10, at: int = LIVE,
           blob: str | None = None, source: str = "user") -> StoredContainerFile:
    return StoredContainerFile(id=file_id, container_id=container_id, path=f"/mnt/data/{path}", bytes=size,
                               created_at=at, source=source, blob_id=blob or f"file-blob-{file_id}")


async def put(store: ContainerStore, file: StoredContainerFile, *, tenant: str = A,
              max_container_bytes: int | None = None, max_stored_bytes: int | None = None) -> str | None:
    return await store.put_file(file, tenant=tenant, max_container_bytes=max_container_bytes,
                                max_stored_bytes=max_stored_bytes)


async def ids(store: ContainerStore, *, tenant: str = A, after: str | None = None, limit: int = 10,
              order: str = "asc", now: int = LIVE) -> tuple[list[str], bool]:
    page, more = await store.list_containers(now, tenant=tenant, after=after, limit=limit, order=order)
    return [container.id for container in page], more


# -- containers -------------------------------------------------------------------------------------------------

async def test_a_container_is_its_tenants_only(stores: Stores) -> None:
    store = stores.containers
    made = a_container("cntr_a1", memory_limit="4g")
    await store.create_container(made, tenant=A, max_containers=None)
    await put(store, a_file("cfile_1", "cntr_a1", "a.txt"))

    assert await store.get_container("cntr_a1", LIVE, tenant=A) == made
    assert await store.get_container("cntr_a1", LIVE, tenant=B) is None
    assert not await store.touch_container("cntr_a1", LIVE, tenant=B)
    assert await store.count_containers(LIVE, tenant=B) == 0 and await ids(store, tenant=B) == ([], False)
    with pytest.raises(UnknownCursor):  # another tenant's id is no cursor, as a missing one
        await store.list_containers(LIVE, tenant=B, after="cntr_a1", limit=10, order="asc")
    with pytest.raises(LookupError):
        await put(store, a_file("cfile_2", "cntr_a1", "b.txt"), tenant=B)
    assert await store.delete_container("cntr_a1", tenant=B) is None
    assert await store.stored_bytes(tenant=B) == 0
    # untouched by all of B's tries
    assert await store.get_container("cntr_a1", LIVE, tenant=A) == made
    assert [f.id for f in await store.all_files("cntr_a1", tenant=A)] == ["cfile_1"]
    assert await store.count_containers(LIVE, tenant=A) == 1 and await store.stored_bytes(tenant=A) == 10


async def test_pages_follow_creation_order(stores: Stores) -> None:
    store = stores.containers
    made = ["cntr_c", "cntr_a", "cntr_e", "cntr_b", "cntr_d"]  # one second: the order is the creation's, not ids'
    for container_id in made:
        await store.create_container(a_container(container_id), tenant=A, max_containers=None)
    await store.create_container(a_container("cntr_other"), tenant=B, max_containers=None)

    assert await ids(store, limit=2) == (made[:2], True)
    assert await ids(store, after=made[1], limit=2) == (made[2:4], True)
    assert await ids(store, after=made[3], limit=2) == (made[4:], False)
    assert await ids(store, limit=5) == (made, False)  # exactly the limit: nothing more
    newest_first = made[::-1]
    assert await ids(store, order="desc", limit=3) == (newest_first[:3], True)
    assert await ids(store, order="desc", after=newest_first[2], limit=3) == (newest_first[3:], False)
    assert await ids(store, after=made[-1]) == ([], False)
    with pytest.raises(UnknownCursor):
        await ids(store, after="cntr_missing")
    assert await store.count_containers(LIVE, tenant=A) == 5


async def test_the_container_limit_is_checked_with_the_insert(stores: Stores) -> None:
    """``max_containers`` counts the tenant's live containers at the new one's creation: another tenant's do not
    count, nor expired ones (not yet purged), and a refused create writes nothing."""
    store = stores.containers
    await store.create_container(a_container("cntr_b"), tenant=B, max_containers=None)
    await store.create_container(a_container("cntr_short", minutes=1), tenant=A, max_containers=2)
    await store.create_container(a_container("cntr_1"), tenant=A, max_containers=2)
    with pytest.raises(ContainerLimitExceeded) as exceeded:
        await store.create_container(a_container("cntr_2"), tenant=A, max_containers=2)
    assert exceeded.value.limit == 2
    with pytest.raises(ContainerLimitExceeded):
        await store.create_container(a_container("cntr_2"), tenant=A, max_containers=0)
    assert await ids(store, now=T + 59) == (["cntr_short", "cntr_1"], False)
    await store.create_container(a_container("cntr_2", at=T + 60), tenant=A, max_containers=2)  # cntr_short expired
    assert await ids(store, now=T + 61) == (["cntr_1", "cntr_2"], False)


async def test_creates_at_once_never_pass_the_container_limit_together(stores: Stores) -> None:
    """Eight creates at once against a limit of 3: exactly three containers are made (on PostgreSQL each create
    has a connection of its own, so the counts really run at once), while another tenant's are not held."""
    store = stores.containers
    results = await asyncio.gather(*(store.create_container(a_container(f"cntr_{n}"), tenant=A, max_containers=3)
                                     for n in range(8)),
                                   *(store.create_container(a_container(f"cntr_b{n}"), tenant=B, max_containers=3)
                                     for n in range(2)), return_exceptions=True)
    assert sum(isinstance(result, ContainerLimitExceeded) for result in results[:8]) == 5
    assert all(result is None or isinstance(result, ContainerLimitExceeded) for result in results)
    assert results[8:] == [None, None]
    assert await store.count_containers(LIVE, tenant=A) == 3 and await store.count_containers(LIVE, tenant=B) == 2


async def test_replicas_on_one_postgres_database_share_the_container_limit(request: pytest.FixtureRequest) -> None:
    """Two replicas' pools on one database: creates at once on both stay within the tenant's limit."""
    async with postgres_database_url(request) as url, PostgresDatabase(url) as one, PostgresDatabase(url) as two:
        replicas = [PostgresContainerStore(one), PostgresContainerStore(two)]
        results = await asyncio.gather(*(replicas[n % 2].create_container(a_container(f"cntr_{n}"), tenant=A,
                                                                          max_containers=3) for n in range(10)),
                                       return_exceptions=True)
        assert sum(isinstance(result, ContainerLimitExceeded) for result in results) == 7, results
        assert await replicas[0].count_containers(LIVE, tenant=A) == 3


async def test_an_expired_container_answers_as_missing_until_purged(stores: Stores) -> None:
    store = stores.containers
    await store.create_container(a_container("cntr_short", minutes=1), tenant=A, max_containers=None)
    await store.create_container(a_container("cntr_long"), tenant=A, max_containers=None)
    await store.create_container(a_container("cntr_b", minutes=1), tenant=B, max_containers=None)
    await put(store, a_file("cfile_1", "cntr_short", "one.txt", at=T))
    await put(store, a_file("cfile_2", "cntr_short", "two.txt", at=T))
    expired = T + 60

    assert await store.get_container("cntr_short", expired - 1, tenant=A) is not None  # the last live second
    assert await store.get_container("cntr_short", expired, tenant=A) is None
    assert await ids(store, now=expired) == (["cntr_long"], False)
    assert await store.count_containers(expired, tenant=A) == 1
    with pytest.raises(UnknownCursor):
        await ids(store, after="cntr_short", now=expired)
    assert not await store.touch_container("cntr_short", expired, tenant=A)  # a use cannot revive it
    with pytest.raises(LookupError):
        await put(store, a_file("cfile_3", "cntr_short", "three.txt", at=expired))
    # the purge's view: every tenant's expired containers, not the live ones
    assert sorted(await store.expired_containers(expired, 10)) == [("cntr_b", B), ("cntr_short", A)]
    assert len(await store.expired_containers(expired, 1)) == 1
    assert await store.expired_containers(expired - 1, 10) == []
    # deleting an expired container is allowed (the purge does it) and gives its blobs to remove
    deleted = await store.delete_container("cntr_short", tenant=A)
    assert deleted is not None and sorted(deleted) == ["file-blob-cfile_1", "file-blob-cfile_2"]
    assert await store.known_blobs(["file-blob-cfile_1", "file-blob-cfile_2"]) == set()
    assert await store.stored_bytes(tenant=A) == 0
    assert await store.delete_container("cntr_short", tenant=A) is None
    assert await store.expired_containers(expired, 10) == [("cntr_b", B)]
    assert await store.delete_container("cntr_b", tenant=B) == []  # no files: nothing to remove, but it was there


async def test_a_use_restarts_the_expiry(stores: Stores) -> None:
    store = stores.containers
    await store.create_container(a_container("cntr_1", minutes=1), tenant=A, max_containers=None)
    assert await store.touch_container("cntr_1", T + 50, tenant=A)
    found = await store.get_container("cntr_1", T + 100, tenant=A)  # 100 s after creation, 50 after the use
    assert found is not None and found.last_active_at == T + 50 and found.expires_at() == T + 110
    assert await store.touch_container("cntr_1", T + 10, tenant=A)  # a late, older use does not move it back
    assert (await store.get_container("cntr_1", T + 100, tenant=A)) == found
    assert await store.expired_containers(T + 100, 10) == []
    assert await store.get_container("cntr_1", T + 110, tenant=A) is None


async def test_a_live_containers_network_policy_is_replaced_for_its_tenant_only(stores: Stores) -> None:
    store = stores.containers
    await store.create_container(a_container("cntr_net", minutes=1), tenant=A, max_containers=None)
    assert not await store.set_container_network("cntr_net", '{"type": "allowlist"}', LIVE, tenant=B)
    assert not await store.set_container_network("cntr_net", '{"type": "allowlist"}', T + 60, tenant=A)  # expired
    assert await store.set_container_network("cntr_net", '{"type": "allowlist"}', T + 30, tenant=A)
    found = await store.get_container("cntr_net", T + 30, tenant=A)
    assert found is not None and found.network_policy == '{"type": "allowlist"}'
    assert await store.set_container_network("cntr_net", None, T + 30, tenant=A)
    assert (await store.get_container("cntr_net", T + 30, tenant=A)).network_policy is None  # type: ignore[union-attr]


async def test_a_containers_packages_blob_is_kept_known_and_deleted_with_it(stores: Stores) -> None:
    store = stores.containers
    await store.create_container(a_container("cntr_pkg"), tenant=A, max_containers=None)
    assert not await store.set_container_packages("cntr_pkg", "file-packages", LIVE, tenant=B)
    assert not await store.set_container_packages("cntr_pkg", "file-packages", EXPIRY, tenant=A)  # expired
    assert await store.set_container_packages("cntr_pkg", "file-packages", LIVE, tenant=A)
    found = await store.get_container("cntr_pkg", LIVE, tenant=A)
    assert found is not None and found.packages_blob == "file-packages"
    assert await stores.files.known_ids(["file-packages", "file-other"]) == {"file-packages"}  # never swept
    assert await store.delete_container("cntr_pkg", tenant=B) is None
    assert await store.delete_container("cntr_pkg", tenant=A) == ["file-packages"]
    assert await stores.files.known_ids(["file-packages"]) == set()


# -- files ------------------------------------------------------------------------------------------------------

async def test_a_file_at_a_taken_path_replaces_the_row_under_the_new_id(stores: Stores) -> None:
    store = stores.containers
    await store.create_container(a_container("cntr_1"), tenant=A, max_containers=None)
    first = a_file("cfile_1", "cntr_1", "a.txt", size=5, blob="file-old")
    assert await put(store, first) is None
    assert await put(store, a_file("cfile_2", "cntr_1", "b.txt")) is None
    replaced = await put(store, a_file("cfile_3", "cntr_1", "a.txt", size=7, at=LIVE + 5, blob="file-new",
                                       source="assistant"))
    assert replaced == "file-old"

    # the new file at the path, under its own id and creation; the replaced one's id serves nothing any more
    kept = await store.get_file("cntr_1", "cfile_3", tenant=A)
    assert kept == StoredContainerFile(id="cfile_3", container_id="cntr_1", path="/mnt/data/a.txt", bytes=7,
                                       created_at=LIVE + 5, source="assistant", blob_id="file-new")
    assert await store.get_file("cntr_1", "cfile_1", tenant=A) is None
    assert await store.known_blobs(["file-old", "file-new"]) == {"file-new"}
    assert await store.stored_bytes(tenant=A) == 17


async def test_files_by_path_and_in_pages(stores: Stores) -> None:
    store = stores.containers
    await store.create_container(a_container("cntr_1"), tenant=A, max_containers=None)
    await store.create_container(a_container("cntr_2"), tenant=A, max_containers=None)
    for file_id, path in [("cfile_z", "z.txt"), ("cfile_a", "a.txt"), ("cfile_m", "sub/m.txt")]:
        await put(store, a_file(file_id, "cntr_1", path))
    await put(store, a_file("cfile_other", "cntr_2", "a.txt"))

    assert [f.path for f in await store.all_files("cntr_1", tenant=A)] == [
        "/mnt/data/a.txt", "/mnt/data/sub/m.txt", "/mnt/data/z.txt"]
    page, more = await store.list_files("cntr_1", tenant=A, after=None, limit=2, order="asc")
    assert [f.id for f in page] == ["cfile_z", "cfile_a"] and more
    page, more = await store.list_files("cntr_1", tenant=A, after="cfile_a", limit=2, order="asc")
    assert [f.id for f in page] == ["cfile_m"] and not more
    page, more = await store.list_files("cntr_1", tenant=A, after=None, limit=3, order="desc")
    assert [f.id for f in page] == ["cfile_m", "cfile_a", "cfile_z"] and not more
    with pytest.raises(UnknownCursor):  # another container's file is no cursor
        await store.list_files("cntr_1", tenant=A, after="cfile_other", limit=2, order="asc")
    assert await store.get_file("cntr_1", "cfile_other", tenant=A) is None  # files are reached by their container


async def test_a_file_is_its_containers_tenants_only(stores: Stores) -> None:
    store = stores.containers
    await store.create_container(a_container("cntr_1"), tenant=A, max_containers=None)
    await put(store, a_file("cfile_1", "cntr_1", "a.txt"))

    assert await store.get_file("cntr_1", "cfile_1", tenant=B) is None
    assert await store.all_files("cntr_1", tenant=B) == []
    assert await store.list_files("cntr_1", tenant=B, after=None, limit=10, order="asc") == ([], False)
    assert await store.delete_file("cntr_1", "cfile_1", tenant=B) is None
    assert await store.delete_file("cntr_other", "cfile_1", tenant=A) is None  # not through another container
    assert await store.get_file("cntr_1", "cfile_1", tenant=A) is not None  # untouched
    assert await store.delete_file("cntr_1", "cfile_1", tenant=A) == "file-blob-cfile_1"
    assert await store.delete_file("cntr_1", "cfile_1", tenant=A) is None
    assert await store.all_files("cntr_1", tenant=A) == [] and await store.stored_bytes(tenant=A) == 0


async def test_a_file_needs_a_live_container(stores: Stores) -> None:
    store = stores.containers
    with pytest.raises(LookupError):
        await put(store, a_file("cfile_1", "cntr_never", "a.txt"))
    await store.create_container(a_container("cntr_1"), tenant=A, max_containers=None)
    assert await store.delete_container("cntr_1", tenant=A) == []
    with pytest.raises(LookupError):
        await put(store, a_file("cfile_1", "cntr_1", "a.txt"))
    await store.create_container(a_container("cntr_2"), tenant=A, max_containers=None)
    with pytest.raises(LookupError):  # written when the container has expired
        await put(store, a_file("cfile_1", "cntr_2", "a.txt", at=EXPIRY))
    assert await store.known_blobs(["file-blob-cfile_1"]) == set()


async def test_a_path_is_a_file_or_a_directory_never_both(stores: Stores) -> None:
    store = stores.containers
    await store.create_container(a_container("cntr_1"), tenant=A, max_containers=None)
    await store.create_container(a_container("cntr_2"), tenant=A, max_containers=None)
    await put(store, a_file("cfile_1", "cntr_1", "a"))
    await put(store, a_file("cfile_2", "cntr_1", "d/e/f"))
    for file_id, path, existing in (("cfile_3", "a/b", "a"), ("cfile_4", "a/b/c", "a"), ("cfile_5", "d", "d/e/f"),
                                    ("cfile_6", "d/e", "d/e/f")):
        with pytest.raises(PathConflict) as conflict:
            await put(store, a_file(file_id, "cntr_1", path))
        assert (conflict.value.path, conflict.value.existing) == (f"/mnt/data/{path}", f"/mnt/data/{existing}")
    # a shared prefix is no directory; another container's files are no conflict; the same path is a replacement
    for file_id, container_id, path in (("cfile_7", "cntr_1", "a-b"), ("cfile_8", "cntr_1", "ab"),
                                        ("cfile_9", "cntr_1", "d/e0"), ("cfile_10", "cntr_1", "d/é"),
                                        ("cfile_11", "cntr_2", "a/b"), ("cfile_12", "cntr_1", "a")):
        await put(store, a_file(file_id, container_id, path))
    assert sorted(f.path for f in await store.all_files("cntr_1", tenant=A)) == [
        "/mnt/data/a", "/mnt/data/a-b", "/mnt/data/ab", "/mnt/data/d/e/f", "/mnt/data/d/e0", "/mnt/data/d/é"]


async def test_a_file_and_a_directory_put_at_once_are_never_both_kept(stores: Stores) -> None:
    """``a`` and ``a/b`` put at once, many times over: one of each pair is kept, the other refused (the check and
    the write are one transaction, so neither can miss the other)."""
    store = stores.containers
    await store.create_container(a_container("cntr_1"), tenant=A, max_containers=None)
    pairs = [(a_file(f"cfile_f{n}", "cntr_1", f"p{n}"), a_file(f"cfile_d{n}", "cntr_1", f"p{n}/x"))
             for n in range(10)]
    results = await asyncio.gather(*(put(store, file) for pair in pairs for file in pair), return_exceptions=True)
    assert all(result is None or isinstance(result, PathConflict) for result in results), results
    assert sum(isinstance(result, PathConflict) for result in results) == 10
    kept = {f.path for f in await store.all_files("cntr_1", tenant=A)}
    assert len(kept) == 10 and all(len({file.path for file in pair} & kept) == 1 for pair in pairs)


# -- limits -----------------------------------------------------------------------------------------------------

async def test_the_containers_bytes_limit(stores: Stores) -> None:
    store = stores.containers
    await store.create_container(a_container("cntr_1"), tenant=A, max_containers=None)
    await store.create_container(a_container("cntr_2"), tenant=A, max_containers=None)
    await put(store, a_file("cfile_1", "cntr_1", "a", size=60), max_container_bytes=100)
    with pytest.raises(StorageLimitExceeded) as exceeded:
        await put(store, a_file("cfile_2", "cntr_1", "b", size=41), max_container_bytes=100)
    assert (exceeded.value.limit, exceeded.value.used) == (100, 60)
    assert await store.get_file("cntr_1", "cfile_2", tenant=A) is None  # nothing was written
    await put(store, a_file("cfile_2", "cntr_1", "b", size=40), max_container_bytes=100)  # exactly at the limit
    await put(store, a_file("cfile_3", "cntr_2", "a", size=100), max_container_bytes=100)  # its own container's
    # a replacement counts once: without the replaced row the container holds 40
    with pytest.raises(StorageLimitExceeded) as exceeded:
        await put(store, a_file("cfile_4", "cntr_1", "a", size=61, blob="file-refused"), max_container_bytes=100)
    assert (exceeded.value.limit, exceeded.value.used) == (100, 40)
    assert (await store.get_file("cntr_1", "cfile_1", tenant=A)).bytes == 60  # type: ignore[union-attr]
    assert await put(store, a_file("cfile_4", "cntr_1", "a", size=60, blob="file-new"),
                     max_container_bytes=100) == "file-blob-cfile_1"
    assert await store.known_blobs(["file-refused", "file-new"]) == {"file-new"}


async def test_the_tenants_bytes_limit(stores: Stores) -> None:
    store = stores.containers
    for container_id, tenant in [("cntr_a1", A), ("cntr_a2", A), ("cntr_b", B)]:
        await store.create_container(a_container(container_id), tenant=tenant, max_containers=None)
    await put(store, a_file("cfile_1", "cntr_a1", "a", size=100), max_stored_bytes=150)
    await put(store, a_file("cfile_b", "cntr_b", "a", size=140), tenant=B, max_stored_bytes=150)  # B's are B's
    with pytest.raises(StorageLimitExceeded) as exceeded:  # across the tenant's containers
        await put(store, a_file("cfile_2", "cntr_a2", "a", size=51), max_stored_bytes=150, max_container_bytes=1000)
    assert (exceeded.value.limit, exceeded.value.used) == (150, 100)
    await put(store, a_file("cfile_2", "cntr_a2", "a", size=50), max_stored_bytes=150)
    assert await store.stored_bytes(tenant=A) == 150 and await store.stored_bytes(tenant=B) == 140
    # replacing within the limit: the replaced row's bytes are not counted
    await put(store, a_file("cfile_3", "cntr_a1", "a", size=90), max_stored_bytes=150)
    assert await store.stored_bytes(tenant=A) == 140
    # a deleted container's files no longer count
    await store.delete_container("cntr_a1", tenant=A)
    assert await store.stored_bytes(tenant=A) == 50


async def test_puts_at_once_never_pass_the_limit_together(stores: Stores) -> None:
    """Twenty files of 10 bytes put at once against a container limit of 55: exactly five are stored (on
    PostgreSQL each put has a connection of its own, so the checks really run at once)."""
    store = stores.containers
    await store.create_container(a_container("cntr_1"), tenant=A, max_containers=None)
    results = await asyncio.gather(*(put(store, a_file(f"cfile_{n:02d}", "cntr_1", f"{n}.txt"),
                                         max_container_bytes=55) for n in range(20)), return_exceptions=True)
    refused = [result for result in results if isinstance(result, StorageLimitExceeded)]
    assert len(refused) == 15 and all(result is None or isinstance(result, StorageLimitExceeded)
                                      for result in results)
    assert all(exceeded.used == 50 for exceeded in refused)
    assert len(await store.all_files("cntr_1", tenant=A)) == 5 and await store.stored_bytes(tenant=A) == 50


# -- one stored-bytes budget for files and container files ------------------------------------------------------

def an_upload(file_id: str, *, size: int = 10, at: int = LIVE, expires_at: int | None = None) -> StoredFile:
    return StoredFile(id=file_id, created_at=at, bytes=size, filename=f"{file_id}.txt", purpose="assistants",
                      expires_at=expires_at)


async def test_files_and_container_files_share_the_stored_bytes_limit(stores: Stores) -> None:
    """``max_stored_bytes`` is one budget: a container file is refused for the tenant's uploads' bytes and an
    upload for its container files' bytes; another tenant's bytes, a replaced container file and an expired
    upload do not count."""
    containers, files = stores.containers, stores.files
    for container_id, tenant in [("cntr_a", A), ("cntr_b", B)]:
        await containers.create_container(a_container(container_id), tenant=tenant, max_containers=None)
    await files.add_file(an_upload("file-a1", size=60), tenant=A, max_stored_bytes=100)
    await put(containers, a_file("cfile_b", "cntr_b", "b", size=90), tenant=B, max_stored_bytes=100)
    with pytest.raises(StorageLimitExceeded) as exceeded:
        await put(containers, a_file("cfile_1", "cntr_a", "a", size=41), max_stored_bytes=100)
    assert (exceeded.value.limit, exceeded.value.used) == (100, 60)
    await put(containers, a_file("cfile_1", "cntr_a", "a", size=40), max_stored_bytes=100)  # exactly at the limit
    assert await files.stored_bytes(LIVE, tenant=A) == 100 and await containers.stored_bytes(tenant=A) == 40
    with pytest.raises(StorageLimitExceeded) as exceeded:
        await files.add_file(an_upload("file-a2", size=1), tenant=A, max_stored_bytes=100)
    assert (exceeded.value.limit, exceeded.value.used) == (100, 100)
    await put(containers, a_file("cfile_2", "cntr_a", "a", size=40), max_stored_bytes=100)  # replaces cfile_1
    # an upload that expires stops counting then, as it stops being readable
    await files.delete_file("file-a1", tenant=A)
    await files.add_file(an_upload("file-a3", size=60, expires_at=LIVE + 10), tenant=A, max_stored_bytes=100)
    assert await files.stored_bytes(LIVE, tenant=A) == 100
    await files.add_file(an_upload("file-a4", size=60, at=LIVE + 10), tenant=A, max_stored_bytes=100)
    assert await files.stored_bytes(LIVE + 10, tenant=A) == 100 and await files.stored_bytes(LIVE, tenant=B) == 90


async def test_uploads_and_container_files_at_once_never_pass_the_limit_together(stores: Stores) -> None:
    """Ten uploads and ten container files of 10 bytes each, all at once against a limit of 55: exactly five are
    stored, whichever kind they are (on PostgreSQL each write has a connection of its own)."""
    await stores.containers.create_container(a_container("cntr_1"), tenant=A, max_containers=None)
    results = await asyncio.gather(
        *(stores.files.add_file(an_upload(f"file-{n:02d}"), tenant=A, max_stored_bytes=55) for n in range(10)),
        *(put(stores.containers, a_file(f"cfile_{n:02d}", "cntr_1", f"{n}.txt"), max_stored_bytes=55)
          for n in range(10)), return_exceptions=True)
    refused = [result for result in results if isinstance(result, StorageLimitExceeded)]
    assert len(refused) == 15 and all(result is None or isinstance(result, StorageLimitExceeded)
                                      for result in results)
    assert all(exceeded.used == 50 for exceeded in refused)
    assert await stores.files.stored_bytes(LIVE, tenant=A) == 50


async def test_replicas_on_one_postgres_database_share_the_stored_bytes_limit(
        request: pytest.FixtureRequest) -> None:
    """Uploads on one replica and container files on another, at once: together within the tenant's limit."""
    async with postgres_database_url(request) as url, PostgresDatabase(url) as one, PostgresDatabase(url) as two:
        files, containers = PostgresFileStore(one), PostgresContainerStore(two)
        await containers.create_container(a_container("cntr_1"), tenant=A, max_containers=None)
        results = await asyncio.gather(
            *(files.add_file(an_upload(f"file-{n:02d}"), tenant=A, max_stored_bytes=45) for n in range(8)),
            *(put(containers, a_file(f"cfile_{n:02d}", "cntr_1", f"{n}.txt"), max_stored_bytes=45)
              for n in range(8)), return_exceptions=True)
        assert sum(isinstance(result, StorageLimitExceeded) for result in results) == 12, results
        assert await files.stored_bytes(LIVE, tenant=A) == 40


# -- the files' bytes sweep -------------------------------------------------------------------------------------

async def test_container_blobs_are_known_to_the_files_sweep(stores: Stores) -> None:
    store = stores.containers
    await store.create_container(a_container("cntr_1"), tenant=A, max_containers=None)
    await put(store, a_file("cfile_1", "cntr_1", "a.txt", blob="file-container"))
    await stores.files.add_file(StoredFile(id="file-upload", created_at=T, bytes=3, filename="u.txt",
                                           purpose="assistants", expires_at=None), tenant=A, max_stored_bytes=None)
    unknown = [f"file-unknown-{n}" for n in range(1200)]  # more than one batch of SQLite's bound parameters
    asked = [*unknown[:700], "file-container", *unknown[700:], "file-upload"]

    assert await store.known_blobs(asked) == {"file-container"}
    assert await store.known_blobs([]) == set()
    assert await stores.files.known_ids(asked) == {"file-container", "file-upload"}
    await store.delete_container("cntr_1", tenant=A)
    assert await stores.files.known_ids(asked) == {"file-upload"}


async def test_a_sessions_artifact_bytes_are_known_to_the_files_sweep(stores: Stores) -> None:
    """An artifact keeps its bytes in its record's ``_private.blob_id`` (services/agents/environments/environments.py):
    the sweep took them for an orphan and removed them an hour after the turn."""
    artifact = {"id": "art_1", "object": "agent.session.artifact", "_private": {"blob_id": "file-artifact"}}
    await stores.agents.put("artifact", "art_1", artifact, tenant=A, parent="sess_1", scope="cntr_1")
    await stores.agents.put("session", "sess_1", {"id": "sess_1", "_private": {"last_response_id": "resp_1"}},
                            tenant=A)
    asked = ["file-artifact", "file-other", "resp_1"]
    assert await stores.files.known_ids(asked) == {"file-artifact"}
    await stores.agents.delete("session", "sess_1", tenant=A)  # its artifacts go with it, and their bytes' claim
    assert await stores.files.known_ids(asked) == set()
