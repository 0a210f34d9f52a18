"""Conversations on the response store's SQLite database: same file, same write connection and lock.

Items are numbered from the conversation's own counter and written one row each (``append_conversation_rows``,
shared with the response store, which appends a finished turn in the same transaction as its response). Reading a
whole conversation for the model is one query.
"""

from __future__ import annotations

import sqlite3
import time
from collections.abc import Mapping, Sequence
from typing import Any

import orjson

from ...fairness.memory_charge import reserve_loading, reserving
from ..items import item_rows
from ..listing import Bounds, bound_params, bounds, page_sql, trim_page
from ..records import ConversationPage, InvalidCursor, ItemPage, StoredConversation, check_page_args, item_page
from .cursors import resolve_keys
from .reads import read_row
from .response_rows import append_conversation_rows
from .responses import SQLiteResponseStore, distinct_tenants_sql
from .transactions import purge_ranges, transaction

# Existence and every item in one statement: the LEFT JOIN keeps a row for an empty conversation.
_LOAD = """
SELECT i.item FROM conversations AS c LEFT JOIN conversation_items AS i ON i.conversation_id = c.id
WHERE c.id = ? AND c.tenant = ? ORDER BY i.seq
"""
_MEASURE = """
SELECT count(c.id), count(i.item), coalesce(sum(length(i.item)), 0)
FROM conversations AS c LEFT JOIN conversation_items AS i ON i.conversation_id = c.id
WHERE c.id = ? AND c.tenant = ?
"""
"""What :data:`_LOAD` would read, before it is read (fairness/memory_charge.py): the items and their bytes."""

# Items are reached only through their conversation of the caller's tenant, in the same statement.
_OWNED = "conversation_id IN (SELECT id FROM conversations WHERE id = :id AND tenant = :tenant)"

_RESOLVE_AFTER = f"""
SELECT EXISTS (SELECT 1 FROM conversations WHERE id = :id AND tenant = :tenant),
       (SELECT min(seq) FROM conversation_items WHERE conversation_id = :id AND item_id = :after AND {_OWNED})
"""

_PURGE = """
DELETE FROM conversations WHERE id IN (
    SELECT id FROM conversations WHERE tenant = ? AND last_active_at < ? ORDER BY last_active_at LIMIT ?
)
"""


