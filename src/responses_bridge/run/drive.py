"""The turn loop, written once: every door that makes the upstream calls itself drives a run through here.

One response is one or more model turns. The driver opens each upstream call, hands the run its headers and chunks,
asks the run what comes next (``retry_request()``: the same call shortened once, for ``truncation: "auto"``;
``next_turn()``: the server-side tools' results as a new turn; neither: the response ends), and ends the run with
``finish()`` or ``fail()``. It returns the terminal :class:`~responses_bridge.engine.wire.Reply`, whose bytes the
door delivers; everything before them leaves through the door's :class:`TurnSink`:

* the HTTP door: an SSE stream opened on the first head (JSON answers have none, and write nothing until the end);
* WebSocket mode: JSON-line frames on the socket;
* background runs: the run's event log (and the stored ``in_progress`` response when the stream opens);
* the ext_proc door, for the calls the processor makes itself after Envoy's (the truncation retry): a buffer that
  becomes one body mutation.

What a new stop reason, a new tool or a new kind of turn needs is written here or in the run, and every door has
it. The loop's order (headers, chunks, then retry or next turn, then the tools' pending bytes) is the order the
client's bytes must come in.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from contextlib import AbstractAsyncContextManager, nullcontext
from time import perf_counter
from typing import Any, Protocol, TypeVar

import structlog

from ..engine.wire import Reply, UpstreamRequest
from ..fairness.preemption import absorb_preemption, preempted_error
from ..observability import gen_ai, tracing
from ..protocol.errors import APIError, shut_down_mid_response
from .runs import Run
from .upstream import UpstreamClient, UpstreamFailure
from .upstream_scope import upstream_scope

KEEPALIVE_SECONDS = 15.0
"""The default of ``RESPONSES_BRIDGE_STREAM_KEEPALIVE_SECONDS``: how long an open event stream may stay silent
while the bridge works between model turns (an MCP listing, a tool call) before a comment line goes out. Proxies
and clients with idle timeouts of their own (often 30-60 s) would otherwise cut a stream that is alive."""

T = TypeVar("T")
log = structlog.get_logger("responses_bridge.run")


class ShutdownDeadline(Exception):
    """The server's drain deadline passed while a run was still reading its upstream: the run fails with
    ``server_shutdown`` and the client gets that terminal event."""


class TurnSink(Protocol):
    """Where a door's bytes go before the terminal reply."""

    async def open(self, head: bytes) -> None:
        """The client's event stream opens: its first events (``response.created`` …)."""

    async def write(self, data: bytes) -> None:
        """More events of an open stream (b"" never comes; bytes before ``open`` never do)."""

    def ending(self) -> None:
        """The run is about to end (``finish``/``fail``): what the door must know before the last await."""

    async def keepalive(self) -> None:
        """The stream has been silent for a while: something that keeps an idle timeout from cutting it (an SSE
        comment), or nothing where no such timeout applies."""


