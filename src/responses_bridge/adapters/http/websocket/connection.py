"""WebSocket mode: ``GET /v1/responses`` (or ``/responses``) with ``Upgrade: websocket``.

The client sends text frames ``{"type": "response.create", ...the fields of a POST /v1/responses body}`` and gets
the same events a streamed POST gets, one JSON object per text frame (no ``event:`` lines, no ``[DONE]``). Each
turn is one :class:`~responses_bridge.run.response_run.ResponseRun` with JSON-line framing, so nothing is re-parsed
on the way out.

Lanes (lanes.py): a ``stream_id`` on ``response.create`` names the turn's lane. Turns on one
lane run one after another (FIFO), lanes run at once, every event (and error) of a lane's turn echoes its ``stream_id``;
without one a turn goes to the default lane and its events carry no ``stream_id``, one turn at a time as before
lanes. At most ``websocket_max_lanes`` lanes are busy at once; a turn that would open one more is refused
(``too_many_lanes``). The connection holds one request slot of its tenant (limits.py) whatever its lanes, and
one of its tenant's ``max_websocket_connections``: one more is refused before the upgrade (a 429).

``store: false`` turns are remembered by the connection (up to ``CACHE_SIZE`` of them), so a later turn on the
same socket, on any lane, can continue them with ``previous_response_id`` (a lane may fork another's chain);
another socket cannot (``previous_response_not_found``). A turn that fails evicts the response it continued from
the cache, and a failed response is never cached. ``generate: false`` prepares a turn (stored or cached,
continuable) without calling the model: it completes with no output.
Errors are ``{"type": "error", "status": N, "error": {"code", "message", "param", "type"}}`` frames; the socket
stays open for the next turn. When the door drains (shutdown, ``drain.py``) a socket closes (1001, going away)
after its running turns, which the drain deadline may end with ``response.failed``; an idle socket closes at once.
A socket the client closes cancels every lane's running turn, each recorded as failed (``client_disconnected``).

``response.steer`` frames (steering.py) queue user input for a response running on the
connection: answered at once on that response's lane; the response stops at its next boundary between model turns (or
completes), and a successor continuing it with the queued input runs next on the same lane, in the same lane
task. Queued steering input lives in the connection and is dropped with it. ``response.inject`` frames
(inject.py) commit client-owned tool output to a response of the connection that waits for it,
which goes on as a successor on its lane.

What a connection holds besides its running turns is bounded by ``max_request_bytes`` twice over, each as bytes:
the turns waiting on its lanes (past it the socket is not read) and its queued steering input (past it a steer is
refused).
"""

from __future__ import annotations

import asyncio
from collections import OrderedDict
from collections.abc import Mapping
from contextlib import AbstractAsyncContextManager, nullcontext
from typing import Any

import orjson
import structlog
from aiohttp import WSCloseCode, WSMsgType, web

from ....engine.sse import DONE_FRAME
from ....engine.wire import JSON_CONTENT_TYPE
from ....fairness.memory_charge import body_cost
from ....observability.timing import Timing
from ....protocol.errors import APIError
from ....protocol.request_checks import check_depth
from ....protocol.responses.request import check_input_count
from ....protocol.tools.multi_agent import NOT_BETA, BetaSurface, beta_surface
from ....run.drive import CallbackSink, drive
from ....run.runs import Run
from ....run.upstream import UpstreamClient
from ....runtime import Runtime
from ....store.base import ResponseStore
from ..drain import DRAIN, Drain
from ..identity import request_tenant
from ..limits import limit_response, request_slot
from ..params import BODY_LIMIT
from .inject import Injections
from .lanes import Lanes
from .steering import Steer, Steering

log = structlog.get_logger("responses_bridge.websocket")

CACHE_SIZE = 64


