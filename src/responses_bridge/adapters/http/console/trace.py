"""A response's (or a session turn's) timing and trace for the console: the facts of its stored timing document
(observability/timing.py: time to first token, latency, the upstream's headers and first byte, the pools it waited
for, the upstream and replica), its spans as a waterfall, and one span on a page of its own — its attributes, and its
input and output read from the stored response (a model call's messages and answer are the response's items: its
input, the output items before the call, the output items it made; a tool call's arguments and result are the output
item of its call id), never stored twice. Items are read and bounded as the response's page reads them (detail.py:
:data:`~.detail.ITEMS_PAGE` items and :data:`~.detail.ITEMS_BYTES` of stored JSON a kind, each item to
:data:`~.detail.ITEM_CHARS`), and shown through the same views (items.py), so what the rest of the console hides
(sealed content, credential-shaped text) is hidden here too.

Recorded by the bridge for every stored response with nothing installed; a session's turns keep theirs in the turn
(the ``_private`` part the API never shows), their model calls linking to the responses that made them.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass, field
from typing import Any

import orjson

from ....observability.timing import readable
from ....store.browsing import ResponseBrowser
from ....store.timings import timing_document
from .detail import ITEM_CHARS, ITEMS_BYTES, ITEMS_PAGE, Shown, _views_of

ROW = 22
"""Pixels a span's row takes in the waterfall (the SVG's own units: no style attribute, which the CSP refuses)."""
LABEL = 300
"""Of the SVG's 1000 units, the width the spans' names take; the bars share the rest."""
ATTRIBUTE_CHARS = 500


@dataclass(slots=True)
class Bar:
    """One span on the waterfall: where its bar starts and how long it is (in the SVG's units), what it is, and the
    page it opens (empty: none)."""

    name: str
    kind: str
    x: float
    width: float
    millis: float
    start_ms: float
    failed: bool
    href: str


@dataclass(slots=True)
class Trace:
    """A timing document made ready for a page: its facts and its bars."""

    facts: list[tuple[str, str]]
    bars: list[Bar]
    millis: float
    dropped: int = 0


@dataclass(slots=True)
class SpanPage:
    """One span: its facts and attributes, and its input and output items (bounded as the response's page)."""

    name: str
    kind: str
    facts: list[tuple[str, str]]
    attributes: list[tuple[str, str]]
    inputs: list[Shown] = field(default_factory=list)
    outputs: list[Shown] = field(default_factory=list)
    more_inputs: bool = False
    more_outputs: bool = False
    response_id: str = ""


def _ms(value: Any) -> str:
    return f"{value:.1f} ms" if isinstance(value, int | float) else "—"


def timing_facts(document: dict[str, Any]) -> list[tuple[str, str]]:
    """The document's facts, in the order a person asks them."""
    facts = [("time to first token", _ms(document.get("ttft_ms"))), ("latency", _ms(document.get("latency_ms"))),
             ("upstream headers", _ms(document.get("upstream_headers_ms"))),
             ("upstream first byte", _ms(document.get("upstream_first_byte_ms")))]
    waits = document.get("waits_ms")
    if isinstance(waits, dict):
        facts += [(f"waited for {pool}", _ms(millis)) for pool, millis in waits.items()]
    for name in ("upstream", "replica"):
        if document.get(name):
            facts.append((name, str(document[name])[:ATTRIBUTE_CHARS]))
    return facts


def trace_of(document: dict[str, Any], href: Any) -> Trace:
    """``href(index, span)``: the page a span opens ("" for none)."""
    spans = [span for span in document.get("spans") or () if isinstance(span, dict)]
    length = max([float(document.get("latency_ms") or 0.0), *(float(span.get("end_ms") or 0.0) for span in spans)])
    scale = (1000 - LABEL) / length if length > 0 else 0.0
    bars: list[Bar] = []
    for index, span in enumerate(spans):
        start, end = float(span.get("start_ms") or 0.0), float(span.get("end_ms") or 0.0)
        attributes = span.get("attributes") or {}
        bars.append(Bar(str(span.get("name", ""))[:120], str(span.get("kind", "")), LABEL + start * scale,
                        max(1.0, (end - start) * scale), end - start, start,
                        bool(isinstance(attributes, dict) and attributes.get("error")), href(index, span)))
    return Trace(timing_facts(document), bars, length, int(document.get("dropped_spans") or 0))


async def response_trace(browser: ResponseBrowser, tenant: str, response_id: str, link: Any) -> Trace | None:
    """The stored response's trace (None: it has no timing, e.g. stored before the bridge kept one)."""
    stored = timing_document(await browser.response_timing(response_id, tenant=tenant))
    if stored is None:
        return None
    return trace_of(readable(stored), lambda index, span: link(f"/console/logs/{response_id}/trace/{index}"))


def turn_trace(turn: dict[str, Any], link: Any) -> Trace | None:
    """A session turn's trace, from the timing the turn keeps: its model and tool calls open the pages of the
    response that made them, a response's span that response."""
    stored = ((turn.get("_private") or {}).get("timing")) if isinstance(turn.get("_private"), dict) else None
    if not isinstance(stored, list):
        return None
    document = readable(stored)

    def href(index: int, span: dict[str, Any]) -> str:
        attributes = span.get("attributes") or {}
        response_id = attributes.get("response_id") if isinstance(attributes, dict) else None
        if not isinstance(response_id, str) or not response_id.isascii():
            return ""
        if span.get("kind") == "response":
            return link(f"/console/logs/{response_id}")
        position = attributes.get("span_index")
        return link(f"/console/logs/{response_id}/trace/{position}") if isinstance(position, int) else ""

    return trace_of(document, href)


async def span_page(browser: ResponseBrowser, tenant: str, response_id: str, index: int) -> SpanPage | None:
    """The span at ``index`` of the response's trace, with its input and output (None: no such span)."""
    stored = timing_document(await browser.response_timing(response_id, tenant=tenant))
    spans = readable(stored).get("spans") if stored is not None else None
    if not isinstance(spans, list) or not 0 <= index < len(spans) or not isinstance(spans[index], dict):
        return None
    span = spans[index]
    attributes = span.get("attributes") if isinstance(span.get("attributes"), dict) else {}
    start, end = float(span.get("start_ms") or 0.0), float(span.get("end_ms") or 0.0)
    page = SpanPage(str(span.get("name", ""))[:200], str(span.get("kind", "")),
                    [("kind", str(span.get("kind", ""))), ("starts at", _ms(start)), ("duration", _ms(end - start))],
                    [(str(key)[:200], _attribute(value)) for key, value in attributes.items()],
                    response_id=response_id)
    kind = span.get("kind")
    if kind == "model":
        output = attributes.get("output")
        first, last = (output if isinstance(output, list) and len(output) == 2
                       and all(isinstance(value, int) for value in output) else (0, 0))
        # the messages it was sent: the response's input, then the output items of the calls before it
        page.inputs, page.more_inputs = await _items(browser, tenant, response_id, "input", 0, None)
        if first > 0:
            earlier, more = await _items(browser, tenant, response_id, "output", 0, first)
            page.inputs += earlier
            page.more_inputs = page.more_inputs or more
        page.outputs, page.more_outputs = await _items(browser, tenant, response_id, "output", first, last)
    elif kind == "tool":
        position = attributes.get("output_index")
        call_id = attributes.get("gen_ai.tool.call.id")
        if isinstance(position, int) and position >= 0:  # the call's item: its arguments and its result
            page.outputs, _ = await _items(browser, tenant, response_id, "output", position, position + 1)
        elif isinstance(call_id, str):  # a client's function call (a session's turn): the items of its call id
            page.outputs = await _call_items(browser, tenant, response_id, call_id)
    return page


def _attribute(value: Any) -> str:
    text = value if isinstance(value, str) else orjson.dumps(value).decode()
    return text if len(text) <= ATTRIBUTE_CHARS else text[:ATTRIBUTE_CHARS] + "…"


async def _items(browser: ResponseBrowser, tenant: str, response_id: str, kind: str, start: int,
                 stop: int | None) -> tuple[list[Shown], bool]:
    """The ``kind`` items from ``start`` up to ``stop`` (None: the end), bounded as a page of the response's; and
    whether some were left out."""
    limit = ITEMS_PAGE if stop is None else max(0, min(ITEMS_PAGE, stop - start))
    if limit == 0:
        return [], False
    sizes = await browser.item_sizes(response_id, kind, tenant=tenant, start=start, limit=limit + 1)
    if not sizes:
        return [], False
    chosen: list[int] = []
    total = 0
    for position, size in sizes[:limit]:
        if stop is not None and position >= stop:
            break
        if chosen and total + size > ITEMS_BYTES:
            break
        chosen.append(position)
        total += size
    rows = await browser.items_json(response_id, kind, chosen, tenant=tenant)
    shown = await asyncio.to_thread(_views_of, rows, ITEM_CHARS)
    wanted = len(sizes) if stop is None else len([position for position, _ in sizes if position < stop])
    return shown, wanted > len(chosen)


async def _call_items(browser: ResponseBrowser, tenant: str, response_id: str, call_id: str) -> list[Shown]:
    """The output items of the call ``call_id`` (its call and its result: one item for the bridge's own tools),
    among the first page's worth of the response's output items."""
    sizes = await browser.item_sizes(response_id, "output", tenant=tenant, start=0, limit=ITEMS_PAGE * 4)
    if not sizes:
        return []
    chosen: list[int] = []
    total = 0
    for position, size in sizes:
        if chosen and total + size > ITEMS_BYTES:
            break
        chosen.append(position)
        total += size
    rows = await browser.items_json(response_id, "output", chosen, tenant=tenant)
    matching = [(position, raw) for position, raw in rows if _of_call(raw, call_id)]
    return await asyncio.to_thread(_views_of, matching, ITEM_CHARS)


def _of_call(raw: bytes, call_id: str) -> bool:
    needle = call_id.encode()
    if needle not in raw:  # most items: no parse
        return False
    item = orjson.loads(raw)
    return isinstance(item, dict) and call_id in (item.get("call_id"), item.get("id"))
