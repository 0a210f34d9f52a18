"""OpenAI's GA computer actions (``computer_call.actions``: openai/types/responses/computer_action.py), parsed
strictly and turned into xdotool's arguments.

A model's actions are untrusted input: each is checked field by field before anything reaches the desktop — the
type known, every field of it present and of its type, no field it does not have, coordinates inside the screen,
keys among those mapped to X keysyms — and a bad one is an :class:`ActionError` naming the field
(``actions[2].x``), never a crash and never a half-done batch: the whole list is parsed before the first action
runs; raised where a door answers, it is the OpenAI-shaped 400 ``invalid_value``. The desktop's process
(agent.py) runs only ``xdotool`` with the arguments made here.

Keys arrive as OpenAI's computer-use models name them (``CTRL``, ``META``, ``ARROWLEFT``, ``ENTER``, ``a``, ``F5``…,
case-insensitive) and are mapped to xdotool's keysym names; a ``keypress`` presses its keys together
(``CTRL`` + ``L``); ``keys`` on a pointer action are held while it happens.

An action is one xdotool invocation (its commands chained), without ``--sync``: the X server performs one client's
requests in order, so the click lands where the pointer was moved, and no round trip waits for the move to be seen.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Literal

from ...protocol.errors import APIError

ActionType = Literal["click", "double_click", "drag", "keypress", "move", "screenshot", "scroll", "type", "wait"]
BUTTONS = {"left": 1, "right": 3, "wheel": 2, "back": 8, "forward": 9}
"""X's button numbers (4-7 are the wheel's scrolling, 8/9 back and forward)."""
SCROLL_STEP = 100
"""Pixels per wheel click: a scroll of 250 pixels is three clicks (at least one for any non-zero distance)."""
MAX_SCROLL_CLICKS = 50
MAX_TEXT = 10_000
MAX_ACTIONS = 100
MAX_PATH = 200
MAX_KEYS = 8

_NAMED = {
    "alt": "Alt_L", "option": "Alt_L", "altleft": "Alt_L", "altright": "Alt_R",
    "ctrl": "Control_L", "control": "Control_L", "controlleft": "Control_L", "controlright": "Control_R",
    "shift": "Shift_L", "shiftleft": "Shift_L", "shiftright": "Shift_R",
    "meta": "Super_L", "cmd": "Super_L", "command": "Super_L", "super": "Super_L", "win": "Super_L",
    "enter": "Return", "return": "Return", "tab": "Tab", "space": "space", "backspace": "BackSpace",
    "delete": "Delete", "del": "Delete", "insert": "Insert", "esc": "Escape", "escape": "Escape",
    "home": "Home", "end": "End", "pageup": "Prior", "pagedown": "Next",
    "arrowup": "Up", "arrowdown": "Down", "arrowleft": "Left", "arrowright": "Right",
    "up": "Up", "down": "Down", "left": "Left", "right": "Right", "capslock": "Caps_Lock",
    "printscreen": "Print", "menu": "Menu", "contextmenu": "Menu",
}
_PUNCTUATION = {
    "+": "plus", "-": "minus", "=": "equal", ",": "comma", ".": "period", "/": "slash", "\\": "backslash",
    ";": "semicolon", "'": "apostrophe", "`": "grave", "[": "bracketleft", "]": "bracketright", " ": "space",
}
_FIELDS: Mapping[str, tuple[str, ...]] = {
    "click": ("button", "x", "y", "keys"), "double_click": ("x", "y", "keys"), "drag": ("path", "keys"),
    "keypress": ("keys",), "move": ("x", "y", "keys"), "screenshot": (), "scroll": ("x", "y", "scroll_x", "scroll_y",
                                                                                 "keys"),
    "type": ("text",), "wait": (),
}


class ActionError(APIError):
    """A bad action: ``param`` names the field (``actions[1].button``), the message says what is wrong; raised where
    a door answers, it is the OpenAI-shaped 400 ``invalid_value`` (protocol/errors.py)."""

    def __init__(self, message: str, param: str) -> None:
        super().__init__(400, message, param=param, code="invalid_value")


@dataclass(frozen=True, slots=True)
class Action:
    """One parsed action: ``points`` the pointer's positions (one, or a drag's path), ``keys`` keysyms (held, or a
    keypress's combination), ``button``, ``scroll`` (x, y pixels) and ``text`` where the type has them."""

    type: ActionType
    points: tuple[tuple[int, int], ...] = ()
    keys: tuple[str, ...] = ()
    button: int = 1
    scroll: tuple[int, int] = (0, 0)
    text: str = ""


def keysym(key: str) -> str | None:
    """xdotool's name for a key as a model names it (None: unknown)."""
    if len(key) == 1:
        if key.isascii() and key.isalnum():
            return key.lower()
        return _PUNCTUATION.get(key)
    lowered = key.lower().replace("_", "")
    if lowered in _NAMED:
        return _NAMED[lowered]
    if lowered.startswith("f") and lowered[1:].isdigit() and 1 <= int(lowered[1:]) <= 24:
        return f"F{int(lowered[1:])}"
    return None


def parse_actions(raw: object, width: int, height: int) -> list[Action]:
    """Every action of ``raw`` (a list of objects) parsed, or :class:`ActionError` for the first bad field."""
    if not isinstance(raw, list):
        raise ActionError("actions must be a list of computer actions", "actions")
    if len(raw) > MAX_ACTIONS:
        raise ActionError(f"at most {MAX_ACTIONS} actions at once, got {len(raw)}", "actions")
    return [_parse(item, f"actions[{index}]", width, height) for index, item in enumerate(raw)]


def _parse(item: object, at: str, width: int, height: int) -> Action:
    if not isinstance(item, dict):
        raise ActionError("an action must be an object", at)
    kind = item.get("type")
    if not isinstance(kind, str) or kind not in _FIELDS:
        raise ActionError(f"unknown action type {kind!r}: one of {', '.join(_FIELDS)}", f"{at}.type")
    extra = sorted(set(item) - {"type", *_FIELDS[kind]})
    if extra:
        raise ActionError(f"a {kind} action has no field {extra[0]!r}", f"{at}.{extra[0]}")
    held = _keys(item.get("keys"), f"{at}.keys", required=kind == "keypress")
    if kind in ("click", "double_click", "move", "scroll"):
        point = (_coordinate(item, "x", width, at), _coordinate(item, "y", height, at))
        if kind == "click":
            button = item.get("button")
            if button not in BUTTONS:
                raise ActionError(f"button must be one of {', '.join(BUTTONS)}, got {button!r}", f"{at}.button")
            return Action("click", (point,), held, BUTTONS[str(button)])
        if kind == "scroll":
            return Action("scroll", (point,), held, scroll=(_integer(item, "scroll_x", at),
                                                              _integer(item, "scroll_y", at)))
        return Action(kind, (point,), held)  # type: ignore[arg-type]
    if kind == "drag":
        path = item.get("path")
        if not isinstance(path, list) or not 2 <= len(path) <= MAX_PATH:
            raise ActionError(f"path must be a list of 2 to {MAX_PATH} points", f"{at}.path")
        points = []
        for index, point in enumerate(path):
            where = f"{at}.path[{index}]"
            if not isinstance(point, dict) or set(point) != {"x", "y"}:
                raise ActionError("a point is an object with x and y", where)
            points.append((_coordinate(point, "x", width, where), _coordinate(point, "y", height, where)))
        return Action("drag", tuple(points), held)
    if kind == "type":
        text = item.get("text")
        if not isinstance(text, str) or len(text) > MAX_TEXT:
            raise ActionError(f"text must be a string of at most {MAX_TEXT} characters", f"{at}.text")
        if any(ord(character) < 32 and character not in "\n\t" for character in text):
            raise ActionError("text may hold no control characters but newline and tab", f"{at}.text")
        return Action("type", text=text)
    return Action(kind, keys=held)  # type: ignore[arg-type]  # keypress, screenshot, wait


def _integer(item: Mapping[str, object], name: str, at: str) -> int:
    value = item.get(name)
    if not isinstance(value, int) or isinstance(value, bool):
        raise ActionError(f"{name} must be an integer", f"{at}.{name}")
    return value


def _coordinate(item: Mapping[str, object], name: str, size: int, at: str) -> int:
    value = _integer(item, name, at)
    if not 0 <= value < size:
        raise ActionError(f"{name} must be within the screen: 0 to {size - 1}, got {value}", f"{at}.{name}")
    return value


def _keys(raw: object, at: str, *, required: bool) -> tuple[str, ...]:
    if raw is None and not required:
        return ()
    if not isinstance(raw, list) or not raw or len(raw) > MAX_KEYS:
        raise ActionError(f"keys must be a list of 1 to {MAX_KEYS} key names", at)
    found = []
    for index, key in enumerate(raw):
        name = keysym(key) if isinstance(key, str) else None
        if name is None:
            raise ActionError(f"unknown key {key!r} (e.g. CTRL, SHIFT, ALT, META, ENTER, TAB, ESC, ARROWLEFT, "
                              "BACKSPACE, F5, a, 1)", f"{at}[{index}]")
        found.append(name)
    return tuple(found)


def steps_for(action: Action) -> list[list[str]]:
    """xdotool's argument lists that perform ``action`` (one invocation each; a batch's are run in order). Buttons are
    pressed and released with ``mousedown``/``mouseup``, keys with ``--delay 0``: xdotool's ``click`` sleeps 100 ms
    after each click and its key commands 12 ms, which nothing here needs (the screen's settling is waited for)."""
    combination = "+".join(action.keys)
    down = ["keydown", "--delay", "0", combination] if action.keys else []
    up = ["keyup", "--delay", "0", "+".join(reversed(action.keys))] if action.keys else []
    if action.type in ("screenshot", "wait"):
        return []
    if action.type == "type":
        return [["type", "--delay", "0", "--", action.text]] if action.text else []
    if action.type == "keypress":
        return [["key", "--delay", "0", "--", combination]]
    x, y = action.points[0]
    move = ["mousemove", str(x), str(y)]
    if action.type == "move":
        return [[*move, *down, *up]] if down else [move]
    if action.type == "click":
        return [[*move, *down, *_press(action.button), *up]]
    if action.type == "double_click":
        return [[*move, *down, *_press(1), *_press(1), *up]]
    if action.type == "scroll":
        words = [*move, *down]
        for distance, (back, forth) in zip(action.scroll, ((6, 7), (4, 5)), strict=True):
            if distance:
                clicks = min(MAX_SCROLL_CLICKS, -(-abs(distance) // SCROLL_STEP))  # rounded up: at least one
                words += _press(forth if distance > 0 else back) * clicks
        return [[*words, *up]]
    # drag: press at the first point, move through the others, release at the last
    words = [*move, *down, "mousedown", "1"]
    for px, py in action.points[1:]:
        words += ["mousemove", str(px), str(py)]
    return [[*words, "mouseup", "1", *up]]


def _press(button: int) -> list[str]:
    return ["mousedown", str(button), "mouseup", str(button)]


SETTLE = ["settle"]
"""A step of the desktop's own, not xdotool's: wait until the screen shows the last key's effect (bounded: agent.py)
before the next action's input. The browser gives a key to the page first and takes it as its own shortcut only
once the page let it pass (CTRL+L: the address bar), while the keys sent after it are already on their way to the
page — so an address typed right after CTRL+L in one batch landed partly in the page, and its Enter sent the rest
to a search."""


def batch_steps(actions: Sequence[Action]) -> list[list[str]]:
    """The steps of every action, in order; after a key press that more input follows, :data:`SETTLE`."""
    steps: list[list[str]] = []
    for index, action in enumerate(actions):
        steps += steps_for(action)
        if action.type == "keypress" and any(steps_for(later) for later in actions[index + 1:]):
            steps.append(SETTLE)
    return steps
