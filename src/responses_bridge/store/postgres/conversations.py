"""Conversations and their items on PostgreSQL, shared by every replica.

Items are numbered from the conversation's own counter (``next_seq``); the ``UPDATE`` that advances it takes the
conversation's row lock, so two replicas appending at once get consecutive, distinct numbers, and an append is two
statements whatever its size. Every statement on items checks the conversation's tenant in the same statement.
"""

from __future__ import annotations

import time
from collections.abc import Mapping
from typing import Any

import asyncpg
import orjson

from ...fairness.memory_charge import reserve_loading, reserving
from ..items import item_rows
from ..listing import bound_params, bounds, page_sql, trim_page
from ..records import ConversationPage, InvalidCursor, ItemPage, StoredConversation, check_page_args, item_page
from .database import PostgresDatabase
from .responses import append_conversation_rows
from .sql import numbered, resolve_keys

_OWNED = "(SELECT id FROM conversations WHERE id = $1 AND tenant = $2)"
_INSERT = ("INSERT INTO conversations (id, tenant, created_at, metadata, last_active_at) "
           "VALUES ($1, $2, $3, $4, $5)")
_GET = "SELECT id, created_at, metadata FROM conversations WHERE id = $1 AND tenant = $2"
_UPDATE = ("UPDATE conversations SET metadata = $3, last_active_at = greatest(last_active_at, $4) "
           "WHERE id = $1 AND tenant = $2 RETURNING id, created_at, metadata")
_DELETE = "DELETE FROM conversations WHERE id = $1 AND tenant = $2"
# Existence and every item in one statement: the LEFT JOIN keeps a row for an empty conversation.
_LOAD = """
SELECT i.item FROM conversations AS c LEFT JOIN conversation_items AS i ON i.conversation_id = c.id
WHERE c.id = $1 AND c.tenant = $2 ORDER BY i.seq
"""
_MEASURE = """
SELECT count(DISTINCT c.id), count(i.item), coalesce(sum(octet_length(i.item)), 0)
FROM conversations AS c LEFT JOIN conversation_items AS i ON i.conversation_id = c.id
WHERE c.id = $1 AND c.tenant = $2
"""
_RESOLVE_AFTER = f"""
SELECT EXISTS {_OWNED},
       (SELECT min(seq) FROM conversation_items WHERE conversation_id = $1 AND item_id = $3)
"""
_GET_ITEM = f"""
SELECT item FROM conversation_items WHERE conversation_id = $1 AND conversation_id IN {_OWNED} AND item_id = $3
ORDER BY seq LIMIT 1
"""
_DELETE_ITEM = (f"DELETE FROM conversation_items WHERE conversation_id = $1 AND conversation_id IN {_OWNED} "
                "AND item_id = $3")
_TENANTS = "SELECT DISTINCT tenant FROM conversations"
_PURGE = """
WITH doomed AS (
    SELECT c.id FROM conversations AS c JOIN unnest($1::text[], $2::bigint[]) AS k (tenant, cutoff)
         ON c.tenant = k.tenant
    WHERE c.last_active_at < k.cutoff
    LIMIT $3 FOR UPDATE OF c SKIP LOCKED
), gone AS (DELETE FROM conversations WHERE id IN (SELECT id FROM doomed) RETURNING id)
SELECT count(*) FROM gone
"""


