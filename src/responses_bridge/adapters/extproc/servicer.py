"""The ext_proc servicer: one gRPC ``Process`` stream is one HTTP request is one :class:`ResponseRun`.

Envoy sends, in order: the request headers (only if the bootstrap asks for them; ours skips them), the buffered
request body, the upstream's response headers, and the response body. The servicer answers with the rewrite the
run computes. Two response body modes are served, whichever the bootstrap chose (Envoy names it in the
first message's ``protocol_config``):

* ``FULL_DUPLEX_STREAMED`` (what ``envoy-config`` renders): Envoy sends the body without waiting for the reply to
  the headers, and the processor answers when it has something to say. An SSE answer gets its headers reply at
  once and then one ``streamed_response`` per batch of whole events (a chunk that completes no event gets no
  reply); a JSON answer gets its headers reply together with the translated body, once the upstream's body has
  ended, so its status can still become a 502. No round trip waits on the headers, and the processor can end the
  client's response on its own (a failure, or a shutdown) without waiting for the upstream.
* ``NONE`` with ``allow_mode_override`` (older bootstraps): the headers reply picks ``STREAMED`` (SSE) or
  ``BUFFERED`` (JSON); then exactly one reply per body message.

A request whose tools include a server-side tool this deployment runs (``mcp``, server ``tool_search``, web search
with a provider) is not translated: the tool loop makes several model turns, and runs in the HTTP door, which makes
each of them through Envoy's listener. The servicer answers its body with routing metadata and a cleared route
cache (Envoy then sends the unchanged body to the HTTP door) and passes the door's answer through untouched. The
filter instance stays on the request's response path after the route changes, and the mode cannot be changed
from the body phase, so the gRPC stream stays open until Envoy ends it: closing it after the routing reply races
the door's answer, and when the answer wins, Envoy has already handed its FULL_DUPLEX_STREAMED body chunks to the
processor and the close drops them (the client gets the door's status with an empty body). The scan looks only at
the decoded ``tools``; it is made only when the bootstrap says it has that route (older bootstraps keep every
request on this path).

Two rules keep clients safe:

* Nothing untranslated reaches the client. Every body byte the client gets is the run's, and the stream is
  never closed early: after a failure the servicer sends the run's failure bytes once and then, in STREAMED
  mode, keeps answering with empty mutations until ``end_of_stream``.
* Every failure produces bytes: before the upstream call an OpenAI-shaped immediate response; after it, the
  run's ``fail`` reply (a ``response.failed`` event in an open stream, or an error body).
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable
from time import perf_counter

import grpc
import orjson
import structlog
from envoy.service.ext_proc.v3 import external_processor_pb2_grpc
from envoy.service.ext_proc.v3.external_processor_pb2 import (
    ProcessingRequest,
    ProcessingResponse,
)

from ...engine.sse import DONE_FRAME, encode_event
from ...engine.tools import runs_server_tools
from ...engine.wire import SSE_CONTENT_TYPE, Reply, UpstreamRequest
from ...envoy_config import NATIVE_SUFFIX, upstream_path_prefix
from ...protocol.errors import APIError, shut_down_mid_response, shutting_down
from ...protocol.request import parse_json_object
from ...run.response_run import LARGE_BODY_BYTES
from ...run.runs import Run
from ...runtime import Runtime
from ...services.identity import SIDECAR_HEADER
from ...services.limits import RETRY_AFTER_SECONDS, UNLIMITED, request_too_large
from ...store.base import DEFAULT_TENANT
from ...upstreams import Route
from . import messages as m
from .decode import Undecodable
from .observe import StreamObservation
from .outbox import Outbox
from .retry import retried_reply

log = structlog.get_logger("responses_bridge.extproc")

RESPONSES_PATHS = frozenset(("/v1/responses", "/responses"))
CHAT_PATHS = frozenset(("/v1/chat/completions", "/chat/completions"))
BACKGROUND_STREAM_WAIT = 25.0  # seconds; below the filter's 30 s message_timeout
JSON = "application/json"
_REQUEST_REMOVE = ("accept-encoding",)


SHUTDOWN_ERROR = shut_down_mid_response()
"""What a response still running when the drain timeout ends is failed with (``response.failed`` with code
``server_shutdown`` in an open stream); a request arriving during a drain gets ``REFUSED`` instead."""
REFUSED = shutting_down()
CLOSE_WAIT = 5.0
"""Seconds a drain waits, after ending the remaining streams, for Envoy to close them."""


class ExtProcServicer(external_processor_pb2_grpc.ExternalProcessorServicer):
    """``upstream_path_prefix`` is the path of the upstream's base URL (``/v1`` for ``http://host/v1``): the
    rewritten request goes to ``<prefix>/chat/completions`` on the route's upstream cluster."""

    def __init__(self, runtime: Runtime, upstream_path_prefix: str) -> None:
        self._runtime = runtime
        self._prefix = upstream_path_prefix.rstrip("/")
        self._live: set[_Stream] = set()
        self._changed = asyncio.Event()  # a stream finished its work or went away: a drain looks again

    async def Process(self, request_iterator: object, context: grpc.aio.ServicerContext) -> None:
        """Fails closed: however the stream ends early (a message that does not decode, a broken write, a bug),
        the handler never returns OK with the request unanswered, since Envoy then goes on without the processor
        and the untranslated, unauthenticated request reaches the upstream. A message that does not decode is
        answered (decode.py); anything else ends the stream with an error status, which Envoy turns into an
        error reply (``failure_mode_allow: false``)."""
        outbox = Outbox(context.write)

        async def write_now(response: ProcessingResponse) -> None:
            await outbox.send((response,), queued=False)

        stream = _Stream(self._runtime, self._prefix, write_now)
        self._live.add(stream)
        read, lock, send = context.read, stream.lock, outbox.send
        observed = stream.observed = StreamObservation()  # request id, metrics, spans (observe.py)
        first = True
        try:
            while True:
                request = await read()
                if request is grpc.aio.EOF:  # type: ignore[attr-defined]  # grpc exports it; grpc-stubs lack it
                    break
                started = perf_counter()
                if type(request) is Undecodable:  # a string field with bytes that are not UTF-8 (decode.py)
                    first = False
                    async with lock:
                        replies = await stream.undecodable(request.phase)
                        observed.replied(replies, stream.sse)
                        stream.delivered = stream.done
                        await send(replies, queued=False)
                    continue
                phase = request.WhichOneof("request")
                if phase != "response_body":  # a few messages per request: the per-chunk path skips all this
                    if first:
                        first = False
                        observed.begin(phase, request, context)
                    elif phase == "response_headers" and not stream.routed:  # the door's answer is no model call
                        observed.upstream_answered(request)
                async with lock:  # sent under the lock: a drain's last words never overtake these replies
                    with observed.phase(phase):
                        handling = stream.handle(request)
                        del request  # a request body message is let go as soon as its bytes are taken
                        replies = await handling
                    outbox.merge = stream.full_duplex
                    if phase != "response_body" or stream.done:
                        observed.replied(replies, stream.sse)
                    # the terminal bytes are handed to gRPC from here on: a close by Envoy after this point is
                    # the end of a delivered answer, not a client going away
                    stream.delivered = stream.done
                    await send(replies, queued=stream.sse or stream.routed)
                observed.message(phase, perf_counter() - started)
                if phase == "request_body" and stream.ours and not stream.done:
                    observed.upstream_called()
                if stream.done:
                    self._changed.set()
            await outbox.flush()  # returning ends the gRPC stream: not before every reply is written
        except asyncio.CancelledError:
            await stream.abandon()  # Envoy reset the stream: the client went away
            raise
        except Exception:  # the stream broke (a write failed, a bug): it must not end as OK
            log.warning("extproc_stream_broken", exc_info=True)
            await stream.abandon()
            context.set_code(grpc.StatusCode.INTERNAL)
            context.set_details("the processor failed")
        else:
            if not stream.done:
                await stream.abandon()
        finally:
            stream.slot.release()  # the tenant's slot (services/limits.py): this request has ended, however it did
            await outbox.close()
            self._live.discard(stream)
            self._changed.set()
            observed.finish(stream.ours, not stream.delivered)

    def _unfinished(self) -> list[_Stream]:
        return [stream for stream in self._live if stream.run is not None and not stream.done]

    async def drain(self, timeout: float) -> None:
        """Let the responses in flight finish for up to ``timeout`` seconds (new ones are refused meanwhile: see
        ``Runtime.draining``), then end every one still running with ``response.failed`` (code
        ``server_shutdown``) and ``[DONE]``, and wait a little for Envoy to close those streams. Returns when the
        processor has written every terminal byte it can; the caller stops the gRPC server after that."""
        await self._wait(self._unfinished, timeout)
        remaining = self._unfinished()
        if remaining:
            log.warning("extproc_drain_timeout", streams=len(remaining))
            ending = asyncio.gather(*(stream.shut_down() for stream in remaining))
            try:  # a write Envoy does not take (flow control) must not hold the shutdown forever
                await asyncio.wait_for(ending, CLOSE_WAIT)
            except TimeoutError:
                log.warning("extproc_drain_writes_timed_out")
        await self._wait(lambda: list(self._live), CLOSE_WAIT)

    async def _wait(self, pending: Callable[[], list[_Stream]], timeout: float) -> None:
        deadline = time.monotonic() + timeout
        while True:
            self._changed.clear()  # before looking: a change from here on wakes the wait below
            left = deadline - time.monotonic()
            if not pending() or left <= 0:
                return
            try:
                await asyncio.wait_for(self._changed.wait(), left)
            except TimeoutError:
                return


