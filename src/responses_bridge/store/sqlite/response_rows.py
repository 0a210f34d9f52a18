"""How a stored response becomes rows: the upsert of the response, its items and metadata, and the conversation it
joins, written in one transaction per batch of saves (several saves that arrive together share one commit).
"""

from __future__ import annotations

import asyncio
import sqlite3
import time
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass
from typing import Any

import orjson

from ..items import ItemRow, item_rows
from ..records import LeaseLost, ResponseIdTaken
from ..timings import timing_columns, usage_columns
from .console.response_facts import REFRESH as REFRESH_FACTS

# An existing id is only replaced when it is the same tenant's (the WHERE of DO UPDATE): otherwise nothing
# changes and the statement reports no row, which _write_one turns into ResponseIdTaken.
_UPSERT_RESPONSE = """
INSERT INTO responses (id, created_at, status, model, previous_response_id, response, tenant, ttft_ms, latency_ms,
                       timing, input_tokens, cached_tokens, output_tokens, total_tokens, api_key_id, usage_hour)
VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)
ON CONFLICT (id) DO UPDATE SET
    created_at = excluded.created_at, status = excluded.status, model = excluded.model,
    previous_response_id = excluded.previous_response_id, response = excluded.response,
    ttft_ms = excluded.ttft_ms, latency_ms = excluded.latency_ms, timing = excluded.timing,
    input_tokens = excluded.input_tokens, cached_tokens = excluded.cached_tokens,
    output_tokens = excluded.output_tokens, total_tokens = excluded.total_tokens,
    api_key_id = coalesce(excluded.api_key_id, responses.api_key_id), usage_hour = excluded.usage_hour
WHERE responses.tenant = excluded.tenant
"""

# A response's first save (every plain request's only one): inserted unless its id exists, so a new id skips the
# re-save's work — the upsert's tenant check and the deletes of the items and metadata a previous save wrote, which
# a new id cannot have (two statements, ~10 % of a plain save's instructions). A row that exists already (a
# background run saved again, a retried save) reports no row here and takes the upsert as before.
_INSERT_NEW_RESPONSE = """
INSERT INTO responses (id, created_at, status, model, previous_response_id, response, tenant, ttft_ms, latency_ms,
                       timing, input_tokens, cached_tokens, output_tokens, total_tokens, api_key_id, usage_hour)
VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)
ON CONFLICT (id) DO NOTHING
"""


_DELETE_ITEMS = "DELETE FROM response_items WHERE response_id = ?"


LEASE_HELD = "SELECT 1 FROM background_runs WHERE response_id = ? AND owner = ?"
"""The fence of a background run's saves (background_runs.py): read inside the saving transaction,
which holds the database's write lock, so no sweep can end the run between the check and the write."""


_INSERT_ITEM = "INSERT INTO response_items (response_id, kind, position, item_id, item) VALUES (?, ?, ?, ?, ?)"


_DELETE_METADATA = "DELETE FROM response_metadata WHERE response_id = ?"


_INSERT_METADATA = ("INSERT INTO response_metadata (response_id, key, value, created_at, tenant) "
                    "VALUES (?, ?, ?, ?, ?)")


_NEXT_SEQ = "SELECT next_seq FROM conversations WHERE id = ? AND tenant = ?"


_INSERT_CONVERSATION_ITEM = "INSERT INTO conversation_items (conversation_id, seq, item_id, item) VALUES (?, ?, ?, ?)"


_ADVANCE_SEQ = "UPDATE conversations SET next_seq = next_seq + ?, last_active_at = ? WHERE id = ?"


@dataclass(slots=True)
class _Save:
    """One queued save: the response's columns, its items serialised, and the caller waiting for it."""

    response: tuple[object, ...]
    inputs: list[ItemRow]
    outputs: list[ItemRow]
    conversation_id: str | None
    done: asyncio.Future[None]
    metadata: list[tuple[str, str]]
    tenant: str
    token: int = 0
    lease_owner: str | None = None


def _save_row(response: dict[str, Any], input_items: list[dict[str, Any]], conversation_id: str | None,
              done: asyncio.Future[None], tenant: str, lease_owner: str | None = None,
              timing: Mapping[str, Any] | None = None, key_id: str | None = None) -> _Save:
    try:
        response_id = response["id"]
    except KeyError:
        raise ValueError("cannot store a response without an 'id'") from None
    created_at = response.get("created_at")
    created = int(created_at) if created_at is not None else int(time.time())
    columns = (
        response_id,
        created,
        response.get("status"),
        response.get("model"),
        response.get("previous_response_id"),
        orjson.dumps(response),
        tenant,
        *timing_columns(timing),
        *usage_columns(response),
        key_id,
        created // 3600,
    )
    metadata = response.get("metadata")
    pairs = ([(key, value) for key, value in metadata.items() if isinstance(key, str) and isinstance(value, str)]
             if isinstance(metadata, dict) else [])
    return _Save(columns, item_rows(input_items), item_rows(response.get("output") or []), conversation_id, done,
                 pairs, tenant, lease_owner=lease_owner)


