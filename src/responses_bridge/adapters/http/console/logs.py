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
from typing import Any

import orjson

from ....store.browsing import ResponseBrowser, as_stored, whole_string
from ....store.records import ResponseFilter
from .items import summary_text, tools_used

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

    def needles(self) -> list[str]:
        """What the database looks for in each response's stored JSON: the text anywhere, a tool's name as a
        whole string (then checked against the tools the response used, once it is read to be shown)."""
        return ([as_stored(self.text)] if self.text else []) + ([whole_string(self.tool)] if self.tool else [])

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
    scanned: int  # responses examined for this page
    scanned_bytes: int  # their stored JSON's bytes
    searching: bool  # a search stopped at its budget before filling the page
    read_cut: bool = False  # the page ended at ROWS_BYTES read, before PAGE rows

    @property
    def scanned_mb(self) -> str:
        return f"{self.scanned_bytes / MIB:.0f}"


async def log_page(browser: ResponseBrowser, tenant: str, filters: Filters, after: str | None) -> LogPage:
    """A page of rows: ids and sizes first, a search run in the database over stretches of at most
    STATEMENT_BYTES, and only the rows shown read, in batches of at most READ_BATCH_BYTES, each parsed in a
    worker thread."""
    where = filters.where(time.time())
    needles = filters.needles()
    page = LogPage([], None, 0, 0, False)
    cursor = after
    read = 0
    while True:
        sizes, more = await browser.response_sizes(tenant=tenant, after=cursor, where=where,
                                                   limit=SIZES_READ if needles else PAGE)
        for stretch in _stretches(sizes, STATEMENT_BYTES):
            found = (await browser.responses_containing([name for name, _ in stretch], needles, tenant=tenant)
                     if needles else None)
            start = 0
            while start < len(stretch):
                batch, taken, end, read_cut = _batch(stretch, start, found, read, bool(page.rows))
                rows = await _read_rows(browser, tenant, batch, filters.tool)
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
            if needles and (page.scanned_bytes >= SEARCH_BYTES or page.scanned >= SEARCH_ROWS) and (
                    more or stretch[-1] != sizes[-1]):
                page.next_after, page.searching = cursor, True
                return page
        if not more:
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


def _stretches(sizes: list[tuple[str, int]], budget: int) -> list[list[tuple[str, int]]]:
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


async def _read_rows(browser: ResponseBrowser, tenant: str, batch: list[str], tool: str) -> dict[str, Row]:
    if not batch:
        return {}
    stored = await browser.responses_json(batch, tenant=tenant)  # one deleted since its size was read: absent
    return await asyncio.to_thread(_rows_of, stored, tool)


def _rows_of(stored: list[tuple[str, bytes]], tool: str) -> dict[str, Row]:
    """In a worker thread: the rows of stored responses (none for one whose tool filter's name was found in it but
    not among the tools it used); each parsed response is let go of here, only its row leaves."""
    rows: dict[str, Row] = {}
    for response_id, raw in stored:
        response = orjson.loads(raw)
        if not isinstance(response, dict):
            continue
        if tool and tool.lower() not in (name.lower() for name in tools_used(response)):
            continue
        rows[response_id] = _row(response)
        del response
    return rows


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
