"""The request checks that a type alone does not make (protocol/request_checks.py)."""

from __future__ import annotations

import pytest

from responses_bridge.protocol.errors import APIError
from responses_bridge.protocol.request_checks import MAX_JSON_DEPTH, check_call_outputs, check_depth, check_model_name
from responses_bridge.protocol.responses.request import parse_request_object


def nested(levels: int) -> dict:
    value: dict = {}
    for _ in range(levels - 1):
        value = {"k": value}
    return value


def test_depth_limit_is_exact() -> None:
    check_depth(nested(MAX_JSON_DEPTH))
    with pytest.raises(APIError) as caught:
        check_depth(nested(MAX_JSON_DEPTH + 1))
    assert caught.value.status == 400 and caught.value.code == "nesting_too_deep"
    with pytest.raises(APIError):
        check_depth({"a": [[[[nested(MAX_JSON_DEPTH)]]]]})


def test_depth_check_has_no_recursion_limit_of_its_own() -> None:
    deep: list = []
    for _ in range(100_000):
        deep = [deep]
    with pytest.raises(APIError):
        check_depth({"x": deep})


def test_wide_bodies_pass() -> None:
    check_depth({"input": [{"type": "message", "content": [{"text": "x"}] * 10} for _ in range(5000)]})


def call(call_id: str, kind: str = "function_call") -> dict:
    return {"type": kind, "call_id": call_id, "name": "f", "arguments": "{}"}


def output(call_id: str) -> dict:
    return {"type": "function_call_output", "call_id": call_id, "output": "x"}


def test_outputs_must_follow_their_calls() -> None:
    check_call_outputs([], [call("a"), output("a")])
    check_call_outputs([call("a")], [output("a")])
    check_call_outputs([], [call("a", "custom_tool_call"), output("a")])  # any kind of call counts
    with pytest.raises(APIError) as caught:
        check_call_outputs([call("a")], [output("a"), output("b")])
    assert caught.value.param == "input[1].call_id"
    with pytest.raises(APIError):
        check_call_outputs([], [output("a"), call("a")])  # the call comes after its output


def test_history_is_not_judged_and_compaction_hides_calls() -> None:
    check_call_outputs([output("orphan")], [])  # stored before: not the client's fault now
    check_call_outputs([{"type": "compaction", "encrypted_content": "..."}], [output("summarised")])


@pytest.mark.parametrize(("field", "value", "param"), [
    ("include", ["reasoning.encrypted_content", "nope"], "include[1]"),
    ("tool_choice", {"type": "banana"}, "tool_choice.type"),
    ("model", "a\nb", "model"),
    ("model", "a\x00b", "model"),
])
def test_refused_values(field: str, value: object, param: str) -> None:
    with pytest.raises(APIError) as caught:
        parse_request_object({"model": "m", "input": "x", field: value})
    assert caught.value.param == param


@pytest.mark.parametrize("choice", ["auto", {"type": "web_search"}, {"type": "shell"}, {"type": "mcp"},
                                    {"type": "function", "name": "f"}, {"type": "custom", "name": "g"}])
def test_known_tool_choices(choice: object) -> None:
    parse_request_object({"model": "m", "input": "x", "tool_choice": choice})


def test_the_input_item_limit_is_exact_and_judged_before_the_items() -> None:
    at_limit = {"model": "m", "input": [{"role": "user", "content": "x"}] * 3}
    assert len(parse_request_object(dict(at_limit), max_input_items=3).input_items) == 3
    past = {"model": "m", "input": [{"role": "user", "content": "x"}] * 3 + [{"no": "item shape at all"}]}
    with pytest.raises(APIError) as caught:
        parse_request_object(past, max_input_items=3)  # counted before the malformed fourth item is looked at
    assert (caught.value.status, caught.value.param, caught.value.code) == (400, "input", "array_above_max_length")
    assert len(parse_request_object({"model": "m", "input": "one string"}, max_input_items=1).input_items) == 1


@pytest.mark.parametrize("model", ["a\x00b", "m\x1f", "\tm", "m\n", "m\x7f"])
def test_a_model_name_with_a_control_character_is_refused(model: str) -> None:
    with pytest.raises(APIError) as caught:
        check_model_name(model)
    assert caught.value.status == 400 and caught.value.param == "model"


@pytest.mark.parametrize("model", ["gpt-4o", "fake-model", "org/model:q4 ~1", "modèle-\x80-\u2028"])
def test_a_model_name_of_printable_or_other_characters_passes(model: str) -> None:
    check_model_name(model)
