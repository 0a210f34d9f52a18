"""Who is calling the HTTP door: the tenant every route reads and writes as.

The middleware resolves the caller once per request, before any route runs, and leaves the tenant on the request
(:func:`request_tenant`); a route never looks at credentials itself. With ``RESPONSES_BRIDGE_AUTH=none`` everyone
is :data:`~responses_bridge.store.base.DEFAULT_TENANT`; with ``header`` the tenant is the header Envoy set (the
rendered Envoy config strips a client's own).
"""

from __future__ import annotations

from aiohttp import web
from aiohttp.web_middlewares import Handler

from ...protocol.errors import APIError
from ...store.base import DEFAULT_TENANT

TENANT = "responses_bridge.tenant"
"""The request key the middleware leaves the caller's tenant under."""


def request_tenant(request: web.Request) -> str:
    """The caller's tenant, as the identity middleware resolved it (a KeyError means the middleware is missing:
    a route must never fall back to another tenant)."""
    tenant: str = request[TENANT]
    return tenant


def unauthenticated(message: str, code: str = "invalid_api_key") -> APIError:
    return APIError(401, message, type="invalid_request_error", code=code)


def identity_middleware(mode: str, tenant_header: str) -> web.middleware:  # type: ignore[valid-type]
    """The middleware for ``RESPONSES_BRIDGE_AUTH`` = ``mode``."""

    @web.middleware
    async def identify(request: web.Request, handler: Handler) -> web.StreamResponse:
        if mode == "header":
            tenant = request.headers.get(tenant_header, "").strip()
            if not tenant:
                raise unauthenticated(f"The request carries no {tenant_header} header.", code="missing_tenant")
            request[TENANT] = tenant
        else:
            request[TENANT] = DEFAULT_TENANT
        return await handler(request)

    return identify
