"""The items of programmatic tool calling a client sends back (stateless, ``store: false``): ``program`` and
``program_output`` items, and the ``caller`` of a call a program made (its ``function_call`` and output)."""

from __future__ import annotations

from typing import Any

from ... import ids
from ..errors import invalid_request
from .tool_items import require_str

PROGRAM_KINDS = ("program", "program_output")


def normalize_program_item(item: dict[str, Any], param: str) -> dict[str, Any]:
    kind = item["type"]
    given = item.get("id")
    if given is not None and not isinstance(given, str):
        raise invalid_request(f"Invalid type for '{param}.id': expected a string.", param=f"{param}.id",
                              code="invalid_type")
    if kind == "program":
        return {"id": given or ids.new_id("prog"), "type": "program", "call_id": require_str(item, "call_id", param),
                "code": require_str(item, "code", param), "fingerprint": require_str(item, "fingerprint", param)}
    status = item.get("status", "completed")
    if status not in ("completed", "incomplete"):
        raise invalid_request(f"Invalid value for '{param}.status': expected 'completed' or 'incomplete'.",
                              param=f"{param}.status", code="invalid_value")
    return {"id": given or ids.new_id("progo"), "type": "program_output",
            "call_id": require_str(item, "call_id", param), "result": require_str(item, "result", param),
            "status": status}


def normalize_caller(item: dict[str, Any], param: str) -> dict[str, Any] | None:
    """A call's ``caller``: ``{"type": "direct"}`` (the model, as if absent: None) or ``{"type": "program",
    "caller_id"}``; anything else is a 400 naming it."""
    caller = item.get("caller")
    if caller is None:
        return None
    where = f"{param}.caller"
    if not isinstance(caller, dict) or caller.get("type") not in ("direct", "program"):
        raise invalid_request(f"Invalid value for '{where}': expected {{'type': 'direct'}} or {{'type': 'program', "
                              "'caller_id'}.", param=where, code="invalid_value")
    if caller["type"] == "direct":
        return None
    return {"type": "program", "caller_id": require_str(caller, "caller_id", where)}
