"""``POST /v1/responses`` bodies: lenient about what real clients send, exact (400 + ``param``) about the rest.

Whatever the body, parsing either succeeds or raises :class:`APIError` with status 400: a fuzz test at the end
throws thousands of mutated bodies at the parser (and at the translation that follows it) to hold that line.
"""

from __future__ import annotations

import copy
import random
import re
from typing import Any

import orjson
import pytest

from responses_bridge.engine.options import EngineOptions
from responses_bridge.engine.responses.request_translation import build_chat_request
from responses_bridge.engine.responses.response_object import new_response
from responses_bridge.protocol.errors import APIError
from responses_bridge.protocol.responses.request import (
    CreateParams,
    ResponsesRequest,
    parse_request,
)

ID_RE = {prefix: re.compile(rf"^{prefix}_[0-9a-f]{{32}}$") for prefix in ("msg", "fc", "fco", "rs")}


def parse(body: dict[str, Any]) -> ResponsesRequest:
    return parse_request(orjson.dumps(body))


def items(input_value: Any) -> list[dict[str, Any]]:
    return parse({"model": "m", "input": input_value}).input_items


def rejected(body: dict[str, Any] | bytes) -> APIError:
    raw = body if isinstance(body, bytes) else orjson.dumps(body)
    with pytest.raises(APIError) as caught:
        parse_request(raw)
    assert caught.value.status == 400
    assert caught.value.type == "invalid_request_error"
    assert caught.value.message
    return caught.value


def rejected_input(input_value: Any) -> APIError:
    return rejected({"model": "m", "input": input_value})


# --- input: strings and messages -----------------------------------------------------------------------------


def test_string_input_is_one_user_message() -> None:
    request = parse({"model": "gpt-test", "input": "Hello"})
    assert request.model == "gpt-test"
    [item] = request.input_items
    assert ID_RE["msg"].match(item.pop("id"))
    assert item == {"type": "message", "status": "completed", "role": "user",
                    "content": [{"type": "input_text", "text": "Hello"}]}


def test_no_input_is_no_items() -> None:
    assert parse({"model": "m"}).input_items == []
    assert parse({"model": "m", "input": None}).input_items == []
    assert parse({"model": "m", "input": []}).input_items == []


@pytest.mark.parametrize("role", ["user", "system", "developer", "assistant"])
def test_message_with_and_without_type(role: str) -> None:
    typed = items([{"type": "message", "role": role, "content": "hi", "id": "msg_1"}])
    untyped = items([{"role": role, "content": "hi", "id": "msg_1"}])
    assert typed == untyped
    text_type = "output_text" if role == "assistant" else "input_text"
    expected_part = {"type": text_type, "text": "hi", **({"annotations": []} if role == "assistant" else {})}
    assert typed == [{"type": "message", "id": "msg_1", "status": "completed", "role": role,
                      "content": [expected_part]}]


def test_missing_and_empty_ids_are_generated_with_the_right_prefix() -> None:
    result = items([
        {"role": "user", "content": "a"},
        {"role": "user", "content": "b", "id": ""},
        {"role": "user", "content": "b", "id": None},
        {"type": "function_call", "call_id": "c1", "name": "f", "arguments": "{}"},
        {"type": "function_call_output", "call_id": "c1", "output": "ok"},
        {"type": "reasoning", "summary": []},
    ])
    prefixes = ["msg", "msg", "msg", "fc", "fco", "rs"]
    for item, prefix in zip(result, prefixes, strict=True):
        assert ID_RE[prefix].match(item["id"]), item
    assert len({item["id"] for item in result}) == len(result)


def test_given_ids_are_kept_and_must_be_strings() -> None:
    assert items([{"role": "user", "content": "a", "id": "msg_custom"}])[0]["id"] == "msg_custom"
    error = rejected_input([{"role": "user", "content": "a"}, {"role": "user", "content": "a", "id": 7}])
    assert error.param == "input[1].id" and error.code == "invalid_type"


def test_extra_fields_in_input_items_are_tolerated_but_not_on_the_request() -> None:
    error = rejected({"model": "m", "future_field": {"x": 1}})
    assert (error.param, error.code) == ("future_field", "unknown_parameter")
    request = parse({"model": "m", "prompt": None, "input": [
        {"role": "user", "content": [{"type": "input_text", "text": "t", "cache_control": {"type": "ephemeral"}}],
         "status": "whatever", "extra": 1},
    ]})
    assert request.input_items[0]["content"] == [{"type": "input_text", "text": "t"}]
    assert "extra" not in request.input_items[0]
    assert request.input_items[0]["status"] == "completed"


