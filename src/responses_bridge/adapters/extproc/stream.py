"""One ext_proc stream: one HTTP request, answered message by message. ``handle`` takes one message from Envoy
and returns the messages to send back (none, one, or several in ``FULL_DUPLEX_STREAMED`` mode); the phases are
:mod:`.request_phase`, :mod:`.routing` and :mod:`.response_phase`; a failure anywhere still gives Envoy an answer
that keeps the client away from the raw upstream bytes (``_recover``)."""

from __future__ import annotations

import asyncio

import structlog

from ...envoy_config import CLIENT_CONTEXT_HEADERS, IDEMPOTENCY_KEY_HEADER
from ...fairness.preemption import preempted_error
from ...protocol.errors import APIError
from ...protocol.tools.multi_agent import beta_surface
from ...services.tenancy.limits import RETRY_AFTER_SECONDS
from . import messages as m
from ._pb.ext_proc_pb2 import ProcessingRequest, ProcessingResponse
from .replica_pick import answered_by, settle
from .request_phase import RequestPhase
from .stream_state import JSON, SHUTDOWN_ERROR, Responses

log = structlog.get_logger("responses_bridge.extproc")


class _Stream(RequestPhase):
    """Per-request state and its phases (see the module docstring)."""

    __slots__ = ()

    async def handle(self, request: ProcessingRequest, phase: str | None = None) -> Responses:
        """``phase``: the message's ``WhichOneof("request")`` when the caller has it already."""
        if phase is None:
            phase = request.WhichOneof("request")
        dispatch = self._dispatch(request, phase)
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
            self.admission = None
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
            return [*await self._streamed((head, reply.body), True), *trailers]
        return [m.response_body_reply(head + reply.body)]

    async def _dispatch(self, request: ProcessingRequest, phase: str | None) -> Responses:
        if phase == "response_body":
            message = request.response_body
            if self.chat_record is not None:  # a stored chat's answer (chat_phase.py)
                return [await self._chat_body(message.body, message.end_of_stream)]
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
                return [await self._route_chat(request.request_body.body)]
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
                # the request headers are skipped: how the client reads the answer comes with the body
                forwarded = m.forwarded_headers(request, CLIENT_CONTEXT_HEADERS)
                self.run.beta = beta_surface({}, forwarded)
                self.idempotent = IDEMPOTENCY_KEY_HEADER in forwarded
            if self.authorization is None:  # request headers are skipped: Envoy forwards the credentials
                self.authorization = m.forwarded_authorization(request)
            if self.admission is None:  # the first body message carries the metadata
                self.sidecar_route = m.sidecar_route_offered(request)
            # The body moves into this stream's admission, and the message (which keeps its own copy of the body
            # until it is freed; clearing the field frees nothing) is let go before the translation starts: see
            # handle() and Process().
            arrived = [request.request_body.body]  # emptied by the request phase: no frame here keeps the bytes
            end_of_stream = request.request_body.end_of_stream
            del request
            return [await self._request_body(arrived, end_of_stream)]
        if phase == "response_headers":
            if self.picked is not None:  # how and where the replica answered ends its pick (replica_pick.py)
                headers = m.header_map(request.response_headers)
                self.upstream_head = (int(headers.get(":status") or 0), headers, answered_by(request))
            if self.chat_record is not None or self.chat_watch:  # a chat answer (chat_phase.py)
                return [self._chat_headers(request)]
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

    def settle_pick(self) -> None:
        """The picked replica's call is over (the terminal bytes are made, or the stream ended): its pick ends
        once, with how the replica answered, the usage, and the response id it produced (replica_pick.py)."""
        picked, self.picked = self.picked, None
        if picked is None:
            return
        status, headers, answered = self.upstream_head if self.upstream_head is not None else (0, None, "")
        run = self.run
        response = run.response if run is not None else None
        settle(picked, status, headers, answered, response,
               run.response_id if run is not None and not self.failed else None)

    async def shut_down(self) -> None:
        """A drain ran out of time with this response still running: end it now with ``response.failed``
        (``server_shutdown``) and ``[DONE]``, or the 503 error when nothing has left Envoy yet. In STREAMED mode
        the processor may only answer an upstream chunk, so the stream ends at its next one."""
        await self.lock.take()
        try:
            responses = await self._shutdown_responses()
            self.delivered = self.done
            for response in responses:
                await self.write(response)  # type: ignore[misc]
        except Exception:  # the stream went away meanwhile: nothing left to end
            log.warning("extproc_shutdown_write_failed", exc_info=True)
        finally:
            self.lock.give()

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


    async def preempted(self, why: str) -> list[ProcessingResponse]:
        """The bridge took back what this stream held (fairness/share.py): its response recorded as failed saying so,
        and the client answered a retryable 503 (Envoy resets the stream instead if the answer has begun)."""
        error = preempted_error(why)
        if not self.done and self.run is not None:
            self.done = True
            try:
                await self.run.fail(error)
            except Exception:  # a run not begun has nothing to record: the answer still goes out
                log.info("extproc_preempted_not_recorded", exc_info=True)
        return [m.immediate_response(error.status, error.body(), JSON, [("retry-after", str(RETRY_AFTER_SECONDS))])]


_BACKGROUND: set[asyncio.Future[None]] = set()
