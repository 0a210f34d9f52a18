"""Calls of tools the bridge runs itself (the tool loop), read from the function call the upstream streams.

Like client.py, but the item a call becomes is the server tool's own, as the ``openai`` SDK types it:

* an MCP server's tool → an ``mcp_call`` item: ``response.mcp_call_arguments.delta`` per argument piece, then
  ``response.mcp_call_arguments.done`` and ``response.mcp_call.in_progress``. The item stays open (no
  ``output_item.done``): the run calls the tool and reports the outcome through
  ``OutputBuilder.complete_mcp_call``, which emits ``response.mcp_call.completed`` / ``.failed`` and the done item.
* an MCP tool whose calls need approval → an ``mcp_approval_request`` item, done when its arguments are; the run
  ends the response after it (the SDK has no argument events for it).
* the web search → a ``web_search_call`` item: ``response.web_search_call.in_progress`` right after it is
  announced, ``.searching`` once its query is known; it stays open until ``OutputBuilder.complete_web_search``.
* the file search → a ``file_search_call`` item: ``response.file_search_call.in_progress`` right after it is
  announced, ``.searching`` once its queries are known; it stays open until ``OutputBuilder.complete_file_search``.
* the code interpreter → a ``code_interpreter_call`` item: ``response.code_interpreter_call.in_progress`` right
  after it is announced, ``response.code_interpreter_call_code.delta`` per piece of code decoded from the streamed
  arguments, then ``.code.done`` and ``response.code_interpreter_call.interpreting``; it stays open until
  ``OutputBuilder.complete_code_interpreter``.
* the image generation → an ``image_generation_call`` item: ``response.image_generation_call.in_progress``
  right after it is announced, ``.generating`` once its prompt is known; it stays open until
  ``OutputBuilder.complete_image_generation`` (the run reads the prompt from the call's arguments: the item has
  no field for it).
* the hosted shell → a ``shell_call`` item (``environment``: its container) with each command's
  ``response.shell_call_command.added`` / ``.delta`` / ``.done``, done when its arguments are; the run adds the
  ``shell_call_output`` item with each command's output.
* the server-side tool search → a ``tool_search_call`` item (``execution: "server"``), done when its arguments
  are; the run adds the ``tool_search_output`` item with the tools it found.

A call cut short (the turn ended with ``finish_reason: length``) is closed ``incomplete`` and never run.
"""

from __future__ import annotations

from typing import Any

import orjson

from ... import ids
from .client import CallReader, Event, close_shell_call, parse_arguments
from .code_stream import CodeStream
from .tools import CallTarget


def _string_argument(arguments: str, name: str, plain: str) -> str:
    """The string argument ``name`` of a call; a JSON string (or ``plain``, for arguments that are no JSON at all)
    when the model sent the value itself rather than an object."""
    parsed = parse_arguments(arguments)
    if isinstance(parsed, dict):
        value = parsed.get(name)
        return value if isinstance(value, str) else ""
    if isinstance(parsed, str):
        return parsed
    return plain


def search_query_of(arguments: str) -> str:
    """The query of a web search or tool search call; a model that sent plain text searched for that text."""
    return _string_argument(arguments, "query", arguments.strip())


def mcp_call_error(message: str, *, protocol: bool = False, code: int = -32603) -> dict[str, Any]:
    """An ``mcp_call`` item's ``error`` as the SDK types it (``McpToolCallError``): the tool's own error text
    (``mcp_tool_execution_error``), or with ``protocol`` a failure to reach or speak to the server
    (``mcp_protocol_error``, JSON-RPC ``code``)."""
    if protocol:
        return {"type": "mcp_protocol_error", "code": code, "message": message}
    return {"type": "mcp_tool_execution_error", "content": [{"type": "text", "text": message}]}


class ServerCallReader(CallReader):
    """A server tool's call. ``pending``: after ``close`` the item awaits the run's outcome (no done event yet)."""

    __slots__ = ("pending",)

    def __init__(self, item: dict[str, Any], output_index: int) -> None:
        super().__init__(item, output_index)
        self.pending = False

    def _event(self, kind: str) -> Event:
        """One of the call's events that carries nothing but its item and position (``in_progress``, ...)."""
        return {"type": kind, "sequence_number": 0, "item_id": self.item["id"], "output_index": self.output_index}

    def _await_run(self, status: str, running: str, event: str) -> list[Event]:
        """The call's arguments are done: an incomplete call stays so (no event); a complete one awaits the run,
        its item ``running`` meanwhile, announced by ``event``."""
        if status != "completed":
            self.item["status"] = "incomplete"
            return []
        self.pending = True
        self.item["status"] = running
        return [self._event(event)]


