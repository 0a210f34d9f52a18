"""Conversations on the response store's SQLite database: same file, same write connection and lock.

Items are numbered from the conversation's own counter and written one row each (``append_conversation_rows``,
shared with the response store, which appends a finished turn in the same transaction as its response). Reading a
whole conversation for the model is one query.
"""

from __future__ import annotations

import contextlib
import sqlite3
from collections.abc import Iterator, Sequence
from typing import Any

import orjson

from .base import ConversationPage, InvalidCursor, ItemPage, StoredConversation, check_page_args
from .listing import bound_params, bounds, page_sql
from .sqlite import SQLiteResponseStore, append_conversation_rows, item_rows, resolve_keys

# Existence and every item in one statement: the LEFT JOIN keeps a row for an empty conversation.
_LOAD = """
SELECT i.item FROM conversations AS c LEFT JOIN conversation_items AS i ON i.conversation_id = c.id
WHERE c.id = ? ORDER BY i.seq
"""

_RESOLVE_AFTER = """
SELECT EXISTS (SELECT 1 FROM conversations WHERE id = :id),
       (SELECT min(seq) FROM conversation_items WHERE conversation_id = :id AND item_id = :after)
"""


class SQLiteConversationStore:
    """:class:`~responses_bridge.store.base.ConversationStore` sharing a :class:`SQLiteResponseStore`'s
    connections."""

    def __init__(self, db: SQLiteResponseStore) -> None:
        self._db = db

    async def create_conversation(self, conversation_id: str, created_at: int, metadata: dict[str, Any],
                                  items: list[dict[str, Any]]) -> None:
        rows = item_rows(items)
        metadata_json = orjson.dumps(metadata).decode()

        def create(conn: sqlite3.Connection) -> None:
            with _transaction(conn):  # the conversation never exists without its first items
                conn.execute("INSERT INTO conversations (id, created_at, metadata) VALUES (?, ?, ?)",
                             (conversation_id, created_at, metadata_json))
                append_conversation_rows(conn, conversation_id, rows)

        await self._db.run_write("create_conversation", create)

    async def get_conversation(self, conversation_id: str) -> StoredConversation | None:
        async with self._db.reading() as conn:
            rows = list(await conn.execute_fetchall(
                "SELECT id, created_at, metadata FROM conversations WHERE id = ?", (conversation_id,)))
        return _conversation(rows[0]) if rows else None

    async def list_conversations(self, *, after: str | None = None, before: str | None = None, limit: int = 20,
                                 order: str = "desc") -> ConversationPage:
        check_page_args(limit, order)
        async with self._db.reading() as conn:
            after_key, before_key = await resolve_keys(conn, "conversations", after, before)
            page = bounds(order == "asc", after_key, before_key, after_given=after is not None,
                          before_given=before is not None)
            # An owner (tenant) filter is one more condition in this list.
            sql = page_sql("id, created_at, metadata", "conversations", ("created_at", "id"), [], page)
            rows = list(await conn.execute_fetchall(sql, bound_params(page, limit + 1)))
        has_more = len(rows) > limit
        del rows[limit:]
        if page.backward:
            rows.reverse()
        return ConversationPage(data=[_conversation(row) for row in rows], has_more=has_more)

    async def update_conversation(self, conversation_id: str, metadata: dict[str, Any]) -> StoredConversation | None:
        async with self._db.writing() as conn:
            rows = list(await conn.execute_fetchall(
                "UPDATE conversations SET metadata = ? WHERE id = ? RETURNING id, created_at, metadata",
                (orjson.dumps(metadata).decode(), conversation_id)))
        return _conversation(rows[0]) if rows else None

    async def delete_conversation(self, conversation_id: str) -> bool:
        sql = "DELETE FROM conversations WHERE id = ?"
        async with self._db.writing() as conn, conn.execute(sql, (conversation_id,)) as cursor:
            return cursor.rowcount > 0

    async def append_items(self, conversation_id: str, items: list[dict[str, Any]]) -> bool:
        if not items:
            return await self.get_conversation(conversation_id) is not None
        rows = item_rows(items)

        def append(conn: sqlite3.Connection) -> bool:
            with _transaction(conn):
                return append_conversation_rows(conn, conversation_id, rows)

        return await self._db.run_write("append_conversation_items", append)

    async def load_items(self, conversation_id: str) -> list[dict[str, Any]] | None:
        async with self._db.reading() as conn:
            rows = list(await conn.execute_fetchall(_LOAD, (conversation_id,)))
        if not rows:
            return None
        return [orjson.loads(item) for (item,) in rows if item is not None]

    async def list_items(self, conversation_id: str, *, after: str | None = None, limit: int = 20,
                         order: str = "desc") -> ItemPage | None:
        check_page_args(limit, order)
        ascending = order == "asc"
        async with self._db.reading() as conn:
            exists, after_seq = next(iter(await conn.execute_fetchall(
                _RESOLVE_AFTER, {"id": conversation_id, "after": after})))
            if not exists:
                return None
            if after is not None and after_seq is None:
                raise InvalidCursor("after", after)
            sql = "SELECT item FROM conversation_items WHERE conversation_id = :id"
            if after_seq is not None:
                sql += " AND seq > :after" if ascending else " AND seq < :after"
            sql += f" ORDER BY seq {'ASC' if ascending else 'DESC'} LIMIT :fetch"
            rows = await conn.execute_fetchall(sql, {"id": conversation_id, "after": after_seq,
                                                     "fetch": limit + 1})
        data = [orjson.loads(row[0]) for row in rows]
        has_more = len(data) > limit
        del data[limit:]
        return ItemPage(data=data, first_id=data[0].get("id") if data else None,
                        last_id=data[-1].get("id") if data else None, has_more=has_more)

    async def get_item(self, conversation_id: str, item_id: str) -> dict[str, Any] | None:
        async with self._db.reading() as conn:
            rows = list(await conn.execute_fetchall(
                "SELECT item FROM conversation_items WHERE conversation_id = ? AND item_id = ? ORDER BY seq LIMIT 1",
                (conversation_id, item_id)))
        return orjson.loads(rows[0][0]) if rows else None

    async def delete_item(self, conversation_id: str, item_id: str) -> bool:
        sql = "DELETE FROM conversation_items WHERE conversation_id = ? AND item_id = ?"
        async with self._db.writing() as conn, conn.execute(sql, (conversation_id, item_id)) as cursor:
            return cursor.rowcount > 0


@contextlib.contextmanager
def _transaction(conn: sqlite3.Connection) -> Iterator[None]:
    """``BEGIN IMMEDIATE`` … ``COMMIT`` on the database thread, rolled back on any error."""
    conn.execute("BEGIN IMMEDIATE")
    try:
        yield
    except BaseException:
        conn.execute("ROLLBACK")
        raise
    conn.execute("COMMIT")


def _conversation(row: Sequence[Any]) -> StoredConversation:
    return StoredConversation(id=row[0], created_at=int(row[1]), metadata=orjson.loads(row[2]))
