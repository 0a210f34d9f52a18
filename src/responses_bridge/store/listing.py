"""Keyset pages over the objects a client lists (``GET /v1/responses``, ``GET /v1/conversations``).

Both lists are ordered by ``(created_at, id)``: creation time as clients expect, the id breaking ties between
objects created in the same second so the order is total and a cursor names one exact place in it. A cursor (an
object id of the caller's tenant) is first resolved to its ``(created_at, id)`` pair by a primary-key lookup;
the page is then one seek in an index in that order led by the tenant (migration 10), and a read of ``limit + 1``
rows: the cost of a page does not grow with the store, whichever page it is. Every statement is built from fixed
fragments; values are always bound.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, TypeVar

if TYPE_CHECKING:
    from .records import ResponseFilter


@dataclass(frozen=True, slots=True)
class Bounds:
    """Exclusive bounds in ascending ``(created_at, id)`` order, and in which direction the page is read.

    Normally the scan starts at the beginning of the requested order; with only ``before`` it runs backwards
    from that cursor, so the client gets the page right before it (the "previous page"), which the caller then
    reverses into the requested order.
    """

    lower: tuple[int, str] | None
    upper: tuple[int, str] | None
    scan_ascending: bool
    backward: bool


def bounds(ascending: bool, after: tuple[int, str] | None, before: tuple[int, str] | None,
           *, before_given: bool, after_given: bool) -> Bounds:
    """In descending order "after" a cursor means an older object and "before" a newer one."""
    lower, upper = (after, before) if ascending else (before, after)
    backward = before_given and not after_given
    return Bounds(lower, upper, ascending != backward, backward)


def page_sql(select: str, source: str, key: tuple[str, str], conditions: Sequence[str], page: Bounds) -> str:
    """``SELECT {select} FROM {source} WHERE …`` for one page; ``key`` names the (created_at, id) columns.

    Bound parameters: ``:lower_at``/``:lower_id``, ``:upper_at``/``:upper_id`` when those bounds exist, and
    ``:fetch`` (the page size plus one, to know whether there is more)."""
    created, ident = key
    where = list(conditions)
    if page.lower is not None:
        where.append(f"({created}, {ident}) > (:lower_at, :lower_id)")
    if page.upper is not None:
        where.append(f"({created}, {ident}) < (:upper_at, :upper_id)")
    direction = "ASC" if page.scan_ascending else "DESC"
    sql = f"SELECT {select} FROM {source}"
    if where:
        sql += " WHERE " + " AND ".join(where)
    return sql + f" ORDER BY {created} {direction}, {ident} {direction} LIMIT :fetch"


Row = TypeVar("Row")


def trim_page(rows: list[Row], limit: int, *, backward: bool = False) -> bool:
    """Cuts the ``limit + 1`` rows a page statement read down to the page, in the order the client asked for (a
    backward read, ``Bounds.backward``, reversed); True when there was a row past it (``has_more``)."""
    has_more = len(rows) > limit
    del rows[limit:]
    if backward:
        rows.reverse()
    return has_more


def bound_params(page: Bounds, fetch: int) -> dict[str, object]:
    params: dict[str, object] = {"fetch": fetch}
    if page.lower is not None:
        params["lower_at"], params["lower_id"] = page.lower
    if page.upper is not None:
        params["upper_at"], params["upper_id"] = page.upper
    return params


_RESPONSE_KEY = ("r.created_at", "r.id")
_METADATA_KEY = ("m.created_at", "m.response_id")
_MORE_METADATA = ("EXISTS (SELECT 1 FROM response_metadata WHERE response_id = r.id AND key = :mk{n} "
                  "AND value = :mv{n})")


def responses_page(tenant: str, where: ResponseFilter, page: Bounds, fetch: int, *,
                   metadata_join: str = "JOIN", select: str = "r.id, r.response") -> tuple[str, dict[str, object]]:
    """``GET /v1/responses``: the page statement and its parameters, on either store. A metadata filter drives the
    page from its own index (tenant, key, value, created_at, response_id), joined to ``responses`` by
    ``metadata_join`` (SQLite's ``CROSS JOIN`` keeps its planner from starting at the responses table and
    sorting); further pairs are checked per row by key. ``select``: the columns read (the console reads ids and
    stored sizes only: store/browsing.py)."""
    params = bound_params(page, fetch)
    params["tenant"] = tenant
    conditions = ["r.tenant = :tenant"]
    for name, test, value in (("model", "r.model =", where.model), ("status", "r.status =", where.status),
                              ("created_before", "r.created_at <", where.created_before),
                              ("created_after", "r.created_at >=", where.created_after),
                              ("key_id", "r.api_key_id =", where.key_id)):
        if value is not None:  # each filter given: one condition, one parameter of its own name
            conditions.append(f"{test} :{name}")
            params[name] = value
    source, key = "responses AS r", _RESPONSE_KEY
    for n, (name, value) in enumerate(where.metadata):
        params[f"mk{n}"], params[f"mv{n}"] = name, value
        if n == 0:
            source = f"response_metadata AS m {metadata_join} responses AS r ON r.id = m.response_id"
            key = _METADATA_KEY
            conditions.append("m.tenant = :tenant AND m.key = :mk0 AND m.value = :mv0")
        else:
            conditions.append(_MORE_METADATA.format(n=n))
    return page_sql(select, source, key, conditions, page), params
