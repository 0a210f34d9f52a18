"""OpenAI's list body, built one way: ``{"object": "list", "data", "first_id", "last_id", "has_more"}``."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any


def list_body(data: Sequence[Any], *, has_more: bool, first_id: str | None, last_id: str | None) -> dict[str, Any]:
    return {"object": "list", "data": data, "first_id": first_id, "last_id": last_id, "has_more": has_more}


def list_of(data: Sequence[Any], *, has_more: bool,
            id_of: Callable[[Any], str | None] = lambda entry: entry["id"]) -> dict[str, Any]:
    """The list body of ``data``, its first and last ids read with ``id_of`` (an entry's ``id`` by default)."""
    return list_body(data, has_more=has_more, first_id=id_of(data[0]) if data else None,
                     last_id=id_of(data[-1]) if data else None)
