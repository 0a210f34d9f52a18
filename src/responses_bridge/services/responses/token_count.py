"""``POST /v1/responses/input_tokens``: how many tokens a create request's input would take upstream.

The request (same body as ``POST /v1/responses``) goes through the same translation as a real one (history of
``previous_response_id``, instructions, compaction items, tools), and the resulting Chat Completions messages are
counted by the first method that works; the answer says which one in ``method``:

1. ``upstream_tokenizer``: the upstream's own tokenizer, ``POST /tokenize`` at its server root (vLLM; the chat
   template is applied, so the count is exact). A server without it (404/405/501) is not asked again for
   ``RETRY_AFTER_SECONDS``. This call goes straight to the upstream's root, not through ``upstream_via``
   (Envoy routes only ``/v1/chat/completions`` and ``/v1/models`` to the upstream).
2. ``tiktoken``: OpenAI's ``cl100k_base`` BPE with OpenAI's per-message overhead (engine/chat_tokens.py, the
   count a ``compact_threshold`` is weighed with too). Exact for OpenAI's older models, an approximation for others.
3. ``estimate``: ceil(characters / 4) per message plus the same overhead, when neither is available.

``personality`` (a field of the count only) is checked and taken out before the translation: see
:func:`check_personality`.
"""

from __future__ import annotations

import asyncio
import time
from typing import Any
from urllib.parse import urlsplit, urlunsplit

import orjson
import structlog

from ...engine import chat_tokens
from ...protocol.errors import invalid_request
from ...protocol.responses.request import parse_json_object
from ...run.upstream import UpstreamClient, UpstreamFailure

log = structlog.get_logger("responses_bridge.token_count")

RETRY_AFTER_SECONDS = 300.0
TOKENIZE_TIMEOUT_SECONDS = 5.0


def tokenizer_url(upstream: str) -> str:
    """``http://host:8000/v1`` → ``http://host:8000/tokenize`` (vLLM serves it at the root)."""
    parts = urlsplit(upstream)
    path = parts.path.rstrip("/")
    path = path.removesuffix("/v1")
    return urlunsplit((parts.scheme, parts.netloc, path + "/tokenize", "", ""))


MAX_PERSONALITY_CHARS = 64


def check_personality(value: object) -> None:
    """``personality`` (SDK 3.57: a model-owned style preset, ``friendly``, ``pragmatic`` or a newer name of at
    most 64 characters), checked as OpenAI checks it. No upstream the bridge serves has such presets (and
    ``POST /v1/responses`` takes no ``personality``), so the input is counted as the upstream would get it,
    without one (docs/api.md)."""
    if value is None:
        return
    if not isinstance(value, str):
        raise invalid_request("Invalid type for 'personality': expected a string.", param="personality",
                              code="invalid_type")
    if not value or len(value) > MAX_PERSONALITY_CHARS:
        raise invalid_request(f"Invalid 'personality': a string of 1 to {MAX_PERSONALITY_CHARS} characters is "
                              f"expected, got {len(value)}.", param="personality", code="invalid_value")


class TokenCounter:
    def __init__(self, upstream: UpstreamClient, upstream_url: str) -> None:
        self.upstream = upstream
        self.url = tokenizer_url(upstream_url)
        self._no_tokenizer_until = 0.0

    async def count(self, runtime: Any, body: bytes, authorization: str | None, *, tenant: str) -> dict[str, Any]:
        raw = parse_json_object(body)
        check_personality(raw.pop("personality", None))
        # context_management would compact the context it is asked to count: the count is of the input as sent
        for key in ("stream", "background", "stream_options", "context_management"):
            raw.pop(key, None)
        raw["store"] = False
        model_given = isinstance(raw.get("model"), str) and bool(raw["model"])
        if not model_given:
            raw["model"] = "default"  # optional here: only the tokenizer call would use it
        # the same translation as a real request, as ``tenant`` (a previous_response_id must be theirs)
        call = await runtime.new_run(tenant=tenant).begin(orjson.dumps(raw))
        chat = orjson.loads(call.body)
        tokens, method = await self._count(chat, model_given, authorization)
        return {"object": "response.input_tokens", "input_tokens": tokens, "method": method}

    async def _count(self, chat: dict[str, Any], model_given: bool, authorization: str | None) -> tuple[int, str]:
        if time.monotonic() >= self._no_tokenizer_until:
            counted = await self._upstream_count(chat, model_given, authorization)
            if counted is not None:
                return counted, "upstream_tokenizer"
        return await asyncio.to_thread(chat_tokens.count, chat)

    async def _upstream_count(self, chat: dict[str, Any], model_given: bool,
                              authorization: str | None) -> int | None:
        body: dict[str, Any] = {"messages": chat["messages"], "add_generation_prompt": True}
        if model_given:
            body["model"] = chat["model"]
        if chat.get("tools"):
            body["tools"] = chat["tools"]
        try:
            async with self.upstream.post_json(self.url, orjson.dumps(body), authorization,
                                               timeout=TOKENIZE_TIMEOUT_SECONDS) as answer:
                status, payload = answer.status, await self.upstream.read_answer(answer)
        except UpstreamFailure:
            self._no_tokenizer_until = time.monotonic() + RETRY_AFTER_SECONDS
            return None
        if status in (404, 405, 501):
            self._no_tokenizer_until = time.monotonic() + RETRY_AFTER_SECONDS
            return None
        if status >= 400:
            return None
        try:
            count = orjson.loads(payload).get("count")
        except (orjson.JSONDecodeError, AttributeError):
            return None
        return count if isinstance(count, int) and count >= 0 else None
