"""Containers and their files' rows on PostgreSQL (:class:`~responses_bridge.store.base.ContainerStore`), shared
by every replica, with the same rules as on SQLite (store/sqlite/containers/containers.py): live while
``now < last_active_at + expires_minutes * 60``; files reached through their container's tenant. Creating a
container counts the tenant's live containers under the tenant's quota lock (store/postgres/quota.py), so creates
at once on any replicas pass ``max_containers`` one at a time. Adding a file locks its container's row first, so
two replicas writing one container's files check its limit, and that no file is a directory of another's path
(``a`` beside ``a/b``), one at a time; the tenant's stored bytes (its files' and container files' together) are
checked under the same quota lock as an upload's.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from ...records import (
    ContainerLimitExceeded,
    PathConflict,
    StorageLimitExceeded,
    StoredContainer,
    StoredContainerFile,
    UnknownCursor,
    parent_paths,
)
from ..database import PostgresDatabase
from ..quota import check_stored_bytes, lock_tenant_quota, stored_bytes
from ..sql import pg_texts

_CONTAINER = "id, name, created_at, last_active_at, expires_minutes, memory_limit, network_policy, packages_blob"
_FILE = "id, container_id, path, bytes, created_at, source, blob_id"
_LIVE = "last_active_at + expires_minutes * 60 > $1"
_TENANT_BYTES = ("SELECT coalesce(sum(f.bytes), 0) FROM container_files AS f JOIN containers AS c "
                 "ON c.id = f.container_id WHERE c.tenant = $1")
_OWNED = "container_id IN (SELECT id FROM containers WHERE id = $1 AND tenant = $2)"


def _container(row: Any) -> StoredContainer:
    return StoredContainer(id=row[0], name=row[1], created_at=int(row[2]), last_active_at=int(row[3]),
                           expires_minutes=int(row[4]), memory_limit=row[5], network_policy=row[6],
                           packages_blob=row[7])


def _file(row: Any) -> StoredContainerFile:
    return StoredContainerFile(id=row[0], container_id=row[1], path=row[2], bytes=int(row[3]),
                               created_at=int(row[4]), source=row[5], blob_id=row[6])


class PostgresContainerStore:
    """:class:`ContainerStore` on a :class:`PostgresDatabase`."""

    def __init__(self, db: PostgresDatabase) -> None:
        self._db = db

    async def create_container(self, container: StoredContainer, *, tenant: str, max_containers: int | None) -> None:
        async with self._db.transaction("create_container") as conn:
            if max_containers is not None:
                await lock_tenant_quota(conn, tenant)  # the count below then sees every create before this one
                live = await conn.fetchval(f"SELECT count(*) FROM containers WHERE {_LIVE} AND tenant = $2",
                                           container.created_at, tenant)
                if live >= max_containers:
                    raise ContainerLimitExceeded(max_containers)
            await conn.execute(f"INSERT INTO containers ({_CONTAINER}, tenant) VALUES ($1, $2, $3, $4, $5, $6, $7, "
                               "$8, $9)", container.id, container.name, container.created_at,
                               container.last_active_at, container.expires_minutes, container.memory_limit,
                               container.network_policy, container.packages_blob, tenant)

    async def get_container(self, container_id: str, now: int, *, tenant: str) -> StoredContainer | None:
        row = await self._db.fetch_row("get_container",
                                       f"SELECT {_CONTAINER} FROM containers WHERE {_LIVE} AND id = $2 "
                                       "AND tenant = $3", now, container_id, tenant)
        return _container(row) if row is not None else None

    async def list_containers(self, now: int, *, tenant: str, after: str | None, limit: int,
                              order: str) -> tuple[list[StoredContainer], bool]:
        rows, has_more = await self._page(
            "list_containers", f"SELECT {_CONTAINER} FROM containers WHERE {_LIVE} AND tenant = $2",
            f"SELECT seq FROM containers WHERE {_LIVE} AND tenant = $2 AND id = $3", [now, tenant], after=after,
            limit=limit, order=order)
        return [_container(row) for row in rows], has_more

    async def _page(self, operation: str, sql: str, cursor_sql: str, args: list[Any], *, after: str | None,
                    limit: int, order: str) -> tuple[list[Any], bool]:
        """A page of ``sql``'s rows (two arguments, ``args``) in ``seq`` order, after the row ``cursor_sql``
        finds for ``after`` as its third argument (``UnknownCursor`` when none), and whether more follow."""
        ascending = order == "asc"
        args = [*args, limit + 1]
        async with self._db.acquire(operation) as conn:
            if after is not None:
                cursor = await conn.fetchval(cursor_sql, args[0], args[1], after)
                if cursor is None:
                    raise UnknownCursor(after)
                args.append(cursor)
                sql += f" AND seq {'>' if ascending else '<'} $4"
            sql += f" ORDER BY seq {'ASC' if ascending else 'DESC'} LIMIT $3"
            rows = await conn.fetch(sql, *args)
        return rows[:limit], len(rows) > limit

    async def touch_container(self, container_id: str, now: int, *, tenant: str) -> bool:
        async with self._db.acquire("touch_container") as conn:
            status = await conn.execute(f"UPDATE containers SET last_active_at = greatest(last_active_at, $1) "
                                        f"WHERE {_LIVE} AND id = $2 AND tenant = $3", now, container_id, tenant)
        return not status.endswith(" 0")

    async def set_container_network(self, container_id: str, network_policy: str | None, now: int, *,
                                    tenant: str) -> bool:
        async with self._db.acquire("set_container_network") as conn:
            status = await conn.execute(f"UPDATE containers SET network_policy = $4 WHERE {_LIVE} AND id = $2 "
                                        f"AND tenant = $3", now, container_id, tenant, network_policy)
        return not status.endswith(" 0")

    async def set_container_packages(self, container_id: str, blob_id: str, now: int, *, tenant: str,
                                     size: int = 0, max_stored_bytes: int | None = None) -> bool:
        async with self._db.transaction("set_container_packages") as conn:
            await check_stored_bytes(conn, tenant, now, size, max_stored_bytes)
            status = await conn.execute(f"UPDATE containers SET packages_blob = $4, packages_bytes = $5 "
                                        f"WHERE {_LIVE} AND id = $2 AND tenant = $3", now, container_id, tenant,
                                        blob_id, size)
        return not status.endswith(" 0")

    async def delete_container(self, container_id: str, *, tenant: str) -> list[str] | None:
        async with self._db.transaction("delete_container") as conn:
            found = await conn.fetchrow("SELECT id, packages_blob FROM containers WHERE id = $1 AND tenant = $2 "
                                        "FOR UPDATE", container_id, tenant)
            if found is None:
                return None
            installed = [str(found[1])] if found[1] else []  # the packages installed at its start
            rows = await conn.fetch("DELETE FROM container_files WHERE container_id = $1 RETURNING blob_id",
                                    container_id)
            rows += await conn.fetch(  # the skills it was made with (skills.py)
                "DELETE FROM container_skills WHERE container_id = $1 RETURNING blob_id", container_id)
            await conn.execute("DELETE FROM containers WHERE id = $1", container_id)
        return [str(row[0]) for row in rows] + installed

    async def count_containers(self, now: int, *, tenant: str) -> int:
        async with self._db.acquire("count_containers") as conn:
            return int(await conn.fetchval(f"SELECT count(*) FROM containers WHERE {_LIVE} AND tenant = $2",
                                           now, tenant))

    async def put_file(self, file: StoredContainerFile, *, tenant: str, max_container_bytes: int | None,
                       max_stored_bytes: int | None) -> str | None:
        async with self._db.transaction("put_container_file") as conn:
            # live at the file's creation (the service's now): an expired container is as gone as a deleted one
            if await conn.fetchval(f"SELECT id FROM containers WHERE {_LIVE} AND id = $2 AND tenant = $3 FOR UPDATE",
                                   file.created_at, file.container_id, tenant) is None:
                raise LookupError(file.container_id)
            # under the container's row lock: two writes cannot make `a` and `a/b` at once
            clash = await conn.fetchval(
                "SELECT path FROM container_files WHERE container_id = $1 AND (path = ANY($2::text[]) "
                "OR left(path, length($3)) = $3) LIMIT 1", file.container_id, pg_texts(parent_paths(file.path)),
                file.path + "/")
            if clash is not None:
                raise PathConflict(file.path, str(clash))
            old = await conn.fetchrow("SELECT bytes, blob_id FROM container_files WHERE container_id = $1 "
                                      "AND path = $2", file.container_id, file.path)
            replaced = int(old[0]) if old is not None else 0
            if max_container_bytes is not None:
                used = int(await conn.fetchval("SELECT coalesce(sum(bytes), 0) FROM container_files WHERE "
                                               "container_id = $1", file.container_id)) - replaced
                if used + file.bytes > max_container_bytes:
                    raise StorageLimitExceeded(max_container_bytes, used)
            if max_stored_bytes is not None:  # the tenant's files and container files: one budget, one lock
                await lock_tenant_quota(conn, tenant)
                used = await stored_bytes(conn, tenant, file.created_at) - replaced
                if used + file.bytes > max_stored_bytes:
                    raise StorageLimitExceeded(max_stored_bytes, used)
            if old is None:
                await conn.execute(f"INSERT INTO container_files ({_FILE}) VALUES ($1, $2, $3, $4, $5, $6, $7)",
                                   file.id, file.container_id, file.path, file.bytes, file.created_at, file.source,
                                   file.blob_id)
            else:
                # a new file at the path, under the new id: an id never serves other bytes than it did
                await conn.execute("UPDATE container_files SET id = $1, created_at = $2, bytes = $3, source = $4, "
                                   "blob_id = $5 WHERE container_id = $6 AND path = $7", file.id, file.created_at,
                                   file.bytes, file.source, file.blob_id, file.container_id, file.path)
        return str(old[1]) if old is not None else None

    async def get_file(self, container_id: str, file_id: str, *, tenant: str) -> StoredContainerFile | None:
        row = await self._db.fetch_row("get_container_file",
                                       f"SELECT {_FILE} FROM container_files WHERE {_OWNED} AND id = $3",
                                       container_id, tenant, file_id)
        return _file(row) if row is not None else None

    async def list_files(self, container_id: str, *, tenant: str, after: str | None, limit: int,
                         order: str) -> tuple[list[StoredContainerFile], bool]:
        rows, has_more = await self._page(
            "list_container_files", f"SELECT {_FILE} FROM container_files WHERE {_OWNED}",
            f"SELECT seq FROM container_files WHERE {_OWNED} AND id = $3", [container_id, tenant], after=after,
            limit=limit, order=order)
        return [_file(row) for row in rows], has_more

    async def all_files(self, container_id: str, *, tenant: str) -> list[StoredContainerFile]:
        async with self._db.acquire("container_files") as conn:
            rows = await conn.fetch(f"SELECT {_FILE} FROM container_files WHERE {_OWNED} ORDER BY path",
                                    container_id, tenant)
        return [_file(row) for row in rows]

    async def delete_file(self, container_id: str, file_id: str, *, tenant: str) -> str | None:
        async with self._db.acquire("delete_container_file") as conn:
            blob = await conn.fetchval(f"DELETE FROM container_files WHERE {_OWNED} AND id = $3 RETURNING blob_id",
                                       container_id, tenant, file_id)
        return str(blob) if blob is not None else None

    async def stored_bytes(self, *, tenant: str) -> int:
        async with self._db.acquire("container_bytes") as conn:
            return int(await conn.fetchval(_TENANT_BYTES, tenant))

    async def expired_containers(self, now: int, limit: int) -> list[tuple[str, str]]:
        async with self._db.acquire("expired_containers") as conn:
            rows = await conn.fetch("SELECT id, tenant FROM containers WHERE last_active_at + expires_minutes * 60 "
                                    "<= $1 LIMIT $2", now, limit)
        return [(str(row[0]), str(row[1])) for row in rows]

    async def known_blobs(self, blob_ids: Sequence[str]) -> set[str]:
        if not blob_ids:
            return set()
        async with self._db.acquire("known_container_blobs") as conn:
            rows = await conn.fetch("SELECT blob_id FROM container_files WHERE blob_id = ANY($1::text[])",
                                    pg_texts(blob_ids))
        return {str(row[0]) for row in rows}
