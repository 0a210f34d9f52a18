"""What one upstream turn of the tool loop produced, and the usage of several turns summed.

Kept apart from the output builder (which makes them) so that the run and engine/responses/turns.py read them without
the per-chunk machinery.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from .tools import CallTarget

TURN_MARK = "turn"
"""Marks the id of a call item that continues a model turn after a call whose item holds its result (an MCP call, a
search, the code: server.ITEM_ID_CALLS): ``<prefix>_turn<hex>`` where the bridge's ids are ``<prefix>_<hex>``. Stored
output is a flat list of items, and such an item alone does not say whether the call after it was made in the same
turn (one assistant message carrying both calls, their results after it) or in the next (the first call answered
before the second was made). History reads the mark (request_translation.items_to_messages) and shows the turn as
the model made it and as the tool loop sent it back, so a chained turn's prompt extends the loop's exactly. The
mark lives in the id the item already has (as programs.py marks a program's calls): no field is added to an item,
and a client that replays the items (``store: false``) carries it too. An item without it replays as before."""


def turn_continued_id(item_id: str) -> str:
    """``item_id`` marked as continuing its turn (:data:`TURN_MARK`)."""
    prefix, _, rest = item_id.partition("_")
    return f"{prefix}_{TURN_MARK}{rest}"


def continues_turn(item: dict[str, Any]) -> bool:
    """Was this call item made in the same model turn as the call item before it (:data:`TURN_MARK`)?"""
    value = item.get("id")
    return isinstance(value, str) and value.partition("_")[2].startswith(TURN_MARK)


@dataclass(slots=True)
class TurnCall:
    """One tool call the model made in a turn. ``name`` and ``call_id`` are the upstream's (what the follow-up
    turn's assistant message repeats); ``target`` is None for a plain client function; ``status`` is
    ``incomplete`` when the turn was cut short (such a call is never run)."""

    call_id: str
    name: str
    arguments: str
    target: CallTarget | None
    output_index: int
    item: dict[str, Any]
    status: str

    @property
    def server(self) -> bool:
        """Does the bridge run this call (MCP, web search, server tool search)?"""
        return self.target is not None and self.target.server


@dataclass(slots=True)
class TurnResult:
    """What one upstream turn produced: its calls in output order, the assistant message that repeats the turn
    to the upstream (text and every tool call), and the turn's ``finish_reason``."""

    calls: list[TurnCall]
    message: dict[str, Any]
    finish_reason: str | None

    @property
    def server_calls(self) -> list[TurnCall]:
        return [call for call in self.calls if call.server]

    @property
    def client_calls(self) -> list[TurnCall]:
        return [call for call in self.calls if not call.server]


def add_usage(first: dict[str, Any] | None, second: dict[str, Any] | None) -> dict[str, Any] | None:
    """Two Chat Completions ``usage`` objects summed (tokens, cached prompt tokens, reasoning tokens)."""
    if not first:
        return second or None
    if not second:
        return first

    def count(usage: dict[str, Any], key: str, detail: str | None = None) -> int:
        value = usage.get(key) if detail is None else (usage.get(key) or {}).get(detail)
        return value if isinstance(value, int) else 0

    prompt = count(first, "prompt_tokens") + count(second, "prompt_tokens")
    completion = count(first, "completion_tokens") + count(second, "completion_tokens")
    total = (count(first, "total_tokens") or count(first, "prompt_tokens") + count(first, "completion_tokens")) + \
        (count(second, "total_tokens") or count(second, "prompt_tokens") + count(second, "completion_tokens"))
    return {"prompt_tokens": prompt, "completion_tokens": completion, "total_tokens": total,
            "prompt_tokens_details": {detail: count(first, "prompt_tokens_details", detail)
                                      + count(second, "prompt_tokens_details", detail)
                                      for detail in ("cached_tokens", "cache_write_tokens")},
            "completion_tokens_details": {
                "reasoning_tokens": count(first, "completion_tokens_details", "reasoning_tokens")
                + count(second, "completion_tokens_details", "reasoning_tokens")}}
