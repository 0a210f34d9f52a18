"""The compaction turns of a :class:`~responses_bridge.engine.responses.translator.Translator`: a request that ends with
a ``compaction_trigger`` (its one call is the summarising one, its answer one ``compaction`` item), and the
automatic compaction of ``context_management`` (auto_compaction.py), a summarising call made before the
first turn or between the tool loop's turns when the turn about to be sent weighs too much.
"""

from __future__ import annotations

from dataclasses import replace
from typing import Any

import orjson

from ... import ids
from ...protocol.errors import APIError, invalid_request
from ...protocol.responses.request import ResponsesRequest
from .. import chat_tokens
from ..upstream_errors import upstream_error
from ..wire import UPSTREAM_PATH, UpstreamRequest
from . import auto_compaction, compaction
from .auto_compaction import PendingCompaction
from .output_builder import UpstreamProtocolError, completion_as_chunk
from .translator_state import MALFORMED, TranslatorState


class CompactionTurns(TranslatorState):
    __slots__ = ()

    @property
    def compaction_turn(self) -> bool:
        """Does this turn answer a ``compaction_trigger``? Such a turn is never history anywhere."""
        return self._compacting is not None

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

    def _add_compaction(self, completion: Any) -> None:
        """The summarising call's answer as the response's one output item, sealed like /v1/responses/compact."""
        builder = self._builder
        blob = compaction.seal_summary(self._sealer, self._summary_of(completion),  # type: ignore[arg-type]
                                       self.request.model, self._compacting or 0)
        builder.add_item({"type": "compaction", "id": ids.new_id("cmp"), "encrypted_content": blob})
        builder.finish_reason = "stop"

    def _summary_of(self, completion: Any) -> str:
        """A summarising call's answer: its text; its usage counts as the response's."""
        chunk = completion_as_chunk(completion)
        self._builder.feed(dict(chunk, choices=[]))  # its usage (or its error)
        summary = chunk["choices"][0]["delta"].get("content")
        if not isinstance(summary, str):
            raise UpstreamProtocolError("The upstream's summary answer has no message content.")
        return summary.strip()

    # --- automatic compaction (auto_compaction.py) ----------------------------------------------------------

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
        return self._start_compaction(chat, PendingCompaction(ids.new_id("cmp"), kept, len(summarised)))

    def compact_loop(self) -> UpstreamRequest | None:
        """The tool loop's next turn (built by :meth:`follow_up`, and too large): the summarising call to make
        before it, or None when nothing lies between the latest question and the last turn."""
        assert self._body is not None and self._translated is not None
        split = auto_compaction.split_messages(self._body["messages"])
        if split is None:
            return None
        last = auto_compaction.last_user_item(self.context + self._translated.input_items)
        chat = compaction.summary_request_of_messages(split.middle, self.request.model, self._options)
        return self._start_compaction(chat, PendingCompaction(ids.new_id("cmp"), [last] if last else [],
                                                            len(split.middle), split))

    def _start_compaction(self, chat: dict[str, Any], auto: PendingCompaction) -> UpstreamRequest:
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
            except (UpstreamProtocolError, orjson.JSONDecodeError, *MALFORMED) as exc:
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
