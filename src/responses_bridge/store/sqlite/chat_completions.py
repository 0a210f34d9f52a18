"""Stored Chat Completions on the response store's SQLite database (same file, same write connection and lock).

One row per completion, keyed by (tenant, id): the completion and its request messages are two JSON blobs of that
row, written in one statement. A list page is one seek in the (tenant, created_at, id) index; a ``metadata[key]``
filter is checked per row (``json_each`` of the row's small metadata object).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import orjson

from ..listing import bound_params, bounds, page_sql, trim_page
from ..records import ChatCompletionPage, StoredChatCompletion, check_page_args
from ..timings import timing_columns
from .cursors import resolve_keys
from .reads import read_row
from .responses import SQLiteResponseStore, distinct_tenants_sql
from .transactions import purge_ranges

_COLUMNS = "id, created_at, model, metadata, completion"
_SAVE = """
INSERT INTO chat_completions (tenant, id, created_at, model, metadata, completion, messages, ttft_ms,
                              latency_ms, timing)
VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)
ON CONFLICT (tenant, id) DO UPDATE SET created_at = excluded.created_at, model = excluded.model,
    metadata = excluded.metadata, completion = excluded.completion, messages = excluded.messages,
    ttft_ms = excluded.ttft_ms, latency_ms = excluded.latency_ms, timing = excluded.timing
"""
_METADATA = ("EXISTS (SELECT 1 FROM json_each(metadata) WHERE json_each.key = :mk{n} "
             "AND json_each.value = :mv{n} AND json_each.type = 'text')")
_PURGE = """
DELETE FROM chat_completions WHERE rowid IN (
    SELECT rowid FROM chat_completions WHERE tenant = ? AND created_at < ? ORDER BY created_at LIMIT ?
)
"""


def _record(row: Sequence[Any]) -> StoredChatCompletion:
    return StoredChatCompletion(id=row[0], created_at=int(row[1]), model=row[2], metadata=orjson.loads(row[3]),
                                completion=orjson.loads(row[4]), messages=[])


class SQLiteChatCompletionStore:
    """:class:`~responses_bridge.store.base.ChatCompletionStore` sharing a :class:`SQLiteResponseStore`'s
    connections."""

    def __init__(self, db: SQLiteResponseStore) -> None:
        self._db = db

    async def save_chat_completion(self, record: StoredChatCompletion, *, tenant: str) -> None:
        values = (tenant, record.id, record.created_at, record.model, orjson.dumps(record.metadata).decode(),
                  orjson.dumps(record.completion), orjson.dumps(record.messages), *timing_columns(record.timing))
        async with self._db.writing() as conn:
            await conn.execute(_SAVE, values)

    async def get_chat_completion(self, completion_id: str, *, tenant: str) -> StoredChatCompletion | None:
        row = await read_row(
            self._db,
            f"SELECT {_COLUMNS} FROM chat_completions WHERE tenant = ? AND id = ?", (tenant, completion_id))
        return _record(row) if row is not None else None

    async def list_chat_completions(self, *, tenant: str, after: str | None = None, limit: int = 20,
                                    order: str = "asc", model: str | None = None,
                                    metadata: Sequence[tuple[str, str]] = ()) -> ChatCompletionPage:
        check_page_args(limit, order)
        async with self._db.reading() as conn:
            after_key, _ = await resolve_keys(conn, "chat_completions", after, None, tenant)
            page = bounds(order == "asc", after_key, None, after_given=after is not None, before_given=False)
            params = bound_params(page, limit + 1)
            params["tenant"] = tenant
            conditions = ["tenant = :tenant"]
            if model is not None:
                conditions.append("model = :model")
                params["model"] = model
            for n, (key, value) in enumerate(metadata):
                conditions.append(_METADATA.format(n=n))
                params[f"mk{n}"], params[f"mv{n}"] = key, value
            sql = page_sql(_COLUMNS, "chat_completions", ("created_at", "id"), conditions, page)
            rows = list(await conn.execute_fetchall(sql, params))
        has_more = trim_page(rows, limit)
        return ChatCompletionPage(data=[_record(row) for row in rows], has_more=has_more)

    async def update_chat_completion(self, completion_id: str, metadata: dict[str, Any], *,
                                     tenant: str) -> StoredChatCompletion | None:
        async with self._db.writing() as conn:
            rows = list(await conn.execute_fetchall(
                f"UPDATE chat_completions SET metadata = ? WHERE tenant = ? AND id = ? RETURNING {_COLUMNS}",
                (orjson.dumps(metadata).decode(), tenant, completion_id)))
        return _record(rows[0]) if rows else None

    async def delete_chat_completion(self, completion_id: str, *, tenant: str) -> bool:
        sql = "DELETE FROM chat_completions WHERE tenant = ? AND id = ?"
        async with self._db.writing() as conn, conn.execute(sql, (tenant, completion_id)) as cursor:
            return cursor.rowcount > 0

    async def chat_completion_messages(self, completion_id: str, *, tenant: str) -> list[dict[str, Any]] | None:
        async with self._db.reading() as conn:
            rows = list(await conn.execute_fetchall(
                "SELECT messages FROM chat_completions WHERE tenant = ? AND id = ?", (tenant, completion_id)))
        if not rows:
            return None
        messages = orjson.loads(rows[0][0])
        return messages if isinstance(messages, list) else []

    # -- retention (across tenants: workers only) ------------------------------------------------------------

    async def chat_completion_tenants(self) -> list[str]:
        """Across tenants: workers only (retention)."""
        async with self._db.reading() as conn:
            rows = await conn.execute_fetchall(distinct_tenants_sql("chat_completions"))
        return [row[0] for row in rows if row[0] is not None]

    async def purge_chat_completions(self, cutoffs: Mapping[str, int], *, limit: int) -> int:
        """Across tenants: workers only (retention). A tenant's old completions are a range of the
        (tenant, created_at, id) index; one short transaction of at most ``limit``."""
        return await self._db.run_write("purge_chat_completions", purge_ranges(_PURGE, cutoffs, limit))


__all__ = ["SQLiteChatCompletionStore"]
