"""Parsing of ``POST /v1/responses`` bodies.

Real clients send more than the spec: missing item ids, messages without ``type``, ``phase`` on assistant
messages, fields from newer API versions. The parser is lenient about all of that and exact about what it
cannot honour: a wrong type or an unknown item type is a 400 that names the offending ``param``.

Top-level fields go through one pydantic model (strict types, unknown fields ignored); input items are
normalised by hand, because their leniency rules (a ``role`` implies a message, ids are optional) do not fit a
discriminated union, and because the normalised form is what gets stored and listed by ``input_items``.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Literal

import orjson
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from .. import ids
from . import tool_items
from .errors import APIError, invalid_request
from .request_checks import check_depth, check_include, check_model_name, check_tool_choice_type
from .tool_items import require_str as _require_str

MESSAGE_ROLES = frozenset({"user", "system", "developer", "assistant"})
INPUT_PART_TYPES = frozenset({"input_text", "input_image", "input_file", "output_text", "refusal"})


class _Reasoning(BaseModel):
    model_config = ConfigDict(extra="ignore", strict=True)
    effort: str | None = None
    summary: str | None = None
    generate_summary: str | None = None


class _Text(BaseModel):
    model_config = ConfigDict(extra="ignore", strict=True)
    format: dict[str, Any] | None = None
    verbosity: Literal["low", "medium", "high"] | None = None  # forwarded as Chat Completions' ``verbosity``


class CreateParams(BaseModel):
    """Top-level fields of a create request, with the types the API documents."""

    model_config = ConfigDict(extra="ignore", strict=True)

    model: str | None = None
    input: str | list[Any] | None = None
    instructions: str | None = None
    stream: bool = False
    store: bool = True
    background: bool = False
    previous_response_id: str | None = None
    conversation: str | dict[str, Any] | None = None
    prompt: dict[str, Any] | None = None
    tools: list[dict[str, Any]] | None = None
    tool_choice: str | dict[str, Any] | None = None
    parallel_tool_calls: bool | None = None
    temperature: float | None = Field(default=None, ge=0, le=2)
    top_p: float | None = Field(default=None, ge=0, le=1)
    presence_penalty: float | None = Field(default=None, ge=-2, le=2)
    frequency_penalty: float | None = Field(default=None, ge=-2, le=2)
    top_logprobs: int | None = Field(default=None, ge=0, le=20)
    max_output_tokens: int | None = Field(default=None, ge=1)
    max_tool_calls: int | None = Field(default=None, ge=0)
    text: _Text | None = None
    reasoning: _Reasoning | None = None
    metadata: dict[str, str] | None = None
    include: list[str] | None = None
    truncation: Literal["auto", "disabled"] | None = None
    service_tier: str | None = None
    safety_identifier: str | None = None
    prompt_cache_key: str | None = None
    user: str | None = None
    seed: int | None = None
    stop: str | list[str] | None = None
    stream_options: dict[str, Any] | None = None

    @field_validator("stream", "store", "background", mode="before")
    @classmethod
    def _null_is_default(cls, value: Any, info: Any) -> Any:
        # The spec makes these nullable (clients that serialise every field send null): null means the default.
        return cls.model_fields[info.field_name].default if value is None else value


@dataclass(slots=True)
class ResponsesRequest:
    """A parsed create request: the validated parameters plus the normalised input items."""

    params: CreateParams
    input_items: list[dict[str, Any]] = field(default_factory=list)

    @property
    def model(self) -> str:
        return self.params.model or ""

    @property
    def approval_responses(self) -> dict[str, dict[str, Any]]:
        """The input's ``mcp_approval_response`` items by ``approval_request_id``: the tool loop runs (``approve``)
        or skips the approved or refused MCP calls before the model's next turn."""
        return tool_items.approval_responses(self.input_items)


def parse_json_object(body: bytes) -> dict[str, Any]:
    """A request body that must be a JSON object; anything else is a 400, never an exception of another kind."""
    try:
        raw = orjson.loads(body)
    except orjson.JSONDecodeError as exc:
        raise invalid_request(f"The request body is not valid JSON: {exc}", code="invalid_json") from None
    if not isinstance(raw, dict):
        raise invalid_request("The request body must be a JSON object.", code="invalid_type")
    check_depth(raw)  # every route's body: what is accepted here can be serialised again
    return raw


