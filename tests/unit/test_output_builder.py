"""Chat Completions deltas → Response output items and events.

The recordings are checked against an independent reference: a plain accumulator of the chat chunks (below)
says what text, reasoning, refusal and tool calls the upstream sent, and the Response must carry exactly that.
The streamed and the JSON form of each recording must give the same Response. Smaller hand-made chunk
sequences cover the orderings real upstreams produce (interleaved parallel calls, calls without ``index``,
text after tool calls, …).
"""

from __future__ import annotations

from typing import Any

import orjson
import pytest

from responses_bridge.engine.event_frames import OPEN_RESPONSES_NAMES, open_responses_encoder
from responses_bridge.engine.responses.output_builder import (
    OutputBuilder,
    UpstreamProtocolError,
    completion_as_chunk,
)
from responses_bridge.engine.responses.response_object import new_response
from responses_bridge.engine.sse import DONE_FRAME, encode_event
from responses_bridge.protocol.responses.request import parse_request
from responses_bridge.store import SQLiteResponseStore
from tests.support.schema import (
    EVENT_MODELS,
    SPEC_NAMES,
    check_sequence,
    check_stream,
    normalize,
    validate_event,
    validate_response,
)
from tests.unit import recordings

# --- an independent reading of the recordings ------------------------------------------------------------------


def chat_chunks(raw: bytes) -> list[dict[str, Any]]:
    """The JSON chunks of a recorded stream, read without the bridge's decoder."""
    text = raw.decode().replace("\r\n", "\n").replace("\r", "\n")
    chunks = []
    for block in text.split("\n\n"):
        data = "\n".join(line[5:].lstrip(" ") if line.startswith("data: ") else line[5:]
                         for line in block.split("\n") if line.startswith("data:"))
        if data and data != "[DONE]":
            chunks.append(orjson.loads(data))
    return chunks


def accumulate(chunks: list[dict[str, Any]]) -> dict[str, Any]:
    """What the upstream said, the way a Chat Completions client would add it up."""
    acc: dict[str, Any] = {"content": "", "reasoning": "", "refusal": "", "calls": {}, "finish_reason": None,
                           "usage": None}
    for chunk in chunks:
        if chunk.get("usage"):
            acc["usage"] = chunk["usage"]
        for choice in chunk.get("choices") or []:
            delta = choice.get("delta") or {}
            acc["content"] += delta.get("content") or ""
            acc["reasoning"] += delta.get("reasoning_content") or delta.get("reasoning") or ""
            acc["refusal"] += delta.get("refusal") or ""
            for call in delta.get("tool_calls") or []:
                entry = acc["calls"].setdefault(call["index"], {"id": None, "name": "", "arguments": ""})
                entry["id"] = entry["id"] or call.get("id")
                function = call.get("function") or {}
                if function.get("name") and entry["name"] != function["name"]:
                    entry["name"] += function["name"]
                entry["arguments"] += function.get("arguments") or ""
            acc["finish_reason"] = choice.get("finish_reason") or acc["finish_reason"]
    acc["calls"] = [acc["calls"][index] for index in sorted(acc["calls"])]
    return acc


def item_text(item: dict[str, Any], part_type: str) -> str:
    key = "refusal" if part_type == "refusal" else "text"
    return "".join(part[key] for part in item.get("content") or [] if part["type"] == part_type)


# --- fixtures ---------------------------------------------------------------------------------------------------


async def stream_run(store: SQLiteResponseStore, name: str) -> tuple[list[dict[str, Any]], dict[str, Any]]:
    run = await recordings.drive(store, recordings.request(name, stream=True), [recordings.load(name)])
    events = check_stream(run.body)
    return events, events[-1]["response"]


async def json_run(store: SQLiteResponseStore, name: str) -> dict[str, Any]:
    run = await recordings.drive(store, recordings.request(name), [recordings.load_json(name)],
                                 content_type=recordings.JSON)
    assert run.status == 200 and run.content_type == recordings.JSON
    validate_response(run.json)
    return run.json


# --- recordings: the Response says what the upstream said -------------------------------------------------------


