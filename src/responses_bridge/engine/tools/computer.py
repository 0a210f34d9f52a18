"""The computer tools as client tools over Chat Completions: ``computer_use_preview`` and the GA ``computer``.

The model is offered one function (``computer``) whose arguments are one computer action (the preview), or a batch
of them, ``{"actions": [...]}``, run in order before the next screenshot (the GA tool, which has no display size
or environment to tell); its call comes back as a ``computer_call`` item with ``action`` or ``actions``
(client.py reads it; the SDK has no events of its own for it: ``output_item.done`` carries them).
The client runs the action and answers with a ``computer_call_output`` holding a screenshot. Chat Completions'
tool messages carry text only, so the screenshot reaches the model as a ``user`` message with the image, right
after the tool messages of that turn (a user message between them would break the pairing of calls and results).
"""

from __future__ import annotations

from typing import Any

from ...protocol.tools.computer_items import ACTION_FIELDS, BUTTONS

COMPUTER_NAME = "computer"
_INT = {"type": "integer"}
COMPUTER_PARAMETERS: dict[str, Any] = {
    "type": "object",
    "properties": {
        "type": {"type": "string", "enum": list(ACTION_FIELDS), "description": "The action to perform."},
        "x": {**_INT, "description": "Pointer x, in pixels (click, double_click, move, scroll)."},
        "y": {**_INT, "description": "Pointer y, in pixels (click, double_click, move, scroll)."},
        "button": {"type": "string", "enum": list(BUTTONS), "description": "The mouse button (click)."},
        "keys": {"type": "array", "items": {"type": "string"},
                 "description": "Keys to press together (keypress), or held during a pointer action."},
        "text": {"type": "string", "description": "The text to type (type)."},
        "scroll_x": {**_INT, "description": "Horizontal scroll distance (scroll)."},
        "scroll_y": {**_INT, "description": "Vertical scroll distance (scroll)."},
        "path": {"type": "array", "items": {"type": "object", "properties": {"x": _INT, "y": _INT},
                                            "required": ["x", "y"]},
                 "description": "The points to drag through, in order (drag)."},
    },
    "required": ["type"],
}


COMPUTER_BATCH_PARAMETERS: dict[str, Any] = {
    "type": "object",
    "properties": {"actions": {"type": "array", "items": COMPUTER_PARAMETERS, "minItems": 1,
                               "description": "The actions to perform, in order, before the next screenshot."}},
    "required": ["actions"],
}
COMPUTER_BATCH_DESCRIPTION = ("Controls the user's computer: each call is a list of actions, run in order. After "
                              "them you get a screenshot of the screen; take a 'screenshot' action first to see it.")


def computer_call_arguments(item: dict[str, Any]) -> tuple[str, dict[str, Any]]:
    """A replayed ``computer_call``: the tool kind it was a call of and its arguments, as the model gave them."""
    if item.get("actions") is not None:
        return "computer", {"actions": item["actions"]}
    return "computer_use_preview", item["action"]


def computer_description(tool: dict[str, Any]) -> str:
    """What the model reads of the tool: the machine's environment and display size, which it must aim in."""
    environment = tool.get("environment") or "desktop"
    width, height = tool.get("display_width"), tool.get("display_height")
    size = f" with a {width}x{height} pixel display" if width and height else ""
    return (f"Controls the user's {environment} computer{size}: one action per call. After each action you get a "
            "screenshot of the screen; take a 'screenshot' action first to see it.")


def screenshot_message(item: dict[str, Any]) -> dict[str, Any]:
    """The ``user`` message that shows the model a ``computer_call_output``'s screenshot."""
    return {"role": "user", "content": [
        {"type": "text", "text": f"Screenshot after computer call {item['call_id']}:"},
        {"type": "image_url", "image_url": {"url": item["output"]["image_url"], "detail": "auto"}}]}
