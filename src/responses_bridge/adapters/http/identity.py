"""Who is calling the HTTP door: the tenant every route reads and writes as.

The middleware resolves the caller once per request, before any route runs, and leaves the tenant on the request
(:func:`request_tenant`); a route never looks at credentials itself. The resolution itself (a bridge key's tenant,
the trusted header) is services/tenancy/identity.py, shared with the ext_proc door. With ``RESPONSES_BRIDGE_AUTH=none``
everyone is :data:`~responses_bridge.store.base.DEFAULT_TENANT`; with ``header`` the tenant is the header Envoy set
(the rendered Envoy config strips a client's own); with ``keys`` it is the tenant of the client's bridge key, and
the route then sees the request without its ``Authorization``, so no route can send a bridge key upstream.
"""

from __future__ import annotations

from aiohttp import web
from aiohttp.web_middlewares import Handler
from multidict import CIMultiDict, CIMultiDictProxy

from ...services.tenancy.identity import Identity, unauthenticated
from ...store.base import DEFAULT_TENANT
from .desktop_watch_tokens import WatchTokens
from .hosts import HostGate

TENANT = web.RequestKey("tenant", str)
"""The request key the middleware leaves the caller's tenant under."""

OPEN_PATHS = frozenset(("/health", "/health/live", "/health/ready", "/metrics", "/favicon.ico"))
"""Answered for anyone, under any ``Host``: Envoy's health checks and the orchestrator's probes carry no credentials
(and name the pod's address), and a browser on the console asks for ``/favicon.ico`` on every page."""
SELF_AUTHENTICATED = "/v1/agents/executor/"
"""``codex exec-server``'s registry and rendezvous (adapters/http/agents/executor_routes.py): signed with a session's
executor credentials, checked by those routes, never a bridge key; their tenant is the one the signature names."""
NO_TENANT = ""
CONSOLE = "/console"
"""The console's pages (adapters/http/console/): signed in with a sealed cookie, checked by the console itself; an
API key never reaches them in a header."""

__all__ = ["TENANT", "identity_middleware", "request_tenant", "unauthenticated"]


def request_tenant(request: web.Request) -> str:
    """The caller's tenant, as the identity middleware resolved it (a KeyError means the middleware is missing:
    a route must never fall back to another tenant)."""
    tenant: str = request[TENANT]
    return tenant


def identity_middleware(identity: Identity, watch_tokens: WatchTokens | None = None, *,
                        console: bool = False, hosts: HostGate | None = None) -> web.middleware:  # type: ignore[valid-type]
    """The middleware for ``identity.mode`` (``RESPONSES_BRIDGE_AUTH``). ``watch_tokens``: a request watching a
    session's desktop from a browser (desktop_watch_tokens.py) is the tenant its ``token`` names, in every
    mode (a bad or expired token is a 401). ``console``: the console is served, and its paths check their own
    sign-in (the same prefix test as the executor's, so an API request pays nothing more). ``hosts``: without
    keys, a request is answered only under a loopback or named ``Host`` (hosts.py: against DNS rebinding), but for
    the open paths and the executor's, which trust no address (a token or a signature, checked by their routes)."""
    self_authenticated = (SELF_AUTHENTICATED, CONSOLE) if console else (SELF_AUTHENTICATED,)
    gate = hosts if identity.anonymous else None

    @web.middleware
    async def identify(request: web.Request, handler: Handler) -> web.StreamResponse:
        if watch_tokens is not None and "/desktop/" in request.raw_path and "token" in request.query:
            tenant = watch_tokens.tenant_for(request.path, request.query["token"])
            if tenant is not None:
                request[TENANT] = tenant
                return await handler(request)
        if identity.anonymous or request.path in OPEN_PATHS:
            if gate is not None and not gate.admits(request) and request.path not in OPEN_PATHS \
                    and not request.path.startswith(SELF_AUTHENTICATED):
                raise gate.refusal(request)
            request[TENANT] = DEFAULT_TENANT
            return await handler(request)
        if request.path.startswith(self_authenticated):
            request[TENANT] = NO_TENANT  # the route finds the tenant in the signature (the console: its cookie)
            return await handler(request)
        tenant = await identity.tenant(request.headers.get("Authorization"),
                                       request.headers.get(identity.tenant_header))
        request[TENANT] = tenant  # before the clone below: the request log line (observe.py) reads the original
        if identity.mode == "keys":  # the bridge key stops here: routes see no Authorization to pass on
            headers = CIMultiDict(request.headers)
            headers.popall("Authorization", None)
            request = request.clone(headers=CIMultiDictProxy(headers))
        return await handler(request)

    return identify
