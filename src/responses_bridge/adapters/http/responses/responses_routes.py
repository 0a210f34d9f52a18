"""``/v1/responses`` routes of the HTTP door (also served without the ``/v1`` prefix)."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Mapping

import orjson
import structlog
from aiohttp import web

from ....engine.sse import KEEPALIVE_COMMENT
from ....engine.wire import Reply
from ....observability import metrics
from ....process.off_loop_import import import_off_loop
from ....protocol.errors import APIError, not_found
from ....protocol.lists import list_body
from ....protocol.responses.request import parse_json_object
from ....protocol.tools.multi_agent import (
    BETA_HEADER,
    NOT_BETA,
    OPEN_RESPONSES_VERSION_HEADER,
    BetaSurface,
    beta_surface,
)
from ....run.drive import drive
from ....run.response_run import LARGE_BODY_BYTES
from ....run.runs import Run
from ....run.upstream import UpstreamClient
from ....runtime import Runtime
from ....services.pagination import page_errors
from ....services.responses import listing
from ....services.responses.idempotency import IDEMPOTENCY_HEADER, Answered, Claim
from ....services.tenancy.limits import RETRY_AFTER_SECONDS
from ...pieces import PIECE_BYTES, write_in_pieces
from ..drain import DRAIN
from ..identity import request_tenant
from ..json_keepalive import answer_kept_alive
from ..observe import STARTED
from ..params import metadata_query, page_query, read_body
from ..routes import api_routes
from . import background_routes, idempotent_replay
from .let_go import LetGoResponse

log = structlog.get_logger("responses_bridge.http")

ACTIVE_STREAMS = metrics.ACTIVE["http"]
FIRST_EVENT = metrics.FIRST_EVENT["http"]
SSE_HEADERS = {"Cache-Control": "no-cache", "X-Accel-Buffering": "no"}


def _beta(request: web.Request) -> BetaSurface:
    """The request's multi-agent beta surface (protocol/tools/multi_agent.py). Most requests name neither the query nor
    the header, nor an Open Responses version: those skip parsing the query string into a multidict (a cost every
    JSON request paid)."""
    headers = request.headers
    if not request.query_string and BETA_HEADER not in headers and OPEN_RESPONSES_VERSION_HEADER not in headers:
        return NOT_BETA
    return beta_surface(request.query, request.headers)


class ResponsesRoutes:
    def __init__(self, runtime: Runtime, upstream: UpstreamClient,
                 clients: Mapping[str, UpstreamClient] | None = None) -> None:
        self.runtime = runtime
        self.upstream = upstream
        self.clients = clients or {}  # the door's own, per configured upstream (config/upstreams.py)

    def register(self, app: web.Application) -> None:
        with api_routes(app) as routes:
            routes.post("/responses", self.create)
            routes.get("/responses", self.list_or_upgrade)
            routes.get("/responses/{response_id}", self.retrieve)
            routes.delete("/responses/{response_id}", self.delete)
            routes.get("/responses/{response_id}/input_items", self.input_items)

    async def create(self, request: web.Request) -> web.StreamResponse:
        key = request.headers.get(IDEMPOTENCY_HEADER)
        if key is None:
            return await self._create(request, None, None)
        # a retry of a request already answered gets its answer, and runs nothing (services/responses/idempotency.py)
        tenant = request_tenant(request)
        body = await read_body(request)
        held = await self.runtime.idempotency.claim(key, body, tenant=tenant)
        if isinstance(held, Answered):
            return await idempotent_replay.replay(request, self.runtime, held, body, tenant=tenant)
        try:
            return await self._create(request, body, held)
        finally:  # ended before it answered (refused, failed in the bridge): the key is free again
            await asyncio.shield(held.settle(None, answered=False))

    async def _create(self, request: web.Request, body: bytes | None, claim: Claim | None) -> web.StreamResponse:
        """``body``: the request's bytes when already read; ``claim``: its ``Idempotency-Key``, settled once the
        request has answered, before its last bytes leave."""
        upstream = self.upstream
        tenant = request_tenant(request)
        if self.clients:  # several upstreams: the request's model picks one (config/upstreams.py)
            if body is None:
                body = await read_body(request)
            large = len(body) > LARGE_BODY_BYTES
            decoded = await asyncio.to_thread(parse_json_object, body) if large else parse_json_object(body)
            del body
            route = self.runtime.route(decoded.get("model"))
            run = self.runtime.new_routed_run(route, tool_loop=True, tools=decoded.get("tools"),  # native, translated
                                              tenant=tenant)
            run.beta = _beta(request)
            kept = orjson.dumps(decoded) if decoded.get("background") is True else None  # to resume it elsewhere
            call = await run.begin(decoded, large=large)
            del decoded
            upstream = self.clients[route.upstream.name]
            authorization = self.runtime.route_authorization(route, request.headers.get("Authorization"))
            if run.background:
                started = await background_routes.start(request, self.runtime, run, call, authorization,
                                                        self.runtime.client_for(route), request_body=kept)
                return await _settled(claim, run, started)
        else:
            run = self.runtime.new_run(tool_loop=True, tenant=tenant)
            run.beta = _beta(request)
            call = await run.begin(body if body is not None else await read_body(request))  # the bytes die parsed
            del body
            if run.background:  # its bytes are kept (sealed) so another process can resume it
                started = await background_routes.start(request, self.runtime, run, call,
                                                        request_body=run.background_body)
                return await _settled(claim, run, started)
            authorization = self.runtime.upstream_authorization(request.headers.get("Authorization"))
        sink = _EventStream(request)
        try:
            work = drive(run, call, upstream, authorization, sink, deadline=request.app[DRAIN].deadline(),
                         keepalive=self.runtime.settings.stream_keepalive_seconds)
            every = self.runtime.settings.json_keepalive_interval()
            if run.streaming or not every:
                reply = await work
                if claim is not None:
                    await claim.settle(run.response_id, answered=reply.status == 200 or run.effects_made)
                return await _deliver(request, reply, sink.stream)
            # one JSON body: a long run commits to 200 and keeps its connection alive (json_keepalive.py)
            reply, committed = await answer_kept_alive(request, run, work, every)
            if claim is not None:
                await claim.settle(run.response_id, answered=reply.status == 200 or run.effects_made)
            return await _deliver(request, reply, committed)
        except (asyncio.CancelledError, ConnectionResetError):
            # the client went away: the upstream call was cancelled with us; record what happened
            await run.abandon()
            if claim is not None:  # its retries get the response recorded, once a call with effects was made
                await asyncio.shield(claim.settle(run.response_id, answered=run.effects_made))
            raise
        finally:
            sink.close()

    async def list_or_upgrade(self, request: web.Request) -> web.StreamResponse:
        """One path, two things: with ``Upgrade: websocket`` it is WebSocket mode
        (adapters/http/websocket/connection.py, which answers an incomplete handshake with its own error); a plain GET
        lists the stored responses. WebSocket mode's modules (~60 KB) are imported by its first connection."""
        if "websocket" in request.headers.get("Upgrade", "").lower():
            await import_off_loop("..websocket.connection", __package__)
            from ..websocket import connection as websocket

            return await websocket.handle(request, self.runtime, self.upstream, self.clients)
        query = request.query
        where = listing.response_filter(query.get("model"), query.get("status"), metadata_query(request))
        body = await listing.list_responses(self.runtime.store, tenant=request_tenant(request), where=where,
                                            **page_query(request))
        return web.Response(body=body, content_type="application/json")

    async def retrieve(self, request: web.Request) -> web.StreamResponse:
        response_id = request.match_info["response_id"]
        if background_routes.wants_stream(request):
            return await background_routes.stream_events(request, self.runtime, response_id)
        response = await self.runtime.store.get_response(response_id, tenant=request_tenant(request))
        if response is None:
            raise _response_not_found(response_id)
        return web.Response(body=orjson.dumps(response), content_type="application/json")

    async def delete(self, request: web.Request) -> web.Response:
        response_id = request.match_info["response_id"]
        tenant = request_tenant(request)
        await self.runtime.background.forget(response_id, tenant=tenant)  # a running one stops before it goes
        if not await self.runtime.store.delete_response(response_id, tenant=tenant):
            raise _response_not_found(response_id)
        return web.Response(body=orjson.dumps({"id": response_id, "object": "response", "deleted": True}),
                            content_type="application/json")

    async def input_items(self, request: web.Request) -> web.Response:
        response_id = request.match_info["response_id"]
        with page_errors("input item"):
            page = await self.runtime.store.list_input_items(response_id, tenant=request_tenant(request),
                                                             **page_query(request))
        if page is None:
            raise _response_not_found(response_id)
        body = list_body(page.data, has_more=page.has_more, first_id=page.first_id, last_id=page.last_id)
        return web.Response(body=orjson.dumps(body), content_type="application/json")


