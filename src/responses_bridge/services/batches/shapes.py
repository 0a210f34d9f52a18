"""The Batch API's shapes as the ``openai`` SDK reads them: the create request checked, the Batch object (every
field of ``openai.types.Batch``), the lines of the output and error files, and the tokens a line's answer used."""

from __future__ import annotations

import os
from typing import Any

import orjson

from ...protocol.errors import APIError, invalid_request, not_found
from ...protocol.metadata import check_metadata
from ...store.base_batches import BatchTotals, LineCounts, StoredBatch
from ..files.files import check_expires_after

SDK_ENDPOINTS = ("/v1/responses", "/v1/chat/completions", "/v1/embeddings", "/v1/completions", "/v1/moderations",
                 "/v1/images/generations", "/v1/images/edits", "/v1/videos")
"""The endpoints the SDK's ``batches.create`` names; the bridge serves those its line server serves."""
COMPLETION_WINDOWS = {"24h": 24 * 3600}
CREATE_FIELDS = frozenset({"input_file_id", "endpoint", "completion_window", "metadata", "output_expires_after"})
BATCH_ID_PREFIX = "batch_"


def new_batch_id() -> str:
    return f"{BATCH_ID_PREFIX}{os.urandom(16).hex()}"


def batch_not_found(batch_id: str) -> APIError:
    return not_found(f"No batch found with id '{batch_id[:200]}'.", param="batch_id", code="not_found")


def check_create(body: dict[str, Any], served: tuple[str, ...]) -> tuple[str, str, int, dict[str, str] | None,
                                                                          int | None]:
    """``POST /v1/batches``'s body -> (input_file_id, endpoint, window seconds, metadata, output files' expiry
    seconds); a 400 naming the parameter otherwise (an endpoint not served: naming those that are)."""
    unknown = sorted(set(body) - CREATE_FIELDS)
    if unknown:
        raise invalid_request(f"Unrecognized request argument supplied: {unknown[0][:100]}", param=unknown[0][:100],
                              code="unknown_parameter")
    for name in ("input_file_id", "endpoint", "completion_window"):
        if body.get(name) in (None, ""):
            raise invalid_request(f"Missing required parameter: '{name}'.", param=name,
                                  code="missing_required_parameter")
    input_file_id, endpoint, window = body["input_file_id"], body["endpoint"], body["completion_window"]
    if not isinstance(input_file_id, str):
        raise invalid_request("Invalid type for 'input_file_id': expected a string.", param="input_file_id",
                              code="invalid_type")
    if not isinstance(endpoint, str) or endpoint not in served:
        shown = endpoint[:100] if isinstance(endpoint, str) else orjson.dumps(endpoint).decode()[:100]
        raise invalid_request(f"Invalid value for 'endpoint': {shown!r} is not served here. Supported values are: "
                              + ", ".join(f"'{name}'" for name in served) + ".", param="endpoint",
                              code="invalid_value")
    if not isinstance(window, str) or window not in COMPLETION_WINDOWS:
        raise invalid_request("Invalid value for 'completion_window': supported values are: '24h'.",
                              param="completion_window", code="invalid_value")
    metadata = body.get("metadata")
    check_metadata(metadata)
    expires = body.get("output_expires_after")
    seconds: int | None = None
    if expires is not None:
        if not isinstance(expires, dict):
            raise invalid_request("Invalid type for 'output_expires_after': expected an object.",
                                  param="output_expires_after", code="invalid_type")
        try:
            seconds = check_expires_after(expires.get("anchor"), expires.get("seconds"))
        except APIError as error:  # the Files API's check, named as this request names it
            raise invalid_request(error.message.replace("expires_after", "output_expires_after"),
                                  param=(error.param or "").replace("expires_after", "output_expires_after"),
                                  code=error.code) from None
    return input_file_id, str(endpoint), COMPLETION_WINDOWS[window], metadata, seconds


def new_batch(input_file_id: str, endpoint: str, window: int, metadata: dict[str, str] | None,
              now: int) -> dict[str, Any]:
    """The object of a batch just created (status ``validating``)."""
    return {"id": new_batch_id(), "object": "batch", "endpoint": endpoint, "model": None, "errors": None,
            "input_file_id": input_file_id, "completion_window": "24h", "status": "validating",
            "output_file_id": None, "error_file_id": None, "created_at": now, "in_progress_at": None,
            "expires_at": now + window, "finalizing_at": None, "completed_at": None, "failed_at": None,
            "expired_at": None, "cancelling_at": None, "cancelled_at": None, "metadata": metadata}


def batch_object(stored: StoredBatch) -> dict[str, Any]:
    """The Batch object answered: the kept fields without the private ones, ``request_counts`` and ``usage`` from
    the counters."""
    totals: BatchTotals = stored.totals
    body = {key: value for key, value in stored.body.items() if not key.startswith("_")}
    body["status"] = stored.status
    body["request_counts"] = {"total": totals.total, "completed": totals.completed, "failed": totals.failed}
    body["usage"] = {"input_tokens": totals.input_tokens,
                     "input_tokens_details": {"cached_tokens": totals.cached_tokens},
                     "output_tokens": totals.output_tokens,
                     "output_tokens_details": {"reasoning_tokens": totals.reasoning_tokens},
                     "total_tokens": totals.input_tokens + totals.output_tokens}
    return body


def output_line(custom_id: str, status: int, request_id: str, body: bytes) -> tuple[bytes, LineCounts]:
    """A line answered by its endpoint, as OpenAI writes it (``response``: status, request id, body; ``error``
    null): a 2xx to the output file, anything else to the error file. And what it adds to the counters."""
    try:
        decoded = orjson.loads(body)
    except orjson.JSONDecodeError:
        decoded = body.decode("utf-8", "replace")
    line = {"id": f"batch_req_{os.urandom(16).hex()}", "custom_id": custom_id,
            "response": {"status_code": status, "request_id": request_id, "body": decoded}, "error": None}
    failed = not 200 <= status < 300
    return orjson.dumps(line), _counts(decoded, failed)


def error_line(custom_id: str, code: str, message: str) -> tuple[bytes, LineCounts]:
    """A line that got no answer from its endpoint (the batch expired or was cancelled before it ran, its body
    could not be sent): to the error file."""
    line = {"id": f"batch_req_{os.urandom(16).hex()}", "custom_id": custom_id, "response": None,
            "error": {"code": code, "message": message}}
    return orjson.dumps(line), LineCounts(failed=True)


def _counts(body: object, failed: bool) -> LineCounts:
    """The tokens of an answer: a response's ``usage`` (input/output tokens and their details), a chat completion's
    or an embedding's (prompt/completion tokens)."""
    usage = body.get("usage") if isinstance(body, dict) else None
    if not isinstance(usage, dict):
        return LineCounts(failed=failed)

    def number(value: object) -> int:
        return value if isinstance(value, int) and not isinstance(value, bool) and value >= 0 else 0

    def detail(name: str, key: str) -> int:
        details = usage.get(name)
        return number(details.get(key)) if isinstance(details, dict) else 0

    if "input_tokens" in usage or "output_tokens" in usage:
        return LineCounts(failed, number(usage.get("input_tokens")), detail("input_tokens_details", "cached_tokens"),
                          number(usage.get("output_tokens")), detail("output_tokens_details", "reasoning_tokens"))
    return LineCounts(failed, number(usage.get("prompt_tokens")), detail("prompt_tokens_details", "cached_tokens"),
                      number(usage.get("completion_tokens")), detail("completion_tokens_details", "reasoning_tokens"))
