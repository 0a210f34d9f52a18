"""``truncation``: what to do when the conversation is longer than the model's context.

``"disabled"`` (the default): an upstream context-length error becomes the client's 400
``context_length_exceeded`` (``param: input``), whatever words the backend used for it. ``"auto"``: the oldest
conversation is dropped and the call is made once more; also before the first call when the deployment
declares its context window (``RESPONSES_BRIDGE_CONTEXT_WINDOW``) and the request would not fit.

What is dropped works on the Chat Completions messages, oldest first, in whole units: a message, or an assistant
message with tool calls together with the tool messages that answer them (a call is never separated from its
output). System and developer messages (the instructions) and the last unit (the newest input item) are never
dropped. Sizes are estimated from the JSON bytes (about four per token): cheap, and only computed when a
request has to shrink.
"""

from __future__ import annotations

import re
from typing import Any

import orjson

BYTES_PER_TOKEN = 4
_MARKERS = (
    "context_length_exceeded",  # OpenAI's code
    "maximum context length",  # OpenAI's and vLLM's message
    "maximum model length",  # vLLM: "The prompt (total length N) is longer than the maximum model length of M"
    "context length",  # Ollama: "the input length exceeds the context length"
    "context window",  # "exceeds the context window"
    "exceed_context_size",  # llama.cpp's error type
    "available context size",  # llama.cpp: "the request exceeds the available context size"
    "prompt is too long",
)
_LIMIT = re.compile(r"(?:maximum context length|maximum model length|context window|context length|context size)"
                    r"\D{0,40}?(\d+)", re.IGNORECASE)
_REQUESTED = re.compile(r"(?:requested|total length|prompt contains|resulted in|n_prompt_tokens)\D{0,40}?(\d+)",
                        re.IGNORECASE)
_PROTECTED_ROLES = frozenset({"system", "developer"})


def is_context_length_error(status: int, *texts: Any) -> bool:
    """Does an upstream error answer say the prompt is longer than the model's context?"""
    if status not in (400, 413, 422):
        return False
    text = " ".join(str(value) for value in texts if value).lower()
    return any(marker in text for marker in _MARKERS)


def shrink_ratio(message: str) -> float:
    """The share of the prompt to keep, from the numbers in the error (``limit / requested``), with a margin;
    half when the error does not say."""
    limit, requested = _LIMIT.search(message), _REQUESTED.search(message)
    if limit and requested:
        low, high = int(limit.group(1)), int(requested.group(1))
        if 0 < low < high:
            return low / high * 0.9
    return 0.5


def size_of(messages: list[dict[str, Any]]) -> int:
    return len(orjson.dumps(messages))


def _units(messages: list[dict[str, Any]]) -> list[tuple[int, int]]:
    units: list[tuple[int, int]] = []
    for index, message in enumerate(messages):
        if message.get("role") == "tool" and units:
            start, _ = units[-1]
            units[-1] = (start, index + 1)  # an answer stays with its call
        else:
            units.append((index, index + 1))
    return units


def drop_oldest(messages: list[dict[str, Any]], target_bytes: int) -> list[dict[str, Any]] | None:
    """``messages`` without their oldest droppable units, until their JSON is at most ``target_bytes`` (or
    nothing more may go); None when nothing could be dropped."""
    units = _units(messages)
    sizes = [size_of(messages[start:end]) for start, end in units]
    total = sum(sizes)
    last = len(units) - 1
    dropped: set[int] = set()
    for index, (start, end) in enumerate(units):
        if total <= target_bytes:
            break
        if index == last or any(message.get("role") in _PROTECTED_ROLES for message in messages[start:end]):
            continue
        dropped.add(index)
        total -= sizes[index]
    if not dropped:
        return None
    return [message for index, (start, end) in enumerate(units) if index not in dropped
            for message in messages[start:end]]


def fit_window(messages: list[dict[str, Any]], body_bytes: int, window_tokens: int,
               max_output_tokens: int | None) -> list[dict[str, Any]] | None:
    """With a declared context window: the messages that fit it, or None when they fit already (or cannot
    shrink). ``body_bytes`` is the size of the serialised request, so a request that fits costs nothing more."""
    budget = (window_tokens - (max_output_tokens or 0)) * BYTES_PER_TOKEN
    if body_bytes <= budget:
        return None
    overhead = body_bytes - size_of(messages)  # tools, parameters: they stay
    return drop_oldest(messages, max(budget - overhead, 0))
