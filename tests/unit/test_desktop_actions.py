"""OpenAI's computer actions parsed strictly (sandbox/desktop/actions.py): every field checked, a bad one named in
the error, coordinates bounded by the screen, keys mapped to X keysyms; and each action's xdotool arguments."""

from __future__ import annotations

import pytest

from responses_bridge.sandbox.desktop import ActionError, parse_actions
from responses_bridge.sandbox.desktop.actions import SETTLE, batch_steps, keysym, steps_for

W, H = 1280, 800


def _steps(raw: list[object]) -> list[list[str]]:
    return [step for action in parse_actions(raw, W, H) for step in steps_for(action)]


def test_each_ga_action_becomes_xdotools_arguments() -> None:
    assert _steps([{"type": "click", "button": "right", "x": 10, "y": 20, "keys": ["CTRL", "SHIFT"]}]) == [
        ["mousemove", "10", "20", "keydown", "--delay", "0", "Control_L+Shift_L", "mousedown", "3", "mouseup", "3",
         "keyup", "--delay", "0", "Shift_L+Control_L"]]
    assert _steps([{"type": "click", "button": "back", "x": 0, "y": 0}])[0][-4:] == ["mousedown", "8", "mouseup", "8"]
    assert _steps([{"type": "double_click", "x": 5, "y": 6}]) == [
        ["mousemove", "5", "6", "mousedown", "1", "mouseup", "1", "mousedown", "1", "mouseup", "1"]]
    assert _steps([{"type": "drag", "path": [{"x": 1, "y": 2}, {"x": 3, "y": 4}, {"x": 5, "y": 6}]}]) == [
        ["mousemove", "1", "2", "mousedown", "1", "mousemove", "3", "4", "mousemove", "5", "6", "mouseup", "1"]]
    assert _steps([{"type": "keypress", "keys": ["CTRL", "ARROWLEFT"]}]) == [
        ["key", "--delay", "0", "--", "Control_L+Left"]]
    assert _steps([{"type": "move", "x": 7, "y": 8}]) == [["mousemove", "7", "8"]]
    assert _steps([{"type": "scroll", "x": 1, "y": 2, "scroll_x": 0, "scroll_y": 250}]) == [
        ["mousemove", "1", "2", *["mousedown", "5", "mouseup", "5"] * 3]]
    assert _steps([{"type": "scroll", "x": 1, "y": 2, "scroll_x": -40, "scroll_y": -100}])[0][3:] == [
        "mousedown", "6", "mouseup", "6", "mousedown", "4", "mouseup", "4"]
    assert _steps([{"type": "type", "text": "-- hi\n"}]) == [["type", "--delay", "0", "--", "-- hi\n"]]
    assert _steps([{"type": "screenshot"}, {"type": "wait"}]) == []


def test_key_names_map_to_keysyms() -> None:
    assert [keysym(key) for key in ("ENTER", "meta", "Cmd", "ESC", "PageDown", "F12", "a", "Z", "7", "/", "+")] == [
        "Return", "Super_L", "Super_L", "Escape", "Next", "F12", "a", "z", "7", "slash", "plus"]
    assert keysym("HYPERSPACE") is None and keysym("F99") is None and keysym("é") is None