class SQLiteConversationStore:
    """:class:`~responses_bridge.store.base.ConversationStore` sharing a :class:`SQLiteResponseStore`'s
    connections."""

    def __init__(self, db: SQLiteResponseStore) -> None:
        self._db = db

    async def create_conversation(self, conversation_id: str, created_at: int, metadata: dict[str, Any],
                                  items: list[dict[str, Any]], *, tenant: str) -> None:
        rows = item_rows(items)
        metadata_json = orjson.dumps(metadata).decode()

        def create(conn: sqlite3.Connection) -> None:
            with transaction(conn):  # the conversation never exists without its first items
                conn.execute("INSERT INTO conversations (id, created_at, metadata, tenant, last_active_at) "
                             "VALUES (?, ?, ?, ?, ?)", (conversation_id, created_at, metadata_json, tenant, created_at))
                append_conversation_rows(conn, conversation_id, rows, tenant, created_at)

        await self._db.run_write("create_conversation", create)

    async def get_conversation(self, conversation_id: str, *, tenant: str) -> StoredConversation | None:
        row = await read_row(self._db, "SELECT id, created_at, metadata FROM conversations WHERE id = ? AND tenant = ?",
                             (conversation_id, tenant))
        return _conversation(row) if row is not None else None

    async def list_conversations(self, *, tenant: str, after: str | None = None, before: str | None = None,
                                 limit: int = 20, order: str = "desc") -> ConversationPage:
        check_page_args(limit, order)
        async with self._db.reading() as conn:
            after_key, before_key = await resolve_keys(conn, "conversations", after, before, tenant)
            page = bounds(order == "asc", after_key, before_key, after_given=after is not None,
                          before_given=before is not None)
            rows = list(await conn.execute_fetchall(*conversations_page(page, limit + 1, tenant)))
        has_more = trim_page(rows, limit, backward=page.backward)
        return ConversationPage(data=[_conversation(row) for row in rows], has_more=has_more)

    async def update_conversation(self, conversation_id: str, metadata: dict[str, Any], *,
                                  tenant: str) -> StoredConversation | None:
        async with self._db.writing() as conn:
            rows = list(await conn.execute_fetchall(
                "UPDATE conversations SET metadata = ?, last_active_at = ? WHERE id = ? AND tenant = ? "
                "RETURNING id, created_at, metadata",
                (orjson.dumps(metadata).decode(), int(time.time()), conversation_id, tenant)))
        return _conversation(rows[0]) if rows else None

    async def delete_conversation(self, conversation_id: str, *, tenant: str) -> bool:
        sql = "DELETE FROM conversations WHERE id = ? AND tenant = ?"  # items go by ON DELETE CASCADE
        async with self._db.writing() as conn, conn.execute(sql, (conversation_id, tenant)) as cursor:
            return cursor.rowcount > 0

    async def append_items(self, conversation_id: str, items: list[dict[str, Any]], *, tenant: str) -> bool:
        if not items:
            return await self.get_conversation(conversation_id, tenant=tenant) is not None
        rows = item_rows(items)

        def append(conn: sqlite3.Connection) -> bool:
            with transaction(conn):
                return append_conversation_rows(conn, conversation_id, rows, tenant)

        return await self._db.run_write("append_conversation_items", append)

    async def load_items(self, conversation_id: str, *, tenant: str) -> list[dict[str, Any]] | None:
        """The conversation's items, their cost reserved for the request before they are read."""
        if reserving():
            async with self._db.reading() as conn:
                [(found, items, size)] = await conn.execute_fetchall(_MEASURE, (conversation_id, tenant))
            if not found:
                return None
            await reserve_loading(size, items, f"the items of conversation '{conversation_id}'")
        async with self._db.reading() as conn:
            rows = list(await conn.execute_fetchall(_LOAD, (conversation_id, tenant)))
        if not rows:
            return None
        return [orjson.loads(item) for (item,) in rows if item is not None]

    async def list_items(self, conversation_id: str, *, tenant: str, after: str | None = None, limit: int = 20,
                         order: str = "desc") -> ItemPage | None:
        check_page_args(limit, order)
        ascending = order == "asc"
        async with self._db.reading() as conn:
            exists, after_seq = next(iter(await conn.execute_fetchall(
                _RESOLVE_AFTER, {"id": conversation_id, "after": after, "tenant": tenant})))
            if not exists:
                return None
            if after is not None and after_seq is None:
                raise InvalidCursor("after", after)
            sql = f"SELECT item FROM conversation_items WHERE conversation_id = :id AND {_OWNED}"
            if after_seq is not None:
                sql += " AND seq > :after" if ascending else " AND seq < :after"
            sql += f" ORDER BY seq {'ASC' if ascending else 'DESC'} LIMIT :fetch"
            rows = await conn.execute_fetchall(sql, {"id": conversation_id, "after": after_seq, "tenant": tenant,
                                                     "fetch": limit + 1})
        data = [orjson.loads(row[0]) for row in rows]
        has_more = trim_page(data, limit)
        return item_page(data, has_more)

    async def get_item(self, conversation_id: str, item_id: str, *, tenant: str) -> dict[str, Any] | None:
        async with self._db.reading() as conn:
            rows = list(await conn.execute_fetchall(
                f"SELECT item FROM conversation_items WHERE conversation_id = :id AND item_id = :item AND {_OWNED} "
                "ORDER BY seq LIMIT 1", {"id": conversation_id, "item": item_id, "tenant": tenant}))
        return orjson.loads(rows[0][0]) if rows else None

    async def delete_item(self, conversation_id: str, item_id: str, *, tenant: str) -> bool:
        sql = f"DELETE FROM conversation_items WHERE conversation_id = :id AND item_id = :item AND {_OWNED}"
        async with self._db.writing() as conn, conn.execute(
                sql, {"id": conversation_id, "item": item_id, "tenant": tenant}) as cursor:
            return cursor.rowcount > 0

    # -- retention (across tenants: workers only) ------------------------------------------------------------

    async def conversation_tenants(self) -> list[str]:
        """Across tenants: workers only (retention)."""
        async with self._db.reading() as conn:
            rows = await conn.execute_fetchall(distinct_tenants_sql("conversations"))
        return [row[0] for row in rows if row[0] is not None]

    async def purge_conversations(self, cutoffs: Mapping[str, int], *, limit: int) -> int:
        """Across tenants: workers only (retention). A tenant's idle conversations are a range of the
        (tenant, last_active_at) index; items go by cascade; one short transaction of at most ``limit``."""
        return await self._db.run_write("purge_conversations", purge_ranges(_PURGE, cutoffs, limit))


def conversations_page(page: Bounds, fetch: int, tenant: str) -> tuple[str, dict[str, object]]:
    """The statement of one page of ``tenant``'s conversations (a seek in ``conversations_listed``) and its
    parameters."""
    params = bound_params(page, fetch)
    params["tenant"] = tenant
    sql = page_sql("id, created_at, metadata", "conversations", ("created_at", "id"), ["tenant = :tenant"], page)
    return sql, params



def _conversation(row: Sequence[Any]) -> StoredConversation:
    return StoredConversation(id=row[0], created_at=int(row[1]), metadata=orjson.loads(row[2]))
