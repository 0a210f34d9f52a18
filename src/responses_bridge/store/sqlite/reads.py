"""One row read on a SQLite store's read connection: the lookup by id every SQLite store makes."""

from __future__ import annotations

import sqlite3
from collections.abc import Iterable
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from .responses import SQLiteResponseStore


async def read_row(db: SQLiteResponseStore, sql: str, params: Iterable[Any]) -> sqlite3.Row | None:
    """The first row ``sql`` selects (``params`` bound, by position or by name), None when it selects none."""
    async with db.reading() as conn:
        rows = list(await conn.execute_fetchall(sql, params))
    return rows[0] if rows else None
