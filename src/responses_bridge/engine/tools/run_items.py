"""Items the run makes itself in the output, between model turns: MCP listings and approved calls, and the outcomes
of server-side calls (MCP, web search, file search) the model made. Part of
:class:`~responses_bridge.engine.responses.output_builder.OutputBuilder`; the one output and sequence spans both."""

from __future__ import annotations

from typing import Any, Protocol

from ... import ids
from .programs import program_run_id
from .server import ServerCallReader, mcp_call_error, mcp_call_item, server_reader_for
from .tools import CallTarget


class ShellOutputItem(Protocol):
    """The builder's shell-output methods, named once: the run's live shell output (run/tools/shell.py) calls
    them as the sandbox prints."""

    def open_shell_call_output(self, call_id: str, *,
                               max_output_length: int | None) -> tuple[int, dict[str, Any]]: ...

    def shell_output_delta(self, item: dict[str, Any], output_index: int, command_index: int, stdout: str,
                           stderr: str) -> None: ...

    def shell_output_done(self, item: dict[str, Any], output_index: int, command_index: int,
                          output: dict[str, Any]) -> None: ...

    def close_shell_call_output(self, item: dict[str, Any], output_index: int, outputs: list[dict[str, Any]],
                                status: str) -> None: ...


class _Builder(ShellOutputItem, Protocol):
    """What these methods use of the builder they are part of."""

    _pending: dict[int, ServerCallReader]
    _run_items: dict[int, dict[str, Any]]

    def _close_open(self, status: str = "completed") -> None: ...

    def _place(self, item: dict[str, Any]) -> int: ...

    def _emit_run(self, event: dict[str, Any]) -> None: ...

    def _complete_pending(self, output_index: int, completed: str, failed: bool, fields: dict[str, Any]) -> None: ...


