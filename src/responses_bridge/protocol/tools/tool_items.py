"""Input items of the client-executed tools besides functions: their calls and their outputs.

``custom_tool_call`` / ``custom_tool_call_output``, ``shell_call`` / ``shell_call_output``, ``local_shell_call`` /
``local_shell_call_output``, ``apply_patch_call`` /
``apply_patch_call_output``, ``tool_search_call`` / ``tool_search_output`` (shapes of the ``openai`` SDK's
``ResponseInputItemParam``), Codex's ``compaction_trigger``, and the items of the server-side tool loop
(``mcp_call``, ``mcp_list_tools``, ``mcp_approval_request``, ``mcp_approval_response``, ``web_search_call``,
``file_search_call``, ``code_interpreter_call``, ``image_generation_call``).
Each is normalised to the shape the bridge emits for it, so a stored item, an echoed item and a replayed item look
the same; the engine turns them into chat tool calls and tool messages (engine/responses/request_translation.py).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import orjson

from ..errors import invalid_request, invalid_type, missing_parameter, objects_in
from ..request_checks import item_id
from .computer_items import computer_call, computer_call_output

_CALL_STATUSES = ("in_progress", "completed", "incomplete")
_PATCH_OPERATIONS = ("create_file", "update_file", "delete_file")


def require_str(item: dict[str, Any], key: str, param: str) -> str:
    """A required string field: a 400 naming ``param.key`` when it is missing or not a string."""
    value = item.get(key)
    if not isinstance(value, str):
        if value is None:
            raise missing_parameter(f"{param}.{key}")
        raise invalid_type(f"{param}.{key}", "a string")
    return value


def _str(item: dict[str, Any], key: str, param: str, *, required: bool = True) -> str | None:
    if not required and item.get(key) is None:
        return None
    return require_str(item, key, param)


def _objects_or_none(item: dict[str, Any], key: str, param: str) -> list[dict[str, Any]] | None:
    """An optional array of objects (a call's ``results`` or ``outputs``): a 400 naming ``param.key`` otherwise."""
    value: list[dict[str, Any]] | None = item.get(key)
    if value is not None and (not isinstance(value, list) or not all(isinstance(entry, dict) for entry in value)):
        raise invalid_request(f"Invalid '{param}.{key}': expected an array of objects or null.",
                              param=f"{param}.{key}")
    return value


def _int(value: Any, param: str) -> int | None:
    if value is None:
        return None
    if type(value) is not int:
        raise invalid_type(param, "an integer")
    return value



def _action(item: dict[str, Any], param: str) -> dict[str, Any]:
    """A shell call's required ``action`` object."""
    action = item.get("action")
    if not isinstance(action, dict):
        raise missing_parameter(f"{param}.action")
    return action


def _status(item: dict[str, Any], allowed: tuple[str, ...] = _CALL_STATUSES, default: str = "completed") -> str:
    status = item.get("status")
    return status if status in allowed else default


def custom_tool_call(item: dict[str, Any], param: str) -> dict[str, Any]:
    normalized: dict[str, Any] = {"type": "custom_tool_call", "id": item_id(item, param, "ctc"),
                                  "call_id": _str(item, "call_id", param), "name": _str(item, "name", param),
                                  "input": _str(item, "input", param)}
    namespace = _str(item, "namespace", param, required=False)
    if namespace:
        normalized["namespace"] = namespace
    return normalized


def shell_call(item: dict[str, Any], param: str) -> dict[str, Any]:
    action = _action(item, param)
    commands = action.get("commands")
    if not isinstance(commands, list) or not all(isinstance(command, str) for command in commands):
        raise invalid_type(f"{param}.action.commands", "an array of strings")
    normalized = {"type": "shell_call", "id": item_id(item, param, "sh"), "call_id": _str(item, "call_id", param),
                  "action": {"commands": list(commands),
                             "timeout_ms": _int(action.get("timeout_ms"), f"{param}.action.timeout_ms"),
                             "max_output_length": _int(action.get("max_output_length"),
                                                       f"{param}.action.max_output_length")},
                  "status": _status(item)}
    environment = _shell_environment(item.get("environment"), f"{param}.environment")
    if environment is not None:
        normalized["environment"] = environment
    return normalized


def _shell_environment(environment: Any, param: str) -> dict[str, Any] | None:
    """A shell call's ``environment``: ``local``, or the ``container_reference`` a hosted shell call ran in."""
    if environment is None:
        return None
    if isinstance(environment, dict) and environment.get("type") == "local":
        return {"type": "local"}
    if isinstance(environment, dict) and environment.get("type") == "container_reference":
        return {"type": "container_reference", "container_id": require_str(environment, "container_id", param)}
    raise invalid_request(f"Invalid value for '{param}': expected {{'type': 'local'}} or "
                          "{'type': 'container_reference', 'container_id': …}.", param=param, code="invalid_value")


def shell_call_output(item: dict[str, Any], param: str) -> dict[str, Any]:
    output = item.get("output")
    if not isinstance(output, list):
        raise invalid_type(f"{param}.output", "an array")
    chunks = []
    for where, chunk in objects_in(output, f"{param}.output"):
        outcome = chunk.get("outcome")
        if isinstance(outcome, dict) and outcome.get("type") == "exit":
            outcome = {"type": "exit", "exit_code": _int(outcome.get("exit_code"), f"{where}.outcome.exit_code")
                       or 0}
        elif isinstance(outcome, dict) and outcome.get("type") == "timeout":
            outcome = {"type": "timeout"}
        else:
            raise invalid_request(f"Invalid value for '{where}.outcome': expected {{'type': 'exit', 'exit_code'}} "
                                  "or {'type': 'timeout'}.", param=f"{where}.outcome")
        chunks.append({"stdout": _str(chunk, "stdout", where, required=False) or "",
                       "stderr": _str(chunk, "stderr", where, required=False) or "", "outcome": outcome})
    return {"type": "shell_call_output", "id": item_id(item, param, "sho"), "call_id": _str(item, "call_id", param),
            "output": chunks, "max_output_length": _int(item.get("max_output_length"), f"{param}.max_output_length"),
            "status": _status(item)}


def local_shell_call(item: dict[str, Any], param: str) -> dict[str, Any]:
    action = _action(item, param)
    command = action.get("command")
    if not isinstance(command, list) or not all(isinstance(part, str) for part in command):
        raise invalid_type(f"{param}.action.command", "an array of strings")
    env = action.get("env") or {}
    if not isinstance(env, dict) or not all(isinstance(value, str) for value in env.values()):
        raise invalid_type(f"{param}.action.env", "an object of strings")
    return {"type": "local_shell_call", "id": item_id(item, param, "lsh"), "call_id": _str(item, "call_id", param),
            "action": {"type": "exec", "command": list(command), "env": dict(env),
                       "timeout_ms": _int(action.get("timeout_ms"), f"{param}.action.timeout_ms"),
                       "working_directory": _str(action, "working_directory", f"{param}.action", required=False),
                       "user": _str(action, "user", f"{param}.action", required=False)},
            "status": _status(item)}


def local_shell_call_output(item: dict[str, Any], param: str) -> dict[str, Any]:
    """The SDK names the answered call in ``id`` ("the ID of the local shell tool call generated by the model");
    OpenAI's guide sends it as ``call_id``. Either is accepted; it is kept in ``id``, the SDK's shape."""
    call_id = item.get("call_id") if item.get("call_id") is not None else item.get("id")
    if not isinstance(call_id, str) or not call_id:
        raise missing_parameter(f"{param}.call_id")
    return {"type": "local_shell_call_output", "id": call_id, "output": _str(item, "output", param),
            "status": _status(item)}


def apply_patch_call(item: dict[str, Any], param: str) -> dict[str, Any]:
    operation = item.get("operation")
    if not isinstance(operation, dict) or operation.get("type") not in _PATCH_OPERATIONS:
        raise invalid_request(f"Invalid value for '{param}.operation': expected an object whose 'type' is "
                              "create_file, update_file or delete_file.", param=f"{param}.operation")
    where = f"{param}.operation"
    normalized = {"type": operation["type"], "path": _str(operation, "path", where)}
    if operation["type"] != "delete_file":
        normalized["diff"] = _str(operation, "diff", where)
    return {"type": "apply_patch_call", "id": item_id(item, param, "apc"), "call_id": _str(item, "call_id", param),
            "operation": normalized, "status": _status(item, ("in_progress", "completed"))}


def apply_patch_call_output(item: dict[str, Any], param: str) -> dict[str, Any]:
    status = item.get("status")
    if status not in ("completed", "failed"):
        raise invalid_request(f"Invalid value for '{param}.status': expected 'completed' or 'failed'.",
                              param=f"{param}.status")
    normalized = {"type": "apply_patch_call_output", "id": item_id(item, param, "apco"),
                  "call_id": _str(item, "call_id", param), "status": status}
    output = _str(item, "output", param, required=False)
    if output is not None:
        normalized["output"] = output
    return normalized


def tool_search_call(item: dict[str, Any], param: str) -> dict[str, Any]:
    arguments = item.get("arguments")
    if isinstance(arguments, str):  # lenient: the JSON text of the arguments
        try:
            arguments = orjson.loads(arguments)
        except orjson.JSONDecodeError:
            arguments = {"query": arguments}
    if arguments is None:
        arguments = {}
    execution = _execution(item)
    return {"type": "tool_search_call", "id": item_id(item, param, "tsc"),
            "call_id": _str(item, "call_id", param, required=execution == "client"),
            "execution": execution, "arguments": arguments, "status": _status(item)}


def _execution(item: dict[str, Any]) -> str:
    """``server`` for the items of a tool search the bridge ran (their call id may be null), else ``client``."""
    return "server" if item.get("execution") == "server" else "client"


def _tools(item: dict[str, Any], param: str, key: str, expected: str) -> list[dict[str, Any]]:
    """An item's ``tools``: a list of objects that each have the string ``key``, else a 400 naming the field."""
    tools = item.get("tools")
    if not isinstance(tools, list) or not all(isinstance(tool, dict) and isinstance(tool.get(key), str)
                                              for tool in tools):
        raise invalid_type(f"{param}.tools", expected)
    return tools


def tool_search_output(item: dict[str, Any], param: str) -> dict[str, Any]:
    tools = _tools(item, param, "type", "an array of tools")
    execution = _execution(item)
    return {"type": "tool_search_output", "id": item_id(item, param, "tso"),
            "call_id": _str(item, "call_id", param, required=execution == "client"),
            "execution": execution, "tools": tools, "status": _status(item)}


# --- items of the server-side tool loop (sent back as input, or replayed from a stored response) ------------------


def _object_or_none(item: dict[str, Any], key: str, param: str) -> Any:
    value = item.get(key)
    if value is not None and not isinstance(value, (dict, str)):
        raise invalid_type(f"{param}.{key}", "an object")
    return value


def mcp_call(item: dict[str, Any], param: str) -> dict[str, Any]:
    status = item.get("status")
    return {"type": "mcp_call", "id": item_id(item, param, "mcp"), "server_label": _str(item, "server_label", param),
            "name": _str(item, "name", param), "arguments": _str(item, "arguments", param, required=False) or "",
            "output": _str(item, "output", param, required=False), "error": _object_or_none(item, "error", param),
            "status": status if status in ("in_progress", "completed", "incomplete", "calling", "failed")
            else "completed",
            "approval_request_id": _str(item, "approval_request_id", param, required=False)}


def mcp_list_tools(item: dict[str, Any], param: str) -> dict[str, Any]:
    tools = _tools(item, param, "name", "an array of tools with names")
    return {"type": "mcp_list_tools", "id": item_id(item, param, "mcpl"),
            "server_label": _str(item, "server_label", param), "tools": tools,
            "error": _str(item, "error", param, required=False)}


def mcp_approval_request(item: dict[str, Any], param: str) -> dict[str, Any]:
    return {"type": "mcp_approval_request", "id": item_id(item, param, "mcpr"),
            "server_label": _str(item, "server_label", param), "name": _str(item, "name", param),
            "arguments": _str(item, "arguments", param, required=False) or ""}


def mcp_approval_response(item: dict[str, Any], param: str) -> dict[str, Any]:
    approve = item.get("approve")
    if not isinstance(approve, bool):
        raise invalid_request(f"Missing or invalid '{param}.approve': expected a boolean.", param=f"{param}.approve",
                              code="invalid_type" if approve is not None else "missing_required_parameter")
    return {"type": "mcp_approval_response", "id": item_id(item, param, "mcpa"),
            "approval_request_id": _str(item, "approval_request_id", param), "approve": approve,
            "reason": _str(item, "reason", param, required=False)}


def web_search_call(item: dict[str, Any], param: str) -> dict[str, Any]:
    action = item.get("action")
    if not isinstance(action, dict) or not isinstance(action.get("type"), str):
        raise invalid_request(f"Missing or invalid '{param}.action': expected an object with a 'type'.",
                              param=f"{param}.action")
    return {"type": "web_search_call", "id": item_id(item, param, "ws"), "action": action,
            "status": _status(item, ("in_progress", "searching", "completed", "failed", "incomplete"))}


def file_search_call(item: dict[str, Any], param: str) -> dict[str, Any]:
    queries = item.get("queries")
    if not isinstance(queries, list) or not all(isinstance(query, str) for query in queries):
        raise invalid_request(f"Missing or invalid '{param}.queries': expected an array of strings.",
                              param=f"{param}.queries")
    results = _objects_or_none(item, "results", param)
    return {"type": "file_search_call", "id": item_id(item, param, "fs"), "queries": list(queries),
            "status": _status(item, ("in_progress", "searching", "completed", "incomplete", "failed")),
            "results": [dict(result) for result in results] if results is not None else None}


def code_interpreter_call(item: dict[str, Any], param: str) -> dict[str, Any]:
    code = item.get("code")
    if code is not None and not isinstance(code, str):
        raise invalid_request(f"Invalid '{param}.code': expected a string or null.", param=f"{param}.code")
    container = item.get("container_id")
    if not isinstance(container, str):
        raise invalid_request(f"Missing or invalid '{param}.container_id': expected a string.",
                              param=f"{param}.container_id")
    outputs = _objects_or_none(item, "outputs", param)
    return {"type": "code_interpreter_call", "id": item_id(item, param, "ci"), "code": code or "",
            "container_id": container,
            "status": _status(item, ("in_progress", "interpreting", "completed", "incomplete", "failed")),
            "outputs": [dict(output) for output in outputs] if outputs is not None else None}


def approval_responses(items: list[dict[str, Any]]) -> dict[str, dict[str, Any]]:
    """The ``mcp_approval_response`` items among ``items``, by the ``approval_request_id`` they answer (the
    last answer wins): what the tool loop runs or skips before the model's next turn."""
    return {item["approval_request_id"]: item for item in items if item.get("type") == "mcp_approval_response"}


def compaction_trigger(item: dict[str, Any], param: str) -> dict[str, Any]:
    return {"type": "compaction_trigger"}


def image_generation_call(item: dict[str, Any], param: str) -> dict[str, Any]:
    """An image generation call, kept whole (its base64 ``result`` included: a stored item must read back as it was
    made); the engine replays it to the model as a note, without the image."""
    result = item.get("result")
    if result is not None and not isinstance(result, str):
        raise invalid_request(f"Invalid '{param}.result': expected a base64 string or null.", param=f"{param}.result")
    normalized = {"type": "image_generation_call", "id": item_id(item, param, "ig"), "result": result,
                  "status": _status(item, ("in_progress", "generating", "completed", "failed", "incomplete"))}
    for key in ("revised_prompt", "size", "quality", "output_format", "background", "action"):
        if isinstance(item.get(key), str):
            normalized[key] = item[key]
    return normalized


NORMALIZERS: dict[str, Callable[[dict[str, Any], str], dict[str, Any]]] = {
    "custom_tool_call": custom_tool_call,
    "shell_call": shell_call,
    "shell_call_output": shell_call_output,
    "local_shell_call": local_shell_call,
    "local_shell_call_output": local_shell_call_output,
    "computer_call": computer_call,
    "computer_call_output": computer_call_output,
    "apply_patch_call": apply_patch_call,
    "apply_patch_call_output": apply_patch_call_output,
    "tool_search_call": tool_search_call,
    "tool_search_output": tool_search_output,
    "compaction_trigger": compaction_trigger,
    "mcp_call": mcp_call,
    "mcp_list_tools": mcp_list_tools,
    "mcp_approval_request": mcp_approval_request,
    "mcp_approval_response": mcp_approval_response,
    "web_search_call": web_search_call,
    "file_search_call": file_search_call,
    "code_interpreter_call": code_interpreter_call,
    "image_generation_call": image_generation_call,
}
"""Item type → normaliser; ``custom_tool_call_output`` is normalised like ``function_call_output``."""
