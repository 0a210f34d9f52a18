"""The tests' database cut (tests/support/db_cut.py): through it a client reaches PostgreSQL; cut, its open
connection fails at once and a new one is refused at once (no hang); restored, it connects again."""

from __future__ import annotations

import asyncio

import asyncpg
import pytest

from tests.support.db_cut import cut_proxy


async def test_a_cut_resets_open_and_new_connections_and_a_restore_lets_them_through(postgres_url: str) -> None:
    async with cut_proxy(postgres_url) as proxy:
        url = proxy.url_for(postgres_url)
        assert f":{proxy.port}/" in url and url != postgres_url
        connection = await asyncpg.connect(url)
        assert await connection.fetchval("SELECT 1") == 1
        proxy.cut()
        with pytest.raises((OSError, asyncpg.exceptions.ConnectionDoesNotExistError,
                            asyncpg.exceptions.InterfaceError)):
            await asyncio.wait_for(connection.fetchval("SELECT 2"), 10)
        with pytest.raises((OSError, asyncpg.exceptions.ConnectionDoesNotExistError,
                            asyncpg.exceptions.InterfaceError, asyncpg.exceptions.PostgresConnectionError)):
            await asyncio.wait_for(asyncpg.connect(url), 10)
        assert proxy.reset >= 3
        proxy.restore()
        again = await asyncpg.connect(url)
        try:
            assert await again.fetchval("SELECT 3") == 3
        finally:
            await again.close()
        connection.terminate()
