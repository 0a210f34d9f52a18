"""A stored response's (or chat completion's) timing as columns, the same for every store (and, below, a
response's usage and API key id as columns, for the console's Usage): ``ttft_ms`` and
``latency_ms`` (what the console's Logs sorts and filters on, without reading a document) and ``timing``, the whole
document (observability/timing.py: ``[3, ttft ms, latency ms, …]``) as JSON. The store keeps it and reads it back;
it never interprets it beyond those two numbers."""

from __future__ import annotations

from contextvars import ContextVar
from typing import Any

import orjson

NO_TIMING: tuple[None, None, None] = (None, None, None)


def timing_columns(timing: Any) -> tuple[float | None, float | None, bytes | None]:
    """``(ttft_ms, latency_ms, timing)`` of a row; all None for a response nobody timed."""
    if not isinstance(timing, list) or len(timing) < 3:
        return NO_TIMING
    return timing[1], timing[2], orjson.dumps(timing)


def timing_document(blob: bytes | memoryview | None) -> Any:
    """A ``timing`` column read back (None: the row has none)."""
    if blob is None:
        return None
    return orjson.loads(bytes(blob))


# -- usage and API key columns -----------------------------------------------------------------------------------
"""A stored response's usage as columns, the same for every store, so the console's Usage page sums them in the
database (``GROUP BY``) instead of parsing every stored response of its window in Python (89 ms for a day's page
at 100,000 stored responses, most of it ``orjson.loads``).

``input_tokens`` are the uncached input tokens, ``cached_tokens`` the cached ones, ``output_tokens`` the output
ones, exactly as adapters/http/console/pricing.py's ``tokens()`` counts them (the Responses API's names or Chat
Completions'; cached clamped to the input); all three NULL when the response counts none (a failed or cancelled
response: counted as a request, never priced). ``total_tokens`` is the usage's own total, 0 without one.
"""

CALLER_KEY_ID: ContextVar[str | None] = ContextVar("caller_key_id", default=None)
"""The id of the API key (as ``keys list`` shows it, never the key) that made the request being served: set by the
identity when it resolves a key (services/tenancy/identity.py, either door), read once by a response's save
(``save_response`` without a ``key_id``), which stores it in the response's row for the console's Logs filter and
Usage by key. A context variable: the request's task and the tasks it starts (a background run) carry it, with no
argument threaded through the doors and the run, and nothing per chunk."""

NO_USAGE: tuple[None, None, None, int] = (None, None, None, 0)
_ABSENT = object()


def usage_columns(response: dict[str, Any]) -> tuple[int | None, int | None, int | None, int]:
    """``(input_tokens, cached_tokens, output_tokens, total_tokens)`` of a response about to be stored."""
    usage = response.get("usage")
    if not isinstance(usage, dict):
        return NO_USAGE
    total = usage.get("total_tokens")
    total = total if isinstance(total, int) else 0
    spent = counted_tokens(usage)
    return (None, None, None, total) if spent is None else (*spent, total)


def counted_tokens(usage: dict[str, Any]) -> tuple[int, int, int] | None:
    """``(uncached input, cached input, output)`` tokens of a usage object (the Responses API's names, or Chat
    Completions' ``prompt_tokens``/``completion_tokens``), None when it counts none."""
    given = usage.get("input_tokens", _ABSENT)  # the Chat Completions names asked for only when these are absent
    if given is _ABSENT:
        given = usage.get("prompt_tokens")
    output = usage.get("output_tokens", _ABSENT)
    if output is _ABSENT:
        output = usage.get("completion_tokens")
    if not isinstance(given, int) or not isinstance(output, int):
        return None
    details = usage.get("input_tokens_details", _ABSENT)
    if details is _ABSENT:
        details = usage.get("prompt_tokens_details")
    cached = details.get("cached_tokens") if isinstance(details, dict) else 0
    cached = min(max(cached, 0), given) if isinstance(cached, int) else 0
    return given - cached, cached, output


