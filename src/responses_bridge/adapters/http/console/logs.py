"""The logs: a tenant's stored responses, newest first (one response's page is detail.py's).

A page of the list walks the listing index as the API's own page does (a keyset seek led by the tenant, narrowed by
model, status and time in SQL), but reads ids and stored sizes first (store/browsing.py), never every row's JSON.
The text and tool filters, which no index holds, are looked for by the database in the stored JSON, a stretch of at
most :data:`STATEMENT_BYTES` per statement and :data:`SEARCH_BYTES` (or :data:`SEARCH_ROWS`) per page: a search
that has not filled a page by then says how far it looked ("search stopped after N MB") and continues from there.
Only the rows shown are read into this process, a batch of at most :data:`READ_BATCH_BYTES` (or one larger
response) at a time, parsed in a worker thread, at most :data:`ROWS_BYTES` a page: a search or a page of large
responses never holds the event loop that serves every tenant's API calls, and what it holds in memory is one batch
at a time. Every read is the tenant's, as the API's is.
"""

from __future__ import annotations

import asyncio
import time
from dataclasses import dataclass
from datetime import UTC, datetime
from decimal import Decimal
from typing import Any

import orjson

from ....store.browsing import ResponseBrowser
from .items import summary_text, tools_used
from .log_filters import SPANS, STATUSES, Filters
from .pricing import Prices, tokens

__all__ = ["SPANS", "STATUSES", "Filters", "LogPage", "Row", "log_page", "when"]

MIB = 1024 * 1024
PAGE = 25
SIZES_READ = 500
"""Ids and stored sizes asked for at once while searching (a page without a search asks for a page's)."""
SEARCH_ROWS = 2000
"""Responses one page's search examines at most (however small they are)."""
SEARCH_BYTES = 256 * MIB
"""Stored JSON one page's search examines at most, in the database: past it the page says where it stopped and
continues from there when asked."""
STATEMENT_BYTES = 16 * MIB
"""Stored JSON one search statement examines at most (a response larger than this alone): the read connection it
holds is free again within tens of milliseconds."""
ROWS_BYTES = 64 * MIB
"""Stored JSON one page reads to show its rows: a page of large responses ends early, its next page continuing
after it."""
READ_BATCH_BYTES = 4 * MIB
"""Stored JSON read and parsed at once (one statement, one worker thread's turn; a larger response alone): what a
page holds in memory at a time."""
SORTED_DEPTH = 1_000
"""A page sorted slowest first starts at most this deep (40 pages): the slowest are what the order is for, and an
offset costs the entries it skips."""
COUNTED = 1_000
"""A page without a search says how many responses its filters admit, counted in the index up to this many (past it:
"more than 1000"): a walk of at most so many index entries (0.2 ms on 100,000 responses; a metadata pair's, joined
to its responses, 17 ms), where 10,000 took 13 and 167 ms. A search's total is not cheap (each response's JSON
examined), so it says none."""

@dataclass(slots=True)
class Row:
    id: str
    created: str
    model: str
    status: str
    summary: str
    tools: list[str]
    tokens: int | None
    spend: Decimal | None = None  # its usage at its model's price (pricing.py), None without one
    counted: tuple[int, int, int] | None = None  # uncached input, cached input, output tokens (the CSV's columns)
    ttft_ms: float | None = None  # its timing's columns (observability/timing.py), None: not timed
    latency_ms: float | None = None


@dataclass(slots=True)
class LogPage:
    rows: list[Row]
    next_after: str | None  # the cursor of the next page (or of the search's next stretch)
    scanned: int  # responses examined for this page
    scanned_bytes: int  # their stored JSON's bytes
    searching: bool  # a search stopped at its budget before filling the page
    read_cut: bool = False  # the page ended at ROWS_BYTES read, before PAGE rows
    newer_before: str | None = None  # the cursor of the newer page (pages without a search)
    total: int | None = None  # responses the filters admit (pages without a search), at most COUNTED + 1
    offset: int = 0  # a sorted page's place (slowest first), and where its neighbours start (None: none)
    next_offset: int | None = None
    previous_offset: int | None = None

    @property
    def scanned_mb(self) -> str:
        return f"{self.scanned_bytes / MIB:.0f}"