class RunItems:
    _pending: dict[int, ServerCallReader]  # the builder's: server calls waiting for their outcome


    def add_mcp_list_tools(self: _Builder, server_label: str) -> int:
        """An ``mcp_list_tools`` item while the server is being listed: ``output_item.added`` and
        ``response.mcp_list_tools.in_progress``. Returns its output_index, for :meth:`complete_mcp_list_tools`."""
        self._close_open()
        item: dict[str, Any] = {"id": ids.new_id("mcpl"), "type": "mcp_list_tools", "server_label": server_label,
                                "tools": [], "error": None}
        index = self._place(item)
        self._emit_run({"type": "response.output_item.added", "sequence_number": 0, "output_index": index,
                        "item": dict(item)})
        self._emit_run({"type": "response.mcp_list_tools.in_progress", "sequence_number": 0,
                        "item_id": item["id"], "output_index": index})
        return index

    def complete_mcp_list_tools(self: _Builder, output_index: int, *, tools: list[dict[str, Any]] | None = None,
                                error: str | None = None) -> None:
        """The listing ended: ``tools`` (``MCPToolInfo.as_item()`` entries) or ``error`` (the failed item's
        text); ``response.mcp_list_tools.completed`` / ``.failed``, then ``output_item.done``."""
        item = self._run_items[output_index]
        item["tools"] = list(tools or ())
        item["error"] = error
        self._emit_run({"type": "response.mcp_list_tools.failed" if error is not None
                        else "response.mcp_list_tools.completed", "sequence_number": 0, "item_id": item["id"],
                        "output_index": output_index})
        self._emit_run({"type": "response.output_item.done", "sequence_number": 0, "output_index": output_index,
                        "item": item})

    def start_mcp_call(self: _Builder, server_label: str, name: str, arguments: str, *,
                       approval_request_id: str | None = None) -> int:
        """An ``mcp_call`` the run makes without a model turn (an approved ``mcp_approval_request``): announced
        with its arguments and ``in_progress``; finish it with :meth:`complete_mcp_call`."""
        self._close_open()
        item = mcp_call_item(server_label, name, "", approval_request_id)
        index = self._place(item)
        self._emit_run({"type": "response.output_item.added", "sequence_number": 0, "output_index": index,
                        "item": dict(item)})
        item["arguments"] = arguments
        if arguments:
            self._emit_run({"type": "response.mcp_call_arguments.delta", "sequence_number": 0,
                            "item_id": item["id"], "output_index": index, "delta": arguments})
        self._emit_run({"type": "response.mcp_call_arguments.done", "sequence_number": 0, "item_id": item["id"],
                        "output_index": index, "arguments": arguments})
        self._emit_run({"type": "response.mcp_call.in_progress", "sequence_number": 0, "item_id": item["id"],
                        "output_index": index})
        return index

    def complete_mcp_call(self: _Builder, output_index: int, *, output: str | None = None,
                          error: str | dict[str, Any] | None = None) -> None:
        """An MCP call's outcome: ``output``, or ``error`` (a text becomes an ``mcp_tool_execution_error``; pass
        ``server_tools.mcp_call_error(…, protocol=True)`` for a server that could not be used). Emits
        ``response.mcp_call.completed`` / ``.failed`` and ``output_item.done``."""
        reader = self._pending.pop(output_index, None)
        item = reader.item if reader is not None else self._run_items[output_index]
        if error is not None:
            item["error"] = mcp_call_error(error) if isinstance(error, str) else error
            item["status"] = "failed"
        else:
            item["output"] = output if output is not None else ""
            item["status"] = "completed"
        self._emit_run({"type": "response.mcp_call.failed" if error is not None else "response.mcp_call.completed",
                        "sequence_number": 0, "item_id": item["id"], "output_index": output_index})
        self._emit_run({"type": "response.output_item.done", "sequence_number": 0, "output_index": output_index,
                        "item": item})

    def complete_web_search(self: _Builder, output_index: int, *, action: dict[str, Any] | None = None,
                            failed: bool = False) -> None:
        """A web search's outcome: its final ``action`` (``web_search_action``: the query, and the sources when
        asked for); ``response.web_search_call.completed`` and ``output_item.done``, or with ``failed`` only the
        done item with ``status: failed`` (the SDK has no failed event)."""
        self._complete_pending(output_index, "response.web_search_call.completed", failed,
                               {"action": action} if action is not None else {})

    def complete_file_search(self: _Builder, output_index: int, *, results: list[dict[str, Any]] | None = None,
                             failed: bool = False) -> None:
        """A file search's outcome: ``results`` (``file_search_results``; only when the request's ``include``
        asks for them, else the item keeps ``results: null``); ``response.file_search_call.completed`` and
        ``output_item.done``, or with ``failed`` only the done item with ``status: failed`` (the SDK has no failed
        event)."""
        self._complete_pending(output_index, "response.file_search_call.completed", failed,
                               {"results": results} if results is not None else {})

    def complete_code_interpreter(self: _Builder, output_index: int, *, outputs: list[dict[str, Any]] | None,
                                  failed: bool = False) -> None:
        """A code interpreter call's outcome: ``outputs`` (logs and images; only when the request's ``include``
        asks for them, else None); ``response.code_interpreter_call.completed`` and ``output_item.done``, or with
        ``failed`` (a limit ended the run, or the sandbox could not start) only the done item, ``status: failed``
        (the SDK has no failed event)."""
        self._complete_pending(output_index, "response.code_interpreter_call.completed", failed,
                               {"outputs": outputs})

    def complete_image_generation(self: _Builder, output_index: int, *, fields: dict[str, Any],
                                  failed: bool = False) -> None:
        """An image generation call's outcome: ``fields`` (``result``, the base64 image, and what the upstream
        says it made: ``revised_prompt``, ``size``, ``quality``, ``output_format``, ``background``);
        ``response.image_generation_call.completed`` and ``output_item.done``, or with ``failed`` only the done
        item, ``status: failed`` (the SDK has no failed event)."""
        self._complete_pending(output_index, "response.image_generation_call.completed", failed, fields)

    def partial_image(self: _Builder, output_index: int, image: str, index: int, made: dict[str, Any]) -> None:
        """A partial image of a pending image generation call (``partial_images``), as the image model streamed it:
        ``response.image_generation_call.partial_image`` with its base64 and 0-based index, and what the model
        says of it (``size``, ``quality``, ``output_format``, ``background``)."""
        item = self._pending[output_index].item
        self._emit_run({"type": "response.image_generation_call.partial_image", "sequence_number": 0,
                        "item_id": item["id"], "output_index": output_index, "partial_image_b64": image,
                        "partial_image_index": index, **made})

    def add_shell_call_output(self: _Builder, call_id: str, outputs: list[dict[str, Any]], *,
                              max_output_length: int | None, status: str) -> int:
        """A hosted shell call's ``shell_call_output`` item at once (:meth:`open_shell_call_output`, each
        command's output, :meth:`close_shell_call_output`). Returns its output_index."""
        index, item = self.open_shell_call_output(call_id, max_output_length=max_output_length)
        for command_index, output in enumerate(outputs):
            self.shell_output_delta(item, index, command_index, output["stdout"], output["stderr"])
            self.shell_output_done(item, index, command_index, output)
        self.close_shell_call_output(item, index, outputs, status)
        return index

    def open_shell_call_output(self: _Builder, call_id: str, *,
                               max_output_length: int | None) -> tuple[int, dict[str, Any]]:
        """A hosted shell call's ``shell_call_output`` item, opened before its commands run:
        ``output_item.added`` (no output yet). Then per command, as it prints, :meth:`shell_output_delta` and,
        once it ended, :meth:`shell_output_done`; :meth:`close_shell_call_output` ends it. Returns its
        output_index and item."""
        self._close_open()
        item: dict[str, Any] = {"id": ids.new_id("sho"), "type": "shell_call_output", "call_id": call_id,
                                "output": [], "max_output_length": max_output_length, "status": "in_progress"}
        index = self._place(item)
        self._emit_run({"type": "response.output_item.added", "sequence_number": 0, "output_index": index,
                        "item": dict(item, output=[])})
        return index, item

    def shell_output_delta(self: _Builder, item: dict[str, Any], output_index: int, command_index: int, stdout: str,
                           stderr: str) -> None:
        """``response.shell_call_output_content.delta``: what a command printed since the last one."""
        self._emit_run({"type": "response.shell_call_output_content.delta", "sequence_number": 0,
                        "item_id": item["id"], "output_index": output_index, "command_index": command_index,
                        "delta": {"stdout": stdout, "stderr": stderr}})

    def shell_output_done(self: _Builder, item: dict[str, Any], output_index: int, command_index: int,
                          output: dict[str, Any]) -> None:
        """``response.shell_call_output_content.done``: a command's whole output with its outcome."""
        self._emit_run({"type": "response.shell_call_output_content.done", "sequence_number": 0,
                        "item_id": item["id"], "output_index": output_index, "command_index": command_index,
                        "output": [output]})

    def close_shell_call_output(self: _Builder, item: dict[str, Any], output_index: int,
                                outputs: list[dict[str, Any]], status: str) -> None:
        """The item's every command's output and ``status``; ``output_item.done``."""
        item["output"] = list(outputs)
        item["status"] = status
        self._emit_run({"type": "response.output_item.done", "sequence_number": 0, "output_index": output_index,
                        "item": item})

    def start_server_call(self: _Builder, target: CallTarget, arguments: str) -> tuple[str, int, dict[str, Any]]:
        """A server tool's call the run makes itself (a program's, programs.py), announced and streamed as the
        model's are (its tool's own item and events); its outcome comes through the ``complete_*`` of its kind, as
        for the model's. Returns its call id, output_index and item."""
        self._close_open()
        call_id = program_run_id(ids.call_id())  # marked: the model never reads it back as its own call
        reader = server_reader_for(target, call_id, -1)
        reader.item["id"] = program_run_id(reader.item["id"])
        index = reader.output_index = self._place(reader.item)
        self._emit_run({"type": "response.output_item.added", "sequence_number": 0, "output_index": index,
                        "item": dict(reader.item)})
        events = [*reader.opened(), *(reader.feed(arguments) if arguments else ()),
                  *reader.close(arguments, "completed")]
        for event in events:
            self._emit_run(event)
        if reader.pending:
            self._pending[index] = reader
        else:
            self._emit_run({"type": "response.output_item.done", "sequence_number": 0, "output_index": index,
                            "item": reader.item})
        return call_id, index, reader.item

    def add_function_call(self: _Builder, item: dict[str, Any]) -> int:
        """A ``function_call`` item the run made (a program's call of a client tool, programs.py), streamed
        as the model's are: ``output_item.added`` (in progress, no arguments yet), its arguments' ``.delta`` and
        ``.done``, then ``output_item.done``. Returns its output_index."""
        self._close_open()
        index = self._place(item)
        common = {"sequence_number": 0, "item_id": item["id"], "output_index": index}
        self._emit_run({"type": "response.output_item.added", "sequence_number": 0, "output_index": index,
                        "item": dict(item, arguments="", status="in_progress")})
        self._emit_run({"type": "response.function_call_arguments.delta", **common, "delta": item["arguments"]})
        self._emit_run({"type": "response.function_call_arguments.done", **common, "arguments": item["arguments"]})
        self._emit_run({"type": "response.output_item.done", "sequence_number": 0, "output_index": index,
                        "item": item})
        return index

    def _complete_pending(self: _Builder, output_index: int, completed: str, failed: bool,
                          fields: dict[str, Any]) -> None:
        """A pending server call's outcome: its item's ``fields`` and status, the ``completed`` event unless it
        failed (the SDK has no failed event for these items), then ``output_item.done``."""
        item = self._pending.pop(output_index).item
        item.update(fields)
        item["status"] = "failed" if failed else "completed"
        if not failed:
            self._emit_run({"type": completed, "sequence_number": 0, "item_id": item["id"],
                            "output_index": output_index})
        self._emit_run({"type": "response.output_item.done", "sequence_number": 0, "output_index": output_index,
                        "item": item})

    def _settle_pending(self: _Builder, *, announce: bool) -> None:
        """Server calls whose outcome never came (the response ends early): ``incomplete``."""
        pending, self._pending = self._pending, {}
        for index, reader in sorted(pending.items()):
            reader.item["status"] = "incomplete"
            if announce:
                self._emit_run({"type": "response.output_item.done", "sequence_number": 0, "output_index": index,
                                "item": reader.item})
