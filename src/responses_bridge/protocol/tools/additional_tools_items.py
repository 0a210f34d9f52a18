"""``additional_tools`` input items: tools a developer makes available from that point of the conversation on.
They are offered to the model with the request's own on every later turn of the chain, the conversation or the
items sent back (engine/tools/tools.py's ``loaded_tools``, as the tools a tool search loaded). Only tools the client
runs can be added so: a server-side tool here would not be run by the loop, so its type is a 400 naming it, as is a
tool meant for programs (programs call the request's own tools)."""

from __future__ import annotations

from typing import Any

from ... import ids
from ..errors import invalid_request, invalid_type, objects_in
from ..newer_fields import check_tool_callers
from ..request_checks import check_tool

ADDABLE = ("function", "custom", "namespace")


def normalize_additional_tools(item: dict[str, Any], param: str) -> dict[str, Any]:
    for key in item:
        if key not in ("type", "id", "role", "tools"):
            raise invalid_request(f"Unknown parameter: '{param}.{key}'.", param=f"{param}.{key}",
                                  code="unknown_parameter")
    if item.get("role") != "developer":
        raise invalid_request(f"Invalid value for '{param}.role': only 'developer' may add tools.",
                              param=f"{param}.role", code="invalid_value")
    given = item.get("id")
    if given is not None and not isinstance(given, str):
        raise invalid_type(f"{param}.id", "a string")
    tools = item.get("tools")
    if not isinstance(tools, list):
        raise invalid_type(f"{param}.tools", "an array")
    for where, tool in objects_in(tools, f"{param}.tools"):
        if tool.get("type") not in ADDABLE:
            raise invalid_request(f"Invalid value for '{where}.type': only tools the client runs (function, custom, "
                                  "namespace) can be added by an additional_tools item.", param=f"{where}.type",
                                  code="unsupported_value")
        check_tool(tool, where)
        check_tool_callers(tool, where)
        if "programmatic" in (tool.get("allowed_callers") or ()):
            raise invalid_request(f"'{where}.allowed_callers': programs call the request's own tools only.",
                                  param=f"{where}.allowed_callers", code="unsupported_value")
    return {"type": "additional_tools", "id": given or ids.new_id("adt"), "role": "developer", "tools": tools}
