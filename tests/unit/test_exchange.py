"""One ``POST /v1/responses`` exchange end to end, with the upstream replaced by recorded bytes.

Whatever the upstream does (answers, truncates, cuts the stream, errors before or during the body, sends
garbage), the client gets a complete, valid answer: a JSON Response, an OpenAI error, or an event stream that
ends in a terminal event and ``[DONE]``. What is stored is exactly what the client saw last.
"""

from __future__ import annotations

from typing import Any

import orjson
import pytest

from responses_bridge.engine.options import EngineOptions
from responses_bridge.protocol.errors import APIError
from responses_bridge.run.response_run import ResponseRun
from responses_bridge.store import SQLiteResponseStore
from responses_bridge.store.base import DEFAULT_TENANT
from tests.support.schema import check_stream, parse_sse, validate_response
from tests.support.sdk_strict import failure_reason
from tests.unit import recordings
from tests.unit.recordings import (
    JSON,
    SSE,
    drive,
    drive_failure,
    load,
    load_json,
    request,
)


def frames(raw: bytes) -> list[bytes]:
    """The events of a recording (LF-framed), each with its blank line."""
    return [frame + b"\n\n" for frame in raw.split(b"\n\n") if frame]


def finish_index(raw: bytes) -> int:
    """Index of the frame that carries the finish_reason."""
    for index, frame in enumerate(frames(raw)):
        if b'"finish_reason":"' in frame:
            return index
    raise AssertionError("no finish_reason in the recording")


async def stream(db: SQLiteResponseStore, name: str, pieces: list[bytes], **fields: Any) -> list[dict[str, Any]]:
    run = await drive(db, request(name, stream=True, **fields), pieces)
    assert run.status == 200 and run.content_type.startswith("text/event-stream")
    return check_stream(run.body)


async def stored_matches(store: SQLiteResponseStore, response: dict[str, Any]) -> None:
    assert await store.get_response(response["id"], tenant=DEFAULT_TENANT) == response


# --- normal endings ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize("name", recordings.names())
async def test_stored_response_is_what_the_client_got(name: str, store: SQLiteResponseStore) -> None:
    events = await stream(store, name, [load(name)])
    await stored_matches(store, events[-1]["response"])
    page = await store.list_input_items(events[-1]["response"]["id"], order="asc", tenant=DEFAULT_TENANT)
    assert page is not None and [item["role"] for item in page.data] == ["user"]
    run = await drive(store, request(name), [load_json(name)], content_type=JSON)
    validate_response(run.json)
    await stored_matches(store, run.json)


async def test_store_false_stores_nothing(store: SQLiteResponseStore) -> None:
    events = await stream(store, "text_usage", [load("text_usage")], store=False)
    assert events[-1]["response"]["store"] is False
    assert await store.get_response(events[-1]["response"]["id"], tenant=DEFAULT_TENANT) is None
    run = await drive(store, request("text_usage", store=False), [load_json("text_usage")], content_type=JSON)
    assert run.json["store"] is False and await store.get_response(run.json["id"], tenant=DEFAULT_TENANT) is None
    failed = await drive(store, request("text_usage", stream=True, store=False), [b"data: {oops}\n\n"])
    assert await store.get_response(check_stream(failed.body)[-1]["response"]["id"], tenant=DEFAULT_TENANT) is None


@pytest.mark.parametrize(("name", "reason"), [("length", "max_output_tokens"), ("content_filter", "content_filter")])
async def test_truncated_answers_are_incomplete(name: str, reason: str, store: SQLiteResponseStore) -> None:
    events = await stream(store, name, [load(name)])
    final = events[-1]
    assert final["type"] == "response.incomplete"
    response = final["response"]
    assert response["status"] == "incomplete" and response["incomplete_details"] == {"reason": reason}
    assert response["completed_at"] is None
    assert [item["status"] for item in response["output"]] == ["incomplete"]
    await stored_matches(store, response)
    run = await drive(store, request(name), [load_json(name)], content_type=JSON)
    assert run.json["status"] == "incomplete" and run.json["incomplete_details"] == {"reason": reason}


async def test_done_without_finish_reason_completes(store: SQLiteResponseStore) -> None:
    raw = b"".join(frame for frame in frames(load("text_usage")) if b'"finish_reason":"' not in frame)
    events = await stream(store, "text_usage", [raw])
    assert events[-1]["type"] == "response.completed"


