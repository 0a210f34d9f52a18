"""Responses, their items and metadata on PostgreSQL, shared by every replica.

A save is one transaction of three statements whatever the number of items (each array goes in through one
``unnest``), so a replica never sees another's half-written turn. There is no group commit as in SQLite: the
server runs concurrent transactions itself, and each replica has a pool. A chain is loaded by one recursive
statement, walking ``previous_response_id`` through the tenant's responses only.

Ownership: every statement names the tenant; items and metadata are reached through a response row of that tenant
in the same statement.
"""

from __future__ import annotations

import time
from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any

import orjson

from ...fairness.memory_charge import reserve_loading, reserve_references, reserving
from ..items import MAX_CHAIN_DEPTH, item_rows
from ..listing import bounds, responses_page, trim_page
from ..records import InvalidCursor, ItemPage, ResponseFilter, ResponseIdTaken, ResponsePage, check_page_args, item_page
from ..timings import CALLER_KEY_ID, timing_columns, usage_columns
from .browse import PostgresResponseBrowser
from .database import PostgresDatabase
from .sql import check_lease, columns, numbered, page_bounds, pg_texts, resolve_keys
from .stored_items import find_items, measure_items

if TYPE_CHECKING:
    from .migrations import Connection

# The upsert applies only to the tenant's own row: an id held by another tenant returns no row.
_UPSERT = """
INSERT INTO responses AS r (id, tenant, created_at, status, model, previous_response_id, response, ttft_ms,
                            latency_ms, timing, input_tokens, cached_tokens, output_tokens, total_tokens, api_key_id,
                            usage_hour)
VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14, $15, $16)
ON CONFLICT (id) DO UPDATE SET
    created_at = excluded.created_at, status = excluded.status, model = excluded.model,
    previous_response_id = excluded.previous_response_id, response = excluded.response,
    ttft_ms = excluded.ttft_ms, latency_ms = excluded.latency_ms, timing = excluded.timing,
    input_tokens = excluded.input_tokens, cached_tokens = excluded.cached_tokens,
    output_tokens = excluded.output_tokens, total_tokens = excluded.total_tokens,
    api_key_id = coalesce(excluded.api_key_id, r.api_key_id), usage_hour = excluded.usage_hour
WHERE r.tenant = excluded.tenant
RETURNING id
"""
_DELETE_ITEMS = "DELETE FROM response_items WHERE response_id = $1"
_INSERT_ITEMS = """
INSERT INTO response_items (response_id, kind, position, item_id, item)
SELECT $1, $2, ordinality - 1, item_id, item FROM unnest($3::text[], $4::bytea[]) WITH ORDINALITY AS u(item_id, item)
"""
_DELETE_METADATA = "DELETE FROM response_metadata WHERE response_id = $1"
_INSERT_METADATA = """
INSERT INTO response_metadata (response_id, tenant, key, value, created_at)
SELECT $1, $2, key, value, $3 FROM unnest($4::text[], $5::text[]) AS u(key, value)
"""
# Appends a finished turn to the tenant's conversation: the counter's row lock orders concurrent appends.
_ADVANCE_SEQ = """
UPDATE conversations SET next_seq = next_seq + $3, last_active_at = greatest(last_active_at, $4)
WHERE id = $1 AND tenant = $2 RETURNING next_seq - $3
"""
_INSERT_CONVERSATION_ITEMS = """
INSERT INTO conversation_items (conversation_id, seq, item_id, item)
SELECT $1, $2 + ordinality - 1, item_id, item FROM unnest($3::text[], $4::bytea[]) WITH ORDINALITY AS u(item_id, item)
"""
_GET = "SELECT response FROM responses WHERE id = $1 AND tenant = $2"
# Events are deleted with their response in the same statement (they have no foreign key: see migrations.py).
_DELETE = """
WITH gone AS (DELETE FROM responses WHERE id = $1 AND tenant = $2 RETURNING id),
     events AS (DELETE FROM response_events WHERE response_id IN (SELECT id FROM gone))
SELECT count(*) FROM gone
"""
_LOAD_HISTORY = """
WITH RECURSIVE chain (id, previous_response_id, depth) AS (
    SELECT id, previous_response_id, 0 FROM responses WHERE id = $1 AND tenant = $2
    UNION ALL
    SELECT r.id, r.previous_response_id, chain.depth + 1
    FROM chain JOIN responses AS r ON r.id = chain.previous_response_id AND r.tenant = $2
    WHERE chain.depth < $3
)
SELECT i.item FROM chain LEFT JOIN response_items AS i ON i.response_id = chain.id
ORDER BY chain.depth DESC, i.kind, i.position
"""
# What loading the chain would read, before it is read (fairness/memory_charge.py): its responses, its items and their
# bytes (``octet_length`` of a bytea reads a TOASTed value's header, not its content).
_MEASURE_HISTORY = _LOAD_HISTORY.split("SELECT i.item", 1)[0] + """SELECT count(DISTINCT chain.id), count(i.item),
       coalesce(sum(octet_length(i.item)), 0)
FROM chain LEFT JOIN response_items AS i ON i.response_id = chain.id
"""
_RESOLVE_CURSORS = """
SELECT
    EXISTS (SELECT 1 FROM responses WHERE id = $1 AND tenant = $2),
    (SELECT min(position) FROM response_items WHERE response_id = $1 AND kind = 'input' AND item_id = $3),
    (SELECT min(position) FROM response_items WHERE response_id = $1 AND kind = 'input' AND item_id = $4)
"""
_TENANTS = "SELECT DISTINCT tenant FROM responses"
# Retention: one short statement per batch; rows another replica's purge holds are skipped, not waited for.
_PURGE = """
WITH doomed AS (
    SELECT r.id FROM responses AS r JOIN unnest($1::text[], $2::bigint[]) AS c (tenant, cutoff)
         ON r.tenant = c.tenant
    WHERE r.created_at < c.cutoff AND coalesce(r.status, '') NOT IN ('queued', 'in_progress')
    LIMIT $3 FOR UPDATE OF r SKIP LOCKED
), gone AS (DELETE FROM responses WHERE id IN (SELECT id FROM doomed) RETURNING id),
   events AS (DELETE FROM response_events WHERE response_id IN (SELECT id FROM gone))
SELECT count(*) FROM gone
"""


