"""``item_reference`` input items (``{"type": "item_reference", "id": …}``, or the untyped ``{"id": …}``) replaced by
the items they name.

An item is found first among what the request already holds: the history it continues (the
``previous_response_id`` chain's input and output items, or the conversation's items) and the input items before
the reference. Any other item the tenant stored is found too, as OpenAI resolves any stored item of the project
(a response's input or output item, a conversation's item): :func:`unresolved` names the ids to look up in the
store (``ResponseStore.find_items``), only when a reference names one the request does not hold, so a request
without references costs nothing more. An id found nowhere (another tenant's among them) is a 404 naming the
reference, as OpenAI answers an unknown item. Resolved items are stored, listed and sent upstream as the item
itself, so nothing downstream meets a reference.
"""

from __future__ import annotations

import copy
from collections.abc import Sequence
from typing import Any, Protocol

from ..errors import not_found

REFERENCE = "item_reference"


class ItemFinder(Protocol):
    """Where a tenant's stored items are found by id (``ResponseStore.find_items``)."""

    async def find_items(self, item_ids: Sequence[str], *, tenant: str) -> dict[str, dict[str, Any]]: ...


async def resolve_stored(history: list[dict[str, Any]], items: list[dict[str, Any]], finder: ItemFinder | None, *,
                         tenant: str, param: str = "input") -> list[dict[str, Any]]:
    """:func:`resolve_references`, the ids the request does not hold looked up first among ``tenant``'s stored
    items (one store read, none when every reference is to an item the request holds)."""
    missing = unresolved(history, items)
    stored = await finder.find_items(missing, tenant=tenant) if missing and finder is not None else None
    return resolve_references(history, items, param, stored)


def has_references(items: list[dict[str, Any]]) -> bool:
    return any(item.get("type") == REFERENCE for item in items)


def unresolved(history: list[dict[str, Any]], items: list[dict[str, Any]]) -> list[str]:
    """The ids ``items``' references name that neither ``history`` nor an earlier item of ``items`` holds: the
    ones to look up among the tenant's stored items."""
    if not has_references(items):
        return []
    known = {item["id"] for item in history if isinstance(item.get("id"), str)}
    missing: list[str] = []
    for item in items:
        if item.get("type") == REFERENCE:
            if item["id"] not in known:
                missing.append(item["id"])
        elif isinstance(item.get("id"), str):
            known.add(item["id"])
    return missing


def resolve_references(history: list[dict[str, Any]], items: list[dict[str, Any]], param: str = "input",
                       stored: dict[str, dict[str, Any]] | None = None) -> list[dict[str, Any]]:
    """``items`` with every reference replaced by a copy of the item it names (``items`` itself when it holds
    none): in ``history`` or before it in ``items``, else in ``stored`` (the tenant's items :func:`unresolved`
    named, found in the store). Linear: one index of the ids, built only when a reference is there."""
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
            if found is None and stored is not None:
                found = stored.get(item["id"])
            if found is None or found.get("type") == REFERENCE:
                raise not_found(f"Item with id '{item['id'][:200]}' not found.", param=f"{param}[{index}].id",
                                code="item_not_found")
            item = copy.deepcopy(found)  # the stored original is history too: it must not change with this one
        elif isinstance(item.get("id"), str):
            known.setdefault(item["id"], item)
        resolved.append(item)
    return resolved
