"""Responses request (+ history) → Chat Completions body, one parameter per row.

Every body built here is also checked by the fake upstream's validator, which rejects what OpenAI's Chat
Completions endpoint rejects (Responses-only fields, unpaired tool messages, empty tools, bad tool_choice…).
"""

from __future__ import annotations

import base64
from typing import Any

import orjson
import pytest

from responses_bridge.demo import fake_upstream
from responses_bridge.engine.options import EngineOptions
from responses_bridge.engine.responses.request_translation import build_chat_request
from responses_bridge.protocol.errors import APIError
from responses_bridge.protocol.responses.request import parse_request

DEFAULT = EngineOptions()
# Every key a translated body may carry; anything else would be a Responses field leaking upstream.
CHAT_KEYS = {
    "model", "messages", "stream", "stream_options", "temperature", "top_p", "presence_penalty",
    "frequency_penalty", "seed", "stop", "user", "safety_identifier", "prompt_cache_key", "service_tier",
    "max_tokens", "max_completion_tokens", "logprobs", "top_logprobs", "reasoning_effort", "response_format",
    "tools", "tool_choice", "parallel_tool_calls", "verbosity", "prompt_cache_retention", "prompt_cache_options",
    "moderation",
}
WEATHER = {"type": "function", "name": "get_weather", "description": "Weather for a city", "strict": True,
           "parameters": {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"],
                          "additionalProperties": False}}
TIME = {"type": "function", "name": "get_time"}
NESTED_WEATHER = {"type": "function", "function": {
    "name": "get_weather", "description": "Weather for a city", "strict": True,
    "parameters": {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"],
                   "additionalProperties": False}}}
NESTED_TIME = {"type": "function", "function": {"name": "get_time",
                                                 "parameters": {"type": "object", "properties": {}}}}


def chat(request: dict[str, Any], options: EngineOptions = DEFAULT,
         history: list[dict[str, Any]] | None = None) -> dict[str, Any]:
    body = build_chat_request(parse_request(orjson.dumps({"model": "m", **request})), history or [], options)
    assert set(body) <= CHAT_KEYS, set(body) - CHAT_KEYS
    orjson.dumps(body)  # what goes upstream must be plain JSON
    fake_upstream.validate_chat_request(body)  # and acceptable to an OpenAI-faithful server
    return body


def rejected(request: dict[str, Any], history: list[dict[str, Any]] | None = None) -> APIError:
    with pytest.raises(APIError) as caught:
        build_chat_request(parse_request(orjson.dumps({"model": "m", **request})), history or [], DEFAULT)
    assert caught.value.status == 400
    return caught.value


def b64(data: bytes) -> str:
    return base64.b64encode(data).decode()


# --- the mapping table ---------------------------------------------------------------------------------------

MAX_COMPLETION = EngineOptions(max_tokens_field="max_completion_tokens")
DEVELOPER = EngineOptions(developer_role="developer")