Responses = list[ProcessingResponse]
Write = Callable[[ProcessingResponse], Awaitable[None]]


class _Stream:
    """Per-request state: what the client asked for and where the answer stands. ``handle`` answers one message
    from Envoy with the messages to send back (none, one, or several in FULL_DUPLEX_STREAMED mode)."""

    __slots__ = (
        "authorization",
        "chat",
        "delivered",
        "done",
        "failed",
        "full_duplex",
        "lock",
        "max_bytes",
        "observed",
        "ours",
        "pending",
        "prefix",
        "request_body",
        "request_bytes",
        "route",
        "routed",
        "run",
        "runtime",
        "shutdown_requested",
        "sidecar_route",
        "slot",
        "sse",
        "tenant",
        "write",
    )

    def __init__(self, runtime: Runtime, prefix: str, write: Write | None = None) -> None:
        self.runtime = runtime
        self.prefix = prefix
        self.write = write  # the gRPC stream's, for what the processor sends on its own (a drain's last words)
        self.lock = asyncio.Lock()  # one writer at a time: the message loop, or a drain ending the stream
        self.run: Run | None = None
        # Is this a POST /v1/responses to translate? None until known: the bootstrap skips the request headers
        # (one processor round trip less), so the first message is then the buffered body, which means yes.
        self.ours: bool | None = None
        self.authorization: str | None = None  # the client's, when the request headers were sent to us
        self.full_duplex = False  # the response body comes FULL_DUPLEX_STREAMED (from the first message)
        self.sse = False  # the client's event stream is open: its headers have been answered
        self.pending = b""  # bytes to put before the next response body chunk (the stream's head)
        self.failed = False  # failure bytes were sent: drop everything else
        self.done = False  # the terminal bytes were made
        self.delivered = False  # ... and handed to gRPC (metrics: a close after this is no client going away)
        self.shutdown_requested = False  # STREAMED mode: fail the stream at the next upstream chunk
        self.request_body: list[bytes] = []  # a streamed request body, until its end
        self.request_bytes = 0
        self.routed = False  # handed to the sidecar's HTTP door: its answer passes through untouched
        self.sidecar_route = False  # the bootstrap routes requests with server-side tools to the HTTP door
        self.chat = False  # a POST /v1/chat/completions, with several upstreams: only its upstream is chosen
        self.route: Route | None = None  # with several upstreams: where the request's model goes (upstreams.py)
        self.observed: StreamObservation | None = None  # set by Process: metrics and spans of this request
        self.tenant = DEFAULT_TENANT  # the caller's, resolved from the forwarded credentials with the body
        self.max_bytes = runtime.settings.max_request_bytes  # the tenant's own, once known (first body chunk)
        self.slot = UNLIMITED  # the tenant's request in flight, taken when the run begins (services/limits.py)

    async def handle(self, request: ProcessingRequest) -> Responses:
        phase = request.WhichOneof("request")
        dispatch = self._dispatch(request)
        del request  # only _dispatch holds the message now, so it can let a large one go early
        try:
            return await dispatch
        except Exception as exc:  # noqa: BLE001 - a bug must still give Envoy an answer that keeps it with us
            return await self._recover(phase, exc)

    async def undecodable(self, phase: str | None) -> Responses:
        """A message protobuf could not decode (decode.py): before the upstream call, the request is refused
        with a 400 (nothing goes upstream); once a response of ours is under way, it ends as any failure does
        (``_recover``); otherwise nothing safe can be said, and the stream ends with an error status."""
        log.warning("extproc_message_undecodable", phase=phase)
        if not self.done and phase in ("request_headers", "request_body"):
            self.ours = True
            self.done = True
            self.request_body = []
            error = APIError(400, "A request header value is not valid UTF-8.", code="invalid_header_value")
            return [m.immediate_response(400, error.body(), JSON)]
        if self.ours and self.run is not None and phase is not None:
            return await self._recover(phase, ValueError(f"an undecodable {phase} message"))
        raise ValueError(f"an undecodable {phase or 'unknown'} message")

    async def _recover(self, phase: str | None, exc: Exception) -> Responses:
        log.exception("extproc_handler_failed", phase=phase, exc_info=exc)
        if phase in ("request_headers", "request_body", None):
            self.done = True
            error = APIError(500, "The request could not be translated.", code="server_error")
            return [m.immediate_response(500, error.body(), JSON)]
        if self.ours is False:
            return [m.CONTINUE_BY_PHASE.get(phase, m.CONTINUE_RESPONSE_BODY)]
        if not self.sse:  # nothing has left Envoy yet: answer the client directly
            self.done = True
            if self.run is not None and not self.failed:
                return [await self._fail_immediately(exc)]
            error = APIError(502, "The bridge failed while translating the upstream's answer.",
                             code="server_error")
            return [m.immediate_response(502, error.body(), JSON)]
        if phase != "response_body" and not self.full_duplex:
            return [m.CONTINUE_BY_PHASE.get(phase, m.CONTINUE_RESPONSE_BODY)]
        trailers = [m.CONTINUE_RESPONSE_TRAILERS] if phase == "response_trailers" else []
        if self.run is None or self.failed or self.done:
            return trailers if self.full_duplex else [m.response_body_reply(b"")]
        # the event stream is open: close it with the failure, then drop the rest
        reply = await self._fail(exc)
        head, self.pending = self.pending, b""
        if self.full_duplex:
            self.done = True
            return [m.streamed_body(head + reply.body, True), *trailers]
        return [m.response_body_reply(head + reply.body)]

    async def _dispatch(self, request: ProcessingRequest) -> Responses:
        phase = request.WhichOneof("request")
        if phase == "response_body":
            message = request.response_body
            if self.ours is False:
                return [m.streamed_body(message.body, message.end_of_stream) if self.full_duplex
                        else m.CONTINUE_RESPONSE_BODY]
            if self.full_duplex:
                return await self._duplex_body(message.body, message.end_of_stream)
            return [await self._response_body(message.body, message.end_of_stream)]
        if request.HasField("protocol_config"):  # the first message only
            self.full_duplex = request.protocol_config.response_body_mode == m.FULL_DUPLEX_STREAMED
        if phase == "request_body":
            if self.chat:
                return [self._route_chat(request.request_body.body)]
            if self.ours is False:
                return [m.CONTINUE_REQUEST_BODY]
            if self.run is None:
                if self.runtime.draining:
                    return [self._refuse()]
                if not self.runtime.identity.anonymous:  # the tenant first: nothing is made for a stranger
                    denied = await self._identify(m.forwarded_authorization(request), m.forwarded_tenant(request))
                    if denied is not None:
                        return [denied]
                self.ours = True
                self.run = self.runtime.new_run(tenant=self.tenant)
            if self.authorization is None:  # request headers are skipped: Envoy forwards the credentials
                self.authorization = m.forwarded_authorization(request)
            if not self.request_body:  # the first body message carries the metadata
                self.sidecar_route = m.sidecar_route_offered(request)
            # The body moves into this stream's list, and the message (which keeps its own copy of the body
            # until it is freed; clearing the field frees nothing) is let go before the translation starts: see
            # handle() and Process().
            self.request_body.append(request.request_body.body)
            end_of_stream = request.request_body.end_of_stream
            del request
            return [await self._request_body(end_of_stream)]
        if phase == "response_headers":
            if self.ours is False:
                return [m.CONTINUE_RESPONSE_HEADERS]
            if self.run is None or self.run.response is None:
                return [await self._untranslated(request)]
            return await self._response_headers(request)
        if phase == "response_trailers":
            if self.full_duplex and self.ours is not False and not self.done and self.run is not None:
                # the upstream's body ended with trailers, not end_of_stream: the end of the client's bytes, then
                # the trailers (unchanged)
                return [*await self._duplex_end(), m.CONTINUE_RESPONSE_TRAILERS]
            return [m.CONTINUE_RESPONSE_TRAILERS]
        if phase == "request_headers":
            return [await self._request_headers(request)]
        return [m.CONTINUE_BY_PHASE.get(phase or "", m.CONTINUE_REQUEST_HEADERS)]

    # --- request ----------------------------------------------------------------------------------------------

    async def _identify(self, authorization: str | None, tenant_header: str | None) -> ProcessingResponse | None:
        """Sets ``tenant`` from the request's credentials (services/identity.py), or returns the 401 that answers
        the request instead (an immediate response: nothing goes upstream)."""
        try:
            self.tenant = await self.runtime.identity.tenant(authorization, tenant_header)
        except APIError as error:
            self.ours = True
            self.done = True
            return m.immediate_response(error.status, error.body(), JSON)
        if self.observed is not None:
            self.observed.tenant = self.tenant
        return None

    async def _identify_passthrough(self, headers: dict[str, str]) -> ProcessingResponse | None:
        """A passthrough route (``/v1/chat/completions``, ``/v1/models``) with ``auth: keys``: the upstream gets the
        configured key, so the caller must hold a bridge key, or be this sidecar's own call through Envoy."""
        identity = self.runtime.identity
        if identity.mode != "keys" or identity.is_sidecar(headers.get(SIDECAR_HEADER)):
            return None
        return await self._identify(headers.get("authorization"), None)

    def _refuse(self) -> ProcessingResponse:
        """A new response while the sidecar drains: 503 at once, before anything is sent upstream."""
        self.ours = True
        self.done = True
        return m.immediate_response(REFUSED.status, REFUSED.body(), JSON)

    async def _request_headers(self, request: ProcessingRequest) -> ProcessingResponse:
        message = request.request_headers
        headers = m.header_map(message)
        path = headers.get(":path", "").split("?", 1)[0]
        if headers.get(":method") == "POST" and path in CHAT_PATHS and not self.runtime.routes().single:
            denied = await self._identify_passthrough(headers)
            if denied is not None:
                return denied
            self.chat = True  # the body names the model, hence the upstream: see _route_chat
            self.ours = False
            self.authorization = headers.get("authorization")
            return m.request_headers_reply((), _sidecar_header(headers))
        if headers.get(":method") != "POST" or path not in RESPONSES_PATHS:
            # A passthrough route that sends us its headers: only the upstream credentials change.
            denied = await self._identify_passthrough(headers)
            if denied is not None:
                return denied
            self.ours = False
            client = headers.get("authorization")
            configured = self.runtime.upstream_authorization(client)
            if configured is not None and configured != client:
                return m.request_headers_reply([("authorization", configured)], _sidecar_header(headers))
            # auth: keys without an upstream key: the bridge key goes no further
            drop = ("authorization",) if configured is None and client is not None else ()
            return m.request_headers_reply((), (*drop, *_sidecar_header(headers)))
        if self.runtime.draining:
            return self._refuse()
        if not self.runtime.identity.anonymous:
            tenant_header = headers.get(self.runtime.identity.tenant_header)
            denied = await self._identify(headers.get("authorization"), tenant_header)
            if denied is not None:
                return denied
        self.ours = True
        self.authorization = headers.get("authorization")
        self.run = self.runtime.new_run(tenant=self.tenant)
        if message.end_of_stream:  # no body at all: begin() says what is wrong with that
            return await self._begin(b"")
        return m.CONTINUE_REQUEST_HEADERS

    async def _request_body(self, end_of_stream: bool) -> ProcessingResponse:
        """The chunk just added to ``request_body``. A buffered body comes whole; a streamed one (a route that
        asks for it) is held until its end, and refused as soon as it outgrows the limit rather than after it was
        all collected."""
        if not self.request_bytes:  # the first chunk: the tenant is known now (it comes with the body)
            self.max_bytes = self.runtime.limits.max_request_bytes(self.tenant)
        self.request_bytes += len(self.request_body[-1])
        if self.request_bytes > self.max_bytes:
            self.request_body = []
            return self._too_large()
        if not end_of_stream:
            response = ProcessingResponse()
            response.request_body.response.body_mutation.body = b""
            return response
        chunks, self.request_body = self.request_body, []
        body = chunks[0] if len(chunks) == 1 else b"".join(chunks)
        del chunks
        begin = self._begin(body)
        del body  # _begin lets it go once it is parsed
        return await begin

    def _too_large(self) -> ProcessingResponse:
        self.done = True
        error = request_too_large(self.max_bytes)
        return m.immediate_response(413, error.body(), JSON)

    async def _begin(self, body: bytes) -> ProcessingResponse:
        run = self.run
        assert run is not None
        if len(body) > self.max_bytes:  # the same ceiling as the HTTP door's
            return self._too_large()
        large = len(body) > LARGE_BODY_BYTES
        try:
            decoded = await asyncio.to_thread(parse_json_object, body) if large else parse_json_object(body)
            del body  # decoded: the bytes are let go before the translation
            if self.sidecar_route and runs_server_tools(decoded.get("tools"), self.runtime.served_tools):
                return self._route_to_sidecar()  # counted by the HTTP door, which runs it: no slot here
            self.slot = self.runtime.limits.acquire(self.tenant)  # a 429 at the tenant's limit
            if not self.runtime.routes().single:  # several upstreams: the model picks one (upstreams.py)
                self.route = self.runtime.route(decoded.get("model"))
                # native: Envoy sends it to the backend's own /v1/responses; else the upstream's profile and model
                self.run = run = self.runtime.new_routed_run(self.route, tenant=self.tenant)
            upstream = await run.begin(decoded, large=large)
        except APIError as error:
            self.done = True
            retry = [("retry-after", str(RETRY_AFTER_SECONDS))] if error.status == 429 else []
            return m.immediate_response(error.status, error.body(), JSON, retry)
        except Exception:
            log.exception("extproc_request_translation_failed")
            self.done = True
            failure = APIError(500, "The request could not be translated.", code="server_error")
            return m.immediate_response(500, failure.body(), JSON)
        del decoded  # translated: only the translated body is needed from here on
        assert upstream is not None  # no tool loop runs on this door, so begin() never defers its first call
        if run.background:  # runs in the sidecar; Envoy gets the answer now, the upstream is not called
            self.done = True
            return await self._background(run, upstream)
        route = self.route
        prefix = self.prefix if route is None else upstream_path_prefix(route.upstream.url)
        set_headers = [
            (":path", f"{prefix}/{upstream.path}"),
            ("content-length", str(len(upstream.body))),
            ("content-type", JSON),
        ]
        # The route sets these from the reply's metadata: the configured upstream key in place of the client's
        # (without one the client's own header goes through untouched), and the upstream span's trace context.
        upstream_headers = self.observed.upstream_trace_headers() if self.observed is not None else {}
        authorization = (self.runtime.upstream_authorization(self.authorization) if route is None
                         else self.runtime.route_authorization(route, self.authorization))
        if authorization is not None and authorization != self.authorization:
            upstream_headers["authorization"] = authorization
        reply = m.request_body_reply(upstream.body, set_headers, _REQUEST_REMOVE, upstream_headers)
        if route is not None:  # Envoy picks the route again, on the upstream's name: that upstream's cluster
            native = self.runtime.is_native(route)
            m.choose_upstream(reply, route.upstream.name + (NATIVE_SUFFIX if native else ""))
        return reply

    def _route_chat(self, body: bytes) -> ProcessingResponse:
        """``POST /v1/chat/completions`` with several upstreams: the model picks the upstream, Envoy sends the body
        (the model renamed when the route says so; nothing else changes) to its cluster, and the answer passes
        through untouched (the processor closes its stream here). The bootstrap sends this route's request headers
        to the processor, so its header mutations (the upstream's key) apply."""
        self.routed = True
        self.done = True
        try:
            decoded = parse_json_object(body)
            route = self.runtime.route(decoded.get("model"))
        except APIError as error:
            return m.immediate_response(error.status, error.body(), JSON)
        set_headers: list[tuple[str, str]] = []
        new_body: bytes | None = None
        if route.upstream_model:
            decoded["model"] = route.upstream_model
            new_body = orjson.dumps(decoded)
            set_headers.append(("content-length", str(len(new_body))))
        authorization = self.runtime.route_authorization(route, self.authorization)
        if authorization is not None and authorization != self.authorization:
            set_headers.append(("authorization", authorization))
        # auth: keys without the upstream's own key: the client's bridge key goes no further
        remove = ("authorization",) if authorization is None and self.authorization is not None else ()
        reply = m.request_body_reply(new_body, set_headers, remove)
        m.choose_upstream(reply, route.upstream.name)
        return reply

    def _route_to_sidecar(self) -> ProcessingResponse:
        """A request with server-side tools this deployment runs: the tool loop makes several model turns, and
        each must go through Envoy (balancing, metering, rate limits). The HTTP door runs the loop and makes
        every turn through Envoy's listener (``upstream_via``), so Envoy routes the request, unchanged, to that
        door; this processor only passes the door's answer through from here on (see the module docstring for why
        the gRPC stream is not closed here)."""
        self.ours = False
        self.routed = True
        self.done = True
        self.run = None  # nothing was begun: no response to abandon or to end on a drain
        return m.route_to_sidecar()

    async def _background(self, run: Run, upstream: UpstreamRequest) -> ProcessingResponse:
        """``background: true``: the run starts in the sidecar (its own upstream call goes through Envoy's
        passthrough route when ``upstream_via`` points there) and the client gets an immediate response: the
        queued response, or with ``stream: true`` the events. An immediate response cannot stream, so those are
        the events up to the end of the run or ``BACKGROUND_STREAM_WAIT`` seconds, whichever comes first; a client
        cut short resumes with ``GET /v1/responses/{id}?stream=true&starting_after=N``."""
        service = self.runtime.background
        if service is None:
            error = APIError(400, "Background responses are not available in this deployment.",
                             param="background", code="unsupported_parameter")
            return m.immediate_response(400, error.body(), JSON)
        route = self.route
        try:
            if route is None:
                started = await service.start(run, upstream, self.runtime.upstream_authorization(self.authorization))
            else:
                started = await service.start(run, upstream,
                                              self.runtime.route_authorization(route, self.authorization),
                                              self.runtime.client_for(route))
        except Exception:
            log.exception("extproc_background_start_failed")
            error = APIError(500, "The background response could not be started.", code="server_error")
            return m.immediate_response(500, error.body(), JSON)
        self.slot.hold_until(started.task)  # the run calls the upstream after this stream ends: it keeps the slot
        if not run.request.params.stream:  # type: ignore[union-attr]
            return m.immediate_response(200, started.accepted, JSON)
        frames: list[bytes] = []

        async def collect() -> None:
            async for chunk in service.events_after(started.response_id, -1, tenant=run.tenant):
                frames.append(chunk)

        try:
            await asyncio.wait_for(collect(), BACKGROUND_STREAM_WAIT)
            frames.append(DONE_FRAME)
        except TimeoutError:
            pass
        return m.immediate_response(200, b"".join(frames), SSE_CONTENT_TYPE, [("cache-control", "no-cache")])

    async def _untranslated(self, request: ProcessingRequest) -> ProcessingResponse:
        """Response headers for a request whose body this processor never translated. Either Envoy refused the
        body itself (413: over its buffer limit; a local reply that still passes through this filter), or the
        request had no body at all and (with request headers skipped) went to the upstream's chat/completions
        empty. The client gets the matching OpenAI-shaped error, not whatever came back."""
        self.ours = True
        self.done = True
        status = m.header_map(request.response_headers).get(":status")
        if status == "413":
            error = APIError(413, "The request body is too large.", code="request_too_large")
            return m.immediate_response(413, error.body(), JSON)
        try:
            await self.runtime.new_run(tenant=self.tenant).begin(b"")
            error = APIError(400, "A request body is required.")
        except APIError as exc:
            error = exc
        except Exception:
            log.exception("extproc_untranslated_failed")
            error = APIError(400, "A request body is required.")
        return m.immediate_response(error.status, error.body(), JSON)

    # --- response ---------------------------------------------------------------------------------------------

    async def _response_headers(self, request: ProcessingRequest) -> Responses:
        run = self.run
        assert run is not None
        message = request.response_headers
        headers = m.header_map(message)
        try:
            status = int(headers.get(":status", "0") or 0)
            head = run.on_upstream_headers(status, headers.get("content-type"))
        except Exception as exc:
            log.exception("extproc_response_headers_failed", response_id=run.response_id)
            self.done = True
            return [await self._fail_immediately(exc)]
        if head is not None:
            self.pending = head  # goes out in front of the first body chunk
        if message.end_of_stream:  # an answer without a body: finish right here
            reply = await self._finish()
            if head is not None:
                body, self.pending = self.pending + reply.body, b""
                return [m.response_headers_replace(body, _sse_headers(status), ("content-length",))]
            return [m.response_headers_replace(reply.body, _json_headers(reply))]
        if head is not None:
            reply = m.response_headers_reply(None if self.full_duplex else m.STREAMED, _sse_headers(status),
                                             ("content-length",))
            self.sse = True  # only once the reply exists: until it is sent, a failure is an immediate response
            return [reply]
        if self.full_duplex:  # the status depends on the body: the headers are answered with it, at its end
            return []
        return [m.response_headers_reply(m.BUFFERED)]

    async def _fail_immediately(self, exc: Exception) -> ProcessingResponse:
        """Nothing has left Envoy yet: the failure reply (with the stream's head, if it was made) as an immediate
        response."""
        reply = await self._fail(exc)
        if reply.content_type == SSE_CONTENT_TYPE:
            body, self.pending = self.pending + reply.body, b""
            return m.immediate_response(reply.status, body, reply.content_type, [("cache-control", "no-cache")])
        return m.immediate_response(reply.status, reply.body, reply.content_type)

    async def _duplex_body(self, chunk: bytes, end_of_stream: bool) -> Responses:
        """FULL_DUPLEX_STREAMED: answer only when there are bytes for the client, or at the end."""
        if self.done:
            return []
        run = self.run
        assert run is not None
        if not self.sse:  # a JSON answer (or an error): held until the upstream's body ends
            run.on_upstream_chunk(chunk)
            return await self._duplex_end() if end_of_stream else []
        out = run.on_upstream_chunk(chunk)
        if out and self.observed is not None and not self.observed.first_event_at:
            self.observed.first_event_at = perf_counter()
        if end_of_stream:
            return await self._duplex_end(out)
        if self.shutdown_requested:
            return await self._duplex_shutdown(out)
        if not out and not self.pending:
            return []
        head, self.pending = self.pending, b""
        return [m.streamed_body(head + out if head else out, False)]

    async def _duplex_end(self, out: bytes = b"") -> Responses:
        """The upstream's body ended (``end_of_stream``, or its trailers): the rest of the client's bytes, and the
        end of the client's response."""
        self.done = True
        run = self.run
        assert run is not None
        try:
            retry = None if self.sse else run.retry_request()  # truncation "auto": see retry.py
            reply = await (run.finish() if retry is None
                           else retried_reply(self.runtime, run, retry, self.authorization, self.route))
        except Exception as exc:
            log.exception("extproc_response_failed", response_id=run.response_id)
            if not self.sse:
                return [await self._fail_immediately(exc)]
            reply = await self._fail(exc)
        if not self.sse:
            return [m.response_headers_reply(None, _json_headers(reply)), m.streamed_body(reply.body, True)]
        head, self.pending = self.pending, b""
        return [m.streamed_body(head + out + reply.body, True)]

    async def _duplex_shutdown(self, out: bytes = b"") -> Responses:
        self.done = True
        reply = await self._fail(SHUTDOWN_ERROR)
        head, self.pending = self.pending, b""
        return [m.streamed_body(head + out + reply.body, True)]

    async def _response_body(self, chunk: bytes, end_of_stream: bool) -> ProcessingResponse:
        """STREAMED or BUFFERED mode: exactly one reply per body message."""
        if self.done:
            return m.response_body_reply(b"")
        run = self.run
        assert run is not None
        if not self.sse:
            if not end_of_stream:  # BUFFERED gives one message; anything else is held until the end
                run.on_upstream_chunk(chunk)
                return m.response_body_reply(b"")
            try:
                run.on_upstream_chunk(chunk)
                retry = run.retry_request()  # truncation "auto" after a context-length error: retry.py
                reply = await (run.finish() if retry is None
                               else retried_reply(self.runtime, run, retry, self.authorization, self.route))
            except Exception as exc:
                log.exception("extproc_response_failed", response_id=run.response_id)
                reply = await self._fail(exc)
            self.done = True
            return m.response_body_final(reply.body, _json_headers(reply))
        if self.failed:
            self.done = end_of_stream
            return m.response_body_reply(b"")
        head, self.pending = self.pending, b""  # the stream's opening events go out with the first chunk
        out = b""
        try:
            out = run.on_upstream_chunk(chunk)
            if out and self.observed is not None and not self.observed.first_event_at:
                self.observed.first_event_at = perf_counter()
            if self.shutdown_requested:  # a drain ran out of time: this reply is the stream's last
                reply = await self._fail(SHUTDOWN_ERROR)
                self.done = end_of_stream
                return m.response_body_reply(head + out + reply.body)
            if end_of_stream:
                out += (await run.finish()).body
                self.done = True
            return m.response_body_reply(head + out if head else out)
        except Exception as exc:
            log.exception("extproc_stream_failed", response_id=run.response_id)
            reply = await self._fail(exc)
            self.done = end_of_stream
            return m.response_body_reply(head + out + reply.body)

    async def _finish(self) -> Reply:
        self.done = True
        try:
            return await self.run.finish()  # type: ignore[union-attr]
        except Exception as exc:
            log.exception("extproc_finish_failed")
            return await self._fail(exc)

    async def _fail(self, exc: Exception) -> Reply:
        """The run's failure reply; if even that breaks, a bare error the client can still read."""
        self.failed = True
        error = exc if isinstance(exc, APIError) else APIError(
            502, "The bridge failed while translating the upstream's answer.", type="server_error",
            code="server_error")
        try:
            return await self.run.fail(error)  # type: ignore[union-attr]
        except Exception:
            log.exception("extproc_fail_failed")
            if self.sse:
                event = {"type": "error", "code": "server_error", "param": None,
                         "message": "The bridge failed while translating the upstream's answer."}
                return Reply(200, SSE_CONTENT_TYPE, encode_event(event) + DONE_FRAME, continues_stream=True)
            return Reply(error.status, JSON, error.body())

    # --- shutdown ---------------------------------------------------------------------------------------------

    async def shut_down(self) -> None:
        """A drain ran out of time with this response still running: end it now with ``response.failed``
        (``server_shutdown``) and ``[DONE]``, or the 503 error when nothing has left Envoy yet. In STREAMED mode
        the processor may only answer an upstream chunk, so the stream ends at its next one."""
        async with self.lock:
            try:
                responses = await self._shutdown_responses()
                self.delivered = self.done
                for response in responses:
                    await self.write(response)  # type: ignore[misc]
            except Exception:  # the stream went away meanwhile: nothing left to end
                log.warning("extproc_shutdown_write_failed", exc_info=True)

    async def _shutdown_responses(self) -> Responses:
        if self.done or self.run is None:
            return []
        if self.run.response is None:  # the request itself is still being received
            self.done = True
            return [m.immediate_response(SHUTDOWN_ERROR.status, SHUTDOWN_ERROR.body(), JSON)]
        if not self.sse:  # nothing has left Envoy: the whole answer as an immediate response
            self.done = True
            return [await self._fail_immediately(SHUTDOWN_ERROR)]
        if self.failed:
            return []  # the failure already went out; STREAMED mode waits for the upstream's end
        if self.full_duplex:
            return await self._duplex_shutdown()
        self.shutdown_requested = True
        return []

    async def abandon(self) -> None:
        """Envoy dropped the stream (client gone, upstream reset): record the response as failed. The write runs
        as its own task, so a second cancellation of this handler cannot cut it short."""
        if self.done or self.run is None:
            return
        self.done = True
        task = asyncio.ensure_future(self.run.abandon())
        _BACKGROUND.add(task)
        task.add_done_callback(_BACKGROUND.discard)
        try:
            await asyncio.shield(task)
        except asyncio.CancelledError:
            pass  # the task goes on; the handler is being torn down anyway
        except Exception:
            log.warning("extproc_abandon_failed", exc_info=True)


_BACKGROUND: set[asyncio.Future[None]] = set()


def _sidecar_header(headers: dict[str, str]) -> tuple[str, ...]:
    """The sidecar's own credential, removed once checked: it never reaches the upstream."""
    return (SIDECAR_HEADER,) if SIDECAR_HEADER in headers else ()


def _sse_headers(upstream_status: int) -> list[tuple[str, str]]:
    headers = [("content-type", SSE_CONTENT_TYPE), ("cache-control", "no-cache")]
    if upstream_status >= 300:  # an upstream failure is reported inside the stream, which itself is fine
        headers.append((":status", "200"))
    return headers


def _json_headers(reply: Reply) -> list[tuple[str, str]]:
    return [(":status", str(reply.status)), ("content-type", reply.content_type),
            ("content-length", str(len(reply.body)))]
