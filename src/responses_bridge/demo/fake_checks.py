"""The fake upstream's checks of a Chat Completions request, as OpenAI makes them: messages, their roles and
content parts, tool calls and their answers, tools, tool_choice, ranges, streaming and response formats."""

from __future__ import annotations

import re
from typing import Any

from .fake_errors import FakeError, _invalid_type, _invalid_value, _missing, _type_name
from .fake_text import _is_int, _is_number

_ROLES = ("system", "developer", "user", "assistant", "tool", "function")
_TOOL_NAME_RE = re.compile(r"^[a-zA-Z0-9_-]{1,64}$")
_RESPONSES_ONLY_FIELDS = (
    "input",
    "instructions",
    "previous_response_id",
    "max_output_tokens",
    "conversation",
    "truncation",
    "include",
)


def _check_part(part: Any, param: str, allowed: tuple[str, ...]) -> None:
    if not isinstance(part, dict):
        raise _invalid_type(param, "an object", part)
    kind = part.get("type")
    if kind not in allowed:
        supported = ", ".join(f"'{a}'" for a in allowed)
        raise FakeError(400, f"Invalid value: {kind!r}. Supported values are: {supported}.",
                        param=f"{param}.type", code="invalid_value")
    if kind in ("text", "refusal") and not isinstance(part.get(kind), str):
        raise _invalid_type(f"{param}.{kind}", "a string", part.get(kind))


def _check_content(msg: dict[str, Any], param: str, allowed: tuple[str, ...], *, required: bool) -> None:
    if "content" not in msg or msg["content"] is None:
        if required:
            raise _missing(f"{param}.content")
        return
    content = msg["content"]
    if isinstance(content, str):
        return
    if not isinstance(content, list):
        raise _invalid_type(f"{param}.content", "a string or an array", content)
    for j, part in enumerate(content):
        _check_part(part, f"{param}.content[{j}]", allowed)


def _check_tool_calls(calls: Any, param: str) -> list[str]:
    if not isinstance(calls, list):
        raise _invalid_type(param, "an array", calls)
    ids = []
    for j, call in enumerate(calls):
        where = f"{param}[{j}]"
        if not isinstance(call, dict):
            raise _invalid_type(where, "an object", call)
        if not isinstance(call.get("id"), str):
            raise _missing(f"{where}.id")
        fn = call.get("function")
        if not isinstance(fn, dict):
            raise _missing(f"{where}.function")
        if not isinstance(fn.get("name"), str):
            raise _missing(f"{where}.function.name")
        if not isinstance(fn.get("arguments"), str):
            raise _invalid_type(f"{where}.function.arguments", "a string", fn.get("arguments"))
        ids.append(call["id"])
    return ids


def _check_message(msg: Any, i: int) -> list[str]:
    """Validates one message; returns the tool call ids an assistant message opens."""
    param = f"messages[{i}]"
    if not isinstance(msg, dict):
        raise _invalid_type(param, "an object", msg)
    role = msg.get("role")
    if role is None:
        raise _missing(f"{param}.role")
    if role not in _ROLES:
        supported = ", ".join(f"'{r}'" for r in _ROLES)
        raise FakeError(400, f"Invalid value: {role!r}. Supported values are: {supported}.",
                        param=f"{param}.role", code="invalid_value")
    if role == "user":
        _check_content(msg, param, ("text", "image_url", "input_audio", "file"), required=True)
    elif role in ("system", "developer", "tool"):
        _check_content(msg, param, ("text",), required=True)
    elif role == "assistant":
        _check_content(msg, param, ("text", "refusal"), required=False)
    if role == "tool" and not isinstance(msg.get("tool_call_id"), str):
        raise _missing(f"{param}.tool_call_id")
    if role == "assistant" and msg.get("tool_calls") is not None:
        return _check_tool_calls(msg["tool_calls"], f"{param}.tool_calls")
    return []


def _unanswered(i: int, pending: list[str]) -> FakeError:
    return FakeError(
        400,
        "An assistant message with 'tool_calls' must be followed by tool messages responding to each "
        f"'tool_call_id'. The following tool_call_ids did not have response messages: {', '.join(pending)}",
        param=f"messages.[{i}].role",
    )


