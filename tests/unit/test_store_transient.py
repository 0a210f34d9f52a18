"""Which store errors are waited out and which are final (store/transient.py), and the retry that waits them out:
through a store that comes back, never past a lost lease, its bound kept."""

from __future__ import annotations

import sqlite3
from pathlib import Path
from typing import Any

import asyncpg
import pytest

from responses_bridge.services.agents.leases import SessionLeaseLost
from responses_bridge.store.records import LeaseLost
from responses_bridge.store.transient import RetryingStore, is_transient, retry_store


def locked_error(tmp_path: Path) -> sqlite3.OperationalError:
    """SQLite's own "database is locked": a write while another connection holds the write lock."""
    path = tmp_path / "locked.db"
    holder = sqlite3.connect(path, isolation_level=None)
    holder.execute("CREATE TABLE t (x)")
    holder.execute("BEGIN EXCLUSIVE")
    other = sqlite3.connect(path, timeout=0)
    try:
        other.execute("INSERT INTO t VALUES (1)")
    except sqlite3.OperationalError as exc:
        return exc
    finally:
        other.close()
        holder.execute("ROLLBACK")
        holder.close()
    raise AssertionError("the write went through the lock")


def test_connection_errors_and_locks_are_transient(tmp_path: Path) -> None:
    assert is_transient(ConnectionResetError(104, "Connection reset by peer"))
    assert is_transient(ConnectionRefusedError(111, "Connection refused"))
    assert is_transient(TimeoutError())
    assert is_transient(OSError("Multiple exceptions: ..."))  # asyncpg's connect to several addresses
    assert is_transient(asyncpg.exceptions.ConnectionDoesNotExistError("connection was closed in the middle"))
    assert is_transient(asyncpg.exceptions.CannotConnectNowError("the database system is starting up"))
    assert is_transient(asyncpg.exceptions.SerializationError("could not serialize access"))
    assert is_transient(asyncpg.exceptions.DeadlockDetectedError("deadlock detected"))
    assert is_transient(asyncpg.exceptions.AdminShutdownError("terminating connection"))
    assert is_transient(asyncpg.InterfaceError("cannot call Connection.fetch(): connection is closed"))
    assert is_transient(locked_error(tmp_path))
    wrapped = RuntimeError("the write failed")
    wrapped.__cause__ = ConnectionResetError(104, "reset")
    assert is_transient(wrapped)  # raised from a transient one


def test_what_waiting_cannot_fix_is_final() -> None:
    assert not is_transient(asyncpg.exceptions.UniqueViolationError("duplicate key"))
    assert not is_transient(asyncpg.exceptions.UndefinedTableError("no such table"))
    assert not is_transient(asyncpg.InterfaceError("cannot perform operation: another operation is in progress"))
    assert not is_transient(sqlite3.OperationalError("no such table: t"))
    assert not is_transient(FileNotFoundError(2, "No such file or directory"))
    assert not is_transient(PermissionError(13, "Permission denied"))
    assert not is_transient(ValueError("bad"))
    assert not is_transient(LeaseLost("resp_1"))
    assert not is_transient(SessionLeaseLost("sess_1"))


def test_a_lost_lease_is_final_whoever_names_it() -> None:
    class LeaseLost(Exception):  # another module's own class of that name (a store's fencing)
        pass

    class Fenced(LeaseLost, ConnectionError):  # even one that is also a connection error
        pass

    assert not is_transient(LeaseLost())
    assert not is_transient(Fenced())
    lost = RuntimeError("write refused")
    lost.__cause__ = SessionLeaseLost("sess_1")
    assert not is_transient(lost)


class Flaky:
    """A store that is away for its first ``failures`` calls."""

    def __init__(self, failures: int, error: BaseException | None = None) -> None:
        self.failures = failures
        self.error = error or ConnectionResetError(104, "reset")
        self.calls = 0

    async def get(self, key: str) -> str:
        self.calls += 1
        if self.calls <= self.failures:
            raise self.error
        return f"value of {key}"

    def name(self) -> str:
        return "flaky"


async def test_a_call_is_retried_until_the_store_answers() -> None:
    store = Flaky(3)
    assert await retry_store(lambda: store.get("k"), within=30, what="get") == "value of k"
    assert store.calls == 4


async def test_a_final_error_is_raised_at_once_and_the_bound_is_kept() -> None:
    final = Flaky(5, asyncpg.exceptions.UniqueViolationError("duplicate key"))
    with pytest.raises(asyncpg.exceptions.UniqueViolationError):
        await retry_store(lambda: final.get("k"), within=30, what="get")
    assert final.calls == 1
    away = Flaky(10**9)
    with pytest.raises(ConnectionResetError):
        await retry_store(lambda: away.get("k"), within=0.3, what="get")
    assert away.calls > 1
    once = Flaky(1)
    with pytest.raises(ConnectionResetError):
        await retry_store(lambda: once.get("k"), within=0, what="get")  # 0: never retried
    assert once.calls == 1


async def test_a_retry_checks_the_lease_first_and_stops_when_it_moved_on() -> None:
    store = Flaky(1)
    checks: list[str] = []

    async def lost() -> None:
        checks.append("checked")
        raise SessionLeaseLost("sess_1")

    with pytest.raises(SessionLeaseLost):
        await retry_store(lambda: store.get("k"), within=30, what="get", before_retry=lost)
    assert store.calls == 1 and checks == ["checked"]  # never tried again under a lease that is not ours


async def test_a_retrying_store_checks_the_lease_before_its_next_call_once_the_store_was_away() -> None:
    flaky = Flaky(1)
    checks: list[int] = []

    async def still_ours() -> None:
        checks.append(flaky.calls)

    store: Any = RetryingStore(flaky, within=30, before_retry=still_ours)
    assert store.name() == "flaky"  # not a coroutine: the inner store's own
    assert await store.get("a") == "value of a"
    assert checks == [1]  # after the failed call, before the retry
    assert await store.get("b") == "value of b"
    assert checks == [1]  # the store answered since: no check
    store.doubt()  # a lease renewal failed meanwhile
    assert await store.get("c") == "value of c"
    assert checks == [1, 3]
