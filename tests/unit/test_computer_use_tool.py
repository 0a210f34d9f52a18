"""``computer_use_preview``: offered to the model as one function (``computer``), its call read back as a
``computer_call`` item of the SDK's shape, and its ``computer_call_output`` replayed as a tool message plus a user
message with the screenshot, after every tool message of that turn. The GA ``computer`` tool likewise, with a batch
of ``actions`` per call, out and back."""

from __future__ import annotations

from typing import Any

import orjson
import pytest
from openai.types.responses import ResponseComputerToolCall

from responses_bridge.demo import fake_upstream
from responses_bridge.engine.options import EngineOptions
from responses_bridge.engine.responses.request_translation import build_chat_request
from responses_bridge.engine.tools.client import reader_for
from responses_bridge.engine.tools.tools import CallTarget, plan_tools
from responses_bridge.protocol.errors import APIError
from responses_bridge.protocol.responses.request import parse_request

TOOL: Any = {"type": "computer_use_preview", "display_width": 1024, "display_height": 768, "environment": "browser"}
PNG = "data:image/png;base64,iVBORw0KGgo="


def _chat(body: dict[str, Any]) -> dict[str, Any]:
    chat = build_chat_request(parse_request(orjson.dumps({"model": "m", **body})), [],
                              EngineOptions(unsupported_tools="reject"))
    fake_upstream.validate_chat_request(chat)
    return chat


def test_it_is_offered_as_a_computer_function_with_the_display() -> None:
    plan = plan_tools([TOOL], "reject")
    assert plan.dropped == [] and plan.targets["computer"].kind == "computer_use_preview"
    chat = _chat({"input": "x", "tools": [TOOL], "tool_choice": {"type": "computer_use_preview"}})
    function = chat["tools"][0]["function"]
    assert function["name"] == "computer" and "1024x768" in function["description"]
    assert "browser" in function["description"]
    assert chat["tool_choice"] == {"type": "function", "function": {"name": "computer"}}


@pytest.mark.parametrize("action", [
    {"type": "click", "button": "left", "x": 10, "y": 20},
    {"type": "drag", "path": [{"x": 1, "y": 2}, {"x": 3, "y": 4}]},
    {"type": "keypress", "keys": ["CTRL", "L"]},
    {"type": "scroll", "x": 1, "y": 2, "scroll_x": 0, "scroll_y": 300},
    {"type": "type", "text": "hello"},
    {"type": "screenshot"},
])
def test_a_call_becomes_a_computer_call_item(action: dict[str, Any]) -> None:
    reader = reader_for(CallTarget("computer_use_preview"), "call_1", 0)
    reader.close(orjson.dumps({**action, "text": action.get("text"), "unrelated": 1}).decode(), "completed")
    item = ResponseComputerToolCall.model_validate(reader.item)
    assert item.status == "completed" and item.call_id == "call_1"
    assert reader.item["action"] == action


@pytest.mark.parametrize("arguments", ['{"type": "click", "x": 1}', '{"type": "teleport"}', '{"type": "cli'])
def test_an_action_that_is_not_one_becomes_an_incomplete_screenshot(arguments: str) -> None:
    reader = reader_for(CallTarget("computer_use_preview"), "call_1", 0)
    reader.close(arguments, "completed")
    assert reader.item["action"] == {"type": "screenshot"} and reader.item["status"] == "incomplete"


def test_outputs_replay_with_the_screenshot_after_the_turns_tool_messages() -> None:
    weather = {"type": "function", "name": "get_weather", "parameters": {"type": "object", "properties": {}}}
    chat = _chat({"tools": [TOOL, weather], "input": [
        {"role": "user", "content": "go"},
        {"type": "computer_call", "call_id": "c1", "action": {"type": "move", "x": 5, "y": 6}, "status": "completed"},
        {"type": "function_call", "call_id": "c2", "name": "get_weather", "arguments": "{}"},
        {"type": "computer_call_output", "call_id": "c1",
         "output": {"type": "computer_screenshot", "image_url": PNG}},
        {"type": "function_call_output", "call_id": "c2", "output": "sunny"},
    ]})
    assistant, first, second, screen = chat["messages"][1:]
    assert [call["function"]["name"] for call in assistant["tool_calls"]] == ["computer", "get_weather"]
    assert orjson.loads(assistant["tool_calls"][0]["function"]["arguments"]) == {"type": "move", "x": 5, "y": 6}
    assert (first["role"], first["tool_call_id"], second["tool_call_id"]) == ("tool", "c1", "c2")
    assert screen["role"] == "user" and screen["content"][1]["image_url"]["url"] == PNG


