"""Prompt templates and their immutable versions on PostgreSQL.

A new version is written under the prompt's row lock (``SELECT … FOR UPDATE``): two replicas updating the same
prompt from the same base version are serialised, and the second one sees the conflict. The version is read back in
the same transaction, so each caller gets the version it wrote.
"""

from __future__ import annotations

from typing import Any

import asyncpg
import orjson

from ..records import PromptVersionConflict, StoredPromptVersion
from .database import PostgresDatabase

_COLUMNS = "p.id, p.created_at, v.version, v.created_at, p.latest_version, p.default_version, v.body"
_FROM = "FROM prompts AS p JOIN prompt_versions AS v ON v.prompt_id = p.id"
_DEFAULT = "v.version = coalesce(p.default_version, p.latest_version)"
_LOCK = "SELECT latest_version FROM prompts WHERE id = $1 AND tenant = $2 FOR UPDATE"


def _row(row: asyncpg.Record) -> StoredPromptVersion:
    return StoredPromptVersion(id=row[0], created_at=int(row[1]), version=int(row[2]),
                               version_created_at=int(row[3]), latest_version=int(row[4]),
                               default_version=None if row[5] is None else int(row[5]), body=orjson.loads(row[6]))


class PostgresPromptStore:
    """:class:`~responses_bridge.store.base.PromptStore` on a :class:`PostgresDatabase`."""

    def __init__(self, db: PostgresDatabase) -> None:
        self._db = db

    async def create_prompt(self, prompt_id: str, created_at: int, body: dict[str, Any], *, tenant: str) -> None:
        async with self._db.transaction("create_prompt") as conn:
            await conn.execute("INSERT INTO prompts (id, tenant, created_at, latest_version) VALUES ($1, $2, $3, 1)",
                               prompt_id, tenant, created_at)
            await conn.execute("INSERT INTO prompt_versions (prompt_id, version, created_at, body) "
                               "VALUES ($1, 1, $2, $3)", prompt_id, created_at, orjson.dumps(body).decode())

    async def add_version(self, prompt_id: str, created_at: int, body: dict[str, Any],
                          expected_version: int | None = None, *, tenant: str) -> StoredPromptVersion | None:
        async with self._db.transaction("add_prompt_version") as conn:
            latest = await conn.fetchval(_LOCK, prompt_id, tenant)
            if latest is None:
                return None
            if expected_version is not None and expected_version != latest:
                raise PromptVersionConflict(prompt_id)
            await conn.execute("UPDATE prompts SET latest_version = $2 WHERE id = $1", prompt_id, latest + 1)
            await conn.execute("INSERT INTO prompt_versions (prompt_id, version, created_at, body) "
                               "VALUES ($1, $2, $3, $4)", prompt_id, latest + 1, created_at,
                               orjson.dumps(body).decode())
            row = await conn.fetchrow(f"SELECT {_COLUMNS} {_FROM} WHERE p.id = $1 AND v.version = $2",
                                      prompt_id, latest + 1)
        return _row(row) if row is not None else None

    async def get_prompt(self, prompt_id: str, version: int | None = None, *,
                         tenant: str) -> StoredPromptVersion | None:
        async with self._db.acquire("get_prompt") as conn:
            if version is None:
                row = await conn.fetchrow(f"SELECT {_COLUMNS} {_FROM} WHERE p.id = $1 AND p.tenant = $2 AND {_DEFAULT}",
                                          prompt_id, tenant)
            else:
                row = await conn.fetchrow(f"SELECT {_COLUMNS} {_FROM} WHERE p.id = $1 AND p.tenant = $2 "
                                          "AND v.version = $3", prompt_id, tenant, version)
        return _row(row) if row is not None else None

    async def list_prompts(self, *, tenant: str, after: str | None = None, limit: int = 20,
                           order: str = "desc") -> tuple[list[StoredPromptVersion], bool]:
        ascending = order == "asc"
        sql = f"SELECT {_COLUMNS} {_FROM} WHERE p.tenant = $1 AND {_DEFAULT}"
        args: list[object] = [tenant, limit + 1]
        if after is not None:
            args.append(after)
            sql += (f" AND p.created_seq {'>' if ascending else '<'} "
                    "(SELECT created_seq FROM prompts WHERE id = $3 AND tenant = $1)")
        # created_seq: creation order, also within one second (created_at has second resolution)
        sql += f" ORDER BY p.created_seq {'ASC' if ascending else 'DESC'} LIMIT $2"
        async with self._db.acquire("list_prompts") as conn:
            rows = await conn.fetch(sql, *args)
        prompts = [_row(row) for row in rows]
        return prompts[:limit], len(prompts) > limit

    async def list_versions(self, prompt_id: str, *, tenant: str) -> list[StoredPromptVersion] | None:
        async with self._db.acquire("list_prompt_versions") as conn:
            rows = await conn.fetch(f"SELECT {_COLUMNS} {_FROM} WHERE p.id = $1 AND p.tenant = $2 ORDER BY v.version",
                                    prompt_id, tenant)
        if not rows:
            return None  # every prompt has version 1, so no rows means no prompt
        return [_row(row) for row in rows]

    async def set_default_version(self, prompt_id: str, version: int, *,
                                  tenant: str) -> StoredPromptVersion | None:
        async with self._db.transaction("set_default_prompt_version") as conn:
            found = await conn.fetchval(
                "UPDATE prompts SET default_version = $3 WHERE id = $1 AND tenant = $2 AND EXISTS "
                "(SELECT 1 FROM prompt_versions WHERE prompt_id = $1 AND version = $3) RETURNING id",
                prompt_id, tenant, version)
        if found is None:
            return None
        return await self.get_prompt(prompt_id, version, tenant=tenant)

    async def delete_prompt(self, prompt_id: str, *, tenant: str) -> bool:
        async with self._db.transaction("delete_prompt") as conn:
            status = await conn.execute("DELETE FROM prompts WHERE id = $1 AND tenant = $2", prompt_id, tenant)
        return int(status.rsplit(" ", 1)[-1]) > 0


__all__ = ["PostgresPromptStore"]