async def drive(run: Run, call: UpstreamRequest | None, upstream: UpstreamClient, authorization: str | None,
                sink: TurnSink, *, deadline: AbstractAsyncContextManager[None] | None = None,
                keepalive: float = KEEPALIVE_SECONDS) -> Reply:
    """Make ``call`` and every call that follows it (None: the run's deferred set-up first, see
    ``Run.first_call``, after the client's stream opens if it is one); return the run's terminal reply.
    ``deadline``: around the upstream reads, raising :class:`ShutdownDeadline` when the server must stop.
    ``keepalive``: seconds of silence during server-side work before ``sink.keepalive()``. Cancellation
    propagates (the door records the run as abandoned, or cancelled); any other failure of the run's own is the
    door's too, until the run made a server-side call with effects (``run.effects_made``): then it ends the run
    as failed, since the door's 500 is a status clients retry, and a retry would make the call again."""
    chain = chain_keys(run) if getattr(upstream, "replicated", False) else ()  # replicas: the run's chain (below)
    gate = getattr(run, "upstream_gate", None)
    if gate is not None:  # the response's model turns, its subagents' included, take places (upstream_gate.py)
        upstream = gate.around(upstream, getattr(run, "tenant", ""), durable=bool(getattr(run, "background", False)))
    try:
        with upstream_scope(upstream, authorization, chain):  # the tool loop's image calls go where its turns go
            async with deadline or nullcontext():
                if call is None:  # set-up work first (MCP listings): the client sees its stream open before it
                    if run.streaming:
                        await sink.open(run.open_stream())
                    try:
                        call = await _kept_alive(run.first_call(), sink, keepalive)
                    except APIError as refused:  # a refusal of the set-up's (a tenant's limit): the client's error
                        sink.ending()
                        return await run.fail(refused)
                    except Exception:
                        log.exception("run_set_up_failed", response_id=run.response_id)
                        sink.ending()
                        return await run.fail(APIError(500, "The server-side tools could not be set up.",
                                                       type="server_error", code="server_error"))
                    pending = run.take_pending_bytes()
                    if pending:
                        await sink.write(pending)
                timing = run.timing  # the request's clock (observability/timing.py), None for a run nobody times
                while call is not None:
                    # the call's clock readings (only for a timed run): its answer's headers, first byte and first
                    # output — an item of the response's output made by this call, its first delta streamed or not
                    began = perf_counter()
                    headers = first_byte = first_token = None
                    output: list[Any] | None = None
                    start = 0
                    try:
                        with tracing.span("chat", kind=tracing.SpanKind.CLIENT) as span:  # the model call
                            async with upstream.chat(call, authorization) as answer:
                                watching = timing is not None
                                if watching:
                                    headers = perf_counter()
                                    response = run.response
                                    output = response.get("output") if response is not None else None
                                    if isinstance(output, list):
                                        start = len(output)
                                    else:
                                        output = None
                                head = run.on_upstream_headers(answer.status, answer.content_type)
                                if head is not None:
                                    await sink.open(head)
                                async for chunk in answer.chunks():
                                    if watching:  # until the call's first output: one check a chunk
                                        if first_byte is None:
                                            first_byte = perf_counter()
                                        out = run.on_upstream_chunk(chunk)
                                        if output is None:
                                            watching = False
                                        elif len(output) > start:
                                            first_token = perf_counter()
                                            watching = False
                                    else:
                                        out = run.on_upstream_chunk(chunk)
                                    if out:
                                        await sink.write(out)
                                    elif run.upstream_failed:  # e.g. an event over the size limit: the rest is dropped
                                        break
                                    if run.backlog:  # a long event: see catch_up
                                        await catch_up(run, sink.write)
                            if span is not None:
                                _told(span, run)
                    finally:  # a call that failed is in the timing too
                        if timing is not None:
                            # what its answer said (model, usage, finish reason), once it was translated: a JSON
                            # answer is translated only when it is read (before the tool it asked for starts, or
                            # as the response completes), and its facts are asked for then (Timing.settle)
                            end = len(output) if output is not None else start
                            if first_token is None and end > start:  # made by a long event's steps (catch_up)
                                first_token = perf_counter()
                            failed = run.upstream_failed
                            facts = run.call_facts() if end > start or failed else None
                            timing.model_call(began, headers, first_byte, first_token, perf_counter(), facts,
                                              (start, end), failed,
                                              (output, run.call_facts) if facts is None and output is not None
                                              else None)
                    call = run.retry_request() or await _kept_alive(run.next_turn(sink.write), sink, keepalive)
                    pending = run.take_pending_bytes()
                    if pending:
                        await sink.write(pending)
        sink.ending()
        return await run.finish()
    except UpstreamFailure as failure:
        sink.ending()
        return await run.fail(failure.error)
    except ShutdownDeadline:
        sink.ending()
        return await run.fail(shut_down_mid_response())
    except asyncio.CancelledError:  # the bridge took back what the run held (fairness/share.py): it fails saying so
        why = absorb_preemption()
        if why is None:
            raise
        sink.ending()
        return await run.fail(preempted_error(why))
    except Exception as error:
        if not run.effects_made:  # the door's answer (its 500), which a client may retry: nothing would be done twice
            raise
        # a call with effects was made: the client gets the failed Response with it, never a status it would retry
        if not isinstance(error, APIError):
            log.exception("run_failed_after_effects", response_id=run.response_id)
            error = APIError(500, "The response could not go on because of an error in the bridge.",
                             type="server_error", code="server_error")
        sink.ending()
        return await run.fail(error)


