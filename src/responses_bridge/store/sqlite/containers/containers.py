"""Containers and their files' rows (:class:`~responses_bridge.store.base.ContainerStore`) on the response store's
SQLite database: same file, same connections.

A container is live while ``now < last_active_at + expires_minutes * 60``; every tenant method reads only live
containers, so an expired one answers as a missing one before the purge has deleted it. Files are reached through
their container, whose tenant is checked in the same statement. Creating a container counts the tenant's live
containers, and adding a file checks the container's bytes, the tenant's stored bytes (its files' and container
files' together: store/sqlite/files/quota.py) and that no stored file is a directory of its path or under it (``a``
beside ``a/b``), in the transaction that inserts it (``BEGIN IMMEDIATE``: writers one at a time), so two writes at
once cannot both pass a limit or make both paths.
"""

from __future__ import annotations

import sqlite3
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
from ..files.quota import check_stored_bytes, stored_bytes
from ..reads import read_row
from ..responses import SQLiteResponseStore
from ..transactions import transaction

_CONTAINER = "id, name, created_at, last_active_at, expires_minutes, memory_limit, network_policy, packages_blob"
_FILE = "f.id, f.container_id, f.path, f.bytes, f.created_at, f.source, f.blob_id"
_LIVE = "last_active_at + expires_minutes * 60 > :now"
_OWNED = "container_id IN (SELECT id FROM containers WHERE id = :container AND tenant = :tenant)"
_TENANT_BYTES = ("SELECT coalesce(sum(f.bytes), 0) FROM container_files AS f JOIN containers AS c "
                 "ON c.id = f.container_id WHERE c.tenant = :tenant")


def _container(row: Sequence[Any]) -> StoredContainer:
    return StoredContainer(id=row[0], name=row[1], created_at=int(row[2]), last_active_at=int(row[3]),
                           expires_minutes=int(row[4]), memory_limit=row[5], network_policy=row[6],
                           packages_blob=row[7])


def _file(row: Sequence[Any]) -> StoredContainerFile:
    return StoredContainerFile(id=row[0], container_id=row[1], path=row[2], bytes=int(row[3]),
                               created_at=int(row[4]), source=row[5], blob_id=row[6])


def _clashing_path(conn: sqlite3.Connection, container_id: str, path: str) -> str | None:
    """A stored file of the container at a directory of ``path``, or under ``path``, if any. Paths compare as
    bytes (SQLite's BINARY collation), so ``path/`` up to ``path0`` (the next byte) is exactly what lies below."""
    parents = parent_paths(path)
    marks = ", ".join("?" * len(parents)) or "NULL"
    row = conn.execute(f"SELECT path FROM container_files WHERE container_id = ? AND (path IN ({marks}) "
                       "OR (path > ? AND path < ?)) LIMIT 1", (container_id, *parents, path + "/", path + "0"),
                       ).fetchone()
    return str(row[0]) if row is not None else None


