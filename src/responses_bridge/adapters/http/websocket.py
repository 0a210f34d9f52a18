"""WebSocket mode: ``GET /v1/responses`` (or ``/responses``) with ``Upgrade: websocket``.

The client sends text frames ``{"type": "response.create", ...the fields of a POST /v1/responses body}`` and gets
the same events a streamed POST gets, one JSON object per text frame (no ``event:`` lines, no ``[DONE]``). Turns
run one after another on a socket; each is one :class:`~responses_bridge.run.response_run.ResponseRun` with JSON-line
framing, so nothing is re-parsed on the way out.

``store: false`` turns are remembered by the connection (up to ``CACHE_SIZE`` of them), so a later turn on the
same socket can continue them with ``previous_response_id``; another socket cannot (``previous_response_not_found``).
A turn that fails evicts the response it continued from the cache, and a failed response is never cached. A
``stream_id`` sent with ``response.create`` is echoed on every event (and error) of that turn; ``generate: false``
prepares a turn (stored or cached, continuable) without calling the model: it completes with no output.
Errors are ``{"type": "error", "status": N, "error": {"code", "message", "param", "type"}}`` frames; the socket
stays open for the next turn. When the door drains (shutdown, ``drain.py``) a socket closes (1001, going away)
after its running turn, which the drain deadline may end with ``response.failed``; an idle socket closes at once.
"""

from __future__ import annotations

import asyncio
from collections import OrderedDict, deque
from collections.abc import Mapping
from contextlib import AbstractAsyncContextManager, nullcontext
from typing import Any

import orjson
import structlog
from aiohttp import WSCloseCode, WSMsgType, web

from ...engine.sse import DONE_FRAME
from ...engine.wire import JSON_CONTENT_TYPE
from ...protocol.errors import APIError
from ...protocol.request_checks import check_depth
from ...run.drive import CallbackSink, drive
from ...run.runs import Run
from ...run.upstream import UpstreamClient
from ...runtime import Runtime
from ...store.base import ResponseStore
from .drain import DRAIN, Drain
from .identity import request_tenant
from .params import BODY_LIMIT

log = structlog.get_logger("responses_bridge.websocket")

CACHE_SIZE = 64


class PendingTurns:
    """Messages read from the socket but not yet run, bounded in bytes. A client may send its next turns while
    one runs; past ``budget`` bytes waiting (one message is always let in, whatever its size) the reader stops
    reading until a turn is taken, so the socket's buffers fill and TCP holds the client back, instead of the
    process holding every frame a fast client sends. ``None`` (the door drains) goes in at once."""

    def __init__(self, budget: int) -> None:
        self._budget = budget
        self._messages: deque[str | bytes | None] = deque()
        self._bytes = 0
        self._arrived = asyncio.Event()  # one reader, one worker: two events are all the signalling needed
        self._taken = asyncio.Event()

    @property
    def waiting_bytes(self) -> int:
        return self._bytes

    def put_nowait(self, message: str | bytes | None) -> None:
        """In at once, whatever is waiting."""
        self._messages.append(message)
        self._bytes += len(message) if message is not None else 0
        self._arrived.set()

    async def put(self, message: str | bytes) -> None:
        while self._messages and self._bytes + len(message) > self._budget:
            self._taken.clear()
            await self._taken.wait()
        self.put_nowait(message)

    async def get(self) -> str | bytes | None:
        while not self._messages:
            self._arrived.clear()
            await self._arrived.wait()
        message = self._messages.popleft()
        self._bytes -= len(message) if message is not None else 0
        self._taken.set()
        return message


class ConnectionStore:
    """The runtime's store, with this connection's ``store: false`` turns in front of it for history loads."""

    def __init__(self, store: ResponseStore) -> None:
        self._store = store
        self.cache: OrderedDict[str, list[dict]] = OrderedDict()
        self.loaded: list[dict] = []  # the chain history the current turn continued

    async def load_history(self, response_id: str, *, tenant: str) -> list[dict] | None:
        # the cache holds this connection's own turns, all of its one tenant
        cached = self.cache.get(response_id)
        history = list(cached) if cached is not None else await self._store.load_history(response_id, tenant=tenant)
        self.loaded = list(history) if history is not None else []
        return history

    def remember(self, response_id: str, history: list[dict]) -> None:
        self.cache[response_id] = history
        self.cache.move_to_end(response_id)
        while len(self.cache) > CACHE_SIZE:
            self.cache.popitem(last=False)

    def __getattr__(self, name: str) -> Any:  # save_response, get_response, ...: the real store
        return getattr(self._store, name)