# The columns of the rows stored before them (SQLite migration 37, PostgreSQL 36), filled in once by the migration
# from each row's stored ``usage`` as usage_columns() fills them at save time: one statement reading the rows'
# JSON once (about a second per 100,000 rows), so Usage never has rows to parse later. Rows without a usage object
# keep NULLs, which Usage reads as no usage and no total.
SQLITE_USAGE_BACKFILL = """
UPDATE responses SET input_tokens = u.given - u.cached, cached_tokens = u.cached,
    output_tokens = iif(u.cached IS NULL, NULL, u.output), total_tokens = u.total
FROM (
    SELECT uid, output, total, given,
           iif(given IS NULL OR output IS NULL, NULL, max(0, min(cached, given))) AS cached
    FROM (
        SELECT uid,
            CASE WHEN json_type(j, '$.input_tokens') IS NOT NULL
                     THEN iif(json_type(j, '$.input_tokens') = 'integer', json_extract(j, '$.input_tokens'), NULL)
                 WHEN json_type(j, '$.prompt_tokens') = 'integer' THEN json_extract(j, '$.prompt_tokens') END
                AS given,
            CASE WHEN json_type(j, '$.output_tokens') IS NOT NULL
                     THEN iif(json_type(j, '$.output_tokens') = 'integer', json_extract(j, '$.output_tokens'), NULL)
                 WHEN json_type(j, '$.completion_tokens') = 'integer' THEN json_extract(j, '$.completion_tokens')
                 END AS output,
            CASE WHEN json_type(j, '$.input_tokens_details') IS NOT NULL
                     THEN iif(json_type(j, '$.input_tokens_details.cached_tokens') = 'integer',
                              json_extract(j, '$.input_tokens_details.cached_tokens'), 0)
                 WHEN json_type(j, '$.prompt_tokens_details.cached_tokens') = 'integer'
                     THEN json_extract(j, '$.prompt_tokens_details.cached_tokens')
                 ELSE 0 END AS cached,
            iif(json_type(j, '$.total_tokens') = 'integer', json_extract(j, '$.total_tokens'), 0) AS total
        FROM (SELECT id AS uid, json_extract(CAST(response AS TEXT), '$.usage') AS j FROM responses
              WHERE json_type(CAST(response AS TEXT), '$.usage') = 'object')
    )
) AS u
WHERE responses.id = u.uid
"""



def _pg_int(value: str) -> str:
    """A JSON value (``json``'s ``->``) as a bigint when it is a JSON integer, else NULL."""
    text = _as_text(value)
    return f"CASE WHEN json_typeof({value}) = 'number' AND {text} ~ '^-?[0-9]+$' THEN ({text})::bigint END"


def _as_text(value: str) -> str:
    """``j->'a'->'b'`` as text: its last ``->`` made ``->>``."""
    head, _, last = value.rpartition("->")
    return f"{head}->>{last}"


_GIVEN = f"""CASE WHEN j->'input_tokens' IS NOT NULL THEN {_pg_int("j->'input_tokens'")}
                 ELSE {_pg_int("j->'prompt_tokens'")} END"""
_OUTPUT = f"""CASE WHEN j->'output_tokens' IS NOT NULL THEN {_pg_int("j->'output_tokens'")}
                 ELSE {_pg_int("j->'completion_tokens'")} END"""
_CACHED = f"""CASE WHEN j->'input_tokens_details' IS NOT NULL
                     THEN coalesce({_pg_int("j->'input_tokens_details'->'cached_tokens'")}, 0)
                 ELSE coalesce({_pg_int("j->'prompt_tokens_details'->'cached_tokens'")}, 0) END"""
POSTGRES_USAGE_BACKFILL = f"""
UPDATE responses AS r SET input_tokens = u.given - u.cached, cached_tokens = u.cached,
    output_tokens = CASE WHEN u.cached IS NULL THEN NULL ELSE u.output END, total_tokens = u.total
FROM (
    SELECT uid, output, total, given,
           CASE WHEN given IS NULL OR output IS NULL THEN NULL ELSE greatest(0, least(cached, given)) END AS cached
    FROM (
        SELECT uid, {_GIVEN} AS given, {_OUTPUT} AS output, {_CACHED} AS cached,
               coalesce({_pg_int("j->'total_tokens'")}, 0) AS total
        FROM (SELECT id AS uid, convert_from(response, 'UTF8')::json->'usage' AS j FROM responses) AS s
        WHERE json_typeof(j) = 'object'
    ) AS t
) AS u
WHERE r.id = u.uid
"""
