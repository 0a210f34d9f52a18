"""The aiohttp application: every route of the HTTP door."""

from __future__ import annotations

import asyncio
from typing import Any

import orjson
from aiohttp import web

from ...protocol.errors import APIError
from ...run.upstream import UpstreamClient, UpstreamFailure
from ...runtime import Runtime
from ...services.readiness import check_readiness
from .agents import capability as agents_capability
from .batches import capability as batches
from .console import entry as console_entry
from .containers import capability as containers
from .desktop_watch_tokens import WatchTokens
from .drain import DRAIN, Drain
from .files import capability as vector_stores
from .files.files_routes import FileRoutes
from .files.uploads_routes import UploadRoutes
from .hosts import HostGate
from .identity import identity_middleware
from .limits import limits_middleware
from .observe import echo_request_id, observe_middleware
from .params import UNKNOWN_FIELDS
from .responses import background_routes
from .responses.chat_completions_routes import ChatCompletionRoutes
from .responses.conversations_routes import ConversationRoutes
from .responses.prompts_routes import PromptRoutes
from .responses.responses_routes import ResponsesRoutes
from .routes import api_routes
from .upstream.codex_models import models_answer, passthrough_answer
from .upstream.embeddings_routes import EmbeddingRoutes
from .upstream.upstream_routes import UpstreamRoutes, refuse_returning_call, with_embedder

RUNTIME = web.AppKey("runtime", Runtime)
UPSTREAM = web.AppKey("upstream", UpstreamClient)
UPSTREAMS = web.AppKey("upstreams", dict[str, UpstreamClient])
EMBEDDER: web.AppKey[dict[str, Any] | None] = web.AppKey("embedder")  # its GET /v1/models entry, or None


def create_app(runtime: Runtime) -> web.Application:
    drain = Drain(runtime)  # outermost middleware: while draining, new requests get a 503 before anything else
    # a browser watching a session's desktop carries a token instead of the key (desktop_watch_tokens.py)
    watch_tokens = WatchTokens(runtime.sealer, runtime.settings.desktop_watch_link_seconds)
    console = runtime.settings.console == "on"  # /console (console/): its pages check their own sign-in
    identify = identity_middleware(runtime.identity, watch_tokens,  # RESPONSES_BRIDGE_AUTH: tenancy/identity.py
                                   console=console,  # without keys, loopback Host names only (hosts.py)
                                   hosts=HostGate(runtime.settings.allowed_hosts, runtime.settings.http_host))
    limit = limits_middleware(runtime.limits, runtime.memory,  # per tenant: 429, 413; the memory budget: 503
                              body_timeout=runtime.settings.request_body_timeout,  # a body too slow: 408
                              body_min_rate=runtime.settings.request_body_min_rate)
    # observe_middleware answers errors too (errors.py's error_answer, in the OpenAI shape): the drain's refusal is
    # an answer already, the identity's and the limits' refusals are raised and answered there
    app = web.Application(middlewares=[observe_middleware, drain.middleware, identify, limit],
                          client_max_size=runtime.settings.max_request_bytes)
    app.on_response_prepare.append(echo_request_id)  # X-Request-Id on every answer (observe.py)
    app[DRAIN] = drain
    # the runtime's upstream clients (built once, by the composition root: serve.open_runtime), per upstream
    # when there are several (config/upstreams.py)
    upstream, clients = runtime.upstream, runtime.clients
    app[RUNTIME] = runtime
    app[UNKNOWN_FIELDS] = runtime.options.unknown_fields
    app[UPSTREAM] = upstream
    app[UPSTREAMS] = clients
    ResponsesRoutes(runtime, upstream, clients).register(app)
    background_routes.register(app, runtime, upstream, clients)  # cancel, WebSocket mode, compact, input_tokens
    ConversationRoutes(runtime.conversations).register(app)
    # the Agents API (agents, sessions, events, turns, items, vaults): imported by its first use (agents/capability.py)
    agents_capability.register(app, runtime, watch_tokens)
    PromptRoutes(runtime.prompts).register(app)
    ChatCompletionRoutes(runtime.chat_completions).register(app)  # stored ones; POST is UpstreamRoutes'
    FileRoutes(runtime.files).register(app)
    UploadRoutes(runtime.uploads).register(app)
    batches.register(app, runtime, drain)  # the Batch API and the runner of the store's batches (batches/)
    # the Vector Stores API, and the Containers and Skills APIs: each loaded by the first request under its paths
    vector_stores.lazy_routes(runtime).register(app)
    containers.lazy_routes(runtime).register(app)
    # the vector stores' embedder (its names from the settings: nothing loaded); other models: the upstreams'
    app[EMBEDDER] = runtime.vector_stores.names.listed()  # its GET /v1/models entry, or None
    EmbeddingRoutes(runtime.vector_stores, runtime).register(app)
    app.router.add_get("/health", health)
    app.router.add_get("/health/live", health_live)
    app.router.add_get("/health/ready", health_ready)
    app.router.add_get("/metrics", metrics)
    app.router.add_get("/favicon.ico", favicon)
    UpstreamRoutes(runtime, upstream, clients, app[EMBEDDER]).register(app)  # chat/completions; models
    if not clients:
        with api_routes(app) as routes:
            routes.get("/models", models)
    if console:  # one route; the pages are imported on its first request (console/entry.py)
        console_entry.register(app, runtime, watch_tokens)
    return app


