"""What an upstream's failed or broken answer becomes for the client: its error answer (4xx kept, 5xx a 502, a
context-length error the 400 ``truncation: "auto"`` acts on), an event or answer over the size limit, a chunk
that is not Chat Completions."""

from __future__ import annotations

from typing import Literal

import orjson
import structlog

from ..protocol.errors import APIError
from . import truncation
from .chunk_values import UpstreamProtocolError

log = structlog.get_logger("responses_bridge.engine")


def too_large(what: Literal["event", "answer"], limit: int) -> APIError:
    subject = "one event" if what == "event" else "an answer"
    return APIError(502, f"The upstream model server sent {subject} larger than {limit} bytes, the limit set by "
                    "RESPONSES_BRIDGE_MAX_EVENT_BYTES.", type="server_error", code="upstream_too_large")


def malformed(exc: Exception) -> UpstreamProtocolError:
    log.warning("upstream_malformed_chunk", error=repr(exc))
    return UpstreamProtocolError("The upstream sent a chunk that is not a valid Chat Completions chunk.")


OPENAI_TYPES = frozenset(("invalid_request_error", "authentication_error", "permission_error", "requests", "tokens",
                          "insufficient_quota", "server_error"))
"""Error types OpenAI answers with. A backend's own (vLLM's ``BadRequestError``, ``too_many_requests``) gives way to
the type OpenAI uses for the status (protocol/errors.py); its message, param and code are kept."""


def upstream_error(status: int, body: bytes) -> APIError:
    """An upstream error answer as the client's error: 4xx keep their status and message (the client's request
    was at fault), 5xx become 502 (the bridge's upstream is at fault, not the client)."""
    message, param, code, kind = None, None, None, None
    try:
        parsed = orjson.loads(body) if body else None
    except orjson.JSONDecodeError:
        parsed = None
    if isinstance(parsed, dict):
        error = parsed.get("error", parsed)
        if isinstance(error, dict):
            message = error.get("message") if isinstance(error.get("message"), str) else None
            param = error.get("param") if isinstance(error.get("param"), str) else None
            code = error.get("code") if isinstance(error.get("code"), str) else None
            kind = error.get("type") if isinstance(error.get("type"), str) else None
        elif isinstance(error, str):
            message = error
    if message is None:
        message = body[:500].decode("utf-8", "replace").strip() or f"HTTP {status}"
    if truncation.is_context_length_error(status, message, code, kind):
        return APIError(400, message, type="invalid_request_error", param="input", code="context_length_exceeded")
    if status < 500:  # the client's fault: its status, message, param and code, typed as OpenAI types errors
        return APIError(status, message, type=kind if kind in OPENAI_TYPES else None, param=param, code=code)
    return APIError(502, f"The upstream model server failed (HTTP {status}): {message}", type="server_error",
                    code="server_error")
