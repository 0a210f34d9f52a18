"""Skills, their versions and containers' skills on PostgreSQL (:class:`~responses_bridge.store.base_skills.
SkillStore`), shared by every replica, with the rules of store/sqlite/containers/skills.py: a version is numbered under
its skill's row lock (two replicas adding versions at once get two numbers), and the tenant's stored bytes, skills'
included, are checked under the tenant's quota lock (store/postgres/quota.py) in the inserting transaction.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

from ...base_skills import ContainerSkill, DefaultVersionDeletion, StoredSkill, StoredSkillVersion, UnknownVersion
from ...records import UnknownCursor
from ..database import PostgresDatabase
from ..quota import check_stored_bytes

if TYPE_CHECKING:
    from ..migrations import Connection

_SKILL = ("s.id, s.name, s.description, s.created_at, s.default_version, "
          "(SELECT coalesce(max(v.version), 0) FROM skill_versions AS v WHERE v.skill_id = s.id)")
_VERSION = "v.id, v.skill_id, v.version, v.name, v.description, v.created_at, v.bytes, v.blob_id"
_OWNED = "v.skill_id IN (SELECT id FROM skills WHERE id = $1 AND tenant = $2)"


def _skill(row: Any) -> StoredSkill:
    return StoredSkill(id=row[0], name=row[1], description=row[2], created_at=int(row[3]),
                       default_version=int(row[4]), latest_version=int(row[5]))


def _version(row: Any) -> StoredSkillVersion:
    return StoredSkillVersion(id=row[0], skill_id=row[1], version=int(row[2]), name=row[3], description=row[4],
                              created_at=int(row[5]), bytes=int(row[6]), blob_id=row[7])


async def _insert_version(conn: Connection, version: StoredSkillVersion, number: int) -> None:
    await conn.execute("INSERT INTO skill_versions (id, skill_id, version, name, description, created_at, bytes, "
                       "blob_id) VALUES ($1, $2, $3, $4, $5, $6, $7, $8)", version.id, version.skill_id, number,
                       version.name, version.description, version.created_at, version.bytes, version.blob_id)


class PostgresSkillStore:
    """:class:`SkillStore` on a :class:`PostgresDatabase`."""

    def __init__(self, db: PostgresDatabase) -> None:
        self._db = db

    async def create_skill(self, skill: StoredSkill, version: StoredSkillVersion, *, tenant: str,
                           max_stored_bytes: int | None) -> None:
        async with self._db.transaction("create_skill") as conn:
            await check_stored_bytes(conn, tenant, skill.created_at, version.bytes, max_stored_bytes)
            await conn.execute("INSERT INTO skills (id, tenant, name, description, created_at, default_version, "
                               "version_counter) VALUES ($1, $2, $3, $4, $5, 1, 1)", skill.id, tenant, skill.name,
                               skill.description, skill.created_at)
            await _insert_version(conn, version, 1)

    async def get_skill(self, skill_id: str, *, tenant: str) -> StoredSkill | None:
        row = await self._db.fetch_row("get_skill",
                                       f"SELECT {_SKILL} FROM skills AS s WHERE s.id = $1 AND s.tenant = $2",
                                       skill_id, tenant)
        return _skill(row) if row is not None else None

    async def list_skills(self, *, tenant: str, after: str | None, limit: int,
                          order: str) -> tuple[list[StoredSkill], bool]:
        ascending = order == "asc"
        args: list[Any] = [tenant, limit + 1]
        sql = f"SELECT {_SKILL} FROM skills AS s WHERE s.tenant = $1"
        async with self._db.acquire("list_skills") as conn:
            if after is not None:
                cursor = await conn.fetchval("SELECT seq FROM skills WHERE id = $1 AND tenant = $2", after, tenant)
                if cursor is None:
                    raise UnknownCursor(after)
                args.append(cursor)
                sql += f" AND s.seq {'>' if ascending else '<'} $3"
            sql += f" ORDER BY s.seq {'ASC' if ascending else 'DESC'} LIMIT $2"
            rows = await conn.fetch(sql, *args)
        return [_skill(row) for row in rows[:limit]], len(rows) > limit

    async def set_default(self, skill_id: str, version: int, *, tenant: str) -> StoredSkill | None:
        async with self._db.transaction("set_skill_default") as conn:
            if await conn.fetchval("SELECT id FROM skills WHERE id = $1 AND tenant = $2 FOR UPDATE", skill_id,
                                   tenant) is None:
                return None
            found = await conn.fetchrow("SELECT name, description FROM skill_versions WHERE skill_id = $1 AND "
                                        "version = $2", skill_id, version)
            if found is None:
                raise UnknownVersion(version)
            await conn.execute("UPDATE skills SET default_version = $1, name = $2, description = $3 WHERE id = $4",
                               version, found[0], found[1], skill_id)
        return await self.get_skill(skill_id, tenant=tenant)

    async def delete_skill(self, skill_id: str, *, tenant: str) -> list[str] | None:
        async with self._db.transaction("delete_skill") as conn:
            if await conn.fetchval("SELECT id FROM skills WHERE id = $1 AND tenant = $2 FOR UPDATE", skill_id,
                                   tenant) is None:
                return None
            rows = await conn.fetch("DELETE FROM skill_versions WHERE skill_id = $1 RETURNING blob_id", skill_id)
            await conn.execute("DELETE FROM skills WHERE id = $1", skill_id)
        return [str(row[0]) for row in rows]

    async def add_version(self, version: StoredSkillVersion, *, tenant: str, make_default: bool,
                          max_stored_bytes: int | None) -> StoredSkillVersion | None:
        async with self._db.transaction("add_skill_version") as conn:
            counter = await conn.fetchval("SELECT version_counter FROM skills WHERE id = $1 AND tenant = $2 "
                                          "FOR UPDATE", version.skill_id, tenant)
            if counter is None:
                return None
            await check_stored_bytes(conn, tenant, version.created_at, version.bytes, max_stored_bytes)
            number = int(counter) + 1
            await conn.execute("UPDATE skills SET version_counter = $1 WHERE id = $2", number, version.skill_id)
            await _insert_version(conn, version, number)
            if make_default:
                await conn.execute("UPDATE skills SET default_version = $1, name = $2, description = $3 "
                                   "WHERE id = $4", number, version.name, version.description, version.skill_id)
        return await self.get_version(version.skill_id, number, tenant=tenant)

    async def get_version(self, skill_id: str, version: int, *, tenant: str) -> StoredSkillVersion | None:
        row = await self._db.fetch_row("get_skill_version",
                                       f"SELECT {_VERSION} FROM skill_versions AS v WHERE {_OWNED} AND "
                                       "v.version = $3", skill_id, tenant, version)
        return _version(row) if row is not None else None

    async def list_versions(self, skill_id: str, *, tenant: str, after: int | None, limit: int,
                            order: str) -> tuple[list[StoredSkillVersion], bool]:
        ascending = order != "desc"
        args: list[Any] = [skill_id, tenant, limit + 1]
        sql = f"SELECT {_VERSION} FROM skill_versions AS v WHERE {_OWNED}"
        if after is not None:
            args.append(after)
            sql += f" AND v.version {'>' if ascending else '<'} $4"
        sql += f" ORDER BY v.version {'ASC' if ascending else 'DESC'} LIMIT $3"
        async with self._db.acquire("list_skill_versions") as conn:
            rows = await conn.fetch(sql, *args)
        return [_version(row) for row in rows[:limit]], len(rows) > limit

    async def delete_version(self, skill_id: str, version: int, *, tenant: str) -> str | None:
        async with self._db.transaction("delete_skill_version") as conn:
            default = await conn.fetchval("SELECT default_version FROM skills WHERE id = $1 AND tenant = $2 "
                                          "FOR UPDATE", skill_id, tenant)
            if default is None:
                return None
            blob = await conn.fetchval("SELECT blob_id FROM skill_versions WHERE skill_id = $1 AND version = $2",
                                       skill_id, version)
            if blob is None:
                return None
            if int(default) == version:
                raise DefaultVersionDeletion(version)
            await conn.execute("DELETE FROM skill_versions WHERE skill_id = $1 AND version = $2", skill_id, version)
        return str(blob)

    async def add_container_skills(self, skills: Sequence[ContainerSkill], *, tenant: str,
                                   max_stored_bytes: int | None) -> None:
        if not skills:
            return
        container = skills[0].container_id
        async with self._db.transaction("add_container_skills") as conn:
            created = await conn.fetchval("SELECT created_at FROM containers WHERE id = $1 AND tenant = $2 "
                                          "FOR UPDATE", container, tenant)
            if created is None:
                raise LookupError(container)
            await check_stored_bytes(conn, tenant, int(created), sum(skill.bytes for skill in skills), max_stored_bytes)
            await conn.executemany("INSERT INTO container_skills (container_id, position, name, description, bytes, "
                                   "blob_id) VALUES ($1, $2, $3, $4, $5, $6)",
                                   [(skill.container_id, skill.position, skill.name, skill.description, skill.bytes,
                                     skill.blob_id) for skill in skills])

    async def container_skills(self, container_id: str, *, tenant: str) -> list[ContainerSkill]:
        async with self._db.acquire("container_skills") as conn:
            rows = await conn.fetch(
                "SELECT k.container_id, k.position, k.name, k.description, k.bytes, k.blob_id FROM container_skills "
                "AS k JOIN containers AS c ON c.id = k.container_id WHERE k.container_id = $1 AND c.tenant = $2 "
                "ORDER BY k.position", container_id, tenant)
        return [ContainerSkill(container_id=row[0], position=int(row[1]), name=row[2], description=row[3],
                               bytes=int(row[4]), blob_id=row[5]) for row in rows]
