"""The engine side of the server tool loop: one output builder across several upstream turns.

Each turn is a Chat Completions stream, written as SSE bytes, cut into small pieces and fed through the SSE decoder
the way the exchange feeds an upstream body (or, not streamed, one ``chat.completion`` per turn). A small driver
plays the run: it ends each turn, reports the server calls' outcomes and builds the next turn's body. Every event
and item is validated with the ``openai`` SDK's pydantic types, and the order of each item's events is checked.
"""

from __future__ import annotations

from functools import cache
from typing import Any

import openai.types.responses as sdk
import orjson
import pytest
from pydantic import TypeAdapter

from responses_bridge.demo import fake_upstream
from responses_bridge.engine.options import EngineOptions
from responses_bridge.engine.responses.output_builder import OutputBuilder, completion_as_chunk
from responses_bridge.engine.responses.request_translation import (
    build_chat_request,
    items_to_messages,
    mcp_result_text,
    plan_request_tools,
    tool_search_result_text,
)
from responses_bridge.engine.responses.response_object import new_response
from responses_bridge.engine.responses.turns import ToolResult, follow_up_request
from responses_bridge.engine.sse import DONE, SSEDecoder, encode_event
from responses_bridge.engine.tools.builtin import SERVED_TOOL_TYPES, served_tool_types
from responses_bridge.engine.tools.server import mcp_call_error
from responses_bridge.engine.tools.tools import MAX_NAME, ToolPlan, plan_tools
from responses_bridge.engine.tools.turn_result import TurnCall, TurnResult, continues_turn
from responses_bridge.engine.tools.turn_tools import set_turn_tools
from responses_bridge.protocol.responses.request import parse_request
from responses_bridge.run.tools.mcp_model import MCPToolError
from responses_bridge.run.tools.tool_search import search_tool_function, tool_search_output_item
from responses_bridge.run.tools.web_search_base import SearchResult
from responses_bridge.run.tools.web_search_citations import find_citations, results_for_model, web_search_action
from tests.support.schema import (
    EVENT_MODELS,
    LIFECYCLE_EVENTS,
    SDK_ONLY_EVENTS,
    SPEC_NAMES,
    parse_sse,
    validate_event,
    validate_response,
)
from tests.support.sdk_strict import strict_event

OPTIONS = EngineOptions()
DOCS_TOOLS = [
    {"name": "search_docs", "description": "Search the docs", "annotations": None,
     "input_schema": {"type": "object", "properties": {"q": {"type": "string"}}, "required": ["q"]}},
    {"name": "delete_page", "description": "Delete a page", "annotations": None,
     "input_schema": {"type": "object", "properties": {"page": {"type": "string"}}}},
]
RESULTS = [SearchResult(url="https://example.com/a", title="Page A", snippet="About A"),
           SearchResult(url="https://example.org/b", title="Page B", snippet="About B")]
DEFERRED = {"type": "function", "name": "get_invoice", "description": "Fetch an invoice by its number",
            "defer_loading": True, "parameters": {"type": "object", "properties": {"number": {"type": "string"}}}}
REQUEST = {
    "model": "m", "input": "What is A?", "stream": True, "max_tool_calls": 10,
    "tools": [
        {"type": "mcp", "server_label": "docs", "server_url": "https://mcp.example.com/mcp",
         "require_approval": "never"},
        {"type": "web_search"},
        {"type": "tool_search"},
        DEFERRED,
        {"type": "function", "name": "get_weather", "parameters": {"type": "object", "properties": {}}},
    ],
}


# --- SDK oracles -------------------------------------------------------------------------------------------------


@cache
def _event_adapter() -> TypeAdapter[Any]:
    return TypeAdapter(sdk.ResponseStreamEvent)


@cache
def _item_adapter() -> TypeAdapter[Any]:
    return TypeAdapter(sdk.ResponseOutputItem)


def check_event(event: dict[str, Any]) -> None:
    """Valid for the SDK's event union (as its own type, strictly, with no key its model lacks:
    tests/support/sdk_strict.py), and for the spec types where they know the event (lifecycle events through
    ``validate_event``, which judges the response with both)."""
    if event["type"] in EVENT_MODELS or event["type"] in SDK_ONLY_EVENTS or event["type"] in SPEC_NAMES:
        validate_event(event)
    if event["type"] not in LIFECYCLE_EVENTS:
        strict_event(event)
    if "item" in event:
        assert _item_adapter().validate_python(event["item"], strict=True).type == event["item"]["type"]


# Per item type: the event types allowed between output_item.added and output_item.done, in this order
# (a ``*`` suffix: repeated zero or more times).
ITEM_EVENTS: dict[str, list[str]] = {
    "mcp_list_tools": ["response.mcp_list_tools.in_progress", "response.mcp_list_tools.completed|failed"],
    "mcp_call": ["response.mcp_call_arguments.delta*", "response.mcp_call_arguments.done",
                 "response.mcp_call.in_progress?", "response.mcp_call.completed|failed?"],
    "mcp_approval_request": [],
    "web_search_call": ["response.web_search_call.in_progress", "response.web_search_call.searching",
                        "response.web_search_call.completed?"],
    "file_search_call": ["response.file_search_call.in_progress", "response.file_search_call.searching",
                         "response.file_search_call.completed?"],
    "code_interpreter_call": ["response.code_interpreter_call.in_progress",
                              "response.code_interpreter_call_code.delta*",
                              "response.code_interpreter_call_code.done",
                              "response.code_interpreter_call.interpreting?",
                              "response.code_interpreter_call.completed?"],
    "image_generation_call": ["response.image_generation_call.in_progress",
                              "response.image_generation_call.generating",
                              "response.image_generation_call.partial_image*",
                              "response.image_generation_call.completed?"],
    "tool_search_call": [],
    "tool_search_output": [],
}


def check_item_order(events: list[dict[str, Any]]) -> dict[int, list[str]]:
    """Sequence numbers 0, 1, 2…; every item added once at the next output_index, then its events, then done
    last; the events of server items in the order of ``ITEM_EVENTS``. Returns the event types per item."""
    assert [event["sequence_number"] for event in events] == list(range(len(events)))
    per_item: dict[int, list[str]] = {}
    done: set[int] = set()
    for event in events:
        if event["type"] in LIFECYCLE_EVENTS:
            continue
        index = event["output_index"]
        if event["type"] == "response.output_item.added":
            assert index == len(per_item), f"output_index {index} added after {len(per_item)} items"
            per_item[index] = [event["item"]["type"]]
            continue
        assert index in per_item and index not in done, event
        per_item[index].append(event["type"])
        if event["type"] == "response.output_item.done":
            done.add(index)
    for index, types in per_item.items():
        expected = ITEM_EVENTS.get(types[0])
        if expected is None or index not in done:
            continue
        _match(types[1:-1], expected, f"item {index} ({types[0]})")
    return per_item