async def log_page(browser: ResponseBrowser, tenant: str, filters: Filters, after: str | None,
                   before: str | None = None, prices: Prices | None = None, count: bool = True,
                   offset: int = 0) -> LogPage:
    """A page of rows: ids and sizes first, a search run in the database over stretches of at most
    STATEMENT_BYTES, and only the rows shown read, in batches of at most READ_BATCH_BYTES, each parsed in a
    worker thread. ``before`` (pages without a search): the page just newer than that response; ``count``: say
    the total (a page without a search; an export's pages do not); ``offset``: a sorted page's place (a sort
    applies to pages without a search)."""
    where = filters.where(time.time())
    needles = filters.needles()
    if not needles and filters.sort:
        return await _sorted_page(browser, tenant, filters, offset, prices)
    if not needles:
        return await _plain_page(browser, tenant, filters, after, before, prices, count)
    page = LogPage([], None, 0, 0, False)
    cursor = after
    read = 0
    while True:
        sizes, more = await browser.response_sizes(tenant=tenant, after=cursor, where=where, limit=SIZES_READ,
                                                   inputs=bool(filters.input_needles()))
        for stretch in stretches(sizes, STATEMENT_BYTES):
            found = await browser.responses_containing([name for name, _ in stretch], needles, tenant=tenant,
                                                       inputs=filters.input_needles())
            start = 0
            while start < len(stretch):
                batch, taken, end, read_cut = _batch(stretch, start, found, read, bool(page.rows))
                rows = await _read_rows(browser, tenant, batch, filters, prices)
                read += taken
                for response_id, size in stretch[start:end]:
                    page.scanned, page.scanned_bytes, cursor = page.scanned + 1, page.scanned_bytes + size, response_id
                    if (row := rows.get(response_id)) is not None:
                        page.rows.append(row)
                    if len(page.rows) == PAGE:
                        last = not more and response_id == sizes[-1][0]
                        page.next_after = None if last else response_id
                        return page
                if read_cut:
                    page.next_after, page.read_cut = cursor, True
                    return page
                start = end
            if (page.scanned_bytes >= SEARCH_BYTES or page.scanned >= SEARCH_ROWS) and (
                    more or stretch[-1] != sizes[-1]):
                page.next_after, page.searching = cursor, True
                return page
        if not more:
            return page


async def _sorted_page(browser: ResponseBrowser, tenant: str, filters: Filters, offset: int,
                       prices: Prices | None) -> LogPage:
    """A page of the timed responses slowest first (by latency or time to first token), from ``offset``; no total
    (the index's count would include the responses nobody timed, which the order leaves out)."""
    where = filters.where(time.time())
    offset = max(0, min(offset, SORTED_DEPTH))
    sizes, more = await browser.slowest_sizes(tenant=tenant, where=where, by=filters.sort, offset=offset,
                                              limit=PAGE)
    page = LogPage([], None, 0, 0, False, offset=offset)
    await _fill(page, browser, tenant, sizes, filters, prices)
    if more or page.read_cut:
        following = offset + page.scanned
        page.next_offset = following if following <= SORTED_DEPTH else None
    page.previous_offset = max(0, offset - PAGE) if offset else None
    return page


async def _fill(page: LogPage, browser: ResponseBrowser, tenant: str, sizes: list[tuple[str, int]],
                filters: Filters, prices: Prices | None) -> None:
    """``page``'s rows from ``sizes`` in order, read in batches within ROWS_BYTES (``read_cut`` when it ends
    them early)."""
    start = read = 0
    while start < len(sizes):
        batch, taken, end, read_cut = _batch(sizes, start, None, read, bool(page.rows))
        rows = await _read_rows(browser, tenant, batch, filters, prices)
        read += taken
        for response_id, size in sizes[start:end]:
            page.scanned, page.scanned_bytes = page.scanned + 1, page.scanned_bytes + size
            if (row := rows.get(response_id)) is not None:
                page.rows.append(row)
        if read_cut:
            page.read_cut = True
            return
        start = end


