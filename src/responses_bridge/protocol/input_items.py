"""The ``input`` of a request as the one item shape the engine reads: strings and every item kind normalized
(messages, their parts, function calls and outputs, client tool items, reasoning), lenient about what real clients
omit (ids, ``type`` on messages) and exact about what cannot be read (a 400 naming the place).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import orjson

from .. import ids
from . import multi_agent_items, tool_items
from .additional_tools_items import normalize_additional_tools
from .configuration_items import normalize_configuration_update
from .errors import invalid_request
from .program_items import PROGRAM_KINDS, normalize_caller, normalize_program_item
from .request_checks import MESSAGE_ROLES, check_tool
from .tool_items import require_str as _require_str


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
    normalized = _normalize_kind(item, param)
    if "agent" in item:  # the multi-agent beta's author of the item, kept: another agent's items are not the model's
        agent = multi_agent_items.agent_field(item, param)
        if agent is not None:
            normalized["agent"] = agent
    return normalized


def _normalize_kind(item: dict[str, Any], param: str) -> dict[str, Any]:
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
    if kind == "additional_tools":  # offered from here on (engine/tools.py's loaded_tools)
        return normalize_additional_tools(item, param)
    if kind == "configuration_update":  # in effect for later turns (engine/configuration_updates.py)
        return normalize_configuration_update(item, param)
    if kind in PROGRAM_KINDS:  # programmatic tool calling's items, sent back (engine/programs.py)
        return normalize_program_item(item, param)
    if kind == "compaction":  # from POST /v1/responses/compact; its sealed summary is opened by the engine
        return {"type": "compaction", "id": _optional_id(item, param, lambda: ids.new_id("cmp")),
                "encrypted_content": _require_str(item, "encrypted_content", param)}
    if isinstance(kind, str) and kind in multi_agent_items.NORMALIZERS:  # the multi-agent beta: sent back as they came
        return multi_agent_items.NORMALIZERS[kind](item, param)
    if isinstance(kind, str) and (kind in tool_items.NORMALIZERS or kind == "custom_tool_call_output"):
        return _normalize_client_tool_item(kind, item, param)
    if kind is None:
        raise invalid_request(f"Missing required parameter: '{param}.type'.", param=f"{param}.type",
                              code="missing_required_parameter")
    raise invalid_request(
        f"Unsupported input item type '{kind}' at '{param}'. Supported: message, function_call, "
        "function_call_output, program, program_output, configuration_update, additional_tools, reasoning, "
        "compaction, "
        "compaction_trigger, custom_tool_call, "
        "custom_tool_call_output, shell_call, shell_call_output, local_shell_call, local_shell_call_output, "
        "computer_call, computer_call_output, "
        "apply_patch_call, apply_patch_call_output, "
        "tool_search_call, tool_search_output, mcp_call, mcp_list_tools, mcp_approval_request, "
        "mcp_approval_response, web_search_call, file_search_call, code_interpreter_call, image_generation_call.",
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
            check_tool(tool, f"{param}.tools[{index}]")
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
    caller = normalize_caller(item, param)
    if caller is not None:  # a call a program made: the program's, never shown to the model as its own
        normalized["caller"] = caller
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
    normalized: dict[str, Any] = {
        "type": "function_call_output",
        "id": _optional_id(item, param, ids.function_call_output_id),
        "call_id": _require_str(item, "call_id", param),
        "output": output,
        "status": "completed",
    }
    caller = normalize_caller(item, param)
    if caller is not None:
        normalized["caller"] = caller
    return normalized


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