def parse_request(body: bytes) -> ResponsesRequest:
    """Parse and validate a request body; every failure is an :class:`APIError` with status 400."""
    return parse_request_object(parse_json_object(body))


def parse_request_object(raw: dict[str, Any]) -> ResponsesRequest:
    try:
        params = CreateParams.model_validate(raw)
    except ValidationError as exc:
        raise _validation_error(exc) from None
    if not params.model:
        raise invalid_request("Missing required parameter: 'model'.", param="model", code="missing_required_parameter")
    check_model_name(params.model)
    check_include(params.include)
    _check_metadata(params.metadata)
    _check_conversation_and_prompt(params)
    items = normalize_input(params.input)
    if params.tools is not None:
        for index, tool in enumerate(params.tools):
            _check_tool(tool, f"tools[{index}]")
    if params.tool_choice is not None:
        _check_tool_choice(params.tool_choice)
    return ResponsesRequest(params=params, input_items=items)


def _validation_error(exc: ValidationError) -> APIError:
    first = exc.errors(include_url=False)[0]
    param = _loc_to_param(first.get("loc", ()))
    message = first.get("msg", "Invalid value")
    kind = first.get("type", "")
    code = ("invalid_type" if kind.endswith("_type") or kind in {"model_attributes_type", "dict_type"}
            else "invalid_value")
    return invalid_request(f"Invalid value for '{param}': {message}.", param=param, code=code)


def _loc_to_param(loc: tuple[Any, ...]) -> str:
    parts: list[str] = []
    for piece in loc:
        if isinstance(piece, int):
            parts.append(f"[{piece}]")
        elif piece in {"str", "list[any]", "dict[str,any]", "function-after[...]"}:
            continue  # pydantic names union branches in the location; clients know only the field
        else:
            parts.append(("." if parts else "") + str(piece))
    return "".join(parts)


def _check_conversation_and_prompt(params: CreateParams) -> None:
    """Shapes only; the conversation / prompt themselves are looked up by the engine."""
    conversation = params.conversation
    if isinstance(conversation, dict) and (not isinstance(conversation.get("id"), str) or not conversation["id"]):
        raise invalid_request("Missing required parameter: 'conversation.id'.", param="conversation.id",
                              code="missing_required_parameter")
    if isinstance(conversation, str) and not conversation:
        raise invalid_request("Invalid value for 'conversation': empty id.", param="conversation")
    prompt = params.prompt
    if prompt is None:
        return
    if not isinstance(prompt.get("id"), str) or not prompt["id"]:
        raise invalid_request("Missing required parameter: 'prompt.id'.", param="prompt.id",
                              code="missing_required_parameter")
    if prompt.get("version") is not None and not isinstance(prompt["version"], str):
        raise invalid_request("Invalid type for 'prompt.version': expected a string.", param="prompt.version",
                              code="invalid_type")
    variables = prompt.get("variables")
    if variables is not None and not isinstance(variables, dict):
        raise invalid_request("Invalid type for 'prompt.variables': expected an object.", param="prompt.variables",
                              code="invalid_type")


def check_metadata(metadata: Any, param: str = "metadata") -> None:
    """``metadata`` of any object: at most 16 string keys of <= 64 characters, string values of <= 512."""
    if metadata is None:
        return
    if not isinstance(metadata, dict) or not all(isinstance(v, str) for v in metadata.values()):
        raise invalid_request(f"Invalid type for '{param}': expected an object of strings.", param=param,
                              code="invalid_type")
    _check_metadata(metadata)


def _check_metadata(metadata: dict[str, str] | None) -> None:
    if metadata is None:
        return
    if len(metadata) > 16:
        raise invalid_request("'metadata' may have at most 16 keys.", param="metadata")
    for key, value in metadata.items():
        if len(key) > 64:
            raise invalid_request(f"metadata key '{key[:70]}' is longer than 64 characters.", param="metadata")
        if len(value) > 512:
            raise invalid_request(f"metadata value for '{key}' is longer than 512 characters.", param="metadata")


