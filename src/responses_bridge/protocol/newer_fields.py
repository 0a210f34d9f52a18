"""The fields the ``openai`` SDK 3.57 added to a create request, each either honoured with its meaning or refused
with a 400 that names it — never accepted and dropped (the known-fields walk lets them through, as OpenAI defines
them, and the typed parameters would otherwise ignore them).

* ``allowed_callers`` on a tool: who may call it, the model (``direct``, the default) or a program written by the
  model (``programmatic``, engine/tools/programs.py). A tool that excludes ``direct`` is not offered to the model
  (engine/tools/tools.py); programs here call function tools and the server-side tools the loop runs, so
  ``programmatic`` on another tool (custom, apply_patch, a client shell, a namespace's functions) is refused.
  A ``programmatic_tool_calling`` tool the deployment cannot run is refused by engine/tools/tools.py, never dropped.
* ``background_options``: ``completion_window: soonest`` is what every background response gets here (it runs at
  once); the discounted ``2h`` / ``8h`` windows and a ``continuation_id`` (a priority among background requests)
  have no meaning on this bridge and are refused.
* ``search_content_types`` on a ``web_search_preview`` tool: the search providers the bridge runs return web pages
  (a title, a URL, a snippet), so ``["text"]`` is served and ``image`` refused, naming the field. (The tool's
  ``external_web_access: false`` is served as a cache-only search: run/tools/web_search_cache.py.)
* ``prompt_cache_breakpoint`` on an input content part: an explicit cache boundary that a Chat Completions
  backend cannot be given; refused, naming the part.

``additional_tools`` and ``configuration_update`` input items are read by the item parser
(protocol/tools/additional_tools_items.py, protocol/responses/configuration_items.py).
"""

from __future__ import annotations

from typing import Any

from .errors import invalid_request

CALLERS = ("direct", "programmatic")
PROGRAM_SERVER_TYPES = frozenset({"mcp", "file_search", "code_interpreter", "image_generation", "web_search",
                                  "web_search_2025_08_26", "web_search_preview", "web_search_preview_2025_03_11"})
"""The server-side tool types programs may call (and a ``shell`` with a container environment)."""


def check_newer_fields(raw: dict[str, Any]) -> None:
    """A 400 naming the first of these fields the bridge cannot honour; the rest are left for their meaning."""
    tools = raw.get("tools")
    if isinstance(tools, list):
        for index, tool in enumerate(tools):
            if isinstance(tool, dict):
                _check_tool(tool, f"tools[{index}]")
    _check_background_options(raw.get("background_options"))
    items = raw.get("input")
    if isinstance(items, list):
        for index, item in enumerate(items):
            if isinstance(item, dict) and isinstance(item.get("content"), list):
                _check_parts(item["content"], f"input[{index}].content")


def allows_direct(tool: Any) -> bool:
    """May the model call this tool itself? (``allowed_callers`` absent or null: yes, ``direct`` is the default.)"""
    callers = tool.get("allowed_callers") if isinstance(tool, dict) else None
    return not isinstance(callers, list) or "direct" in callers


def check_tool_callers(tool: dict[str, Any], param: str) -> None:
    """The ``allowed_callers`` of one tool (and of a namespace's functions): a 400 naming what cannot be honoured."""
    _check_tool(tool, param)


def _check_tool(tool: dict[str, Any], param: str) -> None:
    kind = tool.get("type")
    if not isinstance(kind, str):
        kind = None  # a type of another JSON kind is the tool check's 400, after this one
    _check_callers(tool.get("allowed_callers"), f"{param}.allowed_callers",
                   kind == "function" or kind in PROGRAM_SERVER_TYPES or (kind == "shell" and _hosted(tool)))
    access = tool.get("external_web_access")
    if access is not None and not isinstance(access, bool):  # false: a cache-only search, never a live one
        raise invalid_request(f"Invalid type for '{param}.external_web_access': expected a boolean.",
                              param=f"{param}.external_web_access", code="invalid_type")
    if kind in PROGRAM_SERVER_TYPES and tool.get("search_content_types") is not None:
        _check_content_types(tool["search_content_types"], f"{param}.search_content_types")
    if kind == "namespace" and isinstance(tool.get("tools"), list):
        for index, inner in enumerate(tool["tools"]):
            if isinstance(inner, dict):
                _check_callers(inner.get("allowed_callers"), f"{param}.tools[{index}].allowed_callers", False)


def _hosted(tool: dict[str, Any]) -> bool:
    environment = tool.get("environment")
    return isinstance(environment, dict) and environment.get("type") != "local"


def _check_callers(callers: Any, param: str, programs_may_call: bool) -> None:
    if callers is None:
        return
    if not isinstance(callers, list):
        raise invalid_request(f"Invalid type for '{param}': expected an array.", param=param, code="invalid_type")
    if not callers:
        raise invalid_request(f"Invalid value for '{param}': expected at least one caller.", param=param,
                              code="invalid_value")
    for index, caller in enumerate(callers):
        if caller not in CALLERS:
            raise invalid_request(f"Invalid value for '{param}[{index}]': expected 'direct' or 'programmatic'.",
                                  param=f"{param}[{index}]", code="invalid_value")
    if "programmatic" in callers and not programs_may_call:
        raise invalid_request(f"'{param}': programs call function tools and the bridge's own tools on this "
                              "deployment (not this tool's type, nor a namespace's functions).", param=param,
                              code="unsupported_value")


def _check_content_types(types: Any, param: str) -> None:
    if not isinstance(types, list):
        raise invalid_request(f"Invalid type for '{param}': expected an array.", param=param, code="invalid_type")
    if "image" in types:
        raise invalid_request(f"'{param}': 'image' results are not offered by this deployment's web search, whose "
                              "providers return web pages only; use ['text'] or leave it out.", param=param,
                              code="unsupported_value")


def _check_background_options(options: Any) -> None:
    if options is None:
        return
    if not isinstance(options, dict):
        raise invalid_request("Invalid type for 'background_options': expected an object.",
                              param="background_options", code="invalid_type")
    window = options.get("completion_window")
    if window not in (None, "soonest", "2h", "8h"):
        raise invalid_request("Invalid value for 'background_options.completion_window': expected 'soonest', '2h' "
                              "or '8h'.", param="background_options.completion_window", code="invalid_value")
    if window in ("2h", "8h"):
        raise invalid_request(
            f"'background_options.completion_window': '{window}' (discounted background execution) is not offered "
            "by this deployment; background responses run at once ('soonest').",
            param="background_options.completion_window", code="unsupported_value")
    if options.get("continuation_id") is not None:
        raise invalid_request(
            "'background_options.continuation_id' is not supported by this deployment: background requests are not "
            "prioritised among each other.", param="background_options.continuation_id",
            code="unsupported_parameter")


def _check_parts(parts: list[Any], param: str) -> None:
    for index, part in enumerate(parts):
        if isinstance(part, dict) and part.get("prompt_cache_breakpoint") is not None:
            where = f"{param}[{index}].prompt_cache_breakpoint"
            raise invalid_request(
                f"'{where}' is not supported by this deployment: a Chat Completions backend cannot be given an "
                "explicit prompt-cache boundary (its prefix cache, if any, is automatic).", param=where,
                code="unsupported_parameter")
