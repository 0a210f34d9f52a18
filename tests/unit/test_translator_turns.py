"""The translator across the tool loop's turns: one stream, one response, a later turn's failure fails it."""

from __future__ import annotations

import orjson
import pytest

from responses_bridge.engine.options import EngineOptions
from responses_bridge.engine.responses.translator import Translator
from responses_bridge.engine.responses.turns import ToolResult
from responses_bridge.protocol.errors import APIError
from responses_bridge.protocol.responses.request import parse_request
from tests.support.schema import parse_sse
from tests.unit.test_server_tool_turns import end, sse, text, tool

OPTIONS = EngineOptions()
FUNCTION = {"type": "function", "name": "lookup", "parameters": {"type": "object", "properties": {}}}


def translator(stream: bool) -> Translator:
    request = parse_request(orjson.dumps({"model": "m", "input": "hi", "stream": stream, "tools": [FUNCTION]}))
    return Translator(request, [], None, OPTIONS)


def first_turn(t: Translator, stream: bool) -> bytes:
    """A turn that calls ``lookup``; its end, then the second turn's call."""
    t.build_first_request(loop=True)
    out = t.on_upstream_headers(200, "text/event-stream") or b""
    out += t.on_upstream_chunk(sse([tool(0, id="call_1", name="lookup"), *end("tool_calls", 5, 2)]))
    turn = t.end_turn()
    assert turn is not None and [call.name for call in turn.calls] == ["lookup"]
    call = t.follow_up(turn, [ToolResult("call_1", "found")], tools_exhausted=False)
    messages = orjson.loads(call.body)["messages"]
    assert [m["role"] for m in messages] == ["user", "assistant", "tool"]
    return out + t.take_events()


@pytest.mark.parametrize("stream", [True, False])
def test_a_second_turn_continues_the_stream_and_sums_usage(stream: bool) -> None:
    t = translator(stream)
    out = first_turn(t, stream)
    assert t.on_upstream_headers(200, "text/event-stream") is None  # never a second response.created
    out += t.on_upstream_chunk(sse([text("done"), *end("stop", 9, 1)]))
    assert t.complete() is None
    out += t.success_reply().body
    assert t.response["status"] == "completed"
    assert t.response["usage"]["input_tokens"] == 14 and t.response["usage"]["output_tokens"] == 3
    assert [item["type"] for item in t.response["output"]] == ["function_call", "message"]
    if stream:
        events = parse_sse(out)
        kinds = [event["type"] for event in events]
        assert kinds.count("response.created") == 1 and kinds[-1] == "response.completed"
        assert [event["sequence_number"] for event in events] == list(range(len(events)))
    else:
        assert orjson.loads(out)["status"] == "completed"


@pytest.mark.parametrize("status", [400, 500])
@pytest.mark.parametrize("stream", [True, False])
def test_a_later_turns_upstream_error_fails_the_response(stream: bool, status: int) -> None:
    t = translator(stream)
    out = first_turn(t, stream)
    assert t.on_upstream_headers(status, "application/json") is None
    t.on_upstream_chunk(orjson.dumps({"error": {"message": "nope", "type": "x"}}))
    assert t.end_turn() is None
    error = t.complete()
    assert error is not None
    reply = t.fail(error)
    if not stream:  # the whole reply is the error
        assert reply is not None and reply.status == (status if status < 500 else 502)
        return
    assert reply is None  # the stream is open: response.failed ends it
    out += t.terminal_reply().body
    events = parse_sse(out)
    assert events[-1]["type"] == "response.failed" and t.response["status"] == "failed"
    assert [event["type"] for event in events].count("response.created") == 1


@pytest.mark.parametrize("error", [APIError(503, "taken back", type="server_error", code="preempted_for_fairness"),
                                   APIError(429, "slow down", code="rate_limit_exceeded"),
                                   APIError(502, "the upstream failed", code="server_error")],
                         ids=["preempted", "429", "502"])
def test_after_a_call_with_effects_a_json_answer_fails_as_its_response(error: APIError) -> None:
    """Once a call with effects went out (the tool loop marks the builder), a failure of any kind, statuses a
    client retries included, ends a JSON answer as the failed Response (200) holding the call, never as the
    error body the SDK would retry; its error says the calls were made."""
    t = translator(False)
    first_turn(t, False)
    t.builder.effects_made = True
    reply = t.fail(error)
    assert reply is None  # to be persisted, then terminal_reply()
    answer = t.terminal_reply()
    body = orjson.loads(answer.body)
    assert answer.status == 200 and body["status"] == "failed"
    assert [item["type"] for item in body["output"]] == ["function_call"]
    assert "would make them again" in body["error"]["message"]


def test_before_any_call_with_effects_a_json_answer_keeps_its_status() -> None:
    t = translator(False)
    first_turn(t, False)
    reply = t.fail(APIError(503, "taken back", type="server_error", code="preempted_for_fairness"))
    assert reply is not None and reply.status == 503
