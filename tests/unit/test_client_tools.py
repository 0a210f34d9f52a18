"""Client-executed tools besides functions (engine/tools/tools.py, engine/tools/client.py): custom, shell, apply_patch
and client tool_search, offered as functions and read back as their own items and events, both ways."""

from __future__ import annotations

from typing import Any

import openai.types.responses as sdk
import orjson
import pytest
from pydantic import TypeAdapter

from responses_bridge.engine.options import EngineOptions
from responses_bridge.engine.responses.output_builder import OutputBuilder
from responses_bridge.engine.responses.request_translation import build_chat_request, plan_request_tools
from responses_bridge.engine.responses.response_object import new_response
from responses_bridge.engine.sse import DONE_FRAME, encode_event
from responses_bridge.engine.tools.client import StringFieldDecoder
from responses_bridge.protocol.errors import APIError
from responses_bridge.protocol.responses.request import parse_request
from tests.support.schema import check_stream, validate_response

CUSTOM = {"type": "custom", "name": "code_exec", "description": "Runs Python code."}
GRAMMAR = {"type": "custom", "name": "math", "format": {"type": "grammar", "syntax": "lark",
                                                         "definition": "start: NUMBER \"+\" NUMBER"}}
SHELL = {"type": "shell", "environment": {"type": "local"}}
PATCH = {"type": "apply_patch"}
SEARCH = {"type": "tool_search", "execution": "client", "description": "Find tools."}
DEFERRED = {"type": "function", "name": "get_weather", "defer_loading": True,
            "parameters": {"type": "object", "properties": {"city": {"type": "string"}}}}
FN = {"type": "function", "name": "shell", "parameters": {"type": "object", "properties": {}}}

INPUT_ITEMS = TypeAdapter(list[sdk.ResponseInputItemParam])


def request_of(fields: dict[str, Any]) -> Any:
    return parse_request(orjson.dumps({"model": "m", **fields}))


def chat(fields: dict[str, Any], history: list[dict[str, Any]] | None = None) -> dict[str, Any]:
    return build_chat_request(request_of(fields), history or [], EngineOptions())


