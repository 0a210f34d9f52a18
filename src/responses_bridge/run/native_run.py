"""One ``POST /v1/responses`` on a native route: the backend answers the Responses API itself, statelessly.

The doors drive it exactly as a :class:`~responses_bridge.run.response_run.ResponseRun` (``begin``,
``on_upstream_headers``, ``on_upstream_chunk``, ``finish`` / ``fail``; background runs and aborts too), so the HTTP
door, the ext_proc door (Envoy sending the request to the backend's own ``/v1/responses``) and background runs need
no code of their own for it. What it adds to the backend: the history of a ``previous_response_id`` chain or a
``conversation`` (loaded here and sent as input, ``store: false``), storage (the response saved under the bridge's
own id before its terminal bytes go out, so ``GET``/``DELETE``/``input_items`` work), background runs. The
synchronous part, request and event rewriting, is :class:`~responses_bridge.engine.responses.native_relay.NativeRelay`.

A request offering a server-side tool the bridge runs (``mcp``, ``web_search`` with a provider) does not come here:
the backend runs none, so the HTTP door (where Envoy sends such requests too) translates it to the same backend's
Chat Completions and runs the tool loop (``Runtime.new_routed_run``). Should one still arrive (a bootstrap without
the route to the HTTP door), it is refused with a 400.
"""

from __future__ import annotations

import asyncio
import functools
from collections.abc import Awaitable, Callable, Collection
from typing import Any

import orjson
import structlog

from ..engine.options import EngineOptions
from ..engine.responses.native_relay import NativeRelay
from ..engine.sse import DONE_FRAME
from ..engine.wire import JSON_CONTENT_TYPE, SSE_CONTENT_TYPE, Reply, UpstreamRequest
from ..observability import gen_ai, timing
from ..protocol.errors import APIError, not_found
from ..protocol.responses.request import ResponsesRequest, parse_json_object, parse_request_object
from ..protocol.tools.multi_agent import NOT_BETA
from ..sealing import Sealer
from ..store.base import ResponseStore
from ..store.records import LeaseLost
from ..store.transient import retry_store
from .file_inputs import FileLoader, FileResolution, prepare_input
from .history import ConversationHistory, load_conversation
from .response_persist import documented
from .runs import BeforePersist, not_begun

log = structlog.get_logger("responses_bridge.run.native")


