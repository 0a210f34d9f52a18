"""Opening a store's database of either kind from a test parametrised on ``sqlite`` / ``postgres``: a SQLite file
in the test's directory, or a fresh database on the session's PostgreSQL server (tests/support/postgres.py),
dropped afterwards. The server fixture is fetched only for the ``postgres`` cases, so SQLite cases never start it.
"""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from responses_bridge.store import SQLiteResponseStore
from responses_bridge.store.postgres import PostgresDatabase
from tests.support.postgres import fresh_database, migrated_database

KINDS = ["sqlite", "postgres"]


@contextlib.asynccontextmanager
async def postgres_database_url(request: pytest.FixtureRequest) -> AsyncIterator[str]:
    """A fresh database on the session's server (several pools may open it: replicas), dropped afterwards."""
    server = request.getfixturevalue("postgres_server")  # skips, with the reason, when no server can start
    with fresh_database(server, "retrieval") as url:
        yield url


@contextlib.asynccontextmanager
async def postgres_database(request: pytest.FixtureRequest, **options: int) -> AsyncIterator[PostgresDatabase]:
    """An open database at the latest schema, a copy of one migrated once (tests/support/postgres.py); the
    migration from empty is :func:`postgres_database_url`'s, for the tests about it."""
    server = request.getfixturevalue("postgres_server")
    async with migrated_database(server, "retrieval") as url, PostgresDatabase(url, **options) as db:
        yield db


@contextlib.asynccontextmanager
async def sqlite_database(directory: Path) -> AsyncIterator[SQLiteResponseStore]:
    async with SQLiteResponseStore(str(directory / "bridge.db")) as db:
        yield db