class ConnectionStore:
    """The runtime's store, with this connection's ``store: false`` turns in front of it for history loads. One
    per turn (lanes run turns at once, each continuing its own chain); the cache is the connection's."""

    def __init__(self, store: ResponseStore, cache: OrderedDict[str, list[dict]], *, max_items: int) -> None:
        self._store = store
        self.cache = cache
        self._max_items = max_items  # items the cache holds at most, summed over its turns (the newest always)
        self.loaded: list[dict] = []  # the chain history this turn continued

    async def load_history(self, response_id: str, *, tenant: str) -> list[dict] | None:
        # the cache holds this connection's own turns, all of its one tenant
        cached = self.cache.get(response_id)
        history = list(cached) if cached is not None else await self._store.load_history(response_id, tenant=tenant)
        self.loaded = list(history) if history is not None else []
        return history

    def remember(self, response_id: str, history: list[dict]) -> None:
        """Keep a turn's history for the next turn of this connection. Bounded by turns and by items: a client
        sending large ``store: false`` turns one after another holds what one of them costs, not 64 of them
        (continuing from an evicted turn is a 400 previous_response_not_found, as on OpenAI, whose connection
        keeps its latest response only)."""
        self.cache[response_id] = history
        self.cache.move_to_end(response_id)
        held = sum(map(len, self.cache.values()))
        while len(self.cache) > 1 and (len(self.cache) > CACHE_SIZE or held > self._max_items):
            held -= len(self.cache.popitem(last=False)[1])

    def __getattr__(self, name: str) -> Any:  # save_response, get_response, ...: the real store
        return getattr(self._store, name)


def error_frame(error: APIError) -> str:
    status = error.status
    if error.code == "previous_response_not_found":
        status = 400  # as the spec's WebSocket mode reports it (HTTP says 404)
    return orjson.dumps({"type": "error", "status": status,
                         "error": {"code": error.code, "message": error.message, "param": error.param,
                                   "type": error.type if status == error.status else "invalid_request_error"}}).decode()


def lane_suffix(stream_id: str | None) -> bytes:
    """``,"stream_id":"…"}``: what replaces the closing brace of each of a lane's events (every event is a JSON
    object); empty on the default lane, whose events carry no ``stream_id``."""
    return b',"stream_id":' + orjson.dumps(stream_id) + b"}" if stream_id is not None else b""


