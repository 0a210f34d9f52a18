"""Compaction items in input: the sealed summary a ``POST /v1/responses/compact`` made, opened back into context.

A compaction item is ``{"type": "compaction", "id", "encrypted_content"}``; the blob is sealed by this deployment
(purpose ``"compaction"``) over ``{"v": 1, "summary": ..., "model": ..., "items": N}``. In a request it stands for
the conversation it replaced, so before translation it becomes one user message carrying the summary. A blob
that was altered or sealed elsewhere is a 400 naming the item.

The summarising call itself is built here too (:func:`summary_request`), for ``POST /v1/responses/compact``
and for a ``compaction_trigger`` input item on ``POST /v1/responses`` (Codex's remote compaction): both seal
the same blob (:func:`seal_summary`).

An automatic compaction (auto_compaction.py) seals the items it kept plain as well (``"kept"``): such an
item stands for everything before it, so :func:`expand_context` drops what precedes it.
"""

from __future__ import annotations

import time
from typing import Any

from ...protocol.errors import APIError
from ...sealing import Sealer
from ..options import EngineOptions
from .request_translation import items_to_messages

PURPOSE = "compaction"
SUMMARY_PREFIX = "Summary of the earlier conversation (compacted):\n"


SUMMARY_INSTRUCTIONS = (
    "You compact conversations. Summarise the conversation transcript the user sends so that an assistant can "
    "continue it without the original: keep every fact, name, number, decision, user preference, tool call and "
    "tool result that may matter later, and the open questions or tasks. Write plain prose or short bullet "
    "points, in the conversation's language. Output only the summary."
)


def transcript(messages: list[dict[str, Any]]) -> str:
    lines: list[str] = []
    for message in messages:
        role = message.get("role", "user")
        content = message.get("content")
        if isinstance(content, list):
            content = " ".join(part.get("text", "") if part.get("type") == "text" else f"[{part.get('type')}]"
                               for part in content if isinstance(part, dict))
        if content:
            label = f"tool result ({message.get('tool_call_id', '')})" if role == "tool" else role
            lines.append(f"{label}: {content}")
        for call in message.get("tool_calls") or ():
            function = call.get("function") or {}
            lines.append(f"{role} called tool {function.get('name')}({function.get('arguments', '')}) "
                         f"[call id {call.get('id')}]")
    return "\n".join(lines)


def summary_request(items: list[dict[str, Any]], model: str, options: EngineOptions) -> dict[str, Any]:
    """The Chat Completions body (non-streamed) that summarises ``items`` (compaction items already expanded)."""
    messages: list[dict[str, Any]] = []
    items_to_messages(items, messages, options)
    return summary_request_of_messages(messages, model, options)


def summary_request_of_messages(messages: list[dict[str, Any]], model: str, options: EngineOptions) -> dict[str, Any]:
    """The summarising call over chat messages (a tool loop's, mid-response)."""
    return {"model": options.upstream_model or model, "messages": [
        {"role": "system", "content": SUMMARY_INSTRUCTIONS},
        {"role": "user", "content": "Conversation transcript:\n\n" + transcript(messages)},
    ]}


def seal_summary(sealer: Sealer, summary: str, model: str, items: int,
                 kept: list[dict[str, Any]] | None = None) -> str:
    """``kept``: an automatic compaction's plain items; the item then stands for everything before it."""
    value: dict[str, Any] = {"v": 1, "summary": summary, "model": model, "items": items,
                             "created_at": int(time.time())}
    if kept is not None:
        value["kept"] = kept
    return sealer.seal(PURPOSE, value)


def has_trigger(items: list[dict[str, Any]]) -> bool:
    return any(item.get("type") == "compaction_trigger" for item in items)


def check_trigger(items: list[dict[str, Any]]) -> None:
    """A ``compaction_trigger`` asks for the whole conversation before it to be compacted: it must come last."""
    for index, item in enumerate(items[:-1]):
        if item.get("type") == "compaction_trigger":
            raise APIError(400, "A compaction_trigger item must be the last input item.",
                           param=f"input[{index}]", code="invalid_value")


def summary_message(item_id: str, summary: str) -> dict[str, Any]:
    return {"type": "message", "id": item_id, "status": "completed", "role": "user",
            "content": [{"type": "input_text", "text": SUMMARY_PREFIX + summary}]}


def open_summary(sealer: Sealer | None, blob: Any, param: str) -> tuple[str, list[dict[str, Any]] | None]:
    """The summary, and the kept items of an automatic compaction (None for any other)."""
    if sealer is None:
        raise APIError(400, "Compaction items cannot be opened by this deployment.", param=param,
                       code="invalid_encrypted_content")
    value = sealer.open(PURPOSE, blob, param=param)
    summary = value.get("summary") if isinstance(value, dict) else None
    kept = value.get("kept") if isinstance(value, dict) else None
    kept_ok = kept is None or (isinstance(kept, list) and all(isinstance(item, dict) for item in kept))
    if not isinstance(summary, str) or not kept_ok:
        raise APIError(400, "The compaction item's content is not a summary.", param=param,
                       code="invalid_encrypted_content")
    return summary, kept


def expand(items: list[dict[str, Any]], sealer: Sealer | None,
           param_prefix: str = "input") -> tuple[list[dict[str, Any]], bool]:
    """``items`` with every compaction item replaced by its summary message (the same list when there is none),
    and whether an automatic compaction was among them: then the list starts at the last one (its summary and
    kept items), as that item stands for everything before it."""
    if not any(item.get("type") == "compaction" for item in items):
        return items, False
    out: list[dict[str, Any]] = []
    whole = False
    for index, item in enumerate(items):
        if item.get("type") == "compaction":
            param = f"{param_prefix}[{index}].encrypted_content"
            summary, kept = open_summary(sealer, item.get("encrypted_content"), param)
            message = summary_message(item.get("id") or "", summary)
            if kept is not None:
                out, whole = [message, *kept], True
            else:
                out.append(message)
        else:
            out.append(item)
    return out, whole


def expand_context(history: list[dict[str, Any]], items: list[dict[str, Any]],
                   sealer: Sealer | None) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """History and input with their compaction items opened; an automatic compaction in the input replaces the
    whole history too."""
    history, _ = expand(history, sealer, "history")
    items, whole = expand(items, sealer)
    return ([] if whole else history), items
