"""OpenAI-shaped errors.

Every failure a client can see leaves the bridge as ``{"error": {"message", "type", "param", "code"}}`` with a
status that matches its type. Raising :class:`APIError` anywhere below an adapter is enough: both doors turn it
into that shape, so no code path has to build error bodies by hand.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import orjson

_TYPE_FOR_STATUS = {
    400: "invalid_request_error",
    401: "authentication_error",
    403: "permission_error",
    404: "invalid_request_error",  # as OpenAI answers an unknown id ("No such File object: ..."); the code says which
    409: "invalid_request_error",
    413: "invalid_request_error",
    422: "invalid_request_error",
    429: "requests",  # OpenAI's type for a limit on requests (its token limits say "tokens")
}


def error_type_for_status(status: int) -> str:
    if status in _TYPE_FOR_STATUS:
        return _TYPE_FOR_STATUS[status]
    return "server_error" if status >= 500 else "invalid_request_error"


class APIError(Exception):
    """An error with everything needed to answer the client in the OpenAI error shape."""

    def __init__(
        self,
        status: int,
        message: str,
        *,
        type: str | None = None,
        param: str | None = None,
        code: str | None = None,
    ) -> None:
        super().__init__(message)
        self.status = status
        self.message = message
        self.type = type or error_type_for_status(status)
        self.param = param
        self.code = code

    def payload(self) -> dict[str, Any]:
        """The inner ``error`` object, as used in bodies, ``response.error`` and ``error`` events."""
        return {"message": self.message, "type": self.type, "param": self.param, "code": self.code}

    def body(self) -> bytes:
        return orjson.dumps({"error": self.payload()})

    def __repr__(self) -> str:
        return f"APIError({self.status}, {self.message!r}, code={self.code!r}, param={self.param!r})"


def invalid_request(message: str, *, param: str | None = None, code: str | None = None) -> APIError:
    return APIError(400, message, param=param, code=code or "invalid_value" if param else code)


def missing_parameter(param: str) -> APIError:
    """The 400 ``missing_required_parameter`` naming ``param``, in the one wording every check uses."""
    return invalid_request(f"Missing required parameter: '{param}'.", param=param, code="missing_required_parameter")


def invalid_type(param: str, expected: str) -> APIError:
    """The 400 ``invalid_type`` of a value at ``param`` that is not ``expected`` ("a string", "an array of
    strings"), in the one wording every check uses."""
    return invalid_request(f"Invalid type for '{param}': expected {expected}.", param=param, code="invalid_type")


def array_within(value: Any, param: str, limit: int, *, items: str = "items",
                 expected: str = "an array") -> list[Any]:
    """``value`` when it is a JSON array of at most ``limit`` entries; else the 400 naming ``param``:
    ``invalid_type`` (not ``expected``) or ``array_above_max_length`` (more ``items`` than ``limit``)."""
    if not isinstance(value, list):
        raise invalid_type(param, expected)
    if len(value) > limit:
        raise invalid_request(f"'{param}' may have at most {limit} {items}; got {len(value)}.", param=param,
                              code="array_above_max_length")
    return value


def objects_in(entries: list[Any], param: str) -> Iterator[tuple[str, dict[str, Any]]]:
    """Each entry of the array at ``param`` with its own name (``param[i]``), as it is checked: a 400
    ``invalid_type`` naming the first entry that is not a JSON object, when the iteration reaches it."""
    for index, entry in enumerate(entries):
        where = f"{param}[{index}]"
        if not isinstance(entry, dict):
            raise invalid_request(f"Invalid type for '{where}': expected an object.", param=where, code="invalid_type")
        yield where, entry


def not_found(message: str, *, param: str | None = None, code: str | None = None) -> APIError:
    return APIError(404, message, param=param, code=code)


def shutting_down() -> APIError:
    """What a request arriving while the sidecar drains gets, on either door."""
    return APIError(503, "The server is shutting down and takes no new requests; retry on another instance.",
                    type="server_error", code="server_shutting_down")


def shut_down_mid_response() -> APIError:
    """What a response still running at the drain deadline ends with (``response.failed``), on either door."""
    return APIError(503, "The server is shutting down: this response was ended before it completed.",
                    type="server_error", code="server_shutdown")


def retried_by_clients(status: int) -> bool:
    """Is ``status`` one the OpenAI SDKs retry by themselves (408, 409, 429 and every 5xx: the openai SDK's
    ``_should_retry``)? Such an answer is safe only while nothing the request did would be done again."""
    return status in (408, 409, 429) or status >= 500


def after_effects(error: APIError) -> APIError:
    """``error`` ending a response whose server-side calls with effects were already made (an MCP call, code, a
    shell command): its message says so, since the client gets the failed Response rather than a status it would
    retry, and a person reading it must learn that sending the request again makes the calls again."""
    return APIError(error.status, f"{error.message} Server-side calls with effects had already been made (they are "
                    "in this response's output), so it ends here instead of as an error a client retries: sending "
                    "the same request again would make them again.", type=error.type, param=error.param,
                    code=error.code)