# (row id, request fields, options, expected key → value (ABSENT: the key must not be there))
ABSENT = object()
ROWS: list[tuple[str, dict[str, Any], EngineOptions, dict[str, Any]]] = [
    ("minimal", {"input": "hi"}, DEFAULT,
     {"model": "m", "messages": [{"role": "user", "content": "hi"}], "stream": ABSENT, "stream_options": ABSENT,
      "tools": ABSENT, "tool_choice": ABSENT, "parallel_tool_calls": ABSENT, "max_tokens": ABSENT,
      "logprobs": ABSENT, "response_format": ABSENT, "reasoning_effort": ABSENT, "service_tier": ABSENT}),
    ("instructions", {"instructions": "Be brief.", "input": "hi"}, DEFAULT,
     {"messages": [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "hi"}]}),
    ("instructions only", {"instructions": "Say hello."}, DEFAULT,
     {"messages": [{"role": "system", "content": "Say hello."}]}),
    ("developer → system", {"input": [{"role": "developer", "content": "rules"}, {"role": "user", "content": "q"}]},
     DEFAULT, {"messages": [{"role": "system", "content": "rules"}, {"role": "user", "content": "q"}]}),
    ("developer kept", {"input": [{"role": "developer", "content": "rules"}, {"role": "user", "content": "q"}]},
     DEVELOPER, {"messages": [{"role": "developer", "content": "rules"}, {"role": "user", "content": "q"}]}),
    ("system stays system", {"input": [{"role": "system", "content": "s"}, {"role": "user", "content": "q"}]},
     DEVELOPER, {"messages": [{"role": "system", "content": "s"}, {"role": "user", "content": "q"}]}),
    ("temperature", {"input": "x", "temperature": 0.2}, DEFAULT, {"temperature": 0.2}),
    ("temperature 0", {"input": "x", "temperature": 0}, DEFAULT, {"temperature": 0}),
    ("top_p", {"input": "x", "top_p": 0.9}, DEFAULT, {"top_p": 0.9}),
    ("presence_penalty", {"input": "x", "presence_penalty": -1.5}, DEFAULT, {"presence_penalty": -1.5}),
    ("frequency_penalty", {"input": "x", "frequency_penalty": 0.5}, DEFAULT, {"frequency_penalty": 0.5}),
    ("seed", {"input": "x", "seed": 42}, DEFAULT, {"seed": 42}),
    ("stop string", {"input": "x", "stop": "END"}, DEFAULT, {"stop": "END"}),
    ("stop list", {"input": "x", "stop": ["a", "b"]}, DEFAULT, {"stop": ["a", "b"]}),
    ("user", {"input": "x", "user": "u-1"}, DEFAULT, {"user": "u-1"}),
    ("safety_identifier", {"input": "x", "safety_identifier": "sid"}, DEFAULT, {"safety_identifier": "sid"}),
    ("prompt_cache_key", {"input": "x", "prompt_cache_key": "pck"}, DEFAULT, {"prompt_cache_key": "pck"}),
    ("service_tier flex", {"input": "x", "service_tier": "flex"}, DEFAULT, {"service_tier": "flex"}),
    ("service_tier auto is the default", {"input": "x", "service_tier": "auto"}, DEFAULT, {"service_tier": ABSENT}),
    ("max_output_tokens → max_tokens", {"input": "x", "max_output_tokens": 64}, DEFAULT,
     {"max_tokens": 64, "max_completion_tokens": ABSENT}),
    ("max_output_tokens → max_completion_tokens", {"input": "x", "max_output_tokens": 64}, MAX_COMPLETION,
     {"max_completion_tokens": 64, "max_tokens": ABSENT}),
    ("top_logprobs", {"input": "x", "top_logprobs": 3}, DEFAULT, {"logprobs": True, "top_logprobs": 3}),
    ("top_logprobs 0", {"input": "x", "top_logprobs": 0}, DEFAULT, {"logprobs": ABSENT, "top_logprobs": ABSENT}),
    ("include logprobs", {"input": "x", "include": ["message.output_text.logprobs"]}, DEFAULT,
     {"logprobs": True, "top_logprobs": ABSENT}),
    ("include other", {"input": "x", "include": ["reasoning.encrypted_content"]}, DEFAULT, {"logprobs": ABSENT}),
    ("reasoning effort", {"input": "x", "reasoning": {"effort": "high", "summary": "auto"}}, DEFAULT,
     {"reasoning_effort": "high"}),
    ("reasoning without effort", {"input": "x", "reasoning": {"summary": "auto"}}, DEFAULT,
     {"reasoning_effort": ABSENT}),
    ("text format text", {"input": "x", "text": {"format": {"type": "text"}}}, DEFAULT, {"response_format": ABSENT}),
    ("text format json_object", {"input": "x", "text": {"format": {"type": "json_object"}}}, DEFAULT,
     {"response_format": {"type": "json_object"}}),
    ("text format json_schema", {"input": "x", "text": {"format": {
        "type": "json_schema", "name": "answer", "description": "d", "strict": True,
        "schema": {"type": "object", "properties": {"a": {"type": "string"}}}}}}, DEFAULT,
     {"response_format": {"type": "json_schema", "json_schema": {
         "name": "answer", "description": "d", "strict": True,
         "schema": {"type": "object", "properties": {"a": {"type": "string"}}}}}}),
    ("text format json_schema, minimal", {"input": "x", "text": {"format": {
        "type": "json_schema", "schema": {"type": "object"}}}}, DEFAULT,
     {"response_format": {"type": "json_schema", "json_schema": {"name": "response", "schema": {"type": "object"}}}}),
    ("text verbosity only", {"input": "x", "text": {"verbosity": "low"}}, DEFAULT,
     {"response_format": ABSENT, "verbosity": "low"}),
    ("no verbosity", {"input": "x", "text": {"format": {"type": "text"}}}, DEFAULT, {"verbosity": ABSENT}),
    ("tools flat → nested", {"input": "x", "tools": [WEATHER, TIME]}, DEFAULT,
     {"tools": [NESTED_WEATHER, NESTED_TIME], "tool_choice": ABSENT, "parallel_tool_calls": ABSENT}),
    ("strict false kept", {"input": "x", "tools": [dict(TIME, strict=False)]}, DEFAULT,
     {"tools": [{"type": "function", "function": {"name": "get_time", "parameters": {"type": "object",
                                                                                      "properties": {}},
                                                  "strict": False}}]}),
    ("empty tools", {"input": "x", "tools": [], "tool_choice": "auto", "parallel_tool_calls": False}, DEFAULT,
     {"tools": ABSENT, "tool_choice": ABSENT, "parallel_tool_calls": ABSENT}),
    ("tool_choice without tools", {"input": "x", "tool_choice": "required"}, DEFAULT, {"tool_choice": ABSENT}),
    ("parallel_tool_calls without tools", {"input": "x", "parallel_tool_calls": True}, DEFAULT,
     {"parallel_tool_calls": ABSENT}),
    ("parallel_tool_calls with tools", {"input": "x", "tools": [TIME], "parallel_tool_calls": False}, DEFAULT,
     {"parallel_tool_calls": False}),
    ("tool_choice auto", {"input": "x", "tools": [TIME], "tool_choice": "auto"}, DEFAULT, {"tool_choice": "auto"}),
    ("tool_choice none", {"input": "x", "tools": [TIME], "tool_choice": "none"}, DEFAULT, {"tool_choice": "none"}),
    ("tool_choice required", {"input": "x", "tools": [TIME], "tool_choice": "required"}, DEFAULT,
     {"tool_choice": "required"}),
    ("tool_choice function", {"input": "x", "tools": [WEATHER, TIME],
                              "tool_choice": {"type": "function", "name": "get_time"}}, DEFAULT,
     {"tool_choice": {"type": "function", "function": {"name": "get_time"}}}),
    ("allowed_tools filters", {"input": "x", "tools": [WEATHER, TIME], "tool_choice": {
        "type": "allowed_tools", "mode": "required", "tools": [{"type": "function", "name": "get_time"}]}}, DEFAULT,
     {"tools": [NESTED_TIME], "tool_choice": "required"}),
    ("allowed_tools default mode", {"input": "x", "tools": [WEATHER, TIME], "tool_choice": {
        "type": "allowed_tools", "tools": [{"type": "function", "name": "get_weather"}]}}, DEFAULT,
     {"tools": [NESTED_WEATHER], "tool_choice": "auto"}),
    ("allowed_tools none allowed", {"input": "x", "tools": [WEATHER], "tool_choice": {
        "type": "allowed_tools", "mode": "auto", "tools": [{"type": "function", "name": "other"}]}}, DEFAULT,
     {"tools": ABSENT, "tool_choice": ABSENT}),
    ("stream", {"input": "x", "stream": True}, DEFAULT,
     {"stream": True, "stream_options": {"include_usage": True}}),
    ("no stream", {"input": "x", "stream": False}, DEFAULT, {"stream": ABSENT, "stream_options": ABSENT}),
    ("responses-only fields stay home", {
        "input": "x", "store": False, "metadata": {"a": "b"}, "truncation": "auto", "max_tool_calls": 2,
        "background": False, "previous_response_id": None, "stream_options": {"include_obfuscation": False}}, DEFAULT,
     {"stream_options": ABSENT}),
]


