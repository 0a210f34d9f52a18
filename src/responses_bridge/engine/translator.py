"""The translation of one ``POST /v1/responses``: synchronous, no I/O, one object per request.

A :class:`Translator` is built from what the run has already gathered (the parsed request, the loaded history,
the rendered prompt, the engine options and the sealer that seals and opens ``encrypted_content``) and is then
fed the upstream's answer as it arrives:

    translator = Translator(request, history, prompt, options, sealer)   # APIError: nothing is sent upstream
    call = translator.build_first_request()         # the Chat Completions call to make (once)

A tool loop (``run/response_run.py``) builds the first call with :meth:`build_first_request` after setting up
its server tools, then per turn: :meth:`end_turn` (the turn's calls), :meth:`follow_up` (the next call, into the
same stream and response) — the per-chunk path is the same for every turn.
    head = translator.on_upstream_headers(status, content_type)  # bytes that open the client's stream, or None
    out = translator.on_upstream_chunk(chunk)       # per upstream body chunk: the client's bytes (maybe b"")
    retry = translator.retry_request()              # truncation "auto" after a context-length error, once
    error = translator.complete()                   # at the end of the upstream body: None, or why it failed

Then the terminal events: :meth:`success_reply` after a completed (or incomplete) answer, :meth:`fail`,
:meth:`cancel` or :meth:`abandon` otherwise. The events of a terminal state are built first and taken after
the caller has persisted ``response`` (``pending()``/``sequence_number`` say which frames are not out yet),
so a client never sees ``response.completed`` for a response that was not stored. The caller is the
asynchronous run (``run/response_run.py``), which owns the store, conversations, prompts and the upstream.

The per-chunk path is this class's own: a door's ``on_upstream_chunk`` is this object's bound method, with
no layer in between.
"""

from __future__ import annotations

import time
from collections import deque
from dataclasses import replace
from typing import Any

import orjson
import structlog

from .. import ids
from ..protocol.errors import APIError, invalid_request
from ..protocol.request import ResponsesRequest
from ..protocol.request_checks import check_call_outputs
from ..sealing import Sealer
from . import auto_compaction, chat_tokens, compaction, reasoning, truncation
from .long_events import LONG_EVENT_BYTES, parsed, step
from .options import EngineOptions
from .output_builder import Encoder, OutputBuilder, UpstreamProtocolError, completion_as_chunk
from .request_translation import build_chat_request, plan_request_tools
from .response_object import new_response
from .sse import DONE, DONE_FRAME, EventTooLarge, SSEDecoder, encode_event
from .state import RenderedPrompt
from .tools import ToolPlan
from .turn_result import TurnResult
from .turns import ToolResult, follow_up_request
from .upstream_errors import malformed, too_large, upstream_error
from .wire import (
    EVENTS_JSON_CONTENT_TYPE,
    JSON_CONTENT_TYPE,
    SSE_CONTENT_TYPE,
    UPSTREAM_PATH,
    Framing,
    Reply,
    UpstreamRequest,
    encode_json_event,
)

log = structlog.get_logger("responses_bridge.translator")

# What a chunk of the wrong shape (``"choices": {}``, ``"delta": "x"``, a list where an object belongs) raises
# inside the output builder; it is the upstream's fault, so it fails the response like any protocol error.
_MALFORMED = (AttributeError, TypeError, KeyError, IndexError, ValueError)