class MCPCallReader(ServerCallReader):
    __slots__ = ()

    def feed(self, piece: str) -> list[Event]:
        return [{"type": "response.mcp_call_arguments.delta", "sequence_number": 0, "item_id": self.item["id"],
                 "output_index": self.output_index, "delta": piece}]

    def close(self, arguments: str, status: str) -> list[Event]:
        self.item["arguments"] = arguments
        events: list[Event] = [{"type": "response.mcp_call_arguments.done", "sequence_number": 0,
                                "item_id": self.item["id"], "output_index": self.output_index,
                                "arguments": arguments}]
        if status != "completed":
            self.item["status"] = "incomplete"
            return events
        self.pending = True
        events.append(self._event("response.mcp_call.in_progress"))
        return events


class MCPApprovalReader(ServerCallReader):
    __slots__ = ()

    def close(self, arguments: str, status: str) -> list[Event]:
        self.item["arguments"] = arguments
        return []


class WebSearchReader(ServerCallReader):
    __slots__ = ()

    def opened(self) -> list[Event]:
        return [self._event("response.web_search_call.in_progress")]

    def close(self, arguments: str, status: str) -> list[Event]:
        self.item["action"] = {"type": "search", "query": search_query_of(arguments)}
        return self._await_run(status, "searching", "response.web_search_call.searching")


def file_search_queries_of(arguments: str) -> list[str]:
    """The queries of a file search call: ``query`` (what the bridge offers), or a ``queries`` array as OpenAI's
    own item has them; a model that sent plain text searched for that text."""
    parsed = parse_arguments(arguments)
    if isinstance(parsed, dict) and isinstance(parsed.get("queries"), list):
        return [query for query in parsed["queries"] if isinstance(query, str) and query.strip()]
    query = search_query_of(arguments)
    return [query] if query.strip() else []


class FileSearchReader(ServerCallReader):
    __slots__ = ()

    def opened(self) -> list[Event]:
        return [self._event("response.file_search_call.in_progress")]

    def close(self, arguments: str, status: str) -> list[Event]:
        self.item["queries"] = file_search_queries_of(arguments)
        return self._await_run(status, "searching", "response.file_search_call.searching")


def code_of(arguments: str) -> str:
    """The code of a code interpreter call: its ``code`` argument, or the arguments themselves when the model
    sent plain code rather than JSON."""
    return _string_argument(arguments, "code", arguments)


class CodeInterpreterReader(ServerCallReader):
    __slots__ = ("code",)

    def __init__(self, item: dict[str, Any], output_index: int) -> None:
        super().__init__(item, output_index)
        self.code = CodeStream()

    def opened(self) -> list[Event]:
        return [self._event("response.code_interpreter_call.in_progress")]

    def feed(self, piece: str) -> list[Event]:
        delta = self.code.feed(piece)
        if not delta:
            return []
        self.item["code"] += delta
        return [self._delta(delta)]

    def _delta(self, delta: str) -> Event:
        return {"type": "response.code_interpreter_call_code.delta", "sequence_number": 0,
                "item_id": self.item["id"], "output_index": self.output_index, "delta": delta}

    def close(self, arguments: str, status: str) -> list[Event]:
        code = code_of(arguments)
        events: list[Event] = []
        streamed = self.item["code"]
        if code != streamed:  # plain code, or a shape the stream could not follow: the rest in one delta
            events.append(self._delta(code[len(streamed):] if code.startswith(streamed) else code))
        self.item["code"] = code
        events.append({"type": "response.code_interpreter_call_code.done", "sequence_number": 0,
                       "item_id": self.item["id"], "output_index": self.output_index, "code": code})
        return events + self._await_run(status, "interpreting", "response.code_interpreter_call.interpreting")


def image_request_of(arguments: str) -> tuple[str, str | None]:
    """The prompt of an image generation call, and the size the model chose (None: it chose none); a model that
    sent plain text asked for that text."""
    parsed = parse_arguments(arguments)
    size = parsed.get("size") if isinstance(parsed, dict) else None
    return _string_argument(arguments, "prompt", arguments.strip()), size if isinstance(size, str) else None


class ImageGenerationReader(ServerCallReader):
    __slots__ = ()

    def opened(self) -> list[Event]:
        return [self._event("response.image_generation_call.in_progress")]

    def close(self, arguments: str, status: str) -> list[Event]:
        return self._await_run(status, "generating", "response.image_generation_call.generating")


def image_replay_note(item: dict[str, Any]) -> str:
    """What a replayed ``image_generation_call`` tells the model: that an image was (or was not) generated, and
    from which prompt. Never the image's base64: it would fill the context and no chat model reads it."""
    if item.get("status") != "completed":
        return f"[Image generation call {item.get('id')}: no image was generated ({item.get('status')}).]"
    details = ", ".join(f"{key} {item[key]}" for key in ("size", "quality", "output_format", "background")
                        if isinstance(item.get(key), str))
    prompt = item.get("revised_prompt")
    return (f"[Image generation call {item.get('id')}: an image was generated and shown to the user"
            + (f" ({details})" if details else "") + (f" from the prompt: {prompt}" if prompt else "") + ".]")


