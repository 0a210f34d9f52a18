"""The console's orders and sums over stored responses on SQLite, kept in a table of their own written behind the
saves: ``response_facts``, one row per response under the response's own rowid, indexed by latency, by time to first
token and by the Usage page's grouping.

Why behind: on SQLite every B-tree a commit touches is one more WAL frame, a 4 KiB page written and checksummed.
Those three indexes on ``responses`` itself cost every save three frames (2.0 % of a plain request's instructions
through the HTTP door, 2.5 % through Envoy's), while only the console reads them. Here a save writes its row as
before — the facts are columns of it (``ttft_ms``, ``latency_ms``, the usage columns, ``api_key_id``), the source
of truth — and the facts table is brought up to date from those columns in one transaction for many saves
(:func:`catch_up`): after every :data:`CATCH_UP_EVERY` saves, and before any console read that uses it, so a
page never misses a response that was stored before it was asked for.

What was caught up is the ``upto`` mark: every response whose rowid is above it is not in the table yet. Derived
from the table alone, so a crash loses nothing (the next catch-up, in any process, finds the rows above the mark)
and other processes' saves are found too. Three rules keep it exact:

* a response saved again (a background run's queued -> completed: its rowid unchanged, its facts changed) has its
  facts row replaced in the same transaction (:data:`REFRESH`), the rare path paying its own frames;
* a deleted response takes its facts row with it, and a deletion that lowers the largest rowid lowers the mark
  with it (the trigger of migration 39): SQLite would give the next response a rowid at or below the mark;
* the mark names the response it stopped at, so rows numbered anew (an operator's ``VACUUM`` may renumber a table
  without an ``INTEGER PRIMARY KEY``: in order, so the rows at or below the mark keep their numbers unless the
  mark's own row moved) are noticed and the table made again (:func:`catch_up`) before any read uses it; reads
  join a facts row to its response by rowid and id both.

Keyed by rowid rather than by the response's id: a catch-up appends to the table's last page instead of inserting
at random places of one more B-tree, and each index entry ends in an 8-byte rowid rather than an id.
"""

from __future__ import annotations

import asyncio
import sqlite3

import aiosqlite
import structlog

from ..db_thread import on_db_thread

log = structlog.get_logger("responses_bridge.store")

CATCH_UP_EVERY = 128
"""Saves of this process between two catch-ups (the console's reads catch up whenever they need to)."""

_FACT_COLUMNS = ("id, tenant, ttft_ms, latency_ms, usage_hour, model, api_key_id, input_tokens, cached_tokens, "
                 "output_tokens, total_tokens")

SCHEMA = [
    """
    CREATE TABLE response_facts (
        id            TEXT NOT NULL,
        tenant        TEXT NOT NULL,
        ttft_ms       REAL,
        latency_ms    REAL,
        usage_hour    INTEGER,
        model         TEXT,
        api_key_id    TEXT,
        input_tokens  INTEGER,
        cached_tokens INTEGER,
        output_tokens INTEGER,
        total_tokens  INTEGER
    )
    """,
    f"INSERT INTO response_facts (rowid, {_FACT_COLUMNS}) SELECT rowid, {_FACT_COLUMNS} FROM responses",
    """
    CREATE TABLE response_facts_mark (
        one     INTEGER PRIMARY KEY CHECK (one = 1),
        upto    INTEGER NOT NULL,
        upto_id TEXT
    )
    """,
    """
    INSERT INTO response_facts_mark
    SELECT 1, coalesce(max(rowid), 0), (SELECT id FROM responses ORDER BY rowid DESC LIMIT 1) FROM responses
    """,
    """
    CREATE TRIGGER response_facts_gone AFTER DELETE ON responses BEGIN
        DELETE FROM response_facts WHERE rowid = old.rowid AND id = old.id;
        UPDATE response_facts_mark SET upto = coalesce((SELECT max(rowid) FROM responses), 0),
                                       upto_id = (SELECT id FROM responses ORDER BY rowid DESC LIMIT 1)
        WHERE upto > coalesce((SELECT max(rowid) FROM responses), 0);
    END
    """,
    # the Logs' slowest first (browse.py), and the Usage page's sums read from the index alone, led by the tenant
    # and the hour and grouped in its order (browsing.py's USAGE_SUMS)
    "CREATE INDEX response_facts_by_latency ON response_facts (tenant, latency_ms, id)",
    "CREATE INDEX response_facts_by_ttft ON response_facts (tenant, ttft_ms, id)",
    "CREATE INDEX response_facts_usage ON response_facts (tenant, usage_hour, model, api_key_id, input_tokens, "
    "cached_tokens, output_tokens, total_tokens)",
    "DROP INDEX responses_by_latency",
    "DROP INDEX responses_by_ttft",
    "DROP INDEX responses_usage",
]
"""Migration 39: the table filled from the rows stored so far, its mark at the last of them."""

_MARKED = """
SELECT upto, upto_id, coalesce((SELECT max(rowid) FROM responses), 0),
       (SELECT id FROM responses WHERE rowid = upto) IS NOT upto_id
FROM response_facts_mark
"""

_CATCH_UP = (f"INSERT OR REPLACE INTO response_facts (rowid, {_FACT_COLUMNS}) "
             f"SELECT rowid, {_FACT_COLUMNS} FROM responses WHERE rowid > ?")

_MARK = "UPDATE response_facts_mark SET upto = ?, upto_id = (SELECT id FROM responses WHERE rowid = ?)"

REFRESH = (f"INSERT OR REPLACE INTO response_facts (rowid, {_FACT_COLUMNS}) "
           f"SELECT rowid, {_FACT_COLUMNS} FROM responses WHERE id = ?")
"""A response saved again: its facts row replaced (or made early: a catch-up replaces it again) in the save's own
transaction."""


def behind(conn: sqlite3.Connection) -> bool:
    """Are there responses the facts table has not caught up with? (One read: the mark and the last rowid.)"""
    upto, _, last, moved = conn.execute(_MARKED).fetchone()
    return bool(last != upto or moved)


def catch_up(conn: sqlite3.Connection) -> int:
    """Brings the facts table up to date in one transaction; the rows it wrote. Runs on the database thread, with
    the write connection outside any transaction (the store's write lock held).

    The mark names the row it stopped at: when that rowid no longer holds that response, the rows were numbered
    anew (a ``VACUUM`` renumbers a table without an ``INTEGER PRIMARY KEY``) and the table is made again from all
    of them, once."""
    conn.execute("BEGIN IMMEDIATE")
    try:
        upto, _, last, moved = conn.execute(_MARKED).fetchone()
        if moved:
            conn.execute("DELETE FROM response_facts")
            upto = 0
        written = conn.execute(_CATCH_UP, (upto,)).rowcount if last > upto else 0
        if last != upto or moved:
            conn.execute(_MARK, (last, last))
        conn.execute("COMMIT")
    except BaseException:
        if conn.in_transaction:
            conn.execute("ROLLBACK")
        raise
    return max(written, 0)


async def keep_up(writer: aiosqlite.Connection, lock: asyncio.Lock, reader: aiosqlite.Connection | None = None
                  ) -> None:
    """:func:`catch_up` on the store's write connection, under its write lock. With ``reader`` (a console page's
    call), only when a read there finds the table behind. A failure is logged, not raised: the saves stand, and the
    next catch-up (any read's) finds these rows again."""
    if reader is not None and not await on_db_thread(reader, behind):
        return
    try:
        async with lock:
            await on_db_thread(writer, catch_up)
    except Exception:
        log.warning("response_facts_behind", exc_info=True)
