"""A tenant's stored items found by id wherever they are kept (a response's input and output items, a
conversation's items): what an ``item_reference`` names outside the history its request continues
(protocol/responses/item_references.py).

One statement for all the ids: each id is looked up by the ``item_id`` indexes of migration 26, one row of each
table at most (an item a client sent again and again is stored as often, and one copy is what it names), and only
rows whose response or conversation is the tenant's count, so another tenant's item is absent like a missing one.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import aiosqlite
import orjson

from ..items import occurrences

_FIND_ITEMS = """
SELECT wanted.value, COALESCE(
    (SELECT i.item FROM response_items AS i JOIN responses AS r ON r.id = i.response_id
     WHERE i.item_id = wanted.value AND r.tenant = :tenant LIMIT 1),
    (SELECT c.item FROM conversation_items AS c JOIN conversations AS v ON v.id = c.conversation_id
     WHERE c.item_id = wanted.value AND v.tenant = :tenant LIMIT 1))
FROM json_each(:ids) AS wanted
"""
_MEASURE_ITEMS = """
SELECT wanted.value, COALESCE(
    (SELECT length(i.item) FROM response_items AS i JOIN responses AS r ON r.id = i.response_id
     WHERE i.item_id = wanted.value AND r.tenant = :tenant LIMIT 1),
    (SELECT length(c.item) FROM conversation_items AS c JOIN conversations AS v ON v.id = c.conversation_id
     WHERE c.item_id = wanted.value AND v.tenant = :tenant LIMIT 1))
FROM json_each(:ids) AS wanted
"""
"""What :data:`_FIND_ITEMS` would read, before it is read: each item's bytes (its row's length, no content read)."""


async def find_items(conn: aiosqlite.Connection, item_ids: Sequence[str], tenant: str) -> dict[str, dict[str, Any]]:
    """``{id: item}`` for the ids ``tenant`` has an item of."""
    if not item_ids:
        return {}
    rows = await conn.execute_fetchall(_FIND_ITEMS, _ids(item_ids, tenant))
    return {row[0]: orjson.loads(row[1]) for row in rows if row[1] is not None}


async def measure_items(conn: aiosqlite.Connection, item_ids: Sequence[str], tenant: str) -> tuple[int, int]:
    """How many items the references ``item_ids`` (an id once for every reference naming it) will become, and
    their bytes, each occurrence counted — an item named 250 times is 250 items once expanded — from the rows'
    lengths (nothing read; each distinct id looked up once)."""
    rows = await conn.execute_fetchall(_MEASURE_ITEMS, _ids(item_ids, tenant))
    return occurrences(item_ids, {row[0]: int(row[1]) for row in rows if row[1] is not None})


def _ids(item_ids: Sequence[str], tenant: str) -> dict[str, str]:
    return {"ids": orjson.dumps(list(dict.fromkeys(item_ids))).decode(), "tenant": tenant}