class PostgresConversationStore:
    """:class:`~responses_bridge.store.base.ConversationStore` on a :class:`PostgresDatabase`."""

    def __init__(self, db: PostgresDatabase) -> None:
        self._db = db

    async def create_conversation(self, conversation_id: str, created_at: int, metadata: dict[str, Any],
                                  items: list[dict[str, Any]], *, tenant: str) -> None:
        rows = item_rows(items)
        async with self._db.transaction("create_conversation") as conn:  # never without its first items
            await conn.execute(_INSERT, conversation_id, tenant, created_at, orjson.dumps(metadata).decode(),
                               int(created_at))
            await append_conversation_rows(conn, conversation_id, tenant, rows, active_at=int(created_at))

    async def get_conversation(self, conversation_id: str, *, tenant: str) -> StoredConversation | None:
        row = await self._db.fetch_row("get_conversation", _GET, conversation_id, tenant)
        return _conversation(row) if row is not None else None

    async def list_conversations(self, *, tenant: str, after: str | None = None, before: str | None = None,
                                 limit: int = 20, order: str = "desc") -> ConversationPage:
        check_page_args(limit, order)
        async with self._db.acquire("list_conversations") as conn:
            after_key, before_key = await resolve_keys(conn, "conversations", tenant, after, before)
            page = bounds(order == "asc", after_key, before_key, after_given=after is not None,
                          before_given=before is not None)
            sql = page_sql("id, created_at, metadata", "conversations", ("created_at", "id"),
                           ["tenant = :tenant"], page)
            params = {**bound_params(page, limit + 1), "tenant": tenant}
            text, values = numbered(sql, params)
            rows = list(await conn.fetch(text, *values))
        has_more = trim_page(rows, limit, backward=page.backward)
        return ConversationPage(data=[_conversation(row) for row in rows], has_more=has_more)

    async def update_conversation(self, conversation_id: str, metadata: dict[str, Any], *,
                                  tenant: str) -> StoredConversation | None:
        async with self._db.transaction("update_conversation") as conn:
            row = await conn.fetchrow(_UPDATE, conversation_id, tenant, orjson.dumps(metadata).decode(),
                                      int(time.time()))
        return _conversation(row) if row is not None else None

    async def delete_conversation(self, conversation_id: str, *, tenant: str) -> bool:
        async with self._db.transaction("delete_conversation") as conn:
            return _count(await conn.execute(_DELETE, conversation_id, tenant)) > 0

    async def append_items(self, conversation_id: str, items: list[dict[str, Any]], *, tenant: str) -> bool:
        rows = item_rows(items)
        async with self._db.transaction("append_conversation_items") as conn:
            return await append_conversation_rows(conn, conversation_id, tenant, rows)

    async def load_items(self, conversation_id: str, *, tenant: str) -> list[dict[str, Any]] | None:
        """The conversation's items, their cost reserved for the request before they are read
        (fairness/memory_charge.py)."""
        if reserving():
            async with self._db.acquire("measure_conversation_items") as conn:
                row = await conn.fetchrow(_MEASURE, conversation_id, tenant)
            found, items, size = row if row is not None else (0, 0, 0)
            if not found:
                return None
            await reserve_loading(int(size), items, f"the items of conversation '{conversation_id}'")
        async with self._db.acquire("load_conversation_items") as conn:
            rows = await conn.fetch(_LOAD, conversation_id, tenant)
        if not rows:
            return None
        return [orjson.loads(row[0]) for row in rows if row[0] is not None]

    async def list_items(self, conversation_id: str, *, tenant: str, after: str | None = None, limit: int = 20,
                         order: str = "desc") -> ItemPage | None:
        check_page_args(limit, order)
        ascending = order == "asc"
        async with self._db.acquire("list_conversation_items") as conn:
            row = await conn.fetchrow(_RESOLVE_AFTER, conversation_id, tenant, after)
            if row is None or not row[0]:
                return None
            after_seq = row[1]
            if after is not None and after_seq is None:
                raise InvalidCursor("after", after)
            sql = f"SELECT item FROM conversation_items WHERE conversation_id = $1 AND conversation_id IN {_OWNED}"
            args: list[object] = [conversation_id, tenant]
            if after_seq is not None:
                args.append(after_seq)
                sql += f" AND seq {'>' if ascending else '<'} ${len(args)}"
            args.append(limit + 1)
            sql += f" ORDER BY seq {'ASC' if ascending else 'DESC'} LIMIT ${len(args)}"
            rows = await conn.fetch(sql, *args)
        data = [orjson.loads(record[0]) for record in rows]
        has_more = trim_page(data, limit)
        return item_page(data, has_more)

    async def get_item(self, conversation_id: str, item_id: str, *, tenant: str) -> dict[str, Any] | None:
        async with self._db.acquire("get_conversation_item") as conn:
            blob = await conn.fetchval(_GET_ITEM, conversation_id, tenant, item_id)
        return orjson.loads(blob) if blob is not None else None

    async def delete_item(self, conversation_id: str, item_id: str, *, tenant: str) -> bool:
        async with self._db.transaction("delete_conversation_item") as conn:
            return _count(await conn.execute(_DELETE_ITEM, conversation_id, tenant, item_id)) > 0

    async def conversation_tenants(self) -> list[str]:
        """Across tenants: workers only (retention). Every tenant owning at least one conversation."""
        async with self._db.acquire("conversation_tenants") as conn:
            return [row[0] for row in await conn.fetch(_TENANTS)]

    async def purge_conversations(self, cutoffs: Mapping[str, int], *, limit: int) -> int:
        """Across tenants: workers only (retention). At most ``limit`` conversations idle since before their
        tenant's cutoff, with their items, in one short statement."""
        if not cutoffs or limit <= 0:
            return 0
        async with self._db.transaction("purge_conversations") as conn:
            return int(await conn.fetchval(_PURGE, list(cutoffs), [int(cut) for cut in cutoffs.values()], limit))


def _conversation(row: asyncpg.Record) -> StoredConversation:
    return StoredConversation(id=row[0], created_at=int(row[1]), metadata=orjson.loads(row[2]))


def _count(status: str) -> int:
    """The row count of a command status such as ``DELETE 3``."""
    return int(status.rsplit(" ", 1)[-1])


__all__ = ["PostgresConversationStore"]
