"""Compaction items in input: the sealed summary a ``POST /v1/responses/compact`` made, opened back into context.

A compaction item is ``{"type": "compaction", "id", "encrypted_content"}``; the blob is sealed by this deployment
(purpose ``"compaction"``) over ``{"v": 1, "summary": ..., "model": ..., "items": N}``. In a request it stands for
the conversation it replaced, so before translation it becomes one user message carrying the summary. A blob
that was altered or sealed elsewhere is a 400 naming the item.
"""

from __future__ import annotations

from typing import Any

from ..protocol.errors import APIError
from ..sealing import Sealer

PURPOSE = "compaction"
SUMMARY_PREFIX = "Summary of the earlier conversation (compacted):\n"


def summary_message(item_id: str, summary: str) -> dict[str, Any]:
    return {"type": "message", "id": item_id, "status": "completed", "role": "user",
            "content": [{"type": "input_text", "text": SUMMARY_PREFIX + summary}]}


def open_summary(sealer: Sealer | None, blob: Any, param: str) -> str:
    if sealer is None:
        raise APIError(400, "Compaction items cannot be opened by this deployment.", param=param,
                       code="invalid_encrypted_content")
    value = sealer.open(PURPOSE, blob, param=param)
    summary = value.get("summary") if isinstance(value, dict) else None
    if not isinstance(summary, str):
        raise APIError(400, "The compaction item's content is not a summary.", param=param,
                       code="invalid_encrypted_content")
    return summary


def expand(items: list[dict[str, Any]], sealer: Sealer | None, param_prefix: str = "input") -> list[dict[str, Any]]:
    """``items`` with every compaction item replaced by its summary message; the same list when there is none."""
    if not any(item.get("type") == "compaction" for item in items):
        return items
    out: list[dict[str, Any]] = []
    for index, item in enumerate(items):
        if item.get("type") == "compaction":
            param = f"{param_prefix}[{index}].encrypted_content"
            out.append(summary_message(item.get("id") or "", open_summary(sealer, item.get("encrypted_content"),
                                                                         param)))
        else:
            out.append(item)
    return out
