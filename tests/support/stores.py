"""The set of stores under test, on SQLite or on PostgreSQL, so one test body checks the store contract on both.

``open_stores(kind, ...)`` opens a fresh database of that kind (a SQLite file in the test's temporary directory, or
a new database on the session's PostgreSQL server, at the latest schema: a copy of one migrated once) the way the
sidecar opens its own (store/open.py), and gives the responses, conversations, prompts, event log, API key and
Idempotency-Key stores over it.
"""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from responses_bridge.store import open as store_open
from tests.support.postgres import migrated_database

KINDS = ("sqlite", "postgres")


@dataclass
class Stores:
    kind: str
    responses: Any
    conversations: Any
    prompts: Any
    events: Any
    api_keys: Any
    idempotency: Any = None
    replica_chains: Any = None


@asynccontextmanager
async def open_stores(kind: str, request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[Stores]:
    async with contextlib.AsyncExitStack() as stack:
        url = None
        if kind == "postgres":  # a copy of a database migrated once (tests/support/postgres.py), not a migration each
            url = await stack.enter_async_context(migrated_database(request.getfixturevalue("postgres_server")))
        opened = await store_open.open_stores(str(tmp_path / "contract.db"), url)
        try:
            yield Stores(kind, opened.responses, opened.conversations, opened.prompts, opened.events, opened.api_keys,
                         opened.idempotency, opened.replica_chains)
        finally:
            await opened.close()