@pytest.mark.parametrize(("request_fields", "options", "expected"), [row[1:] for row in ROWS],
                         ids=[row[0] for row in ROWS])
def test_mapping(request_fields: dict[str, Any], options: EngineOptions, expected: dict[str, Any]) -> None:
    body = chat(request_fields, options)
    for key, value in expected.items():
        if value is ABSENT:
            assert key not in body, (key, body)
        else:
            assert body.get(key) == value, (key, body.get(key))


@pytest.mark.parametrize(("request_fields", "param"), [
    ({"input": "x", "text": {"format": {"type": "json_schema", "name": "a"}}}, "text.format.schema"),
    ({"input": "x", "text": {"format": {"type": "yaml"}}}, "text.format.type"),
    ({"input": [], "instructions": None}, "input"),
    ({}, "input"),
])
def test_untranslatable_requests_are_400(request_fields: dict[str, Any], param: str) -> None:
    assert rejected(request_fields).param == param


def test_hosted_tools_are_named_in_the_error_when_the_policy_rejects_them() -> None:
    # the default policy (drop) is tested in tests/unit/test_tools.py
    with pytest.raises(APIError) as caught:
        build_chat_request(parse_request(orjson.dumps({"model": "m", "input": "x", "tools": [
            {"type": "web_search"}, {"type": "file_search"}]})), [], EngineOptions(unsupported_tools="reject"))
    error = caught.value
    assert error.status == 400 and error.code == "unsupported_tool_type" and error.param == "tools"
    assert "file_search" in error.message and "web_search" in error.message


