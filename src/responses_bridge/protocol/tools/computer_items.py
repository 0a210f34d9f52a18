"""Items of the computer tools, which the client runs: ``computer_call`` and ``computer_call_output``. A call of
``computer_use_preview`` holds one ``action``; a call of the GA ``computer`` tool a batch, ``actions``, which the
client runs in order before it answers with one screenshot.

Both are checked against the shapes of the ``openai`` SDK (``ResponseComputerToolCall``, ``ComputerCallOutput``)
and normalised to what the bridge emits, so a replayed call and one the model just made look the same. The
screenshot of an output must come as an ``image_url`` (a data: or http(s) URL): a Chat Completions upstream cannot
read a ``file_id``, and a screenshot the model never sees would be lost without a word.
"""

from __future__ import annotations

from typing import Any

from ..errors import invalid_request
from ..request_checks import item_id

BUTTONS = ("left", "right", "wheel", "back", "forward")
# action type → its required fields ("int", "str", "keys", "path"); ``keys`` is optional on pointer actions
ACTION_FIELDS: dict[str, dict[str, str]] = {
    "click": {"button": "button", "x": "int", "y": "int"},
    "double_click": {"x": "int", "y": "int"},
    "drag": {"path": "path"},
    "keypress": {"keys": "keys"},
    "move": {"x": "int", "y": "int"},
    "screenshot": {},
    "scroll": {"x": "int", "y": "int", "scroll_x": "int", "scroll_y": "int"},
    "type": {"text": "str"},
    "wait": {},
}
_POINTER = frozenset({"click", "double_click", "drag", "move", "scroll"})


def _valid(kind: str, value: Any) -> bool:
    if kind == "int":
        return type(value) is int
    if kind == "str":
        return isinstance(value, str)
    if kind == "button":
        return value in BUTTONS
    if kind == "keys":
        return isinstance(value, list) and all(isinstance(key, str) for key in value)
    return isinstance(value, list) and all(isinstance(point, dict) and type(point.get("x")) is int
                                           and type(point.get("y")) is int for point in value)


def action_problem(action: Any) -> str | None:
    """Why ``action`` is not a computer action of the SDK's shapes (the field at fault), or None."""
    if not isinstance(action, dict) or action.get("type") not in ACTION_FIELDS:
        return "type"
    for name, kind in ACTION_FIELDS[action["type"]].items():
        if not _valid(kind, action.get(name)):
            return name
    if action["type"] in _POINTER and action.get("keys") is not None and not _valid("keys", action["keys"]):
        return "keys"
    return None


MAX_ACTIONS = 100
"""Actions one batched call may hold: far past what a model batches before it looks at the screen again, and a
bound on what one call's item holds."""


def actions_problem(actions: Any) -> str | None:
    """Why ``actions`` is not a batch of the SDK's computer actions (the place at fault, ``[2].x``), or None."""
    if not isinstance(actions, list) or not 1 <= len(actions) <= MAX_ACTIONS:
        return ""
    for index, action in enumerate(actions):
        problem = action_problem(action)
        if problem is not None:
            return f"[{index}].{problem}"
    return None


def clean_action(action: dict[str, Any]) -> dict[str, Any]:
    """A valid action with only the keys its type has."""
    kind = action["type"]
    cleaned = {"type": kind, **{name: action[name] for name in ACTION_FIELDS[kind]}}
    if kind == "drag":
        cleaned["path"] = [{"x": point["x"], "y": point["y"]} for point in action["path"]]
    if kind in _POINTER and action.get("keys") is not None:
        cleaned["keys"] = list(action["keys"])
    return cleaned


def _call_id(item: dict[str, Any], param: str) -> str:
    """The call's ``call_id``, a non-empty string: a 400 naming ``param.call_id`` otherwise."""
    call_id = item.get("call_id")
    if not isinstance(call_id, str) or not call_id:
        raise invalid_request(f"Missing required parameter: '{param}.call_id'.", param=f"{param}.call_id",
                              code="missing_required_parameter")
    return call_id


def computer_call(item: dict[str, Any], param: str) -> dict[str, Any]:
    call_id = _call_id(item, param)
    status = item.get("status")
    normalized: dict[str, Any] = {"type": "computer_call", "id": item_id(item, param, "cu"), "call_id": call_id}
    if item.get("action") is not None or item.get("actions") is None:  # one of the two at least
        problem = action_problem(item.get("action"))
        if problem is not None:
            raise invalid_request(f"Invalid value for '{param}.action.{problem}': expected a computer action of the "
                                  f"types {', '.join(ACTION_FIELDS)} with their fields.",
                                  param=f"{param}.action.{problem}")
        normalized["action"] = clean_action(item["action"])
    if item.get("actions") is not None:  # the GA tool's batch
        problem = actions_problem(item["actions"])
        if problem is not None:
            raise invalid_request(f"Invalid value for '{param}.actions{problem}': expected 1 to {MAX_ACTIONS} "
                                  f"computer actions of the types {', '.join(ACTION_FIELDS)} with their fields.",
                                  param=f"{param}.actions{problem}")
        normalized["actions"] = [clean_action(action) for action in item["actions"]]
    normalized["pending_safety_checks"] = []
    normalized["status"] = status if status in ("in_progress", "completed", "incomplete") else "completed"
    return normalized


def computer_call_output(item: dict[str, Any], param: str) -> dict[str, Any]:
    call_id = _call_id(item, param)
    output = item.get("output")
    if not isinstance(output, dict) or output.get("type") != "computer_screenshot":
        raise invalid_request(f"Invalid value for '{param}.output': expected {{'type': 'computer_screenshot', "
                              "'image_url'}.", param=f"{param}.output")
    url = output.get("image_url")
    if not isinstance(url, str) or not url.startswith(("data:", "http://", "https://")):
        raise invalid_request(f"'{param}.output.image_url' is required here (a data: or http(s) URL): the model "
                              "sees the screenshot through the upstream, which cannot read a 'file_id'.",
                              param=f"{param}.output.image_url", code="unsupported_parameter")
    checks = item.get("acknowledged_safety_checks")
    status = item.get("status")
    normalized: dict[str, Any] = {
        "type": "computer_call_output", "id": item_id(item, param, "cuo"), "call_id": call_id,
        "output": {"type": "computer_screenshot", "image_url": url},
        "status": status if status in ("in_progress", "completed", "incomplete", "failed") else "completed"}
    if isinstance(checks, list):
        normalized["acknowledged_safety_checks"] = [check for check in checks if isinstance(check, dict)]
    return normalized

