"""The items of a response or a conversation as rows, the same for every store.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import orjson

MAX_CHAIN_DEPTH = 100_000
"""Guards the recursive walk against a (corrupt) cycle in ``previous_response_id``; real chains are far shorter."""


MAX_INDEXED_ITEM_ID = 512
"""Longer item ids are stored without their id column (they cannot be a pagination cursor): an id is client input,
and a huge one in the ``(conversation_id, item_id)`` index would bring back the big-key b-tree cost migration 4
removed."""


ItemRow = tuple[str | None, bytes]
"""One item as stored: its id (None when it has none, or one too long to index) and its JSON."""


def compact(data: bytes) -> bytes:
    """``data`` in a bytes object of its own size. orjson sets a small result's length without giving back its
    write buffer (about 4 KiB, whatever the JSON's size), so each item kept as it comes from ``orjson.dumps`` costs
    4 KiB: 100,000 stored items held 400 MiB until the save was done, and the allocator kept most of it. The
    copy is a few hundred bytes, freed at once with the buffer."""
    return bytes(memoryview(data)) if len(data) < 2048 else data


def item_rows(items: list[dict[str, Any]]) -> list[ItemRow]:
    """Serialise items one by one: each becomes its own row, so no JSON text of the whole list is ever built."""
    rows: list[ItemRow] = []
    for item in items:
        item_id = item.get("id")
        if not isinstance(item_id, str) or len(item_id) > MAX_INDEXED_ITEM_ID:
            item_id = None
        rows.append((item_id, compact(orjson.dumps(item))))
    return rows


def occurrences(item_ids: Sequence[str], sizes: dict[str, int]) -> tuple[int, int]:
    """The items and bytes that references naming ``item_ids`` (an id once for every reference) will hold once
    expanded, from the ``sizes`` of the ids found (each distinct id measured once): every occurrence counted, as
    each becomes a whole item (protocol/responses/item_references.py). De-duplicated, 250 references to one 1 MiB
    item were charged 1 MiB and held 250."""
    items = size = 0
    for item_id in item_ids:
        found = sizes.get(item_id)
        if found is not None:
            items += 1
            size += found
    return items, size
