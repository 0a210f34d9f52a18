"""The PostgreSQL database layer against a real server: start-up failures, migrations under the advisory lock,
transactions, and the readiness numbers."""

from __future__ import annotations

import asyncio

import asyncpg
import pytest

from responses_bridge.store.postgres import DatabaseUnavailable, PostgresDatabase, is_postgres_url
from responses_bridge.store.postgres.database import describe
from responses_bridge.store.postgres.migrations import MIGRATIONS, latest_version, schema_version
from tests.support.postgres import PASSWORD, PostgresServer


async def test_open_migrates_and_reports_ready(postgres_url: str) -> None:
    async with PostgresDatabase(postgres_url) as db:
        assert db.is_open
        assert db.schema_version == latest_version()
        assert db.write_queue_depth == 0
        assert db.write_stall_seconds() == 0.0
        async with db.acquire() as conn:
            assert await schema_version(conn) == latest_version()
            tables = {row["tablename"] for row in await conn.fetch("SELECT tablename FROM pg_tables "
                                                                     "WHERE schemaname = 'public'")}
    assert {"responses", "response_items", "response_metadata", "response_events", "conversations",
            "conversation_items", "prompts", "prompt_versions", "schema_version"} <= tables
    assert not db.is_open


async def test_replicas_starting_together_migrate_once(postgres_url: str) -> None:
    """Five replicas open one empty database at once: the advisory lock lets one migrate, the rest find it done."""
    databases = [PostgresDatabase(postgres_url, max_size=2) for _ in range(5)]
    await asyncio.gather(*(db.open() for db in databases))
    try:
        assert all(db.is_open for db in databases)
        async with databases[0].acquire() as conn:
            assert await conn.fetchval("SELECT count(*) FROM schema_version") == 1
    finally:
        await asyncio.gather(*(db.close() for db in databases))


async def test_a_newer_schema_is_refused(postgres_url: str) -> None:
    async with PostgresDatabase(postgres_url) as db, db.acquire() as conn:
        await conn.execute("UPDATE schema_version SET version = $1", latest_version() + 5)
    with pytest.raises(RuntimeError, match="newer than the newest version"):
        await PostgresDatabase(postgres_url).open()


async def test_a_later_migration_applies_on_the_next_start(postgres_url: str) -> None:
    async with PostgresDatabase(postgres_url):
        pass
    extended = [*MIGRATIONS, (latest_version() + 1, ["CREATE TABLE later_table (id text PRIMARY KEY)"])]
    async with PostgresDatabase(postgres_url, migrations=extended) as db, db.acquire() as conn:
        assert db.is_open
        assert await conn.fetchval("SELECT to_regclass('later_table') IS NOT NULL")


async def test_a_failing_migration_leaves_the_previous_version(postgres_url: str) -> None:
    async with PostgresDatabase(postgres_url):
        pass
    broken = [*MIGRATIONS, (latest_version() + 1, ["CREATE TABLE half_done (id text)", "SELECT no_such_fn()"])]
    with pytest.raises(asyncpg.PostgresError):
        await PostgresDatabase(postgres_url, migrations=broken).open()
    async with PostgresDatabase(postgres_url) as db, db.acquire() as conn:
        assert await schema_version(conn) == latest_version()
        assert not await conn.fetchval("SELECT to_regclass('half_done') IS NOT NULL")


async def test_transaction_rolls_back_on_error(postgres_url: str) -> None:
    async with PostgresDatabase(postgres_url) as db:
        with pytest.raises(ZeroDivisionError):
            async with db.transaction() as conn:
                await conn.execute("INSERT INTO conversations (id, created_at, metadata, last_active_at) "
                                   "VALUES ('c1', 1, '{}', 1)")
                assert db.write_queue_depth == 1
                _ = 1 / 0
        assert db.write_queue_depth == 0
        async with db.acquire() as conn:
            assert await conn.fetchval("SELECT count(*) FROM conversations") == 0


async def test_wrong_password_fails_with_the_host_and_without_the_password(postgres_server: PostgresServer) -> None:
    url = postgres_server.url(password="not-the-password-xyz")
    with pytest.raises(DatabaseUnavailable) as caught:
        await PostgresDatabase(url).open()
    message = str(caught.value)
    assert f"127.0.0.1:{postgres_server.port}" in message
    assert "not-the-password-xyz" not in message and PASSWORD not in message
    assert "\n" not in message


async def test_unreachable_host_fails_with_one_line() -> None:
    with pytest.raises(DatabaseUnavailable, match=r"127\.0\.0\.1:9/nowhere") as caught:
        await PostgresDatabase("postgresql://someone:hunter2secret@127.0.0.1:9/nowhere").open()
    assert "hunter2secret" not in str(caught.value)


def test_urls() -> None:
    assert is_postgres_url("postgresql://u:p@db:5433/bridge")
    assert is_postgres_url("postgres://db/bridge")
    assert not is_postgres_url("sqlite:///x.db")
    assert not is_postgres_url(None)
    assert str(describe("postgresql://u:secret@db.internal:5433/bridge")) == "db.internal:5433/bridge as u"
    with pytest.raises(ValueError, match="postgresql://"):
        PostgresDatabase("mysql://x")
