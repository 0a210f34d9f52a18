"""The hosted ``shell`` tool in the engine and the run: offered to the model as OpenAI's shell action under the
name ``shell`` (also for ``tool_choice`` and replayed calls), its call read back as a ``shell_call`` item in its
container, answered by a ``shell_call_output`` item whose events and shape the SDK accepts; a stored pair replays
to the model as the call and its output; the environment is parsed into a 400 naming the field or handed on, and
a ``local`` shell stays the client's."""

from __future__ import annotations

from typing import Any

import orjson
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from openai.types.responses import ResponseFunctionShellToolCall, ResponseFunctionShellToolCallOutput

from responses_bridge.adapters.http.websocket.steering import required_input
from responses_bridge.demo import fake_upstream
from responses_bridge.engine.options import EngineOptions
from responses_bridge.engine.responses.output_builder import OutputBuilder
from responses_bridge.engine.responses.request_translation import build_chat_request
from responses_bridge.engine.responses.response_object import new_response
from responses_bridge.engine.sse import DONE_FRAME, encode_event
from responses_bridge.engine.tools.builtin import SERVED_TOOL_TYPES, is_hosted_shell, runs_server_tools
from responses_bridge.engine.tools.tools import CallTarget, plan_tools
from responses_bridge.protocol.errors import APIError
from responses_bridge.protocol.responses.request import parse_request
from responses_bridge.run.server_tools_setup import REDACTED, storable_tools
from responses_bridge.run.tools.shell import MAX_COMMANDS, ShellRun, ShellToolOptions, shell_job
from responses_bridge.sandbox.shell import CommandOutput
from tests.support.schema import check_stream, validate_response
from tests.unit.test_server_tool_turns import check_event, check_item_order

HOSTED = {"type": "shell", "environment": {"type": "container_auto"}}


def _plan(tools: list[dict[str, Any]], container: str = "cntr_1") -> Any:
    plan = plan_tools(tools, "reject", served=SERVED_TOOL_TYPES)
    plan.add_hosted_shell(container)
    return plan


def test_only_a_container_environment_goes_to_the_tool_loop() -> None:
    assert is_hosted_shell(HOSTED) and is_hosted_shell({"type": "shell", "environment": {"type": "odd"}})
    assert not is_hosted_shell({"type": "shell"}) and not is_hosted_shell({"type": "shell", "environment":
                                                                           {"type": "local"}})
    assert runs_server_tools([HOSTED], SERVED_TOOL_TYPES)
    assert not runs_server_tools([{"type": "shell", "environment": {"type": "local"}}], SERVED_TOOL_TYPES)
    assert not runs_server_tools([HOSTED], SERVED_TOOL_TYPES - {"shell"})
    with pytest.raises(APIError) as refused:  # a deployment without containers: the unsupported-tool policy
        plan_tools([HOSTED], "reject", served=SERVED_TOOL_TYPES - {"shell"})
    assert refused.value.status == 400 and "shell" in refused.value.message
    assert plan_tools([HOSTED], "drop", served=()).functions == []


def test_it_is_offered_as_the_shell_action_and_tool_choice_shell_names_it() -> None:
    plan = _plan([HOSTED, {"type": "function", "name": "shell", "parameters": {"type": "object"}}])
    name = plan.upstream_name("shell")
    assert name == "shell_2" and plan.targets[name] == CallTarget("hosted_shell", namespace="cntr_1")
    function = next(function for function in plan.functions if function["name"] == name)
    assert sorted(function["parameters"]["properties"]) == ["commands", "max_output_length", "timeout_ms"]
    request = parse_request(orjson.dumps({"model": "m", "input": "x", "tools": [HOSTED],
                                          "tool_choice": {"type": "shell"}}))
    chat = build_chat_request(request, [], EngineOptions(unsupported_tools="reject"), _plan([HOSTED]))
    assert chat["tool_choice"] == {"type": "function", "function": {"name": "shell"}}


