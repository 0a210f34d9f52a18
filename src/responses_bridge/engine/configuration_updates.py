"""What ``configuration_update`` items (protocol/responses/configuration_items.py) leave in effect for a turn: the
latest reasoning effort and the latest text format any of them set, over the chain's or conversation's history and the
request's input, in order. Each setting stays until a later update sets it again; an update wins over the
request's own ``reasoning.effort`` / ``text.format``, as it is what the conversation last asked for."""

from __future__ import annotations

from typing import Any

UNSET: Any = object()


def configured(*item_lists: list[dict[str, Any]]) -> tuple[Any, Any]:
    """(effort, text format) the updates leave in effect; :data:`UNSET` for a setting no update touched (an
    effort of None is a setting: the upstream's default)."""
    effort: Any = UNSET
    fmt: Any = UNSET
    for items in item_lists:
        for item in items:
            if item.get("type") != "configuration_update":
                continue
            if isinstance(item.get("reasoning"), dict):
                effort = item["reasoning"].get("effort")
            if isinstance(item.get("text"), dict) and isinstance(item["text"].get("format"), dict):
                fmt = item["text"]["format"]
    return effort, fmt
