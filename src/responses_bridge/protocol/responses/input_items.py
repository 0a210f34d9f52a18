"""The ``input`` of a request as the one item shape the engine reads: strings and every item kind normalized
(messages, their parts, function calls and outputs, client tool items, reasoning), lenient about what real clients
omit (ids, ``type`` on messages) and exact about what cannot be read (a 400 naming the place).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import orjson

from ... import ids
from ..errors import invalid_request, invalid_type, missing_parameter
from ..request_checks import MESSAGE_ROLES, check_tool
from ..tools import multi_agent_items, tool_items
from ..tools.additional_tools_items import normalize_additional_tools
from ..tools.program_items import PROGRAM_KINDS, normalize_caller, normalize_program_item
from ..tools.tool_items import require_str as _require_str
from .configuration_items import normalize_configuration_update


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
        raise invalid_type(param, "an object")
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
    if kind == "item_reference" or (kind is None and "id" in item and len(item) == 1):  # an untyped {"id"} too
        # replaced by the item it names once the history is loaded (item_references.py)
        return {"type": "item_reference", "id": _require_str(item, "id", param)}
    if kind == "message":
        return _normalize_message(item, param)
    if kind == "function_call":
        return _normalize_function_call(item, param)
    if kind == "function_call_output":
        return _normalize_function_call_output(item, param)
    if kind == "reasoning":
        return _normalize_reasoning(item, param)
    if kind == "additional_tools":  # offered from here on (engine/tools/tools.py's loaded_tools)
        return normalize_additional_tools(item, param)
    if kind == "configuration_update":  # in effect for later turns (engine/configuration_updates.py)
        return normalize_configuration_update(item, param)
    if kind in PROGRAM_KINDS:  # programmatic tool calling's items, sent back (engine/tools/programs.py)
        return normalize_program_item(item, param)
    if kind == "compaction":  # from POST /v1/responses/compact; its sealed summary is opened by the engine
        return {"type": "compaction", "id": _optional_id(item, param, lambda: ids.new_id("cmp")),
                "encrypted_content": _require_str(item, "encrypted_content", param)}
    if isinstance(kind, str) and kind in multi_agent_items.NORMALIZERS:  # the multi-agent beta: sent back as they came
        return multi_agent_items.NORMALIZERS[kind](item, param)
    if isinstance(kind, str) and (kind in tool_items.NORMALIZERS or kind == "custom_tool_call_output"):
        return _normalize_client_tool_item(kind, item, param)
    if kind is None:
        raise missing_parameter(f"{param}.type")
    raise invalid_request(
        f"Unsupported input item type '{kind}' at '{param}'. Supported: message, function_call, "
        "function_call_output, program, program_output, configuration_update, additional_tools, reasoning, "
        "compaction, item_reference, "
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
    """Calls and outputs of custom, shell, apply_patch and tool_search tools (protocol/tools/tool_items.py)."""
    if kind == "custom_tool_call_output":
        normalized = _normalize_function_call_output(item, param)
        normalized["type"] = kind
        normalized["id"] = _optional_id(item, param, lambda: ids.new_id("ctco"))
        normalized["call_id"] = _require_str(item, "call_id", param)
        for key in ("status", "name", "namespace"):  # not fields of a custom tool's output
            normalized.pop(key, None)
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
        raise invalid_type(f"{param}.id", "a string")
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
        raise missing_parameter(f"{param}.content")
    else:
        raise invalid_type(f"{param}.content", "a string or an array")
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
        raise invalid_type(param, "an object")
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
        return _normalize_image(part, param)
    if kind == "input_file":
        return _normalize_file(part, param)
    if kind == "input_audio":
        return _normalize_audio(part, param)
    raise invalid_request(
        f"Unsupported content part type '{kind}' at '{param}'. Supported: input_text, output_text, refusal, "
        "input_image, input_file, input_audio.",
        param=f"{param}.type",
        code="unsupported_content_type",
    )


CALL_STATUSES = ("in_progress", "completed", "incomplete")
IMAGE_DETAILS = ("low", "high", "auto", "original")
FILE_DETAILS = ("low", "high", "auto")
AUDIO_FORMATS = ("mp3", "wav")


def _optional_str(part: dict[str, Any], key: str, param: str) -> str | None:
    value = part.get(key)
    if value is None:
        return None
    if not isinstance(value, str):
        raise invalid_type(f"{param}.{key}", "a string")
    return value


def _detail(part: dict[str, Any], param: str, allowed: tuple[str, ...]) -> str | None:
    """``detail`` as sent, or None when absent: a value OpenAI does not take is a 400 naming it, never quietly
    replaced by another."""
    detail = part.get("detail")
    if detail is None or detail in allowed:
        return detail
    raise invalid_request(f"Invalid value for '{param}.detail': {str(detail)[:100]!r}. Supported: "
                          f"{', '.join(allowed)}.", param=f"{param}.detail", code="invalid_value")


def _normalize_image(part: dict[str, Any], param: str) -> dict[str, Any]:
    """An image by URL (or data: URL), or by the id of one of the tenant's files (resolved by the run: the engine
    does no I/O; run/file_inputs.py)."""
    url = _optional_str(part, "image_url", param)
    file_id = _optional_str(part, "file_id", param)
    if not url and not file_id:
        raise invalid_request(f"'{param}' needs 'image_url' or 'file_id'.", param=f"{param}.image_url",
                              code="missing_required_parameter")
    if url and file_id:
        raise invalid_request(f"'{param}' takes one of 'image_url' and 'file_id', not both.",
                              param=f"{param}.file_id", code="invalid_value")
    normalized: dict[str, Any] = {"type": "input_image", "detail": _detail(part, param, IMAGE_DETAILS) or "auto"}
    if url:
        normalized["image_url"] = url
    else:
        normalized["file_id"] = file_id
    return normalized


def _normalize_file(part: dict[str, Any], param: str) -> dict[str, Any]:
    """A file sent inline (``file_data``), by data: URL (``file_url``), or by the id of one of the tenant's files
    (resolved by the run: run/file_inputs.py)."""
    normalized: dict[str, Any] = {"type": "input_file"}
    for key in ("filename", "file_data", "file_url", "file_id"):
        value = _optional_str(part, key, param)
        if value is not None:
            normalized[key] = value
    sources = [key for key in ("file_data", "file_url", "file_id") if key in normalized]
    if not sources:
        raise invalid_request(f"'{param}' needs one of 'file_id', 'file_data' or 'file_url'.", param=param,
                              code="missing_required_parameter")
    if len(sources) > 1:
        raise invalid_request(f"'{param}' takes one of 'file_id', 'file_data' and 'file_url', not "
                              f"{' and '.join(repr(key) for key in sources)}.", param=f"{param}.{sources[1]}",
                              code="invalid_value")
    detail = _detail(part, param, FILE_DETAILS)
    if detail is not None:
        normalized["detail"] = detail
    return normalized


def _normalize_audio(part: dict[str, Any], param: str) -> dict[str, Any]:
    audio = part.get("input_audio")
    if not isinstance(audio, dict):
        raise missing_parameter(f"{param}.input_audio")
    where = f"{param}.input_audio"
    data = _require_str(audio, "data", where)
    audio_format = audio.get("format")
    if audio_format not in AUDIO_FORMATS:
        raise invalid_request(f"Invalid value for '{where}.format': {str(audio_format)[:100]!r}. Supported: mp3, "
                              "wav.", param=f"{where}.format", code="invalid_value")
    return {"type": "input_audio", "input_audio": {"data": data, "format": audio_format}}


def _normalize_function_call(item: dict[str, Any], param: str) -> dict[str, Any]:
    arguments = item.get("arguments", "")
    if isinstance(arguments, (dict, list)):
        arguments = orjson.dumps(arguments).decode()
    elif not isinstance(arguments, str):
        raise invalid_type(f"{param}.arguments", "a string")
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
    run_async = item.get("async")
    if run_async is not None:  # the client runs the call asynchronously: kept, listed and sent back as it came
        if not isinstance(run_async, bool):
            raise invalid_type(f"{param}.async", "a boolean")
        normalized["async"] = run_async
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
        raise missing_parameter(f"{param}.output")
    status = item.get("status")
    if status is not None and status not in CALL_STATUSES:
        raise invalid_request(f"Invalid value for '{param}.status': {str(status)[:100]!r}. Supported: "
                              f"{', '.join(CALL_STATUSES)}.", param=f"{param}.status", code="invalid_value")
    normalized: dict[str, Any] = {
        "type": "function_call_output",
        "id": _optional_id(item, param, ids.function_call_output_id),
        "output": output,
        "status": status or "completed",
    }
    # call_id is optional since SDK 3.5: an output without one answers the first open call of its name
    # (protocol/tools/call_outputs.py pairs it once the history is known)
    call_id = _optional_str(item, "call_id", param)
    if call_id is not None:
        normalized["call_id"] = call_id
    for key in ("name", "namespace"):  # the tool that produced it: stored and listed as sent
        value = _optional_str(item, key, param)
        if value is not None:
            normalized[key] = value
    caller = normalize_caller(item, param)
    if caller is not None:
        normalized["caller"] = caller
    return normalized


def _normalize_reasoning(item: dict[str, Any], param: str) -> dict[str, Any]:
    summary = item.get("summary") or []
    if not isinstance(summary, list):
        raise invalid_type(f"{param}.summary", "an array")
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


def messages_only(*item_lists: list[dict[str, Any]]) -> bool:
    """Are these items all messages? Most requests' are (one message of input): then the passes that look for
    other items (references, call outputs, a program's calls, ``configuration_update``) are skipped, and a request
    that uses none of those features pays one look at each item's type for all of them."""
    for items in item_lists:
        for item in items:
            if item.get("type") != "message":
                return False
    return True
