"""An agent's tools as a session turn's response tools (protocol/agents/inputs.py), and MCP approvals' shapes
(protocol/agents/approvals.py): what the required action, the client's decision and the next response's input
look like, each checked against the SDK's types where it has one."""

from __future__ import annotations

from typing import Any

import pytest
from openai.types.beta.agent_session import RequiredAction
from openai.types.responses import ResponseInputItemParam
from pydantic import TypeAdapter

from responses_bridge.protocol.agents.agents import apply_config, default_config
from responses_bridge.protocol.agents.approvals import approval_action, approval_answer, approval_result
from responses_bridge.protocol.agents.automations_tool import automation_body
from responses_bridge.protocol.agents.inputs import (
    check_environment_computer,
    check_servable,
    input_event,
    response_tools,
    session_tools,
)
from responses_bridge.protocol.errors import APIError

REQUEST = {"type": "mcp_approval_request", "id": "mcpr_1", "server_label": "tracker", "name": "close_issue",
           "arguments": '{"issue": 7}', "turn_id": "turn_1"}


def agent_tools(*tools: dict[str, Any]) -> list[dict[str, Any]]:
    return apply_config(default_config(), {"tools": list(tools)}, ("tools",))["tools"]


def test_the_required_action_is_the_sdks() -> None:
    action = approval_action(REQUEST)
    parsed = TypeAdapter(RequiredAction).validate_python(action, strict=True)
    assert parsed.type == "mcp_approval_request" and action["request"]["arguments"] == {"issue": 7}
    assert action["request_id"] == "mcpr_1" and action["turn_id"] == "turn_1"


def test_a_decision_becomes_the_next_responses_input() -> None:
    [approved] = approval_answer(REQUEST, "approve")
    assert approved == {"type": "mcp_approval_response", "approval_request_id": "mcpr_1", "approve": True}
    denied, note = approval_answer(REQUEST, "deny")
    assert denied["approve"] is False and note["role"] == "developer"
    assert "close_issue" in note["content"][0]["text"] and "denied it" in note["content"][0]["text"]
    for item in (approved, denied, note):
        TypeAdapter(ResponseInputItemParam).validate_python(item)


@pytest.mark.parametrize(("event", "param"), [
    ({"request_id": "", "response": {"type": "mcp_tool_call", "decision": "approve"}}, "e.request_id"),
    ({"request_id": "r", "response": {"type": "browser", "decision": "approve"}}, "e.response.type"),
    ({"request_id": "r", "response": {"type": "mcp_tool_call", "decision": "yes"}}, "e.response.decision"),
    ({"request_id": "r", "response": {"type": "mcp_tool_call", "decision": "deny", "why": 1}}, "e.response.why"),
    ({"request_id": "r", "extra": 1, "response": {}}, "e.extra"),
])
def test_bad_decisions_are_400s_naming_the_field(event: dict[str, Any], param: str) -> None:
    with pytest.raises(APIError) as caught:
        approval_result({"type": "agent.session.input.mcp_approval_request_result", **event}, "e")
    assert caught.value.status == 400 and caught.value.param == param


def test_approval_events_are_read_mcp_and_computer_use_ones() -> None:
    kind, decision = input_event({"type": "agent.session.input.mcp_approval_request_result", "request_id": "r",
                                  "response": {"type": "mcp_tool_call", "decision": "cancel"}}, "events[0]")
    assert (kind, decision) == ("approval", {"request_id": "r", "decision": "cancel"})
    kind, decision = input_event({"type": "agent.session.input.computer_use_approval_request_result",
                                  "request_id": "r", "response": {"type": "browser_origin_access",
                                                                  "decision": "deny"}}, "events[0]")
    assert (kind, decision) == ("computer_approval", {"request_id": "r", "type": "browser_origin_access",
                                                      "decision": "deny", "param": "events[0]"})
    with pytest.raises(APIError) as caught:
        input_event({"type": "agent.session.input.computer_use_approval_request_result"}, "events[0]")
    assert caught.value.param == "events[0].request_id" and caught.value.status == 400


def test_mcp_tools_ask_for_all_but_read_only_tools() -> None:
    [mcp] = response_tools(agent_tools({"type": "mcp", "server_label": "t",
                                        "transport": {"type": "http", "server_url": "https://mcp.example.com"}}))
    assert mcp["require_approval"] == {"never": {"read_only": True}} and "allowed_callers" not in mcp


def test_web_search_is_the_bridges_and_disabled_offers_none() -> None:
    [live] = response_tools(agent_tools({"type": "web_search", "context_size": "high",
                                         "allowed_domains": ["example.com"], "location": {"country": "NO"}}))
    assert live == {"type": "web_search", "search_context_size": "high", "external_web_access": True,
                    "user_location": {"type": "approximate", "country": "NO"},
                    "filters": {"allowed_domains": ["example.com"]}}
    [cached] = response_tools(agent_tools({"type": "web_search", "mode": "cached"}))
    assert cached["external_web_access"] is False
    assert response_tools(agent_tools({"type": "web_search", "mode": "disabled"})) == []


def test_deferred_functions_bring_the_servers_tool_search_and_programs_may_call_every_tool() -> None:
    function = {"type": "function", "name": "f", "description": "", "parameters": {}, "defer_loading": True}
    tools = agent_tools({"type": "tool_search"}, function, {"type": "programmatic_tool_calling"})
    assert [tool["type"] for tool in session_tools(tools)] == ["function", "programmatic_tool_calling"]
    sent = response_tools(session_tools(tools))
    assert [tool["type"] for tool in sent] == ["function", "tool_search", "programmatic_tool_calling"]
    assert sent[0]["defer_loading"] is True and sent[0]["allowed_callers"] == ["direct", "programmatic"]
    off = response_tools(agent_tools({"type": "programmatic_tool_calling", "enabled": False}))
    assert off == []


def test_computer_use_needs_a_desktop_and_automations_is_a_function() -> None:
    config = {**default_config(), "tools": agent_tools({"type": "computer_use", "include_screenshots": True})}
    check_servable(config)  # served: on the environment's desktop, the GA computer tool offered to the model
    assert response_tools(config["tools"]) == [{"type": "computer"}]
    with pytest.raises(APIError) as caught:
        check_environment_computer(config["tools"], False)
    assert caught.value.param == "agent.tools[0].type" and "desktop" in caught.value.message
    check_environment_computer(config["tools"], True)
    [function] = response_tools(agent_tools({"type": "automations"}))
    assert function["type"] == "function" and function["name"] == "create_automation"
    assert automation_body('{"name": "n", "instructions": "i", "run_at": 5}', "sess_1") == {
        "type": "once", "name": "n", "run_at": 5,
        "target": {"type": "existing_session", "session_id": "sess_1", "instructions": "i"}}
    assert automation_body('{"name": "n", "instructions": "i", "expression": "0 9 * * *", "timezone": "UTC"}',
                           "sess_1")["type"] == "periodic"  # type: ignore[index]
    assert str(automation_body("[1]", "sess_1")).startswith("The automation was not created")
