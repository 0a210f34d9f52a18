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

from ...protocol.errors import invalid_request
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


SCREENSHOT_HEAD = "Screenshot after computer call "
COMPUTER_KINDS = frozenset({"computer", "computer_use_preview"})
"""The tools whose answers are screenshots the model must see."""


def screenshot_message(item: dict[str, Any]) -> dict[str, Any]:
    """The ``user`` message that shows the model a ``computer_call_output``'s screenshot."""
    return {"role": "user", "content": [
        {"type": "text", "text": f"{SCREENSHOT_HEAD}{item['call_id']}:"},
        {"type": "image_url", "image_url": {"url": item["output"]["image_url"], "detail": "auto"}}]}


def keep_newest_screenshots(messages: list[dict[str, Any]], kept: int | None) -> None:
    """Only the newest ``kept`` screenshot messages (:func:`screenshot_message`) keep their image; each older one
    becomes a one-line note, so a long computer-use session does not fill the model's context with images (a
    screenshot is about a thousand tokens; the model acts on the newest). None: every one kept. One pass from the
    end, touching only the messages it replaces."""
    if kept is None:
        return
    seen = 0
    for index in range(len(messages) - 1, -1, -1):
        content = messages[index]["content"]
        if type(content) is not list or len(content) != 2 or content[1].get("type") != "image_url" \
                or not str(content[0].get("text", "")).startswith(SCREENSHOT_HEAD) \
                or messages[index]["role"] != "user":
            continue
        seen += 1
        if seen > kept:
            call = content[0]["text"][len(SCREENSHOT_HEAD):].rstrip(":")
            messages[index] = {"role": "user", "content": f"(The screenshot after computer call {call} is left "
                                                          f"out: only the newest {kept} are shown.)"}


def refuse_blind() -> None:
    """A 400 for a computer tool offered to a model the deployment says reads no images (the profile switch
    ``images``): every answer of the tool is a screenshot, and a model that cannot see them would act blind."""
    raise invalid_request("The computer tool shows the model screenshots, and this upstream's model reads no images "
                          "(its profile switch 'images' is false: RESPONSES_BRIDGE_IMAGES, or the upstream's "
                          "'switches'); use a model that reads images.", param="tools", code="unsupported_value")