# --- history folding -------------------------------------------------------------------------------------------


def test_assistant_text_and_calls_fold_into_one_message_followed_by_tool_messages() -> None:
    body = chat({"tools": [WEATHER, TIME], "input": [
        {"role": "user", "content": "Weather and time in Paris?"},
        {"role": "assistant", "content": "Let me look."},
        {"type": "function_call", "call_id": "call_a", "name": "get_weather", "arguments": '{"city":"Paris"}'},
        {"type": "function_call", "call_id": "call_b", "name": "get_time", "arguments": "{}"},
        {"type": "function_call_output", "call_id": "call_a", "output": "18C"},
        {"type": "function_call_output", "call_id": "call_b", "output": "12:00"},
        {"role": "assistant", "content": "18C at noon."},
        {"role": "user", "content": "Thanks"},
    ]})
    assert body["messages"] == [
        {"role": "user", "content": "Weather and time in Paris?"},
        {"role": "assistant", "content": "Let me look.", "tool_calls": [
            {"id": "call_a", "type": "function", "function": {"name": "get_weather", "arguments": '{"city":"Paris"}'}},
            {"id": "call_b", "type": "function", "function": {"name": "get_time", "arguments": "{}"}},
        ]},
        {"role": "tool", "tool_call_id": "call_a", "content": "18C"},
        {"role": "tool", "tool_call_id": "call_b", "content": "12:00"},
        {"role": "assistant", "content": "18C at noon."},
        {"role": "user", "content": "Thanks"},
    ]


def test_calls_without_text_make_an_assistant_message_with_null_content() -> None:
    body = chat({"tools": [TIME], "input": [
        {"role": "user", "content": "time?"},
        {"type": "function_call", "call_id": "c1", "name": "get_time", "arguments": "{}"},
        {"type": "function_call_output", "call_id": "c1", "output": "noon"},
        {"type": "function_call", "call_id": "c2", "name": "get_time", "arguments": "{}"},
        {"type": "function_call_output", "call_id": "c2", "output": "still noon"},
    ]})
    assert [m["role"] for m in body["messages"]] == ["user", "assistant", "tool", "assistant", "tool"]
    assert body["messages"][1] == {"role": "assistant", "content": None, "tool_calls": [
        {"id": "c1", "type": "function", "function": {"name": "get_time", "arguments": "{}"}}]}
    assert body["messages"][3]["tool_calls"][0]["id"] == "c2"


def test_history_comes_before_the_new_input_and_after_instructions() -> None:
    history = parse_request(orjson.dumps({"model": "m", "input": [
        {"role": "user", "content": "first"},
        {"role": "assistant", "content": [{"type": "output_text", "text": "one", "annotations": []}]},
    ]})).input_items
    body = chat({"instructions": "sys", "input": "second"}, history=history)
    assert body["messages"] == [
        {"role": "system", "content": "sys"}, {"role": "user", "content": "first"},
        {"role": "assistant", "content": "one"}, {"role": "user", "content": "second"},
    ]


