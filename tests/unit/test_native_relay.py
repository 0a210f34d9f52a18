"""engine/responses/native_relay.py on recorded native traffic: the backend's request made self-contained, its events
passed on under the bridge's ids and sequence numbers, its terminal event held until the response is stored."""

from __future__ import annotations

import orjson

from responses_bridge.engine.responses.native_relay import NativeRelay, backend_items
from responses_bridge.protocol.responses.request import parse_request_object


def _relay(**fields: object) -> NativeRelay:
    raw = {"model": "client-name", "input": "hi", **fields}
    history = [{"type": "message", "role": "user", "content": "before"}]
    return NativeRelay(parse_request_object(dict(raw)), raw, history, upstream_model="backend/name",
                       max_event_bytes=1 << 20)


def _sse(*events: dict) -> bytes:
    return b"".join(b"event: " + e["type"].encode() + b"\ndata: " + orjson.dumps(e) + b"\n\n" for e in events)


def _events(data: bytes) -> list[dict]:
    return [orjson.loads(line[6:]) for line in data.split(b"\n") if line.startswith(b"data: {")]


BACKEND = {"id": "resp_backend1", "object": "response", "status": "in_progress", "model": "backend/name",
           "output": [], "store": False}
DONE = {**BACKEND, "status": "completed", "usage": {"input_tokens": 3, "output_tokens": 2, "total_tokens": 5},
        "output": [{"type": "message", "id": "msg_1", "role": "assistant", "status": "completed",
                    "content": [{"type": "output_text", "text": "Hi", "annotations": []}]}]}


def test_the_backends_request_is_self_contained_and_unstored() -> None:
    relay = _relay(previous_response_id="resp_ours", store=True, metadata={"k": "v"}, stream=True)
    call = relay.upstream_request()
    body = orjson.loads(call.body)
    assert (call.path, call.stream) == ("responses", True)
    assert body["store"] is False and "previous_response_id" not in body
    assert (body["model"], body["metadata"]) == ("backend/name", {"k": "v"})
    assert body["input"][0]["content"] == "before" and len(body["input"]) == 2


def test_events_carry_the_bridges_id_and_numbers_and_the_terminal_event_waits() -> None:
    relay = _relay(stream=True)
    assert relay.on_upstream_headers(200, "text/event-stream") == b""
    stream = _sse({"type": "response.created", "sequence_number": 7, "response": BACKEND},
                  {"type": "response.output_text.delta", "sequence_number": 8, "item_id": "msg_1", "delta": "Hi"},
                  {"type": "response.completed", "sequence_number": 9, "response": DONE})
    out = relay.on_upstream_chunk(stream[:40]) + relay.on_upstream_chunk(stream[40:])  # an event cut in two
    events = _events(out)
    assert [e["type"] for e in events] == ["response.created", "response.output_text.delta"]
    assert [e["sequence_number"] for e in events] == [0, 1]
    assert events[0]["response"]["id"] == relay.response_id != "resp_backend1"
    assert events[0]["response"]["model"] == "client-name"
    assert relay.complete() is None
    [final] = _events(b"".join(relay.terminal_frames()))
    assert (final["type"], final["sequence_number"], final["response"]["id"]) == ("response.completed", 2,
                                                                                   relay.response_id)
    assert final["response"]["usage"]["total_tokens"] == 5 and final["response"]["store"] is True


def test_a_json_answer_takes_the_bridges_id() -> None:
    relay = _relay()
    assert relay.on_upstream_headers(200, "application/json") is None
    relay.on_upstream_chunk(orjson.dumps(DONE))
    assert relay.complete() is None
    reply = relay.success_reply(relay.terminal_frames())
    body = orjson.loads(reply.body)
    assert (body["id"], body["status"], body["output"][0]["id"]) == (relay.response_id, "completed", "msg_1")


def test_an_upstream_error_keeps_its_status_and_message() -> None:
    relay = _relay()
    relay.on_upstream_headers(400, "application/json")
    relay.on_upstream_chunk(b'{"error": {"message": "bad tool", "type": "invalid_request_error", "param": "tools"}}')
    error = relay.complete()
    assert error is not None and (error.status, error.message, error.param) == (400, "bad tool", "tools")


def test_a_stream_that_ends_without_its_terminal_event_fails() -> None:
    relay = _relay(stream=True)
    relay.on_upstream_headers(200, "text/event-stream")
    relay.on_upstream_chunk(_sse({"type": "response.created", "sequence_number": 0, "response": BACKEND}))
    error = relay.complete()
    assert error is not None and error.status == 502


def test_server_tool_history_becomes_what_a_backend_without_them_reads() -> None:
    items = [{"type": "message", "role": "user", "content": "add"},
             {"type": "mcp_list_tools", "id": "mcpl_1", "server_label": "tools", "tools": []},
             {"type": "mcp_call", "id": "mcp_1", "server_label": "tools", "name": "add", "arguments": "{}",
              "output": "3", "error": None}]
    assert backend_items(items) == [
        items[0], {"type": "function_call", "call_id": "mcp_1", "name": "tools__add", "arguments": "{}"},
        {"type": "function_call_output", "call_id": "mcp_1", "output": "3"}]
