"""The Batch API's records on SQLite (store/base_batches.py), on the response store's connections (tables of
migration 34). SQLite has one writer at a time, so a claim (an ``UPDATE … WHERE`` the lease lapsed) is taken by
exactly one of the processes asking, and each fenced write checks the lease in its own transaction."""

from __future__ import annotations

import sqlite3
from typing import Any

import orjson

from ...base_batches import UNFINISHED, BatchTotals, LineCounts, LineResult, PendingLine, StoredBatch, kept_cancelling
from ...records import UnknownCursor
from ..responses import SQLiteResponseStore
from ..transactions import transaction

_COLUMNS = ("body, status, tenant, total, completed, failed, input_tokens, cached_tokens, output_tokens, "
            "reasoning_tokens, rerun")
_HELD = "SELECT 1 FROM batches WHERE id = ? AND owner = ?"
_UNFINISHED = "(" + ", ".join(f"'{status}'" for status in UNFINISHED) + ")"


def _batch(row: Any) -> StoredBatch:
    return StoredBatch(body=orjson.loads(row[0]), status=str(row[1]), tenant=str(row[2]),
                       totals=BatchTotals(*(int(value) for value in row[3:11])))


class SQLiteBatchStore:
    """:class:`~responses_bridge.store.base_batches.BatchStore` sharing a :class:`SQLiteResponseStore`'s
    connections."""

    def __init__(self, db: SQLiteResponseStore) -> None:
        self._db = db

    async def add_batch(self, body: dict[str, Any], *, tenant: str) -> None:
        async with self._db.writing() as conn:
            await conn.execute("INSERT INTO batches (id, tenant, status, body) VALUES (?, ?, ?, ?)",
                               (body["id"], tenant, body["status"], orjson.dumps(body).decode()))

    async def get_batch(self, batch_id: str, *, tenant: str) -> StoredBatch | None:
        async with self._db.reading() as conn:
            rows = await conn.execute_fetchall(f"SELECT {_COLUMNS} FROM batches WHERE id = ? AND tenant = ?",
                                               (batch_id, tenant))
        rows = list(rows)
        return _batch(rows[0]) if rows else None

    async def list_batches(self, *, tenant: str, after: str | None, limit: int) -> tuple[list[StoredBatch], bool]:
        async with self._db.reading() as conn:
            below: int | None = None
            if after is not None:
                found = list(await conn.execute_fetchall("SELECT seq FROM batches WHERE id = ? AND tenant = ?",
                                                         (after, tenant)))
                if not found:
                    raise UnknownCursor(after)
                below = int(found[0][0])
            rows = list(await conn.execute_fetchall(
                f"SELECT {_COLUMNS} FROM batches WHERE tenant = ? AND seq < ? ORDER BY seq DESC LIMIT ?",
                (tenant, below if below is not None else 2**62, limit + 1)))
        return [_batch(row) for row in rows[:limit]], len(rows) > limit

    async def every_batch(self, *, status: str | None, limit: int) -> list[StoredBatch]:
        async with self._db.reading() as conn:
            rows = list(await conn.execute_fetchall(
                f"SELECT {_COLUMNS} FROM batches WHERE ? IS NULL OR status = ? ORDER BY seq DESC LIMIT ?",
                (status, status, limit)))
        return [_batch(row) for row in rows]

    async def find_batch(self, batch_id: str) -> StoredBatch | None:
        async with self._db.reading() as conn:
            rows = list(await conn.execute_fetchall(f"SELECT {_COLUMNS} FROM batches WHERE id = ?", (batch_id,)))
        return _batch(rows[0]) if rows else None

    async def request_cancel(self, batch_id: str, now: int, *, tenant: str) -> StoredBatch | None:
        def cancel(conn: sqlite3.Connection) -> Any:
            with transaction(conn):
                conn.execute("UPDATE batches SET status = 'cancelling', body = json_set(body, '$.status', "
                             "'cancelling', '$.cancelling_at', ?) WHERE id = ? AND tenant = ? AND status IN "
                             "('validating', 'in_progress')", (now, batch_id, tenant))
                return conn.execute(f"SELECT {_COLUMNS} FROM batches WHERE id = ? AND tenant = ?",
                                    (batch_id, tenant)).fetchone()

        row = await self._db.run_write("cancel_batch", cancel)
        return None if row is None else _batch(row)

    async def change_batch(self, batch_id: str, status: str, changes: dict[str, Any], *, owner: str) -> bool:
        def change(conn: sqlite3.Connection) -> bool:
            with transaction(conn):
                row = conn.execute("SELECT body, status FROM batches WHERE id = ? AND owner = ?",
                                   (batch_id, owner)).fetchone()
                if row is None:
                    return False
                kept = kept_cancelling(str(row[1]), status)
                body = {**orjson.loads(row[0]), **changes, "status": kept}
                conn.execute("UPDATE batches SET status = ?, body = ? WHERE id = ?",
                             (kept, orjson.dumps(body).decode(), batch_id))
                return True

        return await self._db.run_write("change_batch", change)

    async def status_of(self, batch_id: str) -> str | None:
        async with self._db.reading() as conn:
            rows = list(await conn.execute_fetchall("SELECT status FROM batches WHERE id = ?", (batch_id,)))
        return str(rows[0][0]) if rows else None

    async def reset_lines(self, batch_id: str, *, owner: str) -> bool:
        def reset(conn: sqlite3.Connection) -> bool:
            with transaction(conn):
                if conn.execute(_HELD, (batch_id, owner)).fetchone() is None:
                    return False
                conn.execute("DELETE FROM batch_lines WHERE batch_id = ?", (batch_id,))
                conn.execute("UPDATE batches SET total = 0 WHERE id = ?", (batch_id,))
                return True

        return await self._db.run_write("reset_batch_lines", reset)

    async def add_lines(self, batch_id: str, lines: list[tuple[int, str, bytes]], *, owner: str) -> bool:
        def add(conn: sqlite3.Connection) -> bool:
            with transaction(conn):
                if conn.execute(_HELD, (batch_id, owner)).fetchone() is None:
                    return False
                conn.executemany("INSERT INTO batch_lines (batch_id, idx, custom_id, body) VALUES (?, ?, ?, ?)",
                                 [(batch_id, index, custom_id, body) for index, custom_id, body in lines])
                conn.execute("UPDATE batches SET total = total + ? WHERE id = ?", (len(lines), batch_id))
                return True

        return await self._db.run_write("add_batch_lines", add)

    async def pending_lines(self, batch_id: str, after: int, limit: int) -> list[PendingLine]:
        async with self._db.reading() as conn:
            rows = await conn.execute_fetchall(
                "SELECT idx, custom_id, body, state FROM batch_lines WHERE batch_id = ? AND idx > ? AND state < 2 "
                "ORDER BY idx LIMIT ?", (batch_id, after, limit))
        return [PendingLine(int(row[0]), str(row[1]), bytes(row[2]), row[3] == 1) for row in rows]

    async def start_line(self, batch_id: str, index: int, *, owner: str) -> bool:
        def start(conn: sqlite3.Connection) -> bool:
            with transaction(conn):
                if conn.execute(_HELD, (batch_id, owner)).fetchone() is None:
                    return False
                row = conn.execute("SELECT state FROM batch_lines WHERE batch_id = ? AND idx = ?",
                                   (batch_id, index)).fetchone()
                if row is None or row[0] == 2:
                    return False
                if row[0] == 1:
                    conn.execute("UPDATE batches SET rerun = rerun + 1 WHERE id = ?", (batch_id,))
                else:
                    conn.execute("UPDATE batch_lines SET state = 1 WHERE batch_id = ? AND idx = ?", (batch_id, index))
                return True

        return await self._db.run_write("start_batch_line", start)

    async def finish_line(self, batch_id: str, index: int, output: bytes, counts: LineCounts, *, owner: str) -> bool:
        def finish(conn: sqlite3.Connection) -> bool:
            with transaction(conn):
                if conn.execute(_HELD, (batch_id, owner)).fetchone() is None:
                    return False
                if conn.execute("UPDATE batch_lines SET state = 2, failed = ?, output = ? WHERE batch_id = ? "
                                "AND idx = ? AND state < 2", (int(counts.failed), output, batch_id,
                                                              index)).rowcount == 0:
                    return False
                conn.execute(
                    "UPDATE batches SET completed = completed + ?, failed = failed + ?, input_tokens = input_tokens "
                    "+ ?, cached_tokens = cached_tokens + ?, output_tokens = output_tokens + ?, reasoning_tokens = "
                    "reasoning_tokens + ? WHERE id = ?",
                    (int(not counts.failed), int(counts.failed), counts.input_tokens, counts.cached_tokens,
                     counts.output_tokens, counts.reasoning_tokens, batch_id))
                return True

        return await self._db.run_write("finish_batch_line", finish)

    async def line_results(self, batch_id: str, after: int, limit: int) -> list[LineResult]:
        async with self._db.reading() as conn:
            rows = await conn.execute_fetchall(
                "SELECT idx, failed, output FROM batch_lines WHERE batch_id = ? AND idx > ? AND state = 2 "
                "ORDER BY idx LIMIT ?", (batch_id, after, limit))
        return [LineResult(int(row[0]), bool(row[1]), bytes(row[2])) for row in rows]

    async def forget_lines(self, batch_id: str, *, owner: str) -> None:
        def forget(conn: sqlite3.Connection) -> None:
            with transaction(conn):
                if conn.execute(_HELD, (batch_id, owner)).fetchone() is not None:
                    conn.execute("DELETE FROM batch_lines WHERE batch_id = ?", (batch_id,))

        await self._db.run_write("forget_batch_lines", forget)

    async def claimable(self, now: float, *, limit: int) -> list[str]:
        async with self._db.reading() as conn:
            rows = await conn.execute_fetchall(
                f"SELECT id FROM batches WHERE status IN {_UNFINISHED} AND (owner IS NULL OR lease_until < ?) "
                "ORDER BY seq LIMIT ?", (now, limit))
        return [str(row[0]) for row in rows]

    async def claim(self, batch_id: str, owner: str, now: float, lease_seconds: float, *,
                    force: bool = False) -> StoredBatch | None:
        until = now + lease_seconds
        lapsed = "1" if force else "(owner IS NULL OR lease_until < ? OR owner = ?)"
        params: tuple[Any, ...] = (owner, until, batch_id) if force else (owner, until, batch_id, now, owner)

        def claim(conn: sqlite3.Connection) -> Any:
            with transaction(conn):
                if conn.execute(f"UPDATE batches SET owner = ?, lease_until = ? WHERE id = ? AND status IN "
                                f"{_UNFINISHED} AND {lapsed}", params).rowcount == 0:
                    return None
                return conn.execute(f"SELECT {_COLUMNS} FROM batches WHERE id = ?", (batch_id,)).fetchone()

        row = await self._db.run_write("claim_batch", claim)
        return None if row is None else _batch(row)

    async def renew(self, batch_ids: list[str], owner: str, now: float, lease_seconds: float) -> list[str]:
        if not batch_ids:
            return []
        until = now + lease_seconds

        def renew(conn: sqlite3.Connection) -> list[str]:
            with transaction(conn):
                lost = []
                for batch_id in batch_ids:
                    if conn.execute("UPDATE batches SET lease_until = ? WHERE id = ? AND owner = ?",
                                    (until, batch_id, owner)).rowcount == 0:
                        lost.append(batch_id)
                return lost

        return await self._db.run_write("renew_batches", renew)

    async def release(self, batch_id: str, owner: str) -> None:
        async with self._db.writing() as conn:
            await conn.execute("UPDATE batches SET owner = NULL, lease_until = NULL WHERE id = ? AND owner = ?",
                               (batch_id, owner))
