"""Checks on request values that a type alone does not catch, made before anything is stored or sent upstream.

Each one answers what OpenAI answers (a 400 naming the parameter) where the bridge would otherwise accept a
value and fail later: a JSON body nested too deep for the serializer that builds the upstream body, an
``include`` value or ``tool_choice`` type no API version knows, a NUL in the model name.
"""

from __future__ import annotations

import re
from typing import Any

from .. import ids
from .errors import invalid_request

MAX_JSON_DEPTH = 100
"""Deepest nesting of objects and arrays accepted in a request body. orjson refuses to serialise past 254
levels, and the bridge wraps what it forwards (a tool's ``parameters`` sits 4 levels down in a Chat Completions
body, a stored item a few levels down in its Response): 100 leaves that room and is far beyond any real JSON
schema or tool result."""

INCLUDABLE = frozenset({
    # the ``openai`` SDK's ResponseIncludable, plus older names still accepted by the API
    "file_search_call.results",
    "web_search_call.results",
    "web_search_call.action.sources",
    "message.input_image.image_url",
    "computer_call_output.output.image_url",
    "code_interpreter_call.outputs",
    "reasoning.encrypted_content",
    "message.output_text.logprobs",
})

TOOL_CHOICE_TYPES = frozenset({
    # shapes with their own fields, checked in request.py
    "function", "allowed_tools",
    # the tool names a client may force (the ``openai`` SDK's ToolChoice* types, and tool types of the API)
    "custom", "mcp", "shell", "local_shell", "apply_patch", "programmatic_tool_calling", "tool_search",
    "file_search", "web_search", "web_search_2025_08_26", "web_search_preview", "web_search_preview_2025_03_11",
    "computer", "computer_use", "computer_use_preview", "image_generation", "code_interpreter",
})


def item_id(item: dict[str, Any], param: str, prefix: str) -> str:
    """A replayed item's ``id`` as the client gave it (a string), or a new one with ``prefix`` when it gave none."""
    value = item.get("id")
    if value is None or value == "":
        return ids.new_id(prefix)
    if not isinstance(value, str):
        raise invalid_request(f"Invalid type for '{param}.id': expected a string.", param=f"{param}.id",
                              code="invalid_type")
    return value


def check_depth(value: Any, limit: int = MAX_JSON_DEPTH) -> None:
    """A 400 when ``value`` nests objects/arrays more than ``limit`` deep. Iterative (no recursion limit of its
    own) and visits each container once; strings and numbers cost one type check."""
    stack: list[tuple[Any, int]] = [(value, 1)]
    while stack:
        node, depth = stack.pop()
        if depth > limit:
            raise invalid_request(f"The request body nests objects and arrays more than {limit} levels deep.",
                                  code="nesting_too_deep")
        children = node.values() if isinstance(node, dict) else node
        for child in children:
            if isinstance(child, (dict, list)):
                stack.append((child, depth + 1))


def check_include(include: list[str] | None) -> None:
    for index, value in enumerate(include or ()):
        if value not in INCLUDABLE:
            raise invalid_request(f"Invalid value for 'include[{index}]': '{value[:100]}'. Supported values are: "
                                  f"{', '.join(sorted(INCLUDABLE))}.", param=f"include[{index}]")


def check_tool_choice_type(kind: str) -> None:
    if kind not in TOOL_CHOICE_TYPES:
        raise invalid_request(f"Invalid value for 'tool_choice.type': '{kind[:100]}'. Supported values are: "
                              f"{', '.join(sorted(TOOL_CHOICE_TYPES))}.", param="tool_choice.type")


_CONTROL_CHARACTER = re.compile("[\x00-\x1f\x7f]")
"""What a model name may not contain: one search in C, where a generator over its characters cost every request
~150 bytecodes."""


def check_model_name(model: str) -> None:
    """A model name goes into headers, logs and the upstream body: control characters are refused."""
    if _CONTROL_CHARACTER.search(model) is not None:
        raise invalid_request("Invalid value for 'model': it contains control characters.", param="model")


def check_call_outputs(history: list[dict[str, Any]], items: list[dict[str, Any]]) -> None:
    """Every ``function_call_output`` of the input answers a call made earlier in the history (chain or conversation) or
    in the input itself, as OpenAI requires; an output for a call nobody made is a 400 before anything is stored.
    Calls hidden in a compaction's summary cannot be seen, so once a ``compaction`` item has been met the outputs
    are not checked."""
    calls: set[str] = set()
    for index, item in enumerate((*history, *items)):
        kind = item.get("type")
        if kind == "compaction":
            return
        call_id = item.get("call_id")
        if not isinstance(call_id, str):
            continue
        if kind == "function_call_output":
            # only the request's own input is judged: a history stored earlier is what it is
            if call_id not in calls and index >= len(history):
                param = f"input[{index - len(history)}].call_id"
                raise invalid_request(f"No tool call found for function call output with call_id '{call_id[:100]}'.",
                                      param=param, code="invalid_value")
        elif not str(kind).endswith("_output"):
            calls.add(call_id)