@pytest.mark.parametrize(("item", "param"), [
    ({"type": "computer_call", "call_id": "c", "action": {"type": "click", "x": 1, "y": 2}},
     "input[0].action.button"),
    ({"type": "computer_call", "action": {"type": "wait"}}, "input[0].call_id"),
    ({"type": "computer_call_output", "call_id": "c", "output": {"type": "computer_screenshot", "file_id": "f"}},
     "input[0].output.image_url"),
    ({"type": "computer_call_output", "call_id": "c", "output": "png"}, "input[0].output"),
])
def test_malformed_items_are_400s_naming_the_field(item: dict[str, Any], param: str) -> None:
    with pytest.raises(APIError) as error:
        parse_request(orjson.dumps({"model": "m", "input": [item]}))
    assert error.value.status == 400 and error.value.param == param


@pytest.mark.parametrize(("tool", "param"), [
    ({**TOOL, "display_width": "1024"}, "tools[0].display_width"),
    ({**TOOL, "environment": "amiga"}, "tools[0].environment"),
])
def test_a_tool_without_its_display_is_a_400(tool: dict[str, Any], param: str) -> None:
    with pytest.raises(APIError) as error:
        parse_request(orjson.dumps({"model": "m", "input": "x", "tools": [tool]}))
    assert error.value.param == param


# --- the GA computer tool: a batch of actions per call ------------------------------------------------------------

GA: Any = {"type": "computer"}
BATCH = [{"type": "click", "button": "left", "x": 10, "y": 20}, {"type": "type", "text": "hello"},
         {"type": "keypress", "keys": ["ENTER"]}]


@pytest.mark.parametrize("choice", [{"type": "computer"}, {"type": "computer_use"}])
def test_the_ga_tool_is_offered_as_a_computer_function_taking_a_batch(choice: dict[str, Any]) -> None:
    plan = plan_tools([GA], "reject")
    assert plan.dropped == [] and plan.targets["computer"].kind == "computer"
    chat = _chat({"input": "x", "tools": [GA], "tool_choice": choice})
    function = chat["tools"][0]["function"]
    assert function["name"] == "computer" and function["parameters"]["required"] == ["actions"]
    assert function["parameters"]["properties"]["actions"]["items"]["required"] == ["type"]
    assert chat["tool_choice"] == {"type": "function", "function": {"name": "computer"}}


def test_both_computer_tools_get_a_name_each() -> None:
    plan = plan_tools([TOOL, GA], "reject")
    assert {name: target.kind for name, target in plan.targets.items()} == {
        "computer": "computer_use_preview", "computer_2": "computer"}


def test_a_batched_call_becomes_a_computer_call_with_actions() -> None:
    reader = reader_for(CallTarget("computer"), "call_1", 0)
    assert ResponseComputerToolCall.model_validate(reader.item, strict=True).actions == []  # as announced
    reader.close(orjson.dumps({"actions": [{**action, "unrelated": 1} for action in BATCH]}).decode(), "completed")
    item = ResponseComputerToolCall.model_validate(reader.item, strict=True)
    assert item.status == "completed" and item.action is None and reader.item["actions"] == BATCH


@pytest.mark.parametrize("arguments", ['{"actions": []}', '{"actions": [{"type": "click", "x": 1}]}',
                                       '{"type": "screenshot"}', '{"actions": [{"type": "wait"}, {"type": "fly"}]}',
                                       '{"actions": [{"ty'])