def _check_tool(tool: dict[str, Any], param: str) -> None:
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
        if tool.get("strict") is not None and not isinstance(tool["strict"], bool):
            raise invalid_request(f"Invalid type for '{param}.strict': expected a boolean.",
                                  param=f"{param}.strict", code="invalid_type")
    elif kind == "namespace":  # a group of functions (Codex's MCP tools); see engine/tools.py
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
            _check_tool({"type": "function", **function}, f"{param}.tools[{index}]")
    elif kind == "custom":
        _check_custom_tool(tool, param)
    elif kind == "tool_search":  # its description and parameters are what the model is offered
        if tool.get("description") is not None and not isinstance(tool["description"], str):
            raise invalid_request(f"Invalid type for '{param}.description': expected a string.",
                                  param=f"{param}.description", code="invalid_type")
        if tool.get("parameters") is not None and not isinstance(tool["parameters"], dict):
            raise invalid_request(f"'{param}.parameters' must be a JSON Schema object.", param=f"{param}.parameters")


def _check_custom_tool(tool: dict[str, Any], param: str) -> None:
    """A ``custom`` tool: a name, and a ``format`` that is text or a grammar (engine/tools.py offers it)."""
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


def _check_tool_choice(choice: str | dict[str, Any]) -> None:
    """``tool_choice`` is echoed in the Response even when there are no tools, so it is checked here."""
    if isinstance(choice, str):
        if choice not in ("auto", "none", "required"):
            raise invalid_request(f"Invalid value for 'tool_choice': '{choice[:100]}'. Supported: 'auto', 'none', "
                                  "'required' or an object.", param="tool_choice")
        return
    kind = choice.get("type")
    if kind in ("function", "custom"):
        if not isinstance(choice.get("name"), str) or not choice["name"]:
            raise invalid_request("Missing required parameter: 'tool_choice.name'.", param="tool_choice.name",
                                  code="missing_required_parameter")
    elif kind == "allowed_tools":
        if choice.get("mode") not in (None, "auto", "required", "none"):
            raise invalid_request("Invalid value for 'tool_choice.mode': expected 'auto', 'required' or 'none'.",
                                  param="tool_choice.mode")
        tools = choice.get("tools")
        if not isinstance(tools, list):
            raise invalid_request("Invalid type for 'tool_choice.tools': expected an array.",
                                  param="tool_choice.tools", code="invalid_type")
        for index, tool in enumerate(tools):
            if isinstance(tool, dict) and tool.get("type") in ("shell", "apply_patch", "tool_search"):
                continue  # tools without a name of their own
            if not isinstance(tool, dict) or not isinstance(tool.get("name"), str):
                raise invalid_request(f"Invalid value for 'tool_choice.tools[{index}]': expected "
                                      "{'type': 'function', 'name': …}.", param=f"tool_choice.tools[{index}]")
    elif isinstance(kind, str):
        check_tool_choice_type(kind)  # a hosted tool's choice: dropped or refused with its tool (engine/tools.py)
    else:
        raise invalid_request("Missing required parameter: 'tool_choice.type'.", param="tool_choice.type",
                              code="missing_required_parameter")


# --- input items -------------------------------------------------------------------------------------------------


def normalize_input(value: str | list[Any] | None) -> list[dict[str, Any]]:
    """Turn ``input`` into the list of items the bridge stores and translates."""
    if value is None:
        return []
    if isinstance(value, str):
        return [_message(ids.message_id(), "user", [{"type": "input_text", "text": value}])]
    return [_normalize_item(item, f"input[{index}]") for index, item in enumerate(value)]


def _message(item_id: str, role: str, content: list[dict[str, Any]], phase: str | None = None) -> dict[str, Any]:
    item = {"type": "message", "id": item_id, "status": "completed", "role": role, "content": content}
    if phase is not None:
        item["phase"] = phase
    return item


