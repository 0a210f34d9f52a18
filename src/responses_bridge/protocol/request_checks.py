"""Checks on request values that a type alone does not catch, made before anything is stored or sent upstream.

Each one answers what OpenAI answers (a 400 naming the parameter) where the bridge would otherwise accept a
value and fail later: a JSON body nested too deep for the serializer that builds the upstream body, an
``include`` value or ``tool_choice`` type no API version knows, a NUL in the model name.
"""

from __future__ import annotations

from typing import Any

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


def check_model_name(model: str) -> None:
    """A model name goes into headers, logs and the upstream body: control characters are refused."""
    if any(ord(char) < 0x20 or char == "\x7f" for char in model):
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
