"""The desktop's approvals in a session's words (the SDK's types, 3.57): what the browser waits for — an origin not
yet approved (``browser_origin_access``), a sign-in form (``browser_authentication``) — as the session's
``computer_use_approval_request`` item and required action, and the client's
``agent.session.input.computer_use_approval_request_result`` checked strictly.

The submitted sign-in values are the one secret of a session's input that the bridge acts on itself: they are
parsed here into a mapping that lives in memory until the desktop has typed them (services/agents/computer/
approvals.py), and every shape made here to be stored, shown or logged leaves them out (:func:`result_item`,
:func:`redacted_body`). Errors name the field, never its value.
"""

from __future__ import annotations

import copy
import json
from typing import Any

from ..errors import APIError, invalid_request

EVENT = "agent.session.input.computer_use_approval_request_result"
ORIGIN = "browser_origin_access"
SIGN_IN = "browser_authentication"
DECISIONS = ("approve", "deny", "cancel")
MAX_FIELDS = 6
MAX_SUBMITTED = 120 * 1024
REDACTED = "[redacted]"


def _bad(message: str, param: str, code: str = "invalid_value") -> APIError:
    return invalid_request(message, param=param, code=code)


def _known(body: dict[str, Any], fields: tuple[str, ...], prefix: str) -> None:
    for key in body:
        if key not in fields:
            name = str(key)[:64]
            raise _bad(f"Unknown parameter: '{prefix}{name}'.", f"{prefix}{name}", "unknown_parameter")


def approval_result(event: dict[str, Any], param: str) -> dict[str, Any]:
    """The client's answer: ``request_id``, ``type`` (the request's kind), and ``decision`` (``approve`` /
    ``deny`` / ``cancel``: an origin) or ``action`` (``submit`` with ``values`` and ``selected_option``, or
    ``cancel``: a sign-in). A 400 naming the field for anything else; a value is never quoted."""
    _known(event, ("type", "request_id", "response"), f"{param}.")
    if not isinstance(event.get("request_id"), str) or not event["request_id"]:
        raise _bad(f"Missing or invalid '{param}.request_id'.", f"{param}.request_id", "missing_required_parameter")
    response = event.get("response")
    where = f"{param}.response"
    if not isinstance(response, dict):
        raise _bad(f"Missing required parameter: '{where}'.", where, "missing_required_parameter")
    kind = response.get("type")
    found: dict[str, Any] = {"request_id": event["request_id"], "type": kind, "param": param}
    if kind == ORIGIN:
        _known(response, ("type", "decision"), f"{where}.")
        if response.get("decision") not in DECISIONS:
            raise _bad(f"Invalid value for '{where}.decision': expected 'approve', 'deny' or 'cancel'.",
                       f"{where}.decision")
        return {**found, "decision": response["decision"]}
    if kind != SIGN_IN:
        raise _bad(f"Invalid value for '{where}.type': expected '{ORIGIN}' or '{SIGN_IN}'.", f"{where}.type")
    action = response.get("action")
    if action == "cancel":
        _known(response, ("type", "action"), f"{where}.")
        return {**found, "action": "cancel"}
    if action != "submit":
        raise _bad(f"Invalid value for '{where}.action': expected 'submit' or 'cancel'.", f"{where}.action")
    _known(response, ("type", "action", "fields", "selected_option"), f"{where}.")
    option = response.get("selected_option")
    if option is not None and (not isinstance(option, str) or not 1 <= len(option) <= 64):
        raise _bad(f"Invalid value for '{where}.selected_option': expected an option's id.",
                   f"{where}.selected_option")
    if "fields" not in response:
        raise _bad(f"Missing required parameter: '{where}.fields'.", f"{where}.fields", "missing_required_parameter")
    return {**found, "action": "submit", "selected_option": option,
            "values": submitted(response["fields"], f"{where}.fields")}


