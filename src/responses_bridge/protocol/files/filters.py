"""Attribute filters of vector store search and the ``file_search`` tool, as OpenAI defines them.

A comparison ``{"type": "eq"|"ne"|"gt"|"gte"|"lt"|"lte"|"in"|"nin", "key": str, "value": ...}`` tests one
attribute of a file; a compound ``{"type": "and"|"or", "filters": [...]}`` joins filters (nested too). Values are
strings, numbers or booleans (``in``/``nin``: a non-empty array of strings or numbers). Everything is checked when
the request is parsed, so evaluating a parsed filter cannot fail: a bad filter is a 400 naming ``param``.

Comparisons are type-strict: a boolean never equals a number, a string is never greater than a number. A
comparison over an attribute the file lacks is false, except ``ne`` and ``nin``, which are true (the attribute is
not that value).
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, TypeAlias

from ..errors import invalid_request

COMPARISONS = frozenset({"eq", "ne", "gt", "gte", "lt", "lte", "in", "nin"})
COMPOUNDS = frozenset({"and", "or"})
MAX_DEPTH = 8
MAX_NODES = 256

Scalar: TypeAlias = str | int | float | bool


@dataclass(frozen=True, slots=True)
class Comparison:
    type: str
    key: str
    value: Scalar | tuple[str | int | float, ...]


@dataclass(frozen=True, slots=True)
class CompoundFilter:
    type: str
    filters: tuple[Filter, ...]


Filter: TypeAlias = Comparison | CompoundFilter


def parse_filters(value: object, *, param: str = "filters") -> Filter:
    """The parsed filter; a 400 naming ``param`` (with the path inside it) for anything malformed."""
    budget = [MAX_NODES]
    return _parse(value, param, 0, budget)


def _fail(message: str, param: str) -> Exception:
    return invalid_request(message, param=param)


def _parse(value: object, param: str, depth: int, budget: list[int]) -> Filter:
    budget[0] -= 1
    if budget[0] < 0:
        raise _fail(f"Filters may hold at most {MAX_NODES} conditions.", param)
    if not isinstance(value, dict):
        raise _fail(f"'{param}' must be an object.", param)
    kind = value.get("type")
    if not isinstance(kind, str) or kind not in COMPARISONS | COMPOUNDS:
        raise _fail(f"'{param}.type' must be one of {', '.join(sorted(COMPARISONS | COMPOUNDS))}.", f"{param}.type")
    if kind in COMPOUNDS:
        return _compound(value, kind, param, depth, budget)
    unknown = set(value) - {"type", "key", "value"}
    if unknown:
        raise _fail(f"Unknown field '{sorted(unknown)[0]}' in '{param}'.", param)
    key = value.get("key")
    if not isinstance(key, str) or not key:
        raise _fail(f"'{param}.key' must be a non-empty string.", f"{param}.key")
    if "value" not in value:
        raise _fail(f"'{param}.value' is required.", f"{param}.value")
    return Comparison(kind, key, _value(kind, value["value"], f"{param}.value"))


def _compound(value: Mapping[str, Any], kind: str, param: str, depth: int, budget: list[int]) -> CompoundFilter:
    unknown = set(value) - {"type", "filters"}
    if unknown:
        raise _fail(f"Unknown field '{sorted(unknown)[0]}' in '{param}'.", param)
    if depth >= MAX_DEPTH:
        raise _fail(f"Filters may nest at most {MAX_DEPTH} levels deep.", param)
    filters = value.get("filters")
    if not isinstance(filters, list) or not filters:
        raise _fail(f"'{param}.filters' must be a non-empty array.", f"{param}.filters")
    return CompoundFilter(kind, tuple(_parse(item, f"{param}.filters[{index}]", depth + 1, budget)
                                      for index, item in enumerate(filters)))


def _is_number(value: object) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool) and math.isfinite(value)


def _value(kind: str, value: object, param: str) -> Scalar | tuple[str | int | float, ...]:
    if kind in ("in", "nin"):
        if not isinstance(value, list) or not value:
            raise _fail(f"'{param}' must be a non-empty array for '{kind}'.", param)
        for item in value:
            if not (isinstance(item, str) or _is_number(item)):
                raise _fail(f"'{param}' items must be strings or numbers.", param)
        return tuple(value)
    if kind in ("gt", "gte", "lt", "lte"):
        if not (isinstance(value, str) or _is_number(value)):
            raise _fail(f"'{param}' must be a number or a string for '{kind}'.", param)
        return value  # type: ignore[return-value]  # str or a finite number, checked above
    if isinstance(value, bool | str) or _is_number(value):
        return value  # type: ignore[return-value]
    raise _fail(f"'{param}' must be a string, number or boolean.", param)


def _same_kind(a: object, b: object) -> bool:
    if isinstance(a, bool) or isinstance(b, bool):
        return isinstance(a, bool) and isinstance(b, bool)
    if isinstance(a, str) or isinstance(b, str):
        return isinstance(a, str) and isinstance(b, str)
    return _is_number(a) and _is_number(b)


def _equal(a: object, b: object) -> bool:
    return _same_kind(a, b) and a == b


def matches(filter_: Filter, attributes: Mapping[str, Any]) -> bool:
    """Whether a file with ``attributes`` passes ``filter_``."""
    if isinstance(filter_, CompoundFilter):
        if filter_.type == "and":
            return all(matches(item, attributes) for item in filter_.filters)
        return any(matches(item, attributes) for item in filter_.filters)
    kind, wanted = filter_.type, filter_.value
    if filter_.key not in attributes:
        return kind in ("ne", "nin")
    actual = attributes[filter_.key]
    if kind == "eq":
        return _equal(actual, wanted)
    if kind == "ne":
        return not _equal(actual, wanted)
    if kind in ("in", "nin"):
        assert isinstance(wanted, tuple)
        found = any(_equal(actual, item) for item in wanted)
        return found if kind == "in" else not found
    if not _same_kind(actual, wanted) or isinstance(actual, bool):
        return False
    if kind == "gt":
        return bool(actual > wanted)
    if kind == "gte":
        return bool(actual >= wanted)
    if kind == "lt":
        return bool(actual < wanted)
    return bool(actual <= wanted)