def _match(types: list[str], pattern: list[str], where: str) -> None:
    position = 0
    for step in pattern:
        repeat, optional = step.endswith("*"), step.endswith("?")
        names = step.rstrip("*?").split("|")
        if "." in names[0] and len(names) > 1:
            prefix = names[0].rsplit(".", 1)[0]
            names = [names[0]] + [f"{prefix}.{name}" for name in names[1:]]
        if repeat:
            while position < len(types) and types[position] in names:
                position += 1
        elif position < len(types) and types[position] in names:
            position += 1
        elif not optional:
            raise AssertionError(f"{where}: expected {names} at {position} of {types}")
    assert position == len(types), f"{where}: unexpected events {types[position:]}"


# --- upstream turns ----------------------------------------------------------------------------------------------


def text(content: str) -> dict[str, Any]:
    return {"choices": [{"index": 0, "delta": {"content": content}, "finish_reason": None}]}


def tool(index: int, *, id: str | None = None, name: str | None = None, arguments: str = "") -> dict[str, Any]:
    entry: dict[str, Any] = {"index": index, "function": {"arguments": arguments}}
    if id is not None:
        entry.update(id=id, type="function")
        entry["function"]["name"] = name
    return {"choices": [{"index": 0, "delta": {"tool_calls": [entry]}, "finish_reason": None}]}


def end(reason: str, prompt: int, completion: int, cached: int = 0, reasoning: int = 0) -> list[dict[str, Any]]:
    return [{"choices": [{"index": 0, "delta": {}, "finish_reason": reason}]},
            {"choices": [], "usage": {"prompt_tokens": prompt, "completion_tokens": completion,
                                      "total_tokens": prompt + completion,
                                      "prompt_tokens_details": {"cached_tokens": cached},
                                      "completion_tokens_details": {"reasoning_tokens": reasoning}}}]


def sse(chunks: list[dict[str, Any]]) -> bytes:
    return b"".join(b"data: " + orjson.dumps(chunk) + b"\n\n" for chunk in chunks) + b"data: [DONE]\n\n"


def as_completion(chunks: list[dict[str, Any]]) -> dict[str, Any]:
    """The ``chat.completion`` a non-streamed upstream answers for the same turn."""
    content: list[str] = []
    calls: dict[int, dict[str, Any]] = {}
    reason, usage = None, None
    for chunk in chunks:
        usage = chunk.get("usage") or usage
        for choice in chunk["choices"]:
            delta = choice["delta"]
            content.append(delta.get("content") or "")
            for entry in delta.get("tool_calls") or ():
                call = calls.setdefault(entry["index"], {"id": None, "type": "function",
                                                         "function": {"name": None, "arguments": ""}})
                call["id"] = entry.get("id") or call["id"]
                call["function"]["name"] = entry["function"].get("name") or call["function"]["name"]
                call["function"]["arguments"] += entry["function"].get("arguments") or ""
            reason = choice.get("finish_reason") or reason
    message: dict[str, Any] = {"role": "assistant", "content": "".join(content) or None}
    if calls:
        message["tool_calls"] = [calls[index] for index in sorted(calls)]
    return {"id": "c", "object": "chat.completion", "choices": [{"index": 0, "message": message,
                                                                 "finish_reason": reason}], "usage": usage}


def feed_turn(builder: OutputBuilder, chunks: list[dict[str, Any]], *, stream: bool, piece: int = 7) -> None:
    """One upstream turn into the builder, as the exchange feeds it (SSE in small pieces, or one JSON answer)."""
    if not stream:
        builder.feed(completion_as_chunk(as_completion(chunks)))
        return
    decoder = SSEDecoder()
    raw = sse(chunks)
    payloads: list[bytes] = []
    for start in range(0, len(raw), piece):
        payloads.extend(decoder.feed(raw[start:start + piece]))
    payloads.extend(decoder.flush())
    for payload in payloads:
        if payload == DONE:
            builder.saw_done = True
        else:
            builder.feed(orjson.loads(payload))


class Harness:
    """Plays the run around one builder: the plan with the server tools, turns, outcomes, follow-up bodies."""

    def __init__(self, request: dict[str, Any], *, stream: bool, approval: tuple[str, ...] = ()) -> None:
        self.request = parse_request(orjson.dumps(dict(request, stream=stream)))
        self.plan = plan_request_tools(self.request, [], OPTIONS, served=SERVED_TOOL_TYPES)
        self.response = new_response("resp_loop", self.request, created_at=1_700_000_000)
        self.builder = OutputBuilder(self.response, encode_event if stream else None, targets=self.plan.targets)
        self.stream = stream
        self.approval = approval
        self.frames: list[bytes] = []
        self.bodies: list[dict[str, Any]] = []

    def list_tools(self) -> None:
        index = self.builder.add_mcp_list_tools("docs")
        self.builder.complete_mcp_list_tools(index, tools=DOCS_TOOLS)
        self.plan.add_mcp_tools("docs", DOCS_TOOLS, approval=self.approval)
        self.plan.add_web_search()
        self.plan.add_server_tool_search(search_tool_function())
        self.builder.set_targets(self.plan.targets)

    def open(self) -> None:
        self.builder.lifecycle("response.created")
        self.builder.lifecycle("response.in_progress")
        self.take()

    def first_body(self) -> dict[str, Any]:
        body = build_chat_request(self.request, [], OPTIONS, self.plan)
        fake_upstream.validate_chat_request(body)
        self.bodies.append(body)
        return body

    def take(self) -> None:
        self.frames.append(self.builder.take())

    def turn(self, chunks: list[dict[str, Any]], *, first: bool = False) -> TurnResult:
        if not first:
            self.builder.begin_turn()
        feed_turn(self.builder, chunks, stream=self.stream)
        self.take()
        assert self.builder.complete
        result = self.builder.end_turn()
        self.take()
        return result

    def follow_up(self, turn: TurnResult, results: list[ToolResult], **extra: Any) -> dict[str, Any]:
        p = self.request.params
        body = follow_up_request(self.bodies[-1], turn, results, plan=self.plan, tool_choice=p.tool_choice,
                                 parallel_tool_calls=p.parallel_tool_calls, **extra)
        fake_upstream.validate_chat_request(body)
        self.bodies.append(body)
        return body

    def events(self) -> list[dict[str, Any]]:
        self.take()
        raw = b"".join(self.frames)
        if not self.stream:
            assert raw == b""
            return []
        events = parse_sse(raw + b"data: [DONE]\n\n")
        for event in events:
            check_event(event)
        return events