def chain_keys(run: Run) -> tuple[str, ...]:
    """The keys a run's calls pick their replica by, the most specific first: its own response id (the tool loop's
    next turns, a background run resumed), ``previous_response_id`` (a chain's next turn: a session's turns and
    WebSocket mode's too), the conversation's id. The replica that answered is bound to all of them."""
    request = run.request
    keys = [run.response_id or ""]
    if request is not None:
        keys.append(request.params.previous_response_id or "")
        conversation = request.params.conversation
        keys.append(conversation.get("id", "") if isinstance(conversation, dict) else conversation or "")
    return tuple(key for key in keys if key)


def _told(span: Any, run: Run) -> None:
    """The model call's span says what the call did (only when a span is made: no work otherwise)."""
    attributes = run.call_attributes()
    span.set_attributes(attributes)
    model = attributes.get(gen_ai.REQUEST_MODEL)
    if model:
        span.update_name(f"chat {model}")
    if run.upstream_failed:
        tracing.fail(span, "the upstream's answer failed")


async def catch_up(run: Run, write: Callable[[bytes], Awaitable[None]]) -> None:
    """The work a chunk left in ``run.backlog`` (a long event, translated in steps: engine/responses/long_events.py),
    one step per pass of the event loop: the other requests of both doors wait for one step, not for the whole event.
    Each step's bytes go to ``write`` as they are made."""
    while run.backlog:
        await asyncio.sleep(0)
        out = run.catch_up()
        if out:
            await write(out)


async def _kept_alive(work: Awaitable[T], sink: TurnSink, every: float) -> T:
    """``work``, with ``sink.keepalive()`` every ``every`` seconds it runs. Cancelling this cancels it.

    ``work`` is awaited in this task, under a timer: the keep-alive task starts only once ``every`` seconds have
    passed. Most turns have nothing to do here (no server-side tool: every plain request's ``next_turn``) and
    answer at once; they pay for one timer, not for a task of their own and a wait on it. A keep-alive that fails
    (the client went away) cancels the work and is raised in its place, as when it ran in this task."""
    loop = asyncio.get_running_loop()
    waiting = asyncio.current_task()
    keeper: list[asyncio.Task[None]] = []

    def start() -> None:
        keeper.append(loop.create_task(_keep_alive(sink, every, waiting)))

    timer = loop.call_later(every, start)
    try:
        return await work
    except asyncio.CancelledError:
        failed = keeper[0].exception() if keeper and keeper[0].done() and not keeper[0].cancelled() else None
        if failed is not None:
            raise failed from None
        raise
    finally:
        timer.cancel()
        if keeper and not keeper[0].done():
            keeper[0].cancel()


async def _keep_alive(sink: TurnSink, every: float, waiting: asyncio.Task[Any] | None) -> None:
    """``sink.keepalive()`` now and every ``every`` seconds, until cancelled; a failure cancels ``waiting``."""
    try:
        while True:
            await sink.keepalive()
            await asyncio.sleep(every)
    except Exception:
        if waiting is not None:
            waiting.cancel()
        raise


class BufferSink:
    """Every byte kept, in order: for a door that can only answer once, with all of it (the ext_proc door's
    retried call becomes one body mutation)."""

    def __init__(self) -> None:
        self.parts: list[bytes] = []

    async def open(self, head: bytes) -> None:
        self.parts.append(head)

    async def write(self, data: bytes) -> None:
        self.parts.append(data)

    def ending(self) -> None:
        pass

    async def keepalive(self) -> None:
        pass


class CallbackSink:
    """A sink from two callables: ``write`` takes every byte (the head too); ``ending`` is told the run ends."""

    def __init__(self, write: Callable[[bytes], Awaitable[None]],
                 ending: Callable[[], None] | None = None) -> None:
        self._write = write
        self._ending = ending

    async def open(self, head: bytes) -> None:
        await self._write(head)

    async def write(self, data: bytes) -> None:
        await self._write(data)

    def ending(self) -> None:
        if self._ending is not None:
            self._ending()

    async def keepalive(self) -> None:
        pass