def _check_messages(messages: Any, *, pairing: bool = True) -> None:
    if messages is None:
        raise _missing("messages")
    if not isinstance(messages, list):
        raise _invalid_type("messages", "an array of objects", messages)
    if not messages:
        raise FakeError(400, "Invalid 'messages': empty array. Expected an array with minimum length 1, "
                        "but got an empty array instead.", param="messages", code="empty_array")
    pending: list[str] = []
    opener = 0
    for i, msg in enumerate(messages):
        opened = _check_message(msg, i)
        if not pairing:
            continue
        if msg["role"] == "tool":
            if msg["tool_call_id"] not in pending:
                raise FakeError(400, "Invalid parameter: messages with role 'tool' must be a response to a "
                                "preceeding message with 'tool_calls'.", param=f"messages.[{i}].role")
            pending.remove(msg["tool_call_id"])
            continue
        if pending:
            raise _unanswered(opener, pending)
        pending, opener = list(opened), i
    if pending:
        raise _unanswered(opener, pending)


def _check_tools(body: dict[str, Any]) -> list[dict[str, Any]]:
    tools = body.get("tools")
    if tools is None:
        for key in ("tool_choice", "parallel_tool_calls"):
            if body.get(key) is not None:
                raise _invalid_value(key, f"'{key}' is only allowed when 'tools' are specified.")
        return []
    if not isinstance(tools, list):
        raise _invalid_type("tools", "an array", tools)
    if not tools:
        raise FakeError(400, "Invalid 'tools': empty array. Expected an array with minimum length 1, but got an "
                        "empty array instead.", param="tools", code="empty_array")
    functions = []
    for i, tool in enumerate(tools):
        param = f"tools[{i}]"
        if not isinstance(tool, dict):
            raise _invalid_type(param, "an object", tool)
        if tool.get("type") != "function":
            raise FakeError(400, f"Invalid value: {tool.get('type')!r}. Supported values are: 'function'.",
                            param=f"{param}.type", code="invalid_value")
        fn = tool.get("function")
        if not isinstance(fn, dict):
            raise _missing(f"{param}.function")
        name = fn.get("name")
        if not isinstance(name, str):
            raise _missing(f"{param}.function.name")
        if not _TOOL_NAME_RE.match(name):
            raise FakeError(400, f"Invalid '{param}.function.name': string does not match pattern. Expected a "
                            "string that matches the pattern '^[a-zA-Z0-9_-]{1,64}$'.",
                            param=f"{param}.function.name", code="invalid_value")
        if fn.get("parameters") is not None and not isinstance(fn["parameters"], dict):
            raise _invalid_type(f"{param}.function.parameters", "an object", fn["parameters"])
        functions.append(fn)
    _check_tool_choice(body.get("tool_choice"), [fn["name"] for fn in functions])
    if body.get("parallel_tool_calls") is not None and not isinstance(body["parallel_tool_calls"], bool):
        raise _invalid_type("parallel_tool_calls", "a boolean", body["parallel_tool_calls"])
    return functions


def _check_tool_choice(choice: Any, names: list[str]) -> None:
    if choice is None or choice in ("none", "auto", "required"):
        return
    if isinstance(choice, str):
        raise _invalid_value("tool_choice", f"{choice!r}. Supported values are: 'none', 'auto' and 'required'.")
    if not isinstance(choice, dict) or choice.get("type") != "function":
        raise _invalid_value("tool_choice", "expected 'none', 'auto', 'required' or a function choice.")
    fn = choice.get("function")
    if not isinstance(fn, dict) or not isinstance(fn.get("name"), str):
        raise _missing("tool_choice.function.name")
    if fn["name"] not in names:
        raise _invalid_value("tool_choice", f"function {fn['name']!r} is not one of the 'tools'.")