def test_phase_is_kept_on_assistant_messages() -> None:
    [item] = items([{"type": "message", "role": "assistant", "phase": "commentary", "content": "thinking aloud"}])
    assert item["phase"] == "commentary"
    [item] = items([{"role": "assistant", "phase": 5, "content": "x"}])  # not a string: dropped, not fatal
    assert "phase" not in item
    [item] = items([{"role": "assistant", "content": "x"}])
    assert "phase" not in item


def test_message_errors_name_the_param() -> None:
    error = rejected_input([{"role": "user", "content": "a"}, {"role": "tool", "content": "x"}])
    assert error.param == "input[1].role" and "tool" in error.message
    error = rejected_input([{"type": "message", "content": "x"}])
    assert error.param == "input[0].role" and error.code == "missing_required_parameter"
    error = rejected_input([{"role": "user"}])
    assert error.param == "input[0].content" and error.code == "missing_required_parameter"
    error = rejected_input([{"role": "user", "content": 5}])
    assert error.param == "input[0].content" and error.code == "invalid_type"
    error = rejected_input([{"role": ["user"], "content": "x"}])
    assert error.param == "input[0].role" and error.code == "invalid_type"
    error = rejected_input(["just a string"])
    assert error.param == "input[0]" and error.code == "invalid_type"
    error = rejected_input([{"content": "no role, no type"}])
    assert error.param == "input[0].type" and error.code == "missing_required_parameter"


# --- content parts -------------------------------------------------------------------------------------------


def parts(content: list[Any], role: str = "user") -> list[dict[str, Any]]:
    return items([{"role": role, "content": content}])[0]["content"]


def test_text_parts() -> None:
    assert parts([{"type": "input_text", "text": "a"}]) == [{"type": "input_text", "text": "a"}]
    assert parts([{"type": "text", "text": "a"}]) == [{"type": "input_text", "text": "a"}]
    assert parts([{"type": "text", "text": "a"}], "assistant") == [
        {"type": "output_text", "text": "a", "annotations": []}]
    assert parts(["bare string"]) == [{"type": "input_text", "text": "bare string"}]
    assert parts(["bare string"], "assistant") == [{"type": "output_text", "text": "bare string", "annotations": []}]
    annotation = {"type": "url_citation", "url": "https://x", "start_index": 0, "end_index": 1, "title": "x"}
    assert parts([{"type": "output_text", "text": "a", "annotations": [annotation], "logprobs": []}], "assistant") == [
        {"type": "output_text", "text": "a", "annotations": [annotation]}]
    assert parts([{"type": "output_text", "text": "a", "annotations": "bad"}], "assistant") == [
        {"type": "output_text", "text": "a", "annotations": []}]


def test_refusal_part() -> None:
    assert parts([{"type": "refusal", "refusal": "no"}], "assistant") == [{"type": "refusal", "refusal": "no"}]
    error = rejected_input([{"role": "assistant", "content": [{"type": "refusal"}]}])
    assert error.param == "input[0].content[0].refusal"


def test_image_part() -> None:
    assert parts([{"type": "input_image", "image_url": "https://img/x.png"}]) == [
        {"type": "input_image", "image_url": "https://img/x.png", "detail": "auto"}]
    assert parts([{"type": "input_image", "image_url": "data:image/png;base64,AAAA", "detail": "low"}]) == [
        {"type": "input_image", "image_url": "data:image/png;base64,AAAA", "detail": "low"}]
    assert parts([{"type": "input_image", "image_url": "u", "detail": "original"}])[0]["detail"] == "original"
    for odd in ("ultra", ["high"], {"x": 1}, 3):  # never quietly another value: a 400 naming it
        error = rejected_input([{"role": "user", "content": [{"type": "input_image", "image_url": "u",
                                                              "detail": odd}]}])
        assert error.param == "input[0].content[0].detail" and error.code == "invalid_value"
    assert parts([{"type": "input_image", "file_id": "file_1", "detail": "high"}]) == [
        {"type": "input_image", "file_id": "file_1", "detail": "high"}]
    error = rejected_input([{"role": "user", "content": [{"type": "input_image", "file_id": "f",
                                                          "image_url": "u"}]}])
    assert error.param == "input[0].content[0].file_id" and error.code == "invalid_value"
    error = rejected_input([{"role": "user", "content": [{"type": "input_image"}]}])
    assert error.param == "input[0].content[0].image_url" and error.code == "missing_required_parameter"
    assert "file_id" in error.message