def test_consecutive_assistant_messages_are_joined() -> None:
    body = chat({"input": [{"role": "user", "content": "q"}, {"role": "assistant", "content": "a"},
                           {"role": "assistant", "content": "b"}, {"role": "user", "content": "q2"}]})
    assert body["messages"][1] == {"role": "assistant", "content": "a\n\nb"}


def test_assistant_refusal_in_history() -> None:
    body = chat({"input": [{"role": "user", "content": "bad"},
                           {"role": "assistant", "content": [{"type": "refusal", "refusal": "No."}]},
                           {"role": "user", "content": "ok"}]})
    assert body["messages"][1] == {"role": "assistant", "content": "", "refusal": "No."}


REASONING_HISTORY = [
    {"role": "user", "content": "2+2?"},
    {"type": "reasoning", "summary": [{"type": "summary_text", "text": "short"}],
     "content": [{"type": "reasoning_text", "text": "It is 4."}]},
    {"role": "assistant", "content": "4"},
    {"role": "user", "content": "and 3+3?"},
]


def test_reasoning_is_dropped_by_default() -> None:
    body = chat({"input": REASONING_HISTORY})
    assert body["messages"][1] == {"role": "assistant", "content": "4"}


def test_reasoning_can_be_replayed_as_reasoning_content() -> None:
    body = chat({"input": REASONING_HISTORY}, EngineOptions(reasoning_history="reasoning_content"))
    assert body["messages"][1] == {"role": "assistant", "content": "4", "reasoning_content": "It is 4."}


def test_reasoning_before_a_server_call_goes_on_the_calls_message() -> None:
    """A turn that reasoned, then called an MCP tool: its reasoning goes back on the assistant message carrying the
    call (as the tool loop's next turn sent it), not on a later message after the call's result."""
    history = [{"type": "message", "id": "msg_1", "role": "user", "content": [{"type": "input_text", "text": "add"}]},
               {"type": "reasoning", "id": "rs_1", "summary": [],
                "content": [{"type": "reasoning_text", "text": "I should add."}]},
               {"type": "mcp_call", "id": "mcp_1", "server_label": "tools", "name": "add",
                "arguments": '{"a": 1}', "output": "2", "error": None, "status": "completed"},
               {"type": "message", "id": "msg_2", "role": "assistant", "status": "completed",
                "content": [{"type": "output_text", "text": "It is 2.", "annotations": []}]}]
    body = chat({"input": "thanks"}, EngineOptions(reasoning_history="reasoning_content"), history)
    assert body["messages"][1:4] == [
        {"role": "assistant", "content": None, "reasoning_content": "I should add.", "tool_calls": [
            {"id": "mcp_1", "type": "function", "function": {"name": "tools__add", "arguments": '{"a": 1}'}}]},
        {"role": "tool", "tool_call_id": "mcp_1", "content": "2"},
        {"role": "assistant", "content": "It is 2."}]


def test_single_text_part_becomes_a_string_and_several_parts_a_list() -> None:
    body = chat({"input": [{"role": "user", "content": [{"type": "input_text", "text": "one"}]},
                           {"role": "user", "content": [{"type": "input_text", "text": "a"}, "b"]}]})
    assert body["messages"][0]["content"] == "one"
    assert body["messages"][1]["content"] == [{"type": "text", "text": "a"}, {"type": "text", "text": "b"}]


def test_input_image_becomes_an_image_url_part() -> None:
    body = chat({"input": [{"role": "user", "content": [
        {"type": "input_text", "text": "What is this?"},
        {"type": "input_image", "image_url": "https://example.com/cat.png", "detail": "high"},
        {"type": "input_image", "image_url": "data:image/png;base64,iVBORw0KGgo="},
    ]}]})
    assert body["messages"][0]["content"] == [
        {"type": "text", "text": "What is this?"},
        {"type": "image_url", "image_url": {"url": "https://example.com/cat.png", "detail": "high"}},
        {"type": "image_url", "image_url": {"url": "data:image/png;base64,iVBORw0KGgo=", "detail": "auto"}},
    ]


