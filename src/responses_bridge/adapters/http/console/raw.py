"""An object's raw JSON, for a developer to read and copy: the stored JSON indented, with every credential masked and
sealed state left out as every page of the console does (items.py's :func:`pretty`), cut at :data:`RAW_CHARS` (the
API answers all of it: the page says which call)."""

from __future__ import annotations

from dataclasses import dataclass

import orjson

from .items import blocks_up_to, pretty

RAW_CHARS = 1_000_000


@dataclass(slots=True)
class Raw:
    text: str
    cut: bool


def shown(stored: bytes) -> Raw:
    """In a worker thread: the stored JSON parsed, masked, indented and bounded."""
    with blocks_up_to(RAW_CHARS + 1):
        text = pretty(orjson.loads(stored))
    cut = len(text) > RAW_CHARS
    return Raw(text[:RAW_CHARS] if cut else text, cut)