def run_three_turns(stream: bool) -> tuple[Harness, list[dict[str, Any]]]:
    """MCP list → turn 1 (text + an MCP call and a web search in parallel) → turn 2 (a server tool search)
    → turn 3 (the answer, citing a search result)."""
    h = Harness(REQUEST, stream=stream)
    h.list_tools()  # before the stream opens: held until response.in_progress
    h.open()
    body = h.first_body()
    names = {tool["function"]["name"] for tool in body["tools"]}
    assert {"docs__search_docs", "docs__delete_page", "web_search", "tool_search", "get_weather"} == names
    turn1 = h.turn([text("Let me look."),
                    tool(0, id="call_mcp", name="docs__search_docs", arguments='{"q": '),
                    tool(1, id="call_ws", name="web_search", arguments='{"query": "what is A"}'),
                    tool(0, arguments='"A"}'),
                    *end("tool_calls", 100, 20, cached=40, reasoning=5)], first=True)
    # server calls whose items have no call id go back to the model under their items' ids, as history sends them
    assert [(call.name, call.call_id, call.server) for call in turn1.calls] == [
        ("docs__search_docs", call.item["id"], True) for call in turn1.calls[:1]] + [
        ("web_search", turn1.calls[1].item["id"], True)]
    assert turn1.calls[0].call_id.startswith("mcp_") and turn1.calls[1].call_id.startswith("ws_")
    mcp, search = turn1.calls
    assert mcp.target is not None and (mcp.target.kind, mcp.target.namespace, mcp.target.name) == (
        "mcp", "docs", "search_docs")
    assert mcp.arguments == '{"q": "A"}' and mcp.item["type"] == "mcp_call"
    h.builder.complete_mcp_call(mcp.output_index, output="A is the first letter.")
    h.builder.complete_web_search(search.output_index, action=web_search_action("what is A", RESULTS, True))
    h.builder.cite = lambda answer: find_citations(answer, RESULTS)
    h.follow_up(turn1, [ToolResult(mcp.call_id, mcp_result_text("A is the first letter.", None)),
                        ToolResult(search.call_id, results_for_model(RESULTS))])
    turn2 = h.turn([tool(0, id="call_ts", name="tool_search", arguments='{"query": "invoice"}'),
                    *end("tool_calls", 150, 10, cached=100)])
    (found,) = turn2.calls
    assert found.item["type"] == "tool_search_call" and found.item["arguments"] == {"query": "invoice"}
    output = tool_search_output_item("tso_1", call_id=found.call_id, tools=[DEFERRED])
    h.builder.add_item(output)
    assert h.plan.add_loaded_tools(output["tools"]) == ["get_invoice"]  # offered from the next turn on
    assert h.plan.add_loaded_tools(output["tools"]) == []
    body3 = h.follow_up(turn2, [ToolResult(found.call_id, tool_search_result_text([DEFERRED]))])
    assert "get_invoice" in {tool["function"]["name"] for tool in body3["tools"]}
    turn3 = h.turn([text("A is a letter, see [Page A](https://example.com/a)."), *end("stop", 200, 12)])
    assert turn3.calls == [] and turn3.finish_reason == "stop"
    h.builder.finish(1_700_000_002)
    return h, h.events()


@pytest.mark.parametrize("stream", [True, False])
def test_a_three_turn_loop_is_one_response(stream: bool) -> None:
    h, events = run_three_turns(stream)
    response = h.response
    validate_response(response)
    assert [item["type"] for item in response["output"]] == [
        "mcp_list_tools", "message", "mcp_call", "web_search_call", "tool_search_call", "tool_search_output",
        "message"]
    for item in response["output"]:
        assert _item_adapter().validate_python(item).type == item["type"]
    assert response["status"] == "completed"
    assert response["usage"] == {"input_tokens": 450,
                                 "input_tokens_details": {"cached_tokens": 140, "cache_write_tokens": 0},
                                 "output_tokens": 42, "output_tokens_details": {"reasoning_tokens": 5},
                                 "total_tokens": 492}
    listed, _, mcp, search, found, loaded, answer = response["output"]
    assert listed["tools"] == DOCS_TOOLS and listed["error"] is None
    assert (mcp["status"], mcp["output"], mcp["error"], mcp["server_label"], mcp["name"]) == (
        "completed", "A is the first letter.", None, "docs", "search_docs")
    assert search["status"] == "completed"
    assert search["action"] == {"type": "search", "query": "what is A",
                                "sources": [{"type": "url", "url": "https://example.com/a"},
                                            {"type": "url", "url": "https://example.org/b"}]}
    assert (found["execution"], found["status"]) == ("server", "completed")
    assert loaded["tools"] == [DEFERRED]
    part = answer["content"][0]
    assert part["annotations"] == [{"type": "url_citation", "start_index": 19, "end_index": 50,
                                    "url": "https://example.com/a", "title": "Page A"}]
    assert part["text"][19:50] == "[Page A](https://example.com/a)"
    if not stream:
        return
    assert [event["type"] for event in events[:4]] == [
        "response.created", "response.in_progress", "response.output_item.added",
        "response.mcp_list_tools.in_progress"]
    assert events[0]["response"]["output"] == []  # the held list item is not in the created snapshot
    per_item = check_item_order(events)
    assert sorted(per_item) == list(range(len(response["output"])))
    assert per_item[2][1:] == ["response.mcp_call_arguments.delta", "response.mcp_call_arguments.delta",
                               "response.mcp_call_arguments.done", "response.mcp_call.in_progress",
                               "response.mcp_call.completed", "response.output_item.done"]
    assert "response.output_text.annotation.added" in per_item[6]
    assert events[-1]["type"] == "response.completed"
    assert events[-1]["response"] == orjson.loads(orjson.dumps(response))
    done = [event["item"] for event in events if event["type"] == "response.output_item.done"]
    assert sorted(done, key=lambda item: response["output"].index(item)) == response["output"]


def test_streamed_and_json_loops_give_the_same_output() -> None:
    def shape(response: dict[str, Any]) -> list[Any]:
        return [{key: value for key, value in item.items() if key not in ("id", "call_id")}
                for item in response["output"]]

    streamed, _ = run_three_turns(True)
    answered, _ = run_three_turns(False)
    assert shape(streamed.response) == shape(answered.response)
    assert streamed.response["usage"] == answered.response["usage"]


