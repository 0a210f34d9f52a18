"""The set of stores under test, on SQLite or on PostgreSQL, so one test body checks the store contract on both.

``open_stores(kind, ...)`` opens a fresh database of that kind (a SQLite file in the test's temporary directory, or
a new database on the session's PostgreSQL server) and gives the responses, conversations, prompts and event log
stores over it.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from responses_bridge.store import SQLiteResponseStore
from responses_bridge.store.conversations import SQLiteConversationStore
from responses_bridge.store.events import SQLiteEventLog
from responses_bridge.store.postgres import PostgresDatabase
from responses_bridge.store.postgres.conversations import PostgresConversationStore
from responses_bridge.store.postgres.events import PostgresEventLog
from responses_bridge.store.postgres.prompts import PostgresPromptStore
from responses_bridge.store.postgres.responses import PostgresResponseStore
from responses_bridge.store.prompts import SQLitePromptStore

KINDS = ("sqlite", "postgres")


@dataclass
class Stores:
    kind: str
    responses: Any
    conversations: Any
    prompts: Any
    events: Any


@asynccontextmanager
async def open_stores(kind: str, request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[Stores]:
    if kind == "sqlite":
        sqlite = SQLiteResponseStore(str(tmp_path / "contract.db"))
        await sqlite.open()
        try:
            yield Stores(kind, sqlite, SQLiteConversationStore(sqlite), SQLitePromptStore(sqlite),
                         SQLiteEventLog(sqlite))
        finally:
            await sqlite.close()
        return
    url = request.getfixturevalue("postgres_url")
    db = PostgresDatabase(url)
    store = PostgresResponseStore(db)
    await store.open()
    try:
        yield Stores(kind, store, PostgresConversationStore(db), PostgresPromptStore(db), PostgresEventLog(db))
    finally:
        await store.close()
