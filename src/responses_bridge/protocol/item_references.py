"""``item_reference`` input items (``{"type": "item_reference", "id": …}``, or the untyped ``{"id": …}``) replaced by
the items they name.

An item is found among what the request already holds of the tenant's stored items: the history it continues (the
``previous_response_id`` chain's input and output items, or the conversation's items) and the input items before
the reference. That is where a client's references point (an item it saw in a response it continues); an id found
nowhere there is a 404 naming the reference, as OpenAI answers an unknown item. Resolved items are stored, listed
and sent upstream as the item itself, so nothing downstream meets a reference.
"""

from __future__ import annotations

import copy
from typing import Any

from .errors import not_found

REFERENCE = "item_reference"


def has_references(items: list[dict[str, Any]]) -> bool:
    return any(item.get("type") == REFERENCE for item in items)


def resolve_references(history: list[dict[str, Any]], items: list[dict[str, Any]],
                       param: str = "input") -> list[dict[str, Any]]:
    """``items`` with every reference replaced by a copy of the item it names (``items`` itself when it holds
    none). Linear: one index of the ids, built only when a reference is there."""
    if not has_references(items):
        return items
    known: dict[str, dict[str, Any]] = {}
    for item in history:
        if isinstance(item.get("id"), str):
            known.setdefault(item["id"], item)
    resolved: list[dict[str, Any]] = []
    for index, item in enumerate(items):
        if item.get("type") == REFERENCE:
            found = known.get(item["id"])
            if found is None or found.get("type") == REFERENCE:
                raise not_found(f"Item with id '{item['id'][:200]}' not found.", param=f"{param}[{index}].id",
                                code="item_not_found")
            item = copy.deepcopy(found)  # the stored original is history too: it must not change with this one
        elif isinstance(item.get("id"), str):
            known.setdefault(item["id"], item)
        resolved.append(item)
    return resolved
