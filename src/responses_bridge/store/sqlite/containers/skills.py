"""Skills, their versions and containers' skills (:class:`~responses_bridge.store.base_skills.SkillStore`) on the
response store's SQLite database: same file, same connections.

A version is numbered, and the tenant's stored bytes checked (store/sqlite/files/quota.py, which counts skills' bytes
with files' and container files'), in the ``BEGIN IMMEDIATE`` transaction that inserts it: writers go one at a
time, so two versions made at once get two numbers and cannot both pass the limit. A version is reached through
its skill, whose tenant is checked in the same statement.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Sequence
from typing import Any

from ...base_skills import ContainerSkill, DefaultVersionDeletion, StoredSkill, StoredSkillVersion, UnknownVersion
from ...records import UnknownCursor
from ..files.quota import check_stored_bytes
from ..reads import read_row
from ..responses import SQLiteResponseStore
from ..transactions import transaction

_SKILL = ("s.id, s.name, s.description, s.created_at, s.default_version, "
          "(SELECT coalesce(max(v.version), 0) FROM skill_versions AS v WHERE v.skill_id = s.id)")
_VERSION = "v.id, v.skill_id, v.version, v.name, v.description, v.created_at, v.bytes, v.blob_id"
_OWNED = "v.skill_id IN (SELECT id FROM skills WHERE id = :skill AND tenant = :tenant)"


def _skill(row: Sequence[Any]) -> StoredSkill:
    return StoredSkill(id=row[0], name=row[1], description=row[2], created_at=int(row[3]),
                       default_version=int(row[4]), latest_version=int(row[5]))


def _version(row: Sequence[Any]) -> StoredSkillVersion:
    return StoredSkillVersion(id=row[0], skill_id=row[1], version=int(row[2]), name=row[3], description=row[4],
                              created_at=int(row[5]), bytes=int(row[6]), blob_id=row[7])


def _insert_version(conn: sqlite3.Connection, version: StoredSkillVersion, number: int) -> None:
    conn.execute("INSERT INTO skill_versions (id, skill_id, version, name, description, created_at, bytes, blob_id) "
                 "VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
                 (version.id, version.skill_id, number, version.name, version.description, version.created_at,
                  version.bytes, version.blob_id))


class SQLiteSkillStore:
    """:class:`SkillStore` sharing a :class:`SQLiteResponseStore`'s connections."""

    def __init__(self, db: SQLiteResponseStore) -> None:
        self._db = db

    async def create_skill(self, skill: StoredSkill, version: StoredSkillVersion, *, tenant: str,
                           max_stored_bytes: int | None) -> None:
        def create(conn: sqlite3.Connection) -> None:
            with transaction(conn):
                check_stored_bytes(conn, tenant, skill.created_at, version.bytes, max_stored_bytes)
                conn.execute("INSERT INTO skills (id, tenant, name, description, created_at, default_version, "
                             "version_counter) VALUES (?, ?, ?, ?, ?, 1, 1)",
                             (skill.id, tenant, skill.name, skill.description, skill.created_at))
                _insert_version(conn, version, 1)

        await self._db.run_write("create_skill", create)

    async def get_skill(self, skill_id: str, *, tenant: str) -> StoredSkill | None:
        row = await read_row(self._db,
                             f"SELECT {_SKILL} FROM skills AS s WHERE s.id = ? AND s.tenant = ?", (skill_id, tenant))
        return _skill(row) if row is not None else None

    async def list_skills(self, *, tenant: str, after: str | None, limit: int,
                          order: str) -> tuple[list[StoredSkill], bool]:
        ascending = order == "asc"
        params: dict[str, Any] = {"tenant": tenant, "fetch": limit + 1}
        sql = f"SELECT {_SKILL} FROM skills AS s WHERE s.tenant = :tenant"
        async with self._db.reading() as conn:
            if after is not None:
                cursor = list(await conn.execute_fetchall(
                    "SELECT rowid FROM skills WHERE id = :after AND tenant = :tenant", {**params, "after": after}))
                if not cursor:
                    raise UnknownCursor(after)
                sql += f" AND s.rowid {'>' if ascending else '<'} :cursor"
                params["cursor"] = cursor[0][0]
            sql += f" ORDER BY s.rowid {'ASC' if ascending else 'DESC'} LIMIT :fetch"
            rows = list(await conn.execute_fetchall(sql, params))
        return [_skill(row) for row in rows[:limit]], len(rows) > limit

    async def set_default(self, skill_id: str, version: int, *, tenant: str) -> StoredSkill | None:
        def update(conn: sqlite3.Connection) -> bool:
            with transaction(conn):
                if conn.execute("SELECT 1 FROM skills WHERE id = ? AND tenant = ?", (skill_id, tenant)).fetchone() \
                        is None:
                    return False
                found = conn.execute("SELECT name, description FROM skill_versions WHERE skill_id = ? AND version = ?",
                                     (skill_id, version)).fetchone()
                if found is None:
                    raise UnknownVersion(version)
                conn.execute("UPDATE skills SET default_version = ?, name = ?, description = ? WHERE id = ?",
                             (version, found[0], found[1], skill_id))
                return True

        if not await self._db.run_write("set_skill_default", update):
            return None
        return await self.get_skill(skill_id, tenant=tenant)

    async def delete_skill(self, skill_id: str, *, tenant: str) -> list[str] | None:
        def delete(conn: sqlite3.Connection) -> list[str] | None:
            with transaction(conn):
                key = {"skill": skill_id, "tenant": tenant}
                blobs = [str(row[0]) for row in conn.execute(
                    f"DELETE FROM skill_versions AS v WHERE {_OWNED} RETURNING blob_id", key)]
                deleted = conn.execute("DELETE FROM skills WHERE id = :skill AND tenant = :tenant", key).rowcount
            return blobs if deleted else None

        return await self._db.run_write("delete_skill", delete)

    async def add_version(self, version: StoredSkillVersion, *, tenant: str, make_default: bool,
                          max_stored_bytes: int | None) -> StoredSkillVersion | None:
        def add(conn: sqlite3.Connection) -> int | None:
            with transaction(conn):
                found = conn.execute("SELECT version_counter FROM skills WHERE id = ? AND tenant = ?",
                                     (version.skill_id, tenant)).fetchone()
                if found is None:
                    return None
                check_stored_bytes(conn, tenant, version.created_at, version.bytes, max_stored_bytes)
                number = int(found[0]) + 1
                conn.execute("UPDATE skills SET version_counter = ? WHERE id = ?", (number, version.skill_id))
                _insert_version(conn, version, number)
                if make_default:
                    conn.execute("UPDATE skills SET default_version = ?, name = ?, description = ? WHERE id = ?",
                                 (number, version.name, version.description, version.skill_id))
            return number

        number = await self._db.run_write("add_skill_version", add)
        if number is None:
            return None
        return await self.get_version(version.skill_id, number, tenant=tenant)

    async def get_version(self, skill_id: str, version: int, *, tenant: str) -> StoredSkillVersion | None:
        row = await read_row(self._db,
                             f"SELECT {_VERSION} FROM skill_versions AS v WHERE v.version = :version AND {_OWNED}",
                             {"version": version, "skill": skill_id, "tenant": tenant})
        return _version(row) if row is not None else None

    async def list_versions(self, skill_id: str, *, tenant: str, after: int | None, limit: int,
                            order: str) -> tuple[list[StoredSkillVersion], bool]:
        ascending = order != "desc"
        params: dict[str, Any] = {"skill": skill_id, "tenant": tenant, "fetch": limit + 1}
        sql = f"SELECT {_VERSION} FROM skill_versions AS v WHERE {_OWNED}"
        if after is not None:
            sql += f" AND v.version {'>' if ascending else '<'} :after"
            params["after"] = after
        sql += f" ORDER BY v.version {'ASC' if ascending else 'DESC'} LIMIT :fetch"
        async with self._db.reading() as conn:
            rows = list(await conn.execute_fetchall(sql, params))
        return [_version(row) for row in rows[:limit]], len(rows) > limit

    async def delete_version(self, skill_id: str, version: int, *, tenant: str) -> str | None:
        def delete(conn: sqlite3.Connection) -> str | None:
            with transaction(conn):
                found = conn.execute("SELECT default_version FROM skills WHERE id = ? AND tenant = ?",
                                     (skill_id, tenant)).fetchone()
                if found is None:
                    return None
                row = conn.execute("SELECT blob_id FROM skill_versions WHERE skill_id = ? AND version = ?",
                                   (skill_id, version)).fetchone()
                if row is None:
                    return None
                if int(found[0]) == version:
                    raise DefaultVersionDeletion(version)
                conn.execute("DELETE FROM skill_versions WHERE skill_id = ? AND version = ?", (skill_id, version))
            return str(row[0])

        return await self._db.run_write("delete_skill_version", delete)

    async def add_container_skills(self, skills: Sequence[ContainerSkill], *, tenant: str,
                                   max_stored_bytes: int | None) -> None:
        if not skills:
            return

        def add(conn: sqlite3.Connection) -> None:
            with transaction(conn):
                container = skills[0].container_id
                found = conn.execute("SELECT created_at FROM containers WHERE id = ? AND tenant = ?",
                                     (container, tenant)).fetchone()
                if found is None:
                    raise LookupError(container)
                check_stored_bytes(conn, tenant, int(found[0]), sum(skill.bytes for skill in skills), max_stored_bytes)
                conn.executemany("INSERT INTO container_skills (container_id, position, name, description, bytes, "
                                 "blob_id) VALUES (?, ?, ?, ?, ?, ?)",
                                 [(skill.container_id, skill.position, skill.name, skill.description, skill.bytes,
                                   skill.blob_id) for skill in skills])

        await self._db.run_write("add_container_skills", add)

    async def container_skills(self, container_id: str, *, tenant: str) -> list[ContainerSkill]:
        async with self._db.reading() as conn:
            rows = await conn.execute_fetchall(
                "SELECT k.container_id, k.position, k.name, k.description, k.bytes, k.blob_id FROM container_skills "
                "AS k JOIN containers AS c ON c.id = k.container_id WHERE k.container_id = ? AND c.tenant = ? "
                "ORDER BY k.position", (container_id, tenant))
        return [ContainerSkill(container_id=row[0], position=int(row[1]), name=row[2], description=row[3],
                               bytes=int(row[4]), blob_id=row[5]) for row in rows]
