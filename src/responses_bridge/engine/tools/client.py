"""Calls of client-executed tools other than functions, read from the function call the upstream streams.

The model calls these tools as functions (tools.py offers them so); the output builder hands each such
call's argument pieces to a :class:`CallReader`, which owns the Responses item and says which events to emit:

* ``custom`` → a ``custom_tool_call`` item; the ``input`` string is decoded out of the streamed JSON arguments
  as they arrive (``response.custom_tool_call_input.delta``), then ``response.custom_tool_call_input.done``.
* ``shell`` → a ``shell_call`` item whose ``action`` is known once the arguments are complete; then each
  command gets ``response.shell_call_command.added`` / ``.delta`` / ``.done``.
* ``local_shell`` → a ``local_shell_call`` item whose ``exec`` action is known once the arguments are complete.
  The SDK has no events of its own for it: ``output_item.done`` carries the action.
* ``computer_use_preview`` → a ``computer_call`` item with the one action of its arguments, ``computer`` (GA) → one
  with the batch of ``actions`` of its arguments (computer.py).
* ``apply_patch`` → an ``apply_patch_call`` item. The SDK has no events for its operation, so the item is
  announced with an empty ``update_file`` operation and ``output_item.done`` carries the real one.
* ``tool_search`` (client) → a ``tool_search_call`` item whose ``arguments`` are the parsed JSON arguments.

Decoding is linear in the argument bytes: each piece is scanned once; only an escape sequence cut between
two pieces is carried over.
"""

from __future__ import annotations

import re
from abc import ABC, abstractmethod
from typing import Any

import orjson

from ... import ids
from ...protocol.tools.computer_items import action_problem, actions_problem, clean_action
from .tools import CUSTOM_INPUT, CallTarget

Event = dict[str, Any]

_INPUT_KEY = re.compile(r'"' + CUSTOM_INPUT + r'"\s*:\s*"')
_SPECIAL = re.compile(r'["\\]')
_SIMPLE_ESCAPES = {'"': '"', "\\": "\\", "/": "/", "b": "\b", "f": "\f", "n": "\n", "r": "\r", "t": "\t"}
_MAX_SEEK = 4096  # characters before the value starts that are searched for its key; then decoding waits for the end


def parse_arguments(arguments: str) -> Any:
    try:
        return orjson.loads(arguments) if arguments.strip() else {}
    except orjson.JSONDecodeError:
        return None


def custom_input(arguments: str) -> str:
    """The custom tool's input from the function arguments: ``{"input": "..."}`` as offered; a model that sent
    something else gets its single string value or its raw text taken as the input."""
    parsed = parse_arguments(arguments)
    if isinstance(parsed, dict):
        value = parsed.get(CUSTOM_INPUT)
        if isinstance(value, str):
            return value
        strings = [value for value in parsed.values() if isinstance(value, str)]
        if len(strings) == 1:
            return strings[0]
        return arguments if parsed else ""
    if isinstance(parsed, str):
        return parsed
    return arguments


class StringFieldDecoder:
    """Decodes the ``input`` string value out of JSON text that arrives in pieces; returns new text per piece."""

    __slots__ = ("_state", "_seek", "_carry")

    def __init__(self) -> None:
        self._state = 0  # 0: looking for the key, 1: inside the value, 2: done (value ended, or gave up)
        self._seek = ""
        self._carry = ""  # an escape sequence cut at the end of the last piece

    def feed(self, piece: str) -> str:
        if self._state == 2:
            return ""
        if self._state == 0:
            self._seek += piece
            found = _INPUT_KEY.search(self._seek)
            if found is None:
                if len(self._seek) > _MAX_SEEK:
                    self._state, self._seek = 2, ""
                return ""
            piece, self._seek, self._state = self._seek[found.end():], "", 1
        text, self._carry = self._carry + piece, ""
        out: list[str] = []
        position, end = 0, len(text)
        while position < end:
            special = _SPECIAL.search(text, position)
            if special is None:
                out.append(text[position:])
                break
            at = special.start()
            out.append(text[position:at])
            if text[at] == '"':
                self._state = 2
                break
            if at + 1 >= end:
                self._carry = text[at:]
                break
            kind = text[at + 1]
            if kind != "u":
                out.append(_SIMPLE_ESCAPES.get(kind, kind))
                position = at + 2
                continue
            length = 6
            if at + 6 <= end and 0xD800 <= _hex(text[at + 2:at + 6]) < 0xDC00:
                length = 12  # a surrogate pair: both halves decode together
            if at + length > end:
                self._carry = text[at:]
                break
            try:
                out.append(orjson.loads(f'"{text[at:at + length]}"'))
            except orjson.JSONDecodeError:
                self._state = 2  # not JSON as offered: the whole input comes at the end
                break
            position = at + length
        return "".join(out)


def _hex(digits: str) -> int:
    try:
        return int(digits, 16)
    except ValueError:
        return -1


