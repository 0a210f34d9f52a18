"""Chat Completions deltas → Response output items and the semantic Responses event stream.

This is the hot path: it runs once per upstream chunk. It works on plain dicts, appends text pieces to lists and
joins them once when an item closes, and serialises each event straight to bytes; nothing is validated or copied
per chunk. A non-streamed completion is fed through the same machine as one delta (with events switched off),
so a stored JSON answer and a streamed answer can never disagree.

Items open in the order the upstream starts them (reasoning, message text, refusal, tool calls) and a change of
kind closes the open item, so every item gets ``output_item.added`` … ``output_item.done`` in order. Tool calls
of one turn stay open together until the turn moves on, because some upstreams interleave the argument pieces of
parallel calls by ``index``.

One builder spans every upstream turn of a response (the tool loop): one ``output_index`` and one
``sequence_number`` counter, ``usage`` summed over the turns. The run drives it::

    builder.begin_turn()                       # before each upstream turn after the first
    … builder.feed(chunk) …                    # the turn's chunks, as for a single turn
    turn = builder.end_turn()                  # closes the turn's items; its calls, with their targets
    builder.complete_mcp_call(i, output=…)     # the outcome of each server call the run made
    builder.finish(now)                        # only when the response ends

Calls of server tools (engine/tools/server.py) stream as the tool's own items; the run reports their outcome
through ``complete_*``. Items the run makes before the first turn (``mcp_list_tools``) are held until
``response.in_progress`` has gone out, so they follow the response's lifecycle events.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from ... import ids
from ..chunk_values import UpstreamProtocolError, _annotation, _logprob, _text_of_parts, completion_as_chunk
from ..event_frames import CANCELLED_EVENT, Encoder, EventFrames
from ..response_error import response_error
from ..tools.call_stream import ToolCallStream, _ToolCall
from ..tools.run_items import RunItems
from ..tools.server import ServerCallReader
from ..tools.tools import CallTarget
from ..tools.turn_result import TurnCall, TurnResult, add_usage
from .replayed_calls import loop_arguments
from .response_object import convert_usage

FINISH_INCOMPLETE = {"length": "max_output_tokens", "content_filter": "content_filter"}


__all__ = ["Encoder", "OutputBuilder", "UpstreamProtocolError", "completion_as_chunk"]


class OutputBuilder(EventFrames, ToolCallStream, RunItems):
    """Accumulates one response's output and, when given an encoder, emits its events."""

    # Set on the instance only by the requests that use them, read from the class (None) by the others: an
    # instance keeps its attributes in CPython's compact shared-key form only up to 29 of them, and past that
    # every builder gets a full dict of its own (five times the memory, slower to make and to read, per chunk).
    cite: Callable[[str], list[dict[str, Any]]] | None = None  # citations for output_text (after a web search)
    program_sign: Callable[[bytes], str] | None = None  # keys programs' fingerprints (engine/tools/programs.py)
    effects_made = False
    """A server-side call with effects (MCP, code interpreter, hosted shell) has been started: set by the tool loop
    (run/server_tools_calls.py) before the call goes out. From then on a retry of the request would repeat it, so
    the response ends with its truthful Response whatever ends it (see ``ClientStream.fail``), never with a
    retryable status."""
    effects_root: OutputBuilder | None = None
    """A subagent's builder (the multi-agent beta): its root response's, marked too when a call is made here, at
    once (the root may fail while this subagent still works, and its retry would start this subagent again)."""

    def __init__(self, response: dict[str, Any], encode: Encoder | None, *,
                 summary: bool = False,
                 seal: Callable[[dict[str, Any]], str] | None = None,
                 targets: dict[str, CallTarget] | None = None) -> None:
        # summary: the reasoning text is also given as a summary part (``reasoning.summary`` was asked for);
        # seal: makes a reasoning item's ``encrypted_content`` (``include: ["reasoning.encrypted_content"]``);
        # targets: upstream function name → the kind of item its calls become (``ToolPlan.targets``; namespaced
        # functions are among them)
        self._targets = targets if targets is not None else {}
        self._summary = summary
        self._seal = seal
        self.response = response
        self.output: list[dict[str, Any]] = response["output"]
        self._encode = encode
        self._frames: list[bytes] = []
        self._deferred: list[dict[str, Any]] = []  # the terminal events, numbered, not encoded yet (finish)
        self._sequence = 0
        self.finish_reason: str | None = None
        # set when the response is stopped on purpose at a boundary between model turns (WebSocket steering:
        # "steered"); it ends incomplete with this reason whatever the last turn's finish_reason said
        self.stop_reason: str | None = None
        self.usage: dict[str, Any] | None = None
        self.saw_done = False
        # the open item, if any: "reasoning", "message" or "tools"
        self._open: str | None = None
        # the open message or reasoning item, read only while _open names one; never None, so the per-chunk paths
        # index it with no check (and no extra attribute: one more makes every attribute read here ~10% slower)
        self._item: dict[str, Any] = {}
        self._index = -1
        self._part: dict[str, Any] | None = None
        self._part_index = -1
        self._pieces: list[str] = []
        self._logprobs: list[dict[str, Any]] | None = None
        self._tool_calls: dict[int, _ToolCall] = {}
        # the tool loop: calls of this turn, where this turn's items start, usage of earlier turns, server calls
        # awaiting their outcome, items made by the run (output_index → item), events and items held until the
        # stream opens
        self._turn_calls: list[TurnCall] = []
        self._turn_start = 0
        self._usage_past: dict[str, Any] | None = None
        self._pending: dict[int, ServerCallReader] = {}
        self._run_items: dict[int, dict[str, Any]] = {}
        self._held: list[dict[str, Any]] | None = [] if encode is not None else None
        self._held_items: list[dict[str, Any]] = []

    def effect_made(self) -> None:
        """A server-side call with effects goes out now: see :attr:`effects_made` (and :attr:`effects_root`)."""
        self.effects_made = True
        if self.effects_root is not None:
            self.effects_root.effects_made = True

    # --- event plumbing (emit, take: event_frames.py) -------------------------------------------------------

    def lifecycle(self, kind: str) -> None:
        """``response.created`` / ``in_progress`` / ``completed`` / …: the whole response as it stands now."""
        if self._encode is not None:
            self._emit({"type": kind, "sequence_number": 0, "response": self.response})
            if kind == "response.in_progress" and self._held is not None:
                self._release_held()

    def _release_held(self) -> None:
        held, self._held = self._held or [], None
        self.output.extend(self._held_items)
        self._held_items = []
        for event in held:
            self._emit(event)

    def _emit_run(self, event: dict[str, Any]) -> None:
        """An event of an item the run made: held while the client's stream is not open yet."""
        if self._held is not None:
            self._held.append(event)
        elif self._encode is not None:
            self._emit(event)

    def _place(self, item: dict[str, Any]) -> int:
        """Give an item the run made its output_index (held with its events until the stream opens)."""
        if self._held is not None:
            self._held_items.append(item)
            index = len(self.output) + len(self._held_items) - 1
        else:
            index = len(self.output)
            self.output.append(item)
        self._run_items[index] = item
        return index

    # --- input ---------------------------------------------------------------------------------------------------

    def feed(self, chunk: dict[str, Any]) -> None:
        error = chunk.get("error")
        if error is not None:
            message = error.get("message") if isinstance(error, dict) else str(error)
            raise UpstreamProtocolError(f"The upstream reported an error mid-stream: {message}")
        usage = chunk.get("usage")
        if usage and isinstance(usage, dict):
            self.usage = usage
        choices = chunk.get("choices")
        if not choices:
            self._served_tier(chunk)  # a stream's usage chunk
            return
        choice = choices[0]
        delta = choice.get("delta")
        if delta:
            reasoning = delta.get("reasoning_content") or delta.get("reasoning")
            if reasoning and isinstance(reasoning, str):
                self._reasoning_delta(reasoning)
            content = delta.get("content")
            if content:
                if type(content) is not str:
                    content = _text_of_parts(content)
                logprobs = choice.get("logprobs")
                self._text_delta(content, logprobs.get("content") if logprobs else None)
            refusal = delta.get("refusal")
            if refusal:
                if type(refusal) is not str:
                    raise UpstreamProtocolError("The upstream sent a refusal delta that is not a string.")
                self._refusal_delta(refusal)
            annotations = delta.get("annotations")
            if annotations:
                self._annotations(annotations)
            tool_calls = delta.get("tool_calls")
            if tool_calls:
                for call in tool_calls:
                    self._tool_call_delta(call)
        finish_reason = choice.get("finish_reason")
        if finish_reason:
            self.finish_reason = finish_reason
            self._served_tier(chunk)

    def _served_tier(self, chunk: dict[str, Any]) -> None:
        """The tier that served the turn, echoed in place of the one asked for: read from the turn's last chunks
        (the finish chunk, the usage chunk; a JSON answer is one chunk), never per text chunk."""
        tier = chunk.get("service_tier")
        if tier and isinstance(tier, str):
            self.response["service_tier"] = tier[:32]

    # --- items ---------------------------------------------------------------------------------------------------

    def _open_item(self, kind: str, item: dict[str, Any]) -> None:
        self._close_open()
        self._open = kind
        self._item = item
        self._index = len(self.output)
        self.output.append(item)
        self._part = None
        self._part_index = -1
        if self._encode is not None:
            self._emit({"type": "response.output_item.added", "sequence_number": 0, "output_index": self._index,
                        "item": item})

    def _open_part(self, part: dict[str, Any]) -> None:
        self._part = part
        self._part_index += 1
        self._pieces = []
        self._item["content"].append(part)
        if self._encode is not None:
            self._emit({"type": "response.content_part.added", "sequence_number": 0, "item_id": self._item["id"],
                        "output_index": self._index, "content_index": self._part_index, "part": dict(part)})

    def _reasoning_delta(self, text: str) -> None:
        if self._open != "reasoning":
            self._open_item("reasoning", {"id": ids.reasoning_id(), "type": "reasoning", "summary": [],
                                          "content": []})
            self._open_part({"type": "reasoning_text", "text": ""})
            if self._summary:  # Codex and OpenAI clients show reasoning from the summary events
                self._item["summary"].append({"type": "summary_text", "text": ""})
                if self._encode is not None:
                    self._emit({"type": "response.reasoning_summary_part.added", "sequence_number": 0,
                                "item_id": self._item["id"], "output_index": self._index, "summary_index": 0,
                                "part": {"type": "summary_text", "text": ""}})
        self._pieces.append(text)
        if self._encode is not None:
            self._emit({"type": "response.reasoning_text.delta", "sequence_number": 0, "item_id": self._item["id"],
                        "output_index": self._index, "content_index": self._part_index, "delta": text})
            if self._summary:
                self._emit({"type": "response.reasoning_summary_text.delta", "sequence_number": 0,
                            "item_id": self._item["id"], "output_index": self._index, "summary_index": 0,
                            "delta": text})

    def _ensure_message(self) -> None:
        if self._open != "message":
            self._open_item("message", {"id": ids.message_id(), "type": "message", "status": "in_progress",
                                        "role": "assistant", "content": []})

    def _text_delta(self, text: str, logprobs: list[dict[str, Any]] | None) -> None:
        self._ensure_message()
        if self._part is None or self._part["type"] != "output_text":
            self._close_part()
            self._open_part({"type": "output_text", "text": "", "annotations": [], "logprobs": []})
            self._logprobs = []
        self._pieces.append(text)
        converted = [_logprob(entry) for entry in logprobs] if logprobs else []
        if converted:
            self._logprobs.extend(converted)  # type: ignore[union-attr]
        if self._encode is not None:
            self._emit({"type": "response.output_text.delta", "sequence_number": 0, "item_id": self._item["id"],
                        "output_index": self._index, "content_index": self._part_index, "delta": text,
                        "logprobs": converted})

    def _refusal_delta(self, text: str) -> None:
        self._ensure_message()
        if self._part is None or self._part["type"] != "refusal":
            self._close_part()
            self._open_part({"type": "refusal", "refusal": ""})
        self._pieces.append(text)
        if self._encode is not None:
            self._emit({"type": "response.refusal.delta", "sequence_number": 0, "item_id": self._item["id"],
                        "output_index": self._index, "content_index": self._part_index, "delta": text})

    def _annotations(self, annotations: list[dict[str, Any]]) -> None:
        if self._part is None or self._part["type"] != "output_text":
            return
        for annotation in annotations:
            converted = _annotation(annotation)
            if converted is None:
                continue
            self._part["annotations"].append(converted)
            if self._encode is not None:
                self._emit({"type": "response.output_text.annotation.added", "sequence_number": 0,
                            "item_id": self._item["id"], "output_index": self._index,
                            "content_index": self._part_index,
                            "annotation_index": len(self._part["annotations"]) - 1, "annotation": converted})

    def add_item(self, item: dict[str, Any]) -> int:
        """A whole item the bridge made itself (a compaction item, a ``tool_search_output``):
        ``output_item.added`` then ``.done``. Returns its output_index."""
        self._close_open()
        index = self._place(item)
        self._emit_run({"type": "response.output_item.added", "sequence_number": 0, "output_index": index,
                        "item": item})
        self._emit_run({"type": "response.output_item.done", "sequence_number": 0, "output_index": index,
                        "item": item})
        return index

    def compacting(self, item_id: str) -> None:
        """``response.compaction.compacting``: the summary for the compaction item that will be added next
        (:meth:`add_item`, at the output_index given here) is being made."""
        self._close_open()
        index = len(self.output) + len(self._held_items)
        self._emit_run({"type": "response.compaction.compacting", "sequence_number": 0, "item_id": item_id,
                        "output_index": index})

    # --- the tool loop: turns ------------------------------------------------------------------------------------

    def set_targets(self, targets: dict[str, CallTarget]) -> None:
        """Read calls from now on with ``targets`` (``ToolPlan.targets`` after the run added server tools, or
        re-planned with the tools a tool search loaded)."""
        self._targets = targets

    def begin_turn(self) -> None:
        """Start the next upstream turn of the same response: the per-turn state is reset (the completeness
        check, the calls), the counters and the output go on. No lifecycle event is emitted."""
        self._close_open()
        self._usage_past = add_usage(self._usage_past, self.usage)
        self.usage = None
        self.finish_reason = None
        self.saw_done = False
        self._tool_calls = {}
        self._turn_calls = []
        self._turn_start = len(self.output)

    def end_turn(self) -> TurnResult:
        """The upstream turn ended (check ``complete`` first): close its items and say what it called. Server
        calls are left open for the run (``complete_mcp_call`` / ``complete_web_search`` /
        ``complete_file_search``), except approval requests and tool searches, which are done with their
        arguments."""
        self._close_open("incomplete" if self.finish_reason in FINISH_INCOMPLETE else "completed")
        calls = sorted(self._turn_calls, key=lambda call: call.output_index)
        return TurnResult(calls, self._turn_message(calls), self.finish_reason)

    def _turn_message(self, calls: list[TurnCall]) -> dict[str, Any]:
        """The turn as one assistant chat message: its text (reasoning as ``reasoning_content``) and every call
        under its upstream name and call id, so the upstream reads back exactly what it said; a server call whose
        item has no call id goes under the item's id, with the arguments history will send back for it, so the
        next response's prompt repeats this one exactly (docs/upstreams.md, "Prefix caches")."""
        texts: list[str] = []
        reasoning: list[str] = []
        refusals: list[str] = []
        for item in self.output[self._turn_start:]:
            kind = item.get("type")
            if kind == "message":
                for part in item["content"]:
                    if part["type"] == "output_text":
                        texts.append(part["text"])
                    elif part["type"] == "refusal":
                        refusals.append(part["refusal"])
            elif kind == "reasoning":
                reasoning.extend(part["text"] for part in item["content"])
        message: dict[str, Any] = {"role": "assistant", "content": "".join(texts) or None}
        if refusals:
            message["refusal"] = "".join(refusals)
        if reasoning:
            message["reasoning_content"] = "".join(reasoning)
        if calls:  # each call's arguments as history will send them back (replayed_calls.py)
            message["tool_calls"] = [{"id": call.call_id, "type": "function", "function": {
                "name": call.name, "arguments": loop_arguments(call)}} for call in calls]
        return message

    def count_usage(self, usage: dict[str, Any] | None) -> None:
        """Usage of the response's own spent outside its turns (a subagent's, Chat Completions shape). Counted
        only when the response's own turns have reported theirs (its first turn always ends before such work
        starts): over an upstream that reports none (llama-cpp-python's streams), the response's usage stays
        unknown rather than claiming the subagents' tokens as all it spent."""
        if self._usage_past is None and self.usage is None:
            return
        self._usage_past = add_usage(self._usage_past, usage)

    @property
    def total_usage(self) -> dict[str, Any] | None:
        """The upstream usage summed over every turn so far (Chat Completions shape)."""
        return add_usage(self._usage_past, self.usage)

    # --- closing -------------------------------------------------------------------------------------------------

    def _close_part(self) -> None:
        part = self._part
        if part is None:
            return
        text = "".join(self._pieces)
        self._pieces = []
        self._part = None
        kind = part["type"]
        item_id = self._item["id"]
        if kind == "refusal":
            part["refusal"] = text
            done = {"type": "response.refusal.done", "sequence_number": 0, "item_id": item_id,
                    "output_index": self._index, "content_index": self._part_index, "refusal": text}
        else:
            part["text"] = text
            if kind == "output_text":
                part["logprobs"] = self._logprobs or []
                if self.cite is not None:
                    self._cite(part, text, item_id)
                done = {"type": "response.output_text.done", "sequence_number": 0, "item_id": item_id,
                        "output_index": self._index, "content_index": self._part_index, "text": text,
                        "logprobs": part["logprobs"]}
            else:
                done = {"type": "response.reasoning_text.done", "sequence_number": 0, "item_id": item_id,
                        "output_index": self._index, "content_index": self._part_index, "text": text}
        if self._encode is not None:
            self._emit(done)
            self._emit({"type": "response.content_part.done", "sequence_number": 0, "item_id": item_id,
                        "output_index": self._index, "content_index": self._part_index, "part": part})
        if kind == "reasoning_text" and self._item["summary"]:
            summary = self._item["summary"][0]
            summary["text"] = text
            if self._encode is not None:
                self._emit({"type": "response.reasoning_summary_text.done", "sequence_number": 0,
                            "item_id": item_id, "output_index": self._index, "summary_index": 0, "text": text})
                self._emit({"type": "response.reasoning_summary_part.done", "sequence_number": 0,
                            "item_id": item_id, "output_index": self._index, "summary_index": 0,
                            "part": summary})

    def _cite(self, part: dict[str, Any], text: str, item_id: str) -> None:
        """The run's citations of a closing output_text part (``url_citation`` after a web search)."""
        for annotation in self.cite(text):  # type: ignore[misc]
            part["annotations"].append(annotation)
            if self._encode is not None:
                self._emit({"type": "response.output_text.annotation.added", "sequence_number": 0,
                            "item_id": item_id, "output_index": self._index, "content_index": self._part_index,
                            "annotation_index": len(part["annotations"]) - 1, "annotation": annotation})

    def _close_open(self, status: str = "completed") -> None:
        kind = self._open
        if kind is None:
            return
        self._open = None
        if kind == "tools":
            self._close_tool_calls(status)
            return
        self._close_part()
        item = self._item
        if kind == "message":
            item["status"] = status
        elif kind == "reasoning" and self._seal is not None:
            item["encrypted_content"] = self._seal(item)
        if self._encode is not None:
            self._emit({"type": "response.output_item.done", "sequence_number": 0, "output_index": self._index,
                        "item": item})

    @property
    def complete(self) -> bool:
        """Did the upstream say the turn ended? A stream cut before that is a failure, not a short answer."""
        return self.finish_reason is not None or self.saw_done

    def finish(self, completed_at: int) -> None:
        """Close every item and set the terminal status; emits ``response.completed`` or ``.incomplete``. The
        events it emits are encoded later (:meth:`encode_deferred`, or whatever takes them): nothing changes now."""
        with self.deferring():
            self._finish(completed_at)

    def _finish(self, completed_at: int) -> None:
        reason = self.stop_reason or FINISH_INCOMPLETE.get(self.finish_reason or "")
        self._close_open("incomplete" if reason else "completed")
        self._settle_pending(announce=True)
        response = self.response
        response["usage"] = convert_usage(self.total_usage)
        if reason:
            response["status"] = "incomplete"
            response["incomplete_details"] = {"reason": reason}
            self.lifecycle("response.incomplete")
        else:
            response["status"] = "completed"
            response["completed_at"] = completed_at
            self.lifecycle("response.completed")

    def fail(self, code: str | None, message: str, *, status: int = 500) -> None:
        """Mark the response failed, keeping the partial output (items marked incomplete); emits
        ``response.failed``. Open items get no ``.done`` events: the response they belong to did not finish.
        ``code`` is the bridge's reason; the Response carries a code OpenAI's clients know (response_error.py)."""
        self._end("failed", response_error(code, message, status=status), "response.failed")

    def cancel(self) -> None:
        """A background response cancelled by its owner: like ``fail`` (partial output kept, open items
        incomplete) but ``status: cancelled`` and no error; emits ``response.failed`` carrying that response (no
        SDK union has a ``response.cancelled`` stream event: event_frames.CANCELLED_EVENT)."""
        self._end("cancelled", None, CANCELLED_EVENT)

    def _end(self, status: str, error: dict[str, Any] | None, event: str) -> None:
        """What ``fail`` and ``cancel`` share: open items closed incomplete without events, then ``event``."""
        self._deferred = []  # an end after finish (the store refused it): the finished events never go out
        encode, self._encode = self._encode, None
        if self._open == "tools":  # a call still waiting for its name was never announced: leave it out
            self._tool_calls = {index: call for index, call in self._tool_calls.items() if call.item is not None}
        self._close_open("incomplete")
        self._settle_pending(announce=False)
        self._encode = encode
        response = self.response
        response["status"] = status
        response["completed_at"] = None  # finish() may have run before a late end (the store refused it)
        response["incomplete_details"] = None
        response["error"] = error
        response["usage"] = convert_usage(self.total_usage)
        self.lifecycle(event)
