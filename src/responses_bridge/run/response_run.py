"""One ``POST /v1/responses`` run, from the client's body to the stored response.

The run knows nothing of sockets, aiohttp or gRPC. It is the asynchronous half of a response: it loads what the
request refers to (a ``previous_response_id`` chain, a conversation, a prompt), hands it to the synchronous
:class:`~responses_bridge.engine.responses.translator.Translator`, and persists the result before the terminal bytes go
out. A door drives it in the order the bytes move:

    upstream = await run.begin(body)              # parse, load history, build the Chat Completions body
    head = run.on_upstream_headers(status, ct)    # bytes to open the client's SSE stream now, or None
    out = run.on_upstream_chunk(chunk)            # per upstream body chunk: bytes to forward (maybe b"")
    while run.backlog:                            # a long event: translated in steps, the loop free between them
        out = run.catch_up()
    reply = await run.finish()                    # at end of the upstream body: the rest, after persisting
    reply = await run.fail(error)                 # instead of finish, when the upstream call itself failed

Before ``finish`` a door asks ``run.retry_request()``: with ``truncation: "auto"`` and an upstream
context-length error it returns a shorter call to make instead, once (engine/truncation.py); the door then
drives that call's answer through the same methods, as if it were the first.

The tool loop: after each upstream body ended (and ``retry_request`` returned None) a door calls
``await run.next_turn()``: when the turn called server-side tools (MCP, web search, tool search) it runs them,
and returns the next turn's call, which the door drives like the first; None when the response ends (then the
door calls ``finish``). Between turns the door writes ``run.take_pending_bytes()`` (the tool calls' events) to
the client's stream. ``server_tools.py`` is the executor it drives.

Whatever happens, ``finish``/``fail`` return a :class:`~responses_bridge.engine.wire.Reply` whose bytes the door
must deliver: every failure becomes an OpenAI-shaped error or a ``response.failed`` event, so a client never
hangs and never sees raw chat chunks. The response is persisted *before* its terminal bytes are returned, so a
client that saw ``response.completed`` can always retrieve it.

Driven by both doors (Envoy makes the ext_proc door's calls), WebSocket mode and background runs (run/upstream.py).
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
from collections.abc import Awaitable, Callable, Collection, Iterator, Mapping
from typing import TYPE_CHECKING, Any

import structlog

from ..engine.options import EngineOptions
from ..engine.responses.output_builder import OutputBuilder
from ..engine.responses.translator import Translator
from ..engine.wire import JSON_CONTENT_TYPE, Framing, Reply, UpstreamRequest
from ..observability import gen_ai, metrics, timing
from ..protocol.errors import APIError, not_found
from ..protocol.responses.request import ResponsesRequest, parse_request, parse_request_object
from ..protocol.tools.multi_agent import NOT_BETA
from ..sealing import Sealer
from ..store.base import ResponseStore
from . import tool_turns
from .cancellation import let_go_of_unwound_frames
from .file_inputs import FileLoader, FileResolution, PreparedInput, prepare_input, prepared_at_once
from .history import ConversationHistory, PromptRenderer, conversation_and_prompt
from .multi_agent import offer_agents
from .response_persist import persist_response
from .runs import BeforePersist, not_begun, nothing_left
from .server_tools import CheckedTools, ServerToolRun, ServerTools, offers_server_tools
from .step_resume import ResumedSteps, StepRecorder, resumed_first_call
from .subagents import Admission, Charge, attach_agents, wants_agents
from .tools.mcp_config import MCPServerOverlay
from .upstream_gate import UpstreamGate

if TYPE_CHECKING:
    from .programs.host import Releasable

DEFAULT_MAX_TURNS = 16
"""Model turns one response may take (``RESPONSES_BRIDGE_MAX_TURNS``): the last is sent without tools."""

LARGE_BODY_BYTES = 1024 * 1024
"""Request bodies above this are parsed and translated off the event loop (see ``begin``)."""

LONG_FRAME_BYTES = 64 * 1024
"""After encoding a terminal event longer than this, :meth:`ResponseRun.finish` lets the event loop serve other
requests before the next; a response of ordinary size ends without a pass of the loop more."""

log = structlog.get_logger("responses_bridge.run")

class ResponseRun:
    # slots: a run is made per request, and its 35 fields are past the 30 an instance dict shares its keys for
    # (CPython's shared-key bound), which made every run build a dict of its own (~0.7 µs more per request)
    __slots__ = ("_checked", "_conversation_id", "_conversations", "_file_resolution", "_files", "_first_pending",
                 "_framing", "_kept", "_large", "_max_turns", "_options", "_pending_bytes", "_prompts", "_sealer",
                 "_server_tools", "_store", "_tool_run", "_turns", "admit_subagent", "background_body", "backlog",
                 "before_persist", "beta", "catch_up", "charge_memory", "effects_root", "mcp_overlays",
                 "on_upstream_chunk", "persist_within", "resumed", "save_fence", "steps", "stop_between_turns",
                 "tenant", "timing", "translator",
                 "upstream_gate")
    on_upstream_chunk: Callable[[bytes], bytes]
    """Per upstream body chunk: the client's bytes (maybe ``b""``). After :meth:`begin` this *is* the
    translator's bound method, so the per-chunk path has no layer of its own here."""
    backlog: Collection[object]
    """Work the last chunk left (a long event, translated in steps: engine/responses/long_events.py): while it is not
    empty the door calls :attr:`catch_up`, yielding to its event loop between the calls. The translator's own queue
    after :meth:`begin`, so testing it costs a door nothing more than its truth."""
    catch_up: Callable[[], bytes]
    """One step of :attr:`backlog`'s work: the client's bytes it made (maybe ``b""``)."""

    def __init__(self, store: ResponseStore, options: EngineOptions, sealer: Sealer | None = None, *,
                 framing: Framing | None = None, conversations: ConversationHistory | None = None,
                 prompts: PromptRenderer | None = None, server_tools: ServerTools | None = None,
                 max_turns: int = DEFAULT_MAX_TURNS, files: FileLoader | None = None, tenant: str) -> None:
        self.tenant = tenant  # the owner of everything this run reads and stores (history, conversation, prompt)
        # server_tools: None keeps server-side tools under the unsupported-tool policy (no tool loop)
        self._server_tools = server_tools
        # by server label, what the bridge adds to the request's mcp tools (an agent session's turn): never the wire's
        self.mcp_overlays: Mapping[str, MCPServerOverlay] = {}
        self._max_turns = max_turns
        self._tool_run: ServerToolRun | None = None  # the loop of this response, when it offers server tools
        self._checked: CheckedTools | None = None  # its set-up, checked, while begin() left the rest for later
        self._large = False  # the request was large: its first call is built off the event loop
        self._turns = 1  # the model turn under way
        self._pending_bytes = b""  # events the tool phase made, for the door to write before the next turn
        # the first turn waits for its compaction: the messages and tool state it was built with (extra, exhausted)
        self._first_pending: tuple[list[dict[str, Any]], bool] | None = None
        self._conversations = conversations  # None: 'conversation' is refused
        self._prompts = prompts  # None: 'prompt' is refused
        self._files = files  # None: parts naming a file (file_id) are refused
        self._file_resolution: FileResolution | None = None  # the files this run's upstream copy holds
        self._kept: list[Releasable] = []  # programs' answers held in the memory budget until the items go
        self._conversation_id: str | None = None
        # framing: None gives events (SSE) only to requests with ``stream: true``; "json" always emits events as
        # JSON lines (WebSocket mode). Background requests always get SSE events (they are stored for replay).
        self._framing = framing
        self.before_persist: BeforePersist | None = None
        # a background request's bytes, kept (sealed, in its event log) so another process can resume it
        # (services/responses/background_resume.py); any other request's bytes are let go once parsed
        self.background_body: bytes | None = None
        self.stop_between_turns: Callable[[], bool] | None = None  # see Run.stop_between_turns
        self.steps: StepRecorder | None = None  # a background run's checkpoints (step_resume.py)
        self.resumed: ResumedSteps | None = None  # what a resumed run starts from (step_resume.py)
        self.beta = NOT_BETA  # how the request came (protocol/tools/multi_agent.py): the door says, before begin
        self.admit_subagent: Admission | None = None  # the tenant's limits, taken by each subagent's work
        self.upstream_gate: UpstreamGate | None = None  # the bridge's upstream places (upstream_gate.py)
        self.charge_memory: Charge | None = None  # the memory budget, charged for each subagent's context
        self.effects_root: OutputBuilder | None = None  # a subagent's: its root's builder (OutputBuilder.effect_made)
        self.save_fence: dict[str, str] = {}  # a background run's lease (store/base.py: save_response) or nothing
        self.timing = timing.CURRENT.get()  # the door's clock of the request (observability/timing.py), if any
        self.persist_within = 0.0  # see Run.persist_within
        self._store = store
        self._options = options
        self._sealer = sealer
        self.translator: Translator | None = None
        self.on_upstream_chunk = not_begun
        self.backlog = ()
        self.catch_up = nothing_left

    def use_options(self, options: EngineOptions) -> None:
        """Another upstream dialect for this run (a routed request's), before :meth:`begin`."""
        self._options = options

    @property
    def request(self) -> ResponsesRequest | None:
        return self.translator.request if self.translator is not None else None

    @property
    def response(self) -> dict[str, Any] | None:
        return self.translator.response if self.translator is not None else None

    @property
    def streaming(self) -> bool:
        """Does the client get an event stream (as opposed to one JSON body)?"""
        return self.translator is not None and self.translator.streaming

    @property
    def background(self) -> bool:
        return self.translator is not None and self.translator.background

    @property
    def sequence_number(self) -> int:
        """The sequence number the next event will get."""
        return self.translator.sequence_number if self.translator is not None else 0

    @property
    def compaction_turn(self) -> bool:
        """Does this turn answer a ``compaction_trigger``? Such a turn is never history anywhere."""
        return self.translator is not None and self.translator.compaction_turn

    @property
    def upstream_failed(self) -> bool:
        """The upstream's answer already failed (too large, not SSE, not JSON): the rest of its body would be
        dropped, so a door that can stop reading it may do so and call :meth:`finish` at once."""
        return self.translator is not None and self.translator.upstream_failed

    @property
    def response_id(self) -> str | None:
        return self.translator.response_id if self.translator is not None else None

    @property
    def effects_made(self) -> bool:
        """See :attr:`Run.effects_made` (the output builder is marked by the tool loop: server_tools_calls.py)."""
        return self.translator is not None and self.translator.builder.effects_made

    # --- request -------------------------------------------------------------------------------------------------

    async def begin(self, body: bytes | dict[str, Any], *, large: bool = False) -> UpstreamRequest | None:
        """Raises :class:`APIError` for a request that cannot be served; nothing is stored then. ``body``: the
        request's bytes, or its JSON object already decoded (the ext_proc door decodes it to look at its tools
        first; ``large`` then says whether its bytes were over ``LARGE_BODY_BYTES``). Returns the first upstream
        call, or None when a streamed response has server-side tools to set up first (MCP listings, approved
        calls): the client's stream then opens before that work (:meth:`open_stream`, :meth:`first_call`), as
        the driver does, so a slow server never leaves it without ``response.created``."""
        # A large body (tens of thousands of items) takes the CPU for most of a second to parse and translate: in a
        # worker thread the event loop keeps serving every other request meanwhile (it gets the GIL back every few
        # milliseconds), instead of stalling both doors for that long.
        if isinstance(body, bytes):
            large = len(body) > LARGE_BODY_BYTES
            parse = functools.partial(parse_request, body, max_input_items=self._options.max_input_items,
                                      unknown_fields=self._options.unknown_fields, beta=self.beta)
        else:
            parse = functools.partial(parse_request_object, body, max_input_items=self._options.max_input_items,
                                      unknown_fields=self._options.unknown_fields, beta=self.beta)
        request = await asyncio.to_thread(parse) if large else parse()
        p = request.params
        if p.background and isinstance(body, bytes):
            self.background_body = body
        del body  # a large body is let go now, not after the history loads and the upstream call
        if p.background and not p.store:
            raise APIError(400, "Background responses require 'store' to be true.", param="background",
                           code="invalid_value")
        if p.conversation is None and p.prompt is None:  # nearly every request: no coroutines to learn it
            history: list[dict[str, Any]] = []
            prompt = None
        else:
            history, prompt, self._conversation_id = await conversation_and_prompt(
                request, self._conversations, self._prompts, tenant=self.tenant)  # its items, rendered prompt
        if p.previous_response_id is not None:
            loaded = await self._store.load_history(p.previous_response_id, tenant=self.tenant)
            if loaded is None:
                raise not_found(f"Previous response with id '{p.previous_response_id}' not found.",
                                param="previous_response_id", code="previous_response_not_found")
            history = loaded
        # item references and call outputs made whole (stored so); files resolved for the upstream only
        prepared = prepared_at_once(request, history, prompt) or await prepare_input(
            request, history, prompt, self._files, self._options, self.tenant, items=self._store)
        self._file_resolution = prepared.files
        try:
            return await self._translate(request, prepared, large)
        except BaseException:
            self._release_files()
            raise

    async def _translate(self, request: ResponsesRequest, prepared: PreparedInput,
                         large: bool) -> UpstreamRequest | None:
        """:meth:`begin` once the request's input is whole: the translator built, the tool loop set up, the first
        call made."""
        if prepared.files is not None and prepared.files.bytes > LARGE_BODY_BYTES:
            large = True  # megabytes of files inlined: translated off the event loop, as a large body is
        served = self._server_tools.services.served if self._server_tools is not None else frozenset()
        make = functools.partial(Translator, request, prepared.history, prepared.prompt, self._options, self._sealer,
                                 framing=self._framing, conversation_id=self._conversation_id, served=served,
                                 sent_input=prepared.sent_input, open_responses_names=self.beta.open_responses)
        translator = await asyncio.to_thread(make) if large else make()
        if translator.compact_threshold is not None and self._server_tools is None:
            # compaction is a call before the turn: only a door that makes its own calls can make it
            raise APIError(400, "'context_management' is not served on this route: it needs the sidecar's HTTP "
                           "door (the Envoy route to it is missing).", param="context_management",
                           code="unsupported_parameter")
        self.translator = translator
        if self.effects_root is not None:  # a subagent: its calls with effects are its root response's too
            translator.builder.effects_root = self.effects_root
        self.on_upstream_chunk = translator.on_upstream_chunk
        self.backlog, self.catch_up = translator.backlog, translator.catch_up
        agents = wants_agents(request, loop=self._server_tools is not None and translator.plan is not None)
        if self._server_tools is not None and translator.plan is not None and (
                agents or offers_server_tools(request, served)):
            # checked before anything is sent: a malformed or refused MCP tool is a 400 here
            checked = await self._server_tools.check(translator.request, translator.context, translator.plan,
                                                     translator.builder, tenant=self.tenant,
                                                     overlays=self.mcp_overlays)
            if agents:
                offer_agents(translator.plan, translator.builder)
            self._large = large
            if self._framing is None:
                # the servers' time is the driver's (see first_call): a stream opens before it, and a JSON answer
                # is kept alive through it (adapters/http/json_keepalive.py)
                self._checked = checked
                return None
            self._tool_run = await checked.connect()
            attach_agents(self._tool_run, translator, self._subagent_run, self.tenant, self.admit_subagent,
                          self.charge_memory)
        return await self._first_request(large)

    def open_stream(self) -> bytes:
        """:meth:`begin` returned None: the client's stream opens now (``response.created``, ``in_progress``),
        before :meth:`first_call` spends the servers' time."""
        return self._begun().open_stream()

    async def first_call(self) -> UpstreamRequest | None:
        """:meth:`begin` returned None: list the MCP servers, make the calls the request approved, and return the
        first upstream call. The events of the listings and calls wait in :meth:`take_pending_bytes`."""
        checked, self._checked = self._checked, None
        if checked is not None and self.resumed is not None:
            return await resumed_first_call(self, checked, self.resumed)
        if checked is None and self._tool_run is not None and self._tool_run.suspended:
            return None  # set up already (WebSocket mode): a resumed program waits again, no turn is made
        assert checked is not None, "first_call() without a deferred begin()"
        self._tool_run = await checked.connect()
        attach_agents(self._tool_run, self._begun(), self._subagent_run, self.tenant, self.admit_subagent,
                      self.charge_memory)
        self._pending_bytes += self._begun().take_events()
        return await self._first_request(self._large)

    def _subagent_run(self) -> ResponseRun:
        """A run for a subagent's piece of work: this one's store, upstream dialect, tools and tenant; a call with
        effects it makes marks the root response's builder too."""
        run = ResponseRun(self._store, self._options, self._sealer, server_tools=self._server_tools,
                          max_turns=self._max_turns, tenant=self.tenant)
        run.timing = None  # its work is inside this run's (its spans are this one's tool call)
        builder = self._begun().builder
        run.effects_root = builder.effects_root or builder
        return run

    async def _first_request(self, large: bool) -> UpstreamRequest | None:
        translator, tool_run = self._begun(), self._tool_run
        extra: list[dict[str, Any]] = []
        exhausted = False
        if tool_run is not None and tool_run.suspended:  # a resumed program waits for client tools again
            translator.skip_turn()
            return None
        if tool_run is not None:
            extra, exhausted = tool_run.first_turn_messages(self._options), tool_run.tools_exhausted
        build = functools.partial(translator.build_first_request, extra, tools_exhausted=exhausted,
                                  loop=tool_run is not None)
        try:
            call = await asyncio.to_thread(build) if large else build()
            if translator.compact_threshold is not None and await asyncio.to_thread(translator.over_threshold):
                summarising = translator.compact_first()
                if summarising is not None:  # the first turn is built again once the summary is in
                    self._first_pending = (extra, exhausted)
                    return summarising
            return call
        except BaseException:
            self._close_tools()
            raise

    async def next_turn(self, write: Callable[[bytes], Awaitable[None]] | None = None) -> UpstreamRequest | None:
        """Call when a turn's upstream body ended and :meth:`retry_request` returned None. When the turn called
        server-side tools: runs them and returns the next turn's call; None when the response ends now (then
        call :meth:`finish`). ``write``: where the events that announce the calls go before they run (the
        client sees ``mcp_call.in_progress`` while the call is under way); the events of their outcomes are
        left for :meth:`take_pending_bytes`. Cancellation propagates (the calls still running are cancelled)."""
        if self._tool_run is None and not self._begun().compacting_now:  # no tool loop: the response ends
            return None
        return await tool_turns.next_turn(self, write)

    def take_pending_bytes(self) -> bytes:
        """The client's bytes the tool phase made (server call items and their events); b"" when none."""
        pending, self._pending_bytes = self._pending_bytes, b""
        return pending

    def call_facts(self) -> tuple[str | None, Any, str | None]:
        translator = self.translator
        return translator.call_facts() if translator is not None else (None, None, None)

    def call_attributes(self) -> dict[str, Any]:
        translator = self.translator
        return {} if translator is None else gen_ai.model_call(*translator.call_facts(), translator.response_id)

    def release(self) -> None:
        """The run stops with nothing more to store (a background response deleted while it ran): free what
        the tool loop holds (the tool search index)."""
        self._close_tools()
        self._let_go()

    def _let_go(self) -> None:
        """The response's items are let go (its answer made and stored): what the programs' answers among them
        held of the memory budget comes back (run/programs/host.py)."""
        if not self._kept:
            return
        kept, self._kept = self._kept, []
        for answer in kept:
            answer.release()

    def _release_files(self) -> None:
        resolution, self._file_resolution = self._file_resolution, None
        if resolution is not None:
            resolution.release()

    def _close_tools(self) -> None:
        self._release_files()  # every end of the run closes its tools: the files' memory goes with them
        tool_run, self._tool_run = self._tool_run, None
        if tool_run is not None:
            programs = tool_run.runner.programs
            if programs is not None:  # items of the answer still to be made: _let_go
                self._kept += programs.take_held()
            tool_run.close()

    def retry_request(self) -> UpstreamRequest | None:
        """Call when the upstream's answer has ended, before :meth:`finish`. With ``truncation: "auto"`` and a
        context-length error from the upstream: the same call without its oldest items, once; the door drives
        the new call's answer through ``on_upstream_headers`` … ``finish``. None otherwise."""
        return self._begun().retry_request()

    # --- upstream answer -----------------------------------------------------------------------------------------

    def on_upstream_headers(self, status: int, content_type: str | None) -> bytes | None:
        """Returns the bytes that open the client's event stream, or None when the client's status is not
        known yet (a JSON answer, or an upstream 4xx that is passed through as an error)."""
        return self._begun().on_upstream_headers(status, content_type)

    def resume_as(self, response_id: str, created_at: int, next_sequence: int) -> None:
        """See ``Translator.resume_as``: a background response resumed by another process (or a restarted one)."""
        self._begun().resume_as(response_id, created_at, next_sequence)

    def queued(self) -> bytes:
        """A background response was accepted: ``response.created`` and ``response.queued`` (status queued)."""
        return self._begun().queued()

    async def finish(self) -> Reply:
        """The upstream body ended. Completes, persists and returns the rest of the client's bytes."""
        translator = self._begun()
        self._close_tools()  # _ending() spelled out: every response ends here, the context manager cost a generator
        try:
            error = translator.complete()
            if error is not None:
                return await self._fail(error)
            while size := translator.encode_terminal():  # each may carry the whole output (event_frames.py)
                if size > LONG_FRAME_BYTES:
                    await asyncio.sleep(0)
            if not await self._persist():
                translator.drop_pending()  # the unsent completed event would be a lie
                return await self._fail(APIError(500, "The response could not be stored.", code="server_error"),
                                        persist=False)
            metrics.record_usage(translator.response)
            return translator.success_reply()
        finally:
            self._let_go()

    async def fail(self, error: APIError) -> Reply:
        """The upstream call failed before its body ended (unreachable, timed out, cut)."""
        return await self._fail(error)

    async def _fail(self, error: APIError, *, persist: bool = True) -> Reply:
        translator = self.translator
        with self._ending():
            if translator is None:
                return Reply(error.status, JSON_CONTENT_TYPE, error.body())
            reply = translator.fail(error)
            if reply is not None:
                return reply
            if persist:
                await self._persist()
            return translator.terminal_reply()

    async def cancel(self) -> Reply:
        """A background response cancelled by its owner: ``status: cancelled``, persisted, terminal events."""
        translator = self._begun()
        with self._ending():
            translator.cancel()
            await self._persist()
            return translator.terminal_reply()

    def commit(self) -> None:
        """See :meth:`Run.commit`."""
        if self.translator is not None:
            self.translator.committed = True

    async def abandon(self) -> None:
        """The client went away: record the response as failed rather than leave it unwritten."""
        with self._ending():
            if self.translator is None or not self.translator.abandon():
                return
            log.info("response_abandoned", response_id=self.translator.response_id)
            await asyncio.shield(self._persist())

    @contextlib.contextmanager
    def _ending(self) -> Iterator[None]:
        """Every end of the run (finished, failed, cancelled, abandoned): its tools closed first, what its answer
        held let go last, whatever happens between. An end because of an exception (the client gone, an upstream
        failure) lets go of the frames it unwound through (unwound.py), which held the run's objects in a cycle."""
        let_go_of_unwound_frames()
        self._close_tools()
        try:
            yield
        finally:
            self._let_go()

    def _begun(self) -> Translator:
        translator = self.translator
        assert translator is not None, "begin() was not awaited"
        return translator

    # --- persistence ---------------------------------------------------------------------------------------------

    async def _persist(self) -> bool:
        translator = self._begun()
        if self.timing is not None:  # settled whether it is stored or not: its pending call holds this run
            self.timing.run_ended(translator)
        if translator.compaction_turn:  # a compaction turn is never history: nothing to store, nothing to append
            return True
        conversation_id = self._conversation_id if translator.finished_turn else None
        if conversation_id is not None:  # a finished turn (completed or incomplete, never failed) joins it once
            self._conversation_id = None
        return await persist_response(translator, self._store, self._conversations, conversation_id,
                                      tenant=self.tenant, before=self.before_persist, fence=self.save_fence,
                                      within=self.persist_within, timing=self.timing)
