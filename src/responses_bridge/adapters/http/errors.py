"""Every error the HTTP door returns is in the OpenAI shape, including aiohttp's own (404, 405, 413)."""

from __future__ import annotations

from collections.abc import Awaitable, Callable

import structlog
from aiohttp import web

from ...protocol.errors import APIError
from ...services.responses.idempotency import KEY_IN_USE
from ...services.tenancy.limits import RETRY_AFTER_SECONDS
from ...services.tenancy.memory_budget import RETRY_LATER
from ...store.transient import is_transient

log = structlog.get_logger("responses_bridge.http")

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]
STORE_UNAVAILABLE = "store_unavailable"  # a 503: the database was away past the store's retries


def error_response(error: APIError) -> web.Response:
    """The OpenAI error; a 429 (a tenant's limit), a 503 (the memory budget) or a 409 ``idempotency_key_in_use`` with
    the ``Retry-After`` the openai SDKs honour."""
    response = web.Response(status=error.status, body=error.body(), content_type="application/json")
    if error.status == 429 or error.code in RETRY_LATER or error.code in (KEY_IN_USE, STORE_UNAVAILABLE):
        response.headers["Retry-After"] = str(RETRY_AFTER_SECONDS)
    return response


@web.middleware
async def error_middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
    """Every error in the OpenAI shape, as a middleware of its own (the door's app answers errors in its outermost
    middleware instead, observe.py: one coroutine a request fewer)."""
    try:
        refuse_unreadable(request)
        return await handler(request)
    except Exception as exc:  # noqa: BLE001  (every failure gets its answer: error_answer logs the unexpected)
        return error_answer(request, exc)


def error_answer(request: web.Request, exc: Exception) -> web.Response:
    """The answer to what a route raised, called in its ``except``: an :class:`APIError` as it is, aiohttp's own
    errors (404, 405, 413) in the OpenAI shape, the database away past its retries a 503, anything else a logged
    500. An ``HTTPException`` under 400 (a redirect) is not an error: raised again."""
    if isinstance(exc, APIError):
        return error_response(exc)
    if isinstance(exc, web.HTTPException):
        if exc.status < 400:
            raise exc
        return error_response(_from_http_exception(request, exc))
    if is_transient(exc):  # the database away past the retries: the client may try again (store/transient.py)
        log.warning("store_unavailable", path=request.path, method=request.method, error=repr(exc)[:300])
        return error_response(APIError(503, "The database is unavailable; try again shortly.",
                                       type="server_error", code=STORE_UNAVAILABLE))
    log.exception("unhandled_error", path=request.path, method=request.method)
    return error_response(APIError(500, "The server had an error while processing your request.",
                                   code="server_error"))


ACCEPTED_ENCODINGS = frozenset({"", "identity"})


def refuse_unreadable(request: web.Request) -> None:
    """Requests no route can serve faithfully, refused the way Envoy's routes refuse them (envoy_config.py):
    a compressed body (bodies are read as sent, never inflated: no decompression bomb can reach the bridge),
    and a path with a NUL byte, which Envoy's path normalisation rejects before routing."""
    encoding = request.headers.get("Content-Encoding", "").strip().lower()
    if encoding not in ACCEPTED_ENCODINGS and request.body_exists:
        raise APIError(415, f"Content-Encoding '{encoding[:40]}' is not supported: send the request body "
                       "uncompressed.", code="unsupported_content_encoding")
    if "\x00" in request.path:
        raise APIError(400, "The request path is not valid.", code="invalid_path")


def _from_http_exception(request: web.Request, exc: web.HTTPException) -> APIError:
    if exc.status == 404:
        return APIError(404, f"Unknown request URL: {request.method} {request.path}.", code="unknown_url")
    if exc.status == 405:
        return APIError(405, f"Method {request.method} is not allowed for {request.path}.",
                        type="invalid_request_error", code="method_not_allowed")
    if exc.status == 413:
        return APIError(413, "The request body is too large.", code="request_too_large")
    return APIError(exc.status, exc.reason or "Request failed.")
