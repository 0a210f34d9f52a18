"""The console's reads on PostgreSQL (store/browsing.py): each a statement on a pool connection, the server doing
the searching (``strpos`` in the stored JSON as text, lower-cased in the C collation), so no row's content crosses
to this process unless it is read to be shown. ``octet_length`` of a bytea reads a TOASTed value's header, not its
content: the sizes come before any content is read."""

from __future__ import annotations

from collections.abc import Sequence

from ..browsing import USAGE_SUMS, UsageSum, slowest_sql, usage_sum
from ..listing import bound_params, bounds, page_sql, responses_page, trim_page
from ..records import ResponseFilter
from .database import PostgresDatabase
from .sql import numbered, pg_texts, resolve_keys

_CHAIN = """
WITH RECURSIVE chain (id, previous_response_id, size, depth) AS (
    SELECT id, previous_response_id, octet_length(response), 0 FROM responses WHERE id = $1 AND tenant = $2
    UNION ALL
    SELECT r.id, r.previous_response_id, octet_length(r.response), chain.depth + 1
    FROM chain JOIN responses AS r ON r.id = chain.previous_response_id AND r.tenant = $2
    WHERE chain.depth < $3
)
SELECT id, previous_response_id, size FROM chain ORDER BY depth
"""
_OWNED = "response_id IN (SELECT id FROM responses WHERE id = $1 AND tenant = $2)"
_ITEM_SIZES = ("SELECT position, octet_length(item) FROM response_items WHERE response_id = $1 AND kind = $3 "
               f"AND position >= $4 AND {_OWNED} ORDER BY position LIMIT $5")
_ITEMS = ("SELECT position, item FROM response_items WHERE response_id = $1 AND kind = $3 "
          f"AND position = ANY($4::integer[]) AND {_OWNED} ORDER BY position")
_INPUT_BYTES = (" + CAST(coalesce((SELECT sum(octet_length(i.item)) FROM response_items AS i "
                "WHERE i.response_id = r.id AND i.kind = 'input'), 0) AS bigint)")
_IN_INPUT = ("""EXISTS (SELECT 1 FROM response_items AS i WHERE i.response_id = responses.id AND i.kind = 'input' """
             """AND strpos(lower(convert_from(i.item, 'UTF8') COLLATE "C"), lower(${n} COLLATE "C")) > 0)""")
_EXISTS = "SELECT EXISTS (SELECT 1 FROM responses WHERE id = $1 AND tenant = $2)"


