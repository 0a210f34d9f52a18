"""The request phase of one ext_proc stream: the request headers (when the bootstrap sends them) and the buffered
body become the translated Chat Completions call Envoy makes, or an immediate response (a refusal, a background
run's answer) that keeps the request away from the upstream."""

from __future__ import annotations

import asyncio
from collections.abc import Collection

import orjson
import structlog

from ...engine.sse import DONE_FRAME
from ...engine.tools.builtin import runs_server_tools
from ...engine.wire import SSE_CONTENT_TYPE, UpstreamRequest
from ...envoy_config import IDEMPOTENCY_KEY_HEADER, NATIVE_SUFFIX, upstream_path_prefix
from ...envoy_config.names import DESTINATION_ENDPOINT_HEADER, DOOR_HEADER
from ...fairness.memory_charge import hold
from ...protocol.errors import APIError
from ...protocol.responses.request import parse_json_object
from ...protocol.tools.multi_agent import FIELD as MULTI_AGENT
from ...protocol.tools.multi_agent import beta_surface, query_of
from ...run.drive import chain_keys
from ...run.response_run import LARGE_BODY_BYTES
from ...run.runs import Run
from ...services.tenancy.body_admission import BodyAdmission
from ...services.tenancy.identity import SIDECAR_HEADER
from ...services.tenancy.limits import RETRY_AFTER_SECONDS, request_too_large
from ...services.tenancy.memory_budget import RETRY_LATER
from . import messages as m
from ._pb.ext_proc_pb2 import ProcessingRequest, ProcessingResponse
from .replica_pick import name_replica, pick_replica, replicated
from .routing import Routing, _sidecar_header
from .stream_state import CHAT_PATHS, JSON, REQUEST_REMOVE, RESPONSES_PATHS, background_stream_wait

log = structlog.get_logger("responses_bridge.extproc")


