"""Running a function on aiosqlite's own thread, with its sqlite3 connection: a whole batch of statements in one
hop to the thread instead of one per statement."""

from __future__ import annotations

import sqlite3
from collections.abc import Callable
from typing import Generic, TypeVar

import aiosqlite

T = TypeVar("T")


async def on_db_thread(conn: aiosqlite.Connection, function: Callable[[sqlite3.Connection], T]) -> T:
    """Run ``function`` with the underlying sqlite3 connection on aiosqlite's own thread (where every statement
    of that connection runs): a whole batch of statements costs one hop instead of one per statement."""
    raw = conn._conn  # aiosqlite exposes no public way to run a function on its thread with its connection
    return await conn._execute(_Once(function), raw)  # type: ignore[no-any-return,no-untyped-call]


class _Once(Generic[T]):
    """A function that lets go of itself when called. aiosqlite's thread keeps the last function it ran in a local
    until the next one comes: a batch of saves (every item's JSON of a 100,000-item request) stayed alive for as
    long as the database was idle."""

    __slots__ = ("function",)

    def __init__(self, function: Callable[[sqlite3.Connection], T]) -> None:
        self.function: Callable[[sqlite3.Connection], T] | None = function

    def __call__(self, raw: sqlite3.Connection) -> T:
        function, self.function = self.function, None
        assert function is not None, "run once"
        return function(raw)