def test_file_part() -> None:
    assert parts([{"type": "input_file", "filename": "a.txt", "file_data": "aGk=", "ignored": 1}]) == [
        {"type": "input_file", "filename": "a.txt", "file_data": "aGk="}]
    assert parts([{"type": "input_file", "file_url": "https://x/a.pdf"}]) == [
        {"type": "input_file", "file_url": "https://x/a.pdf"}]
    assert parts([{"type": "input_file", "file_id": "file_1", "detail": "low"}]) == [
        {"type": "input_file", "file_id": "file_1", "detail": "low"}]
    error = rejected_input([{"role": "user", "content": [{"type": "input_file", "filename": "a.txt"}]}])
    assert error.param == "input[0].content[0]" and error.code == "missing_required_parameter"
    assert "file_id" in error.message
    error = rejected_input([{"role": "user", "content": [{"type": "input_file", "file_id": "f",
                                                          "file_data": "aGk="}]}])
    assert error.param == "input[0].content[0].file_id" and error.code == "invalid_value"
    error = rejected_input([{"role": "user", "content": [{"type": "input_file", "file_id": "f",
                                                          "detail": "original"}]}])
    assert error.param == "input[0].content[0].detail" and error.code == "invalid_value"
    error = rejected_input([{"role": "user", "content": [{"type": "input_file", "file_data": 5}]}])
    assert error.param == "input[0].content[0].file_data" and error.code == "invalid_type"


def test_audio_part() -> None:
    assert parts([{"type": "input_audio", "input_audio": {"data": "UklG", "format": "wav"}}]) == [
        {"type": "input_audio", "input_audio": {"data": "UklG", "format": "wav"}}]
    error = rejected_input([{"role": "user", "content": [{"type": "input_audio",
                                                          "input_audio": {"data": "x", "format": "ogg"}}]}])
    assert error.param == "input[0].content[0].input_audio.format" and error.code == "invalid_value"
    error = rejected_input([{"role": "user", "content": [{"type": "input_audio"}]}])
    assert error.param == "input[0].content[0].input_audio"


@pytest.mark.parametrize("kind", ["video", None, 5, ["input_text"], {"type": "x"}])
def test_unknown_part_type_is_a_400_naming_it(kind: Any) -> None:
    error = rejected_input([{"role": "user", "content": [{"type": "input_text", "text": "ok"}, {"type": kind}]}])
    assert error.param == "input[0].content[1].type"
    assert error.code == "unsupported_content_type"
    if isinstance(kind, str):
        assert kind in error.message


def test_part_that_is_not_an_object() -> None:
    error = rejected_input([{"role": "user", "content": [5]}])
    assert error.param == "input[0].content[0]" and error.code == "invalid_type"


# --- function calls, outputs, reasoning ------------------------------------------------------------------------


def test_function_call_arguments_as_string_or_json() -> None:
    call = {"type": "function_call", "call_id": "call_1", "name": "get_weather", "id": "fc_1"}
    assert items([{**call, "arguments": '{"city":"Paris"}'}]) == [
        {"type": "function_call", "id": "fc_1", "call_id": "call_1", "name": "get_weather",
         "arguments": '{"city":"Paris"}', "status": "completed"}]
    assert items([{**call, "arguments": {"city": "Paris"}}])[0]["arguments"] == '{"city":"Paris"}'
    assert items([{**call, "arguments": [1, 2]}])[0]["arguments"] == "[1,2]"
    assert items([call])[0]["arguments"] == ""
    for status in ("in_progress", "incomplete"):
        assert items([{**call, "status": status}])[0]["status"] == status
    assert items([{**call, "status": "bogus"}])[0]["status"] == "completed"
    assert items([{**call, "status": ["x"]}])[0]["status"] == "completed"
    assert items([{**call, "namespace": "tools.weather"}])[0]["namespace"] == "tools.weather"


