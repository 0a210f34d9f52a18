"""Which tools one turn's Chat Completions body offers, and the ``tool_choice`` it sends.

The request's tools are planned once (tools.py: namespaces flattened, client tools as functions, server
tools as the functions the loop runs); every turn then gets its ``tools``, ``tool_choice`` and
``parallel_tool_calls`` from that plan here: the first turn from the request (engine/responses/request_translation.py),
the tool loop's later turns from the same plan with the choice relaxed (engine/responses/turns.py).
"""

from __future__ import annotations

from typing import Any

from ...protocol.errors import invalid_request
from .builtin import WEB_SEARCH_TYPES
from .tools import ToolPlan


def set_turn_tools(body: dict[str, Any], tool_choice: Any, parallel_tool_calls: bool | None, plan: ToolPlan, *,
                   first: bool) -> None:
    """Set (or leave out) ``tools``, ``tool_choice`` and ``parallel_tool_calls`` of one turn's chat body.

    A forced choice (``required``, a named tool, a server tool: ``{"type": "mcp", "server_label"[, "name"]}``,
    ``{"type": "web_search"}``, ``{"type": "tool_search"}``) holds for the first turn only; the tool loop's
    later turns are ``auto``, so the model can answer after the forced call (``none`` stays ``none``). Forcing an
    MCP server without a tool name offers only that server's tools in the first turn, with ``required``."""
    tools = plan.functions  # namespaces flattened, client tools as functions, hosted tools dropped
    choice = tool_choice
    for key in ("tools", "tool_choice", "parallel_tool_calls"):
        body.pop(key, None)
    if isinstance(choice, dict) and choice.get("type") == "allowed_tools":
        allowed = {_choice_name(t, plan) for t in choice.get("tools") or [] if isinstance(t, dict)}
        tools = [tool for tool in tools if tool["name"] in allowed]
        choice = choice.get("mode") or "auto"
    if isinstance(choice, dict) and choice.get("type") in ("custom", "shell", "local_shell", "computer_use_preview",
                                                           "computer", "computer_use", "apply_patch"):
        choice = {"type": "function", "name": _choice_name(choice, plan)}
    if isinstance(choice, dict) and choice.get("type") in _SERVER_CHOICES:
        choice, only = _server_choice(choice, plan)
        if only is not None and first:
            tools = [tool for tool in tools if tool["name"] in only]
    if isinstance(choice, dict) and choice.get("type") not in ("function", "allowed_tools"):
        choice = "auto" if tools else None  # a dropped hosted tool's choice: let the model pick among the rest
    if not first and choice is not None and choice != "none":
        choice = "auto"
    if not tools:
        return  # an empty tools list (or tool_choice without tools) is rejected by OpenAI-compatible servers
    body["tools"] = [_chat_tool(tool) for tool in tools]
    if choice is not None:
        body["tool_choice"] = _chat_tool_choice(choice)
    if parallel_tool_calls is not None:
        body["parallel_tool_calls"] = parallel_tool_calls


_SERVER_CHOICES = frozenset({"mcp", "tool_search", "file_search", "code_interpreter", "image_generation",
                             "programmatic_tool_calling", *WEB_SEARCH_TYPES})


def _server_choice(choice: dict[str, Any], plan: ToolPlan) -> tuple[Any, set[str] | None]:
    """A server tool's ``tool_choice`` as (a chat choice, the only tools to offer with it or None). A server
    tool this plan does not offer leaves the choice to the model (``auto``), like a dropped hosted tool."""
    if choice["type"] == "mcp":
        label = choice.get("server_label")
        names = plan.server_names("mcp", label if isinstance(label, str) else None)
        if isinstance(choice.get("name"), str):
            names = [name for name in names if plan.targets[name].name == choice["name"]]
    elif choice["type"] == "tool_search":
        names = plan.server_names("server_tool_search")
    elif choice["type"] in ("file_search", "code_interpreter", "image_generation"):
        names = plan.server_names(choice["type"])
    elif choice["type"] == "programmatic_tool_calling":  # the model must write a program
        names = plan.server_names("program")
    else:
        names = plan.server_names("web_search")
    if len(names) == 1:
        return {"type": "function", "name": names[0]}, None
    if names:
        return "required", set(names)
    return "auto", None


def _choice_name(choice: dict[str, Any], plan: ToolPlan) -> str | None:
    """The upstream name a ``tool_choice`` (or an ``allowed_tools`` entry) names."""
    kind = choice.get("type")
    if kind in ("shell", "local_shell", "computer_use_preview", "computer", "apply_patch", "tool_search"):
        return plan.upstream_name(kind)
    if kind == "computer_use":  # the SDK's other name for the GA computer tool's choice
        return plan.upstream_name("computer")
    if kind == "custom":
        return plan.upstream_name("custom", choice.get("name"))
    return choice.get("name")


def _chat_tool(tool: dict[str, Any]) -> dict[str, Any]:
    function: dict[str, Any] = {"name": tool["name"]}
    if tool.get("description") is not None:
        function["description"] = tool["description"]
    function["parameters"] = tool.get("parameters") or {"type": "object", "properties": {}}
    if tool.get("strict") is not None:
        function["strict"] = tool["strict"]
    return {"type": "function", "function": function}


def _chat_tool_choice(choice: str | dict[str, Any]) -> str | dict[str, Any]:
    if isinstance(choice, str):
        if choice not in ("auto", "none", "required"):
            raise invalid_request(f"Invalid value for 'tool_choice': '{choice}'.", param="tool_choice")
        return choice
    if choice.get("type") == "function" and isinstance(choice.get("name"), str):
        return {"type": "function", "function": {"name": choice["name"]}}
    raise invalid_request("Invalid value for 'tool_choice': expected 'auto', 'none', 'required', "
                          "{'type': 'function', 'name': …} or {'type': 'allowed_tools', …}.", param="tool_choice")
