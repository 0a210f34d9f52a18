"""The Batch API's records on PostgreSQL (store/base_batches.py), shared by every replica (tables of migration 33).

Leases are measured by the database's clock, never a replica's. A claim is one ``UPDATE … WHERE`` the lease lapsed
``RETURNING`` the row: of the replicas asking at once exactly one
gets it. Each fenced write locks the batch's row (``SELECT … FOR UPDATE`` with the owner) in its transaction, so a
replica that lost its lease changes nothing.
"""

from __future__ import annotations

from typing import Any

import orjson

from ...base_batches import UNFINISHED, BatchTotals, LineCounts, LineResult, PendingLine, StoredBatch, kept_cancelling
from ...records import UnknownCursor
from ..database import PostgresDatabase

_COLUMNS = ("body, status, tenant, total, completed, failed, input_tokens, cached_tokens, output_tokens, "
            "reasoning_tokens, rerun")
_HELD = "SELECT 1 FROM batches WHERE id = $1 AND owner = $2 FOR UPDATE"
_UNFINISHED = "(" + ", ".join(f"'{status}'" for status in UNFINISHED) + ")"
_NOW = "extract(epoch from clock_timestamp())::double precision"
"""The database's clock: every replica measures leases by it, whatever its own clock says."""


def _batch(row: Any) -> StoredBatch:
    return StoredBatch(body=orjson.loads(row[0]), status=str(row[1]), tenant=str(row[2]),
                       totals=BatchTotals(*(int(value) for value in row[3:11])))