def error_frame(error: APIError) -> str:
    status = error.status
    if error.code == "previous_response_not_found":
        status = 400  # as the spec's WebSocket mode reports it (HTTP says 404)
    return orjson.dumps({"type": "error", "status": status,
                         "error": {"code": error.code, "message": error.message, "param": error.param,
                                   "type": error.type if status == error.status else "invalid_request_error"}}).decode()


class WebSocketSession:
    def __init__(self, runtime: Runtime, upstream: UpstreamClient, ws: web.WebSocketResponse,
                 authorization: str | None, drain: Drain | None = None,
                 clients: Mapping[str, UpstreamClient] | None = None,
                 client_authorization: str | None = None, *, tenant: str) -> None:
        self.runtime = runtime
        self.tenant = tenant  # the upgrade request's: every turn of the connection is this tenant's
        self.upstream = upstream
        self.clients = clients or {}  # several upstreams: each turn goes to its model's (upstreams.py)
        self.client_authorization = client_authorization
        self.ws = ws
        self.authorization = authorization
        self.store = ConnectionStore(runtime.store)
        self.stream_id_suffix = b""  # ',"stream_id":"…"}' when the current turn has a stream_id to echo
        self.drain = drain  # None: no deadline (a session driven outside the HTTP door)
        self.closing = False  # the door drains: the socket is closing itself after its turn

    async def send_lines(self, data: bytes) -> None:
        suffix = self.stream_id_suffix
        for line in data.split(b"\n"):
            if line:
                if suffix:  # every event is a JSON object: add the key before its closing brace
                    line = line[:-1] + suffix
                await self.ws.send_str(line.decode())

    async def send_error(self, error: APIError) -> None:
        frame = error_frame(error)
        if self.stream_id_suffix:
            frame = frame[:-1] + self.stream_id_suffix.decode()
        await self.ws.send_str(frame)

    async def turn(self, text: str | bytes) -> None:
        self.stream_id_suffix = b""
        try:
            raw = orjson.loads(text)
        except orjson.JSONDecodeError:
            await self.ws.send_str(error_frame(APIError(400, "The message is not valid JSON.",
                                                        code="invalid_json")))
            return
        if not isinstance(raw, dict):
            await self.ws.send_str(error_frame(APIError(400, "The message must be a JSON object.",
                                                        code="invalid_type")))
            return
        try:
            check_depth(raw)  # before it is serialised again for the run
        except APIError as error:
            await self.ws.send_str(error_frame(error))
            return
        kind = raw.pop("type", None)
        if kind != "response.create":
            await self.ws.send_str(error_frame(APIError(
                400, f"Unsupported event type {kind!r}: send 'response.create'.", param="type",
                code="unsupported_event_type")))
            return
        stream_id = raw.pop("stream_id", None)  # echoed on every event of this turn
        self.stream_id_suffix = (b',"stream_id":' + orjson.dumps(stream_id) + b"}"
                                 if isinstance(stream_id, str) else b"")
        generate = raw.pop("generate", True) is not False
        for key in ("stream", "stream_options"):  # streaming is implicit here
            raw.pop(key, None)
        if raw.get("background"):
            await self.send_error(APIError(400, "'background' is not supported in WebSocket mode.",
                                           param="background", code="unsupported_parameter"))
            return
        previous = raw.get("previous_response_id") if isinstance(raw.get("previous_response_id"), str) else None
        run = self.runtime.new_run_framed("json", self.store, tenant=self.tenant)
        upstream, authorization = self.upstream, self.authorization
        if self.clients:  # translated here even on a native route: its backend also serves Chat Completions
            try:
                route = self.runtime.route(raw.get("model"))
            except APIError as error:
                await self.send_error(error)
                return
            upstream = self.clients[route.upstream.name]
            authorization = self.runtime.route_authorization(route, self.client_authorization)
            run.use_options(self.runtime.route_options(route))
        self.store.loaded = []
        try:
            call = await run.begin(orjson.dumps(raw))
        except APIError as error:
            self._evict(previous)
            await self.send_error(error)
            return
        try:
            if generate:
                await self._run(run, call, upstream, authorization)
            else:  # warm-up: the turn's state is prepared (and cached) without asking the model anything
                head = run.on_upstream_headers(200, "text/event-stream") or b""
                await self.send_lines(head + run.on_upstream_chunk(DONE_FRAME)
                                      + (await run.finish()).body)
        except (asyncio.CancelledError, ConnectionResetError):
            await run.abandon()
            raise
        response = run.response or {}
        if response.get("status") in ("completed", "incomplete") and not run.compaction_turn:
            self.store.remember(response["id"], self.store.loaded + run.request.input_items  # type: ignore[union-attr]
                                + list(response.get("output") or []))
        else:
            self._evict(previous)

    async def _run(self, run: Run, call: Any, upstream: UpstreamClient, authorization: str | None) -> None:
        reply = await drive(run, call, upstream, authorization, CallbackSink(self._send_events),
                            deadline=self._deadline())
        if reply.content_type == JSON_CONTENT_TYPE and reply.status >= 400:  # refused before any event
            try:
                error = orjson.loads(reply.body)["error"]
                api_error = APIError(reply.status, error.get("message") or "Request failed.", type=error.get("type"),
                                     param=error.get("param"), code=error.get("code"))
            except (orjson.JSONDecodeError, KeyError, TypeError, AttributeError):
                api_error = APIError(reply.status, "The request failed.", code="server_error")
            await self.send_error(api_error)
            return
        await self.send_lines(reply.body)

    async def _send_events(self, data: bytes) -> None:
        if data:
            await self.send_lines(data)

    def _deadline(self) -> AbstractAsyncContextManager[None]:
        return self.drain.deadline() if self.drain is not None else nullcontext()

    async def close_for_shutdown(self) -> None:
        self.closing = True
        await self.ws.close(code=WSCloseCode.GOING_AWAY, message=b"server shutting down")

    def _evict(self, previous: str | None) -> None:
        if previous is not None:
            self.store.cache.pop(previous, None)


