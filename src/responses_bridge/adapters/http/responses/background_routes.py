"""HTTP door routes for background responses: start (from ``POST /v1/responses``), stream/resume, cancel."""

from __future__ import annotations

from collections.abc import Mapping

import orjson
import structlog
from aiohttp import web

from ....engine.sse import DONE_FRAME
from ....engine.wire import UpstreamRequest
from ....run.runs import Run
from ....run.upstream import UpstreamClient
from ....runtime import Runtime
from ....services.responses.background import BackgroundService
from ..identity import request_tenant
from ..limits import request_slot
from ..params import int_query
from ..routes import api_routes

SSE_HEADERS = {"Cache-Control": "no-cache", "X-Accel-Buffering": "no"}

log = structlog.get_logger("responses_bridge.http")


def _service(runtime: Runtime) -> BackgroundService:
    return runtime.background


async def start(request: web.Request, runtime: Runtime, response_run: Run, call: UpstreamRequest | None,
                authorization: str | None = None, upstream: UpstreamClient | None = None, *,
                request_body: bytes | None = None) -> web.StreamResponse:
    """``POST /v1/responses`` with ``background: true``: the queued response (JSON), or with ``stream: true`` the
    events as they happen. ``authorization`` and ``upstream``: a routed request's (default: the one upstream's).
    ``request_body``: kept with the run, so another process can resume it (services/responses/background_resume.py)."""
    service = _service(runtime)
    if upstream is None:
        authorization = runtime.upstream_authorization(request.headers.get("Authorization"))
    header = request.headers.get("Authorization")
    run = await service.start(response_run, call, authorization, upstream, request_body=request_body,
                              client_credentials=header is not None and authorization == header)
    slot = request_slot(request)
    if slot is not None:  # the run calls the upstream after this request ends: it keeps the tenant's slot
        slot.hold_until(run.task)
    if not response_run.request.params.stream:  # type: ignore[union-attr]
        return web.Response(body=run.accepted, content_type="application/json")
    return await _stream(request, service, run.response_id, -1, response_run.tenant)


async def stream_events(request: web.Request, runtime: Runtime, response_id: str) -> web.StreamResponse:
    """``GET /v1/responses/{id}?stream=true[&starting_after=N]``: stored events after N, then live ones."""
    service = _service(runtime)
    starting_after = int_query(request, "starting_after", -1) if request.query.get("starting_after") else -1
    tenant = request_tenant(request)
    await service.check_streamable(response_id, tenant=tenant)
    return await _stream(request, service, response_id, starting_after, tenant)


async def _stream(request: web.Request, service: BackgroundService, response_id: str,
                  after: int, tenant: str) -> web.StreamResponse:
    response = web.StreamResponse(status=200, headers=SSE_HEADERS)
    response.content_type = "text/event-stream"
    response.charset = "utf-8"
    await response.prepare(request)
    frames = aiter(service.events_after(response_id, after, tenant=tenant))
    while True:
        try:
            chunk = await anext(frames)
        except StopAsyncIteration:
            break
        except Exception as exc:  # noqa: BLE001 - its head is sent: no error answer can follow it
            # the run is not over (its terminal event would say so): the stream ends without ``[DONE]``, which a
            # client reads as cut short, and follows again with ``starting_after`` the last number it saw. Raised
            # on, the error middleware's answer could not replace what was sent and the connection stayed open
            log.warning("background_stream_cut", response_id=response_id, error=repr(exc)[:300])
            return response
        await response.write(chunk)  # a reader gone raises here, and ends the handler as before
    await response.write(DONE_FRAME)
    await response.write_eof()
    return response


def register(app: web.Application, runtime: Runtime, upstream: UpstreamClient,
             clients: Mapping[str, UpstreamClient] | None = None) -> None:
    """Cancel, compaction and input token counting (WebSocket mode is in responses_routes.py)."""
    from .compaction_routes import CompactionRoutes

    async def cancel(request: web.Request) -> web.Response:
        response = await _service(runtime).cancel(request.match_info["response_id"], tenant=request_tenant(request))
        return web.Response(body=orjson.dumps(response), content_type="application/json")

    with api_routes(app) as routes:
        routes.post("/responses/{response_id}/cancel", cancel)
    CompactionRoutes(runtime, upstream, clients).register(app)


def wants_stream(request: web.Request) -> bool:
    return request.query.get("stream", "").lower() in ("true", "1")