class PostgresResponseBrowser:
    """:class:`~responses_bridge.store.browsing.ResponseBrowser` on a :class:`PostgresDatabase`."""

    def __init__(self, db: PostgresDatabase) -> None:
        self.db = db

    async def response_sizes(self, *, tenant: str, after: str | None, where: ResponseFilter, limit: int,
                             before: str | None = None, inputs: bool = False) -> tuple[list[tuple[str, int]], bool]:
        async with self.db.acquire("browse_sizes") as conn:
            after_key, before_key = await resolve_keys(conn, "responses", tenant, after, before)
            page = bounds(False, after_key, before_key, after_given=after is not None,
                          before_given=before is not None)
            sql, params = responses_page(tenant, where, page, limit + 1,
                                         select=f"r.id, octet_length(r.response){_INPUT_BYTES if inputs else ''}")
            text, values = numbered(sql, params)
            rows = [(str(row[0]), int(row[1])) for row in await conn.fetch(text, *values)]
        return rows, trim_page(rows, limit, backward=page.backward)

    async def slowest_sizes(self, *, tenant: str, where: ResponseFilter, by: str, offset: int,
                            limit: int) -> tuple[list[tuple[str, int]], bool]:
        tail, params = slowest_sql(where, by)
        params.update(tenant=tenant, fetch=limit + 1, skip=offset)
        text, values = numbered(f"SELECT r.id, octet_length(r.response) FROM responses AS r {tail}", params)
        async with self.db.acquire("browse_sorted") as conn:
            rows = [(str(row[0]), int(row[1])) for row in await conn.fetch(text, *values)]
        return rows, trim_page(rows, limit)

    async def usage_sums(self, *, tenant: str, since_hour: int) -> list[UsageSum]:
        text, values = numbered(USAGE_SUMS, {"tenant": tenant, "since_hour": since_hour})
        async with self.db.acquire("browse_usage") as conn:
            rows = await conn.fetch(text, *values)
        return [usage_sum(tuple(row)) for row in rows]

    async def response_times(self, response_ids: Sequence[str], *,
                             tenant: str) -> dict[str, tuple[float | None, float | None]]:
        if not response_ids:
            return {}
        async with self.db.acquire("browse_times") as conn:
            rows = await conn.fetch("SELECT id, ttft_ms, latency_ms FROM responses WHERE tenant = $1 "
                                    "AND id = ANY($2::text[])", tenant, list(response_ids))
        return {str(row[0]): (row[1], row[2]) for row in rows}

    async def chat_sizes(self, *, tenant: str, after: str | None, limit: int) -> tuple[list[tuple[str, int]], bool]:
        async with self.db.acquire("browse_chat_sizes") as conn:
            after_key, _ = await resolve_keys(conn, "chat_completions", tenant, after, None)
            page = bounds(False, after_key, None, after_given=after is not None, before_given=False)
            params = {**bound_params(page, limit + 1), "tenant": tenant}
            sql = page_sql("id, octet_length(completion) + octet_length(messages)", "chat_completions",
                           ("created_at", "id"), ["tenant = :tenant"], page)
            text, values = numbered(sql, params)
            rows = [(str(row[0]), int(row[1])) for row in await conn.fetch(text, *values)]
        return rows, trim_page(rows, limit)

    async def chats_containing(self, completion_ids: Sequence[str], needle: str, *, tenant: str) -> set[str]:
        if not completion_ids:
            return set()
        found = """strpos(lower(convert_from({column}, 'UTF8') COLLATE "C"), lower($3 COLLATE "C")) > 0"""
        sql = (f"SELECT id FROM chat_completions WHERE tenant = $1 AND id = ANY($2::text[]) AND "
               f"({found.format(column='messages')} OR {found.format(column='completion')})")
        async with self.db.acquire("browse_chat_search") as conn:
            rows = await conn.fetch(sql, tenant, list(completion_ids), *pg_texts([needle]))
        return {str(row[0]) for row in rows}

    async def count_responses(self, *, tenant: str, where: ResponseFilter, cap: int) -> int:
        page = bounds(False, None, None, after_given=False, before_given=False)
        sql, params = responses_page(tenant, where, page, cap + 1, select="1")
        text, values = numbered(f"SELECT count(*) FROM ({sql}) AS counted", params)
        async with self.db.acquire("browse_count") as conn:
            return int(await conn.fetchval(text, *values))

    async def responses_containing(self, response_ids: Sequence[str], needles: Sequence[str], *,
                                   tenant: str, inputs: Sequence[str] = ()) -> set[str]:
        if not response_ids:
            return set()
        # lower() in the C collation works byte by byte on ASCII letters only (as SQLite's LIKE), and strpos() is a
        # Boyer-Moore-Horspool search: ILIKE in a linguistic collation lower-cases every character through the
        # locale and matched 40 x 5 MB in 16 s
        text = """lower(convert_from(response, 'UTF8') COLLATE "C")"""
        tests = ""
        for n, needle in enumerate(needles, start=3):
            found = f"""strpos({text}, lower(${n} COLLATE "C")) > 0"""
            tests += f" AND ({found} OR {_IN_INPUT.format(n=n)})" if needle in inputs else f" AND {found}"
        sql = f"SELECT id FROM responses WHERE tenant = $1 AND id = ANY($2::text[]){tests}"
        async with self.db.acquire("browse_search") as conn:
            rows = await conn.fetch(sql, tenant, list(response_ids), *pg_texts(needles))
        return {str(row[0]) for row in rows}

    async def response_json(self, response_id: str, *, tenant: str) -> bytes | None:
        async with self.db.acquire("browse_get") as conn:
            blob = await conn.fetchval("SELECT response FROM responses WHERE id = $1 AND tenant = $2",
                                       response_id, tenant)
        return bytes(blob) if blob is not None else None

    async def response_timing(self, response_id: str, *, tenant: str) -> bytes | None:
        async with self.db.acquire("browse_timing") as conn:
            blob = await conn.fetchval("SELECT timing FROM responses WHERE id = $1 AND tenant = $2",
                                       response_id, tenant)
        return bytes(blob) if blob is not None else None

    async def responses_json(self, response_ids: Sequence[str], *, tenant: str) -> list[tuple[str, bytes]]:
        if not response_ids:
            return []
        async with self.db.acquire("browse_get") as conn:
            rows = await conn.fetch("SELECT id, response FROM responses WHERE tenant = $1 AND id = ANY($2::text[])",
                                    tenant, list(response_ids))
        return [(str(row[0]), bytes(row[1])) for row in rows]

    async def response_chain(self, response_id: str, *, tenant: str,
                             depth: int) -> list[tuple[str, str | None, int]]:
        async with self.db.acquire("browse_chain") as conn:
            rows = await conn.fetch(_CHAIN, response_id, tenant, depth)
        return [(str(row[0]), row[1], int(row[2])) for row in rows]

    async def item_sizes(self, response_id: str, kind: str, *, tenant: str, start: int,
                         limit: int) -> list[tuple[int, int]] | None:
        async with self.db.acquire("browse_item_sizes") as conn:
            rows = [(int(row[0]), int(row[1]))
                    for row in await conn.fetch(_ITEM_SIZES, response_id, tenant, kind, start, limit)]
            if not rows and not await conn.fetchval(_EXISTS, response_id, tenant):
                return None
        return rows

    async def items_json(self, response_id: str, kind: str, positions: Sequence[int], *,
                         tenant: str) -> list[tuple[int, bytes]]:
        if not positions:
            return []
        async with self.db.acquire("browse_items") as conn:
            rows = await conn.fetch(_ITEMS, response_id, tenant, kind, list(positions))
        return [(int(row[0]), bytes(row[1])) for row in rows]
