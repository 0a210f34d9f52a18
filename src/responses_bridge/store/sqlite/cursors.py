"""What a page of a SQLite table starts from: its cursors resolved to their keys, and how a metadata filter joins.

Shared by the store's listings (responses.py, conversations.py, chat_completions.py) and the console's reads
(console/browse.py), below both so that neither imports the other for them.
"""

from __future__ import annotations

import aiosqlite

from ..records import InvalidCursor

METADATA_JOIN = "CROSS JOIN"
"""How a metadata filter's rows join the responses here: SQLite's CROSS JOIN keeps its planner from starting at
the responses table and sorting (store/listing.py)."""


async def resolve_keys(conn: aiosqlite.Connection, table: str, after: str | None, before: str | None, tenant: str
                        ) -> tuple[tuple[int, str] | None, tuple[int, str] | None]:
    """Both cursors' (created_at, id) in one statement (primary-key lookups); an unknown one, or another tenant's,
    is InvalidCursor. ``table`` is one of our own table names, never client input."""
    sql = (f"SELECT (SELECT created_at FROM {table} WHERE id = :after AND tenant = :tenant), "
           f"(SELECT created_at FROM {table} WHERE id = :before AND tenant = :tenant)")
    after_at, before_at = next(iter(await conn.execute_fetchall(
        sql, {"after": after, "before": before, "tenant": tenant})))
    if after is not None and after_at is None:
        raise InvalidCursor("after", after)
    if before is not None and before_at is None:
        raise InvalidCursor("before", before)
    return (None if after is None else (int(after_at), after),
            None if before is None else (int(before_at), before))