@pytest.mark.parametrize("name", recordings.names())
async def test_output_matches_what_the_upstream_sent(name: str, store: SQLiteResponseStore) -> None:
    said = accumulate(chat_chunks(recordings.load(name)))
    _, response = await stream_run(store, name)
    output = response["output"]
    expected_types = ((["reasoning"] if said["reasoning"] else [])
                      + (["message"] if said["content"] or said["refusal"] else [])
                      + ["function_call"] * len(said["calls"]))
    assert [item["type"] for item in output] == expected_types
    for item in output:
        if item["type"] == "reasoning":
            # the recorded requests ask for ``reasoning.summary: auto``: the reasoning is also its summary
            assert item_text(item, "reasoning_text") == said["reasoning"]
            assert item["summary"] in ([], [{"type": "summary_text", "text": said["reasoning"]}])
        elif item["type"] == "message":
            assert item["role"] == "assistant"
            assert item_text(item, "output_text") == said["content"]
            assert item_text(item, "refusal") == said["refusal"]
    calls = [item for item in output if item["type"] == "function_call"]
    assert [(c["call_id"], c["name"], c["arguments"]) for c in calls] == [
        (call["id"], call["name"], call["arguments"]) for call in said["calls"]]
    for call in calls:
        orjson.loads(call["arguments"])  # complete JSON, not a fragment
    incomplete = {"length": "max_output_tokens", "content_filter": "content_filter"}.get(said["finish_reason"])
    assert response["status"] == ("incomplete" if incomplete else "completed")
    assert response["incomplete_details"] == ({"reason": incomplete} if incomplete else None)
    item_status = "incomplete" if incomplete else "completed"
    assert all(item.get("status", item_status) == item_status for item in output)
    usage = said["usage"]
    if usage is None:
        assert response["usage"] is None
    else:
        assert response["usage"]["input_tokens"] == usage["prompt_tokens"]
        assert response["usage"]["output_tokens"] == usage["completion_tokens"]
        assert response["usage"]["total_tokens"] == usage["total_tokens"]
        assert response["usage"]["output_tokens_details"]["reasoning_tokens"] == \
            ((usage.get("completion_tokens_details") or {}).get("reasoning_tokens") or 0)


@pytest.mark.parametrize("name", recordings.names())
async def test_stream_and_json_give_the_same_response(
        name: str, store: SQLiteResponseStore, determinism: recordings.Determinism) -> None:
    determinism.reset()
    _, streamed = await stream_run(store, name)
    determinism.reset()
    answered = await json_run(store, name)
    # ids and clocks are deterministic here, so the two must be equal as they stand, field for field
    assert answered == streamed


async def test_recorded_texts(store: SQLiteResponseStore) -> None:
    """A few literal expectations, so that the reference accumulator itself is anchored."""
    _, response = await stream_run(store, "text_usage")
    [message] = response["output"]
    assert message["content"] == [{"type": "output_text", "text": "Echo: Hello there, how are you today?",
                                   "annotations": [], "logprobs": []}]
    assert response["usage"] == {"input_tokens": 7,
                                 "input_tokens_details": {"cached_tokens": 0, "cache_write_tokens": 0},
                                 "output_tokens": 7, "output_tokens_details": {"reasoning_tokens": 0},
                                 "total_tokens": 14}
    _, response = await stream_run(store, "think")
    reasoning, message = response["output"]
    assert reasoning["content"] == [{"type": "reasoning_text", "text": "Thinking about: Why is the sky blue?"}]
    assert item_text(message, "output_text") == "Echo: Why is the sky blue?"
    assert response["usage"]["output_tokens_details"]["reasoning_tokens"] > 0
    _, response = await stream_run(store, "refusal")
    assert response["output"][0]["content"] == [{"type": "refusal", "refusal": "I can't help with that."}]
    _, response = await stream_run(store, "vllm_reasoning")
    # null details upstream: zeros
    assert response["usage"]["input_tokens_details"] == {"cached_tokens": 0, "cache_write_tokens": 0}
    assert item_text(response["output"][1], "output_text") == "\n\n2 + 2 = **4**."


