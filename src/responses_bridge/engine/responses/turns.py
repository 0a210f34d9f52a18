"""The tool loop's next upstream turn, as a pure function of the turn before it.

After a turn whose calls target server tools, the run calls them and asks the upstream again with the same
Chat Completions body plus the turn's assistant message (its text and *all* its tool calls, under their upstream
names and call ids) and one ``tool`` message per call result. Everything else (model, sampling parameters,
``parallel_tool_calls``, response format) is kept; ``tools`` are re-derived from the plan, so tools a server-side
tool search loaded are offered from this turn on.

The turn is shown as the next response's history will show it, so that response's prompt begins with this one
(a backend's prefix cache holds it; docs/upstreams.md, "Prefix caches"): a call whose item holds its result (an
MCP call, a search, the code) is answered before the turn's next call, which goes on a new assistant message.

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
    calls = message.get("tool_calls") or ()
    inline = turn.inline
    if inline and len(calls) > 1:  # as history will show them: each such call answered before the next
        messages = [*body["messages"]]
        _append_as_history(messages, message, calls, inline, results, options)
    else:
        messages = [*body["messages"], message]
        _append_results(messages, message, results, options)
    follow_up = dict(body, messages=messages)
    if tools_exhausted:
        for key in ("tools", "tool_choice", "parallel_tool_calls"):
            follow_up.pop(key, None)
        return follow_up
    set_turn_tools(follow_up, tool_choice, parallel_tool_calls, plan, first=False)
    return follow_up


def _append_results(messages: list[dict[str, Any]], message: dict[str, Any], results: Sequence[ToolResult],
                    options: EngineOptions) -> None:
    """The results after the turn's assistant ``message``: one ``tool`` message each, or the ``user`` turn(s) that
    name them (``tool_result_role``)."""
    if options.tool_result_role == "tool":
        messages += (tool_message(result) for result in results)
        return
    names = {call["id"]: call["function"]["name"] for call in message.get("tool_calls") or ()}
    for result in results:
        append_tool_result(messages, result.call_id, names.get(result.call_id), result.content, options)


def _append_as_history(messages: list[dict[str, Any]], message: dict[str, Any], calls: Sequence[dict[str, Any]],
                       inline: frozenset[str], results: Sequence[ToolResult], options: EngineOptions) -> None:
    """The turn as the next response's history will render it (request_translation.items_to_messages), so that
    its prompt repeats this one: stored output does not mark where a turn ended, and an item that holds a call
    and its result (``inline``: an MCP call, a search, the code) is replayed as its call answered at once. So the
    turn's calls go on its assistant message up to and including such a call, its result follows, and the calls
    after it go on a new assistant message; the other calls' results (their output items come after the calls)
    follow at the end, in order. The text and reasoning stay on the first message."""
    head = {key: value for key, value in message.items() if key != "tool_calls"}
    current: list[dict[str, Any]] = []
    head["tool_calls"] = current
    messages.append(head)
    by_id = {result.call_id: result for result in results}
    names = {call["id"]: call["function"]["name"] for call in calls}
    for call in calls:
        if messages[-1] is not head:  # a result came after the last call: the next call is a new message
            head = {"role": "assistant", "content": "" if options.tool_call_content == "empty" else None}
            head["tool_calls"] = current = []
            messages.append(head)
        current.append(call)
        result = by_id.pop(call["id"], None) if call["id"] in inline else None
        if result is not None:
            append_tool_result(messages, result.call_id, names.get(result.call_id), result.content, options)
    for result in results:
        if result.call_id in by_id:
            append_tool_result(messages, result.call_id, names.get(result.call_id), result.content, options)
