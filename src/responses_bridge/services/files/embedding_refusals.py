"""An upstream's refusal of an embeddings request in OpenAI's error shape, whatever shape it came in: the passthrough
of ``POST /v1/embeddings`` to an upstream's model (adapters/http/upstream/embeddings_routes.py) and the configured
embedding model's refusals (embeddings.py) both answer with it. Apart from embeddings.py so that the passthrough,
which embeds nothing here, loads none of the embedder."""

from __future__ import annotations

from typing import Any

import orjson

from ...protocol.errors import APIError


def upstream_error(status: int, answer: bytes) -> APIError:
    """An upstream's error answer in OpenAI's shape, whatever shape it came in: OpenAI's and Ollama's
    ``{"error": {"message", ...}}`` (its fields kept), vLLM's older flat ``{"object": "error", "message", "type",
    "code": 404}``, a bare ``{"error": "..."}`` (llama.cpp, Ollama's own API), or no JSON at all. A 4xx keeps
    its status; a 5xx is a 502 ``upstream_error`` naming it (the bridge answered, the upstream failed)."""
    try:
        decoded = orjson.loads(answer)
    except orjson.JSONDecodeError:
        decoded = None
    fields: dict[str, Any] = {}
    if isinstance(decoded, dict):
        error = decoded.get("error")
        if isinstance(error, dict):
            fields = error
        elif isinstance(error, str):
            fields = {"message": error}
        elif isinstance(decoded.get("message"), str):
            fields = decoded
    message = fields.get("message")
    if not isinstance(message, str) or not message:
        text = answer[:300].decode("utf-8", "replace").strip()
        message = f"The upstream answered HTTP {status}" + (f": {text}" if text else ".")
    if 400 <= status < 500:
        return APIError(status, message, type=_text(fields.get("type")), param=_text(fields.get("param")),
                        code=_text(fields.get("code")))
    return APIError(502, f"The upstream failed (HTTP {status}): {message}", type="server_error",
                    code="upstream_error")


def _text(value: Any) -> str | None:
    return value if isinstance(value, str) else None
