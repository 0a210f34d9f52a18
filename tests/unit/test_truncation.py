"""``truncation`` (engine/truncation.py) and Codex's ``compaction_trigger`` (engine/responses/translator.py): what is
dropped, what is kept, the retry an exchange offers its door, and the one sealed item a compaction turn answers with."""

from __future__ import annotations

import os
from typing import Any

import orjson
import pytest

from responses_bridge.engine import truncation
from responses_bridge.engine.options import EngineOptions
from responses_bridge.engine.responses import compaction
from responses_bridge.protocol.errors import APIError
from responses_bridge.run.response_run import ResponseRun
from responses_bridge.sealing import Sealer
from responses_bridge.store import SQLiteResponseStore
from responses_bridge.store.base import DEFAULT_TENANT
from tests.support.schema import check_stream, validate_response

SSE = "text/event-stream"
JSON = "application/json"
VLLM_ERROR = orjson.dumps({"error": {
    "message": "This model's maximum context length is 100 tokens. However, you requested 400 tokens (400 in the "
               "messages, 0 in the completion). Please reduce the length of the messages or completion.",
    "type": "BadRequestError", "param": None, "code": 400}})
ERRORS = {
    "openai": (400, {"error": {"message": "This model's maximum context length is 8192 tokens, however you "
                                          "requested 9000 tokens.", "type": "invalid_request_error",
                               "param": "messages", "code": "context_length_exceeded"}}),
    "vllm": (400, orjson.loads(VLLM_ERROR)),
    "vllm_old": (400, {"object": "error", "message": "The prompt (total length 5000) is longer than the maximum "
                                                     "model length of 4096.", "type": "BadRequestError",
                       "param": None, "code": 400}),
    "llama.cpp": (400, {"error": {"code": 400, "message": "the request exceeds the available context size, try "
                                                          "increasing it", "type": "exceed_context_size_error",
                                  "n_prompt_tokens": 5000, "n_ctx": 4096}}),
    "ollama": (400, {"error": {"message": "the input length exceeds the context length", "type": "api_error"}}),
    "window": (400, {"error": {"message": "Input exceeds the context window of this model."}}),
}
COMPLETION = orjson.dumps({"id": "c", "object": "chat.completion", "choices": [{"index": 0, "message": {
    "role": "assistant", "content": "ok"}, "finish_reason": "stop"}],
    "usage": {"prompt_tokens": 10, "completion_tokens": 1, "total_tokens": 11}})


def long_input(turns: int = 6) -> list[dict[str, Any]]:
    items: list[dict[str, Any]] = [{"role": "developer", "content": "Be brief."}]
    for turn in range(turns):
        items.append({"role": "user", "content": f"question {turn} " + "word " * 50})
        items.append({"type": "function_call", "call_id": f"c{turn}", "name": "look", "arguments": "{}"})
        items.append({"type": "function_call_output", "call_id": f"c{turn}", "output": "result " * 50})
        items.append({"role": "assistant", "content": f"answer {turn} " + "text " * 50})
    items.append({"role": "user", "content": "the newest question"})
    return items


def body(**fields: Any) -> bytes:
    return orjson.dumps({"model": "m", "instructions": "You are terse.", "input": long_input(),
                         "tools": [{"type": "function", "name": "look"}], **fields})


async def answer(exchange: ResponseRun, status: int, content: bytes, content_type: str = JSON) -> bytes:
    head = exchange.on_upstream_headers(status, content_type) or b""
    return head + exchange.on_upstream_chunk(content)


def assert_kept_whole(messages: list[dict[str, Any]]) -> None:
    """The instructions and the developer message stay, the newest input is last, no call lost its output."""
    assert messages[0] == {"role": "system", "content": "You are terse."}
    assert any(message["role"] == "system" and message["content"] == "Be brief." for message in messages)
    assert messages[-1] == {"role": "user", "content": "the newest question"}
    for index, message in enumerate(messages):
        if message.get("tool_calls"):
            assert messages[index + 1]["role"] == "tool"
            assert messages[index + 1]["tool_call_id"] == message["tool_calls"][0]["id"]
        if message["role"] == "tool":
            assert messages[index - 1].get("tool_calls")


