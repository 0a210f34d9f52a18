"""Automatic compaction: ``context_management: [{"type": "compaction", "compact_threshold": N}]``.

When a turn's Chat Completions body weighs more than ``N`` tokens (counted as ``/responses/input_tokens`` counts
offline: engine/chat_tokens.py), the run makes one summarising call before it, and the response gets a
``compaction`` output item (``response.compaction.compacting``, then ``output_item.added``/``.done``). The turn is
then sent with the summary in place of what it replaced. Two places it can happen:

* **before the first turn** (:func:`split_items`): the context is items (history + input). The trailing user
  messages and what follows the last of them stay plain; everything before is summarised. The turn is rebuilt
  from ``[summary message, kept items…]``.
* **between turns of a tool loop** (:func:`split_messages`): the context is the turn's chat messages. The leading
  system messages, the last user message and the last turn (the assistant's calls and their results) stay plain;
  the messages between are summarised.

Unlike the item ``POST /v1/responses/compact`` returns (which stands for the summarised part only, with the kept
messages beside it), an automatic compaction item stands for *everything before it*: its sealed blob carries the
kept items too (``"kept"``), and compaction.py's ``expand_context`` drops every item before the last such
item when a later turn of the chain or conversation is translated. So later turns send the compacted context
upstream, not the whole history, while the stored history stays whole.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from ...protocol.errors import APIError
from ...protocol.responses.request import ResponsesRequest
from ..options import EngineOptions

WINDOW_SHARE = 0.8
"""Without a ``compact_threshold`` the threshold is this share of the deployment's declared ``context_window``."""


def threshold(request: ResponsesRequest, options: EngineOptions) -> int | None:
    """The request's compaction threshold in tokens; None when it asks for no compaction. A compaction entry
    without a threshold takes :data:`WINDOW_SHARE` of the declared context window, and is a 400 when none is
    declared (compacting at a guessed size would be silently wrong)."""
    entries = request.params.context_management
    if not entries:
        return None
    given = entries[0].compact_threshold
    if given is not None:
        return given
    if options.context_window is not None:
        return max(1, int(options.context_window * WINDOW_SHARE))
    raise APIError(400, "'compact_threshold' is required: this deployment declares no context window to derive "
                   "it from (RESPONSES_BRIDGE_CONTEXT_WINDOW).", param="context_management[0].compact_threshold",
                   code="missing_required_parameter")


def _is_user_message(item: dict[str, Any]) -> bool:
    return item.get("type") == "message" and item.get("role") == "user"


def split_items(items: list[dict[str, Any]]) -> tuple[list[dict[str, Any]], list[dict[str, Any]]] | None:
    """``(summarised, kept)``: kept is the run of user messages that ends at the last user message and everything
    after it (a client tool's call and output stay with the question they answer); summarised is all before.
    None when nothing would be summarised."""
    last = max((i for i, item in enumerate(items) if _is_user_message(item)), default=None)
    if last is None:
        return None
    start = last
    while start > 0 and _is_user_message(items[start - 1]):
        start -= 1
    if start == 0:
        return None
    return items[:start], items[start:]


def last_user_item(items: list[dict[str, Any]]) -> dict[str, Any] | None:
    return next((item for item in reversed(items) if _is_user_message(item)), None)


@dataclass(slots=True)
class MessageSplit:
    """A tool loop's chat messages cut for compaction (see :func:`split_messages`)."""

    head: list[dict[str, Any]]  # the leading system / developer messages
    middle: list[dict[str, Any]]  # summarised
    last_user: dict[str, Any] | None  # kept plain, with the summary folded in front of it
    tail: list[dict[str, Any]] = field(default_factory=list)  # the last turn: assistant calls, their results


def split_messages(messages: list[dict[str, Any]]) -> MessageSplit | None:
    """None when nothing lies between the head, the last user message and the last turn."""
    head_end = 0
    while head_end < len(messages) and messages[head_end].get("role") in ("system", "developer"):
        head_end += 1
    tail_start = next((i for i in range(len(messages) - 1, head_end - 1, -1)
                       if messages[i].get("role") == "assistant"), len(messages))
    user_index = next((i for i in range(tail_start - 1, head_end - 1, -1) if messages[i].get("role") == "user"),
                      None)
    middle = [m for i, m in enumerate(messages[head_end:tail_start], head_end) if i != user_index]
    if not middle:
        return None
    return MessageSplit(messages[:head_end], middle, messages[user_index] if user_index is not None else None,
                        messages[tail_start:])


def compacted_messages(split: MessageSplit, summary_text: str) -> list[dict[str, Any]]:
    """The loop's messages after compaction: head, one user message (the summary, then the last user message's
    own content: one message, so no backend sees two user turns in a row), the last turn."""
    user = split.last_user
    content: Any = summary_text
    if user is not None:
        own = user.get("content")
        if isinstance(own, list):
            content = [{"type": "text", "text": summary_text + "\n\n"}, *own]
        elif own:
            content = f"{summary_text}\n\n{own}"
    return [*split.head, {"role": "user", "content": content}, *split.tail]


@dataclass(slots=True)
class PendingCompaction:
    """A summarising call under way: the item it will make, the items it keeps plain, how many it replaces, and
    for a tool loop's turn, how its messages were cut."""

    item_id: str
    kept: list[dict[str, Any]]
    replaced: int
    split: MessageSplit | None = None