async def test_arguments_that_arrive_before_the_name_are_sent_after_the_announcement(
        store: SQLiteResponseStore) -> None:
    events, response = await stream_run(store, "args_before_name")
    kinds = [(e["type"], e.get("output_index")) for e in events[2:-1]]
    assert kinds == [
        ("response.output_item.added", 0), ("response.function_call_arguments.delta", 0),
        ("response.function_call_arguments.delta", 0),
        ("response.output_item.added", 1), ("response.function_call_arguments.delta", 1),
        ("response.function_call_arguments.done", 0), ("response.output_item.done", 0),
        ("response.function_call_arguments.done", 1), ("response.output_item.done", 1),
    ]
    assert events[2]["item"]["name"] == "get_weather" and events[2]["item"]["call_id"] == "call_w1"
    assert events[3]["delta"] == '{"ci'
    assert response["output"][0]["arguments"] == '{"city": "Oslo"}'


async def test_repeated_ids_and_names_announce_one_call(store: SQLiteResponseStore) -> None:
    events, response = await stream_run(store, "repeated_tool_ids")
    added = [e["item"] for e in events if e["type"] == "response.output_item.added"]
    assert [(item["type"], item.get("name")) for item in added] == [("message", None),
                                                                     ("function_call", "get_weather")]
    assert response["output"][1]["call_id"] == "tool_0_get_weather"
    assert response["output"][1]["arguments"] == '{"city":"Paris","unit":"celsius"}'
    assert response["usage"]["total_tokens"] == 58  # usage on the finish chunk itself


async def test_annotations_are_streamed_and_kept(store: SQLiteResponseStore) -> None:
    events, response = await stream_run(store, "annotations")
    citation = {"type": "url_citation", "start_index": 29, "end_index": 62,
                "url": "https://example.org/weather?utm_source=openai", "title": "Paris weather"}
    [added] = [e for e in events if e["type"] == "response.output_text.annotation.added"]
    assert added["annotation"] == citation and added["annotation_index"] == 0
    assert response["output"][0]["content"][0]["annotations"] == [citation]


async def test_logprobs_are_streamed_with_each_delta_and_collected_on_the_part(store: SQLiteResponseStore) -> None:
    events, response = await stream_run(store, "logprobs")
    deltas = [e for e in events if e["type"] == "response.output_text.delta"]
    assert [e["logprobs"][0]["token"] for e in deltas] == ["Echo: ", "Say ", "hi ", "twice"]
    assert deltas[0]["logprobs"][0] == {
        "token": "Echo: ", "logprob": -0.1, "bytes": list(b"Echo: "),
        "top_logprobs": [{"token": "Echo: ", "logprob": -0.1, "bytes": list(b"Echo: ")},
                         {"token": "alt1", "logprob": -2.0, "bytes": list(b"alt1")}]}
    part = response["output"][0]["content"][0]
    assert part["logprobs"] == [entry for e in deltas for entry in e["logprobs"]]
    [done] = [e for e in events if e["type"] == "response.output_text.done"]
    assert done["logprobs"] == part["logprobs"]


# --- hand-made chunk sequences ----------------------------------------------------------------------------------


def delta(**fields: Any) -> dict[str, Any]:
    return {"choices": [{"index": 0, "delta": fields, "finish_reason": None}]}


def finish(reason: str = "stop", **extra: Any) -> dict[str, Any]:
    return {"choices": [{"index": 0, "delta": {}, "finish_reason": reason}], **extra}


def call(index: int | None, *, id: str | None = None, name: str | None = None,
         arguments: Any = None) -> dict[str, Any]:
    function = {key: value for key, value in (("name", name), ("arguments", arguments)) if value is not None}
    entry: dict[str, Any] = {"function": function}
    if index is not None:
        entry["index"] = index
    if id is not None:
        entry.update(id=id, type="function")
    return delta(tool_calls=[entry])


def build(chunks: list[dict[str, Any]], *, stream: bool = True, end: str = "finish",
          request: dict[str, Any] | None = None) -> tuple[dict[str, Any], list[dict[str, Any]]]:
    """Feed chunks to a fresh builder the way the exchange does; returns the response and the checked events."""
    parsed = parse_request(orjson.dumps(request or {"model": "m", "input": "x", "stream": stream}))
    response = new_response("resp_test", parsed, created_at=1_700_000_000)
    builder = OutputBuilder(response, encode_event if stream else None)
    builder.lifecycle("response.created")
    builder.lifecycle("response.in_progress")
    for chunk in chunks:
        builder.feed(chunk)
    if end == "finish":
        builder.finish(1_700_000_001)
    else:
        builder.fail("server_error", end)
    raw = builder.take()
    assert builder.take() == b""
    if not stream:
        assert raw == b""
        validate_response(response)
        return response, []
    events = check_stream(raw + DONE_FRAME)
    assert events[-1]["response"] == orjson.loads(orjson.dumps(response))
    return response, events