@pytest.mark.parametrize("backend", sorted(ERRORS))
def test_every_backends_context_error_is_recognised(backend: str) -> None:
    status, error = ERRORS[backend]
    inner = error.get("error", error)
    assert truncation.is_context_length_error(status, inner.get("message"), inner.get("code"), inner.get("type"))
    assert not truncation.is_context_length_error(400, "Invalid value for 'temperature'")
    assert not truncation.is_context_length_error(500, inner.get("message"))


def test_the_ratio_comes_from_the_error_when_it_says() -> None:
    assert truncation.shrink_ratio(orjson.loads(VLLM_ERROR)["error"]["message"]) == pytest.approx(0.25 * 0.9)
    assert truncation.shrink_ratio("too long") == 0.5


def test_drop_oldest_keeps_instructions_newest_and_pairs() -> None:
    messages = [{"role": "system", "content": "sys"}, {"role": "user", "content": "a" * 100},
                {"role": "assistant", "content": None, "tool_calls": [{"id": "1"}, {"id": "2"}]},
                {"role": "tool", "tool_call_id": "1", "content": "b" * 100},
                {"role": "tool", "tool_call_id": "2", "content": "b" * 100},
                {"role": "developer", "content": "dev"}, {"role": "user", "content": "c" * 100},
                {"role": "user", "content": "new"}]
    assert truncation.drop_oldest(messages, 10) == [messages[0], messages[5], messages[7]]
    kept = truncation.drop_oldest(messages, truncation.size_of(messages) - 50)
    assert kept == [messages[0], *messages[2:]]  # only as much as needed, the call with both outputs stays
    assert truncation.drop_oldest([messages[0], messages[7]], 1) is None  # nothing may go


async def test_disabled_gives_a_clear_400(store: SQLiteResponseStore) -> None:
    for stream in (False, True):
        exchange = ResponseRun(store, EngineOptions(), tenant=DEFAULT_TENANT)
        await exchange.begin(body(stream=stream))
        await answer(exchange, 400, VLLM_ERROR)
        assert exchange.retry_request() is None
        reply = await exchange.finish()
        assert reply.status == 400 and reply.content_type == JSON
        error = orjson.loads(reply.body)["error"]
        assert error["code"] == "context_length_exceeded" and error["type"] == "invalid_request_error"
        assert error["param"] == "input" and "maximum context length is 100" in error["message"]


async def test_other_upstream_400s_are_passed_through(store: SQLiteResponseStore) -> None:
    exchange = ResponseRun(store, EngineOptions(), tenant=DEFAULT_TENANT)
    await exchange.begin(body(truncation="auto"))
    await answer(exchange, 400, orjson.dumps({"error": {"message": "bad temperature", "type": "invalid_request_error",
                                                        "param": "temperature", "code": None}}))
    assert exchange.retry_request() is None
    assert orjson.loads((await exchange.finish()).body)["error"]["param"] == "temperature"


@pytest.mark.parametrize("stream", [False, True])
async def test_auto_retries_once_without_the_oldest_items(stream: bool, store: SQLiteResponseStore) -> None:
    exchange = ResponseRun(store, EngineOptions(), tenant=DEFAULT_TENANT)
    first = await exchange.begin(body(truncation="auto", stream=stream))
    before = orjson.loads(first.body)["messages"]
    assert await answer(exchange, 400, VLLM_ERROR) == b""
    retry = exchange.retry_request()
    assert retry is not None and retry.stream == stream
    after = orjson.loads(retry.body)["messages"]
    assert len(after) < len(before) and truncation.size_of(after) <= truncation.size_of(before) * 0.25
    assert_kept_whole(after)
    if stream:
        sse = (b'data: {"choices":[{"index":0,"delta":{"content":"ok"}}]}\n\n'
               b'data: {"choices":[{"index":0,"delta":{},"finish_reason":"stop"}]}\n\ndata: [DONE]\n\n')
        raw = await answer(exchange, 200, sse, SSE)
        events = check_stream(raw + (await exchange.finish()).body)
        response = events[-1]["response"]
    else:
        await answer(exchange, 200, COMPLETION)
        response = orjson.loads((await exchange.finish()).body)
    validate_response(response)
    assert response["status"] == "completed" and response["truncation"] == "auto"
    stored = await store.list_input_items(response["id"], order="asc", limit=100, tenant=DEFAULT_TENANT)
    assert stored is not None and len(stored.data) == len(long_input())  # the client's input is stored whole


