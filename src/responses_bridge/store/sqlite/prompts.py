"""Prompt templates and their immutable versions, on the response store's SQLite database (same connections).

Creating a prompt and adding a version are one statement each, through the ``prompt_writes`` and
``prompt_version_writes`` views (migration 2); the version check of an update happens inside that statement, so two
concurrent updates based on the same version cannot both win. The new version is read back in the same
transaction as it is written, so each caller gets the version it wrote, never one a concurrent update wrote
right after it.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Sequence
from typing import Any

import orjson

from ..records import PromptVersionConflict, StoredPromptVersion
from .reads import read_row
from .responses import SQLiteResponseStore

_COLUMNS = ("p.id, p.created_at, v.version, v.created_at, p.latest_version, p.default_version, v.body")
_FROM = "FROM prompts AS p JOIN prompt_versions AS v ON v.prompt_id = p.id"
_DEFAULT = "v.version = coalesce(p.default_version, p.latest_version)"


def _row(row: Sequence[Any]) -> StoredPromptVersion:
    return StoredPromptVersion(id=row[0], created_at=int(row[1]), version=int(row[2]),
                               version_created_at=int(row[3]), latest_version=int(row[4]),
                               default_version=None if row[5] is None else int(row[5]), body=orjson.loads(row[6]))


class SQLitePromptStore:
    """:class:`~responses_bridge.store.base.PromptStore` sharing a :class:`SQLiteResponseStore`'s connections."""

    def __init__(self, db: SQLiteResponseStore) -> None:
        self._db = db

    async def create_prompt(self, prompt_id: str, created_at: int, body: dict[str, Any], *, tenant: str) -> None:
        async with self._db.writing() as conn:
            await conn.execute("INSERT INTO prompt_writes (id, created_at, body, tenant) VALUES (?, ?, ?, ?)",
                               (prompt_id, created_at, orjson.dumps(body).decode(), tenant))

    async def add_version(self, prompt_id: str, created_at: int, body: dict[str, Any],
                          expected_version: int | None = None, *, tenant: str) -> StoredPromptVersion | None:
        body_json = orjson.dumps(body).decode()

        def write_and_read(conn: sqlite3.Connection) -> tuple[Any, ...] | None:
            conn.execute("BEGIN IMMEDIATE")
            try:
                conn.execute("INSERT INTO prompt_version_writes (prompt_id, expected_version, created_at, body, "
                             "tenant) VALUES (?, ?, ?, ?, ?)", (prompt_id, expected_version, created_at, body_json,
                                                                tenant))
                row = conn.execute(f"SELECT {_COLUMNS} {_FROM} WHERE p.id = ? AND p.tenant = ? "
                                   "AND v.version = p.latest_version", (prompt_id, tenant)).fetchone()
            except BaseException:
                conn.execute("ROLLBACK")
                raise
            conn.execute("COMMIT")
            return row  # type: ignore[no-any-return]

        try:
            row = await self._db.run_write("add_prompt_version", write_and_read)
        except sqlite3.IntegrityError as exc:
            if "prompt_not_found" in str(exc):
                return None
            if "prompt_version_conflict" in str(exc):
                raise PromptVersionConflict(prompt_id) from None
            raise
        return _row(row) if row is not None else None

    async def get_prompt(self, prompt_id: str, version: int | None = None, *,
                         tenant: str) -> StoredPromptVersion | None:
        if version is None:
            return await self._get(prompt_id, tenant, _DEFAULT)
        return await self._get(prompt_id, tenant, "v.version = ?", version)

    async def _get(self, prompt_id: str, tenant: str, condition: str, *args: object) -> StoredPromptVersion | None:
        row = await read_row(self._db, f"SELECT {_COLUMNS} {_FROM} WHERE p.id = ? AND p.tenant = ? AND {condition}",
                             (prompt_id, tenant, *args))
        return _row(row) if row is not None else None

    async def list_prompts(self, *, tenant: str, after: str | None = None, limit: int = 20,
                           order: str = "desc") -> tuple[list[StoredPromptVersion], bool]:
        ascending = order == "asc"
        sql = f"SELECT {_COLUMNS} {_FROM} WHERE p.tenant = :tenant AND {_DEFAULT}"
        params: dict[str, object] = {"fetch": limit + 1, "tenant": tenant}
        if after is not None:
            comparison = ">" if ascending else "<"
            sql += f" AND p.rowid {comparison} (SELECT rowid FROM prompts WHERE id = :after AND tenant = :tenant)"
            params["after"] = after
        # rowid: creation order, also within one second (created_at has second resolution)
        sql += f" ORDER BY p.rowid {'ASC' if ascending else 'DESC'} LIMIT :fetch"
        async with self._db.reading() as conn:
            rows = list(await conn.execute_fetchall(sql, params))
        prompts = [_row(row) for row in rows]
        return prompts[:limit], len(prompts) > limit

    async def list_versions(self, prompt_id: str, *, tenant: str) -> list[StoredPromptVersion] | None:
        async with self._db.reading() as conn:
            rows = list(await conn.execute_fetchall(
                f"SELECT {_COLUMNS} {_FROM} WHERE p.id = ? AND p.tenant = ? ORDER BY v.version", (prompt_id, tenant)))
        if not rows:
            return None  # every prompt has version 1, so no rows means no prompt
        return [_row(row) for row in rows]

    async def set_default_version(self, prompt_id: str, version: int, *,
                                  tenant: str) -> StoredPromptVersion | None:
        async with self._db.writing() as conn:
            rows = list(await conn.execute_fetchall(
                "UPDATE prompts SET default_version = :version WHERE id = :id AND tenant = :tenant AND EXISTS "
                "(SELECT 1 FROM prompt_versions WHERE prompt_id = :id AND version = :version) RETURNING id",
                {"id": prompt_id, "version": version, "tenant": tenant}))
        if not rows:
            return None
        return await self.get_prompt(prompt_id, version, tenant=tenant)

    async def delete_prompt(self, prompt_id: str, *, tenant: str) -> bool:
        # versions go by ON DELETE CASCADE
        async with self._db.writing() as conn, conn.execute("DELETE FROM prompts WHERE id = ? AND tenant = ?",
                                                            (prompt_id, tenant)) as cursor:
            return cursor.rowcount > 0