def summary(response: dict[str, Any]) -> list[tuple[Any, ...]]:
    out: list[tuple[Any, ...]] = []
    for item in response["output"]:
        if item["type"] == "function_call":
            out.append(("call", item["call_id"], item["name"], item["arguments"], item["status"]))
        elif item["type"] == "message":
            out.append(("message", tuple((p["type"], p.get("text", p.get("refusal"))) for p in item["content"]),
                        item["status"]))
        else:
            out.append(("reasoning", tuple(p["text"] for p in item["content"])))
    return out


def test_interleaved_parallel_calls_are_kept_apart() -> None:
    response, events = build([
        call(0, id="call_a", name="get_weather", arguments=""), call(1, id="call_b", name="get_time", arguments=""),
        call(0, arguments='{"city":'), call(1, arguments='{"zone":'), call(0, arguments='"Paris"}'),
        call(1, arguments='"UTC"}'), finish("tool_calls"),
    ])
    assert summary(response) == [("call", "call_a", "get_weather", '{"city":"Paris"}', "completed"),
                                 ("call", "call_b", "get_time", '{"zone":"UTC"}', "completed")]
    deltas = [(e["output_index"], e["delta"]) for e in events if e["type"].endswith("arguments.delta")]
    assert deltas == [(0, '{"city":'), (1, '{"zone":'), (0, '"Paris"}'), (1, '"UTC"}')]


def test_calls_without_index_are_separate_calls() -> None:
    response, _ = build([call(None, id="c1", name="a", arguments="{}"), call(None, id="c2", name="b", arguments="{}"),
                         finish("tool_calls")])
    assert summary(response) == [("call", "c1", "a", "{}", "completed"), ("call", "c2", "b", "{}", "completed")]


def test_a_call_without_an_id_gets_one() -> None:
    response, _ = build([call(0, name="a", arguments='{"x":1}'), finish("tool_calls")])
    assert response["output"][0]["call_id"].startswith("call_")


def test_arguments_sent_as_an_object_become_a_json_string() -> None:
    response, _ = build([call(0, id="c1", name="a", arguments={"x": [1, 2]}), finish("tool_calls")])
    assert response["output"][0]["arguments"] == '{"x":[1,2]}'


def test_a_call_whose_name_never_comes_is_still_closed() -> None:
    response, events = build([call(0, id="c1", arguments='{"x":1}'), finish("tool_calls")])
    assert summary(response) == [("call", "c1", "", '{"x":1}', "completed")]
    assert [e["type"] for e in events[2:-1]] == [
        "response.output_item.added", "response.function_call_arguments.delta",
        "response.function_call_arguments.done", "response.output_item.done"]


def test_item_order_follows_the_upstream() -> None:
    response, _ = build([
        delta(role="assistant", content=""), delta(reasoning_content="plan "), delta(reasoning_content="it"),
        delta(content="Calling."), call(0, id="c1", name="f", arguments="{}"), delta(content="Done."),
        delta(reasoning="again"), delta(refusal="No"), delta(content=" more"), finish(),
    ])
    assert summary(response) == [
        ("reasoning", ("plan it",)),
        ("message", (("output_text", "Calling."),), "completed"),
        ("call", "c1", "f", "{}", "completed"),
        ("message", (("output_text", "Done."),), "completed"),
        ("reasoning", ("again",)),
        ("message", (("refusal", "No"), ("output_text", " more")), "completed"),
    ]


def test_empty_and_contentless_chunks_change_nothing() -> None:
    response, events = build([
        {"choices": []}, {"choices": None}, {}, delta(), delta(content=""), delta(content=None, role="assistant"),
        {"choices": [{"index": 0, "delta": None, "finish_reason": None}]}, delta(content="hi"),
        {"choices": [], "usage": None}, finish(), {"choices": [], "usage": {"prompt_tokens": 3, "completion_tokens": 1,
                                                                           "total_tokens": 4}},
    ])
    assert summary(response) == [("message", (("output_text", "hi"),), "completed")]
    assert response["usage"]["total_tokens"] == 4
    assert [e["sequence_number"] for e in events] == list(range(len(events)))