class WebSocketSession:
    def __init__(self, runtime: Runtime, upstream: UpstreamClient, ws: web.WebSocketResponse,
                 authorization: str | None, drain: Drain | None = None,
                 clients: Mapping[str, UpstreamClient] | None = None,
                 client_authorization: str | None = None, *, tenant: str, beta: BetaSurface = NOT_BETA) -> None:
        self.runtime = runtime
        self.tenant = tenant  # the upgrade request's: every turn of the connection is this tenant's
        # the upgrade request's too: a socket opened at /v1/responses?beta=true with the multi-agent beta header
        # (client.beta.responses.connect(extra_query=…, extra_headers=…)) takes ``multi_agent`` in its creates
        self.beta = beta
        self.memory_holder = runtime.memory.holder(tenant, client_authorization)  # whose share its turns hold
        self.upstream = upstream
        self.clients = clients or {}  # several upstreams: each turn goes to its model's (config/upstreams.py)
        self.client_authorization = client_authorization
        self.ws = ws
        self.authorization = authorization
        self.cache: OrderedDict[str, list[dict]] = OrderedDict()  # this connection's store: false turns
        self.drain = drain  # None: no deadline (a session driven outside the HTTP door)
        self.closing = False  # the door drains: the socket is closing itself after its turns
        self.closer: asyncio.Task[None] | None = None
        self.lanes = Lanes(self.run_turn, max_lanes=runtime.settings.websocket_max_lanes,
                           budget=runtime.settings.max_request_bytes)
        # Lanes send at once: one frame at a time goes to the socket, so frames never interleave, and a lane
        # waits for the socket only as long as the frame before its own takes to write.
        self._send_lock = asyncio.Lock()
        self.steering = Steering(self.send_frames, budget=runtime.settings.max_request_bytes)
        self.injections = Injections(self.steering, self.queue_turn, self.send_error,
                                     budget=runtime.settings.max_request_bytes)

    async def send_frames(self, frames: list[str]) -> None:
        async with self._send_lock:
            for frame in frames:
                await self.ws.send_str(frame)

    async def send_lines(self, data: bytes, suffix: bytes = b"") -> None:
        lines = [line for line in data.split(b"\n") if line]
        if suffix:
            lines = [line[:-1] + suffix for line in lines]
        await self.send_frames([line.decode() for line in lines])

    async def send_error(self, error: APIError, suffix: bytes = b"") -> None:
        frame = error_frame(error)
        if suffix:
            frame = frame[:-1] + suffix.decode()
        await self.send_frames([frame])

    async def receive(self, frame: bytes) -> None:
        """One message from the socket: refused at once, or queued on its lane (waiting while too many bytes
        wait already). Every check a frame gets before its turn runs is made here, so its error comes at once;
        then the parsed form is dropped and the turn waits as ``frame`` itself (lanes.py)."""
        if self.lanes.stopping:
            return  # the door drains: the socket closes (1001) once the running turns end
        try:
            raw = orjson.loads(frame)
        except orjson.JSONDecodeError:
            await self.send_error(APIError(400, "The message is not valid JSON.", code="invalid_json"))
            return
        if not isinstance(raw, dict):
            await self.send_error(APIError(400, "The message must be a JSON object.", code="invalid_type"))
            return
        try:
            check_depth(raw)  # before it is serialised again for the run
            check_input_count(raw, self.runtime.options.max_input_items)  # before the turn waits
        except APIError as error:
            await self.send_error(error)
            return
        if raw.get("type") == "response.steer":  # answered at once, on the target response's lane
            await self.steering.steer(raw)
            return
        if raw.get("type") == "response.inject":  # committed when its response waits for it (inject.py)
            await self.injections.inject(raw)
            return
        kind, stream_id = raw.get("type"), raw.get("stream_id")
        del raw  # a waiting turn costs its frame's bytes, not ten times as much in parsed objects
        suffix = lane_suffix(stream_id) if isinstance(stream_id, str) else b""
        if kind != "response.create":
            await self.send_error(APIError(
                400, f"Unsupported event type {kind!r}: send 'response.create', 'response.steer' or "
                "'response.inject'.",
                param="type",
                code="unsupported_event_type"), suffix)
            return
        if stream_id is not None and not isinstance(stream_id, str):
            await self.send_error(APIError(400, "'stream_id' must be a string.", param="stream_id",
                                           code="invalid_type"))
            return
        await self.lanes.room(len(frame))
        await self.queue_turn(frame, stream_id)

    async def queue_turn(self, frame: bytes, stream_id: str | None) -> None:
        """A checked ``response.create`` frame onto its lane: a client's, or an injected response's successor
        (queued from that lane's own turn too, so it never waits for room a turn behind it would free)."""
        suffix = lane_suffix(stream_id)
        try:  # what the turn will cost parsed (by its shape), held from now to its end: a 503 past the budget
            held = await self.runtime.memory.charge(self.memory_holder, body_cost(frame))
        except APIError as error:
            await self.send_error(error, suffix)
            return
        if not self.lanes.add(stream_id, frame, held):
            held.release()
            await self.send_error(APIError(
                400, f"Too many lanes: at most {self.lanes.max_lanes} stream_id lanes may be busy at once on one "
                "connection; send this turn again on a busy lane, or when a lane finishes.", param="stream_id",
                code="too_many_lanes"), suffix)

    async def run_turn(self, frame: bytes, stream_id: str | None) -> None:
        """A lane's turn, from its frame (checked when it arrived); a bug in it answers ``server_error`` on the
        lane and the socket stays open."""
        suffix = lane_suffix(stream_id)
        activity = self.runtime.limits.activity  # a turn is interactive work in flight (its connection is not)
        activity.enter()
        try:
            raw = orjson.loads(frame)
            del frame  # the parsed request is what the turn needs; the frame's bytes go back now
            raw.pop("type", None)
            raw.pop("stream_id", None)
            await self.turns(raw, stream_id)
        except (asyncio.CancelledError, ConnectionResetError):
            raise
        except Exception:
            log.exception("websocket_turn_failed")
            if not self.ws.closed:
                await self.send_error(APIError(500, "The server had an error while processing the request.",
                                               code="server_error"), suffix)
        finally:
            activity.leave()

    async def turns(self, raw: dict[str, Any], stream_id: str | None) -> None:
        """A ``response.create`` and the successors steering starts after it, one after another on its lane."""
        steers = self.steering.take_parked(raw, stream_id)  # an explicit continuation of a parked response
        automatic = False
        while raw:
            if automatic and self.lanes.stopping:  # the door drains: no successor starts
                await self.steering.not_created(raw["previous_response_id"], stream_id, steers,
                                                "The server is shutting down; the steering input was not applied.")
                return
            raw, steers = await self.turn(raw, stream_id, steers, automatic=automatic)
            automatic = True

    async def turn(self, raw: dict[str, Any], stream_id: str | None, steers: list[Steer], *,
                   automatic: bool = False) -> tuple[dict[str, Any], list[Steer]]:
        """One response. Returns the create of the successor steering starts after it (and the steers that
        successor commits), or ``({}, [])``."""
        suffix = lane_suffix(stream_id)
        generate = raw.pop("generate", True) is not False
        for key in ("stream", "stream_options"):  # streaming is implicit here
            raw.pop(key, None)
        if raw.get("background"):
            await self.send_error(APIError(400, "'background' is not supported in WebSocket mode.",
                                           param="background", code="unsupported_parameter"), suffix)
            return {}, []
        previous = raw.get("previous_response_id") if isinstance(raw.get("previous_response_id"), str) else None
        store = ConnectionStore(self.runtime.store, self.cache, max_items=self.runtime.options.max_input_items)
        run = self.runtime.new_run_framed("json", store, tenant=self.tenant)
        run.timing = Timing()  # each response.create has its own clock (observability/timing.py)
        run.beta = self.beta
        upstream, authorization = self.upstream, self.authorization
        if self.clients:  # translated here even on a native route: its backend also serves Chat Completions
            try:
                route = self.runtime.route(raw.get("model"))
            except APIError as error:
                await self._refused(error, raw, stream_id, steers, automatic)
                return {}, []
            upstream = self.clients[route.upstream.name]
            authorization = self.runtime.route_authorization(route, self.client_authorization)
            run.use_options(self.runtime.route_options(route))
        try:
            call = await run.begin(orjson.dumps(raw))
        except APIError as error:
            self._evict(previous)
            await self._refused(error, raw, stream_id, steers, automatic)
            return {}, []
        target = self.steering.begin(run.response_id or "", raw, stream_id)
        self.steering.committed(previous, steers)  # its response.created is out (or about to be): the commit
        run.stop_between_turns = lambda: bool(target.queue)
        try:
            if generate:
                await self._run(run, call, upstream, authorization, suffix)
            else:  # warm-up: the turn's state is prepared (and cached) without asking the model anything
                head = run.on_upstream_headers(200, "text/event-stream") or b""
                await self.send_lines(head + run.on_upstream_chunk(DONE_FRAME) + (await run.finish()).body,
                                      suffix)
        except (asyncio.CancelledError, ConnectionResetError):
            await run.abandon()
            raise
        response = run.response or {}
        if response.get("status") in ("completed", "incomplete") and not run.compaction_turn:
            store.remember(response["id"], store.loaded + run.request.input_items  # type: ignore[union-attr]
                           + list(response.get("output") or []))
        else:
            self._evict(previous)
        await self.injections.ended(target, raw, response)
        return await self.steering.ended(target, response)

    async def _refused(self, error: APIError, raw: dict[str, Any], stream_id: str | None, steers: list[Steer],
                       automatic: bool) -> None:
        """A create that could not begin: an automatic successor's steering input goes back to the client
        (``successor_creation_failed``); an explicit create gets its error frame."""
        if automatic:
            await self.steering.not_created(raw["previous_response_id"], stream_id, steers, error.message)
        else:
            await self.send_error(error, lane_suffix(stream_id))

    async def _run(self, run: Run, call: Any, upstream: UpstreamClient, authorization: str | None,
                   suffix: bytes) -> None:
        async def send_events(data: bytes) -> None:
            if data:
                await self.send_lines(data, suffix)

        reply = await drive(run, call, upstream, authorization, CallbackSink(send_events), deadline=self._deadline())
        if reply.content_type == JSON_CONTENT_TYPE and reply.status >= 400:  # refused before any event
            try:
                error = orjson.loads(reply.body)["error"]
                api_error = APIError(reply.status, error.get("message") or "Request failed.", type=error.get("type"),
                                     param=error.get("param"), code=error.get("code"))
            except (orjson.JSONDecodeError, KeyError, TypeError, AttributeError):
                api_error = APIError(reply.status, "The request failed.", code="server_error")
            await self.send_error(api_error, suffix)
            return
        await self.send_lines(reply.body, suffix)

    def _deadline(self) -> AbstractAsyncContextManager[None]:
        return self.drain.deadline() if self.drain is not None else nullcontext()

    def drain_now(self) -> None:
        """The door drains: no turn starts any more, and the socket closes (1001) when the running ones end."""
        if self.closer is None:
            self.lanes.stop()
            self.closer = asyncio.create_task(self._close_when_idle())

    async def _close_when_idle(self) -> None:
        await self.lanes.wait_idle()
        self.closing = True
        await self.ws.close(code=WSCloseCode.GOING_AWAY, message=b"server shutting down")

    async def finish(self) -> None:
        """The socket's reader ended: let a shutdown close finish; else the client went away, so every lane's
        running turn is cancelled (and recorded as abandoned) and no task outlives the connection. Either way the
        connection's cached histories go now: the session sits in reference cycles (its lanes hold its bound
        methods) that only the collector's rare full pass would free, with every history inside."""
        try:
            if self.closer is not None and self.closing:
                await asyncio.gather(self.closer, return_exceptions=True)
                return
            if self.closer is not None:
                self.closer.cancel()
                await asyncio.gather(self.closer, return_exceptions=True)
            await self.lanes.cancel()
        finally:
            self.steering.drop()  # queued steering input goes with the connection
            self.injections.drop()
            self.cache.clear()

    def _evict(self, previous: str | None) -> None:
        if previous is not None:
            self.cache.pop(previous, None)