def _check_range(body: dict[str, Any], name: str, low: float, high: float | None, *, integer: bool) -> None:
    value = body.get(name)
    if value is None:
        return
    if not (_is_int(value) if integer else _is_number(value)):
        raise _invalid_type(name, "an integer" if integer else "a number", value)
    if value < low:
        raise FakeError(400, f"Invalid '{name}': {'integer' if integer else 'decimal'} below minimum value. "
                        f"Expected a value >= {low}, but got {value} instead.", param=name,
                        code="integer_below_min_value" if integer else "decimal_below_min_value")
    if high is not None and value > high:
        raise FakeError(400, f"Invalid '{name}': {'integer' if integer else 'decimal'} above maximum value. "
                        f"Expected a value <= {high}, but got {value} instead.", param=name,
                        code="integer_above_max_value" if integer else "decimal_above_max_value")


def _check_streaming(body: dict[str, Any]) -> None:
    stream = body.get("stream")
    if stream is not None and not isinstance(stream, bool):
        raise _invalid_type("stream", "a boolean", stream)
    options = body.get("stream_options")
    if options is None:
        return
    if not stream:
        raise FakeError(400, "The 'stream_options' parameter is only allowed when 'stream' is enabled.",
                        param="stream_options", code="invalid_value")
    if not isinstance(options, dict):
        raise _invalid_type("stream_options", "an object", options)
    if options.get("include_usage") is not None and not isinstance(options["include_usage"], bool):
        raise _invalid_type("stream_options.include_usage", "a boolean", options["include_usage"])


def _check_response_format(fmt: Any) -> None:
    if fmt is None:
        return
    if not isinstance(fmt, dict):
        raise _invalid_type("response_format", "an object", fmt)
    kind = fmt.get("type")
    if kind not in ("text", "json_object", "json_schema"):
        raise FakeError(400, f"Invalid value: {kind!r}. Supported values are: 'text', 'json_object', and "
                        "'json_schema'.", param="response_format.type", code="invalid_value")
    if kind == "json_schema":
        schema = fmt.get("json_schema")
        if not isinstance(schema, dict):
            raise _missing("response_format.json_schema")
        if not isinstance(schema.get("name"), str):
            raise _missing("response_format.json_schema.name")


def _check_logprobs(body: dict[str, Any]) -> None:
    logprobs = body.get("logprobs")
    if logprobs is not None and not isinstance(logprobs, bool):
        raise _invalid_type("logprobs", "a boolean", logprobs)
    _check_range(body, "top_logprobs", 0, 20, integer=True)
    if body.get("top_logprobs") is not None and not logprobs:
        raise _invalid_value("top_logprobs", "'logprobs' must be set to true when 'top_logprobs' is used.")


def validate_chat_request(body: Any, *, pairing: bool = True) -> list[dict[str, Any]]:
    """Rejects what OpenAI rejects, with its messages; returns the offered functions. ``pairing``: check that
    tool calls and tool messages answer one another (llama.cpp does not)."""
    if not isinstance(body, dict):
        raise FakeError(400, f"Invalid type for request body: expected an object, but got {_type_name(body)} "
                        "instead.", code="invalid_type")
    model = body.get("model")
    if model is None or model == "":
        raise FakeError(400, "you must provide a model parameter", param="model", code="missing_required_parameter")
    if not isinstance(model, str):
        raise _invalid_type("model", "a string", model)
    for name in _RESPONSES_ONLY_FIELDS:
        if name in body:
            raise FakeError(400, f"Unrecognized request argument supplied: {name}", param=name,
                            code="unknown_parameter")
    _check_messages(body.get("messages"), pairing=pairing)
    functions = _check_tools(body)
    _check_streaming(body)
    _check_range(body, "max_tokens", 1, None, integer=True)
    _check_range(body, "max_completion_tokens", 1, None, integer=True)
    _check_range(body, "temperature", 0, 2, integer=False)
    _check_range(body, "top_p", 0, 1, integer=False)
    _check_range(body, "n", 1, None, integer=True)
    if body.get("n") not in (None, 1):
        raise _invalid_value("n", "the fake upstream only produces one choice (n=1).")
    _check_logprobs(body)
    _check_response_format(body.get("response_format"))
    return functions
