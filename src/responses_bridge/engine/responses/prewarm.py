"""``prompt_cache_options.prewarm``: a request that only warms the backend's prompt cache.

OpenAI's prewarm "prepares the prompt cache without generating output": the prompt is read (prefilled) so a later
request with the same prefix finds it cached, and the answer is a ``completed`` response with no output. A Chat
Completions backend has no such switch, so the bridge sends the turn exactly as it would (same messages, tools
and options: the same prefix, hence the same cache entries — vLLM's automatic prefix caching, llama.cpp's slot
cache, OpenAI's own) with the smallest answer a backend allows, ``max_tokens: 1``, not streamed, and keeps nothing
of that answer but its usage. The response's ``usage`` is what the backend counted (its one output token
included: the backend did make it), its ``output`` empty; no tool runs, no second turn.
"""

from __future__ import annotations

from typing import Any

from ...protocol.responses.request import CreateParams

MAX_TOKENS_FIELDS = ("max_tokens", "max_completion_tokens")


def wanted(params: CreateParams) -> bool:
    """Did the request ask for a prewarm (``prompt_cache_options.prewarm: true``)?"""
    options = params.prompt_cache_options
    return options is not None and options.prewarm is True


def warm_only(chat: dict[str, Any], max_tokens_field: str) -> None:
    """The turn's body as a prewarm sends it, in place: one output token at most, one JSON answer."""
    for field in MAX_TOKENS_FIELDS:
        chat.pop(field, None)
    chat[max_tokens_field] = 1
    chat["stream"] = False
    chat.pop("stream_options", None)


def usage_only(completion: dict[str, Any]) -> dict[str, Any]:
    """The backend's answer to a prewarm as the one chunk the output builder reads: its usage, a finished turn,
    and none of its output."""
    usage = completion.get("usage") if isinstance(completion, dict) else None
    return {"usage": usage if isinstance(usage, dict) else None,
            "choices": [{"index": 0, "delta": {}, "finish_reason": "stop"}]}