@pytest.mark.parametrize(("patch", "param", "code"), [
    ({"arguments": 5}, "input[0].arguments", "invalid_type"),
    ({"arguments": True}, "input[0].arguments", "invalid_type"),
    ({"call_id": None}, "input[0].call_id", "missing_required_parameter"),
    ({"call_id": 5}, "input[0].call_id", "invalid_type"),
    ({"name": None}, "input[0].name", "missing_required_parameter"),
    ({"name": {"n": 1}}, "input[0].name", "invalid_type"),
    ({"id": 1.5}, "input[0].id", "invalid_type"),
])
def test_function_call_errors(patch: dict[str, Any], param: str, code: str) -> None:
    call = {"type": "function_call", "call_id": "call_1", "name": "f", "arguments": "{}", **patch}
    error = rejected_input([{key: value for key, value in call.items() if value is not None}])
    assert (error.param, error.code) == (param, code)


def test_function_call_output_forms() -> None:
    base = {"type": "function_call_output", "call_id": "call_1", "id": "fco_1"}
    assert items([{**base, "output": "18C"}]) == [
        {"type": "function_call_output", "id": "fco_1", "call_id": "call_1", "output": "18C", "status": "completed"}]
    assert items([{**base, "output": {"temp": 18}}])[0]["output"] == '{"temp":18}'
    assert items([{**base, "output": 18}])[0]["output"] == "18"
    assert items([{**base, "output": False}])[0]["output"] == "false"
    assert items([{**base, "output": ""}])[0]["output"] == ""
    assert items([{**base, "output": [{"type": "input_text", "text": "a"}, "b",
                                      {"type": "input_image", "image_url": "u"}]}])[0]["output"] == [
        {"type": "input_text", "text": "a"}, {"type": "input_text", "text": "b"},
        {"type": "input_image", "image_url": "u", "detail": "auto"}]
    error = rejected_input([base])
    assert error.param == "input[0].output" and error.code == "missing_required_parameter"
    error = rejected_input([{**base, "output": [{"type": "nope"}]}])
    assert error.param == "input[0].output[0].type"
    # call_id is optional since SDK 3.5 (paired with its call once the history is known: test_call_outputs.py)
    assert items([{"type": "function_call_output", "output": "x", "id": "fco_2"}]) == [
        {"type": "function_call_output", "id": "fco_2", "output": "x", "status": "completed"}]
    kept = items([{**base, "output": "x", "name": "weather", "namespace": "tools", "status": "incomplete"}])[0]
    assert (kept["name"], kept["namespace"], kept["status"]) == ("weather", "tools", "incomplete")
    error = rejected_input([{**base, "output": "x", "status": "done"}])
    assert error.param == "input[0].status" and error.code == "invalid_value"
    error = rejected_input([{**base, "output": "x", "name": 3}])
    assert error.param == "input[0].name" and error.code == "invalid_type"
    error = rejected_input([{"type": "custom_tool_call_output", "output": "x"}])
    assert error.param == "input[0].call_id"


def test_function_call_async_is_kept() -> None:
    call = {"type": "function_call", "call_id": "c", "name": "f", "arguments": "{}"}
    assert items([{**call, "async": True}])[0]["async"] is True
    assert "async" not in items([call])[0]
    error = rejected_input([{**call, "async": "yes"}])
    assert error.param == "input[0].async" and error.code == "invalid_type"


def test_reasoning_items() -> None:
    [item] = items([{"type": "reasoning", "id": "rs_1", "summary": [{"type": "summary_text", "text": "s"}],
                     "content": [{"type": "reasoning_text", "text": "c"}], "encrypted_content": "enc",
                     "status": "completed"}])
    assert item == {"type": "reasoning", "id": "rs_1", "summary": [{"type": "summary_text", "text": "s"}],
                    "content": [{"type": "reasoning_text", "text": "c"}], "encrypted_content": "enc"}
    [item] = items([{"type": "reasoning", "summary": [{"text": "s"}], "content": [{"text": "c", "type": 5}]}])
    assert item["summary"] == [{"type": "summary_text", "text": "s"}]
    assert item["content"] == [{"type": "reasoning_text", "text": "c"}]
    [item] = items([{"type": "reasoning"}])
    assert item["summary"] == [] and "content" not in item
    error = rejected_input([{"type": "reasoning", "summary": "text"}])
    assert error.param == "input[0].summary" and error.code == "invalid_type"
    error = rejected_input([{"type": "reasoning", "summary": [{"type": "summary_text"}]}])
    assert error.param == "input[0].summary[0]"
    error = rejected_input([{"type": "reasoning", "summary": [], "content": ["x"]}])
    assert error.param == "input[0].content[0]"


