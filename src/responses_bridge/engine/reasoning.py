"""Reasoning a client carries for us: ``include: ["reasoning.encrypted_content"]``.

Stateless clients (Codex sends ``store: false`` and resends the whole history every turn) ask for reasoning items
with ``encrypted_content``: the reasoning sealed with the deployment's key (:mod:`responses_bridge.sealing`,
purpose ``reasoning``), opaque to the client. When the client sends such an item back, the blob is opened and its
text becomes the item's ``content`` again, so the history forwarded upstream carries it exactly as a stored
response would (``EngineOptions.reasoning_history`` then decides whether the upstream sees it). A blob that was
altered or sealed by another deployment is a 400 naming the input item, never a crash.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from ..sealing import Sealer

PURPOSE = "reasoning"
INCLUDE = "reasoning.encrypted_content"
SUMMARY_MODES = frozenset({"auto", "concise", "detailed"})


def wants_encrypted(include: list[str] | None) -> bool:
    return bool(include) and INCLUDE in include  # type: ignore[operator]


def wants_summary(reasoning: Any) -> bool:
    """``reasoning.summary`` (or the older ``generate_summary``) asks for summary parts."""
    if reasoning is None:
        return False
    return (reasoning.summary or reasoning.generate_summary) in SUMMARY_MODES


def sealer_for_items(sealer: Sealer) -> Callable[[dict[str, Any]], str]:
    """What the output builder calls on each finished reasoning item."""

    def seal(item: dict[str, Any]) -> str:
        text = "".join(part.get("text", "") for part in item.get("content") or ())
        return sealer.seal(PURPOSE, {"v": 1, "text": text})

    return seal


def unseal_input(items: list[dict[str, Any]], sealer: Sealer | None) -> None:
    """Give every input reasoning item that carries one of our blobs its text back, in ``items``: the item replaced
    by a copy with its text, never changed in place (it may be the history's own, named by an ``item_reference``:
    protocol/responses/item_references.py)."""
    for index, item in enumerate(items):
        if item.get("type") != "reasoning" or "encrypted_content" not in item:
            continue
        if sealer is None:
            continue
        opened = sealer.open(PURPOSE, item["encrypted_content"], param=f"input[{index}].encrypted_content")
        text = opened.get("text") if isinstance(opened, dict) else None
        if isinstance(text, str) and not item.get("content"):
            items[index] = {**item, "content": [{"type": "reasoning_text", "text": text}]}