class _EventStream:
    """The HTTP door's :class:`~responses_bridge.run.drive.TurnSink`: the SSE response, opened on the run's first
    head (a JSON answer has none: nothing is written before its one body). Counted in the active streams gauge
    while open; the time to its first event is recorded once."""

    def __init__(self, request: web.Request) -> None:
        self.request = request
        self.stream: web.StreamResponse | None = None
        self._first_event = True
        self._lock = asyncio.Lock()  # a keep-alive comment never lands inside another write

    async def open(self, head: bytes) -> None:
        if self.stream is None:
            self.stream = await _open_stream(self.request, head)
            ACTIVE_STREAMS(1)

    async def write(self, data: bytes) -> None:
        if self.stream is None:
            return
        # the lock taken and given without ``async with`` (its __aenter__ and __aexit__ are two coroutines more a
        # chunk, each run to its end: ~0.6 µs of a streamed chunk's ~30), the same exclusion
        lock = self._lock
        await lock.acquire()
        try:
            if len(data) > PIECE_BYTES:  # in pieces (pieces.py), no keep-alive between them
                await write_in_pieces(self.stream.write, data)
            else:
                await self.stream.write(data)
        finally:
            lock.release()
        if self._first_event:
            self._first_event = False
            FIRST_EVENT(time.perf_counter() - self.request[STARTED])

    def ending(self) -> None:
        pass

    async def keepalive(self) -> None:
        if self.stream is not None:
            async with self._lock:
                await self.stream.write(KEEPALIVE_COMMENT)

    def close(self) -> None:
        if self.stream is not None:
            ACTIVE_STREAMS(-1)