def append_conversation_rows(conn: sqlite3.Connection, conversation_id: str, rows: Iterator[ItemRow] | list[ItemRow],
                             tenant: str, active_at: int | None = None) -> bool:
    """Append items at the end of ``tenant``'s conversation, numbered from its own counter; False if it is unknown
    (or another tenant's). Its last activity becomes ``active_at`` (default: now).

    Runs on the database thread inside the caller's transaction (the counter read and its update must commit
    together)."""
    found = conn.execute(_NEXT_SEQ, (conversation_id, tenant)).fetchone()
    if found is None:
        return False
    first = int(found[0])
    count = 0

    def numbered() -> Iterator[tuple[str, int, str | None, bytes]]:
        nonlocal count
        for item_id, blob in rows:
            yield conversation_id, first + count, item_id, blob
            count += 1

    conn.executemany(_INSERT_CONVERSATION_ITEM, numbered())
    if count:
        conn.execute(_ADVANCE_SEQ, (count, int(time.time()) if active_at is None else active_at, conversation_id))
    return True


def check_lease(conn: sqlite3.Connection, response_id: object, lease_owner: str | None) -> None:
    """Inside the caller's write transaction: :class:`LeaseLost` unless ``lease_owner`` (when given) still holds
    the run's lease."""
    if lease_owner is not None and conn.execute(LEASE_HELD, (response_id, lease_owner)).fetchone() is None:
        raise LeaseLost(str(response_id))


def _item_params(response_id: object, save: _Save) -> Iterator[tuple[object, str, int, str | None, bytes]]:
    """The rows of ``response_items`` for the save: its inputs, then its outputs, each numbered from 0."""
    for kind, rows in (("input", save.inputs), ("output", save.outputs)):
        for position, (item_id, blob) in enumerate(rows):
            yield response_id, kind, position, item_id, blob


def _write_one(conn: sqlite3.Connection, save: _Save) -> None:
    response_id = save.response[0]
    check_lease(conn, response_id, save.lease_owner)
    fresh = conn.execute(_INSERT_NEW_RESPONSE, save.response).rowcount == 1
    if not fresh:  # a re-save (queued -> completed): the row is replaced, with its items and metadata
        if conn.execute(_UPSERT_RESPONSE, save.response).rowcount != 1:
            raise ResponseIdTaken(str(response_id))  # another tenant's row: left as it is, nothing else written
        conn.execute(_DELETE_ITEMS, (response_id,))
        conn.execute(_DELETE_METADATA, (response_id,))
        conn.execute(REFRESH_FACTS, (response_id,))  # its latency and usage changed: the console's table too
    if save.inputs or save.outputs:
        conn.executemany(_INSERT_ITEM, _item_params(response_id, save))
    if save.metadata:
        created_at = save.response[1]
        conn.executemany(_INSERT_METADATA, ((response_id, key, value, created_at, save.tenant)
                                            for key, value in save.metadata))
    if save.conversation_id is not None:
        # a conversation deleted while the response ran simply does not get the turn; the response is still good
        append_conversation_rows(conn, save.conversation_id, [*save.inputs, *save.outputs], save.tenant)


def _write_saves(conn: sqlite3.Connection, saves: list[_Save]) -> list[Exception | None]:
    """One transaction for the batch, one savepoint per response: a response whose statements fail is rolled back
    alone and reported to its own caller; the others commit. Runs on the database thread. (A batch of one needs
    no savepoint: its transaction is its unit.)"""
    outcomes: list[Exception | None] = []
    alone = len(saves) == 1
    conn.execute("BEGIN IMMEDIATE")
    try:
        for save in saves:
            if alone:
                _write_one(conn, save)
                outcomes.append(None)
                continue
            conn.execute("SAVEPOINT save_response")
            try:
                _write_one(conn, save)
            except Exception as exc:  # noqa: BLE001  (whatever failed this response is its caller's error alone)
                conn.execute("ROLLBACK TO save_response")
                outcomes.append(exc)
            else:
                outcomes.append(None)
            conn.execute("RELEASE save_response")
        conn.execute("COMMIT")
    except Exception as exc:
        if conn.in_transaction:
            conn.execute("ROLLBACK")
        if alone and not outcomes:
            return [exc]  # that response's own statement failed: its caller's error
        raise
    except BaseException:
        if conn.in_transaction:
            conn.execute("ROLLBACK")
        raise
    return outcomes


# -- binding ------------------------------------------------------------------------------------------------------

_bound_as_is = False
_AS_NONE: Callable[[None], None] = {}.get  # type: ignore[assignment]  # dict.get(None) is None, in C


def bind_as_is() -> None:
    """Lets ``bytes`` and ``None`` be bound without sqlite3's adaptation lookup (once per process).

    sqlite3 binds ``int``, ``float``, ``str`` and ``bytearray`` parameters directly; every other value, ``bytes``
    (each stored JSON) and ``None`` (each absent column) included, goes through its adaptation protocol: a registry
    lookup, then ``__adapt__`` asked of the protocol's type, whose miss is an ``AttributeError`` formatted and thrown
    away, then ``__conform__`` asked of the value: ~1,000 instructions a parameter, twelve in a plain response's save
    (0.65 % of a plain request's instructions). An adapter registered for the type ends the lookup at the registry,
    and these two hand the value back as it is (``bytes(b) is b`` for a ``bytes``; ``{}.get(None)`` is None), in C,
    so what is bound is unchanged. Neither is a type sqlite3 treats as basic (registering one of those makes it adapt
    every parameter), and both stay identity functions for any other sqlite3 user in the process."""
    global _bound_as_is
    if not _bound_as_is:
        sqlite3.register_adapter(bytes, bytes)
        sqlite3.register_adapter(type(None), _AS_NONE)
        _bound_as_is = True
