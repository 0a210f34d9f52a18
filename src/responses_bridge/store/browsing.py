"""What the console reads of stored responses, in pieces whose size is known before they are read.

The API answers a response as the bytes it stored; the console only shows them, and a page of it must cost the same
whatever the tenant stored (a 5 MB response, a response of 10,000 items). So the console never lists responses as
``list_responses`` does (every row's whole JSON): it asks for their ids and stored sizes first (a row header's
length, no content read), decides what its budget lets it read, and then reads exactly that — one response's JSON,
a range of a response's items by position, the ids of a range whose JSON holds a text. A text is searched for in the
database (a substring of the stored JSON, on the store's own thread or server), never by loading rows
into Python, and one statement examines a bounded number of bytes, so the read connection it holds is free again soon
for the API calls queued behind it.

Every call takes the tenant and matches it in its statements, as every store read does (base.py's rule).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import NamedTuple, Protocol, runtime_checkable

import orjson

from .records import ResponseFilter

LIKE_ESCAPE = "\\"
SORTS = {"latency": "latency_ms", "ttft": "ttft_ms"}
"""The Logs' orders besides newest first: each a column of the row, in an index led by the tenant (PostgreSQL
migration 35; on SQLite in the facts table: migration 39)."""


class UsageSum(NamedTuple):
    """One group of :meth:`ResponseBrowser.usage_sums`: its requests, their tokens (uncached input, cached input,
    output, and the usages' own totals) and how many of them counted no usage."""

    hour: int  # Unix hours (created_at // 3600)
    model: str
    key_id: str | None
    requests: int
    input_tokens: int
    cached_tokens: int
    output_tokens: int
    total_tokens: int
    no_usage: int


def usage_sums_sql(table: str = "responses") -> str:
    """The statement of :meth:`ResponseBrowser.usage_sums` (``:name`` parameters) over ``table``: a range of its
    usage index (PostgreSQL's ``responses``, migration 36; SQLite's ``response_facts``, migration 39), led by the
    tenant then the hour, grouped in the index's own order (on SQLite grouping by a bucket computed from
    ``created_at`` sorted 100,000 entries in a temporary B-tree: 128 ms against 34 ms this way)."""
    return f"""
SELECT usage_hour, model, api_key_id, count(*),
       coalesce(sum(input_tokens), 0), coalesce(sum(cached_tokens), 0), coalesce(sum(output_tokens), 0),
       coalesce(sum(total_tokens), 0), count(*) - count(output_tokens)
FROM {table} WHERE tenant = :tenant AND usage_hour >= :since_hour
GROUP BY usage_hour, model, api_key_id
"""


USAGE_SUMS = usage_sums_sql()
"""The usage sums over ``responses``' own columns (PostgreSQL)."""


def usage_sum(row: Sequence[object]) -> UsageSum:
    hour, model, key_id, *counts = row
    return UsageSum(int(str(hour)), str(model) if model else "?", None if key_id is None else str(key_id),
                    *(int(str(count)) for count in counts))


@runtime_checkable
class ResponseBrowser(Protocol):
    """The console's reads (adapters/http/console/logs.py), on both stores."""

    async def response_sizes(self, *, tenant: str, after: str | None, where: ResponseFilter, limit: int,
                             before: str | None = None, inputs: bool = False) -> tuple[list[tuple[str, int]], bool]:
        """``(id, stored bytes)`` of ``tenant``'s responses newest first after the cursor ``after`` (exclusive; an
        unknown one raises InvalidCursor), narrowed by ``where``, at most ``limit``; and whether there are more.
        With only ``before``: the ``limit`` responses just newer than it (still newest first; "more": newer ones
        beyond them). With ``inputs``: each size counts its input items' stored bytes too (what a search examines:
        :meth:`responses_containing` looks in both), read from their rows' headers as the response's is."""

    async def slowest_sizes(self, *, tenant: str, where: ResponseFilter, by: str, offset: int,
                            limit: int) -> tuple[list[tuple[str, int]], bool]:
        """``(id, stored bytes)`` of ``tenant``'s timed responses that ``where`` admits, slowest first by ``by``
        (one of :data:`SORTS`: its index, led by the tenant), from ``offset`` (bounded by the caller), at most
        ``limit``; and whether there are more."""

    async def usage_sums(self, *, tenant: str, since_hour: int) -> list[UsageSum]:
        """``tenant``'s responses created in hour ``since_hour`` (Unix hours: ``created_at // 3600``) or later,
        summed by hour, model and API key id, in one ``GROUP BY`` walking the usage index in its own order (its
        columns: store/timings.py; no sort, no JSON read): the console's Usage, which folds hours into its
        bars. A model stored empty is named ``?``."""

    async def response_times(self, response_ids: Sequence[str], *,
                             tenant: str) -> dict[str, tuple[float | None, float | None]]:
        """``(ttft_ms, latency_ms)`` of those of ``response_ids`` that are ``tenant``'s (their columns, no JSON
        read)."""

    async def chat_sizes(self, *, tenant: str, after: str | None, limit: int) -> tuple[list[tuple[str, int]], bool]:
        """``(id, stored bytes of its completion and messages)`` of ``tenant``'s stored chat completions newest first
        after the cursor ``after`` (an unknown one raises InvalidCursor), at most ``limit``; and whether there are
        more (the listing's index, no content read)."""

    async def chats_containing(self, completion_ids: Sequence[str], needle: str, *, tenant: str) -> set[str]:
        """Those of ``completion_ids`` (``tenant``'s) whose stored messages or completion hold ``needle`` (as
        :func:`as_stored` writes a text), ASCII letters in either case, as :meth:`responses_containing`."""

    async def count_responses(self, *, tenant: str, where: ResponseFilter, cap: int) -> int:
        """How many of ``tenant``'s responses ``where`` admits, counted in the listing's index up to ``cap + 1`` at
        most (a count past ``cap`` says "more than ``cap``"): a bounded walk of index entries, no row read."""

    async def responses_containing(self, response_ids: Sequence[str], needles: Sequence[str], *,
                                   tenant: str, inputs: Sequence[str] = ()) -> set[str]:
        """Those of ``response_ids`` (``tenant``'s) whose stored JSON holds every one of ``needles`` (each text as
        :func:`as_stored` or :func:`whole_string` writes it), regardless of the case of ASCII letters (other letters
        as they are), on either store. Those of the needles also in ``inputs`` are found in the response's JSON or
        in any of its stored input items (the request's own words, which the response's JSON does not hold)."""

    async def response_json(self, response_id: str, *, tenant: str) -> bytes | None:
        """The stored JSON of ``tenant``'s response as it is stored, not parsed (the caller parses it where it
        chooses: off the event loop); None if unknown."""

    async def response_timing(self, response_id: str, *, tenant: str) -> bytes | None:
        """The stored timing document of ``tenant``'s response (store/timings.py), not parsed; None if unknown or
        not timed."""

    async def responses_json(self, response_ids: Sequence[str], *, tenant: str) -> list[tuple[str, bytes]]:
        """``(id, stored JSON)`` of those of ``response_ids`` that are ``tenant``'s, in one statement (the caller
        bounds their bytes by their sizes first)."""

    async def response_chain(self, response_id: str, *, tenant: str,
                             depth: int) -> list[tuple[str, str | None, int]]:
        """``(id, previous_response_id, stored bytes)`` from ``response_id`` back through ``tenant``'s chain, at
        most ``depth + 1`` responses, the response itself first; empty if it is unknown. A link that is not stored
        (deleted, another tenant's) ends the list: the last row's previous id names it."""

    async def item_sizes(self, response_id: str, kind: str, *, tenant: str, start: int,
                         limit: int) -> list[tuple[int, int]] | None:
        """``(position, stored bytes)`` of ``tenant``'s response's ``kind`` ('input'/'output') items from position
        ``start`` on, at most ``limit``, in order; None if the response is unknown."""

    async def items_json(self, response_id: str, kind: str, positions: Sequence[int], *,
                         tenant: str) -> list[tuple[int, bytes]]:
        """The stored JSON of those items, by position, in order (as stored, not parsed)."""


def as_stored(text: str) -> str:
    """What ``text`` looks like inside stored JSON: as a JSON string holds it (a quote or a newline escaped as the
    stored JSON escapes them), without the quotes around it."""
    return orjson.dumps(text).decode()[1:-1]


def whole_string(text: str) -> str:
    """What ``text`` looks like as a whole JSON string value (a tool's name) inside stored JSON."""
    return f'"{as_stored(text)}"'


def like_pattern(needle: str) -> str:
    """A ``LIKE`` pattern finding ``needle`` anywhere, ``LIKE``'s own wildcards escaped (with ESCAPE '\\')."""
    for special in (LIKE_ESCAPE, "%", "_"):
        needle = needle.replace(special, LIKE_ESCAPE + special)
    return f"%{needle}%"


def slowest_sql(where: ResponseFilter, by: str, sorted_by: str = "r") -> tuple[str, dict[str, object]]:
    """The conditions and parameters of :meth:`ResponseBrowser.slowest_sizes` (``:name`` parameters), the same on
    both stores: every filter of the listing (model, status, a time range, metadata pairs, the latter by ``EXISTS``
    in their own index) on the responses ``r``, the order on ``sorted_by``: the alias of the table whose index
    holds the column (``r`` itself on PostgreSQL; on SQLite the facts table, joined by rowid and id:
    store/sqlite/console/response_facts.py)."""
    column = SORTS[by]
    conditions = [f"{sorted_by}.tenant = :tenant", f"{sorted_by}.{column} IS NOT NULL"]
    if sorted_by != "r":
        conditions.append("r.tenant = :tenant")
    params: dict[str, object] = {}
    for name, test, value in (("model", "r.model =", where.model), ("status", "r.status =", where.status),
                              ("created_before", "r.created_at <", where.created_before),
                              ("created_after", "r.created_at >=", where.created_after),
                              ("key_id", "r.api_key_id =", where.key_id)):
        if value is not None:
            conditions.append(f"{test} :{name}")
            params[name] = value
    for n, (key, value) in enumerate(where.metadata):
        conditions.append(f"EXISTS (SELECT 1 FROM response_metadata WHERE response_id = r.id AND tenant = :tenant "
                          f"AND key = :mk{n} AND value = :mv{n})")
        params[f"mk{n}"], params[f"mv{n}"] = key, value
    return (f"WHERE {' AND '.join(conditions)} ORDER BY {sorted_by}.{column} DESC, {sorted_by}.id DESC "
            "LIMIT :fetch OFFSET :skip", params)