class PostgresBatchStore:
    """:class:`~responses_bridge.store.base_batches.BatchStore` on a :class:`PostgresDatabase`."""

    def __init__(self, db: PostgresDatabase) -> None:
        self._db = db

    async def add_batch(self, body: dict[str, Any], *, tenant: str) -> None:
        async with self._db.acquire("add_batch") as conn:
            await conn.execute("INSERT INTO batches (id, tenant, status, body) VALUES ($1, $2, $3, $4)",
                               body["id"], tenant, body["status"], orjson.dumps(body))

    async def get_batch(self, batch_id: str, *, tenant: str) -> StoredBatch | None:
        row = await self._db.fetch_row("get_batch", f"SELECT {_COLUMNS} FROM batches WHERE id = $1 AND tenant = $2",
                                       batch_id, tenant)
        return None if row is None else _batch(row)

    async def list_batches(self, *, tenant: str, after: str | None, limit: int) -> tuple[list[StoredBatch], bool]:
        async with self._db.acquire("list_batches") as conn:
            below = 2**62
            if after is not None:
                found = await conn.fetchval("SELECT seq FROM batches WHERE id = $1 AND tenant = $2", after, tenant)
                if found is None:
                    raise UnknownCursor(after)
                below = int(found)
            rows = await conn.fetch(f"SELECT {_COLUMNS} FROM batches WHERE tenant = $1 AND seq < $2 "
                                    "ORDER BY seq DESC LIMIT $3", tenant, below, limit + 1)
        return [_batch(row) for row in rows[:limit]], len(rows) > limit

    async def every_batch(self, *, status: str | None, limit: int) -> list[StoredBatch]:
        async with self._db.acquire("every_batch") as conn:
            rows = await conn.fetch(f"SELECT {_COLUMNS} FROM batches WHERE $1::text IS NULL OR status = $1 "
                                    "ORDER BY seq DESC LIMIT $2", status, limit)
        return [_batch(row) for row in rows]

    async def find_batch(self, batch_id: str) -> StoredBatch | None:
        async with self._db.acquire("find_batch") as conn:
            row = await conn.fetchrow(f"SELECT {_COLUMNS} FROM batches WHERE id = $1", batch_id)
        return None if row is None else _batch(row)

    async def request_cancel(self, batch_id: str, now: int, *, tenant: str) -> StoredBatch | None:
        async with self._db.transaction("cancel_batch") as conn:
            row = await conn.fetchrow(f"SELECT {_COLUMNS} FROM batches WHERE id = $1 AND tenant = $2 FOR UPDATE",
                                      batch_id, tenant)
            if row is None:
                return None
            if row[1] not in ("validating", "in_progress"):
                return _batch(row)
            body = {**orjson.loads(row[0]), "status": "cancelling", "cancelling_at": now}
            await conn.execute("UPDATE batches SET status = 'cancelling', body = $2 WHERE id = $1", batch_id,
                               orjson.dumps(body))
            row = await conn.fetchrow(f"SELECT {_COLUMNS} FROM batches WHERE id = $1", batch_id)
        return _batch(row)

    async def change_batch(self, batch_id: str, status: str, changes: dict[str, Any], *, owner: str) -> bool:
        async with self._db.transaction("change_batch") as conn:
            row = await conn.fetchrow("SELECT body, status FROM batches WHERE id = $1 AND owner = $2 FOR UPDATE",
                                      batch_id, owner)
            if row is None:
                return False
            status = kept_cancelling(str(row[1]), status)
            body = {**orjson.loads(row[0]), **changes, "status": status}
            await conn.execute("UPDATE batches SET status = $2, body = $3 WHERE id = $1", batch_id, status,
                               orjson.dumps(body))
            return True

    async def status_of(self, batch_id: str) -> str | None:
        row = await self._db.fetch_row("batch_status", "SELECT status FROM batches WHERE id = $1", batch_id)
        return None if row is None else str(row[0])

    async def reset_lines(self, batch_id: str, *, owner: str) -> bool:
        async with self._db.transaction("reset_batch_lines") as conn:
            if await conn.fetchval(_HELD, batch_id, owner) is None:
                return False
            await conn.execute("DELETE FROM batch_lines WHERE batch_id = $1", batch_id)
            await conn.execute("UPDATE batches SET total = 0 WHERE id = $1", batch_id)
            return True

    async def add_lines(self, batch_id: str, lines: list[tuple[int, str, bytes]], *, owner: str) -> bool:
        async with self._db.transaction("add_batch_lines") as conn:
            if await conn.fetchval(_HELD, batch_id, owner) is None:
                return False
            await conn.executemany("INSERT INTO batch_lines (batch_id, idx, custom_id, body) VALUES ($1, $2, $3, $4)",
                                   [(batch_id, index, custom_id, body) for index, custom_id, body in lines])
            await conn.execute("UPDATE batches SET total = total + $2 WHERE id = $1", batch_id, len(lines))
            return True

    async def pending_lines(self, batch_id: str, after: int, limit: int) -> list[PendingLine]:
        async with self._db.acquire("pending_batch_lines") as conn:
            rows = await conn.fetch("SELECT idx, custom_id, body, state FROM batch_lines WHERE batch_id = $1 AND "
                                    "idx > $2 AND state < 2 ORDER BY idx LIMIT $3", batch_id, after, limit)
        return [PendingLine(int(row[0]), str(row[1]), bytes(row[2]), row[3] == 1) for row in rows]

    async def start_line(self, batch_id: str, index: int, *, owner: str) -> bool:
        async with self._db.transaction("start_batch_line") as conn:
            if await conn.fetchval(_HELD, batch_id, owner) is None:
                return False
            state = await conn.fetchval("SELECT state FROM batch_lines WHERE batch_id = $1 AND idx = $2", batch_id,
                                        index)
            if state is None or state == 2:
                return False
            if state == 1:
                await conn.execute("UPDATE batches SET rerun = rerun + 1 WHERE id = $1", batch_id)
            else:
                await conn.execute("UPDATE batch_lines SET state = 1 WHERE batch_id = $1 AND idx = $2", batch_id,
                                   index)
            return True

    async def finish_line(self, batch_id: str, index: int, output: bytes, counts: LineCounts, *, owner: str) -> bool:
        async with self._db.transaction("finish_batch_line") as conn:
            if await conn.fetchval(_HELD, batch_id, owner) is None:
                return False
            status = await conn.execute("UPDATE batch_lines SET state = 2, failed = $3, output = $4 WHERE "
                                        "batch_id = $1 AND idx = $2 AND state < 2", batch_id, index, counts.failed,
                                        output)
            if status.rsplit(" ", 1)[-1] == "0":
                return False
            await conn.execute(
                "UPDATE batches SET completed = completed + $2, failed = failed + $3, input_tokens = input_tokens + "
                "$4, cached_tokens = cached_tokens + $5, output_tokens = output_tokens + $6, reasoning_tokens = "
                "reasoning_tokens + $7 WHERE id = $1", batch_id, int(not counts.failed), int(counts.failed),
                counts.input_tokens, counts.cached_tokens, counts.output_tokens, counts.reasoning_tokens)
            return True

    async def line_results(self, batch_id: str, after: int, limit: int) -> list[LineResult]:
        async with self._db.acquire("batch_line_results") as conn:
            rows = await conn.fetch("SELECT idx, failed, output FROM batch_lines WHERE batch_id = $1 AND idx > $2 "
                                    "AND state = 2 ORDER BY idx LIMIT $3", batch_id, after, limit)
        return [LineResult(int(row[0]), bool(row[1]), bytes(row[2])) for row in rows]

    async def forget_lines(self, batch_id: str, *, owner: str) -> None:
        async with self._db.transaction("forget_batch_lines") as conn:
            if await conn.fetchval(_HELD, batch_id, owner) is not None:
                await conn.execute("DELETE FROM batch_lines WHERE batch_id = $1", batch_id)

    async def claimable(self, now: float, *, limit: int) -> list[str]:
        async with self._db.acquire("claimable_batches") as conn:
            rows = await conn.fetch(f"SELECT id FROM batches WHERE status IN {_UNFINISHED} AND (owner IS NULL OR "
                                    f"lease_until < {_NOW}) ORDER BY seq LIMIT $1", limit)
        return [str(row[0]) for row in rows]

    async def claim(self, batch_id: str, owner: str, now: float, lease_seconds: float, *,
                    force: bool = False) -> StoredBatch | None:
        lapsed = "true" if force else f"(owner IS NULL OR lease_until < {_NOW} OR owner = $2)"
        row = await self._db.fetch_row(
            "claim_batch", f"UPDATE batches SET owner = $2, lease_until = {_NOW} + $3 WHERE id = $1 AND status IN "
            f"{_UNFINISHED} AND {lapsed} RETURNING {_COLUMNS}", batch_id, owner, float(lease_seconds))
        return None if row is None else _batch(row)

    async def renew(self, batch_ids: list[str], owner: str, now: float, lease_seconds: float) -> list[str]:
        if not batch_ids:
            return []
        async with self._db.acquire("renew_batches") as conn:
            rows = await conn.fetch(f"UPDATE batches SET lease_until = {_NOW} + $3 WHERE id = ANY($1::text[]) AND "
                                    "owner = $2 RETURNING id", batch_ids, owner, float(lease_seconds))
        held = {str(row[0]) for row in rows}
        return [batch_id for batch_id in batch_ids if batch_id not in held]

    async def release(self, batch_id: str, owner: str) -> None:
        async with self._db.acquire("release_batch") as conn:
            await conn.execute("UPDATE batches SET owner = NULL, lease_until = NULL WHERE id = $1 AND owner = $2",
                               batch_id, owner)