def test_follow_up_turns_carry_the_whole_assistant_turn_and_every_result() -> None:
    h, _ = run_three_turns(True)
    first, second, third = h.bodies
    assert second["messages"][:len(first["messages"])] == first["messages"]
    assistant, mcp_result, search_result = second["messages"][len(first["messages"]):]
    mcp_id, search_id = (item["id"] for item in h.response["output"] if item["type"] in ("mcp_call", "web_search_call"))
    # the turn as the model made it, as the next response's history will show it (test_a_continued_chain_replays_…,
    # the search's id marked as continuing the turn): under the items' ids, the MCP call's arguments as the model
    # wrote them, the search's as history keeps them (its query); then the results in order
    assert search_id.startswith("ws_turn")
    assert assistant == {"role": "assistant", "content": "Let me look.", "tool_calls": [
        {"id": mcp_id, "type": "function", "function": {"name": "docs__search_docs",
                                                          "arguments": '{"q": "A"}'}},
        {"id": search_id, "type": "function", "function": {"name": "web_search",
                                                             "arguments": '{"query":"what is A"}'}}]}
    assert mcp_result == {"role": "tool", "tool_call_id": mcp_id, "content": "A is the first letter."}
    assert search_result["tool_call_id"] == search_id and "https://example.com/a" in search_result["content"]
    assert third["messages"][-1] == {"role": "tool", "tool_call_id": "call_ts",
                                     "content": "Tools loaded: get_invoice"}
    for body in (second, third):
        assert {key: body[key] for key in ("model", "stream", "stream_options")} == {
            key: first[key] for key in ("model", "stream", "stream_options")}
        assert "tool_choice" not in body  # none was asked for: the upstream's default, as in the first turn


def test_the_first_turn_does_not_offer_deferred_tools() -> None:
    h = Harness(REQUEST, stream=False)
    h.list_tools()
    names = {tool["function"]["name"] for tool in h.first_body()["tools"]}
    assert "get_invoice" not in names and "tool_search" in names


# --- outcomes: failures, approvals, cut turns ---------------------------------------------------------------------


def _single_call_turn(h: Harness, name: str, arguments: str, reason: str = "tool_calls") -> TurnResult:
    h.list_tools()
    h.open()
    return h.turn([tool(0, id="call_1", name=name, arguments=arguments), *end(reason, 10, 5)], first=True)


def test_a_failed_mcp_call_is_a_failed_item_the_model_reads() -> None:
    h = Harness(REQUEST, stream=True)
    turn = _single_call_turn(h, "docs__search_docs", '{"q": "x"}')
    (call,) = turn.calls
    h.builder.complete_mcp_call(call.output_index, error="Tool 'search_docs' timed out after 5 s.")
    item = h.response["output"][call.output_index]
    assert item["status"] == "failed" and item["output"] is None
    assert item["error"] == {"type": "mcp_tool_execution_error",
                             "content": [{"type": "text", "text": "Tool 'search_docs' timed out after 5 s."}]}
    assert mcp_result_text(item["output"], item["error"]) == "Error: Tool 'search_docs' timed out after 5 s."
    assert mcp_result_text(None, None) == "The tool call did not complete."  # cut off before its outcome
    assert mcp_result_text("", None) == ""
    h.builder.begin_turn()
    feed_turn(h.builder, [text("Sorry."), *end("stop", 20, 2)], stream=True)
    h.builder.end_turn()
    h.builder.finish(1)
    events = h.events()
    assert h.response["status"] == "completed"
    per_item = check_item_order(events)
    assert "response.mcp_call.failed" in per_item[call.output_index]


def test_a_server_that_cannot_be_used_is_a_protocol_error() -> None:
    h = Harness(REQUEST, stream=True)
    turn = _single_call_turn(h, "docs__search_docs", '{"q": "x"}')
    error = mcp_call_error("The MCP server could not be reached.", protocol=True)
    h.builder.complete_mcp_call(turn.calls[0].output_index, error=error)
    h.builder.finish(1)
    check_item_order(h.events())
    assert h.response["output"][1]["error"] == {"type": "mcp_protocol_error", "code": -32603,
                                                "message": "The MCP server could not be reached."}


def test_a_transport_failure_is_the_sdks_http_error() -> None:
    """A server that could not be reached or answered with an HTTP error: the item's error is the SDK's
    ``http_error`` (``McpToolCallError``), every event valid for the SDK's union in strict mode."""
    h = Harness(REQUEST, stream=True)
    turn = _single_call_turn(h, "docs__search_docs", '{"q": "x"}')
    error = MCPToolError("MCP server 'docs' answered HTTP 503.", status=503).item_error()
    h.builder.complete_mcp_call(turn.calls[0].output_index, error=error)
    h.builder.finish(1)
    events = h.events()
    check_item_order(events)
    for event in events:
        check_event(event)
        if event["type"] != "response.completed":
            _event_adapter().validate_python(event, strict=True)
    assert _item_adapter().validate_python(h.response["output"][1], strict=True).error.type == "http_error"
    assert h.response["output"][1]["error"] == {"type": "http_error", "code": 503,
                                                "message": "MCP server 'docs' answered HTTP 503."}


def test_a_failed_listing_and_a_failed_search() -> None:
    h = Harness(REQUEST, stream=True)
    index = h.builder.add_mcp_list_tools("docs")
    h.builder.complete_mcp_list_tools(index, error="The MCP server refused the connection.")
    h.plan.add_web_search()
    h.open()
    turn = h.turn([tool(0, id="call_1", name="web_search", arguments='{"query": "q"}'), *end("tool_calls", 1, 1)],
                  first=True)
    h.builder.complete_web_search(turn.calls[0].output_index, failed=True)
    h.builder.finish(1)
    events = h.events()
    per_item = check_item_order(events)
    assert per_item[0] == ["mcp_list_tools", "response.mcp_list_tools.in_progress",
                           "response.mcp_list_tools.failed", "response.output_item.done"]
    assert per_item[1] == ["web_search_call", "response.web_search_call.in_progress",
                           "response.web_search_call.searching", "response.output_item.done"]
    listed, search = h.response["output"]
    assert listed["error"] == "The MCP server refused the connection." and listed["tools"] == []
    assert search["status"] == "failed" and search["action"] == {"type": "search", "query": "q"}
    validate_response(h.response)


@pytest.mark.parametrize("stream", [True, False])
def test_a_call_that_needs_approval_is_an_approval_request(stream: bool) -> None:
    h = Harness(REQUEST, stream=stream, approval=("delete_page",))
    turn = _single_call_turn(h, "docs__delete_page", '{"page": "home"}')
    (call,) = turn.calls
    assert call.server and call.target is not None and call.target.approval
    h.builder.finish(1)  # the run ends the response after an approval request
    events = h.events()
    item = h.response["output"][call.output_index]
    assert item == {"id": item["id"], "type": "mcp_approval_request", "server_label": "docs",
                    "name": "delete_page", "arguments": '{"page": "home"}'}
    assert h.response["status"] == "completed"
    validate_response(h.response)
    if stream:
        assert check_item_order(events)[call.output_index] == ["mcp_approval_request", "response.output_item.done"]


