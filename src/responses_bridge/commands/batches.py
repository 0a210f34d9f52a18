"""``responses-bridge batches list|cancel``: the Batch API's batches (``/v1/batches``), for an operator.

The batches live in the sidecar's database, found as ``serve`` and ``keys`` find it (``--db``, ``RESPONSES_BRIDGE_DB``,
the configuration's ``db``, or the shared PostgreSQL database of ``RESPONSES_BRIDGE_DATABASE_URL``); the database
must exist (this command never makes one). ``list`` shows every tenant's batches, newest first (``--tenant``: one
tenant's; ``--status``: those of one status): id, tenant, status, endpoint, lines done of the total, failed, created.
``cancel`` marks a batch ``cancelling`` whoever's it is, as ``POST /v1/batches/{id}/cancel`` does for its tenant:
the process running it sees it at its next heartbeat (a third of ``RESPONSES_BRIDGE_BACKGROUND_LEASE_SECONDS``),
starts no more lines, lets those in flight finish, and ends the batch ``cancelled`` with the files of what finished.
Nothing here prints a line's body, a file's bytes or a kept credential.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import os
import sys
import time
from collections.abc import AsyncIterator, Coroutine
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any, TypeVar

from ..config.settings import SettingsError, load_settings

if TYPE_CHECKING:
    from ..config.settings import Settings
    from ..store.base_batches import BatchStore, StoredBatch

T = TypeVar("T")
STATUSES = ("validating", "failed", "in_progress", "finalizing", "completed", "expired", "cancelling", "cancelled")
CANCELLABLE = ("validating", "in_progress")


def add_parser(commands: argparse._SubParsersAction) -> None:
    parser = commands.add_parser("batches", help="list and cancel the Batch API's batches, every tenant's")
    actions = parser.add_subparsers(dest="batches_command", required=True, metavar="ACTION")
    listing = actions.add_parser("list", help="batches newest first: id, tenant, status, endpoint, lines done of the "
                                 "total, failed, created")
    listing.add_argument("--tenant", default=None, help="only this tenant's batches")
    listing.add_argument("--status", choices=STATUSES, default=None, help="only the batches of this status")
    listing.add_argument("--limit", type=int, default=50, help="at most this many (default 50)")
    listing.set_defaults(func=list_command)
    cancel = actions.add_parser("cancel", help="cancel a batch by its id, whoever's it is: no more of its lines "
                                "start, those in flight finish, the batch ends `cancelled` with what finished")
    cancel.add_argument("id", metavar="ID")
    cancel.set_defaults(func=cancel_command)
    for action in (listing, cancel):
        action.add_argument("--db", default=None, help="the sidecar's SQLite file (default: RESPONSES_BRIDGE_DB, "
                            "the configuration's `db`, else the one under the user data directory, as `serve`)")
        action.add_argument("--config", metavar="FILE", default=None,
                            help="YAML configuration file, as `serve --config` (env: RESPONSES_BRIDGE_CONFIG)")


def _settings(args: argparse.Namespace) -> Settings:
    """The sidecar's settings; its SQLite file must exist (a shared PostgreSQL database always does: reaching it
    is checked when it opens)."""
    from ..store import default_db_path

    settings = load_settings({"db": "--db"}, config=args.config, db=args.db)
    if settings.database_url is None:
        path = settings.db or default_db_path(make_directory=False)
        if path == ":memory:" or not os.path.exists(path):
            raise SettingsError(f"no database at {path}: name the SQLite file `serve` uses (--db, "
                                "RESPONSES_BRIDGE_DB) or set RESPONSES_BRIDGE_DATABASE_URL")
    return settings


@contextlib.asynccontextmanager
async def _batches(settings: Settings) -> AsyncIterator[BatchStore]:
    from ..store.open import open_stores

    url = settings.database_url.get_secret_value() if settings.database_url is not None else None
    stores = await open_stores(settings.db_path(), url)
    try:
        yield stores.batches
    finally:
        await stores.close()


def _run(action: str, work: Coroutine[Any, Any, T]) -> T:
    from ..store.database_url import DatabaseUnavailable

    try:
        return asyncio.run(work)
    except DatabaseUnavailable as exc:
        print(f"responses-bridge batches {action}: {exc}", file=sys.stderr)
        raise SystemExit(1) from None


def _when(seconds: Any) -> str:
    if not isinstance(seconds, int):
        return "-"
    return datetime.fromtimestamp(seconds, UTC).isoformat(timespec="seconds").replace("+00:00", "Z")


def row_of(batch: StoredBatch) -> tuple[str, ...]:
    totals = batch.totals
    return (batch.id, batch.tenant, batch.status, str(batch.body.get("endpoint") or ""),
            f"{totals.completed + totals.failed}/{totals.total}", str(totals.failed),
            _when(batch.body.get("created_at")))


def list_command(args: argparse.Namespace) -> int:
    if args.limit < 1:
        print("responses-bridge batches list: --limit must be at least 1", file=sys.stderr)
        return 2
    settings = _settings(args)

    async def listed() -> list[tuple[str, ...]]:
        async with _batches(settings) as store:
            if args.tenant is None:
                found = await store.every_batch(status=args.status, limit=args.limit)
            else:  # the tenant's own list, filtered here (a page of it: the list's own order and index)
                found, _ = await store.list_batches(tenant=args.tenant, after=None, limit=args.limit)
                found = [batch for batch in found if args.status is None or batch.status == args.status]
            return [row_of(batch) for batch in found]

    rows = [("ID", "TENANT", "STATUS", "ENDPOINT", "DONE", "FAILED", "CREATED"), *_run("list", listed())]
    widths = [max(len(row[column]) for row in rows) for column in range(len(rows[0]))]
    for row in rows:
        print("  ".join(cell.ljust(width) for cell, width in zip(row, widths, strict=True)).rstrip())
    return 0


def cancel_command(args: argparse.Namespace) -> int:
    settings = _settings(args)

    async def cancel() -> tuple[StoredBatch | None, str]:
        async with _batches(settings) as store:
            found = await store.find_batch(args.id)
            if found is None or found.status not in CANCELLABLE:
                return found, found.status if found is not None else ""
            after = await store.request_cancel(args.id, int(time.time()), tenant=found.tenant)
            return after, found.status

    batch, before = _run("cancel", cancel())
    if batch is None:
        print(f"responses-bridge batches cancel: no batch has the id {args.id!r} (see `batches list`)",
              file=sys.stderr)
        return 1
    if before not in CANCELLABLE:
        print(f"responses-bridge batches cancel: batch {batch.id} is {before}: there is nothing to cancel",
              file=sys.stderr)
        return 1
    print(f"cancelling batch {batch.id} of tenant {batch.tenant!r} ({batch.totals.completed + batch.totals.failed} "
          f"of {batch.totals.total} lines done): no more of its lines start; it ends `cancelled` once those in flight "
          "have finished", file=sys.stderr)
    return 0
