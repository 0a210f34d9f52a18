"""``local_shell``: offered to the model as a function, its call read back as a ``local_shell_call`` item (the
SDK's shape, ``exec`` action), and its ``local_shell_call_output`` (call named in ``id`` or ``call_id``) replayed to
the model as the call's tool message."""

from __future__ import annotations

from typing import Any

import orjson
import pytest
from openai.types.responses.response_output_item import LocalShellCall

from responses_bridge.demo import fake_upstream
from responses_bridge.engine.options import EngineOptions
from responses_bridge.engine.responses.request_translation import build_chat_request
from responses_bridge.engine.tools.client import reader_for
from responses_bridge.engine.tools.tools import CallTarget, plan_tools
from responses_bridge.protocol.errors import APIError
from responses_bridge.protocol.responses.request import parse_request


def _chat(body: dict[str, Any]) -> dict[str, Any]:
    request = parse_request(orjson.dumps({"model": "m", **body}))
    chat = build_chat_request(request, [], EngineOptions(unsupported_tools="reject"))
    fake_upstream.validate_chat_request(chat)
    return chat


def test_it_is_offered_as_a_function_and_never_dropped() -> None:
    plan = plan_tools([{"type": "local_shell"}], "reject")
    assert [function["name"] for function in plan.functions] == ["local_shell"]
    assert plan.targets["local_shell"].kind == "local_shell" and plan.dropped == []
    chat = _chat({"input": "x", "tools": [{"type": "local_shell"}], "tool_choice": {"type": "local_shell"}})
    assert chat["tool_choice"] == {"type": "function", "function": {"name": "local_shell"}}
    assert chat["tools"][0]["function"]["parameters"]["required"] == ["command"]


def test_a_call_becomes_a_local_shell_call_item() -> None:
    reader = reader_for(CallTarget("local_shell"), "call_1", 0)
    reader.close('{"command": ["ls", "-la"], "working_directory": "/srv", "timeout_ms": 500, "env": {"A": "1"}}',
                 "completed")
    item = LocalShellCall.model_validate(reader.item)
    assert (item.call_id, item.status, item.action.type) == ("call_1", "completed", "exec")
    assert (item.action.command, item.action.working_directory, item.action.timeout_ms, item.action.env) == (
        ["ls", "-la"], "/srv", 500, {"A": "1"})


def test_a_call_cut_off_makes_up_no_command() -> None:
    reader = reader_for(CallTarget("local_shell"), "call_1", 0)
    reader.close('{"command": ["rm", "-', "incomplete")
    assert reader.item["action"]["command"] == [] and reader.item["status"] == "incomplete"


@pytest.mark.parametrize("output_key", ["id", "call_id"])
def test_call_and_output_replay_as_a_tool_call_and_its_message(output_key: str) -> None:
    call = {"type": "local_shell_call", "id": "lsh_1", "call_id": "call_1", "status": "completed",
            "action": {"type": "exec", "command": ["ls"], "env": {}, "working_directory": "/srv"}}
    chat = _chat({"tools": [{"type": "local_shell"}], "input": [
        {"role": "user", "content": "list"}, call,
        {"type": "local_shell_call_output", output_key: "call_1", "output": "a.txt\nb.txt"}]})
    assistant, tool = chat["messages"][1], chat["messages"][2]
    assert assistant["tool_calls"][0]["function"] == {"name": "local_shell", "arguments": orjson.dumps(
        {"command": ["ls"], "working_directory": "/srv"}).decode()}
    assert tool == {"role": "tool", "tool_call_id": "call_1", "content": "a.txt\nb.txt"}


@pytest.mark.parametrize(("item", "param"), [
    ({"type": "local_shell_call", "call_id": "c", "action": {"type": "exec", "command": "ls"}},
     "input[0].action.command"),
    ({"type": "local_shell_call", "call_id": "c"}, "input[0].action"),
    ({"type": "local_shell_call_output", "output": "x"}, "input[0].call_id"),
    ({"type": "local_shell_call_output", "call_id": "c", "output": 3}, "input[0].output"),
])
def test_malformed_items_are_400s_naming_the_field(item: dict[str, Any], param: str) -> None:
    with pytest.raises(APIError) as error:
        parse_request(orjson.dumps({"model": "m", "input": [item]}))
    assert error.value.status == 400 and error.value.param == param