def test_an_approved_call_runs_without_a_model_turn() -> None:
    h = Harness(REQUEST, stream=True)
    h.open()
    index = h.builder.start_mcp_call("docs", "delete_page", '{"page": "home"}', approval_request_id="mcpr_1")
    h.builder.complete_mcp_call(index, output="deleted")
    h.builder.finish(1)
    per_item = check_item_order(h.events())
    assert per_item[0] == ["mcp_call", "response.mcp_call_arguments.delta", "response.mcp_call_arguments.done",
                           "response.mcp_call.in_progress", "response.mcp_call.completed",
                           "response.output_item.done"]
    assert h.response["output"][0]["approval_request_id"] == "mcpr_1"


def test_a_turn_cut_by_the_token_limit_runs_nothing() -> None:
    h = Harness(REQUEST, stream=True)
    turn = _single_call_turn(h, "docs__search_docs", '{"q": "x', reason="length")
    (call,) = turn.calls
    assert call.status == "incomplete" and call.item["status"] == "incomplete"
    h.builder.finish(1)
    events = h.events()
    assert h.response["status"] == "incomplete"
    assert check_item_order(events)[call.output_index][-2:] == ["response.mcp_call_arguments.done",
                                                                "response.output_item.done"]


def test_a_failure_while_calls_run_leaves_them_incomplete() -> None:
    h = Harness(REQUEST, stream=True)
    turn = _single_call_turn(h, "docs__search_docs", '{"q": "x"}')
    h.builder.fail("server_error", "The upstream failed.")
    events = h.events()
    assert events[-1]["type"] == "response.failed"
    assert h.response["output"][turn.calls[0].output_index]["status"] == "incomplete"
    assert h.response["usage"]["input_tokens"] == 10
    validate_response(h.response)


def test_a_client_call_next_to_a_server_call_is_a_function_call() -> None:
    h = Harness(REQUEST, stream=True)
    h.list_tools()
    h.open()
    turn = h.turn([tool(0, id="call_w", name="get_weather", arguments="{}"),
                   tool(1, id="call_s", name="docs__search_docs", arguments='{"q": "x"}'),
                   *end("tool_calls", 1, 1)], first=True)
    assert [call.call_id for call in turn.client_calls] == ["call_w"]
    assert [call.call_id for call in turn.server_calls] == [turn.server_calls[0].item["id"]]  # an mcp_call's
    assert turn.client_calls[0].item["type"] == "function_call"


# --- the tool plan ------------------------------------------------------------------------------------------------


def test_mcp_tools_get_flat_unique_names_of_at_most_64_characters() -> None:
    plan = plan_tools([{"type": "function", "name": "docs__search_docs"}], served=SERVED_TOOL_TYPES)
    label = "a-very-long-server-label-" * 3
    names = plan.add_mcp_tools("docs", DOCS_TOOLS[:1]) + plan.add_mcp_tools(label, DOCS_TOOLS)
    assert names[0] != "docs__search_docs" and names[0].startswith("docs__search_docs")
    assert all(len(name) <= MAX_NAME for name in names) and len(set(names)) == 3
    assert plan.targets[names[0]].name == "search_docs" and plan.targets[names[0]].namespace == "docs"
    assert plan.targets[names[2]].namespace == label
    assert plan.add_mcp_tools("docs", DOCS_TOOLS[:1]) == names[:1]  # added once
    assert plan.upstream_name("mcp", "search_docs", "docs") == names[0]


def test_served_tool_types_are_neither_dropped_nor_refused() -> None:
    tools = [{"type": "mcp", "server_label": "s", "server_url": "https://x"}, {"type": "web_search"},
             {"type": "tool_search"}, {"type": "file_search", "vector_store_ids": []}]
    assert plan_tools(tools, "drop", served=SERVED_TOOL_TYPES).dropped == []
    assert plan_tools(tools, "drop", served=served_tool_types(True)).dropped == ["file_search"]
    assert plan_tools(tools, "drop", served=served_tool_types(True, file_search=True)).dropped == []
    assert plan_tools(tools, "drop").dropped == ["mcp", "web_search", "tool_search", "file_search"]


def test_deferred_namespace_functions_wait_for_the_server_tool_search() -> None:
    namespace = {"type": "namespace", "name": "crm", "description": "CRM", "tools": [
        {"type": "function", "name": "find", "parameters": {}},
        {"type": "function", "name": "merge", "defer_loading": True, "parameters": {}}]}
    plan = plan_tools([namespace, {"type": "tool_search"}], served=SERVED_TOOL_TYPES)
    assert [function["name"] for function in plan.functions] == ["crm__find"]
    loaded = [{"type": "namespace", "name": "crm", "tools": [namespace["tools"][1]]}]
    plan = plan_tools([namespace, {"type": "tool_search"}], served=SERVED_TOOL_TYPES, loaded=loaded)
    assert [function["name"] for function in plan.functions] == ["crm__find", "crm__merge"]


# --- tool_choice, parallel_tool_calls, max_tool_calls -------------------------------------------------------------


def _plan_with_servers(approval: tuple[str, ...] = ()) -> ToolPlan:
    plan = plan_tools(REQUEST["tools"], served=SERVED_TOOL_TYPES)
    plan.add_mcp_tools("docs", DOCS_TOOLS, approval=approval)
    plan.add_web_search()
    return plan


def _bodies(choice: Any, parallel: bool | None = None) -> tuple[dict[str, Any], dict[str, Any]]:
    request = dict(REQUEST, tool_choice=choice, stream=False)
    if parallel is not None:
        request["parallel_tool_calls"] = parallel
    h = Harness(request, stream=False)
    h.plan = _plan_with_servers()
    h.builder = OutputBuilder(h.response, None, targets=h.plan.targets)
    first = h.first_body()
    turn = h.turn([tool(0, id="c1", name="web_search", arguments='{"query": "q"}'), *end("tool_calls", 1, 1)],
                  first=True)
    h.builder.complete_web_search(turn.calls[0].output_index)
    return first, h.follow_up(turn, [ToolResult(turn.calls[0].call_id, "results")])


