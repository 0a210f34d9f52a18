"""Compatibility profiles: the table, each switch in request translation, and the recorded llama.cpp exchanges
replayed over a socket against the fake upstream with the same quirks, with and without the profile."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from dataclasses import asdict
from typing import Any

import aiohttp
import orjson
import pytest

from responses_bridge.config.settings import Settings
from responses_bridge.demo import fake_server
from responses_bridge.engine.options import EngineOptions
from responses_bridge.engine.responses.profiles import PROFILES, SWITCHES, ProfileSwitches, options_for
from responses_bridge.engine.responses.request_translation import build_chat_request
from responses_bridge.engine.responses.turns import ToolResult, follow_up_request
from responses_bridge.engine.tools.tools import ToolPlan
from responses_bridge.engine.tools.turn_result import TurnResult
from responses_bridge.protocol.responses.request import parse_request
from tests.unit import recordings

LLAMACPP = options_for(EngineOptions(), "llamacpp")
WEATHER = {"type": "function", "name": "get_weather",
           "parameters": {"type": "object", "properties": {"city": {"type": "string"}}}}
CALL = {"type": "function_call", "call_id": "call_1", "name": "get_weather", "arguments": '{"city":"Oslo"}'}
OUTPUT = {"type": "function_call_output", "call_id": "call_1", "output": "Rain, 8 C"}


def chat(request: dict[str, Any], options: EngineOptions) -> dict[str, Any]:
    return build_chat_request(parse_request(orjson.dumps({"model": "m", **request})), [], options)


# --- the table -----------------------------------------------------------------------------------------------


def test_generic_is_the_behaviour_before_profiles() -> None:
    assert options_for(EngineOptions(), "generic") == EngineOptions()
    assert {name: getattr(EngineOptions(), name) for name in SWITCHES} == asdict(ProfileSwitches())


def test_every_profile_of_the_issue_exists_and_sets_every_switch() -> None:
    assert set(PROFILES) == {"vllm", "ollama", "llamacpp", "openai", "generic"}
    for name in PROFILES:
        options = options_for(EngineOptions(), name)
        assert {switch: getattr(options, switch) for switch in SWITCHES} == asdict(PROFILES[name])


def test_switches_set_one_by_one_win_over_the_profile_and_the_rest_comes_from_base() -> None:
    base = EngineOptions(context_window=4096, unsupported_tools="reject", max_event_bytes=2048)
    options = options_for(base, "llamacpp", {"tool_result_role": "tool", "developer_role": "developer"})
    assert options.tool_result_role == "tool" and options.developer_role == "developer"
    assert options.tool_call_content == "empty" and options.json_schema_format == "json_object"
    assert (options.context_window, options.unsupported_tools, options.max_event_bytes) == (4096, "reject", 2048)


def test_an_unknown_profile_or_switch_is_named() -> None:
    with pytest.raises(ValueError, match="'lmstudio'"):
        options_for(EngineOptions(), "lmstudio")
    with pytest.raises(ValueError, match="tool_role"):
        options_for(EngineOptions(), "generic", {"tool_role": "user"})


def test_the_profile_comes_from_the_settings_and_explicit_switches_win(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("RESPONSES_BRIDGE_PROFILE", "openai")
    assert Settings().engine_options().max_tokens_field == "max_completion_tokens"
    monkeypatch.setenv("RESPONSES_BRIDGE_MAX_TOKENS_FIELD", "max_tokens")  # the existing switch, folded in
    options = Settings().engine_options()
    assert options.max_tokens_field == "max_tokens" and options.developer_role == "developer"
    monkeypatch.delenv("RESPONSES_BRIDGE_PROFILE")
    assert Settings().engine_options() == EngineOptions(max_tokens_field="max_tokens")


# --- each switch in request translation ----------------------------------------------------------------------


@pytest.mark.parametrize(("value", "role"), [("system", "system"), ("developer", "developer")])
def test_developer_role(value: str, role: str) -> None:
    body = chat({"input": [{"role": "developer", "content": "Be brief."}, {"role": "user", "content": "Hi"}]},
                options_for(EngineOptions(), "generic", {"developer_role": value}))
    assert body["messages"][0] == {"role": role, "content": "Be brief."}


@pytest.mark.parametrize("field", ["max_tokens", "max_completion_tokens"])
def test_max_tokens_field(field: str) -> None:
    body = chat({"input": "Hi", "max_output_tokens": 7}, options_for(EngineOptions(), "generic",
                                                                       {"max_tokens_field": field}))
    assert body[field] == 7 and len({"max_tokens", "max_completion_tokens"} & set(body)) == 1


def test_reasoning_history() -> None:
    reasoning = {"type": "reasoning", "id": "rs_1", "summary": [], "content": [{"type": "reasoning_text",
                                                                                "text": "Think."}]}
    request = {"input": [{"role": "user", "content": "Hi"}, reasoning,
                         {"role": "assistant", "content": [{"type": "output_text", "text": "Hello"}]},
                         {"role": "user", "content": "Again"}]}
    kept = chat(request, options_for(EngineOptions(), "generic", {"reasoning_history": "reasoning_content"}))
    assert kept["messages"][1]["reasoning_content"] == "Think."
    assert "reasoning_content" not in chat(request, LLAMACPP)["messages"][1]


def test_tool_call_content_empty_replaces_null_in_history_and_in_the_tool_loop() -> None:
    generic = chat({"input": [{"role": "user", "content": "Weather?"}, CALL, OUTPUT], "tools": [WEATHER]},
                   EngineOptions())
    assert generic["messages"][1]["content"] is None
    body = chat({"input": [{"role": "user", "content": "Weather?"}, CALL, OUTPUT], "tools": [WEATHER]}, LLAMACPP)
    assert body["messages"][1]["content"] == "" and body["messages"][1]["tool_calls"][0]["id"] == "call_1"
    turn = TurnResult(calls=[], finish_reason="tool_calls", message={
        "role": "assistant", "content": None,
        "tool_calls": [{"id": "c9", "type": "function", "function": {"name": "lookup", "arguments": "{}"}}]})
    follow = follow_up_request({"model": "m", "messages": [{"role": "user", "content": "q"}]}, turn,
                               [ToolResult("c9", "found")], plan=ToolPlan(), options=LLAMACPP)
    assert follow["messages"][1]["content"] == ""
    assert turn.message["content"] is None  # the turn's own record is not changed


def test_tool_results_as_user_turns_name_the_tool_and_share_one_turn() -> None:
    second = {"type": "function_call", "call_id": "call_2", "name": "get_weather", "arguments": '{"city":"Rome"}'}
    items = [{"role": "user", "content": "Weather?"}, CALL, second, OUTPUT,
             {"type": "function_call_output", "call_id": "call_2", "output": "Sun, 25 C"}]
    body = chat({"input": items, "tools": [WEATHER]}, LLAMACPP)
    assert [m["role"] for m in body["messages"]] == ["user", "assistant", "user"]
    assert body["messages"][2]["content"] == ("Tool get_weather returned (id call_1):\nRain, 8 C\n\n"
                                              "Tool get_weather returned (id call_2):\nSun, 25 C")
    tool_form = chat({"input": items, "tools": [WEATHER]}, EngineOptions())
    assert [m["role"] for m in tool_form["messages"]] == ["user", "assistant", "tool", "tool"]


def test_a_result_names_the_tool_its_call_in_stored_history_called() -> None:
    history = [{"type": "message", "role": "user", "content": [{"type": "input_text", "text": "Weather?"}]}, CALL]
    body = build_chat_request(parse_request(orjson.dumps({"model": "m", "input": [OUTPUT], "tools": [WEATHER]})),
                              history, LLAMACPP)
    assert body["messages"][2] == {"role": "user", "content": "Tool get_weather returned (id call_1):\nRain, 8 C"}


def test_a_tool_result_with_an_image_keeps_its_parts_in_the_user_turn() -> None:
    image = {"type": "input_image", "image_url": "data:image/png;base64,AAAA"}
    output = {"type": "function_call_output", "call_id": "call_1",
              "output": [{"type": "input_text", "text": "The map:"}, image]}
    body = chat({"input": [{"role": "user", "content": "Map?"}, CALL, output], "tools": [WEATHER]}, LLAMACPP)
    parts = body["messages"][2]["content"]
    assert parts[0] == {"type": "text", "text": "Tool get_weather returned (id call_1):"}
    assert parts[1] == {"type": "text", "text": "The map:"} and parts[2]["type"] == "image_url"


def test_tool_loop_results_as_user_turns() -> None:
    turn = TurnResult(calls=[], finish_reason="tool_calls", message={
        "role": "assistant", "content": "Checking.",
        "tool_calls": [{"id": "c1", "type": "function", "function": {"name": "mcp_lookup", "arguments": "{}"}},
                       {"id": "c2", "type": "function", "function": {"name": "web_search", "arguments": "{}"}}]})
    follow = follow_up_request({"model": "m", "messages": [{"role": "user", "content": "q"}]}, turn,
                               [ToolResult("c1", "one"), ToolResult("c2", "two")], plan=ToolPlan(), options=LLAMACPP)
    assert follow["messages"][2] == {"role": "user", "content": "Tool mcp_lookup returned (id c1):\none\n\n"
                                                                "Tool web_search returned (id c2):\ntwo"}


SCHEMA = {"type": "object", "properties": {"ok": {"type": "boolean"}}, "required": ["ok"]}


@pytest.mark.parametrize(("value", "expected"), [
    ("json_schema", {"type": "json_schema", "json_schema": {"name": "r", "schema": SCHEMA}}),
    ("json_object", {"type": "json_object", "schema": SCHEMA}),
])
def test_json_schema_format(value: str, expected: dict[str, Any]) -> None:
    body = chat({"input": "Hi", "text": {"format": {"type": "json_schema", "name": "r", "schema": SCHEMA}}},
                options_for(EngineOptions(), "generic", {"json_schema_format": value}))
    assert body["response_format"] == expected


def test_stream_usage() -> None:
    assert chat({"input": "Hi", "stream": True}, EngineOptions())["stream_options"] == {"include_usage": True}
    body = chat({"input": "Hi", "stream": True}, options_for(EngineOptions(), "generic", {"stream_usage": False}))
    assert body["stream"] is True and "stream_options" not in body


def test_logprobs() -> None:
    request = {"input": "Hi", "top_logprobs": 2, "include": ["message.output_text.logprobs"]}
    assert chat(request, EngineOptions())["logprobs"] is True
    body = chat(request, options_for(EngineOptions(), "generic", {"logprobs": False}))
    assert "logprobs" not in body and "top_logprobs" not in body


# --- recorded llama.cpp exchanges, replayed against the fake with the same quirks ------------------------------


@pytest.fixture(scope="module")
async def llamacpp_fake() -> AsyncIterator[str]:
    runner, port = await fake_server.start(quirks="llamacpp")
    try:
        yield f"http://127.0.0.1:{port}/v1"
    finally:
        await runner.cleanup()


async def post(url: str, body: dict[str, Any]) -> tuple[int, dict[str, Any]]:
    async with aiohttp.ClientSession() as session:
        async with session.post(f"{url}/chat/completions", json=body) as response:
            return response.status, await response.json()


RECORDED = recordings.quirk_recordings()


def test_the_recordings_cover_every_llamacpp_quirk_the_issue_names() -> None:
    assert {entry["name"] for entry in RECORDED} == {"null_content", "tool_empty", "developer_role", "json_schema",
                                                     "max_completion_tokens"}


@pytest.mark.parametrize("entry", RECORDED, ids=[entry["name"] for entry in RECORDED])
async def test_a_recorded_quirk_and_the_profile_that_avoids_it(entry: dict[str, Any], llamacpp_fake: str) -> None:
    request = parse_request(json.dumps(entry["responses_request"]).encode())
    # The recorded request is what the bridge sends with the switches in force when it was made ...
    sent = build_chat_request(request, [], options_for(EngineOptions(), "generic", entry["switches"]))
    assert sent == entry["upstream_request"]
    # ... the fake, with llama.cpp's quirks, answers it as llama.cpp did ...
    recorded = entry["upstream_response"]
    status, answer = await post(llamacpp_fake, sent)
    assert status == recorded["status"]
    if status != 200:
        assert answer == recorded["body"]
    else:
        assert answer["choices"][0]["finish_reason"] == recorded["body"]["choices"][0]["finish_reason"]
        _assert_quirk_shows(entry["name"], answer, sent)
        _assert_quirk_shows(entry["name"], recorded["body"], sent)
    # ... and the llamacpp profile's translation of the same request gets through, the quirk avoided.
    fixed = build_chat_request(request, [], LLAMACPP)
    status, answer = await post(llamacpp_fake, fixed)
    assert status == 200, answer
    _assert_quirk_avoided(entry["name"], answer, fixed)


def _assert_quirk_shows(name: str, answer: dict[str, Any], sent: dict[str, Any]) -> None:
    content = answer["choices"][0]["message"]["content"]
    if name == "tool_empty":
        assert "Sunny" not in content  # the tool's result never reached the model
    elif name == "max_completion_tokens":
        assert answer["usage"]["completion_tokens"] > sent["max_completion_tokens"]


def _assert_quirk_avoided(name: str, answer: dict[str, Any], sent: dict[str, Any]) -> None:
    choice = answer["choices"][0]
    if name in ("null_content", "tool_empty"):
        assert "Sunny, 21 C" in choice["message"]["content"]  # the model read the result
    elif name == "max_completion_tokens":
        assert choice["finish_reason"] == "length" and answer["usage"]["completion_tokens"] <= sent["max_tokens"]
    elif name == "json_schema":
        assert isinstance(json.loads(choice["message"]["content"]), dict)
    elif name == "developer_role":
        assert sent["messages"][0]["role"] == "system"