class CallReader(ABC):
    """One call's item, and the events its argument pieces and its end produce."""

    __slots__ = ("item", "output_index")
    pending = False  # a server tool's call awaiting the run's outcome (server.py)

    def __init__(self, item: dict[str, Any], output_index: int) -> None:
        self.item = item
        self.output_index = output_index

    def opened(self) -> list[Event]:
        """Events that follow the item's ``output_item.added`` at once."""
        return []

    def feed(self, piece: str) -> list[Event]:
        return []

    @abstractmethod
    def close(self, arguments: str, status: str) -> list[Event]:
        """Fill the item from the complete arguments; the events that finish it (before ``output_item.done``)."""


class CustomCallReader(CallReader):
    __slots__ = ("_decoder", "_streamed")

    def __init__(self, item: dict[str, Any], output_index: int) -> None:
        super().__init__(item, output_index)
        self._decoder = StringFieldDecoder()
        self._streamed: list[str] = []

    def _delta(self, text: str) -> Event:
        return {"type": "response.custom_tool_call_input.delta", "sequence_number": 0, "item_id": self.item["id"],
                "output_index": self.output_index, "delta": text}

    def feed(self, piece: str) -> list[Event]:
        text = self._decoder.feed(piece)
        if not text:
            return []
        self._streamed.append(text)
        return [self._delta(text)]

    def close(self, arguments: str, status: str) -> list[Event]:
        streamed = "".join(self._streamed)
        # cut off mid-value: what was decoded, never the raw JSON
        final = streamed if self._streamed and parse_arguments(arguments) is None else custom_input(arguments)
        self.item["input"] = final
        events = []
        if len(final) > len(streamed) and final.startswith(streamed):
            events.append(self._delta(final[len(streamed):]))
        events.append({"type": "response.custom_tool_call_input.done", "sequence_number": 0,
                       "item_id": self.item["id"], "output_index": self.output_index, "input": final})
        return events


class ShellCallReader(CallReader):
    __slots__ = ()

    def close(self, arguments: str, status: str) -> list[Event]:
        return close_shell_call(self.item, self.output_index, arguments, status)


def close_shell_call(item: dict[str, Any], output_index: int, arguments: str, status: str) -> list[Event]:
    """Fill a ``shell_call`` item's ``action`` from the complete arguments (the client's shell, and the hosted
    one: server.py); each command's ``response.shell_call_command.added`` / ``.delta`` / ``.done``."""
    parsed = parse_arguments(arguments)
    commands: list[str]
    limits: dict[str, Any] = parsed if isinstance(parsed, dict) else {}
    if isinstance(parsed, dict):
        given = parsed.get("commands")
        if isinstance(given, str):
            given = [given]
        commands = [str(command) for command in given] if isinstance(given, list) else []
    elif status == "completed" and arguments.strip() and not arguments.lstrip().startswith("{"):
        commands = [arguments]  # not the JSON offered but plain text: the text is the command
    else:  # cut off, or broken JSON: no command is made up from a fragment
        commands = []
    action = {"commands": commands, "timeout_ms": _int_or_none(limits.get("timeout_ms")),
              "max_output_length": _int_or_none(limits.get("max_output_length"))}
    item["action"] = action
    item["status"] = status
    events: list[Event] = []
    for index, command in enumerate(commands):
        common = {"sequence_number": 0, "output_index": output_index, "command_index": index}
        events.append({"type": "response.shell_call_command.added", **common, "command": ""})
        events.append({"type": "response.shell_call_command.delta", **common, "delta": command})
        events.append({"type": "response.shell_call_command.done", **common, "command": command})
    return events


class LocalShellCallReader(CallReader):
    __slots__ = ()

    def close(self, arguments: str, status: str) -> list[Event]:
        parsed = parse_arguments(arguments)
        given: dict[str, Any] = parsed if isinstance(parsed, dict) else {}
        command = given.get("command")
        if isinstance(command, str):
            command = [command]
        elif not isinstance(parsed, dict) and status == "completed" and arguments.strip() \
                and not arguments.lstrip().startswith("{"):
            command = [arguments]  # plain text instead of the JSON offered: the text is the command
        env = given.get("env")
        working_directory = given.get("working_directory")
        self.item["action"] = {
            "type": "exec",
            "command": [str(part) for part in command] if isinstance(command, list) else [],
            "env": {str(key): str(value) for key, value in env.items()} if isinstance(env, dict) else {},
            "timeout_ms": _int_or_none(given.get("timeout_ms")),
            "working_directory": working_directory if isinstance(working_directory, str) else None,
            "user": None,
        }
        self.item["status"] = status
        return []