@pytest.mark.parametrize(("choice", "first_choice", "first_tools"), [
    ({"type": "web_search"}, {"type": "function", "function": {"name": "web_search"}}, None),
    ({"type": "mcp", "server_label": "docs", "name": "search_docs"},
     {"type": "function", "function": {"name": "docs__search_docs"}}, None),
    ({"type": "mcp", "server_label": "docs"}, "required", {"docs__search_docs", "docs__delete_page"}),
    ("required", "required", None),
    ({"type": "function", "name": "get_weather"}, {"type": "function", "function": {"name": "get_weather"}}, None),
])
def test_a_forced_tool_choice_holds_for_the_first_turn_only(choice: Any, first_choice: Any,
                                                            first_tools: set[str] | None) -> None:
    first, second = _bodies(choice)
    assert first["tool_choice"] == first_choice
    every = {"docs__search_docs", "docs__delete_page", "web_search", "get_weather"}
    assert {tool["function"]["name"] for tool in first["tools"]} == (first_tools or every)
    assert second["tool_choice"] == "auto"
    assert {tool["function"]["name"] for tool in second["tools"]} == every


def test_tool_choice_none_stays_none() -> None:
    first, second = _bodies("none")
    assert first["tool_choice"] == second["tool_choice"] == "none"


def test_an_mcp_choice_of_an_unknown_server_leaves_the_choice_to_the_model() -> None:
    first, _ = _bodies({"type": "mcp", "server_label": "elsewhere"})
    assert first["tool_choice"] == "auto"


@pytest.mark.parametrize("parallel", [False, True])
def test_parallel_tool_calls_passes_through_every_turn(parallel: bool) -> None:
    first, second = _bodies("auto", parallel)
    assert first["parallel_tool_calls"] is parallel and second["parallel_tool_calls"] is parallel


def test_after_max_tool_calls_the_next_turn_offers_no_tools() -> None:
    h = Harness(dict(REQUEST, parallel_tool_calls=False, tool_choice="required"), stream=False)
    h.list_tools()
    h.first_body()
    turn = h.turn([tool(0, id="c1", name="web_search", arguments='{"query": "q"}'), *end("tool_calls", 1, 1)],
                  first=True)
    h.builder.complete_web_search(turn.calls[0].output_index)
    body = h.follow_up(turn, [ToolResult(turn.calls[0].call_id, "results")], tools_exhausted=True)
    assert not {"tools", "tool_choice", "parallel_tool_calls"} & set(body)
    assert body["messages"][-1] == {"role": "tool", "tool_call_id": turn.calls[0].item["id"], "content": "results"}


def test_follow_up_request_leaves_the_previous_body_alone() -> None:
    first, second = _bodies({"type": "web_search"})
    assert len(second["messages"]) == len(first["messages"]) + 2
    assert first["tool_choice"] == {"type": "function", "function": {"name": "web_search"}}


# --- replay of stored server items --------------------------------------------------------------------------------


def _stored_output() -> list[dict[str, Any]]:
    h, _ = run_three_turns(False)
    return h.response["output"]


def _replayed(output: list[dict[str, Any]]) -> dict[str, Any]:
    history = [{"type": "message", "id": "msg_u", "status": "completed", "role": "user",
                "content": [{"type": "input_text", "text": "What is A?"}]}, *output]
    request = parse_request(orjson.dumps({"model": "m", "input": "And B?", "tools": REQUEST["tools"]}))
    plan = plan_request_tools(request, history, OPTIONS, served=SERVED_TOOL_TYPES)
    plan.add_mcp_tools("docs", DOCS_TOOLS)
    plan.add_web_search()
    plan.add_server_tool_search(search_tool_function())
    body = build_chat_request(request, history, OPTIONS, plan)
    fake_upstream.validate_chat_request(body)
    assert "get_invoice" in {tool["function"]["name"] for tool in body["tools"]}
    return body


def _roles(body: dict[str, Any]) -> list[tuple[str, list[str]]]:
    return [(message["role"], [call["function"]["name"] for call in message.get("tool_calls") or ()])
            for message in body["messages"]]


def test_a_continued_chain_replays_server_items_as_calls_and_results() -> None:
    """The first turn's MCP call and web search were made together: the search's id says it continues the turn
    (turn_result.TURN_MARK), so history shows both calls on the turn's message, then both results."""
    output = _stored_output()
    marked = {item["type"]: continues_turn(item) for item in output if item["type"].endswith("_call")}
    assert marked == {"mcp_call": False, "web_search_call": True, "tool_search_call": False}
    body = _replayed(output)
    assert _roles(body) == [("user", []), ("assistant", ["docs__search_docs", "web_search"]), ("tool", []),
                            ("tool", []), ("assistant", ["tool_search"]), ("tool", []), ("assistant", []),
                            ("user", [])]
    assert body["messages"][1]["content"] == "Let me look."
    assert body["messages"][2]["content"] == "A is the first letter."
    assert "https://example.com/a" in body["messages"][3]["content"]
    assert body["messages"][5]["content"] == "Tools loaded: get_invoice"


def test_server_items_stored_before_the_turn_mark_replay_each_call_answered_at_once() -> None:
    """Items without the mark (stored before it existed, or a client's own): each server call is answered before
    the next call, as history always showed them."""
    output = [dict(item, id=item["id"].replace("_turn", "_")) for item in _stored_output()]
    body = _replayed(output)
    assert _roles(body) == [("user", []), ("assistant", ["docs__search_docs"]), ("tool", []),
                            ("assistant", ["web_search"]), ("tool", []), ("assistant", ["tool_search"]),
                            ("tool", []), ("assistant", []), ("user", [])]
    assert body["messages"][1]["content"] == "Let me look."
    assert body["messages"][2]["content"] == "A is the first letter."
    assert "https://example.com/a" in body["messages"][4]["content"]
    assert body["messages"][6]["content"] == "Tools loaded: get_invoice"


def test_the_next_responses_prompt_repeats_the_loops_last_turn() -> None:
    """The loop's turns (text with an MCP call and a web search in parallel, then a server tool search, then the
    answer) replayed as the next response's history give back the loop's last prompt exactly, and its answer after
    it: message for message, but for the search's result, which history keeps only as its sources."""
    h, _ = run_three_turns(True)
    last = h.bodies[-1]
    history = [{"type": "message", "id": "msg_u", "status": "completed", "role": "user",
                "content": [{"type": "input_text", "text": "What is A?"}]}, *h.response["output"]]
    request = parse_request(orjson.dumps({"model": "m", "input": "And B?", "tools": REQUEST["tools"],
                                          "stream": True, "max_tool_calls": 10}))
    plan = plan_request_tools(request, history, OPTIONS, served=SERVED_TOOL_TYPES)
    plan.add_mcp_tools("docs", DOCS_TOOLS)
    plan.add_web_search()
    plan.add_server_tool_search(search_tool_function())
    body = build_chat_request(request, history, OPTIONS, plan)
    fake_upstream.validate_chat_request(body)
    sent, replayed = last["messages"], body["messages"]
    search_result = next(index for index, message in enumerate(sent) if message["role"] == "tool"
                         and message["tool_call_id"].startswith("ws_"))
    assert replayed[search_result]["content"].startswith("Web search results (sources): ")  # all history keeps
    assert [message for index, message in enumerate(replayed[:len(sent)]) if index != search_result] == [
        message for index, message in enumerate(sent) if index != search_result]
    assert replayed[len(sent):] == [
        {"role": "assistant", "content": "A is a letter, see [Page A](https://example.com/a)."},
        {"role": "user", "content": "And B?"}]
    assert body["tools"] == last["tools"]