def test_a_call_and_its_output_have_the_sdk_s_shapes_and_events_in_order() -> None:
    request = parse_request(orjson.dumps({"model": "m", "input": "x", "stream": True, "tools": [HOSTED]}))
    plan = _plan([HOSTED])
    response = new_response("resp_1", request)
    builder = OutputBuilder(response, encode_event, targets=plan.targets)
    builder.lifecycle("response.created")
    builder.lifecycle("response.in_progress")
    opened = {"index": 0, "id": "call_1", "type": "function", "function": {"name": "shell", "arguments": ""}}
    builder.feed({"choices": [{"index": 0, "delta": {"tool_calls": [opened]}}]})
    for piece in ('{"commands": ["ls", ', '"exit 3"], "timeout_ms": 500}'):
        builder.feed({"choices": [{"index": 0, "delta": {"tool_calls": [{"index": 0,
                                                                         "function": {"arguments": piece}}]}}]})
    builder.feed({"choices": [{"index": 0, "delta": {}, "finish_reason": "tool_calls"}]})
    turn = builder.end_turn()
    [call] = turn.server_calls
    assert call.target == CallTarget("hosted_shell", namespace="cntr_1")
    run = ShellRun("cntr_1", ["ls", "exit 3"], [CommandOutput("a\n", "", 0), CommandOutput("", "no\n", 3)])
    builder.add_shell_call_output(call.call_id, run.items(), max_output_length=None, status=run.status)
    builder.finish(1)
    validate_response(response)
    events = check_stream(builder.take() + DONE_FRAME)
    for event in events:
        check_event(event)
    per_item = check_item_order(events)
    assert per_item[0] == ["shell_call", *(["response.shell_call_command.added", "response.shell_call_command.delta",
                                            "response.shell_call_command.done"] * 2), "response.output_item.done"]
    assert per_item[1] == ["shell_call_output", *(["response.shell_call_output_content.delta",
                                                   "response.shell_call_output_content.done"] * 2),
                           "response.output_item.done"]
    shell_call = ResponseFunctionShellToolCall.model_validate(response["output"][0])
    assert shell_call.environment is not None and shell_call.environment.type == "container_reference"
    assert shell_call.action.commands == ["ls", "exit 3"] and shell_call.action.timeout_ms == 500
    output = ResponseFunctionShellToolCallOutput.model_validate(response["output"][1])
    assert output.call_id == "call_1" and output.status == "completed"
    assert [(chunk.stdout, chunk.outcome.type) for chunk in output.output] == [("a\n", "exit"), ("", "exit")]
    assert run.text_for_model() == "$ ls\na\n\n(exit code 0)\n$ exit 3\nstderr:\nno\n\n(exit code 3)"


def test_a_stored_pair_replays_as_the_call_and_its_output() -> None:
    call = {"type": "shell_call", "id": "sh_1", "call_id": "call_1", "status": "completed",
            "environment": {"type": "container_reference", "container_id": "cntr_1"},
            "action": {"commands": ["cat a.txt"], "timeout_ms": None, "max_output_length": None}}
    output = {"type": "shell_call_output", "id": "sho_1", "call_id": "call_1", "status": "completed",
              "max_output_length": None,
              "output": [{"stdout": "hello\n", "stderr": "", "outcome": {"type": "timeout"}}]}
    for history, given_input in (([call, output], [{"role": "user", "content": "again"}]),
                                 ([], [{"role": "user", "content": "x"}, call, output])):
        request = parse_request(orjson.dumps({"model": "m", "input": given_input, "tools": [HOSTED]}))
        chat = build_chat_request(request, history, EngineOptions(unsupported_tools="reject"), _plan([HOSTED]))
        fake_upstream.validate_chat_request(chat)
        assistant = next(message for message in chat["messages"] if message.get("tool_calls"))
        assert assistant["tool_calls"][0]["function"] == {"name": "shell", "arguments": '{"commands":["cat a.txt"]}'}
        tool = next(message for message in chat["messages"] if message["role"] == "tool")
        assert tool["tool_call_id"] == "call_1" and tool["content"] == "hello\n\n(timed out)"


def test_an_input_call_keeps_its_container_and_a_bad_environment_is_a_400() -> None:
    call = {"type": "shell_call", "call_id": "call_1", "action": {"commands": ["ls"]},
            "environment": {"type": "container_reference", "container_id": "cntr_9"}}
    request = parse_request(orjson.dumps({"model": "m", "input": [call]}))
    assert request.input_items[0]["environment"] == {"type": "container_reference", "container_id": "cntr_9"}
    with pytest.raises(APIError) as refused:
        parse_request(orjson.dumps({"model": "m", "input": [dict(call, environment={"type": "cloud"})]}))
    assert refused.value.param == "input[0].environment"


def test_a_call_the_bridge_answered_itself_owes_the_client_nothing() -> None:
    call = {"type": "shell_call", "id": "sh_1", "call_id": "call_1", "status": "completed",
            "action": {"commands": ["ls"]}, "environment": {"type": "container_reference", "container_id": "c"}}
    answer = {"type": "shell_call_output", "id": "sho_1", "call_id": "call_1", "output": [], "status": "completed"}
    assert required_input([call, answer]) == []
    assert required_input([dict(call, environment=None)]) == [{"type": "shell_call_output", "call_id": "call_1"}]