class RequestPhase(Routing):
    __slots__ = ()

    async def _request_headers(self, request: ProcessingRequest) -> ProcessingResponse:
        if self.hands_off:  # GET /v1/models to the HTTP door: the processor only proves it answers
            self.ours = False
            return m.CONTINUE_REQUEST_HEADERS
        message = request.request_headers
        headers = m.header_map(message)
        path = headers.get(":path", "").split("?", 1)[0]
        if headers.get(":method") == "POST" and path in CHAT_PATHS and (
                self.runtime.chat_completions.enabled or not self.runtime.routes().single or replicated(None)):
            denied = await self._identify_passthrough(headers)
            if denied is not None:
                return denied
            self.chat = True  # the body says whether the answer is stored, and names the upstream: _route_chat
            self.ours = False
            self.authorization = headers.get("authorization")
            self.tenant_header = headers.get(self.runtime.identity.tenant_header)
            self.chat_own = self.runtime.identity.is_sidecar(headers.get(SIDECAR_HEADER))
            # the HTTP door's own call through Envoy names the replica it picked: that one stands (replica_pick.py)
            self.replica_named = DESTINATION_ENDPOINT_HEADER in headers
            if not self.runtime.routes().single:  # the upstream's credentials go with the body's route
                return m.request_headers_reply((), _sidecar_header(headers))
            return self._passthrough_credentials(headers)
        if headers.get(":method") != "POST" or path not in RESPONSES_PATHS:
            # A passthrough route that sends us its headers: only the upstream credentials change.
            denied = await self._identify_passthrough(headers)
            if denied is not None:
                return denied
            self.ours = False
            return self._passthrough_credentials(headers)
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
        self.run.beta = beta_surface(query_of(headers.get(":path", "")), headers)
        self.idempotent = IDEMPOTENCY_KEY_HEADER in headers
        if message.end_of_stream:  # no body at all: begin() says what is wrong with that
            return await self._begin(b"")
        return m.CONTINUE_REQUEST_HEADERS

    def _passthrough_credentials(self, headers: dict[str, str]) -> ProcessingResponse:
        """A passthrough route's request headers: only the upstream credentials change."""
        client = headers.get("authorization")
        configured = self.runtime.upstream_authorization(client)
        if configured is not None and configured != client:
            return m.request_headers_reply([("authorization", configured)], _sidecar_header(headers))
        # auth: keys without an upstream key: the bridge key goes no further
        drop = ("authorization",) if configured is None and client is not None else ()
        return m.request_headers_reply((), (*drop, *_sidecar_header(headers)))

    async def _request_body(self, arrived: list[bytes], end_of_stream: bool) -> ProcessingResponse:
        """A chunk of the body arrived (``arrived``'s one, taken from it). A buffered body comes whole; a streamed
        one (a route that asks for it) is held until its end by its admission (services/tenancy/body_admission.py),
        which refuses it as soon as it outgrows the limit and covers its memory as its bytes arrive: a 503 past the
        budget or the caller's share, given back when the stream ends (servicer.py)."""
        admission = self.admission
        if admission is None:  # the first chunk: the tenant is known now (it comes with the body)
            self.max_bytes = self.runtime.limits.max_request_bytes(self.tenant)
            self.held.holder = self.runtime.memory.holder(self.tenant, self.authorization)
            hold(self.held)  # what its run loads is charged to it too (fairness/memory_charge.py): this task
            admission = self.admission = BodyAdmission(self.held, self.max_bytes)
        chunk = arrived.pop()
        try:
            await admission.add(chunk, end_of_stream)
        except APIError as error:
            self.admission = None
            self.done = True
            retry = [("retry-after", str(RETRY_AFTER_SECONDS))] if error.code in RETRY_LATER else []
            return m.immediate_response(error.status, error.body(), JSON, retry)
        del chunk
        if not end_of_stream:
            response = ProcessingResponse()
            response.request_body.response.body_mutation.body = b""
            return response
        self.admission = None
        body = admission.body()
        del admission
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
            if self.sidecar_route and (self.idempotent  # the HTTP door keeps the keys
                                       or runs_server_tools(decoded.get("tools"), self.runtime.served_tools)
                                       or self.runtime.streams_via_sidecar(decoded)
                                       or bool(decoded.get("context_management"))  # a summary call may come first
                                       or bool(decoded.get(MULTI_AGENT))):  # subagents: turn loops of their own
                self.held.release()  # the HTTP door that runs it reserves its own
                return self._route_to_sidecar()  # counted by the HTTP door, which runs it: no slot here
            if not self.sidecar_route and self.idempotent:
                raise idempotency_needs_http_door()  # never a key silently not kept
            if not self.sidecar_route and runs_server_tools(decoded.get("tools"), self.runtime.served_tools):
                raise needs_http_door(decoded.get("tools"), self.runtime.served_tools)  # never a silent drop
            if not self.sidecar_route and decoded.get(MULTI_AGENT) and run.beta.on:
                raise agents_need_http_door()
            self.slot = self.runtime.limits.acquire(self.tenant)  # a 429 at the tenant's limit
            if not self.runtime.routes().single:  # several upstreams: the model picks one (config/upstreams.py)
                self.route = self.runtime.route(decoded.get("model"))
                # native: Envoy sends it to the backend's own /v1/responses; else the upstream's profile and model
                beta = run.beta
                self.run = run = self.runtime.new_routed_run(self.route, tenant=self.tenant)
                run.beta = beta
            kept = orjson.dumps(decoded) if decoded.get("background") is True else None  # to resume it elsewhere
            upstream = await run.begin(decoded, large=large)
        except APIError as error:
            self.done = True
            retry = ([("retry-after", str(RETRY_AFTER_SECONDS))] if error.status == 429 or error.code in RETRY_LATER
                     else [])
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
            return await self._background(run, upstream, kept)
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
        reply = m.request_body_reply(upstream.body, set_headers, REQUEST_REMOVE, upstream_headers)
        upstream_name = None if route is None else route.upstream.name
        if replicated(upstream_name):  # several replicas: the one holding the chain's prefix (replica_pick.py)
            picked = self.picked = await pick_replica(upstream_name, chain_keys(run), upstream.body)
            if picked is not None:
                await name_replica(reply, picked)
        if route is not None:  # Envoy picks the route again, on the upstream's name: that upstream's cluster
            native = self.runtime.is_native(route)
            m.choose_upstream(reply, route.upstream.name + (NATIVE_SUFFIX if native else ""))
        return reply

    async def _background(self, run: Run, upstream: UpstreamRequest, kept: bytes | None) -> ProcessingResponse:
        """``background: true``: the run starts in the sidecar (its own upstream call goes through Envoy's
        passthrough route when ``upstream_via`` points there) and the client gets an immediate response: the
        queued response, or with ``stream: true`` the events. An immediate response cannot stream, so those are
        the events up to the end of the run or ``background_stream_wait`` seconds, whichever comes first; a client
        cut short resumes with ``GET /v1/responses/{id}?stream=true&starting_after=N``."""
        service = self.runtime.background
        route = self.route
        authorization = (self.runtime.upstream_authorization(self.authorization) if route is None
                         else self.runtime.route_authorization(route, self.authorization))
        # the client's own header going upstream (never stored) makes the run one that cannot be resumed
        client_credentials = authorization is not None and authorization == self.authorization
        try:
            started = await service.start(run, upstream, authorization,
                                          None if route is None else self.runtime.client_for(route),
                                          request_body=kept, client_credentials=client_credentials)
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
            await asyncio.wait_for(collect(), background_stream_wait(self.runtime.settings.envoy_message_timeout))
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