def test_server_items_sent_back_as_input_are_accepted_and_translated() -> None:
    items: list[dict[str, Any]] = [
        {"role": "user", "content": "Delete the home page"},
        {"type": "mcp_list_tools", "id": "mcpl_1", "server_label": "docs", "tools": DOCS_TOOLS},
        {"type": "mcp_call", "id": "mcp_1", "server_label": "docs", "name": "search_docs", "arguments": "{}",
         "output": None, "error": {"type": "mcp_protocol_error", "code": -1, "message": "down"},
         "status": "failed"},
        {"type": "web_search_call", "id": "ws_1", "status": "failed", "action": {"type": "search", "query": "x"}},
        {"type": "mcp_approval_request", "id": "mcpr_1", "server_label": "docs", "name": "delete_page",
         "arguments": '{"page": "home"}'},
        {"type": "mcp_approval_response", "approval_request_id": "mcpr_1", "approve": True, "reason": "ok"},
    ]
    request = parse_request(orjson.dumps({"model": "m", "input": items}))
    answer_id = request.input_items[5]["id"]
    assert request.approval_responses == {"mcpr_1": {"type": "mcp_approval_response", "id": answer_id,
                                                     "approval_request_id": "mcpr_1", "approve": True,
                                                     "reason": "ok"}}
    for item in request.input_items[1:5]:
        assert _item_adapter().validate_python(item).type == item["type"]
    messages: list[dict[str, Any]] = []
    items_to_messages(request.input_items, messages, OPTIONS)
    assert [message["role"] for message in messages] == ["user", "assistant", "tool", "assistant", "tool"]
    assert messages[2]["content"] == "Error: down"
    assert messages[3]["tool_calls"][0]["function"] == {"name": "web_search", "arguments": '{"query":"x"}'}
    assert messages[4]["content"] == "The web search failed."
    body = build_chat_request(request, [], OPTIONS)
    fake_upstream.validate_chat_request(body)


@pytest.mark.parametrize(("item", "param"), [
    ({"type": "mcp_approval_response", "approval_request_id": "r"}, "input[0].approve"),
    ({"type": "mcp_approval_response", "approve": "yes", "approval_request_id": "r"}, "input[0].approve"),
    ({"type": "mcp_call", "name": "t", "arguments": "{}"}, "input[0].server_label"),
    ({"type": "web_search_call", "status": "completed"}, "input[0].action"),
    ({"type": "mcp_list_tools", "server_label": "s", "tools": [{}]}, "input[0].tools"),
])
def test_malformed_server_items_are_400s_naming_the_field(item: dict[str, Any], param: str) -> None:
    from responses_bridge.protocol.errors import APIError

    with pytest.raises(APIError) as caught:
        parse_request(orjson.dumps({"model": "m", "input": [item]}))
    assert caught.value.status == 400 and caught.value.param == param


def test_forcing_the_server_tool_search_and_dated_web_search_types() -> None:
    plan = plan_tools([{"type": "web_search_2025_08_26"}, {"type": "tool_search"}], served=SERVED_TOOL_TYPES)
    assert plan.dropped == []
    plan.add_web_search()
    plan.add_server_tool_search(search_tool_function())
    for choice, name in (({"type": "tool_search"}, "tool_search"),
                         ({"type": "web_search_preview_2025_03_11"}, "web_search")):
        body: dict[str, Any] = {"model": "m", "messages": [{"role": "user", "content": "x"}]}
        set_turn_tools(body, choice, None, plan, first=True)
        assert body["tool_choice"] == {"type": "function", "function": {"name": name}}


@pytest.mark.parametrize(("history", "kept"), [("drop", False), ("reasoning_content", True)])
def test_the_turns_reasoning_goes_back_only_when_the_upstream_wants_it(history: Any, kept: bool) -> None:
    h = Harness(REQUEST, stream=True)
    h.list_tools()
    h.open()
    h.first_body()
    turn = h.turn([{"choices": [{"index": 0, "delta": {"reasoning_content": "Think."}, "finish_reason": None}]},
                   tool(0, id="c1", name="web_search", arguments='{"query": "q"}'), *end("tool_calls", 1, 1)],
                  first=True)
    assert turn.message["reasoning_content"] == "Think."
    body = follow_up_request(h.bodies[-1], turn, [ToolResult(turn.calls[0].call_id, "r")], plan=h.plan,
                             options=EngineOptions(reasoning_history=history))
    assert ("reasoning_content" in body["messages"][-2]) is kept


def test_run_items_of_a_queued_background_response_follow_its_in_progress_event() -> None:
    h = Harness(dict(REQUEST, background=True), stream=True)
    h.response["status"] = "queued"
    h.builder.lifecycle("response.created")
    h.builder.lifecycle("response.queued")
    h.take()
    h.response["status"] = "in_progress"
    index = h.builder.add_mcp_list_tools("docs")
    assert h.builder.take() == b"" and h.response["output"] == []  # held: the stream has not reached in_progress
    h.builder.complete_mcp_list_tools(index, tools=DOCS_TOOLS)
    h.builder.lifecycle("response.in_progress")
    h.builder.finish(1)
    events = h.events()
    assert [event["type"] for event in events] == [
        "response.created", "response.queued", "response.in_progress", "response.output_item.added",
        "response.mcp_list_tools.in_progress", "response.mcp_list_tools.completed", "response.output_item.done",
        "response.completed"]
    assert events[2]["response"]["output"] == [] and index == 0
    check_item_order(events)


def test_without_events_run_items_go_straight_to_the_output() -> None:
    h = Harness(REQUEST, stream=False)
    index = h.builder.add_mcp_list_tools("docs")
    assert h.response["output"][index]["type"] == "mcp_list_tools"
    h.builder.complete_mcp_list_tools(index, tools=DOCS_TOOLS)
    assert h.builder.take() == b"" and h.response["output"][index]["tools"] == DOCS_TOOLS