def submitted(raw: Any, param: str) -> dict[str, str]:
    """The submitted ``fields`` (``[{"field_id", "value"}]``) as field id to value: at most six objects of exactly
    those two strings, no id twice, at most 120 KiB of JSON (OpenAI's bounds)."""
    if not isinstance(raw, list):
        raise _bad(f"Invalid type for '{param}': expected an array of {{field_id, value}} objects.", param,
                   "invalid_type")
    if len(raw) > MAX_FIELDS:
        raise _bad(f"'{param}' may have at most {MAX_FIELDS} fields.", param, "array_above_max_length")
    found: dict[str, str] = {}
    for position, item in enumerate(raw):
        at = f"{param}[{position}]"
        if not isinstance(item, dict):
            raise _bad(f"Invalid type for '{at}': expected an object with field_id and value.", at, "invalid_type")
        _known(item, ("field_id", "value"), f"{at}.")
        for name in ("field_id", "value"):
            if not isinstance(item.get(name), str):
                raise _bad(f"Missing or invalid '{at}.{name}': expected a string.", f"{at}.{name}",
                           "missing_required_parameter" if name not in item else "invalid_type")
        if not 1 <= len(item["field_id"]) <= 64:
            raise _bad(f"Invalid value for '{at}.field_id'.", f"{at}.field_id")
        if item["field_id"] in found:
            raise _bad(f"'{at}.field_id' names a field submitted before.", f"{at}.field_id")
        found[item["field_id"]] = item["value"]
    if len(json.dumps(found)) > MAX_SUBMITTED:
        raise _bad(f"'{param}' exceeds {MAX_SUBMITTED // 1024} KiB of JSON.", param, "string_above_max_length")
    return found


def check_against(request: dict[str, Any], answer: dict[str, Any]) -> None:
    """The answer fits the request it names: the same kind; a submission's ids are the form's fields, each
    required one given a value, no option for a plain form. A 400 naming the field (``answer["param"]``: the
    event's)."""
    asked, param = request["request"], answer["param"]
    if answer["type"] != asked["type"]:
        raise _bad(f"Invalid value for '{param}.response.type': the request '{request['id']}' is of type "
                   f"'{asked['type']}'.", f"{param}.response.type")
    if answer.get("action") != "submit":
        return
    fields = {field["id"]: field for field in asked.get("fields") or []}
    for position, field_id in enumerate(answer["values"]):
        if field_id not in fields:
            raise _bad(f"Invalid value for '{param}.response.fields[{position}].field_id': the form has no such "
                       f"field (its fields: {', '.join(fields)}).", f"{param}.response.fields[{position}].field_id")
    for field in fields.values():
        if field.get("required") and not answer["values"].get(field["id"]):
            raise _bad(f"The form's field '{field['id']}' is required: give it a value in '{param}.response.fields'.",
                       f"{param}.response.fields", "missing_required_parameter")
    if answer.get("selected_option") is not None and not asked.get("options"):
        raise _bad(f"Invalid value for '{param}.response.selected_option': this form offers no options.",
                   f"{param}.response.selected_option")


def origin_request(origin: str) -> dict[str, Any]:
    """The SDK's ``browser_origin_access`` request."""
    return {"type": ORIGIN, "origin": origin,
            "reason": "The browser needs to reach this origin, which this session has not been allowed yet."}


def required_action(request: dict[str, Any]) -> dict[str, Any]:
    """The session's required action (the SDK's ``…RequiredActionResourceComputerUseApprovalRequest``)."""
    return {"type": "computer_use_approval_request", "request_id": request["id"], "turn_id": request["turn_id"],
            "request": request["request"]}


def request_item(item_id: str, request: dict[str, Any]) -> dict[str, Any]:
    """The session's ``computer_use_approval_request`` item: the request, as history (it holds no value)."""
    return {"id": item_id, "type": "computer_use_approval_request", "request_id": request["id"],
            "turn_id": request["turn_id"], "request": request["request"]}


def result_item(item_id: str, request: dict[str, Any], answer: dict[str, Any]) -> dict[str, Any]:
    """The session's ``computer_use_approval_request_result`` item: what the client decided, never a value."""
    if answer["type"] == ORIGIN:
        response: dict[str, Any] = {"type": ORIGIN, "decision": answer["decision"]}
    elif answer["action"] == "submit":
        response = {"type": SIGN_IN, "action": "submit", "selected_option": answer.get("selected_option")}
    else:
        response = {"type": SIGN_IN, "action": "cancel"}
    return {"id": item_id, "type": "computer_use_approval_request_result", "request_id": request["id"],
            "turn_id": request["turn_id"], "response": response}


def redacted_body(body: dict[str, Any]) -> dict[str, Any]:
    """A posted body as it may be kept (an ``Idempotency-Key``'s digest is made of it): each submitted sign-in
    value replaced by ``[redacted]``. ``body`` is left as it was."""
    events = body.get("events")
    if not isinstance(events, list) or not any(isinstance(event, dict) and event.get("type") == EVENT
                                               for event in events):
        return body
    kept = copy.deepcopy(body)
    for event in kept["events"]:
        response = event.get("response") if isinstance(event, dict) and event.get("type") == EVENT else None
        fields = response.get("fields") if isinstance(response, dict) else None
        for field in fields if isinstance(fields, list) else ():
            if isinstance(field, dict) and "value" in field:
                field["value"] = REDACTED
    return kept