async def test_finish_reason_without_done_completes(store: SQLiteResponseStore) -> None:
    raw = load("text_usage").removesuffix(b"data: [DONE]\n\n")
    assert (await stream(store, "text_usage", [raw]))[-1]["type"] == "response.completed"


async def test_the_upstream_call(store: SQLiteResponseStore) -> None:
    exchange = ResponseRun(store, EngineOptions(max_tokens_field="max_completion_tokens"), tenant=DEFAULT_TENANT)
    call = await exchange.begin(orjson.dumps(request("length", stream=True)))
    assert call.path == "chat/completions" and call.stream
    body = orjson.loads(call.body)
    assert body["stream"] is True and body["stream_options"] == {"include_usage": True}
    assert body["max_completion_tokens"] == 3 and body["messages"][-1]["role"] == "user"
    assert exchange.streaming and exchange.response_id and exchange.response_id.startswith("resp_")
    call = await ResponseRun(store, EngineOptions(), tenant=DEFAULT_TENANT).begin(orjson.dumps(request("text_usage")))
    assert not call.stream and "stream" not in orjson.loads(call.body)


async def test_a_large_body_is_parsed_and_translated_off_the_event_loop(
        store: SQLiteResponseStore, monkeypatch: pytest.MonkeyPatch) -> None:
    """Tens of thousands of items take the CPU for most of a second: the loop must keep serving meanwhile."""
    import threading

    from responses_bridge.run import response_run

    threads: dict[str, str] = {}
    real_parse, real_translator = response_run.parse_request, response_run.Translator

    def parse(body: bytes, **limits: Any) -> Any:
        threads.setdefault("parse", threading.current_thread().name)
        return real_parse(body, **limits)

    def translator(*args: Any, **kwargs: Any) -> Any:
        threads.setdefault("translate", threading.current_thread().name)
        return real_translator(*args, **kwargs)

    monkeypatch.setattr(response_run, "parse_request", parse)
    monkeypatch.setattr(response_run, "Translator", translator)
    main = threading.current_thread().name
    await ResponseRun(store, EngineOptions(), tenant=DEFAULT_TENANT).begin(orjson.dumps(request("text_usage")))
    assert threads == {"parse": main, "translate": main}  # small bodies: no thread hop
    threads.clear()
    items = [{"role": "user", "content": f"message {i} " + "x" * 64} for i in range(20_000)]
    call = await ResponseRun(store, EngineOptions(),
                             tenant=DEFAULT_TENANT).begin(orjson.dumps({"model": "m", "input": items}))
    assert len(orjson.loads(call.body)["messages"]) == 20_000
    assert threads["parse"] != main and threads["translate"] != main


# --- the upstream answers in the other shape --------------------------------------------------------------------


@pytest.mark.parametrize("name", ["text_usage", "think", "parallel_tools", "length"])
async def test_a_json_answer_to_a_streaming_client_is_streamed(name: str, store: SQLiteResponseStore) -> None:
    with recordings.deterministic() as determinism:
        from_json = await drive(store, request(name, stream=True, store=False), [load_json(name)],
                                content_type=JSON)
        determinism.reset()
        from_sse = await drive(store, request(name, stream=True, store=False), [load(name)])
    json_events, sse_events = check_stream(from_json.body), check_stream(from_sse.body)
    assert json_events[-1]["response"] == sse_events[-1]["response"]
    assert [e["type"] for e in json_events][:2] == ["response.created", "response.in_progress"]


@pytest.mark.parametrize("content_type", [SSE, "text/event-stream; charset=utf-8"])
async def test_a_streamed_answer_to_a_json_client_is_one_json_body(
        content_type: str, store: SQLiteResponseStore) -> None:
    with recordings.deterministic() as determinism:
        from_sse = await drive(store, request("think", store=False), [load("think")], content_type=content_type)
        determinism.reset()
        from_json = await drive(store, request("think", store=False), [load_json("think")], content_type=JSON)
    assert from_sse.status == 200 and from_sse.content_type == JSON
    assert from_sse.json == from_json.json
    validate_response(from_sse.json)


# --- the stream breaks --------------------------------------------------------------------------------------------


@pytest.mark.parametrize("name", ["text_usage", "think", "parallel_tools", "refusal", "repeated_tool_ids",
                                  "vllm_reasoning", "annotations"])