class NativeRun:
    """A :class:`~responses_bridge.run.runs.Run` over a native backend: the doors and background runs drive it
    exactly as a :class:`~responses_bridge.run.response_run.ResponseRun`."""

    def __init__(self, store: ResponseStore, options: EngineOptions, sealer: Sealer | None = None, *,
                 conversations: ConversationHistory | None, served: frozenset[str] = frozenset(),
                 files: FileLoader | None = None, tenant: str) -> None:
        self.tenant = tenant
        self.before_persist: BeforePersist | None = None
        self.stop_between_turns: Callable[[], bool] | None = None  # never asked: the backend runs its own loop
        self.beta = NOT_BETA  # the multi-agent beta (protocol/tools/multi_agent.py): refused for a native backend
        self.save_fence: dict[str, str] = {}  # a background run's lease (store/base.py: save_response) or nothing
        self.persist_within = 0.0  # see Run.persist_within
        self.timing = timing.CURRENT.get()  # the door's clock of the request (observability/timing.py), if any
        self.on_upstream_chunk: Callable[[bytes], bytes] = not_begun
        self.backlog: Collection[object] = ()  # the backend's events are relayed as they come: never any
        self._store = store
        self._conversations = conversations
        self._conversation_id: str | None = None
        self._native_sealer = sealer
        self._upstream_model = options.upstream_model
        self._max_event_bytes = options.max_event_bytes
        self._max_input_items = options.max_input_items
        self._unknown_fields = options.unknown_fields
        self._served = served
        self._options = options
        self._files = files  # None: parts naming a file (file_id) are refused
        self._file_resolution: FileResolution | None = None
        self.relay: NativeRelay | None = None

    # --- what the doors read -------------------------------------------------------------------------------------

    @property
    def request(self) -> ResponsesRequest | None:
        return self.relay.request if self.relay is not None else None

    @property
    def response(self) -> dict[str, Any] | None:
        return self.relay.response if self.relay is not None else None

    @property
    def streaming(self) -> bool:
        return self.relay is not None and self.relay.streaming

    @property
    def background(self) -> bool:
        return self.relay is not None and self.relay.background

    @property
    def sequence_number(self) -> int:
        return self.relay.sequence_number if self.relay is not None else 0

    @property
    def compaction_turn(self) -> bool:
        return False

    @property
    def upstream_failed(self) -> bool:
        return self.relay is not None and self.relay.error is not None

    @property
    def response_id(self) -> str | None:
        return self.relay.response_id if self.relay is not None else None

    @property
    def effects_made(self) -> bool:
        """Never: the backend runs its own tools (see :attr:`Run.effects_made`), the bridge makes no call of its own."""
        return False

    # --- request -------------------------------------------------------------------------------------------------

    async def begin(self, body: bytes | dict[str, Any], *, large: bool = False) -> UpstreamRequest:
        raw = parse_json_object(body) if isinstance(body, bytes) else body
        parse = functools.partial(parse_request_object, dict(raw), max_input_items=self._max_input_items,
                                  unknown_fields=self._unknown_fields, beta=self.beta)
        request = await asyncio.to_thread(parse) if large else parse()
        p = request.params
        if request.multi_agent is not None and request.multi_agent.enabled:
            raise APIError(400, "'multi_agent' is not supported for this model (a native Responses backend).",
                           param="multi_agent", code="unsupported_parameter")
        if p.background and not p.store:
            raise APIError(400, "Background responses require 'store' to be true.", param="background",
                           code="invalid_value")
        if p.prompt is not None:
            raise APIError(400, "'prompt' is not supported for this model.", param="prompt",
                           code="unsupported_parameter")
        for index, tool in enumerate(p.tools or ()):
            if isinstance(tool, dict) and tool.get("type") in self._served:
                raise APIError(400, f"Tool type '{tool['type']}' is not supported for this model.",
                               param=f"tools[{index}].type", code="unsupported_parameter")
        history = await self._history(request)
        # the backend knows none of the bridge's items and files: references, call outputs and files made whole
        prepared = await prepare_input(request, history, None, self._files, self._options, self.tenant,
                                       items=self._store)
        self._file_resolution = prepared.files
        try:
            self.relay = NativeRelay(request, raw, prepared.history, upstream_model=self._upstream_model,
                                     conversation_id=self._conversation_id, max_event_bytes=self._max_event_bytes,
                                     sealer=self._native_sealer, sent_input=prepared.sent_input)
        except BaseException:
            self.release()
            raise
        self.on_upstream_chunk = self.relay.on_upstream_chunk  # the per-chunk path has no layer of its own
        return self.relay.upstream_request()

    def catch_up(self) -> bytes:
        """Never called: :attr:`backlog` stays empty (the relay translates nothing in steps)."""
        return b""

    async def _history(self, request: ResponsesRequest) -> list[dict[str, Any]]:
        p = request.params
        items, self._conversation_id = await load_conversation(request, self._conversations, tenant=self.tenant)
        if self._conversation_id is not None:
            return items
        if p.previous_response_id is not None:
            loaded = await self._store.load_history(p.previous_response_id, tenant=self.tenant)
            if loaded is None:
                raise not_found(f"Previous response with id '{p.previous_response_id}' not found.",
                                param="previous_response_id", code="previous_response_not_found")
            return loaded
        return []

    def open_stream(self) -> bytes:
        raise RuntimeError("a native run's begin() never defers its first call")

    async def first_call(self) -> UpstreamRequest:
        raise RuntimeError("a native run's begin() never defers its first call")

    # --- answer --------------------------------------------------------------------------------------------------

    def on_upstream_headers(self, status: int, content_type: str | None) -> bytes | None:
        return self._begun().on_upstream_headers(status, content_type)

    def queued(self) -> bytes:
        return self._begun().queued()

    def retry_request(self) -> UpstreamRequest | None:
        return None  # the backend's own truncation applies

    async def next_turn(self, write: Callable[[bytes], Awaitable[None]] | None = None) -> UpstreamRequest | None:
        return None  # no tool loop on a native route

    def take_pending_bytes(self) -> bytes:
        return b""

    def call_facts(self) -> tuple[str | None, Any, str | None]:
        relay = self.relay
        if relay is None:
            return None, None, None
        response = relay.response or {}
        return self._options.upstream_model or relay.request.model, response.get("usage"), response.get("status")

    def call_attributes(self) -> dict[str, Any]:
        """The backend ran its own loop: its one call is the whole response, its usage the response's."""
        relay = self.relay
        if relay is None:
            return {}
        response = relay.response or {}
        model = self._options.upstream_model or relay.request.model
        return gen_ai.model_call(model, response.get("usage"), response.get("status"), relay.response_id)

    def release(self) -> None:
        """The memory the files resolved for the backend reserved goes back (every end of the run calls it)."""
        resolution, self._file_resolution = self._file_resolution, None
        if resolution is not None:
            resolution.release()

    async def finish(self) -> Reply:
        self.release()
        relay = self._begun()
        error = relay.complete()
        if error is not None:
            return await self.fail(error)
        relay.mark_completed_at()
        frames = relay.terminal_frames()
        if not await self._save(frames):
            return await self.fail(APIError(500, "The response could not be stored.", code="server_error"),
                                   persist=False)
        return relay.success_reply(frames)

    async def fail(self, error: APIError, *, persist: bool = True) -> Reply:
        self.release()
        relay = self.relay
        if relay is None:
            return Reply(error.status, JSON_CONTENT_TYPE, error.body())
        reply = relay.fail(error)
        if reply is not None:
            return reply
        return await self._end(persist)

    async def cancel(self) -> Reply:
        self.release()
        self._begun().cancel()
        return await self._end(True)

    async def _end(self, persist: bool) -> Reply:
        """A failed or cancelled stream: stored, then its last events (a committed JSON answer: the Response)."""
        relay = self._begun()
        if not relay.streaming:
            if persist:
                await self._save([])
            return Reply(200, JSON_CONTENT_TYPE, orjson.dumps(relay.response))
        continues = relay.head_sent
        frames = relay.terminal_frames()
        if persist:
            await self._save(frames)
        return Reply(200, SSE_CONTENT_TYPE, b"".join(frames) + DONE_FRAME, continues_stream=continues)

    def commit(self) -> None:
        if self.relay is not None:
            self.relay.committed = True

    async def abandon(self) -> None:
        self.release()
        if self.relay is None or not self.relay.abandon():
            return
        log.info("response_abandoned", response_id=self.relay.response_id)
        await asyncio.shield(self._save([]))

    def _begun(self) -> NativeRelay:
        assert self.relay is not None, "begin() was not awaited"
        return self.relay

    async def _save(self, frames: list[bytes]) -> bool:
        """Stored (``store: true``) under the bridge's id; a conversation gets the turn's items either way."""
        relay = self._begun()
        joining = self._conversation_id if relay.finished_turn else None
        try:
            if not relay.request.params.store:
                if joining is not None and self._conversations is not None:
                    await self._conversations.append_items(joining, relay.input_items + relay.response["output"],
                                                           tenant=self.tenant)
                return True

            async def save() -> None:
                if self.before_persist is not None:
                    await self.before_persist(frames, relay.sequence_number)
                if self.timing is not None:  # the last call's answer, translated now if it came whole
                    self.timing.settle(len(relay.response.get("output") or ()), self.call_facts)
                document = documented(self.timing, relay.response_id)
                if document is None:  # not timed: the store's interface as it was
                    await self._store.save_response(relay.response, relay.input_items, tenant=self.tenant,
                                                    conversation_id=joining, **self.save_fence)
                else:
                    await self._store.save_response(relay.response, relay.input_items, tenant=self.tenant,
                                                    conversation_id=joining, **self.save_fence, timing=document)

            await retry_store(save, within=self.persist_within, what="save_response")
        except LeaseLost:  # a background run another process ended meanwhile (its lease ran out): its end stands
            log.warning("background_lease_lost", response_id=relay.response_id)
            return False
        except Exception:
            log.exception("store_failed", response_id=relay.response_id)
            return False
        return True