def test_item_references_typed_and_untyped() -> None:
    assert items([{"type": "item_reference", "id": "msg_1"}, {"id": "fc_2"}]) == [
        {"type": "item_reference", "id": "msg_1"}, {"type": "item_reference", "id": "fc_2"}]
    error = rejected_input([{"type": "item_reference"}])
    assert error.param == "input[0].id" and error.code == "missing_required_parameter"
    error = rejected_input([{"id": "msg_1", "content": "no role, no type"}])
    assert error.param == "input[0].type" and error.code == "missing_required_parameter"


@pytest.mark.parametrize("kind", ["mystery", 7, True])
def test_unknown_item_type_is_a_400_naming_it(kind: Any) -> None:
    error = rejected_input([
        {"role": "user", "content": "a"},
        {"type": "function_call_output", "call_id": "c", "output": "o"},
        {"type": kind, "id": "x"},
    ])
    assert error.param == "input[2].type"
    assert error.code == "unsupported_item_type"
    assert str(kind) in error.message


# --- top-level fields ----------------------------------------------------------------------------------------

# One wrong-typed value per documented field; each must be a 400 that names the field.
WRONG_TYPES: list[tuple[str, Any]] = [
    ("model", 5), ("model", ["m"]), ("input", 5), ("input", {"role": "user"}), ("input", True),
    ("instructions", 5), ("instructions", ["x"]), ("stream", "yes"), ("stream", 1), ("store", "no"),
    ("store", 0), ("background", "true"), ("previous_response_id", 5), ("conversation", 5), ("conversation", []),
    ("tools", {}), ("tools", "get_weather"), ("tools", [5]), ("tool_choice", 5), ("tool_choice", ["auto"]),
    ("parallel_tool_calls", "true"), ("parallel_tool_calls", 1), ("temperature", "hot"), ("temperature", True),
    ("top_p", []), ("presence_penalty", {}), ("frequency_penalty", "0"), ("top_logprobs", 1.5),
    ("top_logprobs", "2"), ("max_output_tokens", "10"), ("max_output_tokens", 10.5), ("max_tool_calls", "1"),
    ("text", 5), ("text", "json"), ("text", {"format": "json"}), ("text", {"verbosity": 3}), ("reasoning", "high"),
    ("reasoning", {"effort": 5}), ("reasoning", {"summary": True}), ("metadata", []), ("metadata", "x"),
    ("metadata", {"k": 5}), ("include", "x"), ("include", [5]), ("truncation", "sometimes"), ("truncation", 1),
    ("service_tier", 5), ("safety_identifier", 5), ("prompt_cache_key", {}), ("user", 5), ("seed", "1"),
    ("prompt_cache_retention", 24), ("prompt_cache_options", "12h"), ("moderation", "omni-moderation-latest"),
    ("context_management", {"type": "compaction"}), ("access_programs", "standard"), ("image", "auto"),
    ("seed", 1.5), ("stop", 5), ("stop", [1]), ("stream_options", 5), ("stream_options", "include_usage"),
    ("prompt", "pmpt_1"), ("prompt", {"version": "1"}), ("prompt", {"id": "p", "version": 2}),
    ("prompt", {"id": "p", "variables": []}), ("conversation", {"id": 5}),
]
OUT_OF_RANGE: list[tuple[str, Any]] = [
    ("text", {"verbosity": "loud"}),
    ("temperature", 2.5), ("temperature", -0.1), ("top_p", 1.01), ("top_p", -1), ("presence_penalty", 3),
    ("frequency_penalty", -2.5), ("top_logprobs", 21), ("top_logprobs", -1), ("max_output_tokens", 0),
    ("max_tool_calls", -1),
]


@pytest.mark.parametrize(("field", "value"), WRONG_TYPES + OUT_OF_RANGE)
def test_wrong_top_level_value_is_a_400_naming_the_field(field: str, value: Any) -> None:
    error = rejected({"model": "m", "input": "x", field: value})
    assert error.param is not None and (error.param == field or error.param.startswith((f"{field}.", f"{field}["))), \
        (field, error)
    assert error.code in {"invalid_type", "invalid_value", "missing_required_parameter"}