def test_no_output_at_all_is_a_completed_empty_response() -> None:
    response, events = build([finish()])
    assert response["output"] == [] and response["status"] == "completed"
    assert [e["type"] for e in events] == ["response.created", "response.in_progress", "response.completed"]


@pytest.mark.parametrize(("reason", "status", "details"), [
    ("stop", "completed", None), ("tool_calls", "completed", None), ("function_call", "completed", None),
    ("length", "incomplete", {"reason": "max_output_tokens"}),
    ("content_filter", "incomplete", {"reason": "content_filter"}),
])
@pytest.mark.parametrize("stream", [True, False])
def test_finish_reasons(reason: str, status: str, details: Any, stream: bool) -> None:
    response, events = build([delta(content="partial"), finish(reason)], stream=stream)
    assert response["status"] == status and response["incomplete_details"] == details
    assert response["output"][0]["status"] == ("incomplete" if details else "completed")
    assert (response["completed_at"] is not None) == (status == "completed")
    if stream:
        assert events[-1]["type"] == ("response.incomplete" if details else "response.completed")


def test_fail_keeps_partial_output_without_done_events() -> None:
    response, events = build([delta(reasoning_content="hmm"), delta(content="Hal"),
                              call(0, id="c1", name="f", arguments='{"a"')], end="boom")
    assert response["status"] == "failed" and response["error"] == {"code": "server_error", "message": "boom"}
    assert summary(response) == [("reasoning", ("hmm",)),
                                 ("message", (("output_text", "Hal"),), "completed"),
                                 ("call", "c1", "f", '{"a"', "incomplete")]
    types = [e["type"] for e in events]
    assert types[-1] == "response.failed"
    assert "response.function_call_arguments.done" not in types  # the open call got no done events
    assert types.count("response.output_item.done") == 2  # the reasoning and the message were closed earlier


def test_the_non_streamed_builder_emits_nothing() -> None:
    response, _ = build([delta(content="a"), call(0, id="c", name="f", arguments="{}"), finish("tool_calls")],
                        stream=False)
    assert summary(response) == [("message", (("output_text", "a"),), "completed"),
                                 ("call", "c", "f", "{}", "completed")]


def test_an_error_chunk_is_a_protocol_error() -> None:
    builder = OutputBuilder(new_response("resp_x", parse_request(b'{"model":"m"}')), None)
    with pytest.raises(UpstreamProtocolError, match="overloaded"):
        builder.feed({"error": {"message": "model overloaded", "type": "server_error"}})
    with pytest.raises(UpstreamProtocolError, match="plain"):
        builder.feed({"error": "plain text"})


@pytest.mark.parametrize("chunk", [
    delta(content=5), delta(content=["a"]), delta(refusal={"x": 1}), call(0, id="c", name=5),
    call(0, id="c", name="f", arguments=7),
])
def test_wrongly_typed_deltas_are_protocol_errors(chunk: dict[str, Any]) -> None:
    builder = OutputBuilder(new_response("resp_x", parse_request(b'{"model":"m"}')), encode_event)
    with pytest.raises(UpstreamProtocolError):
        builder.feed(chunk)
    assert b'"delta":5' not in builder.take()


def test_unknown_annotations_are_skipped_and_flat_citations_read() -> None:
    flat = {"type": "url_citation", "url": "https://a", "title": "A", "start_index": 0, "end_index": 2}
    response, events = build([delta(content="ab", annotations=[{"type": "file_citation", "file_id": "f"}, flat]),
                              finish()])
    assert response["output"][0]["content"][0]["annotations"] == [flat]
    assert [e["annotation_index"] for e in events if e["type"].endswith("annotation.added")] == [0]


def test_logprob_bytes_default_to_the_token_utf8() -> None:
    response, _ = build([{"choices": [{"index": 0, "delta": {"content": "é"}, "finish_reason": None,
                                       "logprobs": {"content": [{"token": "é", "logprob": -0.5,
                                                                 "top_logprobs": [{"token": "e", "logprob": -1}]}]}}]},
                         finish()])
    assert response["output"][0]["content"][0]["logprobs"] == [
        {"token": "é", "logprob": -0.5, "bytes": [195, 169],
         "top_logprobs": [{"token": "e", "logprob": -1, "bytes": [101]}]}]


# --- completion_as_chunk ------------------------------------------------------------------------------------------