class ComputerCallReader(CallReader):
    """The model's action, checked as an input item's would be; an action that is not one (a wrong type, a
    missing coordinate, arguments cut off) becomes a ``screenshot``, which changes nothing on the user's machine,
    and the item is ``incomplete``, so the client knows the model did not ask for it."""

    __slots__ = ()

    def close(self, arguments: str, status: str) -> list[Event]:
        parsed = parse_arguments(arguments)
        if isinstance(parsed, dict) and action_problem(parsed) is None:
            self.item["action"] = clean_action(parsed)
            self.item["status"] = status
        else:
            self.item["action"] = {"type": "screenshot"}
            self.item["status"] = "incomplete"
        return []


class ComputerBatchReader(CallReader):
    """The GA ``computer`` tool's call: a batch of actions, each checked as an input item's would be. A batch with
    one action that is not one is not run in part: it becomes one ``screenshot`` and the item is ``incomplete``."""

    __slots__ = ()

    def close(self, arguments: str, status: str) -> list[Event]:
        parsed = parse_arguments(arguments)
        actions = parsed.get("actions") if isinstance(parsed, dict) else None
        if actions_problem(actions) is None:
            self.item["actions"] = [clean_action(action) for action in actions]  # type: ignore[union-attr]
            self.item["status"] = status
        else:
            self.item["actions"] = [{"type": "screenshot"}]
            self.item["status"] = "incomplete"
        return []


class ApplyPatchCallReader(CallReader):
    __slots__ = ()

    def close(self, arguments: str, status: str) -> list[Event]:
        parsed = parse_arguments(arguments)
        parsed = parsed if isinstance(parsed, dict) else {}
        kind = parsed.get("type") if parsed.get("type") in ("create_file", "update_file", "delete_file") \
            else "update_file"
        operation = {"type": kind, "path": str(parsed.get("path") or "")}
        if kind != "delete_file":
            diff = parsed.get("diff")
            operation["diff"] = diff if isinstance(diff, str) else ""
        self.item["operation"] = operation
        self.item["status"] = "completed" if status == "completed" else "in_progress"  # the SDK has no other
        return []


class ToolSearchCallReader(CallReader):
    __slots__ = ()

    def close(self, arguments: str, status: str) -> list[Event]:
        parsed = parse_arguments(arguments)
        self.item["arguments"] = parsed if isinstance(parsed, dict) else {"query": arguments}
        self.item["status"] = status
        return []


def _int_or_none(value: Any) -> int | None:
    return value if type(value) is int else None


def reader_for(target: CallTarget, call_id: str, output_index: int) -> CallReader:
    """The reader for a call of ``target``'s tool, its item in the state ``output_item.added`` shows."""
    kind = target.kind
    if kind == "custom":
        item: dict[str, Any] = {"id": ids.new_id("ctc"), "type": "custom_tool_call", "call_id": call_id,
                                "name": target.name, "input": ""}
        if target.namespace:
            item["namespace"] = target.namespace
        return CustomCallReader(item, output_index)
    if kind == "shell":
        return ShellCallReader({"id": ids.new_id("sh"), "type": "shell_call", "call_id": call_id,
                                "action": {"commands": [], "timeout_ms": None, "max_output_length": None},
                                "status": "in_progress"}, output_index)
    if kind == "local_shell":
        return LocalShellCallReader({"id": ids.new_id("lsh"), "type": "local_shell_call", "call_id": call_id,
                                     "action": {"type": "exec", "command": [], "env": {}, "timeout_ms": None,
                                                "working_directory": None, "user": None},
                                     "status": "in_progress"}, output_index)
    if kind == "computer_use_preview":
        return ComputerCallReader({"id": ids.new_id("cu"), "type": "computer_call", "call_id": call_id,
                                   "action": {"type": "screenshot"}, "pending_safety_checks": [],
                                   "status": "in_progress"}, output_index)
    if kind == "computer":
        return ComputerBatchReader({"id": ids.new_id("cu"), "type": "computer_call", "call_id": call_id,
                                    "actions": [], "pending_safety_checks": [], "status": "in_progress"},
                                   output_index)
    if kind == "apply_patch":
        return ApplyPatchCallReader({"id": ids.new_id("apc"), "type": "apply_patch_call", "call_id": call_id,
                                     "operation": {"type": "update_file", "path": "", "diff": ""},
                                     "status": "in_progress"}, output_index)
    return ToolSearchCallReader({"id": ids.new_id("tsc"), "type": "tool_search_call", "call_id": call_id,
                                 "execution": "client", "arguments": {}, "status": "in_progress"}, output_index)


def shell_output_text(chunks: list[dict[str, Any]]) -> str:
    """What the model reads of a shell call's output: per command its stdout, its stderr, and how it ended."""
    lines: list[str] = []
    for chunk in chunks:
        if chunk.get("stdout"):
            lines.append(chunk["stdout"])
        if chunk.get("stderr"):
            lines.append(f"stderr:\n{chunk['stderr']}")
        outcome = chunk.get("outcome") or {}
        if outcome.get("type") == "timeout":
            lines.append("(timed out)")
        elif outcome.get("type") == "exit":
            lines.append(f"(exit code {outcome.get('exit_code')})")
    return "\n".join(lines)
