"""Small helpers the PostgreSQL stores share: numbered parameters for statements written with named ones, the
keyset cursors of the listed objects, and the item rows (one row per item, as in the SQLite store)."""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping
from typing import TYPE_CHECKING

import orjson

from ..records import InvalidCursor, LeaseLost

if TYPE_CHECKING:
    from .migrations import Connection

def page_bounds(ascending: bool, after: int | None, before: int | None, args: list[object],
                column: str) -> tuple[str, bool]:
    """The conditions on an ordered ``column`` (a seq, a position) of one page, their values appended to ``args``
    (numbered on), and the scan direction: in descending order ``after`` means a lower value; with only
    ``before`` the scan runs backwards from that cursor (the page is reversed afterwards: listing.trim_page)."""
    lower, upper = (after, before) if ascending else (before, after)
    sql = ""
    if lower is not None:
        args.append(lower)
        sql += f" AND {column} > ${len(args)}"
    if upper is not None:
        args.append(upper)
        sql += f" AND {column} < ${len(args)}"
    backward = before is not None and after is None
    return sql, ascending != backward


NUL_STAND_IN = "\ufffd"
"""What a NUL character in a text value becomes: PostgreSQL's text cannot hold U+0000 (SQLite's can)."""


def pg_text(value: str) -> str:
    """``value`` as PostgreSQL text can hold it: every NUL as U+FFFD (the pool's text codec does this to every
    text parameter; see database.register_types)."""
    return value.replace("\x00", NUL_STAND_IN) if "\x00" in value else value


def pg_texts(values: Iterable[str | None]) -> list[str | None]:
    """A ``text[]`` parameter's elements, each as :func:`pg_text` (asyncpg encodes arrays of text itself, past the
    pool's text codec)."""
    return [None if value is None else pg_text(value) for value in values]


def pg_json(value: object) -> str:
    """``value`` as JSON text a ``jsonb`` column takes: jsonb refuses the ``\\u0000`` escape, so every NUL in a
    string (key or value) is :data:`NUL_STAND_IN`, as in text columns. Only a document holding one is walked."""
    text = orjson.dumps(value).decode()
    return orjson.dumps(_without_nul(value)).decode() if "\\u0000" in text else text


def _without_nul(value: object) -> object:
    if isinstance(value, str):
        return pg_text(value)
    if isinstance(value, dict):
        return {pg_text(key): _without_nul(item) for key, item in value.items()}
    if isinstance(value, list):
        return [_without_nul(item) for item in value]
    return value


_NAMED = re.compile(r"(?<![:\w]):([a-z_][a-z0-9_]*)")


def numbered(sql: str, params: Mapping[str, object]) -> tuple[str, list[object]]:
    """``:name`` parameters (the shared page builder in store/listing.py writes them) as asyncpg's ``$n``, and the
    argument list in that order; a name used twice is one argument. Statements passed here use no ``::`` casts."""
    order: dict[str, int] = {}

    def place(match: re.Match[str]) -> str:
        name = match.group(1)
        if name not in order:
            order[name] = len(order) + 1
        return f"${order[name]}"

    text = _NAMED.sub(place, sql)
    return text, [params[name] for name in order]


async def resolve_keys(conn: Connection, table: str, tenant: str, after: str | None, before: str | None
                       ) -> tuple[tuple[int, str] | None, tuple[int, str] | None]:
    """Both cursors' ``(created_at, id)``, looked up among ``tenant``'s rows only (another tenant's id is an unknown
    cursor, like a missing one). ``table`` is one of our own table names, never client input."""
    sql = (f"SELECT (SELECT created_at FROM {table} WHERE id = $1 AND tenant = $3), "
           f"(SELECT created_at FROM {table} WHERE id = $2 AND tenant = $3)")
    row = await conn.fetchrow(sql, after, before, tenant)
    after_at, before_at = (row[0], row[1]) if row is not None else (None, None)
    if after is not None and after_at is None:
        raise InvalidCursor("after", after)
    if before is not None and before_at is None:
        raise InvalidCursor("before", before)
    return (None if after is None or after_at is None else (int(after_at), after),
            None if before is None or before_at is None else (int(before_at), before))


def columns(rows: list[tuple[str | None, bytes]]) -> tuple[list[str | None], list[bytes]]:
    """Item rows as two arrays, for one ``unnest`` insert of every item (one round trip whatever their number)."""
    return pg_texts(item_id for item_id, _ in rows), [blob for _, blob in rows]


_LEASE_HELD = "SELECT 1 FROM background_runs WHERE response_id = $1 AND owner = $2 AND lease_until > now()"


async def check_lease(conn: Connection, response_id: str, lease_owner: str | None) -> None:
    """The fence of a background run's saves, inside the caller's transaction (which holds the response row's
    lock): :class:`LeaseLost` unless ``lease_owner`` (when given) still holds the run's lease by the database's
    clock. A lease that ran out is lost even when nobody has taken it yet: the sweep of any replica may take it
    from that moment, and a write that passed the fence must never be one the taker did not read."""
    if lease_owner is not None and await conn.fetchval(_LEASE_HELD, response_id, lease_owner) is None:
        raise LeaseLost(response_id)
