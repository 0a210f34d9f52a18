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

from ... import ids
from ...protocol.errors import APIError
from ...protocol.request_checks import check_call_outputs
from ...protocol.responses.request import ResponsesRequest
from ...sealing import Sealer
from .. import reasoning, truncation
from ..options import EngineOptions
from ..sse import DONE, EventTooLarge, SSEDecoder
from ..state import RenderedPrompt
from ..tools.prompt import PromptToolCalls, as_prompt_tools
from ..tools.turn_result import TurnResult
from ..upstream_errors import malformed, too_large, upstream_error
from ..wire import UPSTREAM_PATH, Framing, UpstreamRequest
from . import auto_compaction, compaction, prewarm
from .long_events import LONG_EVENT_BYTES, parsed, step
from .output_builder import OutputBuilder, UpstreamProtocolError, completion_as_chunk
from .request_translation import build_chat_request, plan_request_tools
from .response_object import new_response
from .translator_compaction import CompactionTurns
from .translator_state import MALFORMED
from .translator_stream import ClientStream, encoder_for
from .turns import ToolResult, follow_up_request

log = structlog.get_logger("responses_bridge.translator")


class Translator(ClientStream, CompactionTurns):
    """One request's translation; its fields are declared in translator_state.py, the client's stream and
    terminal states are written in translator_stream.py, the compaction turns in
    translator_compaction.py, and the rest (the first call, the upstream's answer, the tool loop) here."""

    __slots__ = ()

    def __init__(self, request: ResponsesRequest, history: list[dict[str, Any]], prompt: RenderedPrompt | None,
                 options: EngineOptions, sealer: Sealer | None = None, *, framing: Framing | None = None,
                 conversation_id: str | None = None, served: frozenset[str] = frozenset(),
                 sent_input: list[dict[str, Any]] | None = None, open_responses_names: bool = False) -> None:
        """Raises :class:`APIError` for a request that cannot be served. ``framing``: None gives events (SSE)
        only to requests with ``stream: true``; "json" always emits events as JSON lines (WebSocket mode).
        Background requests always get SSE events (they are stored for replay). ``served``: the server-side
        tool types the caller's tool loop runs (empty: they fall under the unsupported-tool policy).
        ``sent_input``: the input as the upstream gets it, where it differs from what is stored (parts naming a
        file resolved by the run: run/file_inputs.py); None: the request's own items.
        ``open_responses_names``: the client is an Open Responses one (engine/event_frames.py: its event names).

        The first upstream body is built by :meth:`build_first_request`, so a
        tool loop can set up its server tools (which extend :attr:`plan`) in between."""
        p = request.params
        self._options = options
        self._sealer = sealer  # opens and makes reasoning ``encrypted_content``; without one, blobs are ignored
        self._retry_chat = None  # truncation "auto": the call, kept for one shorter retry
        self._prompt_calls = None  # tool_calling "prompt": the current turn's answer read for calls as text
        self._compacting = None  # a compaction_trigger turn: how many items its one sealed item replaces
        self._prewarm = prewarm.wanted(p)
        if prompt is not None:  # the prompt's instructions come first
            p.instructions = (f"{prompt.instructions}\n\n{p.instructions}" if p.instructions and prompt.instructions
                              else prompt.instructions or p.instructions)
        check_call_outputs(history, request.input_items)
        reasoning.unseal_input(request.input_items, sealer)  # into copies: an item may be shared (a reference's)
        if sent_input is not None:  # the upstream's copy of the input (its files resolved) gets the text too
            reasoning.unseal_input(sent_input, sealer)
        # compaction items become their summary, for the upstream only (an automatic one: all before it too)
        sent = request.input_items if sent_input is None else sent_input
        history, expanded = compaction.expand_context(history, sent, sealer)
        translated = request if expanded is request.input_items else replace(request, input_items=expanded)
        targets = None
        self.plan = None  # the tools offered; None for a compaction turn
        self.context = history + prompt.input_items if prompt else history
        self._chat = None  # a compaction turn's call, made here
        self._body = None  # the last turn's chat body, while a tool loop may follow it
        self._turn_closed = False  # the current turn's answer was read to its end (end_turn)
        # the request with compaction items expanded, for the first body (let go once it is built)
        self._translated = translated
        # context_management: the tokens past which a turn is compacted first (auto_compaction.py)
        self.compact_threshold = auto_compaction.threshold(request, options)
        if self.compact_threshold is not None and sealer is None:  # its item is sealed
            raise APIError(400, "Compaction is not available in this deployment.", param="context_management",
                           code="unsupported_parameter")
        self._auto = None  # the summarising call under way
        if compaction.has_trigger(request.input_items):
            self.compact_threshold = None  # the turn is a compaction itself
            self._chat = self._compaction_request(request, history + expanded)
        else:
            self.plan = plan_request_tools(translated, self.context, options, served)
            targets = self.plan.targets
        self.request = request
        self.response = new_response(ids.response_id(), request)
        if conversation_id is not None:
            self.response["conversation"] = {"id": conversation_id}
        if prompt is not None:
            self.response["prompt"] = prompt.echo
        seal = (reasoning.sealer_for_items(sealer)
                if sealer is not None and reasoning.wants_encrypted(p.include) else None)
        self._events = "sse" if p.background else framing or ("sse" if p.stream else None)
        if p.background:
            self.response["status"] = "queued"
        open_responses_names = open_responses_names or options.event_names == "open-responses"
        self._builder = OutputBuilder(self.response, encoder_for(self._events, open_responses_names),
                                      targets=targets, summary=reasoning.wants_summary(p.reasoning), seal=seal)
        self._decoder = None
        # the work on_upstream_chunk left for catch_up (long_events.py): the chunks a long event was cut
        # into, and the payloads after it. One object for the translator's life, emptied in place, so a door can
        # hold it and test it per chunk for nothing more than its truth.
        self.backlog = deque()
        self._upstream_status = 0
        self._upstream_sse = False
        self._buffer = []  # a non-streamed upstream answer, joined once at the end
        self._buffered = 0  # its size so far: capped like one event (options.max_event_bytes)
        self._head_sent = False
        self._error = None
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
        if self._prewarm and self._compacting is None:  # the prompt is read, nothing is kept of the answer
            prewarm.warm_only(chat, self._options.max_tokens_field)
            return self._upstream_request(chat, False)
        if loop or self.compact_threshold is not None:  # kept for follow_up, or to be weighed (over_threshold)
            self._body = chat
        return self._upstream_request(chat, self._events is not None and self._compacting is None)

    def _upstream_request(self, chat: dict[str, Any], stream: bool) -> UpstreamRequest:
        """A turn's call as sent: the body itself, or with its tools described in the prompt (``tool_calling:
        prompt``, engine/tools/prompt.py; ``chat`` stays as it is, later turns are built from it), whose answer is
        then read for calls written as text."""
        self._prompt_calls = None
        if self._options.tool_calling == "prompt":
            wire, names = as_prompt_tools(chat)
            if names:
                self._prompt_calls = PromptToolCalls(names, self._builder.feed,
                                                     single=chat.get("parallel_tool_calls") is False)
            chat = wire
        return UpstreamRequest(UPSTREAM_PATH, orjson.dumps(chat), stream)

    @property
    def upstream_failed(self) -> bool:
        """The upstream's answer already failed (too large, not SSE, not JSON): the rest of its body would be
        dropped, so a door that can stop reading it may do so and call ``finish`` at once."""
        return self._error is not None

    # --- request -------------------------------------------------------------------------------------------------

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
        return self._upstream_request(chat, self._events is not None)

    # --- upstream answer -----------------------------------------------------------------------------------------

    def resume_as(self, response_id: str, created_at: int, next_sequence: int) -> None:
        """A background response taken over from a process that stopped (services/responses/background_resume.py): this
        translation is that response again (its id, its creation time), and its events continue the stored
        stream's numbering at ``next_sequence``."""
        self.response["id"] = response_id
        self.response["created_at"] = created_at
        self._builder._sequence = next_sequence

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
        slice of its text: long_events.py); the client's bytes it made. A door calls it while
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
                (builder if self._prompt_calls is None else self._prompt_calls).feed(parsed(payload))
        except MALFORMED as exc:
            raise malformed(exc) from None

    def _step(self) -> None:
        try:
            step(self.backlog, self._builder,
                 self._builder.feed if self._prompt_calls is None else self._prompt_calls.feed)
        except MALFORMED as exc:
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

    def skip_turn(self) -> None:
        """The tool loop's set-up ended the response before any turn (a resumed program waits for client tools
        again): :meth:`complete` finishes it with what the set-up added."""
        self._turn_closed = True

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
        """The next turn's call after ``turn``'s server calls gave ``results`` (turns.py); the answer
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
        return self._upstream_request(self._body, self._events is not None)

    def call_facts(self) -> tuple[str | None, dict[str, Any] | None, str | None]:
        """The upstream call whose answer was just read: the model it asked, its usage, its finish reason (what
        its span says, observability/gen_ai.py)."""
        builder = self._builder
        return self._options.upstream_model or self.request.params.model or "", builder.usage, builder.finish_reason

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
                if self._prompt_calls is not None:
                    self._prompt_calls.end()
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
                    elif self._prewarm:
                        builder.feed(prewarm.usage_only(completion))
                    elif self._prompt_calls is not None:
                        self._prompt_calls.feed(completion_as_chunk(completion))
                    else:
                        builder.feed(completion_as_chunk(completion))
                except MALFORMED as exc:
                    raise malformed(exc) from None
        except UpstreamProtocolError as exc:
            return APIError(502, str(exc), type="server_error", code="server_error")
        self._buffer = []
        return None

