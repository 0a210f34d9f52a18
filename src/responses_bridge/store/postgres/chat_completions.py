"""Stored Chat Completions on PostgreSQL, shared by every replica.

One row per completion, keyed by (tenant, id); the completion and its request messages are stored as serialised
(``bytea``) and answered as they were. A list page is one seek in the (tenant, created_at, id) index; a
``metadata[key]`` filter is checked per row on the row's small metadata object.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import asyncpg
import orjson

from ..listing import bound_params, bounds, page_sql, trim_page
from ..records import ChatCompletionPage, StoredChatCompletion, check_page_args
from ..timings import timing_columns
from .database import PostgresDatabase
from .sql import numbered, resolve_keys

_COLUMNS = "id, created_at, model, metadata, completion"
_SAVE = """
INSERT INTO chat_completions (tenant, id, created_at, model, metadata, completion, messages, ttft_ms,
                              latency_ms, timing)
VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10)
ON CONFLICT (tenant, id) DO UPDATE SET created_at = excluded.created_at, model = excluded.model,
    metadata = excluded.metadata, completion = excluded.completion, messages = excluded.messages,
    ttft_ms = excluded.ttft_ms, latency_ms = excluded.latency_ms, timing = excluded.timing
"""
_METADATA = "jsonb_extract_path_text(CAST(metadata AS jsonb), :mk{n}) = :mv{n}"
_PURGE = """
WITH doomed AS (
    SELECT c.tenant, c.id FROM chat_completions AS c JOIN unnest($1::text[], $2::bigint[]) AS k (tenant, cutoff)
         ON c.tenant = k.tenant
    WHERE c.created_at < k.cutoff
    LIMIT $3 FOR UPDATE OF c SKIP LOCKED
), gone AS (DELETE FROM chat_completions AS c USING doomed AS d WHERE c.tenant = d.tenant AND c.id = d.id
            RETURNING c.id)
SELECT count(*) FROM gone
"""


def _record(row: asyncpg.Record) -> StoredChatCompletion:
    return StoredChatCompletion(id=row[0], created_at=int(row[1]), model=row[2], metadata=orjson.loads(row[3]),
                                completion=orjson.loads(row[4]), messages=[])


class PostgresChatCompletionStore:
    """:class:`~responses_bridge.store.base.ChatCompletionStore` on a :class:`PostgresDatabase`."""

    def __init__(self, db: PostgresDatabase) -> None:
        self._db = db

    async def save_chat_completion(self, record: StoredChatCompletion, *, tenant: str) -> None:
        async with self._db.transaction("save_chat_completion") as conn:
            await conn.execute(_SAVE, tenant, record.id, record.created_at, record.model,
                               orjson.dumps(record.metadata).decode(), orjson.dumps(record.completion),
                               orjson.dumps(record.messages), *timing_columns(record.timing))

    async def get_chat_completion(self, completion_id: str, *, tenant: str) -> StoredChatCompletion | None:
        row = await self._db.fetch_row("get_chat_completion",
                                       f"SELECT {_COLUMNS} FROM chat_completions WHERE tenant = $1 AND id = $2",
                                       tenant, completion_id)
        return _record(row) if row is not None else None

    async def list_chat_completions(self, *, tenant: str, after: str | None = None, limit: int = 20,
                                    order: str = "asc", model: str | None = None,
                                    metadata: Sequence[tuple[str, str]] = ()) -> ChatCompletionPage:
        check_page_args(limit, order)
        async with self._db.acquire("list_chat_completions") as conn:
            after_key, _ = await resolve_keys(conn, "chat_completions", tenant, after, None)
            page = bounds(order == "asc", after_key, None, after_given=after is not None, before_given=False)
            params = {**bound_params(page, limit + 1), "tenant": tenant}
            conditions = ["tenant = :tenant"]
            if model is not None:
                conditions.append("model = :model")
                params["model"] = model
            for n, (key, value) in enumerate(metadata):
                conditions.append(_METADATA.format(n=n))
                params[f"mk{n}"], params[f"mv{n}"] = key, value
            text, values = numbered(page_sql(_COLUMNS, "chat_completions", ("created_at", "id"), conditions, page),
                                    params)
            rows = list(await conn.fetch(text, *values))
        has_more = trim_page(rows, limit)
        return ChatCompletionPage(data=[_record(row) for row in rows], has_more=has_more)

    async def update_chat_completion(self, completion_id: str, metadata: dict[str, Any], *,
                                     tenant: str) -> StoredChatCompletion | None:
        async with self._db.transaction("update_chat_completion") as conn:
            row = await conn.fetchrow(f"UPDATE chat_completions SET metadata = $3 WHERE tenant = $1 AND id = $2 "
                                      f"RETURNING {_COLUMNS}", tenant, completion_id, orjson.dumps(metadata).decode())
        return _record(row) if row is not None else None

    async def delete_chat_completion(self, completion_id: str, *, tenant: str) -> bool:
        async with self._db.transaction("delete_chat_completion") as conn:
            status = await conn.execute("DELETE FROM chat_completions WHERE tenant = $1 AND id = $2", tenant,
                                        completion_id)
        return int(status.rsplit(" ", 1)[-1]) > 0

    async def chat_completion_messages(self, completion_id: str, *, tenant: str) -> list[dict[str, Any]] | None:
        async with self._db.acquire("chat_completion_messages") as conn:
            blob = await conn.fetchval("SELECT messages FROM chat_completions WHERE tenant = $1 AND id = $2",
                                       tenant, completion_id)
        if blob is None:
            return None
        messages = orjson.loads(blob)
        return messages if isinstance(messages, list) else []

    async def chat_completion_tenants(self) -> list[str]:
        """Across tenants: workers only (retention)."""
        async with self._db.acquire("chat_completion_tenants") as conn:
            return [row[0] for row in await conn.fetch("SELECT DISTINCT tenant FROM chat_completions")]

    async def purge_chat_completions(self, cutoffs: Mapping[str, int], *, limit: int) -> int:
        """Across tenants: workers only (retention). At most ``limit`` completions stored before their tenant's
        cutoff, in one short statement."""
        if not cutoffs or limit <= 0:
            return 0
        async with self._db.transaction("purge_chat_completions") as conn:
            return int(await conn.fetchval(_PURGE, list(cutoffs), [int(cut) for cut in cutoffs.values()], limit))


__all__ = ["PostgresChatCompletionStore"]