class SQLiteContainerStore:
    """:class:`ContainerStore` sharing a :class:`SQLiteResponseStore`'s connections."""

    def __init__(self, db: SQLiteResponseStore) -> None:
        self._db = db

    async def create_container(self, container: StoredContainer, *, tenant: str, max_containers: int | None) -> None:
        def create(conn: sqlite3.Connection) -> None:
            with transaction(conn):  # the count and the insert see the same containers: no create slips between
                if max_containers is not None:
                    live = conn.execute(f"SELECT count(*) FROM containers WHERE tenant = :tenant AND {_LIVE}",
                                        {"tenant": tenant, "now": container.created_at}).fetchone()[0]
                    if int(live) >= max_containers:
                        raise ContainerLimitExceeded(max_containers)
                conn.execute(f"INSERT INTO containers ({_CONTAINER}, tenant) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)",
                             (container.id, container.name, container.created_at, container.last_active_at,
                              container.expires_minutes, container.memory_limit, container.network_policy,
                              container.packages_blob, tenant))

        await self._db.run_write("create_container", create)

    async def get_container(self, container_id: str, now: int, *, tenant: str) -> StoredContainer | None:
        row = await read_row(self._db,
                             f"SELECT {_CONTAINER} FROM containers WHERE id = :id AND tenant = :tenant AND {_LIVE}",
                             {"id": container_id, "tenant": tenant, "now": now})
        return _container(row) if row is not None else None

    async def list_containers(self, now: int, *, tenant: str, after: str | None, limit: int,
                              order: str) -> tuple[list[StoredContainer], bool]:
        rows, has_more = await self._page(
            f"SELECT {_CONTAINER} FROM containers WHERE tenant = :tenant AND {_LIVE}", "rowid",
            f"SELECT rowid FROM containers WHERE id = :after AND tenant = :tenant AND {_LIVE}",
            {"tenant": tenant, "now": now}, after=after, limit=limit, order=order)
        return [_container(row) for row in rows], has_more

    async def _page(self, sql: str, position: str, cursor_sql: str, params: dict[str, Any], *, after: str | None,
                    limit: int, order: str) -> tuple[list[Any], bool]:
        """A page of ``sql``'s rows in creation order (``position``: the rowid column), after the row
        ``cursor_sql`` finds for ``after`` (``UnknownCursor`` when none), and whether more follow."""
        ascending = order == "asc"
        params = {**params, "fetch": limit + 1}
        async with self._db.reading() as conn:
            if after is not None:
                cursor = list(await conn.execute_fetchall(cursor_sql, {**params, "after": after}))
                if not cursor:
                    raise UnknownCursor(after)
                sql += f" AND {position} {'>' if ascending else '<'} :cursor"
                params["cursor"] = cursor[0][0]
            sql += f" ORDER BY {position} {'ASC' if ascending else 'DESC'} LIMIT :fetch"
            rows = list(await conn.execute_fetchall(sql, params))
        return rows[:limit], len(rows) > limit

    async def touch_container(self, container_id: str, now: int, *, tenant: str) -> bool:
        async with self._db.writing() as conn:
            cursor = await conn.execute(
                f"UPDATE containers SET last_active_at = max(last_active_at, :now) WHERE id = :id "
                f"AND tenant = :tenant AND {_LIVE}", {"id": container_id, "tenant": tenant, "now": now})
            return cursor.rowcount > 0

    async def set_container_network(self, container_id: str, network_policy: str | None, now: int, *,
                                    tenant: str) -> bool:
        async with self._db.writing() as conn:
            cursor = await conn.execute(
                f"UPDATE containers SET network_policy = :policy WHERE id = :id AND tenant = :tenant AND {_LIVE}",
                {"id": container_id, "tenant": tenant, "now": now, "policy": network_policy})
            return cursor.rowcount > 0

    async def set_container_packages(self, container_id: str, blob_id: str, now: int, *, tenant: str,
                                     size: int = 0, max_stored_bytes: int | None = None) -> bool:
        def keep(conn: sqlite3.Connection) -> bool:
            with transaction(conn):
                check_stored_bytes(conn, tenant, now, size, max_stored_bytes)
                return conn.execute(
                    f"UPDATE containers SET packages_blob = :blob, packages_bytes = :size WHERE id = :id "
                    f"AND tenant = :tenant AND {_LIVE}",
                    {"id": container_id, "tenant": tenant, "now": now, "blob": blob_id, "size": size}).rowcount > 0

        return await self._db.run_write("set_container_packages", keep)

    async def delete_container(self, container_id: str, *, tenant: str) -> list[str] | None:
        def delete(conn: sqlite3.Connection) -> list[str] | None:
            conn.execute("BEGIN IMMEDIATE")
            try:
                key = {"container": container_id, "tenant": tenant}
                installed = [str(row[0]) for row in conn.execute(  # the packages installed at its start
                    "SELECT packages_blob FROM containers WHERE id = :container AND tenant = :tenant "
                    "AND packages_blob IS NOT NULL", key)]
                # the files through their container's tenant, before it: another tenant's try deletes nothing
                blobs = [str(row[0]) for row in conn.execute(
                    f"DELETE FROM container_files WHERE {_OWNED} RETURNING blob_id", key)]
                blobs += [str(row[0]) for row in conn.execute(  # the skills it was made with (containers/skills.py)
                    f"DELETE FROM container_skills WHERE {_OWNED} RETURNING blob_id", key)]
                blobs += installed
                deleted = conn.execute("DELETE FROM containers WHERE id = :container AND tenant = :tenant",
                                       key).rowcount
            except BaseException:
                conn.execute("ROLLBACK")
                raise
            conn.execute("COMMIT")
            return blobs if deleted else None

        return await self._db.run_write("delete_container", delete)

    async def count_containers(self, now: int, *, tenant: str) -> int:
        async with self._db.reading() as conn:
            rows = list(await conn.execute_fetchall(
                f"SELECT count(*) FROM containers WHERE tenant = :tenant AND {_LIVE}", {"tenant": tenant, "now": now}))
        return int(rows[0][0])

    async def put_file(self, file: StoredContainerFile, *, tenant: str, max_container_bytes: int | None,
                       max_stored_bytes: int | None) -> str | None:
        def put(conn: sqlite3.Connection) -> str | None:
            conn.execute("BEGIN IMMEDIATE")  # the sums and the write see the same files
            try:
                # live at the file's creation (the service's now): an expired container is as gone as a deleted one
                key = {"container": file.container_id, "tenant": tenant, "path": file.path, "now": file.created_at}
                if conn.execute(f"SELECT 1 FROM containers WHERE id = :container AND tenant = :tenant AND {_LIVE}",
                                key).fetchone() is None:
                    raise LookupError(file.container_id)
                clash = _clashing_path(conn, file.container_id, file.path)
                if clash is not None:
                    raise PathConflict(file.path, clash)
                old = conn.execute("SELECT bytes, blob_id FROM container_files WHERE container_id = :container "
                                   "AND path = :path", key).fetchone()
                replaced = int(old[0]) if old is not None else 0
                if max_container_bytes is not None:
                    used = int(conn.execute("SELECT coalesce(sum(bytes), 0) FROM container_files WHERE "
                                            "container_id = :container", key).fetchone()[0]) - replaced
                    if used + file.bytes > max_container_bytes:
                        raise StorageLimitExceeded(max_container_bytes, used)
                if max_stored_bytes is not None:  # the tenant's files and container files: one budget
                    used = stored_bytes(conn, tenant, file.created_at) - replaced
                    if used + file.bytes > max_stored_bytes:
                        raise StorageLimitExceeded(max_stored_bytes, used)
                if old is None:
                    conn.execute("INSERT INTO container_files (id, container_id, path, bytes, created_at, source, "
                                 "blob_id) VALUES (?, ?, ?, ?, ?, ?, ?)",
                                 (file.id, file.container_id, file.path, file.bytes, file.created_at, file.source,
                                  file.blob_id))
                else:
                    # a new file at the path, under the new id: an id never serves other bytes than it did
                    conn.execute("UPDATE container_files SET id = ?, created_at = ?, bytes = ?, source = ?, "
                                 "blob_id = ? WHERE container_id = ? AND path = ?",
                                 (file.id, file.created_at, file.bytes, file.source, file.blob_id, file.container_id,
                                  file.path))
            except BaseException:
                conn.execute("ROLLBACK")
                raise
            conn.execute("COMMIT")
            return str(old[1]) if old is not None else None

        return await self._db.run_write("put_container_file", put)

    async def get_file(self, container_id: str, file_id: str, *, tenant: str) -> StoredContainerFile | None:
        row = await read_row(self._db, f"SELECT {_FILE} FROM container_files AS f WHERE f.id = :id AND f.{_OWNED}",
                             {"id": file_id, "container": container_id, "tenant": tenant})
        return _file(row) if row is not None else None

    async def list_files(self, container_id: str, *, tenant: str, after: str | None, limit: int,
                         order: str) -> tuple[list[StoredContainerFile], bool]:
        rows, has_more = await self._page(
            f"SELECT {_FILE} FROM container_files AS f WHERE f.{_OWNED}", "f.rowid",
            f"SELECT rowid FROM container_files WHERE id = :after AND {_OWNED}",
            {"container": container_id, "tenant": tenant}, after=after, limit=limit, order=order)
        return [_file(row) for row in rows], has_more

    async def all_files(self, container_id: str, *, tenant: str) -> list[StoredContainerFile]:
        async with self._db.reading() as conn:
            rows = list(await conn.execute_fetchall(
                f"SELECT {_FILE} FROM container_files AS f WHERE f.{_OWNED} ORDER BY f.path",
                {"container": container_id, "tenant": tenant}))
        return [_file(row) for row in rows]

    async def delete_file(self, container_id: str, file_id: str, *, tenant: str) -> str | None:
        async with self._db.writing() as conn:
            rows = list(await conn.execute_fetchall(
                f"DELETE FROM container_files WHERE id = :id AND {_OWNED} RETURNING blob_id",
                {"id": file_id, "container": container_id, "tenant": tenant}))
        return str(rows[0][0]) if rows else None

    async def stored_bytes(self, *, tenant: str) -> int:
        async with self._db.reading() as conn:
            rows = list(await conn.execute_fetchall(_TENANT_BYTES, {"tenant": tenant}))
        return int(rows[0][0])

    async def expired_containers(self, now: int, limit: int) -> list[tuple[str, str]]:
        async with self._db.reading() as conn:
            rows = list(await conn.execute_fetchall(
                "SELECT id, tenant FROM containers WHERE last_active_at + expires_minutes * 60 <= :now LIMIT :limit",
                {"now": now, "limit": limit}))
        return [(str(row[0]), str(row[1])) for row in rows]

    async def known_blobs(self, blob_ids: Sequence[str]) -> set[str]:
        known: set[str] = set()
        async with self._db.reading() as conn:
            for start in range(0, len(blob_ids), 500):  # within SQLite's bound-parameter limit
                batch = list(blob_ids[start:start + 500])
                marks = ", ".join("?" * len(batch))
                rows = await conn.execute_fetchall(f"SELECT blob_id FROM container_files WHERE blob_id IN ({marks})",
                                                   batch)
                known.update(str(row[0]) for row in rows)
        return known