def test_every_documented_field_is_covered_by_the_wrong_type_table() -> None:
    assert {field for field, _ in WRONG_TYPES} == set(CreateParams.model_fields)


def test_nullable_fields_accept_null_as_their_default() -> None:
    body = {field: None for field in CreateParams.model_fields}
    body["model"] = "m"
    params = parse(body).params
    assert params.stream is False and params.store is True and params.background is False
    assert params.temperature is None and params.tools is None and params.metadata is None


def test_documented_values_are_accepted() -> None:
    params = parse({
        "model": "m", "input": "x", "instructions": "i", "stream": True, "store": False, "background": False,
        "previous_response_id": "resp_1", "tools": [], "tool_choice": "required", "parallel_tool_calls": False,
        "temperature": 0, "top_p": 1, "presence_penalty": -2, "frequency_penalty": 2, "top_logprobs": 20,
        "max_output_tokens": 1, "max_tool_calls": 0, "text": {"format": {"type": "text"}, "verbosity": "low"},
        "reasoning": {"effort": "low", "summary": "auto"}, "metadata": {"k": "v"},
        "include": ["message.output_text.logprobs"], "truncation": "auto", "service_tier": "flex",
        "safety_identifier": "u1", "prompt_cache_key": "p", "user": "u", "seed": 3, "stop": ["\n"],
        "stream_options": {"include_obfuscation": False},
    }).params
    assert params.temperature == 0 and params.top_p == 1 and params.stream and not params.store
    assert params.stop == ["\n"] and params.metadata == {"k": "v"}


def test_missing_model() -> None:
    for body in ({"input": "x"}, {"model": None, "input": "x"}, {"model": "", "input": "x"}):
        error = rejected(body)
        assert error.param == "model" and error.code == "missing_required_parameter"


@pytest.mark.parametrize("raw", [b"", b"{", b'{"model": "m",}', b"{'model': 'm'}", b"\xff\xfe", b"nul",
                                 b'{"model":"m"}{"x":1}', b'{"model":"m","temperature":1e400}',
                                 b'{"model":"\\ud800"}', b"\x00"])
def test_malformed_json_is_a_400(raw: bytes) -> None:
    error = rejected(raw)
    assert error.code == "invalid_json"
    assert error.message.startswith("The request body is not valid JSON")


@pytest.mark.parametrize("raw", [b"[]", b'"model"', b"5", b"null", b"true", b'[{"model": "m"}]'])
def test_body_that_is_not_an_object_is_a_400(raw: bytes) -> None:
    error = rejected(raw)
    assert error.code == "invalid_type"


def test_metadata_limits() -> None:
    parse({"model": "m", "metadata": {f"k{i}": "v" for i in range(16)}})
    parse({"model": "m", "metadata": {"k" * 64: "v" * 512}})
    for metadata in ({f"k{i}": "v" for i in range(17)}, {"k" * 65: "v"}, {"k": "v" * 513}):
        assert rejected({"model": "m", "metadata": metadata}).param == "metadata"
    assert rejected({"model": "m", "metadata": {"k": None}}).param == "metadata.k"


def test_tools_are_checked() -> None:
    parse({"model": "m", "tools": [{"type": "function", "name": "f", "description": "d", "strict": True,
                                    "parameters": {"type": "object"}}, {"type": "web_search"}]})
    cases = [
        ([{"name": "f"}], "tools[0].type"),
        ([{"type": "function", "name": "ok"}, {"type": "function"}], "tools[1].name"),
        ([{"type": "function", "name": ""}], "tools[0].name"),
        ([{"type": "function", "name": "f", "parameters": "{}"}], "tools[0].parameters"),
        ([{"type": "function", "name": "f", "description": 5}], "tools[0].description"),
        ([{"type": "function", "name": "f", "strict": "yes"}], "tools[0].strict"),
    ]
    for tools, param in cases:
        assert rejected({"model": "m", "tools": tools}).param == param


@pytest.mark.parametrize("choice", [
    "auto", "none", "required", {"type": "function", "name": "f"},
    {"type": "allowed_tools", "mode": "auto", "tools": [{"type": "function", "name": "f"}]},
    {"type": "allowed_tools", "tools": []}, {"type": "file_search"},
])
def test_tool_choice_forms_are_accepted(choice: Any) -> None:
    assert parse({"model": "m", "tool_choice": choice}).params.tool_choice == choice


