"""The fake upstream's errors, shaped as OpenAI's (``{"error": {...}}`` with its status): raised anywhere
below a handler, answered by it (fake_upstream.py)."""

from __future__ import annotations

from typing import Any

import orjson
from aiohttp import web


class FakeError(Exception):
    """Carries everything needed for an OpenAI-shaped error answer, so handlers can just raise."""

    def __init__(self, status: int, message: str, *, param: str | None = None, code: str | int | None = None,
                 type: str | None = None) -> None:
        super().__init__(message)
        self.status = status
        self.message = message
        self.param = param
        self.code = code
        self.type = type or _error_type(status)

    def body(self) -> dict[str, Any]:
        return {"error": {"message": self.message, "type": self.type, "param": self.param, "code": self.code}}


_ERROR_TYPES = {
    400: "invalid_request_error",
    401: "authentication_error",
    403: "permission_error",
    404: "not_found_error",
    409: "conflict_error",
    422: "invalid_request_error",
    429: "too_many_requests",
}
_ERROR_CODES = {401: "invalid_api_key", 429: "rate_limit_exceeded"}


def _error_type(status: int) -> str:
    if status in _ERROR_TYPES:
        return _ERROR_TYPES[status]
    return "server_error" if status >= 500 else "invalid_request_error"


def _json_response(obj: Any, status: int = 200) -> web.Response:
    return web.Response(body=orjson.dumps(obj), status=status, content_type="application/json")


def _error_response(err: FakeError) -> web.Response:
    return _json_response(err.body(), err.status)


def _type_name(value: Any) -> str:
    """OpenAI's wording for a JSON type in 'expected X, but got Y' messages."""
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "a boolean"
    if isinstance(value, int):
        return "an integer"
    if isinstance(value, float):
        return "a number"
    if isinstance(value, str):
        return "a string"
    if isinstance(value, list):
        return "an array"
    return "an object"


def _invalid_type(param: str, expected: str, value: Any) -> FakeError:
    return FakeError(400, f"Invalid type for '{param}': expected {expected}, but got {_type_name(value)} instead.",
                     param=param, code="invalid_type")


def _missing(param: str) -> FakeError:
    return FakeError(400, f"Missing required parameter: '{param}'.", param=param, code="missing_required_parameter")


def _invalid_value(param: str, message: str) -> FakeError:
    return FakeError(400, f"Invalid value for '{param}': {message}", param=param, code="invalid_value")
