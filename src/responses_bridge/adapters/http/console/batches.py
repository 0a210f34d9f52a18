"""Batches for the console: a tenant's batches (``/v1/batches``), newest first, with their status, counts and
throughput; one batch's facts, its errors and links to its input, output and error files.

Everything is read through the Batch API's own store and shapes with the viewer's tenant: another tenant's batch
is the API's 404, and so are its files (a file is offered only when it is the batch's, and opened as the tenant's:
services/files/files.py). What a page shows is bounded whatever the batch: a validation that failed can name every
one of 50,000 lines, so at most :data:`ERRORS_SHOWN` errors are listed, each message cut at
:data:`MESSAGE_CHARS`, with the count of the rest.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Any

from ....protocol.errors import APIError
from ....services.batches.shapes import batch_object
from ....store.base_batches import BatchStore
from .logs import when

PAGE = 25
ERRORS_SHOWN = 100
MESSAGE_CHARS = 500
ENDED_AT = ("completed_at", "failed_at", "expired_at", "cancelled_at", "finalizing_at")
"""When a batch stopped running lines (the first of these it has): its throughput is measured up to there."""
FILES = (("input", "input_file_id"), ("output", "output_file_id"), ("errors", "error_file_id"))


@dataclass(slots=True)
class BatchRow:
    id: str
    created: str
    status: str
    endpoint: str
    total: int
    completed: int
    failed: int
    throughput: str  # lines a second while it ran ("" before it ran)
    errors: int


@dataclass(slots=True)
class BatchDetail:
    row: BatchRow
    facts: list[tuple[str, str]] = field(default_factory=list)
    errors: list[dict[str, str]] = field(default_factory=list)
    more_errors: int = 0
    files: list[tuple[str, str]] = field(default_factory=list)  # what, file id


def throughput(batch: dict[str, Any], now: float) -> str:
    """Lines done a second from ``in_progress_at`` to its end (or now, while it runs); "" before it ran."""
    started = batch.get("in_progress_at")
    counts = batch.get("request_counts") or {}
    done = int(counts.get("completed") or 0) + int(counts.get("failed") or 0)
    if not isinstance(started, int) or not done:
        return ""
    ended = next((batch[name] for name in ENDED_AT if isinstance(batch.get(name), int)), None)
    seconds = max(1.0, (ended if ended is not None else now) - started)  # the timestamps are whole seconds
    return f"{done / seconds:.1f}/s"


def _errors(batch: dict[str, Any]) -> list[dict[str, Any]]:
    listed = (batch.get("errors") or {}).get("data") if isinstance(batch.get("errors"), dict) else None
    return [error for error in listed or () if isinstance(error, dict)]


def row_of(batch: dict[str, Any], now: float) -> BatchRow:
    counts = batch.get("request_counts") or {}
    return BatchRow(str(batch["id"]), when(batch.get("created_at")), str(batch.get("status") or ""),
                    str(batch.get("endpoint") or ""), int(counts.get("total") or 0),
                    int(counts.get("completed") or 0), int(counts.get("failed") or 0), throughput(batch, now),
                    len(_errors(batch)))


async def batch_page(store: BatchStore, tenant: str, after: str | None) -> dict[str, Any]:
    batches, has_more = await store.list_batches(tenant=tenant, after=after, limit=PAGE)
    now = time.time()
    rows = [row_of(batch_object(stored), now) for stored in batches]
    return {"rows": rows, "next_after": rows[-1].id if has_more and rows else None}


async def batch_detail(store: BatchStore, tenant: str, batch_id: str) -> BatchDetail:
    stored = await store.get_batch(batch_id, tenant=tenant)
    if stored is None:
        raise APIError(404, "No batch with that id.", code="not_found")
    batch = batch_object(stored)
    detail = BatchDetail(row_of(batch, time.time()))
    usage = batch.get("usage") or {}
    detail.facts = [("status", detail.row.status), ("endpoint", detail.row.endpoint),
                    ("model", str(batch.get("model") or "")),
                    ("lines", f"{detail.row.completed} completed, {detail.row.failed} failed of {detail.row.total}"),
                    ("throughput", detail.row.throughput or "not started"),
                    ("tokens", f"{usage.get('input_tokens', 0)} in, {usage.get('output_tokens', 0)} out")]
    detail.facts += [(name.removesuffix("_at").replace("_", " "), when(batch[name]))
                     for name in ("created_at", "in_progress_at", "finalizing_at", "completed_at", "failed_at",
                                  "expired_at", "cancelling_at", "cancelled_at", "expires_at")
                     if isinstance(batch.get(name), int)]
    if stored.totals.rerun:
        detail.facts.append(("lines sent again", f"{stored.totals.rerun} (in flight when a process was lost)"))
    detail.facts += [(f"metadata: {key}", str(value)) for key, value in sorted((batch.get("metadata") or {}).items())]
    errors = _errors(batch)
    detail.errors = [{"line": "" if error.get("line") is None else str(error.get("line")),
                      "code": str(error.get("code") or ""), "param": str(error.get("param") or ""),
                      "message": str(error.get("message") or "")[:MESSAGE_CHARS]} for error in errors[:ERRORS_SHOWN]]
    detail.more_errors = max(0, len(errors) - ERRORS_SHOWN)
    detail.files = [(what, str(batch[key])) for what, key in FILES if batch.get(key)]
    return detail


async def batch_file(store: BatchStore, tenant: str, batch_id: str, file_id: str) -> str:
    """``file_id`` when it is one of the tenant's batch's files (input, output, errors); the 404 otherwise."""
    stored = await store.get_batch(batch_id, tenant=tenant)
    if stored is None or file_id not in {stored.body.get(key) for _, key in FILES}:
        raise APIError(404, "No such file of that batch.", code="not_found")
    return file_id