def test_completion_as_chunk() -> None:
    completion = {"choices": [{"index": 0, "finish_reason": "tool_calls", "message": {
        "role": "assistant", "content": "c", "reasoning_content": "r", "refusal": None,
        "tool_calls": [{"id": "x", "type": "function", "function": {"name": "f", "arguments": "{}"}}]}}],
        "usage": {"prompt_tokens": 1, "completion_tokens": 2, "total_tokens": 3}}
    chunk = completion_as_chunk(completion)
    assert chunk["choices"][0]["delta"]["tool_calls"] == [
        {"id": "x", "type": "function", "function": {"name": "f", "arguments": "{}"}, "index": 0}]
    assert chunk["choices"][0]["finish_reason"] == "tool_calls" and chunk["usage"] == completion["usage"]
    no_reason = completion_as_chunk({"choices": [{"message": {"content": "x"}}]})
    assert no_reason["choices"][0]["finish_reason"] == "stop"
    error = {"error": {"message": "bad"}}
    assert completion_as_chunk(error) is error


@pytest.mark.parametrize("completion", [[], "x", None, {}, {"choices": []}, {"choices": {}}, {"choices": [5]},
                                        {"choices": [{"message": "hi"}]}, {"choices": [{}]}])
def test_completion_that_is_not_a_chat_completion(completion: Any) -> None:
    with pytest.raises(UpstreamProtocolError):
        completion_as_chunk(completion)


# --- the oracles themselves must fail on what is wrong ------------------------------------------------------------


def valid_stream(name: str, encode: Any = encode_event) -> list[dict[str, Any]]:
    """A recording's events, built without a store (the builder and encoder alone, as the exchange drives them)."""
    said = chat_chunks(recordings.load(name))
    parsed = parse_request(orjson.dumps(recordings.request(name, stream=True)))
    builder = OutputBuilder(new_response("resp_0123", parsed, created_at=1_700_000_000), encode)
    builder.lifecycle("response.created")
    builder.lifecycle("response.in_progress")
    for chunk in said:
        builder.feed(chunk)
    builder.finish(1_700_000_001)
    return check_stream(builder.take() + DONE_FRAME)


def first(events: list[dict[str, Any]], kind: str) -> dict[str, Any]:
    return next(e for e in events if e["type"] == kind)


def response_of(events: list[dict[str, Any]]) -> dict[str, Any]:
    return events[-1]["response"]


RESPONSE_BREAKERS: list[tuple[str, Any]] = [
    ("a missing field", lambda r: r.pop("max_tool_calls")),
    ("a missing nullable field", lambda r: r.pop("incomplete_details")),
    ("an unknown field", lambda r: r.update(temprature=0.5)),
    ("an unknown nested key", lambda r: r["output"][-1].update(extra=1)),
    ("an unknown key in a part", lambda r: r["output"][-1]["content"][0].update(cache=True)),
    ("a string timestamp", lambda r: r.update(created_at=str(r["created_at"]))),
    ("a float timestamp", lambda r: r.update(created_at=float(r["created_at"]))),
    ("a number as the model", lambda r: r.update(model=5)),
    ("a boolean as a number", lambda r: r.update(temperature=True)),
    ("usage without cached_tokens", lambda r: r["usage"]["input_tokens_details"].clear()),
    ("usage that does not add up", lambda r: r["usage"].update(total_tokens=1)),
    ("completed without completed_at", lambda r: r.update(completed_at=None)),
    ("failed without error", lambda r: r.update(status="failed", completed_at=None)),
    ("an unknown status", lambda r: r.update(status="done")),
    ("a message without status", lambda r: r["output"][-1].pop("status")),
    ("a text part without annotations", lambda r: r["output"][-1]["content"][0].pop("annotations")),
    ("an unknown item type", lambda r: r["output"][-1].update(type="web_search_call")),
    ("duplicate item ids", lambda r: r["output"].append(r["output"][-1])),
    ("a tool without strict", lambda r: r["tools"].append({"type": "function", "name": "f", "description": None,
                                                           "parameters": None})),
    ("a hosted tool the SDK cannot read", lambda r: r["tools"].append({"type": "file_search"})),
    ("a json_schema format with a string schema", lambda r: r.update(
        text={"format": {"type": "json_schema", "name": "n", "schema": "{}", "description": None, "strict": True}})),
    ("a json_schema format without name", lambda r: r.update(
        text={"format": {"type": "json_schema", "schema": {}, "description": None, "strict": True}})),
    ("an unknown tool_choice", lambda r: r.update(tool_choice="sometimes")),
    ("an error without a message", lambda r: r.update(status="failed", completed_at=None, error={"code": "x"})),
]


