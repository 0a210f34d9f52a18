"""The calls of a response not made because it reached ``max_tool_calls``: each a failed item and a text for the model.

Moved out of run/server_tools_calls.py, which was over the module-size limit: what a refused call leaves in the
output, per tool kind, is a job of its own and needs nothing of the runner but its output builder, the limit and
whether the request included the code interpreter's outputs. It must not import server_tools_calls.py (which
imports it).
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable

from ... import ids
from ...engine.responses.output_builder import OutputBuilder
from ...engine.responses.request_translation import mcp_result_text
from ...engine.responses.turns import ToolResult
from ...engine.tools.multi_agent import call_output_item
from ...engine.tools.programs import program_output_item
from ...engine.tools.turn_result import TurnCall
from ..tools.tool_search import tool_search_output_item


def limit_message(max_tool_calls: int | None) -> str:
    """What the model reads of a call not made past the limit."""
    return (f"The call was not made: this response reached its limit of {max_tool_calls} tool "
            "calls (max_tool_calls).")


def refusal(builder: OutputBuilder, call: TurnCall, max_tool_calls: int | None, *,
            include_outputs: bool) -> Callable[[], Awaitable[ToolResult]]:
    """The job that stands for ``call`` past the limit: it ends the call's item as failed (or adds the output item
    its kind has) and returns the limit's message as the call's result."""
    message = limit_message(max_tool_calls)

    async def refuse() -> ToolResult:
        kind = call.target.kind  # type: ignore[union-attr]
        if kind == "mcp":
            builder.complete_mcp_call(call.output_index, error=message)
            return ToolResult(call.call_id, mcp_result_text(None, message))
        if kind == "web_search":
            builder.complete_web_search(call.output_index, failed=True)
        elif kind == "file_search":
            builder.complete_file_search(call.output_index, failed=True)
        elif kind == "code_interpreter":
            builder.complete_code_interpreter(
                call.output_index, outputs=[{"type": "logs", "logs": message}] if include_outputs else None,
                failed=True)
        elif kind == "image_generation":
            builder.complete_image_generation(call.output_index, fields={}, failed=True)
        elif kind == "hosted_shell":
            builder.add_shell_call_output(call.call_id, [], max_output_length=None, status="incomplete")
        elif kind == "multi_agent":
            builder.add_item(call_output_item(call.target.name or "", call.call_id, message))  # type: ignore[union-attr]
        elif kind == "program":
            builder.add_item(program_output_item(call.call_id, message, "incomplete"))
        else:
            builder.add_item(tool_search_output_item(ids.new_id("tso"), call_id=call.call_id, tools=[]))
        return ToolResult(call.call_id, message)

    return refuse