def _normalize_item(item: Any, param: str) -> dict[str, Any]:
    if not isinstance(item, dict):
        raise invalid_request(f"Invalid type for '{param}': expected an object.", param=param, code="invalid_type")
    kind = item.get("type")
    if kind is None and "role" in item:
        kind = "message"
    if kind == "message":
        return _normalize_message(item, param)
    if kind == "function_call":
        return _normalize_function_call(item, param)
    if kind == "function_call_output":
        return _normalize_function_call_output(item, param)
    if kind == "reasoning":
        return _normalize_reasoning(item, param)
    if kind == "compaction":  # from POST /v1/responses/compact; its sealed summary is opened by the engine
        return {"type": "compaction", "id": _optional_id(item, param, lambda: ids.new_id("cmp")),
                "encrypted_content": _require_str(item, "encrypted_content", param)}
    if isinstance(kind, str) and (kind in tool_items.NORMALIZERS or kind == "custom_tool_call_output"):
        return _normalize_client_tool_item(kind, item, param)
    if kind is None:
        raise invalid_request(f"Missing required parameter: '{param}.type'.", param=f"{param}.type",
                              code="missing_required_parameter")
    raise invalid_request(
        f"Unsupported input item type '{kind}' at '{param}'. Supported: message, function_call, "
        "function_call_output, reasoning, compaction, compaction_trigger, custom_tool_call, "
        "custom_tool_call_output, shell_call, shell_call_output, apply_patch_call, apply_patch_call_output, "
        "tool_search_call, tool_search_output, mcp_call, mcp_list_tools, mcp_approval_request, "
        "mcp_approval_response, web_search_call, file_search_call.",
        param=f"{param}.type",
        code="unsupported_item_type",
    )


def _normalize_client_tool_item(kind: str, item: dict[str, Any], param: str) -> dict[str, Any]:
    """Calls and outputs of custom, shell, apply_patch and tool_search tools (protocol/tool_items.py)."""
    if kind == "custom_tool_call_output":
        normalized = _normalize_function_call_output(item, param)
        normalized["type"] = kind
        normalized["id"] = _optional_id(item, param, lambda: ids.new_id("ctco"))
        del normalized["status"]
        return normalized
    normalized = tool_items.NORMALIZERS[kind](item, param)
    if kind == "tool_search_output":  # the tools it returns are offered to the model: same checks as 'tools'
        for index, tool in enumerate(normalized["tools"]):
            _check_tool(tool, f"{param}.tools[{index}]")
    return normalized


def _optional_id(item: dict[str, Any], param: str, make: Callable[[], str]) -> str:
    value = item.get("id")
    if value is None or value == "":
        return make()
    if not isinstance(value, str):
        raise invalid_request(f"Invalid type for '{param}.id': expected a string.", param=f"{param}.id",
                              code="invalid_type")
    return value


def _normalize_message(item: dict[str, Any], param: str) -> dict[str, Any]:
    role = _require_str(item, "role", param)
    if role not in MESSAGE_ROLES:
        raise invalid_request(
            f"Invalid value for '{param}.role': '{role}'. Supported: assistant, developer, system, user.",
            param=f"{param}.role",
        )
    content = item.get("content")
    text_type = "output_text" if role == "assistant" else "input_text"
    if isinstance(content, str):
        parts = [_text_part(text_type, content)]
    elif isinstance(content, list):
        parts = [_normalize_part(part, f"{param}.content[{i}]", role) for i, part in enumerate(content)]
    elif content is None:
        raise invalid_request(f"Missing required parameter: '{param}.content'.", param=f"{param}.content",
                              code="missing_required_parameter")
    else:
        raise invalid_request(f"Invalid type for '{param}.content': expected a string or an array.",
                              param=f"{param}.content", code="invalid_type")
    phase = item.get("phase")
    return _message(_optional_id(item, param, ids.message_id), role, parts,
                    phase if isinstance(phase, str) else None)


def _text_part(kind: str, text: str) -> dict[str, Any]:
    if kind == "output_text":
        return {"type": "output_text", "text": text, "annotations": []}
    return {"type": kind, "text": text}


