"""A sidecar's state read back by the tests, on whichever store the run puts sidecars (tests/support/postgres.py):
its stores opened as the sidecar opens them (:func:`sidecar_stores`), and the uploaded files' bytes where it keeps
them (:func:`stored_files`: the ``files/`` directory next to its SQLite file, or the ``file_blobs`` and
``file_contents`` rows of its PostgreSQL database)."""

from __future__ import annotations

import os
import sqlite3
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path

import asyncpg

from responses_bridge.store.open import StoreSet, open_stores
from responses_bridge.store.postgres.migrations import latest_version
from responses_bridge.store.sqlite.migrations import LATEST_VERSION
from tests.support.postgres import shared_server, sidecar_env


def database_of(argv: list[str]) -> str:
    """The ``--db`` a sidecar was started with (the last one given wins, as in the CLI)."""
    return argv[len(argv) - 1 - argv[::-1].index("--db") + 1]


@asynccontextmanager
async def sidecar_stores(db_path: str) -> AsyncIterator[StoreSet]:
    """The stores of the sidecar started with ``--db db_path``, opened beside it (it may be running)."""
    stores = await open_stores(db_path, sidecar_env(db_path).get("RESPONSES_BRIDGE_DATABASE_URL"))
    try:
        yield stores
    finally:
        await stores.close()


async def stored_files(db_path: str) -> dict[str, bytes]:
    """Every blob stored (or being stored) and not deleted, by name: file ids, and on disk any temporary file too."""
    url = sidecar_env(db_path).get("RESPONSES_BRIDGE_DATABASE_URL")
    if url is None:
        directory = Path(db_path).resolve().parent / "files"
        if not directory.is_dir():
            return {}
        return {name: (directory / name).read_bytes() for name in os.listdir(directory)}
    conn = await asyncpg.connect(url)
    try:
        rows = await conn.fetch("SELECT b.file_id, coalesce(string_agg(c.data, ''::bytea ORDER BY c.seq), ''::bytea) "
                                "FROM file_blobs AS b LEFT JOIN file_contents AS c ON c.file_id = b.file_id "
                                "WHERE b.deleted_at IS NULL GROUP BY b.file_id")
    finally:
        await conn.close()
    return {str(row[0]): bytes(row[1]) for row in rows}


def database_bytes(db_path: str) -> bytes:
    """Everything the sidecar's database holds, raw: the SQLite file (and its write-ahead log), or a data-only dump
    of its PostgreSQL database. For checks that a secret is stored nowhere."""
    url = sidecar_env(db_path).get("RESPONSES_BRIDGE_DATABASE_URL")
    if url is None:
        wal = Path(db_path + "-wal")
        return Path(db_path).read_bytes() + (wal.read_bytes() if wal.exists() else b"")
    return shared_server().dump(url.rsplit("/", 1)[1])


def schema_is_latest(db_path: str) -> bool:
    """Whether the sidecar's database is at the newest schema this bridge knows (its migrations all applied)."""
    url = sidecar_env(db_path).get("RESPONSES_BRIDGE_DATABASE_URL")
    if url is None:
        with sqlite3.connect(f"file:{db_path}?mode=ro", uri=True) as conn:
            return int(conn.execute("PRAGMA user_version").fetchone()[0]) == LATEST_VERSION
    found = shared_server().psql("SELECT version FROM schema_version", database=url.rsplit("/", 1)[1])
    return found == str(latest_version())