async def metrics(request: web.Request) -> web.Response:
    """Prometheus text format: the process's counters (e.g. server-side tools dropped, engine/tools/tools.py), or, under
    ``serve --workers``, every worker's added up."""
    from prometheus_client import CONTENT_TYPE_LATEST

    from ...observability.metrics import scrape

    return web.Response(body=await asyncio.to_thread(scrape), headers={"Content-Type": CONTENT_TYPE_LATEST})


async def favicon(request: web.Request) -> web.Response:
    """No icon: a 204 a browser caches for a day, instead of the 401 (keys) or 404 every console page's request for
    it met before."""
    return web.Response(status=204, headers={"Cache-Control": "max-age=86400"})


async def health(request: web.Request) -> web.Response:
    return web.Response(body=b'{"status":"ok"}', content_type="application/json")


async def health_live(request: web.Request) -> web.Response:
    """The process answers: always 200 (restart it only when this stops answering)."""
    return web.Response(body=b'{"status":"live"}', content_type="application/json")


async def health_ready(request: web.Request) -> web.Response:
    """200 when new work can be taken (store open and migrated, writes not stalled, not draining); else 503 with
    the failed checks named in the body."""
    runtime = request.app[RUNTIME]
    readiness = check_readiness(runtime.store, stall_limit_seconds=runtime.settings.store_stall_seconds,
                                draining=runtime.draining)
    return web.Response(body=orjson.dumps(readiness.body()), status=200 if readiness.ready else 503,
                        content_type="application/json")


async def models(request: web.Request) -> web.Response:
    """The upstream's model list, passed through (the bridge serves whatever models the backend has), with the
    deployment's embedder after them (``POST /v1/embeddings`` answers it)."""
    runtime = request.app[RUNTIME]
    refuse_returning_call(request, runtime)
    authorization = runtime.upstream_authorization(request.headers.get("Authorization"))
    try:
        async with request.app[UPSTREAM].get("models", authorization) as response:
            body = await request.app[UPSTREAM].read_answer(response)
            status = response.status
    except UpstreamFailure as failure:
        raise failure.error from None
    if status >= 400:
        raise _models_error(status, body)
    embedder = request.app[EMBEDDER]
    try:
        decoded = orjson.loads(body) if embedder is not None else None
    except orjson.JSONDecodeError:
        decoded = None
    if isinstance(decoded, dict) and isinstance(decoded.get("data"), list):
        return models_answer(request, with_embedder(decoded, embedder))
    # Codex's catalog request gets its ``models`` too (upstream/codex_models.py)
    return passthrough_answer(request, body)


def _models_error(status: int, body: bytes) -> APIError:
    try:
        error = orjson.loads(body).get("error") or {}
        message = error.get("message") or f"HTTP {status}"
    except (orjson.JSONDecodeError, AttributeError):
        message = f"HTTP {status}"
    return APIError(status if status < 500 else 502, f"Listing the upstream's models failed: {message}")