def test_loaded_namespace_functions_are_read_back_as_namespaced_calls() -> None:
    h = Harness(REQUEST, stream=True)
    h.list_tools()
    h.open()
    found = {"type": "namespace", "name": "crm", "description": "CRM", "tools": [
        {"type": "function", "name": "merge", "defer_loading": True, "parameters": {"type": "object"}}]}
    assert h.plan.add_loaded_tools([found]) == ["crm__merge"]
    turn = h.turn([tool(0, id="c1", name="crm__merge", arguments="{}"), *end("tool_calls", 1, 1)], first=True)
    (call,) = turn.client_calls
    assert (call.item["type"], call.item["namespace"], call.item["name"]) == ("function_call", "crm", "merge")


def test_a_response_stopped_between_turns_is_incomplete_steered() -> None:
    """WebSocket steering stops a tool loop once a turn's server calls have their results (the run's
    ``stop_between_turns``): the response ends ``incomplete``, reason ``steered``, with the calls' outcomes kept."""
    h = Harness(REQUEST, stream=True)
    h.list_tools()
    h.open()
    h.first_body()
    turn = h.turn([tool(0, id="call_mcp", name="docs__search_docs", arguments='{"q": "A"}'),
                   *end("tool_calls", 100, 20)], first=True)
    (mcp,) = turn.calls
    h.builder.complete_mcp_call(mcp.output_index, output="A is the first letter.")
    h.builder.stop_reason = "steered"
    h.builder.finish(1_700_000_002)
    events = h.events()
    response = h.response
    validate_response(response)
    assert (response["status"], response["incomplete_details"]) == ("incomplete", {"reason": "steered"})
    listed, call = response["output"]
    assert listed["type"] == "mcp_list_tools" and listed["error"] is None
    assert (call["type"], call["status"], call["output"]) == ("mcp_call", "completed", "A is the first letter.")
    assert events[-1]["type"] == "response.incomplete" and events[-1]["response"]["incomplete_details"] == {
        "reason": "steered"}


# --- a model turn goes back as the model made it (turn_result.TURN_MARK) -------------------------------------------


@pytest.mark.parametrize("role", ["tool", "user"])
def test_a_client_call_after_a_server_call_stays_on_the_turns_message(role: str) -> None:
    """An MCP call, then a function call, in one turn: the function call's item carries the turn's mark, so the next
    response's history shows one assistant message with both calls, then the MCP call's result and the function's
    output, as the model made the turn (results as ``tool`` messages or one ``user`` turn)."""
    h = Harness(REQUEST, stream=True)
    h.list_tools()
    h.open()
    h.first_body()
    turn = h.turn([text("Both."), tool(0, id="call_s", name="docs__search_docs", arguments='{"q": "x"}'),
                   tool(1, id="call_w", name="get_weather", arguments='{"city": "Rome"}'),
                   *end("tool_calls", 1, 1)], first=True)
    h.builder.complete_mcp_call(turn.server_calls[0].output_index, output="found")
    searched, weather = (item for item in h.response["output"] if item["type"] in ("mcp_call", "function_call"))
    assert (continues_turn(searched), continues_turn(weather)) == (False, True)
    assert weather["id"].startswith("fc_turn") and weather["call_id"] == "call_w"
    options = EngineOptions(tool_result_role=role)  # type: ignore[arg-type]
    history = [{"type": "message", "id": "msg_u", "status": "completed", "role": "user",
                "content": [{"type": "input_text", "text": "What is A?"}]}, *h.response["output"],
                {"type": "function_call_output", "call_id": "call_w", "output": "sunny"}]
    request = parse_request(orjson.dumps({"model": "m", "input": "thanks", "tools": REQUEST["tools"]}))
    plan = plan_request_tools(request, history, options, served=SERVED_TOOL_TYPES)
    plan.add_mcp_tools("docs", DOCS_TOOLS)
    body = build_chat_request(request, history, options, plan)
    assert body["messages"][1] == {"role": "assistant", "content": "Both.", "tool_calls": [
        {"id": searched["id"], "type": "function", "function": {"name": "docs__search_docs",
                                                                  "arguments": '{"q": "x"}'}},
        {"id": "call_w", "type": "function", "function": {"name": "get_weather", "arguments": '{"city": "Rome"}'}}]}
    if role == "tool":
        assert body["messages"][2:] == [{"role": "tool", "tool_call_id": searched["id"], "content": "found"},
                                        {"role": "tool", "tool_call_id": "call_w", "content": "sunny"},
                                        {"role": "user", "content": "thanks"}]
    else:  # both results answer the one message: one user turn
        results, thanks = body["messages"][2:]
        assert results["role"] == "user", results
        assert results["content"].index(f"(id {searched['id']}):\nfound") < results["content"].index(
            "(id call_w):\nsunny")
        assert thanks == {"role": "user", "content": "thanks"}


def test_results_go_back_in_the_order_history_shows_them() -> None:
    """A hosted shell call, then an MCP call, in one turn: history holds the MCP call's result (its item holds it)
    until the turn's calls are shown, then shows it before the shell's output (an item of its own, after the turn's
    calls); the loop's next turn sends the results in that order, so the two prompts agree."""
    shell = {"id": "sh_1", "type": "shell_call", "call_id": "call_sh", "status": "completed",
             "action": {"commands": ["ls"], "timeout_ms": None, "max_output_length": None}}
    added = {"id": "mcp_1", "type": "mcp_call", "server_label": "docs", "name": "search_docs",
             "arguments": '{"q": "x"}', "output": "found", "error": None, "status": "completed"}
    output = {"id": "sho_1", "type": "shell_call_output", "call_id": "call_sh", "status": "completed",
              "output": [{"stdout": "a\n", "stderr": "", "outcome": {"type": "exit", "exit_code": 0}}]}
    replayed: list[dict[str, Any]] = []
    items_to_messages([shell, added, output], replayed, OPTIONS, _plan_with_servers())
    message = replayed[0]
    assert [call["id"] for call in message["tool_calls"]] == ["call_sh", "mcp_1"]
    calls = [TurnCall("call_sh", "shell", "{}", None, 0, shell, "completed"),
             TurnCall("mcp_1", "docs__search_docs", '{"q": "x"}', None, 1, added, "completed")]
    body = follow_up_request({"model": "m", "messages": []}, TurnResult(calls, message, "tool_calls"),
                             [ToolResult("call_sh", replayed[2]["content"]), ToolResult("mcp_1", "found")],
                             plan=_plan_with_servers(), tools_exhausted=True)
    assert body["messages"] == replayed
    assert [message.get("tool_call_id") for message in replayed[1:]] == ["mcp_1", "call_sh"]
