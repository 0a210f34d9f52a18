"""Which store errors are transient (the database away for a while: retry) and which are final, in one place, and
the one way to retry a store call through an outage.

A short outage (a failover, a network blip, a cut connection, SQLite's writer lock held) must not fail what the
store was asked to keep: the caller retries with backoff until the store answers again or its bound passes. What
can never succeed by waiting (a constraint violated, bad SQL, a row refused) is raised at once, and so is a write
fenced off because this process lost a run's lease (:class:`~.records.LeaseLost`): the lease's new owner carries
the run on, and this process must stop, not write again.

The store raises no HTTP errors; the services decide what a transient error that outlasted its bound means (a
503 for a request, a run left to be resumed).
"""

from __future__ import annotations

import asyncio
import errno
import inspect
import sqlite3
import sys
from collections.abc import Awaitable, Callable
from typing import Any, TypeVar

import structlog
from tenacity import (
    AsyncRetrying,
    RetryCallState,
    retry_if_exception,
    stop_after_delay,
    wait_exponential,
    wait_random,
)

from .records import LeaseLost

log = structlog.get_logger("responses_bridge.store")

T = TypeVar("T")

FIRST_DELAY = 0.05  # seconds before the first retry; doubled each time, with jitter ...
MAX_DELAY = 1.0  # ... up to this: an outage's end is noticed within a second
SQLITE_BUSY = ("database is locked", "database table is locked", "database is busy")
# asyncpg's errors that say the connection (not the statement) failed, or that the statement lost a race it may win
# when run again; looked up by name so that the store works without the postgres extra installed
ASYNCPG_TRANSIENT = ("PostgresConnectionError", "ConnectionDoesNotExistError", "CannotConnectNowError",
                     "SerializationError", "DeadlockDetectedError", "AdminShutdownError", "CrashShutdownError",
                     "TooManyConnectionsError", "ConnectionFailureError")
CLOSED_CONNECTION = ("connection is closed", "connection was closed", "underlying connection is closed")
NETWORK_ERRNOS = frozenset({errno.ECONNREFUSED, errno.ECONNRESET, errno.ECONNABORTED, errno.EHOSTUNREACH,
                            errno.ENETUNREACH, errno.ENETDOWN, errno.ETIMEDOUT, errno.EPIPE})


def _final(exc: BaseException) -> bool:
    """A lease lost is final for this process, whoever raised it (its fencing may define a class of its own: any
    class named ``LeaseLost`` counts)."""
    return isinstance(exc, LeaseLost) or any(kind.__name__ == "LeaseLost" for kind in type(exc).__mro__)


def _transient_one(exc: BaseException) -> bool:
    if isinstance(exc, (ConnectionError, TimeoutError)):
        return True
    if isinstance(exc, OSError):  # a socket's (a file's missing or forbidden is not waited out)
        return exc.errno is None or exc.errno in NETWORK_ERRNOS
    if isinstance(exc, sqlite3.OperationalError):
        text = str(exc).lower()
        return any(busy in text for busy in SQLITE_BUSY)
    asyncpg = sys.modules.get("asyncpg")
    if asyncpg is None:  # never imported: none of its errors can exist
        return False
    exceptions = asyncpg.exceptions
    if isinstance(exc, tuple(getattr(exceptions, name) for name in ASYNCPG_TRANSIENT if hasattr(exceptions, name))):
        return True
    if isinstance(exc, asyncpg.InterfaceError):  # raised on a connection closed under the statement
        text = str(exc).lower()
        return any(closed in text for closed in CLOSED_CONNECTION)
    return False


def is_transient(exc: BaseException) -> bool:
    """True when waiting and trying again may succeed: the database (or the way to it) was away. Follows the
    exceptions a store raised *from* (``__cause__``), never past a lost lease."""
    seen = 0
    current: BaseException | None = exc
    while current is not None and seen < 5:
        if _final(current):
            return False
        if _transient_one(current):
            return True
        current, seen = current.__cause__, seen + 1
    return False


async def retry_store(call: Callable[[], Awaitable[T]], *, within: float, what: str,
                      before_retry: Callable[[], Awaitable[None]] | None = None) -> T:
    """``call()``, made again with backoff while it raises a transient error, for up to ``within`` seconds; then
    its last error is raised. A final error is raised at once. ``before_retry`` runs before each new attempt (once
    the store answered it): what may stop the retries for good, e.g. a check that this process still holds the
    lease it writes under (it raises :class:`~.records.LeaseLost` when it does not); its own transient errors are
    retried like the call's."""
    if within <= 0:
        return await call()
    try:  # the store answers nearly always: no retry machinery unless it did not (tenacity's costs ~50 µs a call)
        return await call()
    except Exception as exc:
        if not is_transient(exc):
            raise
        log.warning("store_retry", what=what, attempt=1, error=repr(exc)[:300])

    async def attempt() -> T:
        if before_retry is not None:
            await before_retry()
        return await call()

    def said(state: RetryCallState) -> None:
        error = state.outcome.exception() if state.outcome is not None else None
        log.warning("store_retry", what=what, attempt=state.attempt_number + 1, error=repr(error)[:300])

    retrying = AsyncRetrying(retry=retry_if_exception(is_transient), stop=stop_after_delay(within),
                             wait=wait_exponential(multiplier=FIRST_DELAY, max=MAX_DELAY) + wait_random(0, FIRST_DELAY),
                             before_sleep=said, reraise=True)
    await asyncio.sleep(FIRST_DELAY)
    result: T = await retrying(attempt)
    return result


class RetryingStore:
    """A store whose every call is :func:`retry_store`'d: what a long-lived task (a session's turns) holds, so that
    each of its reads and writes waits out an outage where it is, and the task resumes where it was. Attributes that
    are not coroutine methods (async iterators, plain values) are the inner store's, unchanged.

    Once the store was seen away (a call of this store failed transiently, or the owner said so: :meth:`doubt`),
    ``before_retry`` also runs before the next call, whichever it is, until it passed once: a task whose lease may
    have lapsed during the outage checks it before it writes again, not only the call that failed."""

    def __init__(self, inner: Any, *, within: float, before_retry: Callable[[], Awaitable[None]] | None = None,
                 ) -> None:
        self._inner = inner
        self._within = within
        self._before_retry = before_retry
        self.doubted = False

    def doubt(self) -> None:
        """The store was away (a lease renewal failed): check before the next call."""
        self.doubted = self._before_retry is not None

    async def _checked(self) -> None:
        if self._before_retry is not None:
            await self._before_retry()
        self.doubted = False

    @property
    def inner(self) -> Any:
        return self._inner

    def __getattr__(self, name: str) -> Any:
        found = getattr(self._inner, name)
        if not inspect.iscoroutinefunction(found):
            return found

        async def once(*args: Any, **kwargs: Any) -> Any:
            if self.doubted:
                await self._checked()
            try:
                return await found(*args, **kwargs)
            except BaseException as exc:
                if is_transient(exc):
                    self.doubt()
                raise

        async def retried(*args: Any, **kwargs: Any) -> Any:
            return await retry_store(lambda: once(*args, **kwargs), within=self._within, what=name,
                                     before_retry=self._checked)

        setattr(self, name, retried)  # made once: the next lookup finds it without __getattr__
        return retried