class PostgresResponseStore:
    """:class:`~responses_bridge.store.base.ResponseStore` on a :class:`PostgresDatabase` (which it opens and
    closes: the other PostgreSQL stores share it)."""

    def __init__(self, db: PostgresDatabase) -> None:
        self.db = db
        self.browser = PostgresResponseBrowser(db)  # the console's reads

    async def open(self) -> None:
        await self.db.open()

    async def close(self) -> None:
        await self.db.close()

    @property
    def is_open(self) -> bool:
        return self.db.is_open

    @property
    def write_queue_depth(self) -> int:
        return self.db.write_queue_depth

    def write_stall_seconds(self) -> float:
        return self.db.write_stall_seconds()

    async def save_response(self, response: dict[str, Any], input_items: list[dict[str, Any]], *, tenant: str,
                            conversation_id: str | None = None, lease_owner: str | None = None,
                            timing: Any = None, key_id: str | None = None) -> None:
        try:
            response_id = response["id"]
        except KeyError:
            raise ValueError("cannot store a response without an 'id'") from None
        created_at = response.get("created_at")
        created = int(created_at) if created_at is not None else int(time.time())
        inputs = item_rows(input_items)
        outputs = item_rows(response.get("output") or [])
        metadata = response.get("metadata")
        pairs = ([(key, value) for key, value in metadata.items() if isinstance(key, str) and isinstance(value, str)]
                 if isinstance(metadata, dict) else [])
        blob = orjson.dumps(response)
        async with self.db.transaction("save") as conn:
            stored = await conn.fetchval(_UPSERT, response_id, tenant, created, response.get("status"),
                                         response.get("model"), response.get("previous_response_id"), blob,
                                         *timing_columns(timing), *usage_columns(response),
                                         CALLER_KEY_ID.get() if key_id is None else key_id, created // 3600)
            if stored is None:
                raise ResponseIdTaken(response_id)
            # the fence: after the upsert, which holds the response row's lock, as a sweep ending the run takes it
            # (before it drops the lease row): never a deadlock, and never a save over the sweep's end
            await check_lease(conn, response_id, lease_owner)
            await conn.execute(_DELETE_ITEMS, response_id)
            for kind, rows in (("input", inputs), ("output", outputs)):
                if rows:
                    await conn.execute(_INSERT_ITEMS, response_id, kind, *columns(rows))
            await conn.execute(_DELETE_METADATA, response_id)  # a re-save (queued -> completed) replaces them
            if pairs:
                await conn.execute(_INSERT_METADATA, response_id, tenant, created,
                                   pg_texts(key for key, _ in pairs), pg_texts(value for _, value in pairs))
            if conversation_id is not None:
                # a conversation deleted while the response ran (or not the tenant's) does not get the turn
                await append_conversation_rows(conn, conversation_id, tenant, [*inputs, *outputs])

    async def get_response(self, response_id: str, *, tenant: str) -> dict[str, Any] | None:
        async with self.db.acquire("get") as conn:
            blob = await conn.fetchval(_GET, response_id, tenant)
        return orjson.loads(blob) if blob is not None else None

    async def delete_response(self, response_id: str, *, tenant: str) -> bool:
        async with self.db.transaction("delete") as conn:
            return bool(await conn.fetchval(_DELETE, response_id, tenant))

    async def list_input_items(self, response_id: str, *, tenant: str, after: str | None = None,
                               before: str | None = None, limit: int = 20, order: str = "desc") -> ItemPage | None:
        check_page_args(limit, order)
        ascending = order == "asc"
        async with self.db.acquire("list_input_items") as conn:
            row = await conn.fetchrow(_RESOLVE_CURSORS, response_id, tenant, after, before)
            if row is None or not row[0]:
                return None
            after_pos, before_pos = row[1], row[2]
            if after is not None and after_pos is None:
                raise InvalidCursor("after", after)
            if before is not None and before_pos is None:
                raise InvalidCursor("before", before)
            backward = before is not None and after is None
            args: list[object] = [response_id, tenant]
            bounds, scan_ascending = page_bounds(ascending, after_pos, before_pos, args, "position")
            sql = ("SELECT item FROM response_items WHERE response_id = $1 AND kind = 'input' "
                   "AND response_id IN (SELECT id FROM responses WHERE id = $1 AND tenant = $2)" + bounds)
            direction = "ASC" if scan_ascending else "DESC"
            args.append(limit + 1)
            sql += f" ORDER BY position {direction} LIMIT ${len(args)}"
            rows = await conn.fetch(sql, *args)
        data = [orjson.loads(record[0]) for record in rows]
        has_more = trim_page(data, limit, backward=backward)
        return item_page(data, has_more)

    async def list_responses(self, *, tenant: str, after: str | None = None, before: str | None = None,
                             limit: int = 20, order: str = "desc",
                             where: ResponseFilter | None = None) -> ResponsePage:
        check_page_args(limit, order)
        async with self.db.acquire("list_responses") as conn:
            after_key, before_key = await resolve_keys(conn, "responses", tenant, after, before)
            page = bounds(order == "asc", after_key, before_key, after_given=after is not None,
                          before_given=before is not None)
            sql, params = responses_page(tenant, where or ResponseFilter(), page, limit + 1)
            text, values = numbered(sql, params)
            rows = list(await conn.fetch(text, *values))
        has_more = trim_page(rows, limit, backward=page.backward)
        return ResponsePage(data=[bytes(row[1]) for row in rows], ids=[row[0] for row in rows], has_more=has_more)

    async def load_history(self, response_id: str, *, tenant: str) -> list[dict[str, Any]] | None:
        """The chain's items, oldest first; None for an unknown response. What they will cost the request is
        reserved first, from their sizes (fairness/memory_charge.py): it waits for room, or is refused naming
        them, before a row is read."""
        if reserving():
            async with self.db.acquire("measure_history") as conn:
                row = await conn.fetchrow(_MEASURE_HISTORY, response_id, tenant, MAX_CHAIN_DEPTH)
            responses, items, size = row if row is not None else (0, 0, 0)
            if not responses:
                return None
            await reserve_loading(int(size), items, f"the history of previous_response_id '{response_id}'")
        async with self.db.acquire("load_history") as conn:
            rows = await conn.fetch(_LOAD_HISTORY, response_id, tenant, MAX_CHAIN_DEPTH)
        if not rows:
            return None
        return [orjson.loads(row[0]) for row in rows if row[0] is not None]

    async def find_items(self, item_ids: Sequence[str], *, tenant: str) -> dict[str, dict[str, Any]]:
        """The items named, their cost reserved for the request before they are read (as :meth:`load_history`),
        each reference naming one counted (``item_ids`` holds an id once for each: each becomes a whole item)."""
        if item_ids and reserving():
            async with self.db.acquire("measure_items") as conn:
                items, size = await measure_items(conn, item_ids, tenant)
            await reserve_references(size, items, "the item_references to stored items")
        async with self.db.acquire("find_items") as conn:
            return await find_items(conn, item_ids, tenant)

    async def response_tenants(self) -> list[str]:
        """Across tenants: workers only (retention). Every tenant owning at least one stored response."""
        async with self.db.acquire("response_tenants") as conn:
            return [row[0] for row in await conn.fetch(_TENANTS)]

    async def purge_responses(self, cutoffs: Mapping[str, int], *, limit: int) -> int:
        """Across tenants: workers only (retention). At most ``limit`` finished responses older than their
        tenant's cutoff, with their items, metadata and events, in one short statement."""
        if not cutoffs or limit <= 0:
            return 0
        async with self.db.transaction("purge_responses") as conn:
            return int(await conn.fetchval(_PURGE, list(cutoffs), [int(cut) for cut in cutoffs.values()], limit))


async def append_conversation_rows(conn: Connection, conversation_id: str, tenant: str,
                                   rows: list[tuple[str | None, bytes]], *, active_at: int | None = None) -> bool:
    """Append items at the end of ``tenant``'s conversation, numbered from its own counter, inside the caller's
    transaction; False if it is unknown (or another tenant's). The conversation's last activity becomes
    ``active_at`` (now, unless given)."""
    now = int(time.time()) if active_at is None else active_at
    first = await conn.fetchval(_ADVANCE_SEQ, conversation_id, tenant, len(rows), now)
    if first is None:
        return False
    if rows:
        await conn.execute(_INSERT_CONVERSATION_ITEMS, conversation_id, int(first), *columns(rows))
    return True




__all__ = ["PostgresResponseStore", "append_conversation_rows"]
