"""One write transaction on the SQLite database thread, the way every SQLite store takes it."""

from __future__ import annotations

import contextlib
import sqlite3
from collections.abc import Callable, Iterator, Mapping


@contextlib.contextmanager
def transaction(conn: sqlite3.Connection) -> Iterator[None]:
    """``BEGIN IMMEDIATE`` … ``COMMIT`` on the database thread, rolled back on any error (the write lock is taken at
    the start, so a transaction never fails half-way for want of it)."""
    conn.execute("BEGIN IMMEDIATE")
    try:
        yield
    except BaseException:
        conn.execute("ROLLBACK")
        raise
    conn.execute("COMMIT")


def purge_ranges(statement: str, cutoffs: Mapping[str, int], limit: int) -> Callable[[sqlite3.Connection], int]:
    """The retention purge of one kind of object, for ``run_write``: ``statement`` deletes up to ``?3`` rows of
    tenant ``?1`` older than ``?2`` (a range of its tenant index); tenant after tenant, at most ``limit`` rows in all,
    in one short transaction. Returns how many went."""
    targets = list(cutoffs.items())

    def purge(conn: sqlite3.Connection) -> int:
        deleted = 0
        with transaction(conn):
            for tenant, cutoff in targets:
                if deleted >= limit:
                    break
                deleted += conn.execute(statement, (tenant, cutoff, limit - deleted)).rowcount
        return deleted

    return purge