async def _open_stream(request: web.Request, head: bytes) -> web.StreamResponse:
    stream = web.StreamResponse(status=200, headers=SSE_HEADERS)
    stream.content_type = "text/event-stream"
    stream.charset = "utf-8"
    await stream.prepare(request)
    await _write(stream, head)
    return stream


async def _write(stream: web.StreamResponse, data: bytes) -> None:
    """Bytes of an open event stream: a large write in pieces, so the event loop is never held by it."""
    if len(data) > PIECE_BYTES:
        await write_in_pieces(stream.write, data)
    else:
        await stream.write(data)


async def _deliver(request: web.Request, reply: Reply, stream: web.StreamResponse | None) -> web.StreamResponse:
    if stream is None:
        if reply.content_type.startswith("text/event-stream"):
            stream = await _open_stream(request, reply.body)
            await stream.write_eof()
            return stream
        answer = LetGoResponse(status=reply.status, body=reply.body, content_type=reply.content_type.split(";")[0])
        if reply.status == 503:  # the run's retryable failures (work taken back, no upstream place): the SDKs retry
            answer.headers["Retry-After"] = str(RETRY_AFTER_SECONDS)
        return answer
    await _write(stream, reply.body)
    await stream.write_eof()
    return stream


async def _settled(claim: Claim | None, run: Run, answer: web.StreamResponse) -> web.StreamResponse:
    """A background request answered (queued, or its stream ended): its key now names its response."""
    if claim is not None:
        await claim.settle(run.response_id, answered=True)
    return answer


def _response_not_found(response_id: str) -> APIError:
    return not_found(f"No response found with id '{response_id}'.", param="response_id", code="not_found")


