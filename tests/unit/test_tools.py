"""engine/tools/tools.py: namespace tools flattened for Chat Completions and read back, hosted tools dropped or
refused by policy."""

from __future__ import annotations

import re
from typing import Any

import orjson
import pytest

from responses_bridge.engine.options import EngineOptions
from responses_bridge.engine.responses.output_builder import OutputBuilder
from responses_bridge.engine.responses.request_translation import build_chat_request, plan_request_tools
from responses_bridge.engine.responses.response_object import new_response
from responses_bridge.engine.sse import DONE_FRAME, encode_event
from responses_bridge.engine.tools import tools
from responses_bridge.protocol.errors import APIError
from responses_bridge.protocol.responses.request import parse_request
from tests.support.schema import parse_sse

FN = {"type": "function", "name": "run", "description": "Run it", "strict": False,
      "parameters": {"type": "object", "properties": {"cmd": {"type": "string"}}}}
NAMESPACE = {"type": "namespace", "name": "multi_agent_v1", "description": "Sub-agents.",
             "tools": [{"type": "function", "name": "spawn_agent", "parameters": {"type": "object"}},
                       {"type": "function", "name": "close_agent", "description": "Close one"}]}
NAME_RE = re.compile(r"^[a-zA-Z0-9_-]{1,64}$")


def chat(fields: dict[str, Any], options: EngineOptions = EngineOptions()) -> dict[str, Any]:
    return build_chat_request(parse_request(orjson.dumps({"model": "m", **fields})), [], options)


def test_flat_names_are_valid_and_unambiguous() -> None:
    assert tools.flat_name("multi_agent_v1", "spawn_agent") == "multi_agent_v1__spawn_agent"
    assert tools.flat_name("mcp.server-x", "do it") == "mcp_server-x__do_it"
    long_a, long_b = tools.flat_name("n" * 50, "a" * 40), tools.flat_name("n" * 50, "a" * 39 + "b")
    assert NAME_RE.match(long_a) and NAME_RE.match(long_b) and long_a != long_b


def test_namespace_functions_are_offered_flat() -> None:
    body = chat({"input": "x", "tools": [FN, NAMESPACE, {"type": "web_search", "external_web_access": False}]})
    offered = [tool["function"]["name"] for tool in body["tools"]]
    assert offered == ["run", "multi_agent_v1__spawn_agent", "multi_agent_v1__close_agent"]
    # the namespace's description is no function's own: the model reads it before each of its functions'
    assert body["tools"][1]["function"]["description"] == "Sub-agents."
    assert body["tools"][2]["function"]["description"] == "Sub-agents.\n\nClose one"
    assert body["tools"][2]["function"]["parameters"] == {"type": "object", "properties": {}}


def test_replayed_namespaced_call_goes_upstream_flat() -> None:
    body = chat({"tools": [NAMESPACE], "input": [
        {"role": "user", "content": "hi"},
        {"type": "function_call", "call_id": "c1", "namespace": "multi_agent_v1", "name": "close_agent",
         "arguments": "{}"},
        {"type": "function_call_output", "call_id": "c1", "output": "ok"}]})
    assert body["messages"][1]["tool_calls"][0]["function"]["name"] == "multi_agent_v1__close_agent"


def test_calls_are_read_back_with_their_namespace() -> None:
    request = parse_request(orjson.dumps({"model": "m", "input": "x", "stream": True, "tools": [NAMESPACE]}))
    response = new_response("resp_1", request)
    plan = plan_request_tools(request, [], EngineOptions())
    builder = OutputBuilder(response, encode_event, targets=plan.targets)
    builder.feed({"choices": [{"index": 0, "delta": {"tool_calls": [{"index": 0, "id": "call_1", "type": "function",
                 "function": {"name": "multi_agent_v1__close_agent", "arguments": "{}"}}]}}]})
    builder.feed({"choices": [{"index": 0, "delta": {}, "finish_reason": "tool_calls"}]})
    builder.finish(1)
    events = parse_sse(builder.take() + DONE_FRAME)
    added = next(e for e in events if e["type"] == "response.output_item.added")["item"]
    done = next(e for e in events if e["type"] == "response.output_item.done")["item"]
    for item in (added, done, response["output"][0]):
        assert item["namespace"] == "multi_agent_v1" and item["name"] == "close_agent"
    assert response["tools"] == [NAMESPACE]  # echoed as sent


@pytest.mark.parametrize("kind", ["web_search", "file_search", "code_interpreter", "mcp",
                                  "image_generation"])
def test_hosted_tools_are_dropped_by_default(kind: str) -> None:
    body = chat({"input": "x", "tools": [{"type": kind}, FN], "tool_choice": {"type": kind}})
    assert [tool["function"]["name"] for tool in body["tools"]] == ["run"]
    assert body["tool_choice"] == "auto"


def test_only_hosted_tools_means_no_tools_upstream() -> None:
    body = chat({"input": "x", "tools": [{"type": "web_search"}], "tool_choice": "auto",
                 "parallel_tool_calls": True})
    assert "tools" not in body and "tool_choice" not in body and "parallel_tool_calls" not in body


def test_drops_are_counted_and_warned_once(monkeypatch: pytest.MonkeyPatch) -> None:
    warnings: list[dict[str, Any]] = []
    monkeypatch.setattr(tools, "_warned", set())
    monkeypatch.setattr(tools.log, "warning", lambda event, **kw: warnings.append(kw))
    before = tools.DROPPED.labels(tool_type="file_search")._value.get()
    for _ in range(3):
        tools.plan_tools([{"type": "file_search"}, FN])
    assert tools.DROPPED.labels(tool_type="file_search")._value.get() == before + 3
    assert [w["tool_type"] for w in warnings] == ["file_search"]


def test_reject_policy_names_the_tool_and_the_switch() -> None:
    with pytest.raises(APIError) as caught:
        chat({"input": "x", "tools": [FN, {"type": "web_search"}]}, EngineOptions(unsupported_tools="reject"))
    error = caught.value
    assert error.status == 400 and error.param == "tools" and error.code == "unsupported_tool_type"
    assert "web_search" in error.message and "RESPONSES_BRIDGE_UNSUPPORTED_TOOLS" in error.message


@pytest.mark.parametrize(("tool", "param"), [
    ({"type": "namespace", "tools": []}, "tools[0].name"),
    ({"type": "namespace", "name": "n"}, "tools[0].tools"),
    ({"type": "namespace", "name": "n", "tools": [{"type": "function"}]}, "tools[0].tools[0].name"),
    ({"type": "namespace", "name": "n", "tools": ["x"]}, "tools[0].tools[0]"),
])
def test_malformed_namespace_tools_are_400(tool: dict[str, Any], param: str) -> None:
    with pytest.raises(APIError) as caught:
        parse_request(orjson.dumps({"model": "m", "input": "x", "tools": [tool]}))
    assert caught.value.status == 400 and caught.value.param == param


def test_fake_upstream_scripts_exact_tool_arguments() -> None:
    from responses_bridge.demo import fake_upstream

    directives, text = fake_upstream.parse_directives('Please call exec_command [args={"cmd": "echo hi > f"}]')
    assert directives.args == '{"cmd":"echo hi > f"}' and text == "Please call exec_command"
    for bad in ("[args=[1]]", "[args=nope]", "[args]"):
        with pytest.raises(fake_upstream.FakeError):
            fake_upstream.parse_directives(bad)