@pytest.mark.parametrize(("choice", "param"), [
    ("bogus", "tool_choice"), ("", "tool_choice"), ({}, "tool_choice.type"), ({"type": 5}, "tool_choice.type"),
    ({"type": "function"}, "tool_choice.name"),
    ({"type": "function", "function": {"name": "f"}}, "tool_choice.function"),  # the Chat Completions shape
    ({"type": "allowed_tools", "tools": "f"}, "tool_choice.tools"),
    ({"type": "allowed_tools", "tools": [{"type": "function"}]}, "tool_choice.tools[0]"),
    ({"type": "allowed_tools", "tools": [5]}, "tool_choice.tools[0]"),
    ({"type": "allowed_tools", "mode": "sometimes", "tools": []}, "tool_choice.mode"),
])
def test_bad_tool_choice_is_a_400_even_without_tools(choice: Any, param: str) -> None:
    # it is echoed in the Response whether or not tools were sent, so it must be valid either way
    assert rejected({"model": "m", "tool_choice": choice}).param == param


# --- fuzz ------------------------------------------------------------------------------------------------------

SEEDS: list[dict[str, Any]] = [
    {"model": "m", "input": "hello"},
    {
        "model": "m", "instructions": "be brief", "stream": True, "store": True, "temperature": 0.5, "top_p": 0.9,
        "max_output_tokens": 100, "top_logprobs": 2, "include": ["message.output_text.logprobs"],
        "metadata": {"a": "b"}, "reasoning": {"effort": "low", "summary": "auto"},
        "text": {"format": {"type": "json_schema", "name": "out", "schema": {"type": "object"}, "strict": True}},
        "tools": [{"type": "function", "name": "get_weather", "description": "w", "strict": True,
                   "parameters": {"type": "object", "properties": {"city": {"type": "string"}}}}],
        "tool_choice": {"type": "allowed_tools", "mode": "required",
                        "tools": [{"type": "function", "name": "get_weather"}]},
        "parallel_tool_calls": False, "stop": ["END"], "seed": 1, "service_tier": "auto",
        "input": [
            {"type": "message", "role": "developer", "content": "dev"},
            {"role": "user", "content": [
                {"type": "input_text", "text": "look"},
                {"type": "input_image", "image_url": "data:image/png;base64,AAAA", "detail": "high"},
                {"type": "input_file", "filename": "notes.txt", "file_data": "data:text/plain;base64,aGk="},
                {"type": "input_file", "filename": "a.pdf", "file_data": "data:application/pdf;base64,JVBERi0="},
            ]},
            {"type": "reasoning", "summary": [{"type": "summary_text", "text": "s"}],
             "content": [{"type": "reasoning_text", "text": "r"}]},
            {"role": "assistant", "content": [{"type": "output_text", "text": "calling"}], "phase": "commentary"},
            {"type": "function_call", "call_id": "c1", "name": "get_weather", "arguments": {"city": "Paris"}},
            {"type": "function_call_output", "call_id": "c1", "output": [{"type": "input_text", "text": "18C"}]},
            {"role": "assistant", "content": [{"type": "refusal", "refusal": "no"}]},
        ],
    },
    {"model": "m", "input": [{"role": "system", "content": "s"}, {"role": "user", "content": ["a", "b"]}],
     "tool_choice": {"type": "function", "name": "f"}, "tools": [{"type": "function", "name": "f"}],
     "text": {"format": {"type": "json_object"}, "verbosity": "high"}, "truncation": "disabled"},
]
VOCAB: list[Any] = [
    "message", "function_call", "function_call_output", "reasoning", "input_text", "output_text", "text",
    "refusal", "input_image", "input_file", "summary_text", "reasoning_text", "user", "assistant", "system",
    "developer", "tool", "function", "json_schema", "json_object", "allowed_tools", "auto", "none", "required",
    "web_search", "file_search", "model", "input", "content", "type", "role", "name", "arguments", "output",
    "call_id", "id", "tools", "tool_choice", "text", "format", "schema", "file_data", "file_url", "filename",
    "image_url", "detail", "summary", "metadata", "data:text/plain;base64,!!", "data:application/pdf;base64,AA",
    "https://example.com/a.pdf", "", " ", "\u0000", "é✓😀", "x" * 600, "message.output_text.logprobs",
]
FIELD_NAMES = list(CreateParams.model_fields)


