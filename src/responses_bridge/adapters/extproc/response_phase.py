"""The response phase of one ext_proc stream: the upstream's headers and body (as Envoy streams them, in
``FULL_DUPLEX_STREAMED`` or the older ``STREAMED``/``BUFFERED`` modes) become the client's Response or event stream,
and every failure there still ends the client's answer with its terminal bytes."""

from __future__ import annotations

from collections.abc import Sequence
from time import perf_counter

import structlog

from ...engine.sse import DONE_FRAME, encode_event
from ...engine.wire import SSE_CONTENT_TYPE, Reply
from ...protocol.errors import APIError
from ...run.drive import catch_up
from ...run.runs import Run
from ..pieces import PIECE_BYTES, joined_pieces
from . import messages as m
from ._pb.ext_proc_pb2 import ProcessingRequest, ProcessingResponse
from .retry import retried_reply
from .stream_state import JSON, SHUTDOWN_ERROR, Responses, StreamState

log = structlog.get_logger("responses_bridge.extproc")


class ResponsePhase(StreamState):
    __slots__ = ()

    async def _response_headers(self, request: ProcessingRequest) -> Responses:
        run = self.run
        assert run is not None
        message = request.response_headers
        headers = m.header_map(message)
        clock = run.timing
        if clock is not None and clock.headers is None:  # the upstream's answer to Envoy's call: its headers now
            clock.headers = perf_counter()
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
            _first_byte(run)
            return await self._duplex_end() if end_of_stream else []
        out = run.on_upstream_chunk(chunk)
        clock = run.timing
        if clock is not None and clock.first_token is None:  # until the first output: one check a chunk
            clock.chunk_seen(run.response)
        if run.backlog:  # a long event, translated in steps
            return await self._duplex_long(out, end_of_stream)
        if out and self.observed is not None and not self.observed.first_event_at:
            self.observed.first_event_at = perf_counter()
        if end_of_stream:
            return await self._duplex_end(out)
        if self.shutdown_requested:
            return await self._duplex_shutdown(out)
        if not out and not self.pending:
            return []
        head, self.pending = self.pending, b""
        if len(out) > PIECE_BYTES:  # one large event: in pieces (adapters/pieces.py)
            return await self._streamed((head, out), False)
        return [m.streamed_body(head + out if head else out, False)]

    async def _duplex_long(self, out: bytes, end_of_stream: bool) -> Responses:
        """A chunk that left work for later (a long event: engine/responses/long_events.py): the work done a step per
        pass of the event loop, and the bytes of every step sent in pieces (adapters/pieces.py), never joined whole."""
        parts = [out, *await _caught_up(self.run)]  # type: ignore[arg-type]
        if self.observed is not None and not self.observed.first_event_at and any(parts):
            self.observed.first_event_at = perf_counter()
        if end_of_stream:
            return await self._duplex_end(*parts)
        if self.shutdown_requested:
            return await self._duplex_shutdown(*parts)
        head, self.pending = self.pending, b""
        return await self._streamed((head, *parts), False)

    async def _duplex_end(self, *out: bytes) -> Responses:
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
            return await self._streamed((reply.body,), True, m.response_headers_reply(None, _json_headers(reply)))
        head, self.pending = self.pending, b""
        return await self._streamed((head, *out, reply.body), True)  # the terminal events repeat the whole output

    async def _duplex_shutdown(self, *out: bytes) -> Responses:
        self.done = True
        reply = await self._fail(SHUTDOWN_ERROR)
        head, self.pending = self.pending, b""
        return await self._streamed((head, *out, reply.body), True)

    async def _streamed(self, parts: Sequence[bytes], end_of_stream: bool,
                        first: ProcessingResponse | None = None) -> Responses:
        """The client's bytes as FULL_DUPLEX_STREAMED body messages. Large ones (the terminal events, which repeat
        the whole output; a long event's slices) leave a piece at a time (adapters/pieces.py): each message is
        built just before this stream writes it, and the event loop serves other requests while gRPC takes it;
        the last is returned like any reply. A stream that cannot write for itself returns them all. ``first``:
        a reply that must reach Envoy before the body (a JSON answer's headers)."""
        write = self.write
        if write is None or sum(map(len, parts)) <= PIECE_BYTES:
            bodies_only = m.streamed_bodies(parts, end_of_stream)
            return bodies_only if first is None else [first, *bodies_only]
        if first is not None:
            await write(first)
        bodies = joined_pieces(parts)
        body = next(bodies)
        for following in bodies:
            await write(m.streamed_body(body, False))
            body = following
        return [m.streamed_body(body, end_of_stream)]

    async def _response_body(self, chunk: bytes, end_of_stream: bool) -> ProcessingResponse:
        """STREAMED or BUFFERED mode: exactly one reply per body message."""
        if self.done:
            return m.response_body_reply(b"")
        run = self.run
        assert run is not None
        if not self.sse:
            if not end_of_stream:  # BUFFERED gives one message; anything else is held until the end
                run.on_upstream_chunk(chunk)
                _first_byte(run)
                return m.response_body_reply(b"")
            try:
                run.on_upstream_chunk(chunk)
                _first_byte(run)
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
            _watched(run)
            if run.backlog:  # a long event, translated in steps; this mode answers each message once
                out = b"".join((out, *await _caught_up(run)))
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


def _watched(run: Run) -> None:
    """The run's timing learns of a chunk of the answer to Envoy's call, until its first output came."""
    clock = run.timing
    if clock is not None and clock.first_token is None:
        clock.chunk_seen(run.response)


def _first_byte(run: Run) -> None:
    """A chunk of a JSON answer to Envoy's call: its first byte is all the run's timing learns from it (the
    answer is translated whole at its end, where the call's first output is taken: Timing.watched_call)."""
    clock = run.timing
    if clock is not None and clock.first_byte is None:
        clock.first_byte = perf_counter()


async def _caught_up(run: Run) -> list[bytes]:
    """The bytes of the work ``run.backlog`` holds, made a step per pass of the event loop."""
    parts: list[bytes] = []

    async def keep(data: bytes) -> None:
        parts.append(data)

    await catch_up(run, keep)
    return parts


def _sse_headers(upstream_status: int) -> list[tuple[str, str]]:
    headers = [("content-type", SSE_CONTENT_TYPE), ("cache-control", "no-cache")]
    if upstream_status >= 300:  # an upstream failure is reported inside the stream, which itself is fine
        headers.append((":status", "200"))
    return headers


def _json_headers(reply: Reply) -> list[tuple[str, str]]:
    return [(":status", str(reply.status)), ("content-type", reply.content_type),
            ("content-length", str(len(reply.body)))]
