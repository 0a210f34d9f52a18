"""The tool loop's next upstream turn, as a pure function of the turn before it.

After a turn whose calls target server tools, the run calls them and asks the upstream again with the same
Chat Completions body plus the turn's assistant message (its text and *all* its tool calls, under their upstream
names and call ids) and one ``tool`` message per call result. Everything else (model, sampling parameters,
``parallel_tool_calls``, response format) is kept; ``tools`` are re-derived from the plan, so tools a server-side
tool search loaded are offered from this turn on.

The turn is shown as the model made it, one assistant message with all its calls, and the next response's history
shows it so too (a call item that continues its turn carries turn_result.TURN_MARK in its id), so that response's
prompt begins with this one (a backend's prefix cache holds it; docs/upstreams.md, "Prefix caches").

``tool_choice`` across turns (engine/tools/turn_tools.py ``set_turn_tools``): a forced choice holds for the
first turn only; later turns are ``auto`` (``none`` stays ``none``).

``max_tool_calls``: once the response has made that many tool calls, the next turn is sent without tools, so the
model answers with what it has. This is what OpenAI does — it stops offering tools once the limit is reached and
lets the model finish — rather than ending the response ``incomplete``. The turn carries no ``tools`` and no
``tool_choice`` at all: OpenAI-compatible servers refuse a ``tool_choice`` (even ``"none"``) without ``tools``,
and a model offered no tool cannot call one.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from ..options import EngineOptions
from ..tools.server import ITEM_ID_CALLS
from ..tools.tools import ToolPlan
from ..tools.turn_result import TurnResult
from ..tools.turn_tools import set_turn_tools
from .request_translation import append_tool_result

_DEFAULT_OPTIONS = EngineOptions()


@dataclass(frozen=True, slots=True)
class ToolResult:
    """The result of one server call, as the model reads it: ``content`` is the MCP output or error text
    (``request_translation.mcp_result_text``), the web search's ``results_for_model`` text, or the tool search's
    ``request_translation.tool_search_result_text``."""

    call_id: str
    content: str


def tool_message(result: ToolResult) -> dict[str, Any]:
    return {"role": "tool", "tool_call_id": result.call_id, "content": result.content}


def follow_up_request(body: dict[str, Any], turn: TurnResult, results: Sequence[ToolResult], *, plan: ToolPlan,
                      tool_choice: Any = None, parallel_tool_calls: bool | None = None,
                      tools_exhausted: bool = False, options: EngineOptions = _DEFAULT_OPTIONS) -> dict[str, Any]:
    """The chat body of the turn after ``turn``: ``body`` (the previous turn's body) with the turn's assistant
    message and the results appended. ``plan``: the tools to offer (with any tools a tool search loaded);
    ``tool_choice`` / ``parallel_tool_calls``: the request's own values; ``tools_exhausted``: ``max_tool_calls``
    is reached, so no tools are offered; ``options.reasoning_history``: whether the turn's reasoning goes back
    as ``reasoning_content`` (as for replayed history). ``body`` is not changed."""
    message = turn.message
    if "reasoning_content" in message and options.reasoning_history != "reasoning_content":
        message = {key: value for key, value in message.items() if key != "reasoning_content"}
    if message.get("content") is None and options.tool_call_content == "empty":
        message = dict(message, content="")
    messages = [*body["messages"], message]
    results = in_history_order(turn, results)
    if options.tool_result_role == "tool":
        messages += (tool_message(result) for result in results)
    else:
        names = {call["id"]: call["function"]["name"] for call in message.get("tool_calls") or ()}
        for result in results:
            append_tool_result(messages, result.call_id, names.get(result.call_id), result.content, options)
    follow_up = dict(body, messages=messages)
    if tools_exhausted:
        for key in ("tools", "tool_choice", "parallel_tool_calls"):
            follow_up.pop(key, None)
        return follow_up
    set_turn_tools(follow_up, tool_choice, parallel_tool_calls, plan, first=False)
    return follow_up


def in_history_order(turn: TurnResult, results: Sequence[ToolResult]) -> Sequence[ToolResult]:
    """The results in the order history will show them: those of calls whose items hold them (an MCP call, a
    search, the code) first, once the turn's calls are shown; then the others, whose outputs are items of their
    own after the turn's calls (a hosted shell's, a subagent's). One kind alone keeps the calls' order. A step's
    record keeps them so (run/tool_turns.py), for a resumed run's turn, rebuilt without its calls."""
    held = {call.call_id for call in turn.calls if call.item["type"] in ITEM_ID_CALLS}
    if not held or len(held) == len(results):
        return results
    return sorted(results, key=lambda result: result.call_id not in held)
