"""The fake upstream's reading of message texts: their words, pieces and counts (prompt tokens, answers
split into chunks)."""

from __future__ import annotations

import re
from typing import Any

_WORD_PIECE_RE = re.compile(r"\s*\S+\s*")


def _is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _is_number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def _content_text(content: Any) -> str:
    """Joins the text a message carries, whether content is a string or a list of parts."""
    if isinstance(content, str):
        return content
    if isinstance(content, list):
        return "".join(
            part["text"] for part in content
            if isinstance(part, dict) and part.get("type") == "text" and isinstance(part.get("text"), str)
        )
    return ""


def _word_count(text: str) -> int:
    return len(text.split())


def _word_pieces(text: str) -> list[str]:
    """Splits into per-word pieces that keep their whitespace, so joining them restores the text."""
    pieces = _WORD_PIECE_RE.findall(text)
    return pieces if pieces else ([text] if text else [])


def _group(pieces: list[str], n: int) -> list[str]:
    """Merges pieces into exactly n chunks (when there are at least n), sizes as even as possible."""
    if n >= len(pieces):
        return pieces
    size, extra = divmod(len(pieces), n)
    out, start = [], 0
    for i in range(n):
        end = start + size + (1 if i < extra else 0)
        out.append("".join(pieces[start:end]))
        start = end
    return out


def _first_words(text: str, k: int) -> str:
    return "".join(_word_pieces(text)[:k]).rstrip()
