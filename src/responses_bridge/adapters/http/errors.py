"""Every error the HTTP door returns is in the OpenAI shape, including aiohttp's own (404, 405, 413)."""

from __future__ import annotations

from collections.abc import Awaitable, Callable

import structlog
from aiohttp import web

from ...protocol.errors import APIError

log = structlog.get_logger("responses_bridge.http")

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


def error_response(error: APIError) -> web.Response:
    return web.Response(status=error.status, body=error.body(), content_type="application/json")


@web.middleware
async def error_middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
    try:
        return await handler(request)
    except APIError as error:
        return error_response(error)
    except web.HTTPException as exc:
        if exc.status < 400:
            raise
        return error_response(_from_http_exception(request, exc))
    except Exception:
        log.exception("unhandled_error", path=request.path, method=request.method)
        return error_response(APIError(500, "The server had an error while processing your request.",
                                       code="server_error"))


def _from_http_exception(request: web.Request, exc: web.HTTPException) -> APIError:
    if exc.status == 404:
        return APIError(404, f"Unknown request URL: {request.method} {request.path}.", code="unknown_url")
    if exc.status == 405:
        return APIError(405, f"Method {request.method} is not allowed for {request.path}.",
                        type="invalid_request_error", code="method_not_allowed")
    if exc.status == 413:
        return APIError(413, "The request body is too large.", code="request_too_large")
    return APIError(exc.status, exc.reason or "Request failed.")
