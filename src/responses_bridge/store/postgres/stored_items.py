"""A tenant's stored items found by id wherever they are kept (a response's input and output items, a
conversation's items): what an ``item_reference`` names outside the history its request continues
(protocol/responses/item_references.py). As store/sqlite/stored_items.py: one statement, each id looked up by the
``item_id`` indexes of migration 25, one row of each table at most, only the tenant's rows counted.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

import orjson

from ..items import occurrences

if TYPE_CHECKING:
    from .migrations import Connection

_FIND_ITEMS = """
SELECT wanted.id, COALESCE(
    (SELECT i.item FROM response_items AS i JOIN responses AS r ON r.id = i.response_id
     WHERE i.item_id = wanted.id AND r.tenant = $2 LIMIT 1),
    (SELECT c.item FROM conversation_items AS c JOIN conversations AS v ON v.id = c.conversation_id
     WHERE c.item_id = wanted.id AND v.tenant = $2 LIMIT 1))
FROM unnest($1::text[]) AS wanted (id)
"""
_MEASURE_ITEMS = """
SELECT wanted.id, COALESCE(
    (SELECT octet_length(i.item) FROM response_items AS i JOIN responses AS r ON r.id = i.response_id
     WHERE i.item_id = wanted.id AND r.tenant = $2 LIMIT 1),
    (SELECT octet_length(c.item) FROM conversation_items AS c JOIN conversations AS v ON v.id = c.conversation_id
     WHERE c.item_id = wanted.id AND v.tenant = $2 LIMIT 1))
FROM unnest($1::text[]) AS wanted (id)
"""
"""What :data:`_FIND_ITEMS` would read, before it is read: each item's bytes (no content read)."""


async def find_items(conn: Connection, item_ids: Sequence[str], tenant: str) -> dict[str, dict[str, Any]]:
    """``{id: item}`` for the ids ``tenant`` has an item of."""
    if not item_ids:
        return {}
    rows = await conn.fetch(_FIND_ITEMS, list(dict.fromkeys(item_ids)), tenant)
    return {row[0]: orjson.loads(row[1]) for row in rows if row[1] is not None}


async def measure_items(conn: Connection, item_ids: Sequence[str], tenant: str) -> tuple[int, int]:
    """How many items the references ``item_ids`` will become and their bytes, each occurrence counted (as
    store/sqlite/stored_items.py's; no content read)."""
    rows = await conn.fetch(_MEASURE_ITEMS, list(dict.fromkeys(item_ids)), tenant)
    return occurrences(item_ids, {row[0]: int(row[1]) for row in rows if row[1] is not None})