@pytest.mark.parametrize("breaker", [b[1] for b in RESPONSE_BREAKERS], ids=[b[0] for b in RESPONSE_BREAKERS])
def test_validate_response_rejects(breaker: Any) -> None:
    response = response_of(valid_stream("think"))
    validate_response(response)
    breaker(response)
    with pytest.raises(AssertionError):
        validate_response(response)


def test_validate_response_accepts_what_the_spec_allows() -> None:
    response = response_of(valid_stream("think"))
    response["tools"] = [{"type": "function", "name": "f", "description": None, "parameters": None, "strict": None},
                         {"type": "web_search"}]  # hosted tools are judged by the SDK types
    response["text"] = {"format": {"type": "json_schema", "name": "n", "schema": {"type": "object"},
                                   "description": None, "strict": True}, "verbosity": "high"}
    response.update(status="failed", completed_at=None,
                    error={"code": "server_error", "message": "upstream_timeout: slow"})
    validate_response(response)


EVENT_BREAKERS: list[tuple[str, str, Any]] = [
    ("unknown type", "response.output_text.delta", lambda e: e.update(type="response.output_text.delta2")),
    ("a reasoning delta under neither the SDK's name nor the spec's", "response.reasoning_text.delta",
     lambda e: e.update(type="response.reasoning_content.delta")),
    ("a reasoning delta without content_index", "response.reasoning_text.delta", lambda e: e.pop("content_index")),
    ("no sequence_number", "response.output_text.delta", lambda e: e.pop("sequence_number")),
    ("a string sequence_number", "response.output_text.delta", lambda e: e.update(sequence_number="3")),
    ("a number as delta", "response.output_text.delta", lambda e: e.update(delta=5)),
    ("no logprobs on a text delta", "response.output_text.delta", lambda e: e.pop("logprobs")),
    ("an extra key", "response.reasoning_text.delta", lambda e: e.update(extra=1)),
    ("no item_id", "response.content_part.added", lambda e: e.pop("item_id")),
    ("an item without id", "response.output_item.added", lambda e: e["item"].pop("id")),
    ("an extra key on a lifecycle event", "response.created", lambda e: e.update(output=[])),
    ("a completed event for an unfinished response", "response.completed",
     lambda e: e["response"].update(status="in_progress", completed_at=None)),
    ("a response with a missing field", "response.in_progress", lambda e: e["response"].pop("usage")),
    ("arguments as an object", "response.function_call_arguments.done", lambda e: e.update(arguments={})),
]


@pytest.mark.parametrize(("kind", "breaker"), [b[1:] for b in EVENT_BREAKERS], ids=[b[0] for b in EVENT_BREAKERS])
def test_validate_event_rejects(kind: str, breaker: Any) -> None:
    source = "parallel_tools" if "function_call" in kind else "think"
    event = first(valid_stream(source), kind)
    validate_event(event)
    breaker(event)
    with pytest.raises(AssertionError):
        validate_event(event)


def test_an_open_responses_client_gets_the_specs_reasoning_names_and_nothing_else_changes() -> None:
    sdk_names = valid_stream("think")
    spec_names = valid_stream("think", open_responses_encoder(encode_event))
    assert {"response.reasoning_text.delta", "response.reasoning_text.done"} <= {e["type"] for e in sdk_names}
    renamed = [dict(e, type=OPEN_RESPONSES_NAMES.get(e["type"], e["type"])) for e in sdk_names]
    assert normalize(spec_names) == normalize(renamed)
    assert {"response.reasoning.delta", "response.reasoning.done"} <= {e["type"] for e in spec_names}


def test_validate_event_knows_every_event_the_bridge_emits() -> None:
    seen = {e["type"] for name in recordings.names() for e in valid_stream(name)}
    assert seen <= set(EVENT_MODELS) | set(SPEC_NAMES)
    validate_event({"type": "error", "sequence_number": 4,
                    "error": {"type": "server_error", "code": None, "message": "m", "param": None}})