async def _plain_page(browser: ResponseBrowser, tenant: str, filters: Filters, after: str | None,
                      before: str | None, prices: Prices | None, count: bool) -> LogPage:
    """A page without a search: one page of ids and sizes from the index (older than ``after``, or newer than
    ``before``), its rows read within ROWS_BYTES, and the filters' total counted in the index."""
    where = filters.where(time.time())
    newer = before is not None and after is None
    sizes, more = await browser.response_sizes(tenant=tenant, after=after, where=where, limit=PAGE,
                                               before=before if newer else None)
    total = await browser.count_responses(tenant=tenant, where=where, cap=COUNTED) if count else None
    page = LogPage([], None, 0, 0, False, total=total)
    await _fill(page, browser, tenant, sizes, filters, prices)
    shown = sizes[:page.scanned]
    if shown:
        older = page.read_cut or newer or more  # newer: the page it came from (``before``) is older
        page.next_after = shown[-1][0] if older else None
        page.newer_before = shown[0][0] if (more if newer else after is not None) else None
    return page


def _batch(stretch: list[tuple[str, int]], start: int, found: set[str] | None, read: int,
           shown: bool) -> tuple[list[str], int, int, bool]:
    """The responses to read from ``stretch[start:]`` (those found), at most READ_BATCH_BYTES of them (a larger
    one alone), within what is left of ROWS_BYTES; their bytes; the end of the run they cover; and whether the
    page's read budget ends it (the response at the end not examined)."""
    batch: list[str] = []
    total = 0
    for end in range(start, len(stretch)):
        response_id, size = stretch[end]
        if found is not None and response_id not in found:
            continue
        if (shown or batch) and read + total + size > ROWS_BYTES:
            return batch, total, end, True
        if batch and total + size > READ_BATCH_BYTES:
            return batch, total, end, False
        batch.append(response_id)
        total += size
    return batch, total, len(stretch), False


def stretches(sizes: list[tuple[str, int]], budget: int) -> list[list[tuple[str, int]]]:
    """``sizes`` in consecutive runs of at most ``budget`` bytes each (a larger response alone)."""
    stretches: list[list[tuple[str, int]]] = []
    total = budget
    for entry in sizes:
        if total + entry[1] > budget:
            stretches.append([])
            total = 0
        stretches[-1].append(entry)
        total += entry[1]
    return stretches


async def _read_rows(browser: ResponseBrowser, tenant: str, batch: list[str], filters: Filters,
                     prices: Prices | None) -> dict[str, Row]:
    if not batch:
        return {}
    stored = await browser.responses_json(batch, tenant=tenant)  # one deleted since its size was read: absent
    rows = await asyncio.to_thread(_rows_of, stored, filters, prices)
    for response_id, (ttft, latency) in (await browser.response_times(list(rows), tenant=tenant)).items():
        row = rows[response_id]
        row.ttft_ms, row.latency_ms = ttft, latency
    return rows


def _rows_of(stored: list[tuple[str, bytes]], filters: Filters, prices: Prices | None) -> dict[str, Row]:
    """In a worker thread: the rows of stored responses (none for one a filter's needle was found in but not in
    the field the filter names: Filters.admits); each parsed response is let go of here, only its row leaves."""
    rows: dict[str, Row] = {}
    for response_id, raw in stored:
        response = orjson.loads(raw)
        if not isinstance(response, dict):
            continue
        if filters.checked and not filters.admits(response):
            continue
        rows[response_id] = _row(response, prices)
        del response
    return rows


def _row(response: dict[str, Any], prices: Prices | None) -> Row:
    found = response.get("usage")
    usage: dict[str, Any] = found if isinstance(found, dict) else {}
    model = str(response.get("model") or "")
    return Row(str(response.get("id", "")), when(response.get("created_at")), model,
               str(response.get("status") or ""), summary_text(response), tools_used(response),
               usage.get("total_tokens") if isinstance(usage.get("total_tokens"), int) else None,
               prices.spend(model, usage) if prices else None, tokens(usage))


def when(seconds: Any) -> str:
    if not isinstance(seconds, int | float):
        return ""
    return datetime.fromtimestamp(seconds, UTC).strftime("%Y-%m-%d %H:%M:%S UTC")
