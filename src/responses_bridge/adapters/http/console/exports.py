"""CSV exports: a Logs query's rows and the Usage page's totals, streamed as they are read.

A Logs export walks the same pages the Logs page does (logs.py: the listing index, a search in bounded stretches,
the rows read in bounded batches), writing each page's rows before it reads the next: what the export holds in
memory is one page, whatever it sends. It stops at :data:`EXPORT_ROWS` rows or :data:`EXPORT_SCANNED_BYTES` of stored
JSON examined, whichever comes first — the bounds docs/console.md states; a query that needs more is narrowed (a
time range). A cell that a spreadsheet would read as a formula (``=``, ``+``, ``-``, ``@`` first) is written with a
leading ``'``: a model's answer opened in a spreadsheet stays text.
"""

from __future__ import annotations

import csv
import io
from collections.abc import Iterable
from typing import Any

from aiohttp import web

from ....store.browsing import ResponseBrowser
from .log_filters import Filters
from .logs import LogPage, Row, log_page
from .pricing import Prices, money
from .usage import Usage

EXPORT_ROWS = 10_000
EXPORT_SCANNED_BYTES = 1024 * 1024 * 1024
LOG_COLUMNS = ("id", "created", "model", "status", "input_tokens", "cached_input_tokens", "output_tokens",
               "total_tokens", "spend", "ttft_ms", "latency_ms", "tools", "answer")
USAGE_COLUMNS = ("tenant", "model", "requests", "input_tokens", "cached_input_tokens", "output_tokens",
                 "total_tokens", "spend")
FORMULA = ("=", "+", "-", "@", "\t", "\r")


def _cell(value: Any) -> str:
    text = "" if value is None else str(value)
    return "'" + text if text.startswith(FORMULA) and not _number(text) else text


def _number(text: str) -> bool:
    try:
        float(text)
    except ValueError:
        return False
    return True


def _lines(rows: Iterable[Iterable[Any]]) -> bytes:
    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\r\n")
    for row in rows:
        writer.writerow([_cell(value) for value in row])
    return out.getvalue().encode()


def _log_line(row: Row) -> tuple[Any, ...]:
    fresh, cached, output = row.counted if row.counted is not None else (None, None, None)
    return (row.id, row.created, row.model, row.status, fresh, cached, output, row.tokens, money(row.spend),
            _ms(row.ttft_ms), _ms(row.latency_ms), " ".join(row.tools), row.summary)


def _ms(value: float | None) -> str:
    return "" if value is None else f"{value:.1f}"


async def _start(request: web.Request, name: str, headers: dict[str, str]) -> web.StreamResponse:
    answer = web.StreamResponse(headers={**headers, "Content-Type": "text/csv; charset=utf-8",
                                         "Content-Disposition": f'attachment; filename="{name}"'})
    await answer.prepare(request)
    return answer


async def logs_csv(request: web.Request, browser: ResponseBrowser, tenant: str, filters: Filters,
                   prices: Prices | None, headers: dict[str, str]) -> web.StreamResponse:
    """The Logs query's rows, newest first, page by page (the first page read before the answer starts, so a bad
    query is still an error page)."""
    page: LogPage = await log_page(browser, tenant, filters, None, prices=prices, count=False)
    answer = await _start(request, "logs.csv", headers)
    await answer.write(_lines([LOG_COLUMNS]))
    sent, scanned = 0, 0
    while True:
        rows = page.rows[:EXPORT_ROWS - sent]
        await answer.write(_lines(_log_line(row) for row in rows))
        sent, scanned = sent + len(rows), scanned + page.scanned_bytes
        following = page.next_offset if filters.sort else page.next_after
        if following is None or sent >= EXPORT_ROWS or scanned >= EXPORT_SCANNED_BYTES:
            break
        page = (await log_page(browser, tenant, filters, None, prices=prices, count=False, offset=int(following))
                if filters.sort else await log_page(browser, tenant, filters, str(following), prices=prices,
                                                    count=False))
    await answer.write_eof()
    return answer


async def usage_csv(request: web.Request, shown: Usage, headers: dict[str, str]) -> web.StreamResponse:
    """The Usage page's totals: one line per tenant and model, tokens by kind and the spend."""
    answer = await _start(request, f"usage-{shown.window}.csv", headers)
    await answer.write(_lines([USAGE_COLUMNS, *(
        (total.tenant, total.model, total.requests, total.input_tokens, total.cached_tokens, total.output_tokens,
         total.total_tokens, money(total.spend)) for total in shown.totals)]))
    await answer.write_eof()
    return answer
