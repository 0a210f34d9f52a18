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
from collections.abc import Callable
from time import perf_counter

import grpc
import structlog

from ...envoy_config import HANDS_OFF_METADATA
from ...fairness.preemption import absorb_preemption
from ...observability import timing
from ...runtime import Runtime
from ._pb.ext_proc_pb2 import ProcessingResponse
from .decode import Undecodable
from .observe import StreamObservation
from .outbox import Outbox
from .service import ExternalProcessorServicer
from .stream import _Stream

log = structlog.get_logger("responses_bridge.extproc")



CLOSE_WAIT = 5.0
"""Seconds a drain waits, after ending the remaining streams, for Envoy to close them."""


class ExtProcServicer(ExternalProcessorServicer):
    """``upstream_path_prefix`` is the path of the upstream's base URL (``/v1`` for ``http://host/v1``): the
    rewritten request goes to ``<prefix>/chat/completions`` on the route's upstream cluster."""

    def __init__(self, runtime: Runtime, upstream_path_prefix: str) -> None:
        self._runtime = runtime
        self._prefix = upstream_path_prefix.rstrip("/")
        self._live: set[_Stream] = set()
        self._changed = asyncio.Event()  # a stream finished its work or went away: a drain looks again
        self._via_checked = False  # Envoy's first stream says Envoy is in front: is --upstream-via set for it?

    def _check_upstream_via(self) -> None:
        """Envoy in front needs ``--upstream-via`` (envoy/README.md): without it the sidecar's own model calls (the
        tool loop's turns, background runs, WebSocket turns, compaction) go around Envoy, straight to the upstream.
        Nothing at start tells an Envoy deployment from one served by the HTTP door alone, so the first ext_proc
        stream does: one warning per process."""
        self._via_checked = True
        if self._runtime.settings.upstream_via is None:
            log.warning("upstream_via_unset",
                        hint="Envoy is in front (the ext_proc door got its first request) but --upstream-via / "
                        "RESPONSES_BRIDGE_UPSTREAM_VIA is not set: the sidecar's own model calls (tool loop turns, "
                        "background runs, WebSocket, compaction) bypass Envoy; set it to Envoy's listener, e.g. "
                        "http://127.0.0.1:10000/v1 (envoy/README.md)")

    async def Process(self, request_iterator: object, context: grpc.aio.ServicerContext) -> None:
        """Fails closed: however the stream ends early (a message that does not decode, a broken write, a bug),
        the handler never returns OK with the request unanswered, since Envoy then goes on without the processor
        and the untranslated, unauthenticated request reaches the upstream. A message that does not decode is
        answered (decode.py); anything else ends the stream with an error status, which Envoy turns into an
        error reply (``failure_mode_allow: false``)."""
        if not self._via_checked:
            self._check_upstream_via()
        outbox = Outbox(context.write)

        async def write_now(response: ProcessingResponse) -> None:
            await outbox.send((response,), queued=False)

        stream = _Stream(self._runtime, self._prefix, write_now)
        stream.hands_off = _hands_off(context)
        self._live.add(stream)
        read, turn, send, put = context.read, stream.lock, outbox.send, outbox.put
        observed = stream.observed = StreamObservation()  # request id, metrics, spans (observe.py)
        # its stored timing (observability/timing.py): the run takes it (timing.begin, inline: every stream)
        clock = timing.CURRENT.set(timing.Timing(observed.started))
        first = True
        eof = grpc.aio.EOF  # type: ignore[attr-defined]  # grpc exports it; grpc-stubs lack it
        try:
            while True:
                request = await read()
                if request is eof:
                    break
                started = perf_counter()
                if type(request) is Undecodable:  # a string field with bytes that are not UTF-8 (decode.py)
                    first = False
                    await turn.take()
                    try:
                        replies = await stream.undecodable(request.phase)
                        observed.replied(replies, stream.sse)
                        if stream.done:
                            stream.slot.release()  # before the terminal bytes: see below
                        stream.delivered = stream.done
                        await send(replies, queued=False)
                    finally:
                        turn.give()
                    continue
                phase = request.WhichOneof("request")
                if phase != "response_body":  # a few messages per request: the per-chunk path skips all this
                    if first:
                        first = False
                        observed.begin(phase, request, context)
                    elif phase == "response_headers" and not stream.routed:  # the door's answer is no model call
                        observed.upstream_answered(request)
                try:
                    if not turn.take_now():  # sent in turn: a drain's last words never overtake these replies
                        await turn.take()
                    try:
                        handling = stream.handle(request, phase)  # runs when awaited: in the phase's span
                        del request  # a request body message is let go as soon as its bytes are taken
                        if observed.span is None:  # not traced: no span to enter (every streamed chunk)
                            replies = await handling
                        else:
                            with observed.phase(phase):
                                replies = await handling
                        outbox.merge = stream.full_duplex
                        if phase != "response_body" or stream.done:
                            observed.replied(replies, stream.sse)
                        if stream.done:  # the tenant's slot comes back before the client can have the last byte:
                            stream.slot.release()  # its next request must never find this one still counted
                            if stream.picked is not None:  # and the chain's next turn finds its replica
                                stream.settle_pick()
                        # the terminal bytes are handed to gRPC from here on: a close by Envoy after this point is
                        # the end of a delivered answer, not a client going away
                        stream.delivered = stream.done
                        if phase == "request_body" and stream.ours and not stream.done:
                            # the call starts as the rewritten request is handed over, not once the write returns:
                            # Envoy may have called the upstream (and its first byte come) before this task resumes
                            observed.upstream_called()
                            if stream.run is not None and stream.run.timing is not None:
                                stream.run.timing.called = observed.upstream_started
                        if stream.sse or stream.routed:
                            put(replies)  # the writing task's (outbox.py): no coroutine for an event stream's chunk
                        else:
                            await send(replies, queued=False)
                    finally:
                        turn.give()
                finally:  # counted however it ends: Envoy may cancel the stream while an immediate reply is written
                    observed.message(phase, perf_counter() - started)
                if stream.done:
                    self._changed.set()
                if stream.released:  # nothing more to see (a chat answer not stored): Envoy goes on without us
                    break
            await outbox.flush()  # returning ends the gRPC stream: not before every reply is written
        except asyncio.CancelledError:
            why = absorb_preemption()  # the bridge took back what it held (fairness/share.py), or Envoy reset it
            if why is None:
                await stream.abandon()  # Envoy reset the stream: the client went away
                raise
            await send(await stream.preempted(why), queued=False)
            await outbox.flush()
        except Exception:  # the stream broke (a write failed, a bug): it must not end as OK
            log.warning("extproc_stream_broken", exc_info=True)
            await stream.abandon()
            context.set_code(grpc.StatusCode.INTERNAL)
            context.set_details("the processor failed")
        else:
            if not stream.done:
                await stream.abandon()
        finally:
            if stream.picked is not None:  # the call's replica, however the stream ended
                stream.settle_pick()
            stream.slot.release()  # the tenant's slot (services/tenancy/limits.py), if a stream ended before its answer
            stream.held.release()  # its part of the memory budget (services/tenancy/memory_budget.py)
            await outbox.close()
            self._live.discard(stream)
            self._changed.set()
            observed.finish(stream.ours, not stream.delivered)
            timing.CURRENT.reset(clock)  # timing.end

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


def _hands_off(context: grpc.aio.ServicerContext) -> bool:
    """The route told the processor to change nothing (envoy_config/names.py ``HANDS_OFF_METADATA``). A loop, not
    ``any()`` over a generator: every stream asks."""
    for key, _ in context.invocation_metadata() or ():  # noqa: SIM110 - see above
        if key == HANDS_OFF_METADATA:
            return True
    return False