async def test_a_stream_cut_before_the_finish_reason_fails(name: str, store: SQLiteResponseStore) -> None:
    parts = frames(load(name))
    last = finish_index(load(name))
    for cut in range(last + 1):  # cut after 0 .. all frames before the finish chunk
        events = await stream(store, name, [b"".join(parts[:cut])])
        final = events[-1]
        assert final["type"] == "response.failed", cut
        response = final["response"]
        assert response["error"]["code"] == "server_error"
        assert "ended before the response was complete" in response["error"]["message"]
        await stored_matches(store, response)
    # a cut inside an event: the unfinished event is not JSON
    half = b"".join(parts[:2]) + parts[2][: len(parts[2]) // 2]
    events = await stream(store, name, [half])
    assert events[-1]["type"] == "response.failed"


async def test_a_stream_cut_before_a_call_has_its_name_fails_cleanly(store: SQLiteResponseStore) -> None:
    raw = load("args_before_name").replace(b"\r\n", b"\n")
    parts = frames(raw)
    for cut in range(finish_index(raw) + 1):
        events = await stream(store, "args_before_name", [b"".join(parts[:cut])])
        assert events[-1]["type"] == "response.failed", cut
        announced = {e["item"]["id"] for e in events if e["type"] == "response.output_item.added"}
        assert {item["id"] for item in events[-1]["response"]["output"]} == announced, cut


async def test_an_error_event_mid_stream_fails(store: SQLiteResponseStore) -> None:
    parts = frames(load("text_usage"))
    error = b'data: {"error":{"message":"CUDA out of memory","type":"server_error","code":null}}\n\n'
    events = await stream(store, "text_usage", [b"".join(parts[:3]) + error + b"".join(parts[3:])])
    final = events[-1]
    assert final["type"] == "response.failed"
    assert "CUDA out of memory" in final["response"]["error"]["message"]
    texts = [e["delta"] for e in events if e["type"] == "response.output_text.delta"]
    assert texts == ["Echo: ", "Hello "]  # nothing after the error reaches the client
    assert final["response"]["output"][0]["status"] == "incomplete"
    await stored_matches(store, final["response"])


async def test_content_as_a_list_of_parts_is_text(store: SQLiteResponseStore) -> None:
    parts = frames(load("text_usage"))
    mistral = b'data: {"choices": [{"delta": {"content": [{"type": "text", "text": "listed "}]}}]}\n\n'
    events = await stream(store, "text_usage", [b"".join(parts[:2]) + mistral + b"".join(parts[2:])])
    assert events[-1]["type"] == "response.completed"
    assert "listed " in [e["delta"] for e in events if e["type"] == "response.output_text.delta"]


@pytest.mark.parametrize("bad", [
    b"data: {not json}\n\n", b"data: [1, 2]\n\n", b'data: "text"\n\n',
    b'data: {"choices": {"0": {}}}\n\n', b'data: {"choices": [null]}\n\n', b'data: {"choices": [{"delta": "x"}]}\n\n',
    b'data: {"choices": [{"delta": {"tool_calls": "abc"}}]}\n\n',
    b'data: {"choices": [{"delta": {"tool_calls": [{"index": [1], "function": {"name": "f"}}]}}]}\n\n',
    b'data: {"choices": [{"delta": {"tool_calls": [{"index": 0, "function": "f"}]}}]}\n\n',
    b'data: {"choices": [{"delta": {"content": 5}}]}\n\n',
    b'data: {"choices": [{"delta": {"content": [{"type": "text", "text": 7}, 3]}}]}\n\n',
    b'data: {"choices": [{"delta": {"content": "a"}, "logprobs": [1]}]}\n\n',
    b'data: {"choices": [{"delta": {"content": "a"}, "logprobs": {"content": [5]}}]}\n\n',
    b'data: {"choices": [{"delta": {"refusal": 1}}]}\n\n',
])
async def test_malformed_upstream_chunks_fail_the_response(bad: bytes, store: SQLiteResponseStore) -> None:
    parts = frames(load("text_usage"))
    events = await stream(store, "text_usage", [b"".join(parts[:2]) + bad + b"".join(parts[2:])])
    assert events[-1]["type"] == "response.failed"
    assert events[-1]["response"]["error"]["code"] == "server_error"
    assert not any(e["type"] == "response.output_text.delta" and not isinstance(e["delta"], str) for e in events)


@pytest.mark.parametrize("completion", [
    b"not json", b"[]", b'{"choices": []}', b'{"choices": {}}', b'{"choices": [{"message": {"content": 5}}]}',
    b'{"choices": [{"message": {"tool_calls": 5}}]}', b'{"error": {"message": "upstream says no"}}',
    b'{"choices": [{"message": {"content": "a"}, "logprobs": {"content": "x"}}]}',
])
async def test_malformed_json_answers_are_502(completion: bytes, store: SQLiteResponseStore) -> None:
    run = await drive(store, request("text_usage"), [completion], content_type=JSON)
    assert run.status == 502 and run.content_type == JSON
    assert set(run.json) == {"error"} and run.json["error"]["type"] == "server_error"
    streamed = await drive(store, request("text_usage", stream=True), [completion], content_type=JSON)
    assert check_stream(streamed.body)[-1]["type"] == "response.failed"


def oversized(limit: int) -> bytes:
    """A content chunk (an SSE event, LF-framed) a little longer than ``limit``."""
    return (b'data: {"choices":[{"index":0,"delta":{"content":"' + b"x" * limit
            + b'"},"finish_reason":null}]}\n\n')


async def test_an_upstream_event_over_the_limit_fails_the_response(store: SQLiteResponseStore) -> None:
    options = EngineOptions(max_event_bytes=8192)
    parts = frames(load("text_usage"))
    big = oversized(8192)
    pieces = [b"".join(parts[:2])] + [big[i:i + 512] for i in range(0, len(big), 512)] + [b"".join(parts[2:])]
    run = await drive(store, request("text_usage", stream=True), pieces, options=options)
    events = check_stream(run.body)
    failed = events[-1]
    assert failed["type"] == "response.failed" and failed["response"]["status"] == "failed"
    error = failed["response"]["error"]
    assert failure_reason(error) == "upstream_too_large"
    assert "8192 bytes" in error["message"] and "RESPONSES_BRIDGE_MAX_EVENT_BYTES" in error["message"]
    assert run.exchange.upstream_failed
    assert (await store.get_response(failed["response"]["id"], tenant=DEFAULT_TENANT))["status"] == "failed"
    as_json = await drive(store, request("text_usage"), pieces, options=options)  # a JSON client: one 502
    assert as_json.status == 502 and as_json.json["error"]["code"] == "upstream_too_large"


async def test_a_json_answer_over_the_limit_is_a_502(store: SQLiteResponseStore) -> None:
    completion = load_json("text_usage")
    limit = len(completion) - 1
    pieces = [completion[i:i + 100] for i in range(0, len(completion), 100)]
    run = await drive(store, request("text_usage"), pieces, content_type=JSON,
                      options=EngineOptions(max_event_bytes=limit))
    assert run.status == 502 and run.json["error"]["code"] == "upstream_too_large"
    assert f"{limit} bytes" in run.json["error"]["message"]
    fits = await drive(store, request("text_usage"), pieces, content_type=JSON,
                       options=EngineOptions(max_event_bytes=len(completion)))
    assert fits.status == 200 and fits.json["status"] == "completed"


# --- the upstream refuses -------------------------------------------------------------------------------------------

UPSTREAM_400 = orjson.dumps({"error": {"message": "Invalid 'messages[0].content': too long.",
                                       "type": "invalid_request_error", "param": "messages[0].content",
                                       "code": "string_above_max_length"}})


@pytest.mark.parametrize("streaming", [True, False])
async def test_upstream_400_is_the_clients_400(streaming: bool, store: SQLiteResponseStore) -> None:
    run = await drive(store, request("text_usage", stream=streaming), [UPSTREAM_400[:20], UPSTREAM_400[20:]],
                      status=400, content_type=JSON)
    assert run.status == 400 and run.content_type == JSON and not run.reply.continues_stream
    assert run.json == orjson.loads(UPSTREAM_400)
    assert await store.get_response(run.exchange.response_id, tenant=DEFAULT_TENANT) is None


async def test_upstream_429_keeps_its_status_and_code_and_gets_openais_type(store: SQLiteResponseStore) -> None:
    body = orjson.dumps({"error": {"message": "Rate limit reached", "type": "too_many_requests", "param": None,
                                   "code": "rate_limit_exceeded"}})
    run = await drive(store, request("text_usage", stream=True), [body], status=429, content_type=JSON)
    assert run.status == 429 and run.json["error"]["message"] == "Rate limit reached"
    assert run.json["error"]["code"] == "rate_limit_exceeded" and run.json["error"]["type"] == "requests"
    tokens = orjson.dumps({"error": {"message": "Rate limit reached", "type": "tokens", "param": None,
                                     "code": "rate_limit_exceeded"}})
    run = await drive(store, request("text_usage"), [tokens], status=429, content_type=JSON)
    assert run.json["error"]["type"] == "tokens"  # an OpenAI type is kept: it says which limit


async def test_upstream_4xx_with_a_plain_text_body(store: SQLiteResponseStore) -> None:
    run = await drive(store, request("text_usage"), [b"model 'x' not found\n"], status=404,
                      content_type="text/plain")
    assert run.status == 404
    assert run.json["error"]["message"] == "model 'x' not found"
    assert run.json["error"]["type"] == "invalid_request_error"  # as OpenAI types its own 404s


@pytest.mark.parametrize("content_type", [JSON, "text/html", None])
async def test_upstream_500_fails_the_stream_after_created_and_in_progress(
        content_type: str | None, store: SQLiteResponseStore) -> None:
    body = orjson.dumps({"error": {"message": "engine crashed", "type": "server_error"}}) \
        if content_type == JSON else b"<html>Bad Gateway</html>"
    run = await drive(store, request("text_usage", stream=True), [body], status=500, content_type=content_type)
    events = check_stream(run.body)
    assert [e["type"] for e in events] == ["response.created", "response.in_progress", "response.failed"]
    error = events[-1]["response"]["error"]
    assert error["code"] == "server_error" and "HTTP 500" in error["message"]
    assert ("engine crashed" if content_type == JSON else "Bad Gateway") in error["message"]
    await stored_matches(store, events[-1]["response"])


async def test_upstream_500_for_a_json_client_is_a_502(store: SQLiteResponseStore) -> None:
    run = await drive(store, request("text_usage"), [b'{"error": "boom"}'], status=503, content_type=JSON)
    assert run.status == 502 and run.json["error"]["type"] == "server_error"
    assert "HTTP 503" in run.json["error"]["message"] and "boom" in run.json["error"]["message"]
    assert await store.get_response(run.exchange.response_id, tenant=DEFAULT_TENANT) is None


# --- the upstream call itself fails ---------------------------------------------------------------------------------

TIMEOUT = APIError(504, "The upstream did not answer in time.", type="server_error", code="upstream_timeout")


async def test_failure_before_any_header_opens_and_fails_the_stream(store: SQLiteResponseStore) -> None:
    run = await drive_failure(store, request("text_usage", stream=True), TIMEOUT, status=None)
    assert run.status == 200 and not run.reply.continues_stream  # the reply is the whole stream
    events = check_stream(run.body)
    assert [e["type"] for e in events] == ["response.created", "response.in_progress", "response.failed"]
    assert events[-1]["response"]["error"] == {"code": "server_error",
                                               "message": "upstream_timeout: The upstream did not answer in time."}
    await stored_matches(store, events[-1]["response"])


async def test_failure_before_any_header_for_a_json_client_is_an_error(store: SQLiteResponseStore) -> None:
    run = await drive_failure(store, request("text_usage"), TIMEOUT, status=None)
    assert run.status == 504 and run.json["error"]["code"] == "upstream_timeout"


async def test_failure_mid_stream_keeps_the_partial_output(store: SQLiteResponseStore) -> None:
    parts = frames(load("parallel_tools"))
    run = await drive_failure(store, request("parallel_tools", stream=True), TIMEOUT, pieces=parts[:4])
    events = check_stream(run.body)
    final = events[-1]["response"]
    assert final["status"] == "failed" and failure_reason(final["error"]) == "upstream_timeout"
    assert [(item["name"], item["status"], item["arguments"]) for item in final["output"]] == [
        ("get_weather", "incomplete", '{"city":"Paris",')]
    await stored_matches(store, final)


async def test_a_client_that_goes_away_leaves_a_failed_response(store: SQLiteResponseStore) -> None:
    exchange = ResponseRun(store, EngineOptions(), tenant=DEFAULT_TENANT)
    await exchange.begin(orjson.dumps(request("text_usage", stream=True)))
    head = exchange.on_upstream_headers(200, SSE)
    assert head
    sent = head + exchange.on_upstream_chunk(b"".join(frames(load("text_usage"))[:3]))
    await exchange.abandon()
    await exchange.abandon()  # twice is harmless
    stored = await store.get_response(exchange.response_id, tenant=DEFAULT_TENANT)
    assert stored is not None and stored["status"] == "failed"
    assert failure_reason(stored["error"]) == "client_disconnected"
    validate_response(stored)
    seen = parse_sse(sent + b"data: [DONE]\n\n")
    assert {item["id"] for item in stored["output"]} == {
        e["item"]["id"] for e in seen if e["type"] == "response.output_item.added"}


async def test_abandon_after_the_end_or_before_the_stream_changes_nothing(store: SQLiteResponseStore) -> None:
    run = await drive(store, request("text_usage", stream=True), [load("text_usage")])
    await run.exchange.abandon()
    assert (await store.get_response(run.exchange.response_id, tenant=DEFAULT_TENANT))["status"] == "completed"
    exchange = ResponseRun(store, EngineOptions(), tenant=DEFAULT_TENANT)
    await exchange.begin(orjson.dumps(request("text_usage", stream=True)))
    await exchange.abandon()  # no head sent: the client never saw this response
    assert await store.get_response(exchange.response_id, tenant=DEFAULT_TENANT) is None


# --- storage failures -----------------------------------------------------------------------------------------------


class BrokenStore(SQLiteResponseStore):
    async def save_response(self, response: dict, input_items: list[dict]) -> None:
        raise OSError("disk full")


async def test_a_response_that_cannot_be_stored_is_not_reported_completed() -> None:
    async with BrokenStore(":memory:") as broken:
        run = await drive(broken, request("text_usage", stream=True), [load("text_usage")])
        events = check_stream(run.body)
        assert "response.completed" not in [e["type"] for e in events]
        final = events[-1]["response"]
        assert final["status"] == "failed" and "could not be stored" in final["error"]["message"]
        assert final["completed_at"] is None
        run = await drive(broken, request("text_usage"), [load_json("text_usage")], content_type=JSON)
        assert run.status == 500 and "could not be stored" in run.json["error"]["message"]
        # store=false needs no store
        run = await drive(broken, request("text_usage", store=False), [load_json("text_usage")], content_type=JSON)
        assert run.status == 200


# --- requests the exchange refuses ----------------------------------------------------------------------------------


@pytest.mark.parametrize(("fields", "status", "param"), [
    ({"conversation": "conv_1"}, 400, "conversation"),
    ({"background": True, "store": False}, 400, "background"),  # background needs store
    ({"previous_response_id": "resp_missing"}, 404, "previous_response_id"),
    ({"model": None}, 400, "model"),
    ({"input": 5}, 400, "input"),
])
async def test_refused_requests(fields: dict[str, Any], status: int, param: str, store: SQLiteResponseStore) -> None:
    exchange = ResponseRun(store, EngineOptions(), tenant=DEFAULT_TENANT)
    with pytest.raises(APIError) as caught:
        await exchange.begin(orjson.dumps({**request("text_usage", stream=True), **fields}))
    assert (caught.value.status, caught.value.param) == (status, param)
    if status == 404:
        assert caught.value.code == "previous_response_not_found"
    assert exchange.response is None


async def test_previous_response_id_replays_the_history(store: SQLiteResponseStore) -> None:
    first = await drive(store, request("parallel_tools", stream=True), [load("parallel_tools")])
    first_response = check_stream(first.body)[-1]["response"]
    second = await drive(store, {
        "model": "fake-model", "previous_response_id": first_response["id"], "tools": recordings.REQUESTS[
            "parallel_tools"]["tools"],
        "input": [{"type": "function_call_output", "call_id": "call_get_weather_0", "output": "18C"},
                  {"type": "function_call_output", "call_id": "call_get_time_1", "output": "12:00"}],
    }, [load_json("text_usage")], content_type=JSON)
    assert second.status == 200 and second.json["previous_response_id"] == first_response["id"]
    messages = second.upstream_body["messages"]
    assert [m["role"] for m in messages] == ["user", "assistant", "tool", "tool"]
    assert [c["id"] for c in messages[1]["tool_calls"]] == ["call_get_weather_0", "call_get_time_1"]
    assert messages[1]["tool_calls"][0]["function"] == {"name": "get_weather",
                                                        "arguments": '{"city":"Paris","unit":"celsius"}'}


# --- the request echoed in the Response ------------------------------------------------------------------------------


async def test_every_request_field_is_echoed_the_way_the_spec_wants(store: SQLiteResponseStore) -> None:
    schema = {"type": "object", "properties": {"echo": {"type": "string"}}, "required": ["echo"]}
    body = {
        "model": "fake-model", "input": "hi", "stream": True, "instructions": "Be brief.",
        "tools": [recordings.WEATHER_TOOL, recordings.TIME_TOOL],
        "tool_choice": {"type": "allowed_tools", "mode": "auto", "tools": [{"type": "function", "name": "get_time"}]},
        "parallel_tool_calls": False, "text": {"format": {"type": "json_schema", "schema": schema},
                                               "verbosity": "low"},
        "reasoning": {"effort": "low"}, "metadata": {"k": "v"}, "temperature": 0.3, "top_p": 0.8,
        "presence_penalty": 0.1, "frequency_penalty": 0.2, "top_logprobs": 2, "max_output_tokens": 50,
        "max_tool_calls": 3, "truncation": "auto", "service_tier": "flex", "safety_identifier": "sid",
        "prompt_cache_key": "pck", "user": "u-1",
    }
    run = await drive(store, body, [load("text_usage")])
    events = check_stream(run.body)  # every lifecycle event carries the echo, and each one validates
    response = events[-1]["response"]
    assert response["tools"] == [
        recordings.WEATHER_TOOL,
        {"type": "function", "name": "get_time", "description": None, "parameters": recordings.TIME_TOOL["parameters"],
         "strict": None},
    ]
    # the name the upstream was sent, and the upstream's default strictness: the spec wants both present
    assert response["text"] == {"format": {"type": "json_schema", "schema": schema, "name": "response",
                                           "description": None, "strict": False}, "verbosity": "low"}
    assert run.upstream_body["response_format"]["json_schema"]["name"] == "response"
    expected = {
        "instructions": "Be brief.", "tool_choice": body["tool_choice"], "parallel_tool_calls": False,
        "reasoning": {"effort": "low", "summary": None}, "metadata": {"k": "v"}, "temperature": 0.3, "top_p": 0.8,
        "presence_penalty": 0.1, "frequency_penalty": 0.2, "top_logprobs": 2, "max_output_tokens": 50,
        "max_tool_calls": 3, "truncation": "auto", "safety_identifier": "sid",
        "prompt_cache_key": "pck", "store": True, "background": False, "previous_response_id": None,
        "model": "fake-model", "user": "u-1",
        "service_tier": "default",  # as served: the recorded upstream reports "default", whatever was asked
    }
    assert {key: response[key] for key in expected} == expected


async def test_defaults_echoed_for_a_minimal_request(store: SQLiteResponseStore) -> None:
    run = await drive(store, {"model": "fake-model", "input": "hi"}, [load_json("text_usage")], content_type=JSON)
    response = run.json
    validate_response(response)
    assert {key: response[key] for key in (
        "tools", "tool_choice", "truncation", "parallel_tool_calls", "text", "top_p", "temperature",
        "presence_penalty", "frequency_penalty", "top_logprobs", "reasoning", "metadata", "service_tier",
        "instructions", "max_output_tokens")} == {
        "tools": [], "tool_choice": "auto", "truncation": "disabled", "parallel_tool_calls": True,
        "text": {"format": {"type": "text"}}, "top_p": 1.0, "temperature": 1.0, "presence_penalty": 0.0,
        "frequency_penalty": 0.0, "top_logprobs": 0, "reasoning": None, "metadata": {}, "service_tier": "default",
        "instructions": None, "max_output_tokens": None}
    assert response["created_at"] <= response["completed_at"]


@pytest.mark.parametrize("fmt", [
    {"type": "json_schema", "name": "answer", "schema": {"type": "object"}, "strict": True, "description": "d"},
    {"type": "json_schema", "name": "answer", "schema": {"type": "object"}, "strict": None},
    {"type": "json_object"},
    {"type": "text"},
])
async def test_text_formats_echo_validly(fmt: dict[str, Any], store: SQLiteResponseStore) -> None:
    run = await drive(store, {"model": "fake-model", "input": "hi", "text": {"format": fmt}},
                      [load_json("text_usage")], content_type=JSON)
    validate_response(run.json)
    echoed = run.json["text"]["format"]
    assert {key: value for key, value in echoed.items() if fmt.get(key) is not None} == \
        {key: value for key, value in fmt.items() if value is not None}