def test_a_batch_with_an_action_that_is_not_one_runs_none_of_it(arguments: str) -> None:
    reader = reader_for(CallTarget("computer"), "call_1", 0)
    reader.close(arguments, "completed")
    assert reader.item["actions"] == [{"type": "screenshot"}] and reader.item["status"] == "incomplete"


def test_a_batched_call_sent_back_replays_as_the_call_the_model_made() -> None:
    chat = _chat({"tools": [GA], "input": [
        {"role": "user", "content": "go"},
        {"type": "computer_call", "call_id": "c1", "actions": BATCH, "status": "completed",
         "pending_safety_checks": []},
        {"type": "computer_call_output", "call_id": "c1",
         "output": {"type": "computer_screenshot", "image_url": PNG}},
    ]})
    assistant, result, screen = chat["messages"][1:]
    call = assistant["tool_calls"][0]["function"]
    assert call["name"] == "computer" and orjson.loads(call["arguments"]) == {"actions": BATCH}
    assert (result["role"], result["tool_call_id"]) == ("tool", "c1")
    assert screen["content"][1]["image_url"]["url"] == PNG


@pytest.mark.parametrize(("actions", "param"), [
    ([], "input[0].actions"),
    ("click", "input[0].actions"),
    ([{"type": "wait"}, {"type": "click", "x": 1, "y": 2}], "input[0].actions[1].button"),
])
def test_a_malformed_batch_sent_back_is_a_400_naming_the_action(actions: Any, param: str) -> None:
    with pytest.raises(APIError) as error:
        parse_request(orjson.dumps({"model": "m", "input": [
            {"type": "computer_call", "call_id": "c", "actions": actions}]}))
    assert error.value.status == 400 and error.value.param == param


def _screens(count: int) -> list[dict[str, Any]]:
    """``count`` GA computer calls and their screenshots, each its own turn of the model."""
    items: list[dict[str, Any]] = [{"role": "user", "content": "go"}]
    for index in range(count):
        items += [{"type": "computer_call", "call_id": f"c{index}", "actions": [{"type": "screenshot"}],
                   "status": "completed"},
                  {"type": "computer_call_output", "call_id": f"c{index}",
                   "output": {"type": "computer_screenshot", "image_url": f"{PNG}{index}"}}]
    return items


@pytest.mark.parametrize(("kept", "count"), [(3, 5), (1, 2), (3, 3), (None, 5)])
def test_only_the_newest_screenshots_are_sent(kept: int | None, count: int) -> None:
    chat = build_chat_request(parse_request(orjson.dumps({"model": "m", "tools": [{"type": "computer"}],
                                                          "input": _screens(count)})), [],
                              EngineOptions(screenshots_kept=kept))
    fake_upstream.validate_chat_request(chat)
    images = [part["image_url"]["url"] for message in chat["messages"] if isinstance(message["content"], list)
              for part in message["content"] if part["type"] == "image_url"]
    shown = count if kept is None else min(kept, count)
    assert images == [f"{PNG}{index}" for index in range(count - shown, count)]
    notes = [message["content"] for message in chat["messages"] if message["role"] == "user"
             and isinstance(message["content"], str) and "is left out" in message["content"]]
    assert notes == [f"(The screenshot after computer call c{index} is left out: only the newest {kept} are shown.)"
                     for index in range(count - shown)]
    assert len(chat["messages"]) == 1 + 3 * count  # every call still answered: a tool message, then the user's


@pytest.mark.parametrize("tool", [{"type": "computer"}, TOOL])
def test_a_model_that_reads_no_images_is_refused_the_computer_tools(tool: dict[str, Any]) -> None:
    request = parse_request(orjson.dumps({"model": "m", "tools": [tool], "input": "x"}))
    with pytest.raises(APIError) as refused:
        build_chat_request(request, [], EngineOptions(images=False))
    assert refused.value.status == 400 and refused.value.param == "tools" and "'images'" in refused.value.message
    build_chat_request(request, [], EngineOptions())  # the default: allowed
    plain = parse_request(orjson.dumps({"model": "m", "input": "x"}))
    build_chat_request(plain, [], EngineOptions(images=False))  # without a computer tool: nothing refused