MESSAGE_ROLES = frozenset({"user", "system", "developer", "assistant"})


INPUT_PART_TYPES = frozenset({"input_text", "input_image", "input_file", "output_text", "refusal"})


def check_tool(tool: dict[str, Any], param: str) -> None:
    kind = tool.get("type")
    if not isinstance(kind, str):
        raise invalid_request(f"Missing or invalid '{param}.type'.", param=f"{param}.type")
    if kind == "function":
        name = tool.get("name")
        if not isinstance(name, str) or not name:
            raise invalid_request(f"Missing required parameter: '{param}.name'.", param=f"{param}.name")
        parameters = tool.get("parameters")
        if parameters is not None and not isinstance(parameters, dict):
            raise invalid_request(f"'{param}.parameters' must be a JSON Schema object.", param=f"{param}.parameters")
        # echoed in every Response and sent upstream: a wrong type here would reach both
        if tool.get("description") is not None and not isinstance(tool["description"], str):
            raise invalid_request(f"Invalid type for '{param}.description': expected a string.",
                                  param=f"{param}.description", code="invalid_type")
        for key in ("strict", "defer_loading", "async"):  # echoed as sent (engine/responses/response_object.py)
            if tool.get(key) is not None and not isinstance(tool[key], bool):
                raise invalid_request(f"Invalid type for '{param}.{key}': expected a boolean.",
                                      param=f"{param}.{key}", code="invalid_type")
        if tool.get("output_schema") is not None and not isinstance(tool["output_schema"], dict):
            raise invalid_request(f"'{param}.output_schema' must be a JSON Schema object.",
                                  param=f"{param}.output_schema", code="invalid_type")
    elif kind == "namespace":  # a group of functions (Codex's MCP tools); see engine/tools/tools.py
        if not isinstance(tool.get("name"), str) or not tool["name"]:
            raise invalid_request(f"Missing required parameter: '{param}.name'.", param=f"{param}.name")
        inner = tool.get("tools")
        if not isinstance(inner, list):
            raise invalid_request(f"Invalid type for '{param}.tools': expected an array.", param=f"{param}.tools",
                                  code="invalid_type")
        for index, function in enumerate(inner):
            if not isinstance(function, dict):
                raise invalid_request(f"Invalid type for '{param}.tools[{index}]': expected an object.",
                                      param=f"{param}.tools[{index}]", code="invalid_type")
            check_tool({"type": "function", **function}, f"{param}.tools[{index}]")
    elif kind == "custom":
        _check_custom_tool(tool, param)
    elif kind == "computer_use_preview":  # the display size and environment are what the model is told
        for key in ("display_width", "display_height"):
            if type(tool.get(key)) is not int or tool[key] <= 0:
                raise invalid_request(f"Invalid value for '{param}.{key}': expected a positive integer.",
                                      param=f"{param}.{key}")
        if tool.get("environment") not in ("windows", "mac", "linux", "ubuntu", "browser"):
            raise invalid_request(f"Invalid value for '{param}.environment': expected one of windows, mac, linux, "
                                  "ubuntu, browser.", param=f"{param}.environment")
    elif kind == "tool_search":  # its description and parameters are what the model is offered
        if tool.get("description") is not None and not isinstance(tool["description"], str):
            raise invalid_request(f"Invalid type for '{param}.description': expected a string.",
                                  param=f"{param}.description", code="invalid_type")
        if tool.get("parameters") is not None and not isinstance(tool["parameters"], dict):
            raise invalid_request(f"'{param}.parameters' must be a JSON Schema object.", param=f"{param}.parameters")


def _check_custom_tool(tool: dict[str, Any], param: str) -> None:
    """A ``custom`` tool: a name, and a ``format`` that is text or a grammar (engine/tools/tools.py offers it)."""
    name = tool.get("name")
    if not isinstance(name, str) or not name:
        raise invalid_request(f"Missing required parameter: '{param}.name'.", param=f"{param}.name",
                              code="missing_required_parameter")
    if tool.get("description") is not None and not isinstance(tool["description"], str):
        raise invalid_request(f"Invalid type for '{param}.description': expected a string.",
                              param=f"{param}.description", code="invalid_type")
    fmt = tool.get("format")
    if fmt is None:
        return
    if not isinstance(fmt, dict) or fmt.get("type") not in ("text", "grammar"):
        raise invalid_request(f"Invalid value for '{param}.format': expected {{'type': 'text'}} or "
                              "{'type': 'grammar', 'syntax', 'definition'}.", param=f"{param}.format")
    if fmt["type"] == "grammar" and (fmt.get("syntax") not in ("lark", "regex")
                                     or not isinstance(fmt.get("definition"), str)):
        raise invalid_request(f"Invalid value for '{param}.format': a grammar needs 'syntax' ('lark' or "
                              "'regex') and a string 'definition'.", param=f"{param}.format")