def random_scalar(rng: random.Random) -> Any:
    return rng.choice([
        None, True, False, 0, 1, -1, 2, 21, 2**63, -(2**70), 0.5, -0.0, 1e308, -1e-308, 3.5,
        rng.choice(VOCAB), rng.choice(VOCAB),
        "".join(rng.choice("ab{}[]\":,\\ é\n") for _ in range(rng.randint(0, 8))),
    ])


def random_value(rng: random.Random, depth: int = 0) -> Any:
    roll = rng.random()
    if depth > 3 or roll < 0.5:
        return random_scalar(rng)
    if roll < 0.75:
        return [random_value(rng, depth + 1) for _ in range(rng.randint(0, 4))]
    keys = VOCAB[:45] + FIELD_NAMES
    return {rng.choice(keys): random_value(rng, depth + 1) for _ in range(rng.randint(0, 4))}


def containers(value: Any, found: list[Any]) -> list[Any]:
    if isinstance(value, (dict, list)):
        found.append(value)
        for child in (value.values() if isinstance(value, dict) else value):
            containers(child, found)
    return found


def mutate(rng: random.Random, body: dict[str, Any]) -> None:
    target = rng.choice(containers(body, []))
    if isinstance(target, dict):
        keys = list(target)
        action = rng.random()
        if keys and action < 0.45:
            target[rng.choice(keys)] = random_value(rng)
        elif keys and action < 0.6:
            del target[rng.choice(keys)]
        elif keys and action < 0.8:
            key = rng.choice(keys)
            target[key] = rng.choice(VOCAB) if not isinstance(target[key], str) else random_scalar(rng)
        else:
            target[rng.choice(VOCAB[:45] + FIELD_NAMES)] = random_value(rng)
    elif target:
        action = rng.random()
        index = rng.randrange(len(target))
        if action < 0.5:
            target[index] = random_value(rng)
        elif action < 0.7:
            del target[index]
        else:
            target.insert(index, copy.deepcopy(rng.choice(target)))
    else:
        target.append(random_value(rng))


def check_one(raw: bytes) -> str:
    """Parse, translate and build the Response skeleton; only APIError(400) may come out."""
    try:
        request = parse_request(raw)
        build_chat_request(request, [], EngineOptions())
        new_response("resp_x", request)
    except APIError as error:
        assert error.status == 400, (error, raw[:500])
        assert error.type == "invalid_request_error"
        return "rejected"
    return "accepted"


def test_fuzz_mutated_bodies_parse_or_400() -> None:
    rng = random.Random(20240521)
    outcomes = {"accepted": 0, "rejected": 0}
    for case in range(3000):
        body = copy.deepcopy(rng.choice(SEEDS))
        for _ in range(rng.randint(1, 4)):
            mutate(rng, body)
        if rng.random() < 0.1 and body:  # sometimes the body itself is not an object
            body = rng.choice([list(body.values()), rng.choice(list(body.values())), None])
        try:
            raw = orjson.dumps(body)
        except orjson.JSONEncodeError:  # integers beyond 64 bits: send them as JSON text anyway
            raw = repr(body).encode()
        try:
            outcomes[check_one(raw)] += 1
        except Exception as exc:  # noqa: BLE001 - report the body that broke the parser
            pytest.fail(f"case {case}: {type(exc).__name__}: {exc}\nbody: {raw[:1000]!r}")
    # both branches must really be exercised, or the fuzzer tests nothing
    assert outcomes["accepted"] > 300 and outcomes["rejected"] > 300, outcomes


def test_fuzz_damaged_bytes_parse_or_400() -> None:
    rng = random.Random(7)
    originals = [orjson.dumps(seed) for seed in SEEDS]
    for case in range(1000):
        raw = bytearray(rng.choice(originals))
        for _ in range(rng.randint(1, 3)):
            position = rng.randrange(len(raw) + 1)
            action = rng.random()
            if action < 0.3:
                raw = raw[:position]
            elif action < 0.6:
                raw[position:position] = bytes([rng.randrange(256)])
            elif raw:
                del raw[min(position, len(raw) - 1)]
        try:
            check_one(bytes(raw))
        except Exception as exc:  # noqa: BLE001
            pytest.fail(f"case {case}: {type(exc).__name__}: {exc}\nbody: {bytes(raw)[:1000]!r}")
