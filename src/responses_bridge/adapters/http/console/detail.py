"""One stored response as the conversation it was: its facts, its chain, and its input and output items a page at a
time — and one item on a page of its own.

A response may hold 10,000 items, or 700 calls of 20 KB each: shown whole it was a page of megabytes. So its items
are read from their own rows by position (store/browsing.py), a page of at most :data:`ITEMS_PAGE` of each kind and
:data:`ITEMS_BYTES` of stored JSON, and each item is shown bounded to :data:`ITEM_CHARS` characters, linking to its
own page when it was cut (which shows it to :data:`OWN_PAGE_CHARS`; the API has all of it). The response itself is
read once for its facts, its chain's earlier responses for their first words within :data:`CHAIN_BYTES`; every
parse and every view is built in a worker thread, never on the event loop.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import orjson

from ....store.browsing import ResponseBrowser
from .items import SHOWN_CHARS, ItemView, blocks_up_to, clip, summary_text, view
from .logs import MIB, when
from .pricing import Prices, money

CHAIN_SHOWN = 20
CHAIN_BYTES = 32 * MIB
"""Stored JSON of earlier responses read for the chain's summaries; past it an earlier response shows its id only."""
ITEMS_PAGE = 50
ITEMS_BYTES = 8 * MIB
"""Stored JSON of one kind's items read for one page (its first item whatever its size)."""
ITEM_CHARS = 4_000
"""Characters of one item shown on the response's page (escaped as HTML, at most a few times this in bytes)."""
OWN_PAGE_CHARS = 400_000
"""Characters of one item shown on its own page."""
FACT_CHARS = 2_000
KINDS = ("input", "output")


@dataclass(slots=True)
class Shown:
    """One item on a page: its view (bounded), its position among its kind's items, and whether it was cut."""

    item: ItemView
    position: int
    cut: bool


@dataclass(slots=True)
class Items:
    """A page of one kind's items, from position ``start``; ``next_start``: where the next page begins (None: no
    more)."""

    shown: list[Shown]
    start: int
    next_start: int | None


@dataclass(slots=True)
class Detail:
    facts: list[tuple[str, str]]
    usage: list[tuple[str, str]]
    error: str
    inputs: Items
    outputs: Items
    chain: list[tuple[str, str]] = field(default_factory=list)  # (id, summary), the nearest earlier response first
    chain_gap: str | None = None  # an earlier id that is not stored (deleted, or never stored)


async def response_detail(browser: ResponseBrowser, tenant: str, response_id: str,
                          upstream: Callable[[str], str | None], starts: dict[str, int],
                          prices: Prices | None = None) -> Detail | None:
    """``upstream``: the upstream a model's requests go to (None: not worth saying); ``starts``: the first
    position shown of each kind (0 when not asked); ``prices``: the spend is said when its model has one."""
    links = await browser.response_chain(response_id, tenant=tenant, depth=CHAIN_SHOWN)
    if not links:
        return None
    raw = await browser.response_json(response_id, tenant=tenant)
    if raw is None:  # deleted meanwhile
        return None
    facts, usage, error = await asyncio.to_thread(_facts_of, raw, prices)
    del raw
    went = upstream(dict(facts).get("model", ""))
    if went:
        facts.append(("upstream", went))
    inputs = await item_page(browser, tenant, response_id, "input", starts.get("input", 0))
    outputs = await item_page(browser, tenant, response_id, "output", starts.get("output", 0))
    if inputs is None or outputs is None:
        return None
    detail = Detail(facts, usage, error, inputs, outputs)
    read = 0
    for earlier, _, size in links[1:]:
        summary = ""
        if read + size <= CHAIN_BYTES:
            read += size
            found = await browser.response_json(earlier, tenant=tenant)
            summary = await asyncio.to_thread(_summary_of, found) if found is not None else ""
        detail.chain.append((earlier, summary))
    last_previous = links[-1][1]
    if last_previous and len(links) <= CHAIN_SHOWN:
        detail.chain_gap = last_previous  # the chain ended before its depth: that link is not stored
    return detail