class Translator:
    __slots__ = ("_options", "request", "response", "_builder", "_decoder", "_upstream_status", "_upstream_sse",
                 "_buffer", "_head_sent", "_error", "_ended", "_sealer", "_events", "_retry_chat", "_compacting",
                 "_buffered", "_translated", "_terminal_head", "plan", "context", "_chat", "_body", "_turn_closed",
                 "backlog", "compact_threshold", "_auto", "committed")

    def __init__(self, request: ResponsesRequest, history: list[dict[str, Any]], prompt: RenderedPrompt | None,
                 options: EngineOptions, sealer: Sealer | None = None, *, framing: Framing | None = None,
                 conversation_id: str | None = None, served: frozenset[str] = frozenset()) -> None:
        """Raises :class:`APIError` for a request that cannot be served. ``framing``: None gives events (SSE)
        only to requests with ``stream: true``; "json" always emits events as JSON lines (WebSocket mode).
        Background requests always get SSE events (they are stored for replay). ``served``: the server-side
        tool types the caller's tool loop runs (empty: they fall under the unsupported-tool policy).

        The first upstream body is built by :meth:`build_first_request`, so a
        tool loop can set up its server tools (which extend :attr:`plan`) in between."""
        p = request.params
        self._options = options
        self._sealer = sealer  # opens and makes reasoning ``encrypted_content``; without one, blobs are ignored
        self._retry_chat: dict[str, Any] | None = None  # truncation "auto": the call, kept for one shorter retry
        self._compacting: int | None = None  # a compaction_trigger turn: how many items its one sealed item replaces
        if prompt is not None:  # the prompt's instructions come first
            p.instructions = (f"{prompt.instructions}\n\n{p.instructions}" if p.instructions and prompt.instructions
                              else prompt.instructions or p.instructions)
        check_call_outputs(history, request.input_items)
        reasoning.unseal_input(request.input_items, sealer)
        # compaction items become their summary, for the upstream only (an automatic one: all before it too)
        history, expanded = compaction.expand_context(history, request.input_items, sealer)
        translated = request if expanded is request.input_items else replace(request, input_items=expanded)
        targets = None
        self.plan: ToolPlan | None = None  # the tools offered; None for a compaction turn
        self.context = history + prompt.input_items if prompt else history
        self._chat: dict[str, Any] | None = None  # a compaction turn's call, made here
        self._body: dict[str, Any] | None = None  # the last turn's chat body, while a tool loop may follow it
        self._turn_closed = False  # the current turn's answer was read to its end (end_turn)
        # the request with compaction items expanded, for the first body (let go once it is built)
        self._translated: ResponsesRequest | None = translated
        # context_management: the tokens past which a turn is compacted first (engine/auto_compaction.py)
        self.compact_threshold = auto_compaction.threshold(request, options)
        if self.compact_threshold is not None and sealer is None:  # its item is sealed
            raise APIError(400, "Compaction is not available in this deployment.", param="context_management",
                           code="unsupported_parameter")
        self._auto: _AutoCompaction | None = None  # the summarising call under way
        if compaction.has_trigger(request.input_items):
            self.compact_threshold = None  # the turn is a compaction itself
            self._chat = self._compaction_request(request, history + expanded)
        else:
            self.plan = plan_request_tools(translated, self.context, options, served)
            targets = self.plan.targets
        self.request = request
        self.response: dict[str, Any] = new_response(ids.response_id(), request)
        if conversation_id is not None:
            self.response["conversation"] = {"id": conversation_id}
        if prompt is not None:
            self.response["prompt"] = prompt.echo
        seal = (reasoning.sealer_for_items(sealer)
                if sealer is not None and reasoning.wants_encrypted(p.include) else None)
        self._events: Framing | None = "sse" if p.background else framing or ("sse" if p.stream else None)
        if p.background:
            self.response["status"] = "queued"
        self._builder = OutputBuilder(self.response, _ENCODERS[self._events], targets=targets,
                                      summary=reasoning.wants_summary(p.reasoning), seal=seal)
        self._decoder: SSEDecoder | None = None
        # the work on_upstream_chunk left for catch_up (engine/long_events.py): the chunks a long event was cut
        # into, and the payloads after it. One object for the translator's life, emptied in place, so a door can
        # hold it and test it per chunk for nothing more than its truth.
        self.backlog: deque[bytes | dict[str, Any]] = deque()
        self._upstream_status = 0
        self._upstream_sse = False
        self._buffer: list[bytes] = []  # a non-streamed upstream answer, joined once at the end
        self._buffered = 0  # its size so far: capped like one event (options.max_event_bytes)
        self._head_sent = False
        self._error: APIError | None = None
        self._ended = False
        self._terminal_head = b""  # the stream's opening events, when a terminal state opened it
        # a JSON answer whose 200 went out before its body (the door's keep-alive): it ends as a Response, failed
        # or not, never as an error body with another status
        self.committed = False

    def build_first_request(self, extra_messages: list[dict[str, Any]] | None = None, *,
                            tools_exhausted: bool = False, loop: bool = False) -> UpstreamRequest:
        """The first upstream call. ``extra_messages`` end its messages (the MCP calls a tool loop made at
        set-up); ``tools_exhausted``: ``max_tool_calls`` is used up already, so no tools are offered; ``loop``:
        a tool loop may follow, so the body is kept for :meth:`follow_up` (else it is not kept alive). Raises
        :class:`APIError` for a request with nothing to send."""
        chat = self._chat
        self._chat = None
        if chat is None:
            assert self.plan is not None and self._translated is not None, "the first request was already built"
            chat = build_chat_request(self._translated, self.context, self._options, self.plan)
            if self.compact_threshold is None:  # else kept: the items a compaction splits (compact_first)
                self._translated = None
            if extra_messages:
                chat["messages"].extend(extra_messages)
            if tools_exhausted:
                for key in ("tools", "tool_choice", "parallel_tool_calls"):
                    chat.pop(key, None)
            if self.request.params.truncation == "auto":
                chat = self._fit_window(chat)
        if self._events is not None and not self.request.params.stream and self._compacting is None:
            chat["stream"] = True  # background / WebSocket: events as the upstream streams
            if self._options.stream_usage:
                chat["stream_options"] = {"include_usage": True}
        if loop or self.compact_threshold is not None:  # kept for follow_up, or to be weighed (over_threshold)
            self._body = chat
        return UpstreamRequest(UPSTREAM_PATH, orjson.dumps(chat),
                               self._events is not None and self._compacting is None)

    @property
    def streaming(self) -> bool:
        """Does the client get an event stream (as opposed to one JSON body)?"""
        return self._events is not None

    @property
    def background(self) -> bool:
        return self.request.params.background

    @property
    def sequence_number(self) -> int:
        """The sequence number the next event will get."""
        return self._builder.sequence_number

    def pending(self) -> list[bytes]:
        """The event frames built but not yet taken (the terminal event among them, before a persist)."""
        return self._builder.pending()

    def encode_terminal(self) -> int:
        """After :meth:`complete`: encodes the next of the terminal events (which may each carry the whole
        output), returning its size in bytes, 0 when all are. The run calls it until 0, yielding to the event loop
        after a large one; whatever takes the frames encodes the rest anyway."""
        return self._builder.encode_deferred()

    @property
    def compaction_turn(self) -> bool:
        """Does this turn answer a ``compaction_trigger``? Such a turn is never history anywhere."""
        return self._compacting is not None

    @property
    def upstream_failed(self) -> bool:
        """The upstream's answer already failed (too large, not SSE, not JSON): the rest of its body would be
        dropped, so a door that can stop reading it may do so and call ``finish`` at once."""
        return self._error is not None

    @property
    def response_id(self) -> str:
        return str(self.response["id"])

    @property
    def input_items(self) -> list[dict[str, Any]]:
        """The request's input items as they are stored (with the response, and in its conversation)."""
        return self.request.input_items

    @property
    def finished_turn(self) -> bool:
        """Did the response end completed or incomplete (the turns that join a conversation)?"""
        return self.response["status"] in ("completed", "incomplete")

    # --- request -------------------------------------------------------------------------------------------------

    def _compaction_request(self, request: ResponsesRequest, items: list[dict[str, Any]]) -> dict[str, Any]:
        """A terminal ``compaction_trigger`` (Codex's remote compaction): the call is the summarising one, and
        the answer becomes exactly one ``compaction`` item (see :meth:`complete`)."""
        p = request.params
        compaction.check_trigger(request.input_items)
        if p.background:
            raise invalid_request("A compaction_trigger cannot run in the background.", param="background")
        if self._sealer is None:
            raise APIError(400, "Compaction is not available in this deployment.", param="input",
                           code="unsupported_parameter")
        items = [item for item in items if item["type"] != "compaction_trigger"]
        if not items:
            raise invalid_request("Nothing to compact: send the conversation before the compaction_trigger item.",
                                  param="input", code="missing_required_parameter")
        self._compacting = len(items)
        return compaction.summary_request(items, request.model, self._options)

    def _fit_window(self, chat: dict[str, Any]) -> dict[str, Any]:
        """``truncation: "auto"``: keep the call for one shorter retry, and shrink it now when the deployment's
        declared context window says it cannot fit (no cost when no window is declared)."""
        self._retry_chat = chat
        window = self._options.context_window
        if window is not None:
            fitted = truncation.fit_window(chat["messages"], len(orjson.dumps(chat)), window,
                                           self._max_output(chat))
            if fitted is not None:
                chat["messages"] = fitted
        return chat

    def _max_output(self, chat: dict[str, Any]) -> int | None:
        value = chat.get(self._options.max_tokens_field)
        return value if isinstance(value, int) else None

    def retry_request(self) -> UpstreamRequest | None:
        """Call when the upstream's answer has ended, before :meth:`complete`. With ``truncation: "auto"`` and a
        context-length error from the upstream: the same call without its oldest items, once; the answer state
        is reset, so the caller drives the new call's answer through ``on_upstream_headers`` … ``complete``.
        None otherwise (and always the second time)."""
        chat, status = self._retry_chat, self._upstream_status
        if chat is None or status < 400 or self._upstream_sse:
            return None
        self._retry_chat = None
        error = upstream_error(status, b"".join(self._buffer))
        if error.code != "context_length_exceeded":
            return None
        messages = truncation.drop_oldest(chat["messages"], int(truncation.size_of(chat["messages"])
                                                                 * truncation.shrink_ratio(error.message)))
        if messages is None:
            return None
        log.info("truncation_retry", response_id=self.response_id, messages_before=len(chat["messages"]),
                 messages_after=len(messages))
        chat["messages"] = messages
        self._upstream_status, self._buffer, self._buffered, self._decoder = 0, [], 0, None
        return UpstreamRequest(UPSTREAM_PATH, orjson.dumps(chat), self._events is not None)

    # --- upstream answer -----------------------------------------------------------------------------------------

    def on_upstream_headers(self, status: int, content_type: str | None) -> bytes | None:
        """Returns the bytes that open the client's event stream, or None when the client's status is not
        known yet (a JSON answer, or an upstream 4xx that is passed through as an error)."""
        self._upstream_status = status
        self._upstream_sse = status < 400 and content_type is not None and "text/event-stream" in content_type
        if self._upstream_sse:
            self._decoder = SSEDecoder(self._options.max_event_bytes)
        if self.streaming and not self._head_sent and (status < 400 or status >= 500):
            return self._open_stream()  # a later turn of the tool loop writes into the stream already open
        return None

    def queued(self) -> bytes:
        """A background response was accepted: ``response.created`` and ``response.queued`` (status queued)."""
        self._builder.lifecycle("response.created")
        self._builder.lifecycle("response.queued")
        return self._builder.take()

    def open_stream(self) -> bytes:
        """The client's stream opens before any upstream answer (the run has slow set-up work first): its opening
        events; the first turn's headers then open nothing more."""
        return self._open_stream()

    def _open_stream(self) -> bytes:
        self._head_sent = True
        builder = self._builder
        if self.background:  # created and queued went out when it was accepted
            self.response["status"] = "in_progress"
        else:
            builder.lifecycle("response.created")
        builder.lifecycle("response.in_progress")
        if self.background and self._ended:  # failing or cancelling: keep them pending, so before_persist makes
            return b""  # them durable together with the terminal event (they come out with it)
        return builder.take()

    def on_upstream_chunk(self, chunk: bytes) -> bytes:
        if self._error is not None:
            return b""  # already failed: swallow the rest until the upstream body ends
        if not self._upstream_sse:
            self._buffered += len(chunk)
            if self._buffered > self._options.max_event_bytes:
                self._buffer = []
                self._error = too_large("answer", self._options.max_event_bytes)
                return b""
            self._buffer.append(chunk)
            return b""
        try:
            if self.backlog:  # a door that did not catch up: what is queued goes first, in one go
                self._catch_up_all()
            self._feed_payloads(self._decoder.feed(chunk))  # type: ignore[union-attr]
        except UpstreamProtocolError as exc:
            self._fail_upstream(APIError(502, str(exc), type="server_error", code="server_error"))
            return b""
        except EventTooLarge as exc:
            self._decoder = None  # its buffer is released now, not when the upstream body ends
            self._fail_upstream(too_large("event", exc.limit))
            return b""
        return self._builder.take() if self._head_sent else b""

    def catch_up(self) -> bytes:
        """One step of the work :meth:`on_upstream_chunk` left in :attr:`backlog` (a long event's parse, or one
        slice of its text: engine/long_events.py); the client's bytes it made. A door calls it while
        ``backlog`` is not empty, letting its event loop serve other requests between the calls; a door that
        does not is still correct: the next chunk, or the end of the answer, does the rest in one go."""
        try:
            self._step()
        except UpstreamProtocolError as exc:
            self._fail_upstream(APIError(502, str(exc), type="server_error", code="server_error"))
            return b""
        return self._builder.take() if self._head_sent else b""

    def _fail_upstream(self, error: APIError) -> None:
        self._error = error
        self.backlog.clear()

    def _catch_up_all(self) -> None:
        while self.backlog:
            self._step()

    def _feed_payloads(self, payloads: list[bytes]) -> None:
        builder = self._builder
        try:
            for payload in payloads:
                if payload == DONE:
                    builder.saw_done = True
                    continue
                if len(payload) > LONG_EVENT_BYTES:  # this one, and every one after it, are left for catch_up
                    self.backlog.extend(payloads[next(i for i, p in enumerate(payloads) if p is payload):])
                    return
                builder.feed(parsed(payload))
        except _MALFORMED as exc:
            raise malformed(exc) from None

    def _step(self) -> None:
        try:
            step(self.backlog, self._builder)
        except _MALFORMED as exc:
            raise malformed(exc) from None

    def complete(self) -> APIError | None:
        """The upstream body ended: builds the completed (or incomplete) response and its terminal events, still
        pending, and returns None; or returns the error the response must fail with (see :meth:`fail`)."""
        if not self._turn_closed:
            error = self._read_answer()
            if error is not None:
                return error
        self._builder.finish(int(time.time()))
        return None

    # --- the tool loop's turns -----------------------------------------------------------------------------------

    def end_turn(self) -> TurnResult | None:
        """A turn's upstream body ended and a tool loop may follow: the turn's items are closed and its calls
        returned; None when the answer failed (then :meth:`complete` returns why)."""
        error = self._read_answer()
        if error is not None:
            self._error = error
            return None
        self._turn_closed = True
        return self._builder.end_turn()

    def follow_up(self, turn: TurnResult, results: list[ToolResult], *, tools_exhausted: bool) -> UpstreamRequest:
        """The next turn's call after ``turn``'s server calls gave ``results`` (engine/turns.py); the answer
        state is reset for it, the output and both counters go on (one stream, one response)."""
        assert self._body is not None and self.plan is not None, "build_first_request(loop=True) comes first"
        p = self.request.params
        self._body = follow_up_request(self._body, turn, results, plan=self.plan, tool_choice=p.tool_choice,
                                       parallel_tool_calls=p.parallel_tool_calls, tools_exhausted=tools_exhausted,
                                       options=self._options)
        self._reset_answer()
        self._builder.begin_turn()
        return self.turn_request()

    def turn_request(self) -> UpstreamRequest:
        """The tool loop's current turn as a call (after :meth:`follow_up`, or again after its compaction)."""
        assert self._body is not None, "build_first_request(loop=True) comes first"
        return UpstreamRequest(UPSTREAM_PATH, orjson.dumps(self._body), self._events is not None)

    def _reset_answer(self) -> None:
        """A new upstream call's answer follows: the state of the last one goes."""
        self._upstream_status, self._upstream_sse, self._buffer, self._buffered = 0, False, [], 0
        self._decoder, self._retry_chat, self._turn_closed = None, None, False

    # --- automatic compaction (engine/auto_compaction.py) ----------------------------------------------------------

    def compact_first(self) -> UpstreamRequest | None:
        """The first turn (already built, and too large): the summarising call to make before it, or None when
        there is nothing before the latest question to summarise. After :meth:`end_compaction`, the run builds
        the first call again (:meth:`build_first_request`), now from the summary and the kept items."""
        assert self._translated is not None, "context_management keeps the request until the first turn"
        split = auto_compaction.split_items(self.context + self._translated.input_items)
        if split is None:
            return None
        summarised, kept = split
        chat = compaction.summary_request(summarised, self.request.model, self._options)
        return self._start_compaction(chat, _AutoCompaction(ids.new_id("cmp"), kept, len(summarised)))

    def compact_loop(self) -> UpstreamRequest | None:
        """The tool loop's next turn (built by :meth:`follow_up`, and too large): the summarising call to make
        before it, or None when nothing lies between the latest question and the last turn."""
        assert self._body is not None and self._translated is not None
        split = auto_compaction.split_messages(self._body["messages"])
        if split is None:
            return None
        last = auto_compaction.last_user_item(self.context + self._translated.input_items)
        chat = compaction.summary_request_of_messages(split.middle, self.request.model, self._options)
        return self._start_compaction(chat, _AutoCompaction(ids.new_id("cmp"), [last] if last else [],
                                                            len(split.middle), split))

    def _start_compaction(self, chat: dict[str, Any], auto: _AutoCompaction) -> UpstreamRequest:
        self._auto = auto
        self._reset_answer()
        self._builder.compacting(auto.item_id)  # held until the stream opens, when it is not open yet
        return UpstreamRequest(UPSTREAM_PATH, orjson.dumps(chat), False)

    def over_threshold(self) -> bool:
        """Does the turn about to be sent weigh more than ``compact_threshold`` tokens? CPU work in proportion to
        the context: a caller on an event loop runs it in a thread."""
        assert self._body is not None and self.compact_threshold is not None
        tokens, _ = chat_tokens.count(self._body)
        return tokens > self.compact_threshold

    @property
    def compacting_now(self) -> bool:
        """Is the call under way a summarising one (its answer goes to :meth:`end_compaction`)?"""
        return self._auto is not None

    def end_compaction(self) -> APIError | None:
        """The summarising call's answer ended: the compaction item joins the output and the context is the
        summary from now on. Returns the error the response fails with instead, if the call failed."""
        auto, self._auto = self._auto, None
        assert auto is not None, "no compaction under way"
        if self._error is None and self._upstream_sse:
            self._error = APIError(502, "The upstream streamed the summary it was asked for as JSON.",
                                   type="server_error", code="server_error")
        error = self._error or (upstream_error(self._upstream_status, self._take_buffer())
                                if self._upstream_status >= 400 else None)
        summary = None
        if error is None:
            try:
                summary = self._summary_of(orjson.loads(self._take_buffer()))
            except (UpstreamProtocolError, orjson.JSONDecodeError, *_MALFORMED) as exc:
                error = APIError(502, f"The upstream's summary answer is unusable: {exc}", type="server_error",
                                 code="server_error")
        if error is not None or summary is None:
            self._error = error
            return error
        blob = compaction.seal_summary(self._sealer, summary, self.request.model,  # type: ignore[arg-type]
                                       auto.replaced, auto.kept)
        self._builder.add_item({"type": "compaction", "id": auto.item_id, "encrypted_content": blob})
        self._builder.begin_turn()  # the summary's usage counts; the turn's items start after the compaction
        self._reset_answer()
        message = compaction.summary_message(auto.item_id, summary)
        self.context = []
        self._translated = replace(self.request, input_items=[message, *auto.kept])
        if auto.split is not None:
            self._body = dict(self._body or {}, messages=auto_compaction.compacted_messages(
                auto.split, compaction.SUMMARY_PREFIX + summary))
        return None

    def take_events(self) -> bytes:
        """The events made between turns (the server calls' items), for a stream that is open."""
        return self._builder.take() if self._head_sent else b""

    @property
    def builder(self) -> OutputBuilder:
        return self._builder

    def _read_answer(self) -> APIError | None:
        """Read the rest of the turn's answer into the builder; the error it failed with, if any."""
        if self._error is not None:
            return self._error
        if self._upstream_status >= 400:
            return upstream_error(self._upstream_status, self._take_buffer())
        builder = self._builder
        try:
            if self._upstream_sse:
                self._catch_up_all()
                self._feed_payloads(self._decoder.flush())  # type: ignore[union-attr]
                self._catch_up_all()
                if not builder.complete:
                    raise UpstreamProtocolError("The upstream stream ended before the response was complete.")
            else:
                try:
                    completion = orjson.loads(self._take_buffer())  # the joined bytes die with the call
                except orjson.JSONDecodeError:
                    raise UpstreamProtocolError("The upstream answer is not valid JSON.") from None
                try:
                    if self._compacting is not None:
                        self._add_compaction(completion)
                    else:
                        builder.feed(completion_as_chunk(completion))
                except _MALFORMED as exc:
                    raise malformed(exc) from None
        except UpstreamProtocolError as exc:
            return APIError(502, str(exc), type="server_error", code="server_error")
        self._buffer = []
        return None

    def _summary_of(self, completion: Any) -> str:
        """A summarising call's answer: its text; its usage counts as the response's."""
        chunk = completion_as_chunk(completion)
        self._builder.feed(dict(chunk, choices=[]))  # its usage (or its error)
        summary = chunk["choices"][0]["delta"].get("content")
        if not isinstance(summary, str):
            raise UpstreamProtocolError("The upstream's summary answer has no message content.")
        return summary.strip()

    def _add_compaction(self, completion: Any) -> None:
        """The summarising call's answer as the response's one output item, sealed like /v1/responses/compact."""
        builder = self._builder
        blob = compaction.seal_summary(self._sealer, self._summary_of(completion),  # type: ignore[arg-type]
                                       self.request.model, self._compacting or 0)
        builder.add_item({"type": "compaction", "id": ids.new_id("cmp"), "encrypted_content": blob})
        builder.finish_reason = "stop"

    def _take_buffer(self) -> bytes:
        """The buffered answer in one piece; the pieces are let go at once, so it is never held twice."""
        chunks, self._buffer = self._buffer, []
        return b"".join(chunks)

    # --- terminal states -----------------------------------------------------------------------------------------

    def success_reply(self) -> Reply:
        """After :meth:`complete` returned None and the response was persisted: the rest of the client's bytes."""
        self._ended = True
        if self.streaming:
            return Reply(200, self._events_content_type, self._builder.take_between(b"", self._done_frame),
                         continues_stream=True)
        return Reply(200, JSON_CONTENT_TYPE, orjson.dumps(self.response))

    def drop_pending(self) -> None:
        """The completed response could not be stored: its unsent terminal event would be a lie."""
        self._builder.drop()

    @property
    def _events_content_type(self) -> str:
        return SSE_CONTENT_TYPE if self._events == "sse" else EVENTS_JSON_CONTENT_TYPE

    @property
    def _done_frame(self) -> bytes:
        return DONE_FRAME if self._events == "sse" else b""

    def fail(self, error: APIError) -> Reply | None:
        """The response fails with ``error``. Returns the client's whole reply when it is a plain error body
        (nothing is persisted then); else None: ``response.failed`` is built, pending, and the caller persists
        the response before taking :meth:`terminal_reply`."""
        self._ended = True
        if not self.streaming:
            if not self.committed:
                return Reply(error.status, JSON_CONTENT_TYPE, error.body())
            self._builder.fail(error.code or "server_error", error.message)  # stored, then terminal_reply()
            return None
        if error.status < 500 and not self._head_sent and not self.background:
            # the upstream refused the request itself (4xx): the client gets that error, as OpenAI would
            return Reply(error.status, JSON_CONTENT_TYPE, error.body())
        self._terminal_head = b"" if self._head_sent else self._open_stream()
        self._builder.fail(error.code or "server_error", error.message)
        return None

    def cancel(self) -> None:
        """A background response cancelled by its owner: ``status: cancelled``; the caller persists the response,
        then takes :meth:`terminal_reply`."""
        self._ended = True
        self._terminal_head = b"" if self._head_sent else self._open_stream()
        self._builder.cancel()

    def terminal_reply(self) -> Reply:
        """The stream's last bytes after :meth:`fail` or :meth:`cancel` (and the persist that follows them); for
        a committed JSON answer, the failed Response."""
        if not self.streaming:
            return Reply(200, JSON_CONTENT_TYPE, orjson.dumps(self.response))
        head, self._terminal_head = self._terminal_head, b""
        return Reply(200, self._events_content_type, self._builder.take_between(head, self._done_frame),
                     continues_stream=head == b"")

    def abandon(self) -> bool:
        """The client went away: the response becomes failed, with the output made so far (its events are
        dropped). False when there is nothing to record: it already ended, or it is a stream the client never saw
        begin. A JSON answer is recorded whenever the client leaves (a proxy's idle timeout, a client's own): its
        work is stored as failed rather than lost without a trace."""
        if self._ended or (self.streaming and not self._head_sent):
            return False
        self._ended = True
        self._builder.fail("client_disconnected", "The client disconnected before the response completed.")
        self._builder.drop()
        return True


_ENCODERS: dict[Framing | None, Encoder | None] = {None: None, "sse": encode_event, "json": encode_json_event}


class _AutoCompaction:
    """A summarising call under way: the item it will make, the items it keeps plain, how many it replaces, and
    for a tool loop's turn, how its messages were cut."""

    __slots__ = ("item_id", "kept", "replaced", "split")

    def __init__(self, item_id: str, kept: list[dict[str, Any]], replaced: int,
                 split: auto_compaction.MessageSplit | None = None) -> None:
        self.item_id, self.kept, self.replaced, self.split = item_id, kept, replaced, split