async def handle(request: web.Request, runtime: Runtime, upstream: UpstreamClient,
                 clients: Mapping[str, UpstreamClient] | None = None) -> web.StreamResponse:
    limit = request.get(BODY_LIMIT) or runtime.settings.max_request_bytes  # the tenant's own (limits.py)
    ws = web.WebSocketResponse(heartbeat=30.0, max_msg_size=limit)
    if not ws.can_prepare(request).ok:
        raise APIError(400, "GET /v1/responses is WebSocket mode: open it with 'Upgrade: websocket', or create "
                       "a response with POST /v1/responses.", code="websocket_upgrade_required")
    await ws.prepare(request)
    drain = request.app[DRAIN]
    session = WebSocketSession(runtime, upstream, ws,
                               runtime.upstream_authorization(request.headers.get("Authorization")), drain,
                               clients, request.headers.get("Authorization"), tenant=request_tenant(request))
    # Turns run one at a time in a worker while this loop keeps reading, so pings, pongs and a close are seen
    # even during a long turn (a close cancels the turn, which is then recorded as abandoned).
    queue = PendingTurns(runtime.settings.max_request_bytes)  # None: the door drains, close after the turn
    worker = asyncio.create_task(_turns(session, queue))
    forget = drain.on_drain(lambda: queue.put_nowait(None))
    try:
        async for message in ws:
            if message.type in (WSMsgType.TEXT, WSMsgType.BINARY):
                await queue.put(message.data)
            elif message.type == WSMsgType.ERROR:
                break
    finally:
        forget()
        if not session.closing:  # else the worker is sending the close frame: let it finish
            worker.cancel()
        await asyncio.gather(worker, return_exceptions=True)
    return ws


async def _turns(session: WebSocketSession, queue: PendingTurns) -> None:
    while True:
        data = await queue.get()
        if data is None or session.runtime.draining:
            await session.close_for_shutdown()
            return
        try:
            await session.turn(data)
        except (asyncio.CancelledError, ConnectionResetError):
            raise
        except Exception:
            log.exception("websocket_turn_failed")
            if not session.ws.closed:
                await session.ws.send_str(error_frame(APIError(500, "The server had an error while processing "
                                                               "the request.", code="server_error")))
