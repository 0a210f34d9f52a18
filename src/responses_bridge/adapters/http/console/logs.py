"""The logs: a tenant's stored responses, newest first, and one response as the conversation it was.

A page of the list is the API's own page (``list_responses``: a keyset seek in the index led by the tenant, narrowed
by model, status and time in SQL); the text and tool filters, which no index holds, are checked on the rows read,
at most :data:`SCAN_BUDGET` of them a page, so a page costs the same on a store of any size: a search that has not
found a page yet says how far it looked and continues from there. Every read is the tenant's, as the API's is.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

import orjson

from ....store import ResponseStore
from ....store.records import MAX_PAGE_LIMIT, ResponseFilter
from .items import ItemView, searchable, summary_text, tools_used, view

PAGE = 25
SCAN_BUDGET = 2000
"""Rows read at most for one page of a text or tool search."""
CHAIN_SHOWN = 20
ITEMS_SHOWN = 100
STATUSES = ("completed", "failed", "incomplete", "in_progress", "queued", "cancelled")
SPANS = {"1h": 3600, "24h": 86400, "7d": 7 * 86400, "30d": 30 * 86400}


@dataclass(slots=True)
class Filters:
    model: str = ""
    status: str = ""
    since: str = ""  # one of SPANS, or ""
    tool: str = ""
    text: str = ""

    @classmethod
    def of(cls, query: Any) -> Filters:
        status = query.get("status", "")
        since = query.get("since", "")
        return cls(model=query.get("model", "").strip()[:200], status=status if status in STATUSES else "",
                   since=since if since in SPANS else "", tool=query.get("tool", "").strip()[:200],
                   text=query.get("text", "").strip()[:200])

    def where(self, now: float) -> ResponseFilter:
        return ResponseFilter(model=self.model or None, status=self.status or None,
                              created_after=int(now) - SPANS[self.since] if self.since else None)

    def query(self) -> dict[str, str]:
        return {name: value for name, value in (("model", self.model), ("status", self.status),
                                                 ("since", self.since), ("tool", self.tool), ("text", self.text))
                if value}


@dataclass(slots=True)
class Row:
    id: str
    created: str
    model: str
    status: str
    summary: str
    tools: list[str]
    tokens: int | None


@dataclass(slots=True)
class LogPage:
    rows: list[Row]
    next_after: str | None  # the cursor of the next page (or of the search's next stretch)
    scanned: int  # rows read for this page (a search's, when more than shown)
    searching: bool  # a search stopped at its budget before filling the page


async def log_page(store: ResponseStore, tenant: str, filters: Filters, after: str | None) -> LogPage:
    where = filters.where(time.time())
    searching = bool(filters.text or filters.tool)
    rows: list[Row] = []
    scanned = 0
    cursor = after
    while True:
        page = await store.list_responses(tenant=tenant, after=cursor, order="desc", where=where,
                                          limit=MAX_PAGE_LIMIT if searching else PAGE)
        for response_id, raw in zip(page.ids, page.data, strict=True):
            scanned += 1
            cursor = response_id
            response = orjson.loads(raw)
            if searching and not _matches(response, filters):
                continue
            rows.append(_row(response))
            if len(rows) == PAGE:
                return LogPage(rows, response_id if (page.has_more or response_id != page.ids[-1]) else None,
                               scanned, False)
        if not page.has_more:
            return LogPage(rows, None, scanned, False)
        if scanned >= SCAN_BUDGET:
            return LogPage(rows, cursor, scanned, True)


def _matches(response: dict[str, Any], filters: Filters) -> bool:
    if filters.text and filters.text.lower() not in searchable(response):
        return False
    return not filters.tool or filters.tool.lower() in (name.lower() for name in tools_used(response))


def _row(response: dict[str, Any]) -> Row:
    found = response.get("usage")
    usage: dict[str, Any] = found if isinstance(found, dict) else {}
    return Row(str(response.get("id", "")), when(response.get("created_at")), str(response.get("model") or ""),
               str(response.get("status") or ""), summary_text(response), tools_used(response),
               usage.get("total_tokens") if isinstance(usage.get("total_tokens"), int) else None)


def when(seconds: Any) -> str:
    if not isinstance(seconds, int | float):
        return ""
    return datetime.fromtimestamp(seconds, UTC).strftime("%Y-%m-%d %H:%M:%S UTC")


@dataclass(slots=True)
class Detail:
    response: dict[str, Any]
    inputs: list[ItemView]
    more_inputs: bool
    outputs: list[ItemView]
    chain: list[tuple[str, str]]  # (id, summary), the nearest earlier response first; found in the tenant's store
    chain_gap: str | None  # an earlier id that is not stored (deleted, or never stored)
    facts: list[tuple[str, str]] = field(default_factory=list)
    usage: list[tuple[str, str]] = field(default_factory=list)
    error: str = ""


async def response_detail(store: ResponseStore, tenant: str, response_id: str,
                          upstream: str | None) -> Detail | None:
    response = await store.get_response(response_id, tenant=tenant)
    if response is None:
        return None
    inputs = await store.list_input_items(response_id, tenant=tenant, limit=ITEMS_SHOWN, order="asc")
    chain: list[tuple[str, str]] = []
    gap: str | None = None
    previous = response.get("previous_response_id")
    while isinstance(previous, str) and previous and len(chain) < CHAIN_SHOWN:
        earlier = await store.get_response(previous, tenant=tenant)
        if earlier is None:
            gap = previous
            break
        chain.append((previous, summary_text(earlier) or str(earlier.get("status", ""))))
        previous = earlier.get("previous_response_id")
    detail = Detail(response, [view(item) for item in (inputs.data if inputs is not None else [])],
                    bool(inputs is not None and inputs.has_more),
                    [view(item) for item in response.get("output") or () if isinstance(item, dict)], chain, gap)
    detail.facts = _facts(response, upstream)
    usage = response.get("usage")
    if isinstance(usage, dict):
        detail.usage = [(name, str(value)) for name, value in _flat(usage)]
    error = response.get("error")
    if isinstance(error, dict):
        detail.error = f"{error.get('code') or ''} {error.get('message') or ''}".strip()
    return detail


def _facts(response: dict[str, Any], upstream: str | None) -> list[tuple[str, str]]:
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
    if upstream:
        facts.append(("upstream", upstream))
    for name in ("background", "service_tier", "truncation", "tool_choice"):
        if response.get(name) not in (None, False, ""):
            facts.append((name, str(response[name]) if not isinstance(response[name], dict)
                          else orjson.dumps(response[name]).decode()))
    incomplete = response.get("incomplete_details")
    if isinstance(incomplete, dict):
        facts.append(("incomplete", str(incomplete.get("reason") or "")))
    return facts


def _flat(usage: dict[str, Any], prefix: str = "") -> list[tuple[str, Any]]:
    flat: list[tuple[str, Any]] = []
    for name, value in usage.items():
        if isinstance(value, dict):
            flat.extend(_flat(value, f"{prefix}{name}."))
        else:
            flat.append((prefix + name, value))
    return flat
