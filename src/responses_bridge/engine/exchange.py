"""One ``POST /v1/responses`` exchange, from the client's body to the stored response.

The exchange knows nothing of sockets, aiohttp or gRPC. A door drives it in the order the bytes move:

    upstream = await exchange.begin(body)           # parse, load history, build the Chat Completions body
    head = exchange.on_upstream_headers(status, ct) # bytes to open the client's SSE stream now, or None
    out = exchange.on_upstream_chunk(chunk)         # per upstream body chunk: bytes to forward (maybe b"")
    reply = await exchange.finish()                 # at end of the upstream body: the rest, after persisting
    reply = await exchange.fail(error)              # instead of finish, when the upstream call itself failed

Before ``finish`` a door asks ``exchange.retry_request()``: with ``truncation: "auto"`` and an upstream
context-length error it returns a shorter call to make instead, once (engine/truncation.py); the door then
drives that call's answer through the same methods, as if it were the first.

Whatever happens, ``finish``/``fail`` return a :class:`Reply` whose bytes the door must deliver: every failure
becomes an OpenAI-shaped error or a ``response.failed`` event, so a client never hangs and never sees raw chat
chunks. The response is persisted *before* its terminal bytes are returned, so a client that saw
``response.completed`` can always retrieve it.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, replace
from typing import Any, Literal

import orjson
import structlog

from .. import ids
from ..protocol.errors import APIError, invalid_request, not_found
from ..protocol.request import ResponsesRequest, parse_request
from ..protocol.request_checks import check_call_outputs
from ..sealing import Sealer
from ..store.base import ResponseStore
from . import compaction, reasoning, truncation
from .options import EngineOptions
from .output_builder import OutputBuilder, UpstreamProtocolError, completion_as_chunk
from .request_translation import build_chat_request, plan_request_tools
from .response_object import new_response
from .sse import DONE, DONE_FRAME, EventTooLarge, SSEDecoder, encode_event
from .state import ConversationHistory, PromptRenderer, RenderedPrompt

log = structlog.get_logger("responses_bridge.exchange")

# What a chunk of the wrong shape (``"choices": {}``, ``"delta": "x"``, a list where an object belongs) raises
# inside the output builder; it is the upstream's fault, so it fails the response like any protocol error.
_MALFORMED = (AttributeError, TypeError, KeyError, IndexError, ValueError)

SSE_CONTENT_TYPE = "text/event-stream; charset=utf-8"
JSON_CONTENT_TYPE = "application/json"
EVENTS_JSON_CONTENT_TYPE = "application/x-ndjson"
"""Events framed as JSON lines (one event object per line, no SSE framing, no ``[DONE]``): WebSocket mode."""

Framing = Literal["sse", "json"]
BeforePersist = Callable[[list[bytes], int], Awaitable[None]]
"""Awaited before a stored response is written, with the event frames not yet taken and the sequence number
after the last of them: a background run makes its events durable before the response says it ended."""


def encode_json_event(event: dict[str, Any]) -> bytes:
    """One event as one JSON line (orjson never writes a raw newline inside a document)."""
    return orjson.dumps(event) + b"\n"


UPSTREAM_PATH = "chat/completions"


@dataclass(frozen=True, slots=True)
class UpstreamRequest:
    """The Chat Completions call to make, relative to the upstream base URL (which ends in ``/v1``)."""

    path: str
    body: bytes
    stream: bool


@dataclass(frozen=True, slots=True)
class Reply:
    """The end of the exchange. When ``continues_stream`` is true the client's SSE stream is already open
    (status and content type were sent with the head) and ``body`` is its remaining bytes."""

    status: int
    content_type: str
    body: bytes
    continues_stream: bool = False


class Exchange:
    __slots__ = ("_conversations", "_prompts", "_conversation_id",  # conversations and prompts
                 "_store", "_options", "request", "response", "_builder", "_decoder", "_upstream_status",
                 "_upstream_sse", "_buffer", "_head_sent", "_error", "_ended", "_sealer", "_framing", "_events",
                 "before_persist", "_retry_chat", "_compacting", "_buffered")

    def __init__(self, store: ResponseStore, options: EngineOptions, sealer: Sealer | None = None, *,
                 framing: Framing | None = None, conversations: ConversationHistory | None = None,
                 prompts: PromptRenderer | None = None) -> None:
        self._conversations = conversations  # None: 'conversation' is refused
        self._prompts = prompts  # None: 'prompt' is refused
        self._conversation_id: str | None = None
        # framing: None gives events (SSE) only to requests with ``stream: true``; "json" always emits events as
        # JSON lines (WebSocket mode). Background requests always get SSE events (they are stored for replay).
        self._framing = framing
        self._events: Framing | None = None
        self.before_persist: BeforePersist | None = None
        self._store = store
        self._options = options
        self._sealer = sealer  # opens and makes reasoning ``encrypted_content``; without one, blobs are ignored
        self.request: ResponsesRequest | None = None
        self.response: dict[str, Any] | None = None
        self._builder: OutputBuilder | None = None
        self._decoder: SSEDecoder | None = None
        self._upstream_status = 0
        self._upstream_sse = False
        self._buffer: list[bytes] = []  # a non-streamed upstream answer, joined once at the end
        self._buffered = 0  # its size so far: capped like one event (options.max_event_bytes)
        self._head_sent = False
        self._error: APIError | None = None
        self._ended = False
        self._retry_chat: dict[str, Any] | None = None  # truncation "auto": the call, kept for one shorter retry
        self._compacting: int | None = None  # a compaction_trigger turn: how many items its one sealed item replaces

    @property
    def streaming(self) -> bool:
        """Does the client get an event stream (as opposed to one JSON body)?"""
        return self._events is not None

    @property
    def background(self) -> bool:
        return self.request is not None and self.request.params.background

    @property
    def sequence_number(self) -> int:
        """The sequence number the next event will get."""
        return self._builder.sequence_number if self._builder is not None else 0

    @property
    def compaction_turn(self) -> bool:
        """Does this turn answer a ``compaction_trigger``? Such a turn is never history anywhere."""
        return self._compacting is not None

    @property
    def upstream_failed(self) -> bool:
        """The upstream's answer already failed (too large, not SSE, not JSON): the rest of its body would be
        dropped, so a door that can stop reading it may do so and call :meth:`finish` at once."""
        return self._error is not None

    @property
    def response_id(self) -> str | None:
        return self.response["id"] if self.response else None

    # --- request -------------------------------------------------------------------------------------------------

    async def begin(self, body: bytes) -> UpstreamRequest:
        """Raises :class:`APIError` for a request that cannot be served; nothing is stored then."""
        request = parse_request(body)
        del body  # a large body is let go now, not after the history loads and the upstream call
        p = request.params
        if p.background and not p.store:
            raise APIError(400, "Background responses require 'store' to be true.", param="background",
                           code="invalid_value")
        history, prompt = await self._conversation_and_prompt(request)  # conversation items, rendered prompt
        if p.previous_response_id is not None:
            loaded = await self._store.load_history(p.previous_response_id)
            if loaded is None:
                raise not_found(f"Previous response with id '{p.previous_response_id}' not found.",
                                param="previous_response_id", code="previous_response_not_found")
            history = loaded
        check_call_outputs(history, request.input_items)
        reasoning.unseal_input(request.input_items, self._sealer)
        # compaction items (from /v1/responses/compact) become their summary, for the upstream only
        history = compaction.expand(history, self._sealer, "history")
        expanded = compaction.expand(request.input_items, self._sealer)
        translated = request if expanded is request.input_items else replace(request, input_items=expanded)
        targets = None
        if compaction.has_trigger(request.input_items):
            chat = self._compaction_request(request, history + expanded)
        else:
            context = history + prompt.input_items if prompt else history
            plan = plan_request_tools(translated, context, self._options)
            chat = build_chat_request(translated, context, self._options, plan)
            targets = plan.targets
            if p.truncation == "auto":
                chat = self._fit_window(chat)
        self.request = request
        self.response = new_response(ids.response_id(), request)
        if self._conversation_id is not None:
            self.response["conversation"] = {"id": self._conversation_id}
        if prompt is not None:
            self.response["prompt"] = prompt.echo
        seal = (reasoning.sealer_for_items(self._sealer)
                if self._sealer is not None and reasoning.wants_encrypted(p.include) else None)
        self._events = "sse" if p.background else self._framing or ("sse" if p.stream else None)
        if p.background:
            self.response["status"] = "queued"
        if self._events is not None and not p.stream and self._compacting is None:
            chat["stream"] = True  # background / WebSocket: events as the upstream streams
            chat["stream_options"] = {"include_usage": True}
        self._builder = OutputBuilder(self.response, _ENCODERS[self._events],
                                      targets=targets,
                                      summary=reasoning.wants_summary(p.reasoning), seal=seal)
        return UpstreamRequest(UPSTREAM_PATH, orjson.dumps(chat), self._events is not None and self._compacting is None)

    def _compaction_request(self, request: ResponsesRequest, items: list[dict[str, Any]]) -> dict[str, Any]:
        """A terminal ``compaction_trigger`` (Codex's remote compaction): the call is the summarising one, and
        the answer becomes exactly one ``compaction`` item (see :meth:`finish`)."""
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
        """Call when the upstream's answer has ended, before :meth:`finish`. With ``truncation: "auto"`` and a
        context-length error from the upstream: the same call without its oldest items, once; the answer state
        is reset, so the door drives the new call's answer through ``on_upstream_headers`` … ``finish``.
        None otherwise (and always the second time)."""
        chat, status = self._retry_chat, self._upstream_status
        if chat is None or status < 400 or self._upstream_sse:
            return None
        self._retry_chat = None
        error = _upstream_error(status, b"".join(self._buffer))
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
        if self.streaming and (status < 400 or status >= 500):
            return self._open_stream()
        return None

    def queued(self) -> bytes:
        """A background response was accepted: ``response.created`` and ``response.queued`` (status queued)."""
        self._builder.lifecycle("response.created")  # type: ignore[union-attr]
        self._builder.lifecycle("response.queued")  # type: ignore[union-attr]
        return self._builder.take()  # type: ignore[union-attr]

    def _open_stream(self) -> bytes:
        self._head_sent = True
        builder = self._builder
        if self.background:  # created and queued went out when it was accepted
            self.response["status"] = "in_progress"  # type: ignore[index]
        else:
            builder.lifecycle("response.created")  # type: ignore[union-attr]
        builder.lifecycle("response.in_progress")  # type: ignore[union-attr]
        if self.background and self._ended:  # failing or cancelling: keep them pending, so before_persist makes
            return b""  # them durable together with the terminal event (they come out with it)
        return builder.take()  # type: ignore[union-attr]

    def on_upstream_chunk(self, chunk: bytes) -> bytes:
        if self._error is not None:
            return b""  # already failed: swallow the rest until the upstream body ends
        if not self._upstream_sse:
            self._buffered += len(chunk)
            if self._buffered > self._options.max_event_bytes:
                self._buffer = []
                self._error = _too_large("answer", self._options.max_event_bytes)
                return b""
            self._buffer.append(chunk)
            return b""
        try:
            self._feed_payloads(self._decoder.feed(chunk))  # type: ignore[union-attr]
        except UpstreamProtocolError as exc:
            self._error = APIError(502, str(exc), type="server_error", code="server_error")
            return b""
        except EventTooLarge as exc:
            self._decoder = None  # its buffer is released now, not when the upstream body ends
            self._error = _too_large("event", exc.limit)
            return b""
        return self._builder.take() if self._head_sent else b""  # type: ignore[union-attr]

    def _feed_payloads(self, payloads: list[bytes]) -> None:
        builder = self._builder
        try:
            for payload in payloads:
                if payload == DONE:
                    builder.saw_done = True  # type: ignore[union-attr]
                    continue
                try:
                    chunk = orjson.loads(payload)
                except orjson.JSONDecodeError:
                    raise UpstreamProtocolError("The upstream sent an event that is not JSON.") from None
                if not isinstance(chunk, dict):
                    raise UpstreamProtocolError("The upstream sent an event that is not a JSON object.")
                builder.feed(chunk)  # type: ignore[union-attr]
        except _MALFORMED as exc:
            raise _malformed(exc) from None

    async def finish(self) -> Reply:
        """The upstream body ended. Completes, persists and returns the rest of the client's bytes."""
        if self._error is not None:
            return await self._fail(self._error)
        if self._upstream_status >= 400:
            return await self._fail(_upstream_error(self._upstream_status, self._take_buffer()))
        builder = self._builder
        try:
            if self._upstream_sse:
                self._feed_payloads(self._decoder.flush())  # type: ignore[union-attr]
                if not builder.complete:  # type: ignore[union-attr]
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
                        builder.feed(completion_as_chunk(completion))  # type: ignore[union-attr]
                except _MALFORMED as exc:
                    raise _malformed(exc) from None
        except UpstreamProtocolError as exc:
            return await self._fail(APIError(502, str(exc), type="server_error", code="server_error"))
        self._buffer = []
        builder.finish(int(time.time()))  # type: ignore[union-attr]
        if not await self._persist():
            builder.take()  # type: ignore[union-attr]  # drop the unsent completed event: it would be a lie
            return await self._fail(APIError(500, "The response could not be stored.", code="server_error"),
                                    persist=False)
        return self._success_reply()

    def _add_compaction(self, completion: Any) -> None:
        """The summarising call's answer as the response's one output item, sealed like /v1/responses/compact."""
        chunk = completion_as_chunk(completion)
        builder = self._builder
        builder.feed(dict(chunk, choices=[]))  # type: ignore[union-attr]  # its usage (or its error)
        summary = chunk["choices"][0]["delta"].get("content")
        if not isinstance(summary, str):
            raise UpstreamProtocolError("The upstream's summary answer has no message content.")
        blob = compaction.seal_summary(self._sealer, summary.strip(),  # type: ignore[arg-type]
                                       self.request.model, self._compacting or 0)  # type: ignore[union-attr]
        builder.add_item({"type": "compaction", "id": ids.new_id("cmp"), "encrypted_content": blob})  # type: ignore[union-attr]
        builder.finish_reason = "stop"  # type: ignore[union-attr]

    def _take_buffer(self) -> bytes:
        """The buffered answer in one piece; the pieces are let go at once, so it is never held twice."""
        chunks, self._buffer = self._buffer, []
        return b"".join(chunks)

    def _success_reply(self) -> Reply:
        self._ended = True
        if self.streaming:
            return Reply(200, self._events_content_type, self._builder.take() + self._done_frame,  # type: ignore[union-attr]
                         continues_stream=True)
        return Reply(200, JSON_CONTENT_TYPE, orjson.dumps(self.response))

    @property
    def _events_content_type(self) -> str:
        return SSE_CONTENT_TYPE if self._events == "sse" else EVENTS_JSON_CONTENT_TYPE

    @property
    def _done_frame(self) -> bytes:
        return DONE_FRAME if self._events == "sse" else b""

    async def fail(self, error: APIError) -> Reply:
        """The upstream call failed before its body ended (unreachable, timed out, cut)."""
        return await self._fail(error)

    async def _fail(self, error: APIError, *, persist: bool = True) -> Reply:
        self._ended = True
        builder = self._builder
        if builder is None or not self.streaming:
            return Reply(error.status, JSON_CONTENT_TYPE, error.body())
        if error.status < 500 and not self._head_sent and not self.background:
            # the upstream refused the request itself (4xx): the client gets that error, as OpenAI would
            return Reply(error.status, JSON_CONTENT_TYPE, error.body())
        head = b"" if self._head_sent else self._open_stream()
        builder.fail(error.code or "server_error", error.message)
        if persist:
            await self._persist()
        return Reply(200, self._events_content_type, head + builder.take() + self._done_frame,
                     continues_stream=head == b"")

    async def cancel(self) -> Reply:
        """A background response cancelled by its owner: ``status: cancelled``, persisted, terminal events."""
        self._ended = True
        builder = self._builder
        assert builder is not None
        head = b"" if self._head_sent else self._open_stream()
        builder.cancel()
        await self._persist()
        return Reply(200, self._events_content_type, head + builder.take() + self._done_frame,
                     continues_stream=head == b"")

    async def abandon(self) -> None:
        """The client went away mid-stream: record the response as failed rather than leave it unwritten."""
        if self._ended or self._builder is None or not self._head_sent:
            return
        self._ended = True
        self._builder.fail("client_disconnected", "The client disconnected before the response completed.")
        self._builder.take()
        await asyncio.shield(self._persist())

    async def _persist(self) -> bool:
        if self._compacting is not None:  # a compaction turn is never history: nothing to store, nothing to append
            return True
        request = self.request
        if request is None or not request.params.store:
            return await self._join_conversation()
        # The turn joins its conversation in the same transaction as the response is saved: a response that
        # fails to save adds nothing to the conversation, and a stored turn is never missing from it.
        joining = self._take_conversation()
        try:
            if self.before_persist is not None:
                await self.before_persist(self._builder.pending(), self._builder.sequence_number)  # type: ignore[union-attr]
            if joining is None:
                await self._store.save_response(self.response, request.input_items)  # type: ignore[arg-type]
            else:
                await self._store.save_response(self.response, request.input_items,  # type: ignore[arg-type]
                                                conversation_id=joining)
        except Exception:  # the client must learn that its response is not retrievable
            log.exception("store_failed", response_id=self.response_id)
            return False
        return True

    # --- conversations and prompts (engine/state.py) --------------------------------------------------------------

    async def _conversation_and_prompt(
            self, request: ResponsesRequest) -> tuple[list[dict[str, Any]], RenderedPrompt | None]:
        """The conversation's items as history, and the rendered prompt (whose instructions come first)."""
        p = request.params
        history: list[dict[str, Any]] = []
        if p.conversation is not None:
            if self._conversations is None:
                raise APIError(400, "'conversation' is not supported by this deployment.", param="conversation",
                               code="unsupported_parameter")
            if p.previous_response_id is not None:
                raise invalid_request("'conversation' and 'previous_response_id' cannot be used together.",
                                      param="conversation", code="invalid_value")
            conversation_id = p.conversation if isinstance(p.conversation, str) else p.conversation["id"]
            loaded = await self._conversations.load_items(conversation_id)
            if loaded is None:
                raise not_found(f"Conversation with id '{conversation_id}' not found.", param="conversation",
                                code="conversation_not_found")
            history, self._conversation_id = loaded, conversation_id
        prompt = None
        if p.prompt is not None:
            if self._prompts is None:
                raise APIError(400, "'prompt' is not supported by this deployment.", param="prompt",
                               code="unsupported_parameter")
            prompt = await self._prompts.render(p.prompt)
            p.instructions = (f"{prompt.instructions}\n\n{p.instructions}" if p.instructions and prompt.instructions
                              else prompt.instructions or p.instructions)
        return history, prompt

    def _take_conversation(self) -> str | None:
        """The conversation a finished turn (completed or incomplete, never failed) joins, once."""
        conversation_id = self._conversation_id
        if conversation_id is None or self.response is None or self.response["status"] not in ("completed",
                                                                                                 "incomplete"):
            return None
        self._conversation_id = None
        return conversation_id

    async def _join_conversation(self) -> bool:
        """A ``store: false`` turn still appends its input and output items to its conversation: the
        conversation is the client's own state (a stored turn joins it inside ``save_response``)."""
        conversation_id = self._take_conversation()
        if conversation_id is None:
            return True
        assert self.request is not None and self.response is not None  # a conversation is taken only after begin()
        items = self.request.input_items + self.response["output"]
        try:
            joined = await self._conversations.append_items(conversation_id, items)  # type: ignore[union-attr]
        except Exception:
            log.exception("conversation_append_failed", response_id=self.response_id)
            return False
        if not joined:  # deleted while the response ran: the response itself is still good
            log.warning("conversation_gone", response_id=self.response_id, conversation_id=conversation_id)
        return True


_ENCODERS = {None: None, "sse": encode_event, "json": encode_json_event}


def _too_large(what: Literal["event", "answer"], limit: int) -> APIError:
    subject = "one event" if what == "event" else "an answer"
    return APIError(502, f"The upstream model server sent {subject} larger than {limit} bytes, the limit set by "
                    "RESPONSES_BRIDGE_MAX_EVENT_BYTES.", type="server_error", code="upstream_too_large")


def _malformed(exc: Exception) -> UpstreamProtocolError:
    log.warning("upstream_malformed_chunk", error=repr(exc))
    return UpstreamProtocolError("The upstream sent a chunk that is not a valid Chat Completions chunk.")


def _upstream_error(status: int, body: bytes) -> APIError:
    """An upstream error answer as the client's error: 4xx keep their status and message (the client's request
    was at fault), 5xx become 502 (the bridge's upstream is at fault, not the client)."""
    message, param, code, kind = None, None, None, None
    try:
        parsed = orjson.loads(body) if body else None
    except orjson.JSONDecodeError:
        parsed = None
    if isinstance(parsed, dict):
        error = parsed.get("error", parsed)
        if isinstance(error, dict):
            message = error.get("message") if isinstance(error.get("message"), str) else None
            param = error.get("param") if isinstance(error.get("param"), str) else None
            code = error.get("code") if isinstance(error.get("code"), str) else None
            kind = error.get("type") if isinstance(error.get("type"), str) else None
        elif isinstance(error, str):
            message = error
    if message is None:
        message = body[:500].decode("utf-8", "replace").strip() or f"HTTP {status}"
    if truncation.is_context_length_error(status, message, code, kind):
        return APIError(400, message, type="invalid_request_error", param="input", code="context_length_exceeded")
    if status < 500:
        return APIError(status, message, type=kind, param=param, code=code)
    return APIError(502, f"The upstream model server failed (HTTP {status}): {message}", type="server_error",
                    code="server_error")