class HostedShellReader(ServerCallReader):
    """A hosted shell call: the ``shell_call`` item is done with its arguments (its commands' events, then
    ``output_item.done``); the run answers it with a ``shell_call_output`` item of its own
    (``OutputBuilder.add_shell_call_output``)."""

    __slots__ = ()

    def close(self, arguments: str, status: str) -> list[Event]:
        return close_shell_call(self.item, self.output_index, arguments,
                                "completed" if status == "completed" else "incomplete")


class ServerToolSearchReader(ServerCallReader):
    __slots__ = ()

    def close(self, arguments: str, status: str) -> list[Event]:
        self.item["arguments"] = {"query": search_query_of(arguments)}
        self.item["status"] = "completed" if status == "completed" else "incomplete"
        return []


ITEM_ID_CALLS = frozenset({"mcp_call", "web_search_call", "file_search_call", "code_interpreter_call"})
"""Server calls whose items have no call id of their own: history sends each back to the model under its item id,
with the arguments :func:`sent_back_arguments` gives. The tool loop's next turn sends them the same way (the output
builder's turn message), so a chain's later prompt repeats the loop's exactly (a backend's prefix cache holds)."""


def sent_back_arguments(item: dict[str, Any]) -> str:
    """A server call's arguments as the model reads them back, from its item alone: an MCP call's as the model
    wrote them; a search's or the code's as the compact JSON of what the item keeps (its query or queries, its
    code), which is all a stored item holds of them."""
    kind = item["type"]
    if kind == "mcp_call":
        return str(item.get("arguments") or "{}")
    if kind == "file_search_call":
        queries = [query for query in item.get("queries") or () if isinstance(query, str)]
        return orjson.dumps({"query": queries[0]} if len(queries) == 1 else {"queries": queries}).decode()
    if kind == "code_interpreter_call":
        return orjson.dumps({"code": item.get("code") if isinstance(item.get("code"), str) else ""}).decode()
    action = item.get("action") or {}
    query = action.get("query") or " ".join(action.get("queries") or ()) or action.get("url") or ""
    return orjson.dumps({"query": query}).decode()


def mcp_call_item(server_label: str, name: str, arguments: str = "",
                  approval_request_id: str | None = None) -> dict[str, Any]:
    """An ``mcp_call`` item as ``output_item.added`` shows it."""
    return {"id": ids.new_id("mcp"), "type": "mcp_call", "server_label": server_label, "name": name,
            "arguments": arguments, "output": None, "error": None, "status": "in_progress",
            "approval_request_id": approval_request_id}


def server_reader_for(target: CallTarget, call_id: str, output_index: int) -> ServerCallReader:
    """The reader for a call of a server tool (``target.server``), its item as ``output_item.added`` shows it."""
    kind = target.kind
    if kind == "mcp":
        if target.approval:
            return MCPApprovalReader({"id": ids.new_id("mcpr"), "type": "mcp_approval_request",
                                      "server_label": target.namespace or "", "name": target.name or "",
                                      "arguments": ""}, output_index)
        return MCPCallReader(mcp_call_item(target.namespace or "", target.name or ""), output_index)
    if kind == "web_search":
        return WebSearchReader({"id": ids.new_id("ws"), "type": "web_search_call", "status": "in_progress",
                                "action": {"type": "search"}}, output_index)
    if kind == "file_search":
        return FileSearchReader({"id": ids.new_id("fs"), "type": "file_search_call", "queries": [],
                                 "status": "in_progress", "results": None}, output_index)
    if kind == "code_interpreter":
        return CodeInterpreterReader({"id": ids.new_id("ci"), "type": "code_interpreter_call", "status": "in_progress",
                                      "code": "", "container_id": target.namespace or "", "outputs": None},
                                     output_index)
    if kind == "hosted_shell":
        return HostedShellReader({"id": ids.new_id("sh"), "type": "shell_call", "call_id": call_id,
                                  "action": {"commands": [], "timeout_ms": None, "max_output_length": None},
                                  "status": "in_progress",
                                  "environment": {"type": "container_reference",
                                                  "container_id": target.namespace or ""}}, output_index)
    if kind == "image_generation":
        return ImageGenerationReader({"id": ids.new_id("ig"), "type": "image_generation_call",
                                      "status": "in_progress", "result": None}, output_index)
    return ServerToolSearchReader({"id": ids.new_id("tsc"), "type": "tool_search_call", "call_id": call_id,
                                   "execution": "server", "arguments": {}, "status": "in_progress"}, output_index)