def drop(kind: str) -> Any:
    def apply(events: list[dict[str, Any]]) -> None:
        events.remove(first(events, kind))
    return apply


def move_before(kind: str, before: str) -> Any:
    def apply(events: list[dict[str, Any]]) -> None:
        event = first(events, kind)
        events.remove(event)
        events.insert(events.index(first(events, before)), event)
    return apply


def renumber(events: list[dict[str, Any]]) -> None:
    for number, event in enumerate(events):
        event["sequence_number"] = number


SEQUENCE_BREAKERS: list[tuple[str, Any]] = [
    ("no created", drop("response.created")),
    ("no terminal event", lambda events: events.pop()),
    ("an event after the terminal one", lambda events: events.append(dict(events[-3]))),
    ("no output_item.added", drop("response.output_item.added")),
    ("no output_item.done", drop("response.output_item.done")),
    ("no content_part.added", drop("response.content_part.added")),
    ("no content_part.done", drop("response.content_part.done")),
    ("no text done", drop("response.output_text.done")),
    ("a lost delta", drop("response.output_text.delta")),
    ("a delta before its item", move_before("response.reasoning_text.delta", "response.output_item.added")),
    ("a part done before its text done", move_before("response.content_part.done", "response.reasoning_text.done")),
    ("an item done before its part", move_before("response.output_item.done", "response.content_part.done")),
    ("a wrong output_index", lambda events: first(events, "response.output_text.delta").update(output_index=0)),
    ("a wrong item_id", lambda events: first(events, "response.output_text.delta").update(item_id="msg_other")),
    ("a wrong content_index", lambda events: first(events, "response.content_part.added").update(content_index=1)),
    ("a done text that is not the deltas", lambda events: first(events, "response.output_text.done").update(
        text="something else")),
    ("a final output that is not the done items", lambda events: events[-1]["response"]["output"].pop()),
    ("a final item that differs", lambda events: events[-1]["response"]["output"][0].update(id="rs_other")),
    ("a second created", lambda events: events.insert(1, dict(events[0]))),
    ("an in-progress event with output", lambda events: events[1]["response"].update(output=[{"id": "x"}])),
    ("another response's lifecycle", lambda events: events[-1]["response"].update(id="resp_other")),
]


@pytest.mark.parametrize("breaker", [b[1] for b in SEQUENCE_BREAKERS], ids=[b[0] for b in SEQUENCE_BREAKERS])
def test_check_sequence_rejects(breaker: Any) -> None:
    events = valid_stream("think")
    breaker(events)
    renumber(events)  # the order itself is wrong, not just the numbers
    with pytest.raises(AssertionError):
        check_sequence(events)


@pytest.mark.parametrize("numbers", [[1, 2, 3], [0, 2, 1], [0, 1, 1]])
def test_check_sequence_rejects_bad_sequence_numbers(numbers: list[int]) -> None:
    events = valid_stream("think")
    for event, number in zip(events, numbers, strict=False):
        event["sequence_number"] = number
    with pytest.raises(AssertionError):
        check_sequence(events)


def test_check_sequence_rejects_a_changed_call() -> None:
    events = valid_stream("parallel_tools")
    first(events, "response.function_call_arguments.done").update(arguments="{}")
    with pytest.raises(AssertionError):
        check_sequence(events)
    events = valid_stream("parallel_tools")
    first(events, "response.output_item.done")["item"]["name"] = "other"
    with pytest.raises(AssertionError):
        check_sequence(events)


def test_normalize_replaces_ids_and_clocks_consistently() -> None:
    a = {"id": "resp_" + "a" * 32, "created_at": 5, "completed_at": 6,
         "output": [{"id": "msg_" + "b" * 32, "call_id": "call_" + "c" * 32}], "previous_response_id": None}
    b = {"id": "resp_" + "d" * 32, "created_at": 9, "completed_at": 10,
         "output": [{"id": "msg_" + "e" * 32, "call_id": "call_" + "f" * 32}], "previous_response_id": None}
    assert normalize(a) == normalize(b)
    assert normalize(orjson.dumps(a)) == normalize(orjson.dumps(b))
    c = dict(b, previous_response_id="resp_" + "d" * 32)  # the same id twice keeps its placeholder
    assert normalize(c)["previous_response_id"] == normalize(c)["id"]