def needs_http_door(tools: object, served: Collection[str]) -> APIError:
    """The 400 of a request whose server-side tools only the HTTP door runs, reaching a processor whose Envoy does
    not route it there (Envoy Gateway and Istio cannot: the client's door header does). Dropping the tools, as the
    unsupported-tool policy would, turns the hosted shell into the client's own and MCP into nothing, silently."""
    kinds = sorted({str(tool.get("type")) for tool in tools if isinstance(tool, dict) and tool.get("type") in served}
                   if isinstance(tools, list) else set())
    return APIError(400, f"This request's server-side tools ({', '.join(kinds)}) run only in the bridge's HTTP door, "
                    f"and this gateway does not send it there: add the header '{DOOR_HEADER[0]}: {DOOR_HEADER[1]}' "
                    "(behind Envoy Gateway or Istio: docs/kubernetes.md), or call the HTTP door.", param="tools",
                    code="http_door_required")


def agents_need_http_door() -> APIError:
    """The 400 of a multi-agent request reaching a processor whose Envoy does not route it to the HTTP door, which
    alone runs subagents (their turns are calls the sidecar makes itself)."""
    return APIError(400, "Multi-agent responses run only in the bridge's HTTP door, and this gateway does not send "
                    f"them there: add the header '{DOOR_HEADER[0]}: {DOOR_HEADER[1]}' (behind Envoy Gateway or "
                    "Istio: docs/kubernetes.md), or call the HTTP door.", param="multi_agent",
                    code="http_door_required")


def idempotency_needs_http_door() -> APIError:
    """An ``Idempotency-Key`` on a route that does not reach the sidecar's HTTP door, which keeps the keys."""
    return APIError(400, "Requests with an 'Idempotency-Key' run only in the bridge's HTTP door, which keeps the keys, "
                    f"and this gateway does not send them there: add the header '{DOOR_HEADER[0]}: {DOOR_HEADER[1]}' "
                    "(behind Envoy Gateway or Istio: docs/kubernetes.md), or call the HTTP door.",
                    param="Idempotency-Key", code="http_door_required")
