"""The ``error`` of a failed Response: one of the codes OpenAI's clients know, the bridge's own reason in its text.

A Response's ``error.code`` is a closed list in OpenAI's API (the SDK's ``ResponseError.code``): a client that
validates what it reads refuses anything else. The bridge fails responses for reasons of its own
(``upstream_timeout``, ``upstream_connection_error``, ``upstream_too_large``, ``client_disconnected``,
``server_shutdown``, ``server_restarted``…); such a response carries the listed code that says the same thing to a
client (``server_error`` for the bridge's or its upstream's fault, ``rate_limit_exceeded`` for a 429,
``invalid_prompt`` for a request the upstream refused) and the precise reason leads its message
(``"upstream_timeout: The upstream did not answer …"``), so a person reading it, or a script matching it, loses
nothing. HTTP error bodies (``{"error": {…}}`` with a status) are not Responses and keep the precise codes, as do
logs and metrics.

The mapping runs once, when a response fails: never per chunk.
"""

from __future__ import annotations

from typing import Any

RESPONSE_ERROR_CODES = frozenset((
    "server_error", "rate_limit_exceeded", "invalid_prompt", "data_residency_mismatch", "bio_policy",
    "misalignment_policy_violation", "vector_store_timeout", "invalid_image", "invalid_image_format",
    "invalid_base64_image", "invalid_image_url", "image_too_large", "image_too_small", "image_parse_error",
    "image_content_policy_violation", "invalid_image_mode", "image_file_too_large", "unsupported_image_media_type",
    "empty_image_file", "failed_to_download_image", "image_file_not_found",
))
"""``ResponseError.code`` of the openai SDK (3.57); tests/unit/test_response_error.py fails the day the SDK's list
changes."""


def response_code(code: str | None, status: int) -> str:
    """The listed code a failed Response carries for the bridge's ``code`` (an HTTP ``status`` that came with it)."""
    if code is not None and code in RESPONSE_ERROR_CODES:
        return code
    if status == 429:
        return "rate_limit_exceeded"
    if 400 <= status < 500:
        return "invalid_prompt"
    return "server_error"


def response_error(code: str | None, message: str, *, status: int = 500, param: str | None = None,
                   error_type: str | None = None, full: bool = False) -> dict[str, Any]:
    """A failed Response's ``error``: ``{"code", "message"}`` (``full``: with ``param`` and ``type`` as well, as a
    relayed Response's error has them). A code not on the list becomes the listed one that says the same, and
    leads the message."""
    listed = response_code(code, status)
    if code and code != listed:
        message = f"{code}: {message}"
    if not full:
        return {"code": listed, "message": message}
    return {"code": listed, "message": message, "param": param, "type": error_type}