async def item_page(browser: ResponseBrowser, tenant: str, response_id: str, kind: str, start: int) -> Items | None:
    sizes = await browser.item_sizes(response_id, kind, tenant=tenant, start=start, limit=ITEMS_PAGE + 1)
    if sizes is None:
        return None
    chosen: list[int] = []
    total = 0
    for position, size in sizes[:ITEMS_PAGE]:
        if chosen and total + size > ITEMS_BYTES:
            break
        chosen.append(position)
        total += size
    rows = await browser.items_json(response_id, kind, chosen, tenant=tenant)
    shown = await asyncio.to_thread(_views_of, rows, ITEM_CHARS)
    following = [position for position, _ in sizes if not chosen or position > chosen[-1]]
    return Items(shown, start, following[0] if following else None)


async def one_item(browser: ResponseBrowser, tenant: str, response_id: str, kind: str,
                   position: int) -> Shown | None:
    """The item at ``position`` among the response's ``kind`` items, on a page of its own."""
    rows = await browser.items_json(response_id, kind, [position], tenant=tenant)
    if not rows:
        return None
    shown = await asyncio.to_thread(_views_of, rows, OWN_PAGE_CHARS)
    return shown[0] if shown else None


def _views_of(rows: list[tuple[int, bytes]], chars: int) -> list[Shown]:
    """In a worker thread: each stored item parsed, viewed and bounded to ``chars``."""
    shown: list[Shown] = []
    with blocks_up_to(max(chars, SHOWN_CHARS)):
        for position, raw in rows:
            item = orjson.loads(raw)
            item_view = view(item) if isinstance(item, dict) else ItemView("item", "item", "other",
                                                                           blocks=[("item", str(item))])
            cut = clip(item_view, chars)
            shown.append(Shown(item_view, position, cut))
    return shown


def _summary_of(raw: bytes) -> str:
    response = orjson.loads(raw)
    if not isinstance(response, dict):
        return ""
    return summary_text(response) or str(response.get("status", ""))


def _facts_of(raw: bytes, prices: Prices | None) -> tuple[list[tuple[str, str]], list[tuple[str, str]], str]:
    """In a worker thread: the response's facts, usage (and spend) and error, the rest of it let go of here."""
    response = orjson.loads(raw)
    if not isinstance(response, dict):
        return [], [], ""
    found = response.get("usage")
    usage = [(_cut(name), _cut(str(value))) for name, value in _flat(found)] if isinstance(found, dict) else []
    spend = prices.spend(str(response.get("model") or ""), found) if prices else None
    if spend is not None:
        usage.append(("spend", money(spend)))
    error = response.get("error")
    said = f"{error.get('code') or ''} {error.get('message') or ''}".strip() if isinstance(error, dict) else ""
    return _facts(response), usage, _cut(said)


def _facts(response: dict[str, Any]) -> list[tuple[str, str]]:
    facts = [("status", str(response.get("status") or "")), ("model", str(response.get("model") or "")),
             ("created", when(response.get("created_at")))]
    created, completed = response.get("created_at"), response.get("completed_at")
    if isinstance(completed, int | float):
        facts.append(("completed", when(completed)))
        if isinstance(created, int | float):
            facts.append(("total time", f"{completed - created:.0f} s"))
    conversation = response.get("conversation")
    if isinstance(conversation, dict) and conversation.get("id"):
        facts.append(("conversation", str(conversation["id"])))
    for name in ("background", "service_tier", "truncation", "tool_choice"):
        if response.get(name) not in (None, False, ""):
            facts.append((name, str(response[name]) if not isinstance(response[name], dict)
                          else orjson.dumps(response[name]).decode()))
    incomplete = response.get("incomplete_details")
    if isinstance(incomplete, dict):
        facts.append(("incomplete", str(incomplete.get("reason") or "")))
    return [(name, _cut(value)) for name, value in facts]


def _cut(text: str) -> str:
    return text if len(text) <= FACT_CHARS else text[:FACT_CHARS] + "…"


def _flat(usage: dict[str, Any], prefix: str = "") -> list[tuple[str, Any]]:
    flat: list[tuple[str, Any]] = []
    for name, value in usage.items():
        if isinstance(value, dict):
            flat.extend(_flat(value, f"{prefix}{name}."))
        else:
            flat.append((prefix + name, value))
    return flat
