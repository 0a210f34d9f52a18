"""One PostgreSQL database shared by every replica of the bridge: a connection pool, opened and migrated at start.

Every PostgreSQL store (responses, conversations, prompts, events, API keys, files, vector stores, chunks) runs its
statements through one :class:`PostgresDatabase`: ``async with db.acquire() as conn`` for reads and single
autocommit statements, ``async with db.transaction() as conn`` for several statements that commit together. The
database also answers the readiness questions the SQLite store answers (``is_open``, ``write_queue_depth``,
``write_stall_seconds``): here a "write" is a transaction, counted from the moment it asks the pool for a
connection, so a pool starved by stuck transactions or a database that stopped answering shows as a stall.

A database that cannot be reached (or refuses the credentials) fails :meth:`PostgresDatabase.open` with
:class:`DatabaseUnavailable`, one line naming the host, port and database, never the password: a replica must
not start serving when the state it shares with the others is out of reach.
"""

from __future__ import annotations

import contextlib
import itertools
import time
from collections.abc import AsyncIterator, Sequence
from typing import TYPE_CHECKING, Literal

import asyncpg
from pgvector.asyncpg import register_vector

from .. import metrics
from ..database_url import DatabaseUnavailable, describe, is_postgres_url
from .migrations import MIGRATIONS, Migration, latest_version, migrate
from .sql import pg_text

if TYPE_CHECKING:
    from .migrations import Connection

Isolation = Literal["read_committed", "repeatable_read", "serializable"]

CONNECT_TIMEOUT_SECONDS = 10.0
"""How long one connection attempt may take at start before the start fails (a firewall that drops packets)."""

DEFAULT_POOL_SIZE = 10
"""Connections per replica: enough for a busy sidecar; a server's ``max_connections`` (100 by default) then
serves several replicas."""


class PostgresDatabase:
    """A pool of connections to one PostgreSQL database, migrated to the schema this code expects."""

    def __init__(self, url: str, *, min_size: int = 1, max_size: int = DEFAULT_POOL_SIZE,
                 migrations: Sequence[Migration] = MIGRATIONS) -> None:
        if not is_postgres_url(url):
            raise ValueError("a PostgreSQL database URL starts with postgresql:// or postgres://")
        self._url = url
        self.target = describe(url)
        self._min_size = min_size
        self._max_size = max_size
        self._migrations = migrations
        self._pool: asyncpg.Pool | None = None
        self._schema_version = 0
        self._write_waits: dict[int, float] = {}  # token -> when that transaction asked for a connection
        self._tokens = itertools.count(1)

    async def __aenter__(self) -> PostgresDatabase:
        await self.open()
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.close()

    # -- lifecycle -------------------------------------------------------------------------------------------

    async def open(self) -> None:
        """Connect the pool and bring the schema up to date (one replica at a time: see migrations.py)."""
        if self._pool is not None:
            return
        try:
            pool = await asyncpg.create_pool(self._url, min_size=self._min_size, max_size=self._max_size,
                                             timeout=CONNECT_TIMEOUT_SECONDS, command_timeout=None,
                                             init=register_types)
        except (TimeoutError, OSError, asyncpg.PostgresError, asyncpg.InterfaceError) as exc:
            raise DatabaseUnavailable(f"cannot open the PostgreSQL database at {self.target}: {_reason(exc)}") from None
        try:
            async with pool.acquire() as conn:
                version = await migrate(conn, self._migrations)
            await pool.expire_connections()  # made before the migration made the vector type: made again
        except BaseException:
            await pool.close()
            raise
        self._pool = pool
        self._schema_version = version
        metrics.track(self)

    async def close(self) -> None:
        pool, self._pool = self._pool, None
        metrics.untrack(self)
        if pool is not None:
            await pool.close()

    # -- health ----------------------------------------------------------------------------------------------

    @property
    def is_open(self) -> bool:
        """Open, and migrated to every version this code knows."""
        return self._pool is not None and self._schema_version == latest_version(self._migrations)

    @property
    def schema_version(self) -> int:
        return self._schema_version

    @property
    def write_queue_depth(self) -> int:
        """Transactions waiting for a connection or running."""
        return len(self._write_waits)

    def write_stall_seconds(self) -> float:
        """How long the oldest waiting or running transaction has been at it; 0 when none is."""
        if not self._write_waits:
            return 0.0
        return max(0.0, time.monotonic() - next(iter(self._write_waits.values())))

    # -- connections -----------------------------------------------------------------------------------------

    def _require_pool(self) -> asyncpg.Pool:
        if self._pool is None:
            raise RuntimeError("PostgresDatabase is not open; await open() first")
        return self._pool

    @contextlib.asynccontextmanager
    async def acquire(self, operation: str = "read") -> AsyncIterator[Connection]:
        """A connection of the pool, in autocommit: each statement is its own transaction."""
        pool = self._require_pool()
        with metrics.timed(operation):
            async with pool.acquire() as conn:
                yield conn

    async def fetch_row(self, operation: str, sql: str, *args: object) -> asyncpg.Record | None:
        """The first row ``sql`` selects on a pool connection (``acquire``'s), None when it selects none: the
        lookup by id every PostgreSQL store makes."""
        async with self.acquire(operation) as conn:
            row: asyncpg.Record | None = await conn.fetchrow(sql, *args)
        return row

    @contextlib.asynccontextmanager
    async def transaction(self, operation: str = "write", *,
                          isolation: Isolation = "read_committed") -> AsyncIterator[Connection]:
        """A connection inside a transaction, committed when the block ends and rolled back if it raises;
        counted as a pending write (readiness) from the moment it asks for a connection."""
        pool = self._require_pool()
        token = next(self._tokens)
        self._write_waits[token] = time.monotonic()
        try:
            with metrics.timed(operation):
                async with pool.acquire() as conn, conn.transaction(isolation=isolation):
                    yield conn
        finally:
            self._write_waits.pop(token, None)


async def register_types(conn: asyncpg.Connection) -> None:
    """Every pool connection encodes pgvector's ``vector`` in binary from numpy arrays (once the extension
    exists: the first connection of a new database migrates it into being), and sends text with any NUL
    character replaced by U+FFFD. A client's id, metadata value or filter holding a NUL would otherwise fail the
    statement (a 500) where SQLite simply finds nothing: ids never hold one, so a lookup by such an id finds
    nothing here too, and a stored value and the filter naming it are mapped alike. Bodies (responses, items)
    are stored as JSON, where a NUL is the escape ``\\u0000``, and come back unchanged. (``text[]``
    parameters bypass the codec: the stores pass them through ``sql.pg_texts``.)"""
    await conn.set_type_codec("text", schema="pg_catalog", encoder=pg_text, decoder=str, format="text")
    if await conn.fetchval("SELECT to_regtype('vector') IS NOT NULL"):
        await register_vector(conn)


def _reason(exc: BaseException) -> str:
    """The cause of a failed connection in one line; asyncpg's messages name no password."""
    if isinstance(exc, TimeoutError):
        return f"no answer within {CONNECT_TIMEOUT_SECONDS:g}s"
    text = " ".join(str(exc).split()) or type(exc).__name__
    return text


__all__ = ["DatabaseUnavailable", "PostgresDatabase", "describe", "is_postgres_url"]