async def test_the_second_context_error_is_the_400(store: SQLiteResponseStore) -> None:
    exchange = ResponseRun(store, EngineOptions(), tenant=DEFAULT_TENANT)
    await exchange.begin(body(truncation="auto"))
    await answer(exchange, 400, VLLM_ERROR)
    assert exchange.retry_request() is not None
    await answer(exchange, 400, VLLM_ERROR)
    assert exchange.retry_request() is None
    reply = await exchange.finish()
    assert reply.status == 400 and orjson.loads(reply.body)["error"]["code"] == "context_length_exceeded"


async def test_a_declared_window_shrinks_the_first_call(store: SQLiteResponseStore) -> None:
    unlimited = orjson.loads((await ResponseRun(store, EngineOptions(),
                                                tenant=DEFAULT_TENANT).begin(body(truncation="auto"))).body)
    options = EngineOptions(context_window=400)
    fitted = orjson.loads((await ResponseRun(store, options, tenant=DEFAULT_TENANT).begin(body(truncation="auto",
                                                                     max_output_tokens=100))).body)
    assert len(orjson.dumps(fitted)) <= (400 - 100) * truncation.BYTES_PER_TOKEN
    assert len(fitted["messages"]) < len(unlimited["messages"])
    assert_kept_whole(fitted["messages"])
    disabled = orjson.loads((await ResponseRun(store, options, tenant=DEFAULT_TENANT).begin(body())).body)
    assert disabled["messages"] == unlimited["messages"]  # "disabled" never drops anything itself


# --- compaction_trigger -------------------------------------------------------------------------------------------

SEALER = Sealer(os.urandom(32))


@pytest.mark.parametrize("stream", [False, True])
async def test_compaction_trigger_answers_one_sealed_item(stream: bool, store: SQLiteResponseStore) -> None:
    exchange = ResponseRun(store, EngineOptions(), SEALER, tenant=DEFAULT_TENANT)
    items = [{"role": "user", "content": "my name is Ada"}, {"role": "assistant", "content": "Hi Ada"},
             {"type": "compaction_trigger"}]
    call = await exchange.begin(orjson.dumps({"model": "m", "input": items, "stream": stream,
                                              "tools": [{"type": "shell"}]}))
    chat = orjson.loads(call.body)
    assert call.stream is False and "stream" not in chat and "tools" not in chat
    assert chat["messages"][0]["content"] == compaction.SUMMARY_INSTRUCTIONS
    assert "user: my name is Ada" in chat["messages"][1]["content"]
    summary = orjson.dumps({"choices": [{"index": 0, "message": {"role": "assistant", "content": " Ada. "},
                                         "finish_reason": "stop"}],
                            "usage": {"prompt_tokens": 30, "completion_tokens": 2, "total_tokens": 32}})
    head = await answer(exchange, 200, summary)
    reply = await exchange.finish()
    if stream:
        events = check_stream(head + reply.body)
        assert [event["type"] for event in events] == [
            "response.created", "response.in_progress", "response.output_item.added", "response.output_item.done",
            "response.completed"]
        response = events[-1]["response"]
    else:
        response = orjson.loads(reply.body)
    validate_response(response)
    (item,) = response["output"]
    assert item["type"] == "compaction" and set(item) == {"type", "id", "encrypted_content"}
    assert compaction.open_summary(SEALER, item["encrypted_content"], "x") == ("Ada.", None)
    assert response["usage"]["input_tokens"] == 30
    assert await store.get_response(response["id"], tenant=DEFAULT_TENANT) is None  # never history


async def test_compaction_trigger_must_come_last(store: SQLiteResponseStore) -> None:
    with pytest.raises(APIError) as error:
        await ResponseRun(store, EngineOptions(), SEALER,
                          tenant=DEFAULT_TENANT).begin(orjson.dumps({"model": "m", "input": [
            {"type": "compaction_trigger"}, {"role": "user", "content": "x"}]}))
    assert error.value.status == 400 and error.value.param == "input[0]"
    with pytest.raises(APIError) as error:
        await ResponseRun(store, EngineOptions(), SEALER,
                          tenant=DEFAULT_TENANT).begin(orjson.dumps({"model": "m", "input": [
            {"type": "compaction_trigger"}]}))
    assert error.value.code == "missing_required_parameter"
