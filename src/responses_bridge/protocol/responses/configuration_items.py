"""``configuration_update`` input items: a change of the reasoning effort and/or the text format that stays in
effect for the later turns and responses of the same chain or conversation, each setting until a later update
replaces that setting (engine/configuration_updates.py applies them). Checked here as the SDK types them; a key
they do not define is a 400 naming it, never dropped."""

from __future__ import annotations

from typing import Any

from ... import ids
from ..errors import invalid_request

EFFORTS = ("none", "minimal", "low", "medium", "high", "xhigh", "max")
_JSON_SCHEMA_KEYS = frozenset({"type", "name", "schema", "description", "strict"})


def normalize_configuration_update(item: dict[str, Any], param: str) -> dict[str, Any]:
    _only(item, {"type", "id", "reasoning", "text"}, param)
    given = item.get("id")
    if given is not None and not isinstance(given, str):
        raise invalid_request(f"Invalid type for '{param}.id': expected a string.", param=f"{param}.id",
                              code="invalid_type")
    normalized: dict[str, Any] = {"type": "configuration_update", "id": given or ids.new_id("cfg")}
    reasoning, text = item.get("reasoning"), item.get("text")
    if reasoning is None and text is None:
        raise invalid_request(f"'{param}' must update 'reasoning', 'text' or both.", param=param,
                              code="missing_required_parameter")
    if reasoning is not None:
        where = f"{param}.reasoning"
        if not isinstance(reasoning, dict):
            raise invalid_request(f"Invalid type for '{where}': expected an object.", param=where,
                                  code="invalid_type")
        _only(reasoning, {"effort"}, where)
        effort = reasoning.get("effort")
        if effort is not None and effort not in EFFORTS:
            raise invalid_request(f"Invalid value for '{where}.effort': expected one of {', '.join(EFFORTS)}.",
                                  param=f"{where}.effort", code="invalid_value")
        normalized["reasoning"] = {"effort": effort}
    if text is not None:
        where = f"{param}.text"
        if not isinstance(text, dict):
            raise invalid_request(f"Invalid type for '{where}': expected an object.", param=where, code="invalid_type")
        _only(text, {"format"}, where)
        normalized["text"] = {"format": _format(text.get("format"), f"{where}.format")}
    return normalized


def _format(fmt: Any, where: str) -> dict[str, Any]:
    if not isinstance(fmt, dict) or fmt.get("type") not in ("text", "json_schema"):
        raise invalid_request(f"Invalid value for '{where}': expected {{'type': 'text'}} or {{'type': 'json_schema', "
                              "'name', 'schema'}.", param=where, code="invalid_value")
    if fmt["type"] == "text":
        _only(fmt, {"type"}, where)
        return {"type": "text"}
    _only(fmt, _JSON_SCHEMA_KEYS, where)
    if not isinstance(fmt.get("name"), str) or not fmt["name"]:
        raise invalid_request(f"Missing required parameter: '{where}.name'.", param=f"{where}.name",
                              code="missing_required_parameter")
    if not isinstance(fmt.get("schema"), dict):
        raise invalid_request(f"Missing required parameter: '{where}.schema'.", param=f"{where}.schema",
                              code="missing_required_parameter")
    if fmt.get("strict") is not None and not isinstance(fmt["strict"], bool):
        raise invalid_request(f"Invalid type for '{where}.strict': expected a boolean.", param=f"{where}.strict",
                              code="invalid_type")
    if fmt.get("description") is not None and not isinstance(fmt["description"], str):
        raise invalid_request(f"Invalid type for '{where}.description': expected a string.",
                              param=f"{where}.description", code="invalid_type")
    return dict(fmt)


def _only(value: dict[str, Any], known: set[str] | frozenset[str], where: str) -> None:
    for key in value:
        if key not in known:
            raise invalid_request(f"Unknown parameter: '{where}.{key}'.", param=f"{where}.{key}",
                                  code="unknown_parameter")
