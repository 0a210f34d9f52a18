"""``item_reference`` input items (``{"type": "item_reference", "id": …}``, or the untyped ``{"id": …}``) replaced by
the items they name.

An item is found first among what the request already holds: the history it continues (the
``previous_response_id`` chain's input and output items, or the conversation's items) and the input items before
the reference. Any other item the tenant stored is found too, as OpenAI resolves any stored item of the project
(a response's input or output item, a conversation's item): :func:`expansion` names the ids to look up in the
store (``ResponseStore.find_items``), only when a reference names one the request does not hold, so a request
without references costs nothing more. An id found nowhere (another tenant's among them) is a 404 naming the
reference, as OpenAI answers an unknown item. Resolved items are stored, listed and sent upstream as the item
itself, so nothing downstream meets a reference.

A reference costs what it becomes. A few bytes of ``{"id": …}`` become the whole item they name, once for every
occurrence: 250 references to one stored 1 MiB item made one 1 MiB request send a 250 MiB body upstream and store
250 MiB again, while the budget had charged its few kilobytes. So :func:`resolve_stored` reserves, before any
reference is expanded, what every occurrence will hold (its item's JSON bytes and the item, as a loaded item is
charged: fairness/memory_charge.py) — the items the request holds measured here (each distinct item's JSON once,
multiplied by its references), the stored ones by the store from its rows' sizes, before a row is read, each
occurrence counted. A request whose references do not fit its holder's room waits for it, or is refused naming
their expanded size (the budget's 503, or its 400 ``history_too_large`` past what a caller may hold alone), with
nothing expanded; what is stored of its input is bounded by the same rule, as it is what was admitted.

A resolved reference is the item it names, shared, not a copy: every occurrence is the same dict as the history's
or the earlier input's item. Nothing after resolution writes into an input item in place — the stages that give
an item a field (a call output's ``call_id``: protocol/tools/call_outputs.py, a reasoning item's opened text:
engine/reasoning.py) replace the list's entry with a changed copy — so the original, which is history too, never
changes with it, and 250 references hold one item's dicts and lists, not 250 copies of them. (A deep copy shared
the item's strings already, being immutable: measured, 30 references to a 1 MiB item held as much either way. What
references cost is what they become downstream — the upstream body, the stored rows — which the reservation pays.)
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Sequence
from typing import Any, Protocol

import orjson

from ..errors import not_found

REFERENCE = "item_reference"
Reserve = Callable[[int, int, str], Awaitable[None]]
"""How the caller reserves what references will hold before they are expanded: ``(bytes, items, what)``, the
bytes being the expanded items' JSON, every occurrence counted (fairness/memory_charge.py's
``reserve_references``)."""


class ItemFinder(Protocol):
    """Where a tenant's stored items are found by id (``ResponseStore.find_items``). ``item_ids`` holds an id once
    for every reference naming it: what the store reserves for them before reading counts each occurrence."""

    async def find_items(self, item_ids: Sequence[str], *, tenant: str) -> dict[str, dict[str, Any]]: ...


async def resolve_stored(history: list[dict[str, Any]], items: list[dict[str, Any]], finder: ItemFinder | None, *,
                         tenant: str, reserve: Reserve, param: str = "input") -> list[dict[str, Any]]:
    """:func:`resolve_references`, what the references will hold reserved first (``reserve``, for those naming
    an item the request holds; the store, for the others), then the ids the request does not hold looked up among
    ``tenant``'s stored items (one store read, none when every reference is to an item the request holds)."""
    if not has_references(items):
        return items
    missing, size, count = expansion(history, items)
    if count:
        await reserve(size, count, f"{count} item_reference{'s' if count > 1 else ''} to items the request holds")
    stored = await finder.find_items(missing, tenant=tenant) if missing and finder is not None else None
    return resolve_references(history, items, param, stored)


def has_references(items: list[dict[str, Any]]) -> bool:
    return any(item.get("type") == REFERENCE for item in items)


def expansion(history: list[dict[str, Any]], items: list[dict[str, Any]]) -> tuple[list[str], int, int]:
    """What ``items``' references will become: the ids that neither ``history`` nor an earlier item of ``items``
    holds, to look up among the tenant's stored items (once for every reference naming them), and the JSON bytes
    and the number of the items the others name — the items the request holds, each occurrence counted (a distinct
    item's JSON measured once). Linear, as :func:`resolve_references` is; an id found nowhere is counted as missing
    (the store's answer, or its absence, makes it the 404)."""
    known: dict[str, dict[str, Any]] = {}
    for item in history:
        if isinstance(item.get("id"), str):
            known.setdefault(item["id"], item)
    sizes: dict[str, int] = {}
    missing: list[str] = []
    size = count = 0
    for item in items:
        if item.get("type") == REFERENCE:
            item_id = item["id"]
            found = known.get(item_id)
            if found is None:
                missing.append(item_id)
                continue
            if item_id not in sizes:
                sizes[item_id] = len(orjson.dumps(found))
            size += sizes[item_id]
            count += 1
        elif isinstance(item.get("id"), str):
            known.setdefault(item["id"], item)
    return missing, size, count


def resolve_references(history: list[dict[str, Any]], items: list[dict[str, Any]], param: str = "input",
                       stored: dict[str, dict[str, Any]] | None = None) -> list[dict[str, Any]]:
    """``items`` with every reference replaced by the item it names, shared (``items`` itself when it holds none):
    in ``history`` or before it in ``items``, else in ``stored`` (the tenant's items :func:`expansion` named,
    found in the store). Linear: one index of the ids, built only when a reference is there."""
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
            item = found  # shared: nothing downstream writes into an input item in place (see the module's words)
        elif isinstance(item.get("id"), str):
            known.setdefault(item["id"], item)
        resolved.append(item)
    return resolved