def file_content(**part: Any) -> list[dict[str, Any]]:
    body = chat({"input": [{"role": "user", "content": [{"type": "input_text", "text": "see file"},
                                                        {"type": "input_file", **part}]}]})
    return body["messages"][0]["content"]


def test_text_file_data_becomes_a_text_part() -> None:
    text = "name,age\nAda,36\n"
    assert file_content(filename="people.csv", file_data=f"data:text/csv;base64,{b64(text.encode())}")[1] == {
        "type": "text", "text": f"[file: people.csv]\n{text}"}
    # no media type: the filename says it is text
    assert file_content(filename="notes.md", file_data=b64("# Hi ✓".encode()))[1] == {
        "type": "text", "text": "[file: notes.md]\n# Hi ✓"}
    assert file_content(file_data=f"data:application/json;base64,{b64(b'{}')}")[1] == {"type": "text", "text": "{}"}


def test_text_file_that_is_not_base64_utf8_is_a_400() -> None:
    for data in ("data:text/plain;base64,***", "data:text/plain;base64," + b64(b"\xff\xfe")):
        error = rejected({"input": [{"role": "user", "content": [{"type": "input_file", "file_data": data}]}]})
        assert error.param == "input_file.file_data"


def test_pdf_file_data_becomes_a_file_part() -> None:
    pdf = "data:application/pdf;base64," + b64(b"%PDF-1.4 fake")
    assert file_content(filename="paper.pdf", file_data=pdf)[1] == {
        "type": "file", "file": {"file_data": pdf, "filename": "paper.pdf"}}
    assert file_content(file_data=pdf)[1] == {"type": "file", "file": {"file_data": pdf}}
    # raw base64 without a text-like name is sent as a data URL
    raw = b64(b"\x00\x01binary")
    assert file_content(filename="blob.bin", file_data=raw)[1] == {
        "type": "file", "file": {"file_data": f"data:application/octet-stream;base64,{raw}", "filename": "blob.bin"}}


def test_file_url_data_is_used_but_http_is_a_400() -> None:
    data_url = f"data:text/plain;base64,{b64(b'inline')}"
    assert file_content(file_url=data_url)[1] == {"type": "text", "text": "inline"}
    for url in ("https://example.com/a.pdf", "http://example.com/a.txt", "file:///etc/passwd"):
        error = rejected({"input": [{"role": "user", "content": [{"type": "input_file", "file_url": url}]}]})
        assert error.param == "input_file.file_url" and error.code == "unsupported_parameter"


def test_function_call_output_forms() -> None:
    def tool_content(output: Any) -> Any:
        body = chat({"tools": [TIME], "input": [
            {"type": "function_call", "call_id": "c", "name": "get_time", "arguments": "{}"},
            {"type": "function_call_output", "call_id": "c", "output": output}]})
        return body["messages"][1]["content"]

    assert tool_content("noon") == "noon"
    assert tool_content({"time": "noon"}) == '{"time":"noon"}'
    assert tool_content([{"type": "input_text", "text": "no"}, {"type": "input_text", "text": "on"}]) == "noon"


def test_function_call_output_with_an_image_keeps_the_parts() -> None:
    body = build_chat_request(parse_request(orjson.dumps({"model": "m", "input": [
        {"type": "function_call", "call_id": "c", "name": "shot", "arguments": "{}"},
        {"type": "function_call_output", "call_id": "c", "output": [
            {"type": "input_text", "text": "screenshot:"}, {"type": "input_image", "image_url": "https://x/s.png"}]},
    ]})), [], DEFAULT)
    assert body["messages"][1]["content"] == [
        {"type": "text", "text": "screenshot:"},
        {"type": "image_url", "image_url": {"url": "https://x/s.png", "detail": "auto"}}]


def test_translation_does_not_mutate_the_request() -> None:
    request = parse_request(orjson.dumps({"model": "m", "tools": [WEATHER], "input": [
        {"role": "user", "content": "q"}, {"role": "assistant", "content": "a"}]}))
    before = orjson.dumps([request.input_items, request.params.model_dump()])
    build_chat_request(request, [], DEFAULT)
    build_chat_request(request, [], DEFAULT)
    assert orjson.dumps([request.input_items, request.params.model_dump()]) == before
