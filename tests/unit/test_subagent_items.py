"""A subagent's own items (the multi-agent beta): what its response comes to, and that they travel with the root's
items — tagged with their ``agent`` — without ever reaching the root's model."""

from __future__ import annotations

from typing import Any

import orjson
import pytest

from responses_bridge.engine.options import EngineOptions
from responses_bridge.engine.responses.output_builder import OutputBuilder
from responses_bridge.engine.responses.request_translation import items_to_messages
from responses_bridge.engine.responses.response_object import new_response
from responses_bridge.protocol.errors import APIError
from responses_bridge.protocol.responses.input_items import normalize_input
from responses_bridge.protocol.responses.request import parse_request
from responses_bridge.run.subagents import answer_of, left_open

TASK = [{"type": "message", "role": "user", "content": "look it up"}]
USAGE = {"input_tokens": 5, "output_tokens": 2, "total_tokens": 7}


def _message(text: str, **extra: Any) -> dict[str, Any]:
    return {"type": "message", "id": "msg_1", "role": "assistant", "status": "completed",
            "content": [{"type": "output_text", "text": text, "annotations": []}], **extra}


def _response(output: list[dict[str, Any]], status: str = "completed") -> bytes:
    return orjson.dumps({"id": "resp_1", "status": status, "output": output, "usage": USAGE})


def test_a_finished_piece_carries_its_own_output_and_its_context() -> None:
    searched = {"type": "web_search_call", "id": "ws_1", "status": "completed",
                "action": {"type": "search", "query": "q"}}
    answer = answer_of(200, _response([searched, _message("found it")]), TASK)
    assert (answer.text, answer.status) == ("found it", "completed")
    assert answer.output == [searched, _message("found it")]
    assert answer.context == [*TASK, searched, _message("found it")]
    assert answer.usage is not None and answer.usage["prompt_tokens"] == 5


def test_a_piece_that_ends_for_the_client_to_run_a_tool_fails_and_leaves_no_open_call() -> None:
    call = {"type": "function_call", "id": "fc_1", "call_id": "call_1", "name": "get_weather", "arguments": "{}"}
    answer = answer_of(200, _response([_message("let me check"), call]), TASK)
    assert answer.status == "failed" and "get_weather" in answer.text and "client runs" in answer.text
    assert answer.context == TASK  # a follow-up task starts where this one started, not at an unanswered call
    assert answer.output == [_message("let me check")]  # the root's client is never shown a call it should run


def test_a_program_left_waiting_for_a_client_tool_is_left_out_with_its_call() -> None:
    program = {"type": "program", "id": "prg_1", "call_id": "call_p", "code": "await tools.f({})",
               "fingerprint": "pf1.x"}
    call = {"type": "function_call", "id": "fc_1", "call_id": "call_1", "name": "f", "arguments": "{}",
            "caller": {"type": "program", "caller_id": "call_p"}}
    answer = answer_of(200, _response([_message("running it"), program, call]), TASK)
    assert answer.status == "failed" and answer.output == [_message("running it")]


def test_calls_answered_in_the_same_output_are_not_the_clients() -> None:
    shell = {"type": "shell_call", "id": "sh_1", "call_id": "call_s", "action": {"commands": ["ls"]}}
    ran = {"type": "shell_call_output", "id": "sho_1", "call_id": "call_s", "output": []}
    open_call = {"type": "custom_tool_call", "id": "ctc_1", "call_id": "call_c", "name": "patch", "input": "x"}
    assert left_open([shell, ran]) == []
    assert left_open([shell, ran, open_call]) == [open_call]


def test_an_items_agent_is_kept_on_every_kind_and_checked() -> None:
    items = normalize_input([
        {"role": "user", "content": "hi"},
        _message("from a subagent", agent={"agent_name": "agent_1"}),
        {"type": "function_call", "call_id": "c1", "name": "f", "arguments": "{}", "agent": {"agent_name": "agent_1"}},
        {"type": "multi_agent_call", "action": "list_agents", "arguments": "{}", "call_id": "c2",
         "agent": {"agent_name": "root"}},
    ])
    assert [item.get("agent") for item in items] == [None, {"agent_name": "agent_1"}, {"agent_name": "agent_1"},
                                                     {"agent_name": "root"}]
    with pytest.raises(APIError) as refused:
        normalize_input([_message("x", agent={"name": "agent_1"})])
    assert refused.value.param == "input[0].agent"


def test_the_root_model_never_reads_another_agents_items() -> None:
    items = normalize_input([
        {"role": "user", "content": "split the work"},
        _message("subagent's answer", agent={"agent_name": "agent_1"}),
        {"type": "function_call", "call_id": "c1", "name": "f", "arguments": "{}", "agent": {"agent_name": "agent_1"}},
        {"type": "function_call_output", "call_id": "c1", "output": "r", "agent": {"agent_name": "agent_1"}},
        _message("the root's answer", agent={"agent_name": "root"}),
    ])
    messages: list[dict[str, Any]] = []
    items_to_messages(items, messages, EngineOptions())
    assert messages == [{"role": "user", "content": "split the work"},
                        {"role": "assistant", "content": "the root's answer"}]


def _turn(builder: OutputBuilder, usage: dict[str, Any] | None) -> None:
    """One root turn that calls spawn_agent, its final chunk carrying ``usage`` (None: the upstream gave none)."""
    builder.begin_turn()
    call = {"index": 0, "id": "call_1", "type": "function", "function": {"name": "spawn_agent", "arguments": "{}"}}
    builder.feed({"choices": [{"index": 0, "delta": {"tool_calls": [call]}, "finish_reason": "tool_calls"}]})
    if usage is not None:
        builder.feed({"choices": [], "usage": usage})
    builder.end_turn()


@pytest.mark.parametrize("reported", [True, False])
def test_subagents_usage_is_added_only_to_a_root_whose_turns_report_theirs(reported: bool) -> None:
    builder = OutputBuilder(new_response("resp_1", parse_request(b'{"model": "m", "input": "x"}')), None)
    _turn(builder, {"prompt_tokens": 100, "completion_tokens": 10, "total_tokens": 110} if reported else None)
    builder.count_usage({"prompt_tokens": 7, "completion_tokens": 3, "total_tokens": 10})
    total = builder.total_usage
    if reported:
        assert total is not None and (total["prompt_tokens"], total["completion_tokens"]) == (107, 13)
    else:  # llama-cpp-python's streams report none: the response's usage is unknown, not the subagent's alone
        assert total is None
