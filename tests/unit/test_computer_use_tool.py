"""``computer_use_preview``: offered to the model as one function (``computer``), its call read back as a
``computer_call`` item of the SDK's shape, and its ``computer_call_output`` replayed as a tool message plus a user
message with the screenshot, after every tool message of that turn."""

from __future__ import annotations

from typing import Any

import orjson
import pytest
from openai.types.responses import ResponseComputerToolCall

from responses_bridge.devtools import fake_upstream
from responses_bridge.engine.client_tools import reader_for
from responses_bridge.engine.options import EngineOptions
from responses_bridge.engine.request_translation import build_chat_request
from responses_bridge.engine.tools import CallTarget, plan_tools
from responses_bridge.protocol.errors import APIError
from responses_bridge.protocol.request import parse_request

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