def test_domain_secrets_are_never_echoed_nor_stored() -> None:
    tool = {"type": "shell", "environment": {"type": "container_auto", "network_policy": {
        "type": "allowlist", "allowed_domains": ["api.example.com"],
        "domain_secrets": [{"domain": "api.example.com", "name": "API_KEY", "value": "sk-secret-canary"}]}}}
    [kept] = storable_tools([tool])
    assert "sk-secret-canary" not in orjson.dumps(kept).decode()
    assert kept["environment"]["network_policy"]["domain_secrets"] == [{"domain": "api.example.com",
                                                                         "name": "API_KEY", "value": REDACTED}]
    assert tool["environment"]["network_policy"]["domain_secrets"][0]["value"] == "sk-secret-canary"  # unchanged
    assert storable_tools([HOSTED]) == [HOSTED]


def test_the_action_becomes_a_bounded_job() -> None:
    job = shell_job({"commands": ["a", 3, "b", *["c"] * 100], "timeout_ms": -5, "max_output_length": 10})
    assert list(job.commands[:2]) == ["a", "b"] and len(job.commands) == MAX_COMMANDS
    assert job.timeout_ms is None and job.max_output_length == 10
    run = ShellRun("cntr_1", job.commands, [CommandOutput("", "", 0)] * MAX_COMMANDS, dropped_commands=38)
    assert run.status == "incomplete" and "38 more commands were not run" in run.text_for_model()
    assert ShellRun("cntr_1", ["x"], None, error="The container is gone.").text_for_model() == "The container is gone."


def test_environments_are_read_or_refused_naming_the_field() -> None:
    assert ShellToolOptions.from_tool({"type": "shell"}, 0) is None
    assert ShellToolOptions.from_tool({"type": "shell", "environment": {"type": "local"}}, 0) is None
    options = ShellToolOptions.from_tool({"type": "shell", "environment": {
        "type": "container_auto", "file_ids": ["file-1"], "memory_limit": "4g",
        "skills": [{"type": "skill_reference", "skill_id": "skill_1", "version": "2"},
                   {"type": "inline", "name": "n", "description": "d",
                    "source": {"type": "base64", "media_type": "application/zip", "data": "UEs="}}],
        "network_policy": {"type": "allowlist", "allowed_domains": ["example.com"],
                           "domain_secrets": [{"domain": "example.com", "name": "K", "value": "v"}]}}}, 2)
    assert options is not None and options.param == "tools[2].environment"
    assert (options.file_ids, options.memory_limit, len(options.skills)) == (("file-1",), "4g", 2)
    assert options.network is not None and options.network.domains == ("example.com",)
    assert [(secret.domain, secret.name, secret.value) for secret in options.network.secrets] == [
        ("example.com", "K", "v")]
    disabled = ShellToolOptions.from_tool({"type": "shell", "environment": {
        "type": "container_auto", "network_policy": {"type": "disabled"}}}, 0)
    assert disabled is not None and disabled.network is None
    reference = ShellToolOptions.from_tool({"type": "shell", "environment": {
        "type": "container_reference", "container_id": "cntr_1"}}, 0)
    assert reference is not None and reference.container_id == "cntr_1"


JSON = st.recursive(st.none() | st.booleans() | st.integers() | st.text(max_size=8),
                    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=8), inner,
                                                                                max_size=4), max_leaves=12)
FIELDS = st.fixed_dictionaries({}, optional={
    "type": st.sampled_from(["container_auto", "container_reference", "local", "x"]) | JSON,
    "container_id": JSON, "file_ids": JSON, "memory_limit": st.sampled_from(["1g", "2g"]) | JSON,
    "skills": st.lists(st.fixed_dictionaries({}, optional={
        "type": st.sampled_from(["skill_reference", "inline"]) | JSON, "skill_id": JSON, "version": JSON,
        "name": JSON, "description": JSON, "source": JSON}), max_size=2) | JSON,
    "network_policy": st.fixed_dictionaries({}, optional={
        "type": st.sampled_from(["disabled", "allowlist"]) | JSON, "allowed_domains": JSON,
        "domain_secrets": JSON}) | JSON})


@settings(max_examples=400, suppress_health_check=[HealthCheck.too_slow], deadline=None)
@given(environment=FIELDS | JSON)
def test_any_environment_is_options_none_or_a_400(environment: Any) -> None:
    try:
        ShellToolOptions.from_tool({"type": "shell", "environment": environment}, 0)
    except APIError as refused:
        assert refused.status == 400 and (refused.param or "").startswith("tools[0].environment")