@pytest.mark.parametrize(("raw", "param", "said"), [
    ({"actions": []}, "actions", "must be a list"),
    ([{"type": "explode"}], "actions[0].type", "unknown action type"),
    ([{"type": "screenshot"}, "click"], "actions[1]", "must be an object"),
    ([{"type": "click", "button": "middle", "x": 1, "y": 1}], "actions[0].button", "one of left, right, wheel"),
    ([{"type": "click", "button": "left", "x": W, "y": 1}], "actions[0].x", "within the screen: 0 to 1279"),
    ([{"type": "move", "x": 1, "y": -1}], "actions[0].y", "within the screen"),
    ([{"type": "move", "x": 1.5, "y": 1}], "actions[0].x", "must be an integer"),
    ([{"type": "move", "x": True, "y": 1}], "actions[0].x", "must be an integer"),
    ([{"type": "move", "y": 1}], "actions[0].x", "must be an integer"),
    ([{"type": "move", "x": 1, "y": 1, "z": 3}], "actions[0].z", "has no field 'z'"),
    ([{"type": "keypress", "keys": []}], "actions[0].keys", "1 to 8 key names"),
    ([{"type": "keypress", "keys": ["CTRL", "HYPER"]}], "actions[0].keys[1]", "unknown key 'HYPER'"),
    ([{"type": "click", "button": "left", "x": 1, "y": 1, "keys": "CTRL"}], "actions[0].keys", "list"),
    ([{"type": "drag", "path": [{"x": 1, "y": 1}]}], "actions[0].path", "2 to 200 points"),
    ([{"type": "drag", "path": [{"x": 1, "y": 1}, {"x": 1, "y": H}]}], "actions[0].path[1].y", "within the screen"),
    ([{"type": "scroll", "x": 1, "y": 1, "scroll_y": 3}], "actions[0].scroll_x", "must be an integer"),
    ([{"type": "type", "text": 5}], "actions[0].text", "must be a string"),
    ([{"type": "type", "text": "a\x1bb"}], "actions[0].text", "control characters"),
    ([{"type": "wait"}] * 101, "actions", "at most 100"),
])
def test_a_bad_action_is_an_error_naming_its_field(raw: object, param: str, said: str) -> None:
    with pytest.raises(ActionError, match=said) as refused:
        parse_actions(raw, W, H)
    assert refused.value.param == param
    assert refused.value.status == 400  # the OpenAI-shaped error a door answers with
    assert refused.value.payload() == {"message": str(refused.value), "type": "invalid_request_error",
                                       "param": param, "code": "invalid_value"}


def test_keys_may_be_null_on_a_pointer_action() -> None:
    assert parse_actions([{"type": "move", "x": 1, "y": 1, "keys": None}], W, H)[0].keys == ()


def test_only_a_call_that_asks_may_make_user_namespaces() -> None:
    """The desktop's call drops ``--disable-userns`` and the filter's namespace refusals (Chromium's own sandbox
    needs them); every other call keeps both, and both filters refuse the same everything else."""
    from responses_bridge.sandbox.command import bwrap_command
    from responses_bridge.sandbox.limits import SandboxLimits
    from responses_bridge.sandbox.seccomp import compiled_filter

    def command(user_namespaces: bool) -> list[str]:
        return bwrap_command("bwrap", SandboxLimits(), control_fd=3, info_fd=4, address_space=0,
                             user_namespaces=user_namespaces)

    assert "--disable-userns" in command(False) and "--disable-userns" not in command(True)
    pytest.importorskip("pyseccomp")
    assert compiled_filter(False, user_namespaces=True) != compiled_filter(False)
    assert len(compiled_filter(False, user_namespaces=True)) < len(compiled_filter(False))  # fewer rules


def test_a_key_press_that_more_input_follows_waits_for_its_effect() -> None:
    """actions.py's SETTLE after a key press with input after it in the batch (a shortcut's effect before the keys
    after it), never after the last input nor for a key press only followed by waiting."""

    batch = batch_steps(parse_actions([{"type": "keypress", "keys": ["CTRL", "L"]}, {"type": "type", "text": "a"},
                                       {"type": "keypress", "keys": ["ENTER"]}, {"type": "wait"}], W, H))
    assert batch == [["key", "--delay", "0", "--", "Control_L+l"], SETTLE, ["type", "--delay", "0", "--", "a"],
                     ["key", "--delay", "0", "--", "Return"]]
    assert SETTLE not in batch_steps(parse_actions([{"type": "type", "text": "a"}, {"type": "click", "button": "left",
                                                                                    "x": 1, "y": 1}], W, H))