def offered(body: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {tool["function"]["name"]: tool["function"] for tool in body.get("tools", [])}


# --- request side ------------------------------------------------------------------------------------------------


def test_custom_tools_are_functions_with_one_string_argument() -> None:
    functions = offered(chat({"input": "x", "tools": [CUSTOM, GRAMMAR]}))
    assert functions["code_exec"]["parameters"]["properties"] == {
        "input": {"type": "string", "description": "The tool's input, as free-form text."}}
    assert functions["code_exec"]["parameters"]["required"] == ["input"]
    assert functions["code_exec"]["description"] == "Runs Python code."
    assert "lark grammar" in functions["math"]["description"]
    assert 'start: NUMBER "+" NUMBER' in functions["math"]["description"]


def test_shell_apply_patch_and_client_tool_search_are_offered() -> None:
    functions = offered(chat({"input": "x", "tools": [SHELL, PATCH, SEARCH]}))
    assert set(functions) == {"shell", "apply_patch", "tool_search"}
    assert functions["shell"]["parameters"]["required"] == ["commands"]
    assert functions["apply_patch"]["parameters"]["properties"]["type"]["enum"] == [
        "create_file", "update_file", "delete_file"]
    assert functions["tool_search"]["description"] == "Find tools."


def test_server_tool_search_follows_the_unsupported_tool_policy() -> None:
    assert "tools" not in chat({"input": "x", "tools": [{"type": "tool_search"}]})
    with pytest.raises(APIError) as error:
        build_chat_request(request_of({"input": "x", "tools": [{"type": "tool_search", "execution": "server"}]}),
                           [], EngineOptions(unsupported_tools="reject"))
    assert error.value.code == "unsupported_tool_type" and "tool_search" in error.value.message


def test_a_name_taken_by_a_function_gets_a_suffix_and_calls_stay_apart() -> None:
    request = request_of({"input": "x", "tools": [FN, SHELL, {"type": "custom", "name": "shell"}]})
    plan = plan_request_tools(request, [], EngineOptions())
    names = [tool["name"] for tool in plan.functions]
    assert names == ["shell", "shell_2", "shell_3"]
    assert "shell" not in plan.targets  # the client's own function
    assert plan.targets["shell_2"].kind == "shell"
    assert plan.targets["shell_3"].kind == "custom" and plan.targets["shell_3"].name == "shell"


def test_deferred_functions_wait_for_the_client_search() -> None:
    assert set(offered(chat({"input": "x", "tools": [SEARCH, DEFERRED]}))) == {"tool_search"}
    assert set(offered(chat({"input": "x", "tools": [DEFERRED]}))) == {"get_weather"}  # nothing could load it
    loaded = chat({"tools": [SEARCH, DEFERRED], "input": [
        {"role": "user", "content": "weather?"},
        {"type": "tool_search_call", "call_id": "s1", "execution": "client", "arguments": {"query": "weather"}},
        {"type": "tool_search_output", "call_id": "s1", "execution": "client", "tools": [
            {"type": "function", "name": "get_weather", "parameters": {"type": "object"}},
            {"type": "custom", "name": "forecast"}]}]})
    assert set(offered(loaded)) == {"tool_search", "get_weather", "forecast"}
    assert loaded["messages"][1]["tool_calls"][0]["function"] == {"name": "tool_search",
                                                                  "arguments": '{"query":"weather"}'}
    assert loaded["messages"][2] == {"role": "tool", "tool_call_id": "s1",
                                     "content": "Tools loaded: get_weather, forecast"}


def test_tools_loaded_in_history_are_offered_too() -> None:
    history = [{"type": "tool_search_output", "id": "tso_1", "call_id": "s1", "execution": "client",
                "status": "completed", "tools": [DEFERRED]}]
    assert "get_weather" in offered(chat({"input": "x", "tools": [SEARCH]}, history))


INPUT = [
    {"role": "user", "content": "go"},
    {"type": "custom_tool_call", "call_id": "c1", "name": "code_exec", "input": "print('hi')"},
    {"type": "custom_tool_call_output", "call_id": "c1", "output": "hi"},
    {"type": "shell_call", "call_id": "c2", "action": {"commands": ["ls", "pwd"], "timeout_ms": 1000},
     "status": "completed"},
    {"type": "shell_call_output", "call_id": "c2", "output": [
        {"stdout": "a.txt\n", "stderr": "", "outcome": {"type": "exit", "exit_code": 0}},
        {"stdout": "", "stderr": "slow", "outcome": {"type": "timeout"}}]},
    {"type": "apply_patch_call", "call_id": "c3", "status": "completed",
     "operation": {"type": "update_file", "path": "a.txt", "diff": "-a\n+b"}},
    {"type": "apply_patch_call_output", "call_id": "c3", "status": "failed", "output": "no such line"},
]


def test_client_tool_items_are_accepted_as_the_sdk_sends_them() -> None:
    INPUT_ITEMS.validate_python(INPUT)  # the shapes are the SDK's own
    items = request_of({"input": INPUT}).input_items
    assert [item["type"] for item in items] == ["message", "custom_tool_call", "custom_tool_call_output",
                                                "shell_call", "shell_call_output", "apply_patch_call",
                                                "apply_patch_call_output"]
    assert items[3]["action"] == {"commands": ["ls", "pwd"], "timeout_ms": 1000, "max_output_length": None}


def test_client_tool_items_become_tool_calls_and_tool_messages() -> None:
    messages = chat({"input": INPUT, "tools": [CUSTOM, SHELL, PATCH]})["messages"]
    calls = [message["tool_calls"][0]["function"] for message in messages if message.get("tool_calls")]
    assert calls == [{"name": "code_exec", "arguments": '{"input":"print(\'hi\')"}'},
                     {"name": "shell", "arguments": '{"commands":["ls","pwd"],"timeout_ms":1000}'},
                     {"name": "apply_patch", "arguments": '{"type":"update_file","path":"a.txt","diff":"-a\\n+b"}'}]
    outputs = [message["content"] for message in messages if message["role"] == "tool"]
    assert outputs == ["hi", "a.txt\n\n(exit code 0)\nstderr:\nslow\n(timed out)", "failed: no such line"]


@pytest.mark.parametrize(("tool", "param"), [
    ({"type": "custom"}, "tools[0].name"),
    ({"type": "custom", "name": "x", "format": {"type": "grammar", "syntax": "ebnf", "definition": "x"}},
     "tools[0].format.syntax"),  # outside the SDK's enumeration (protocol/known_fields.py)
    ({"type": "custom", "name": "x", "description": 5}, "tools[0].description"),
    ({"type": "tool_search", "execution": "client", "parameters": "query"}, "tools[0].parameters"),
    ({"type": "tool_search", "execution": "client", "description": ["x"]}, "tools[0].description"),
])
def test_malformed_client_tools_are_400s_naming_the_field(tool: dict[str, Any], param: str) -> None:
    with pytest.raises(APIError) as error:
        request_of({"input": "x", "tools": [tool]})
    assert error.value.status == 400 and error.value.param == param


@pytest.mark.parametrize(("item", "param"), [
    ({"type": "shell_call", "call_id": "c", "action": {"commands": "ls"}}, "input[0].action.commands"),
    ({"type": "apply_patch_call", "call_id": "c", "operation": {"type": "rename"}}, "input[0].operation"),
    ({"type": "apply_patch_call_output", "call_id": "c", "status": "done"}, "input[0].status"),
    ({"type": "custom_tool_call", "call_id": "c", "name": "x"}, "input[0].input"),
    ({"type": "tool_search_output", "call_id": "c", "tools": [{"type": "function"}]}, "input[0].tools[0].name"),
])
def test_malformed_client_tool_items_are_400s_naming_the_field(item: dict[str, Any], param: str) -> None:
    with pytest.raises(APIError) as error:
        request_of({"input": [item]})
    assert error.value.status == 400 and error.value.param == param


def test_a_custom_tool_choice_names_its_function() -> None:
    body = chat({"input": "x", "tools": [FN, SHELL, CUSTOM], "tool_choice": {"type": "shell"}})
    assert body["tool_choice"] == {"type": "function", "function": {"name": "shell_2"}}
    body = chat({"input": "x", "tools": [CUSTOM], "tool_choice": {"type": "custom", "name": "code_exec"}})
    assert body["tool_choice"] == {"type": "function", "function": {"name": "code_exec"}}


# --- answer side -------------------------------------------------------------------------------------------------


def run_builder(fields: dict[str, Any], calls: list[tuple[str, list[str]]], *, stream: bool = True
                ) -> tuple[dict[str, Any], list[dict[str, Any]]]:
    """Feed tool calls (name, argument pieces) as a streaming upstream sends them; the response and its events."""
    request = request_of({"input": "x", "stream": stream, **fields})
    plan = plan_request_tools(request, [], EngineOptions())
    response = new_response("resp_1", request)
    builder = OutputBuilder(response, encode_event if stream else None, targets=plan.targets)
    builder.lifecycle("response.created")
    for index, (name, pieces) in enumerate(calls):
        builder.feed({"choices": [{"index": 0, "delta": {"tool_calls": [
            {"index": index, "id": f"call_{index}", "type": "function", "function": {"name": name,
                                                                                    "arguments": ""}}]}}]})
        for piece in pieces:
            builder.feed({"choices": [{"index": 0, "delta": {"tool_calls": [
                {"index": index, "function": {"arguments": piece}}]}}]})
    builder.feed({"choices": [{"index": 0, "delta": {}, "finish_reason": "tool_calls"}]})
    builder.finish(1)
    validate_response(response)
    return response, (check_stream(builder.take() + DONE_FRAME) if stream else [])


def pieces(text: str, size: int) -> list[str]:
    return [text[i:i + size] for i in range(0, len(text), size)]


@pytest.mark.parametrize("size", [1, 3, 8, 1000])
def test_custom_tool_call_input_streams_as_it_is_decoded(size: int) -> None:
    code = 'print("hé\\n") # 😀 \\u00e9'
    arguments = orjson.dumps({"input": code}).decode()
    response, events = run_builder({"tools": [CUSTOM]}, [("code_exec", pieces(arguments, size))])
    item = response["output"][0]
    assert item == {"id": item["id"], "type": "custom_tool_call", "call_id": "call_0", "name": "code_exec",
                    "input": code}
    kinds = [event["type"] for event in events]
    assert kinds[:2] == ["response.created", "response.output_item.added"]
    assert kinds[-3:] == ["response.custom_tool_call_input.done", "response.output_item.done", "response.completed"]
    deltas = [event["delta"] for event in events if event["type"] == "response.custom_tool_call_input.delta"]
    assert "".join(deltas) == code
    if size < len(arguments):
        assert len(deltas) > 1  # streamed, not given at the end in one piece


def test_custom_input_that_is_not_the_offered_json_is_taken_as_is() -> None:
    response, _events = run_builder({"tools": [CUSTOM]}, [("code_exec", ["1 + ", "1"])])
    assert response["output"][0]["input"] == "1 + 1"


def test_shell_call_with_its_command_events() -> None:
    arguments = '{"commands": ["ls -la", "cat a.txt"], "timeout_ms": 5000}'
    response, events = run_builder({"tools": [FN, SHELL]}, [("shell_2", pieces(arguments, 5)),
                                                            ("shell", ["{}"])])
    shell, function = response["output"]
    assert shell["type"] == "shell_call" and shell["call_id"] == "call_0" and shell["status"] == "completed"
    assert shell["action"] == {"commands": ["ls -la", "cat a.txt"], "timeout_ms": 5000, "max_output_length": None}
    assert function["type"] == "function_call" and function["name"] == "shell"  # the client's own function
    commands = [(event["type"].rsplit(".", 1)[1], event["command_index"]) for event in events
                if event["type"].startswith("response.shell_call_command.")]
    assert commands == [("added", 0), ("delta", 0), ("done", 0), ("added", 1), ("delta", 1), ("done", 1)]


def test_apply_patch_and_tool_search_calls() -> None:
    patch = '{"type": "create_file", "path": "new.py", "diff": "+x = 1\\n"}'
    response, _ = run_builder({"tools": [PATCH, SEARCH]}, [("apply_patch", pieces(patch, 7)),
                                                           ("tool_search", ['{"query": "weather"}'])])
    apply_patch, search = response["output"]
    assert apply_patch["type"] == "apply_patch_call" and apply_patch["status"] == "completed"
    assert apply_patch["operation"] == {"type": "create_file", "path": "new.py", "diff": "+x = 1\n"}
    assert search["type"] == "tool_search_call" and search["execution"] == "client"
    assert search["arguments"] == {"query": "weather"} and search["call_id"] == "call_1"


def test_a_json_answer_gives_the_same_items() -> None:
    streamed, _ = run_builder({"tools": [CUSTOM, SHELL]}, [("code_exec", ['{"input": "x=1"}']),
                                                           ("shell", ['{"commands": ["ls"]}'])])
    whole, _ = run_builder({"tools": [CUSTOM, SHELL]}, [("code_exec", ['{"input": "x=1"}']),
                                                        ("shell", ['{"commands": ["ls"]}'])], stream=False)
    strip = [{key: value for key, value in item.items() if key != "id"} for item in streamed["output"]]
    assert strip == [{key: value for key, value in item.items() if key != "id"} for item in whole["output"]]


def test_an_output_item_replays_as_the_call_it_was() -> None:
    response, _ = run_builder({"tools": [CUSTOM, SHELL, PATCH]}, [
        ("code_exec", ['{"input": "x=1"}']), ("shell", ['{"commands": ["ls"]}']),
        ("apply_patch", ['{"type": "delete_file", "path": "a"}'])])
    body = chat({"tools": [CUSTOM, SHELL, PATCH], "input": "next"}, response["output"] + [
        {"type": "custom_tool_call_output", "call_id": "call_0", "output": "ok"},
        {"type": "shell_call_output", "call_id": "call_1", "output": []},
        {"type": "apply_patch_call_output", "call_id": "call_2", "status": "completed"}])
    calls = body["messages"][0]["tool_calls"]
    assert [(call["id"], call["function"]["name"]) for call in calls] == [
        ("call_0", "code_exec"), ("call_1", "shell"), ("call_2", "apply_patch")]
    assert orjson.loads(calls[2]["function"]["arguments"]) == {"type": "delete_file", "path": "a"}


def test_string_field_decoder_waits_for_split_escapes() -> None:
    decoder = StringFieldDecoder()
    out = [decoder.feed(piece) for piece in ['{"in', 'put": "a\\', 'n\\u00', 'e9\\ud83d', '\\ude00b"', ', "x": "y"}']]
    assert out == ["", "a", "\n", "é", "😀b", ""]


@pytest.mark.parametrize("choice", [{"type": "shell"}, {"type": "apply_patch"},
                                    {"type": "custom", "name": "code_exec"}])
def test_client_tool_choices_are_echoed_in_the_sdk_shape(choice: dict[str, Any]) -> None:
    request = request_of({"input": "x", "tools": [SHELL, PATCH, CUSTOM], "tool_choice": choice})
    response = new_response("resp_1", request)
    response.update(status="completed", completed_at=1)
    validate_response(response)
    assert response["tool_choice"] == choice


def test_a_stream_cut_mid_call_fails_with_the_partial_items() -> None:
    request = request_of({"input": "x", "stream": True, "tools": [CUSTOM, SHELL]})
    plan = plan_request_tools(request, [], EngineOptions())
    response = new_response("resp_1", request)
    builder = OutputBuilder(response, encode_event, targets=plan.targets)
    builder.lifecycle("response.created")
    builder.feed({"choices": [{"index": 0, "delta": {"tool_calls": [
        {"index": 0, "id": "c0", "type": "function", "function": {"name": "code_exec", "arguments": '{"input": "ab'}},
        {"index": 1, "id": "c1", "type": "function", "function": {"name": "shell", "arguments": '{"comm'}}]}}]})
    builder.fail("upstream_connection_error", "cut")
    events = check_stream(builder.take() + DONE_FRAME)
    assert events[-1]["type"] == "response.failed"
    custom, shell = events[-1]["response"]["output"]
    assert custom["input"] == "ab"  # what had been decoded, not the raw JSON
    assert shell["status"] == "incomplete" and shell["action"]["commands"] == []


def test_a_shell_call_in_plain_text_is_one_command() -> None:
    response, _events = run_builder({"tools": [SHELL]}, [("shell", ["ls ", "-la"])])
    assert response["output"][0]["action"]["commands"] == ["ls -la"]
    response, _events = run_builder({"tools": [SHELL]}, [("shell", ['{"commands": ["rm -rf /tmp/x"'])])
    assert response["output"][0]["action"]["commands"] == []  # broken JSON: nothing is made up from it


def test_a_custom_tool_inside_a_namespace() -> None:
    namespace = {"type": "namespace", "name": "mcp", "description": "Server tools.",
                 "tools": [{"type": "custom", "name": "query"}, {"type": "function", "name": "query_fn"}]}
    assert set(offered(chat({"input": "x", "tools": [namespace]}))) == {"mcp__query", "mcp__query_fn"}
    response, _events = run_builder({"tools": [namespace]}, [("mcp__query", ['{"input": "select 1"}'])])
    item = response["output"][0]
    assert (item["type"], item["namespace"], item["name"], item["input"]) == ("custom_tool_call", "mcp", "query",
                                                                              "select 1")
    replayed = chat({"tools": [namespace], "input": "next"}, [
        item, {"type": "custom_tool_call_output", "call_id": item["call_id"], "output": "1"}])
    assert replayed["messages"][0]["tool_calls"][0]["function"]["name"] == "mcp__query"


def test_allowed_tools_may_name_client_tools_of_every_kind() -> None:
    body = chat({"input": "x", "tools": [FN, SHELL, PATCH, CUSTOM], "tool_choice": {
        "type": "allowed_tools", "mode": "required", "tools": [{"type": "shell"}, {"type": "custom",
                                                                                   "name": "code_exec"}]}})
    assert [tool["function"]["name"] for tool in body["tools"]] == ["shell_2", "code_exec"]
    assert body["tool_choice"] == "required"
    choice = {"type": "allowed_tools", "mode": "auto", "tools": [{"type": "shell"}, {"type": "custom", "name": "x"}]}
    response = new_response("resp_1", request_of({"input": "x", "tools": [SHELL, CUSTOM], "tool_choice": choice}))
    response.update(status="completed", completed_at=1)
    validate_response(response)
    assert response["tool_choice"] == choice