def _normalize_part(part: Any, param: str, role: str) -> dict[str, Any]:
    if isinstance(part, str):
        return _text_part("output_text" if role == "assistant" else "input_text", part)
    if not isinstance(part, dict):
        raise invalid_request(f"Invalid type for '{param}': expected an object.", param=param, code="invalid_type")
    kind = part.get("type")
    if kind in ("input_text", "output_text", "text"):  # tuples: ``kind`` may be any JSON value, even a list
        text = _require_str(part, "text", param)
        if kind == "text":
            kind = "output_text" if role == "assistant" else "input_text"
        normalized = _text_part(kind, text)
        if kind == "output_text" and isinstance(part.get("annotations"), list):
            normalized["annotations"] = part["annotations"]
        return normalized
    if kind == "refusal":
        return {"type": "refusal", "refusal": _require_str(part, "refusal", param)}
    if kind == "input_image":
        url = part.get("image_url")
        if not isinstance(url, str) or not url:
            if part.get("file_id"):
                raise invalid_request(f"'{param}.file_id' is not supported here: send 'image_url' (an URL or a "
                                      "data: URL).", param=f"{param}.file_id", code="unsupported_parameter")
            raise invalid_request(f"Missing required parameter: '{param}.image_url'.", param=f"{param}.image_url",
                                  code="missing_required_parameter")
        detail = part.get("detail") if part.get("detail") in ("low", "high", "auto") else "auto"
        return {"type": "input_image", "image_url": url, "detail": detail}
    if kind == "input_file":
        normalized = {"type": "input_file"}
        for key in ("filename", "file_data", "file_url"):
            value = part.get(key)
            if value is not None:
                if not isinstance(value, str):
                    raise invalid_request(f"Invalid type for '{param}.{key}': expected a string.",
                                          param=f"{param}.{key}", code="invalid_type")
                normalized[key] = value
        if "file_data" not in normalized and "file_url" not in normalized:
            raise invalid_request(f"'{param}' needs 'file_data' or 'file_url'.", param=param,
                                  code="missing_required_parameter")
        return normalized
    raise invalid_request(
        f"Unsupported content part type '{kind}' at '{param}'. Supported: input_text, output_text, refusal, "
        "input_image, input_file.",
        param=f"{param}.type",
        code="unsupported_content_type",
    )


def _normalize_function_call(item: dict[str, Any], param: str) -> dict[str, Any]:
    arguments = item.get("arguments", "")
    if isinstance(arguments, (dict, list)):
        arguments = orjson.dumps(arguments).decode()
    elif not isinstance(arguments, str):
        raise invalid_request(f"Invalid type for '{param}.arguments': expected a string.",
                              param=f"{param}.arguments", code="invalid_type")
    normalized = {
        "type": "function_call",
        "id": _optional_id(item, param, ids.function_call_id),
        "call_id": _require_str(item, "call_id", param),
        "name": _require_str(item, "name", param),
        "arguments": arguments,
        "status": item.get("status") if item.get("status") in ("in_progress", "completed", "incomplete")
        else "completed",
    }
    if isinstance(item.get("namespace"), str):
        normalized["namespace"] = item["namespace"]
    return normalized


def _normalize_function_call_output(item: dict[str, Any], param: str) -> dict[str, Any]:
    output = item.get("output")
    if isinstance(output, list):
        output = [_normalize_part(part, f"{param}.output[{i}]", "user") for i, part in enumerate(output)]
    elif isinstance(output, (dict, int, float, bool)):
        output = orjson.dumps(output).decode()  # lenient: some clients send the tool's JSON result unserialised
    elif not isinstance(output, str):
        raise invalid_request(f"Missing required parameter: '{param}.output'.", param=f"{param}.output",
                              code="missing_required_parameter")
    return {
        "type": "function_call_output",
        "id": _optional_id(item, param, ids.function_call_output_id),
        "call_id": _require_str(item, "call_id", param),
        "output": output,
        "status": "completed",
    }


def _normalize_reasoning(item: dict[str, Any], param: str) -> dict[str, Any]:
    summary = item.get("summary") or []
    if not isinstance(summary, list):
        raise invalid_request(f"Invalid type for '{param}.summary': expected an array.", param=f"{param}.summary",
                              code="invalid_type")
    normalized: dict[str, Any] = {
        "type": "reasoning",
        "id": _optional_id(item, param, ids.reasoning_id),
        "summary": [_reasoning_text(p, "summary_text", f"{param}.summary[{i}]") for i, p in enumerate(summary)],
    }
    content = item.get("content")
    if isinstance(content, list):
        normalized["content"] = [_reasoning_text(p, "reasoning_text", f"{param}.content[{i}]")
                                 for i, p in enumerate(content)]
    if isinstance(item.get("encrypted_content"), str):
        normalized["encrypted_content"] = item["encrypted_content"]
    return normalized


def _reasoning_text(part: Any, kind: str, param: str) -> dict[str, Any]:
    if isinstance(part, dict) and isinstance(part.get("text"), str):
        return {"type": part["type"] if isinstance(part.get("type"), str) and part["type"] else kind,
                "text": part["text"]}
    raise invalid_request(f"Invalid value for '{param}': expected an object with 'text'.", param=param,
                          code="invalid_type")