def frame_bytes(data: str | bytes) -> bytes:
    """A text message's UTF-8 (a binary one's bytes as they are): the form a frame waits in, whose length is what
    it costs (a decoded ``str`` may take up to four bytes a character, and keeps a UTF-8 copy once orjson has
    read it)."""
    return data.encode() if isinstance(data, str) else data


async def handle(request: web.Request, runtime: Runtime, upstream: UpstreamClient,
                 clients: Mapping[str, UpstreamClient] | None = None) -> web.StreamResponse:
    limit = request.get(BODY_LIMIT) or runtime.settings.max_request_bytes  # the tenant's own (limits.py)
    ws = web.WebSocketResponse(heartbeat=30.0, max_msg_size=limit)
    if not ws.can_prepare(request).ok:
        raise APIError(400, "GET /v1/responses is WebSocket mode: open it with 'Upgrade: websocket', or create "
                       "a response with POST /v1/responses.", code="websocket_upgrade_required")
    tenant = request_tenant(request)
    try:  # before the upgrade: a refused connection costs a handshake, and its client sees an HTTP status
        connection = runtime.limits.connect(tenant)
    except APIError as error:
        return limit_response(error)
    slot = request_slot(request)
    if slot is not None:  # open between turns is not work in flight: its turns count themselves (run_turn)
        slot.quiet()
    try:
        await ws.prepare(request)
        drain = request.app[DRAIN]
        await serve(ws, drain, WebSocketSession(
            runtime, upstream, ws, runtime.upstream_authorization(request.headers.get("Authorization")), drain,
            clients, request.headers.get("Authorization"), tenant=tenant,
            beta=beta_surface(request.query, request.headers)))
    finally:
        connection.release()
    return ws


async def serve(ws: web.WebSocketResponse, drain: Drain, session: WebSocketSession) -> None:
    """Read the socket until it closes. Turns run in their lanes' tasks while this loop keeps reading, so pings,
    pongs and a close are seen even during long turns (a close cancels every lane's turn, each then recorded as
    abandoned). The connection holds one request slot and one connection slot of its tenant (limits.py) however
    many lanes it runs."""
    forget = drain.on_drain(session.drain_now)
    try:
        async for message in ws:
            if message.type in (WSMsgType.TEXT, WSMsgType.BINARY):
                frame = frame_bytes(message.data)
                del message  # its str would be a second copy of the frame while the turn waits for room
                await session.receive(frame)
            elif message.type == WSMsgType.ERROR:
                break
    finally:
        forget()
        await session.finish()
