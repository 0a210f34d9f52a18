"""What one upstream turn of the tool loop produced, and the usage of several turns summed.

Kept apart from the output builder (which makes them) so that the run and engine/responses/turns.py read them without
the per-chunk machinery.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from .server import ITEM_ID_CALLS
from .tools import CallTarget


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
    resumed_inline: frozenset[str] = frozenset()  # a resumed turn (no calls): its ``inline`` ids, from its record

    @property
    def inline(self) -> frozenset[str]:
        """The ids of the calls whose results history shows right after each of them (an MCP call, a search, the
        code: one item holds call and result, server.ITEM_ID_CALLS); the next turn shows them so too."""
        if not self.calls:
            return self.resumed_inline
        return frozenset(call.call_id for call in self.calls if call.item.get("type") in ITEM_ID_CALLS)

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
