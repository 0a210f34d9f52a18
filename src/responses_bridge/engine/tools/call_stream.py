"""The model's tool calls as they stream in: argument deltas, the item each call becomes (a function call, or a
custom / shell / apply_patch / tool search / server call), and closing them at the end of a turn. Part of
:class:`~responses_bridge.engine.responses.output_builder.OutputBuilder`."""

from __future__ import annotations

from typing import Any, Protocol

import orjson

from ... import ids
from ..chunk_values import UpstreamProtocolError
from .call_readers import call_reader_for
from .client import CallReader
from .server import ITEM_ID_CALLS, ServerCallReader
from .tools import CallTarget
from .turn_result import TurnCall, turn_continued_id


class _ToolCall:
    __slots__ = ("item", "pieces", "output_index", "call_id", "reader", "name")

    def __init__(self) -> None:
        self.item: dict[str, Any] | None = None
        self.pieces: list[str] = []
        self.output_index = -1
        self.call_id: str | None = None
        self.reader: CallReader | None = None  # a call of a custom / shell / apply_patch / tool_search tool
        self.name = ""  # the upstream function name


class _Builder(Protocol):
    """What these methods use of the builder they are part of."""

    output: list[dict[str, Any]]
    _encode: Any
    _open: str | None
    _targets: dict[str, CallTarget]
    program_sign: Any
    _tool_calls: dict[int, _ToolCall]
    _turn_calls: list[TurnCall]
    _pending: dict[int, ServerCallReader]

    def _close_open(self, status: str = "completed") -> None: ...

    def _emit(self, event: dict[str, Any]) -> None: ...

    def _announce_call(self, call: _ToolCall, name: str) -> dict[str, Any]: ...


def _after_a_held_result(builder: _Builder, call: _ToolCall) -> bool:
    """Does ``call`` follow, in its model turn, a call whose item holds its result (an MCP call, a search, the
    code)? Only then does history need the turn's mark to show the two calls on one message: calls of other kinds
    fold onto their turn's message as they are (their outputs are items of their own, after the calls)."""
    return any(other.item["type"] in ITEM_ID_CALLS for other in builder._turn_calls) or any(
        other is not call and other.item is not None and other.item["type"] in ITEM_ID_CALLS
        for other in builder._tool_calls.values())


class ToolCallStream:
    _open: str | None  # the builder's: which kind of item is open

    def _tool_call_delta(self: _Builder, delta: dict[str, Any]) -> None:
        if self._open != "tools":
            self._close_open()
            self._open = "tools"
            self._tool_calls = {}
        index = delta.get("index", len(self._tool_calls))
        call = self._tool_calls.get(index)
        if call is None:
            call = self._tool_calls[index] = _ToolCall()
        function = delta.get("function") or {}
        arguments = function.get("arguments")
        if arguments and type(arguments) is not str:
            if not isinstance(arguments, (dict, list)):
                raise UpstreamProtocolError("The upstream sent tool call arguments that are not a string.")
            arguments = orjson.dumps(arguments).decode()  # some servers send the arguments as a JSON object
        item = call.item
        if item is None:
            if delta.get("id") and type(delta["id"]) is str:
                call.call_id = delta["id"]
            name = function.get("name")
            if not name:  # ids and names may arrive late; hold the arguments until the call can be announced
                if arguments:
                    call.pieces.append(arguments)
                return
            if type(name) is not str:
                raise UpstreamProtocolError("The upstream sent a tool call name that is not a string.")
            item = self._announce_call(call, name)
        if arguments:
            call.pieces.append(arguments)
            if call.reader is not None:
                if self._encode is not None:
                    for event in call.reader.feed(arguments):
                        self._emit(event)
            elif self._encode is not None:
                self._emit({"type": "response.function_call_arguments.delta", "sequence_number": 0,
                            "item_id": item["id"], "output_index": call.output_index, "delta": arguments})

    def _announce_call(self: _Builder, call: _ToolCall, name: str) -> dict[str, Any]:
        target = self._targets.get(name)
        call.output_index = len(self.output)
        call.name = name
        if call.call_id is None:
            call.call_id = ids.call_id()
        if target is not None and target.kind != "function":  # a custom / shell / apply_patch / tool search call
            call.reader = call_reader_for(target, call.call_id, call.output_index, self.program_sign)
            call.item = call.reader.item
        else:
            call.item = {"id": ids.function_call_id(), "type": "function_call", "status": "in_progress",
                         "call_id": call.call_id, "name": name, "arguments": ""}
            if target is not None:  # a namespace tool's function: named as the client declared it
                call.item["namespace"], call.item["name"] = target.namespace, target.name
        if _after_a_held_result(self, call):  # history shows it on its turn's message (turn_result.TURN_MARK)
            call.item["id"] = turn_continued_id(call.item["id"])
        self.output.append(call.item)
        if self._encode is not None:
            self._emit({"type": "response.output_item.added", "sequence_number": 0,
                        "output_index": call.output_index, "item": dict(call.item)})
            if call.reader is not None:
                for event in call.reader.opened():
                    self._emit(event)
            if call.pieces:  # arguments that came before the name
                early = "".join(call.pieces)
                if call.reader is not None:
                    for event in call.reader.feed(early):
                        self._emit(event)
                else:
                    self._emit({"type": "response.function_call_arguments.delta", "sequence_number": 0,
                                "item_id": call.item["id"], "output_index": call.output_index, "delta": early})
        return call.item

    def _close_tool_calls(self: _Builder, status: str) -> None:
        calls = self._tool_calls
        self._tool_calls = {}
        for call in calls.values():
            if call.item is None:
                self._announce_call(call, "")
        for call in sorted(calls.values(), key=lambda c: c.output_index):
            item = call.item
            assert item is not None, "every call was announced by the loop above"
            arguments = "".join(call.pieces)
            # a call whose item has no call id (an MCP call, a search) is sent back under its item's id, as
            # history sends it later: one name for it in every prompt of the chain (server.ITEM_ID_CALLS)
            call_id = item["id"] if item["type"] in ITEM_ID_CALLS else call.call_id or ""
            self._turn_calls.append(TurnCall(call_id, call.name, arguments,
                                             self._targets.get(call.name), call.output_index, item, status))
            if call.reader is not None:
                events = call.reader.close(arguments, status)
                if call.reader.pending:  # a server call: done when the run reports its outcome
                    self._pending[call.output_index] = call.reader  # type: ignore[assignment]
                if self._encode is not None:
                    for event in events:
                        self._emit(event)
                    if not call.reader.pending:
                        self._emit({"type": "response.output_item.done", "sequence_number": 0,
                                    "output_index": call.output_index, "item": item})
                continue
            item["arguments"] = arguments
            item["status"] = status
            if self._encode is not None:
                self._emit({"type": "response.function_call_arguments.done", "sequence_number": 0,
                            "item_id": item["id"], "output_index": call.output_index, "arguments": arguments})
                self._emit({"type": "response.output_item.done", "sequence_number": 0,
                            "output_index": call.output_index, "item": item})

    # --- endings -------------------------------------------------------------------------------------------------
