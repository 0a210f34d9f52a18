"""The ext_proc door without Envoy: ``ProcessingRequest`` messages fed to the servicer, its replies checked.

Most tests drive one ``_Stream`` (one gRPC stream, one HTTP request) directly, message by message, the way Envoy
1.40 sends them; the last ones run the real ``grpc.aio`` server on a loopback port and talk to it over a real
channel, for what only a live gRPC stream shows (a client reset, a stream closed early, a drain). The real-Envoy
suite (tests/integration/test_extproc_door.py) checks the same behaviour end to end.
"""

from __future__ import annotations

import asyncio
import sys
from typing import Any

import grpc
import orjson
import pytest

from responses_bridge.adapters.extproc import messages, request_phase, response_phase
from responses_bridge.adapters.extproc import service as external_processor_pb2_grpc
from responses_bridge.adapters.extproc import stream as servicer_module
from responses_bridge.adapters.extproc._pb.ext_proc_pb2 import ProcessingMode, ProcessingRequest, ProcessingResponse
from responses_bridge.adapters.extproc.stream import _Stream
from responses_bridge.config.settings import Settings
from responses_bridge.run.response_run import ResponseRun
from responses_bridge.run.server_tools import ServerTools, ServerToolServices
from responses_bridge.run.tools.mcp import MCPLimits, MCPTools
from responses_bridge.runtime import Runtime
from responses_bridge.store import SQLiteResponseStore
from responses_bridge.store.base import DEFAULT_TENANT
from tests.support.runtime import runtime_over
from tests.support.schema import check_stream
from tests.support.sdk_strict import failure_reason
from tests.unit.recordings import load, load_json
from tests.unit.test_file_search_tool import MemorySearcher

FD = ProcessingMode.FULL_DUPLEX_STREAMED
NONE = ProcessingMode.NONE
SSE = "text/event-stream"
JSON = "application/json"
REQUEST = {"model": "fake-model", "input": "Hello there, how are you today?"}
TEXT = "Echo: Hello there, how are you today?"


# --- messages as Envoy sends them ------------------------------------------------------------------------------


def _first(message: ProcessingRequest, mode: int) -> ProcessingRequest:
    message.protocol_config.request_body_mode = ProcessingMode.BUFFERED
    message.protocol_config.response_body_mode = mode  # type: ignore[assignment]
    return message


def request_body(body: bytes | dict[str, Any], end_of_stream: bool = True, *, mode: int | None = FD,
                 authorization: str | None = None, sidecar_route: bool = False) -> ProcessingRequest:
    """``sidecar_route``: the metadata a bootstrap with the route for server-side tools forwards."""
    message = ProcessingRequest()
    message.request_body.body = body if isinstance(body, bytes) else orjson.dumps(body)
    message.request_body.end_of_stream = end_of_stream
    if authorization is not None:
        fields = message.metadata_context.filter_metadata["responses_bridge"].fields
        fields["authorization"].string_value = authorization
    if sidecar_route:
        message.metadata_context.filter_metadata["responses_bridge.route"].fields["sidecar_route"].bool_value = True
    return _first(message, mode) if mode is not None else message


def request_headers(method: str, path: str, *, end_of_stream: bool = False, authorization: str | None = None,
                    mode: int = FD) -> ProcessingRequest:
    message = ProcessingRequest()
    headers = [(":method", method), (":path", path)] + ([("authorization", authorization)] if authorization else [])
    for key, value in headers:
        header = message.request_headers.headers.headers.add()
        header.key, header.raw_value = key, value.encode()
    message.request_headers.end_of_stream = end_of_stream
    return _first(message, mode)


def response_headers(status: int, content_type: str | None, *, end_of_stream: bool = False) -> ProcessingRequest:
    message = ProcessingRequest()
    for key, value in [(":status", str(status))] + ([("content-type", content_type)] if content_type else []):
        header = message.response_headers.headers.headers.add()
        header.key, header.raw_value = key, value.encode()
    message.response_headers.end_of_stream = end_of_stream
    return message


def response_body(chunk: bytes, end_of_stream: bool = False) -> ProcessingRequest:
    message = ProcessingRequest()
    message.response_body.body = chunk
    message.response_body.end_of_stream = end_of_stream
    return message


def response_trailers() -> ProcessingRequest:
    message = ProcessingRequest()
    message.response_trailers.SetInParent()
    return message


# --- reading the replies ---------------------------------------------------------------------------------------


def kinds(replies: list[ProcessingResponse]) -> list[str | None]:
    return [reply.WhichOneof("response") for reply in replies]


def set_headers(reply: ProcessingResponse, phase: str) -> dict[str, str]:
    mutation = getattr(reply, phase).response.header_mutation
    return {h.header.key: h.header.raw_value.decode() for h in mutation.set_headers}


def streamed(reply: ProcessingResponse) -> tuple[bytes, bool]:
    body = reply.response_body.response.body_mutation.streamed_response
    return body.body, body.end_of_stream


def immediate(reply: ProcessingResponse) -> tuple[int, dict[str, str], bytes]:
    assert reply.WhichOneof("response") == "immediate_response"
    message = reply.immediate_response
    headers = {h.header.key: h.header.raw_value.decode() for h in message.headers.set_headers}
    assert message.details == "responses_bridge"
    return message.status.code, headers, message.body


def error_of(body: bytes) -> dict[str, Any]:
    error = orjson.loads(body)["error"]
    assert set(error) == {"message", "type", "param", "code"}
    return error


def sse_terminal(data: bytes) -> dict[str, Any]:
    assert b"chat.completion.chunk" not in data
    assert data.endswith(b"data: [DONE]\n\n")
    return check_stream(data)[-1]


# --- fixtures --------------------------------------------------------------------------------------------------


@pytest.fixture
async def runtime(store: SQLiteResponseStore) -> Runtime:
    return runtime_over(settings=Settings(upstream="http://127.0.0.1:9/v1", db=":memory:", api_key=None), store=store)


def new_stream(runtime: Runtime) -> _Stream:
    return _Stream(runtime, "/v1")


async def begun(runtime: Runtime, body: dict[str, Any], *, mode: int = FD) -> _Stream:
    stream = new_stream(runtime)
    assert kinds(await stream.handle(request_body(body, mode=mode))) == ["request_body"]
    return stream


async def stored_status(runtime: Runtime, stream: _Stream) -> str | None:
    assert stream.run is not None and stream.run.response_id is not None
    stored = await runtime.store.get_response(stream.run.response_id, tenant=DEFAULT_TENANT)
    return stored["status"] if stored else None


# --- request ---------------------------------------------------------------------------------------------------


async def test_body_without_request_headers_is_rewritten(runtime: Runtime) -> None:
    stream = new_stream(runtime)
    [reply] = await stream.handle(request_body(REQUEST, authorization="Bearer sk-client"))
    common = reply.request_body.response
    headers = set_headers(reply, "request_body")
    assert headers[":path"] == "/v1/chat/completions"
    assert int(headers["content-length"]) == len(common.body_mutation.body)
    assert "authorization" not in headers  # no configured key: the client's own goes upstream
    assert "responses_bridge.upstream" not in reply.dynamic_metadata  # and the route sets none in its place
    assert list(common.header_mutation.remove_headers) == ["accept-encoding"]
    chat = orjson.loads(common.body_mutation.body)
    assert chat["messages"][-1]["content"] == REQUEST["input"]
    assert stream.full_duplex and stream.authorization == "Bearer sk-client"


@pytest.mark.parametrize("tool", [
    {"type": "mcp", "server_label": "docs", "server_url": "https://mcp.example.com/mcp"},
    {"type": "tool_search"},
    {"type": "tool_search", "execution": "server"},
])
async def test_served_server_side_tools_route_the_request_to_the_http_door(runtime: Runtime,
                                                                          tool: dict[str, Any]) -> None:
    """No translation and no run: the body goes on unchanged, marked for the sidecar's route, and the processor
    is done with the request (nothing stored, nothing to abandon)."""
    stream = new_stream(runtime)
    [reply] = await stream.handle(request_body({**REQUEST, "tools": [tool]}, sidecar_route=True))
    common = reply.request_body.response
    assert common.clear_route_cache
    assert not common.HasField("body_mutation")
    assert list(common.header_mutation.set_headers) == []
    route = reply.dynamic_metadata.fields["responses_bridge.route"].struct_value.fields
    assert route["to"].string_value == "sidecar"
    assert stream.routed and stream.done and stream.run is None


@pytest.mark.parametrize("tool", [
    {"type": "web_search"},  # no search provider in this deployment: the unsupported-tool policy, as before
    {"type": "tool_search", "execution": "client"},
    {"type": "function", "name": "mcp", "parameters": {"type": "object", "properties": {}}},
])
async def test_requests_without_served_tools_are_translated(runtime: Runtime, tool: dict[str, Any]) -> None:
    stream = new_stream(runtime)
    [reply] = await stream.handle(request_body({**REQUEST, "tools": [tool]}, sidecar_route=True))
    common = reply.request_body.response
    assert not common.clear_route_cache and not reply.HasField("dynamic_metadata")
    assert set_headers(reply, "request_body")[":path"] == "/v1/chat/completions"
    assert not stream.routed and stream.run is not None


async def test_file_search_routes_the_request_only_where_vector_stores_can_be_searched(
        store: SQLiteResponseStore) -> None:
    tool = {"type": "file_search", "vector_store_ids": ["vs_1"]}
    settings = Settings(upstream="http://127.0.0.1:9/v1", db=":memory:", api_key=None)
    without = runtime_over(settings=settings, store=store,
                      server_tools=ServerTools(ServerToolServices(MCPTools(MCPLimits()))))
    stream = new_stream(without)
    [reply] = await stream.handle(request_body({**REQUEST, "tools": [tool]}, sidecar_route=True))
    assert not stream.routed and set_headers(reply, "request_body")[":path"] == "/v1/chat/completions"
    assert "tools" not in orjson.loads(reply.request_body.response.body_mutation.body)  # dropped, as before

    with_stores = runtime_over(settings=settings, store=store, server_tools=ServerTools(
        ServerToolServices(MCPTools(MCPLimits()), file_search=MemorySearcher())))
    stream = new_stream(with_stores)
    [reply] = await stream.handle(request_body({**REQUEST, "tools": [tool]}, sidecar_route=True))
    assert reply.request_body.response.clear_route_cache and stream.routed and stream.run is None


async def test_server_tools_where_envoy_offers_no_route_to_the_http_door_are_a_400_naming_the_header(
        runtime: Runtime) -> None:
    """Envoy Gateway and Istio (or an older bootstrap) cannot send a request to the HTTP door: its server-side
    tools are refused, naming the door header, never dropped (the hosted shell would become the client's own)."""
    stream = new_stream(runtime)
    [reply] = await stream.handle(request_body({**REQUEST, "tools": [{"type": "tool_search"}]}))
    immediate = reply.immediate_response
    assert immediate.status.code == 400 and not stream.routed
    error = orjson.loads(immediate.body)["error"]
    assert (error["param"], error["code"]) == ("tools", "http_door_required")
    assert "(tool_search)" in error["message"] and "'x-responses-bridge-door: http'" in error["message"]


async def test_a_body_in_chunks_is_routed_by_its_first_message_metadata(runtime: Runtime) -> None:
    raw = orjson.dumps({**REQUEST, "tools": [{"type": "tool_search"}]})
    stream = new_stream(runtime)
    await stream.handle(request_body(raw[:10], False, sidecar_route=True))
    [reply] = await stream.handle(request_body(raw[10:], True, mode=None))
    assert reply.request_body.response.clear_route_cache and stream.routed


async def test_web_search_with_a_provider_is_routed(store: SQLiteResponseStore) -> None:
    runtime = runtime_over(settings=Settings(upstream="http://127.0.0.1:9/v1", db=":memory:", api_key=None,
                                        web_search="searxng:http://127.0.0.1:9"), store=store)
    [reply] = await new_stream(runtime).handle(request_body({**REQUEST, "tools": [{"type": "web_search_preview"}]},
                                                            sidecar_route=True))
    assert reply.request_body.response.clear_route_cache


async def test_request_headers_then_body_with_the_configured_key(store: SQLiteResponseStore) -> None:
    runtime = runtime_over(settings=Settings(upstream="http://127.0.0.1:9/v1", db=":memory:", api_key="sk-up"),
                      store=store)
    stream = new_stream(runtime)
    [reply] = await stream.handle(request_headers("POST", "/v1/responses?x=1", authorization="Bearer sk-client"))
    assert reply == messages.CONTINUE_REQUEST_HEADERS
    [reply] = await stream.handle(request_body(REQUEST, mode=None))
    # in metadata, which the route turns into the upstream's header (a body-phase header mutation is not applied)
    assert reply.dynamic_metadata["responses_bridge.upstream"]["authorization"] == "Bearer sk-up"
    assert "authorization" not in set_headers(reply, "request_body")


async def test_another_route_passes_untouched(store: SQLiteResponseStore) -> None:
    runtime = runtime_over(settings=Settings(upstream="http://127.0.0.1:9/v1", db=":memory:", api_key="sk-up"),
                      store=store)
    stream = new_stream(runtime)
    [reply] = await stream.handle(request_headers("GET", "/v1/models"))
    assert set_headers(reply, "request_headers") == {"authorization": "Bearer sk-up"}
    assert await stream.handle(response_headers(200, JSON)) == [messages.CONTINUE_RESPONSE_HEADERS]
    [reply] = await stream.handle(response_body(b'{"data": []}', True))
    assert streamed(reply) == (b'{"data": []}', True)  # full duplex: passed on as it came


async def test_a_post_without_a_body_is_a_400(runtime: Runtime) -> None:
    [reply] = await new_stream(runtime).handle(request_headers("POST", "/v1/responses", end_of_stream=True))
    status, headers, body = immediate(reply)
    assert status == 400 and headers["content-type"] == JSON
    assert error_of(body)["type"] == "invalid_request_error"


async def test_the_run_is_the_streams_tenants(runtime: Runtime) -> None:
    """The ext_proc door makes its run with the tenant its stream resolved: a chain of another tenant's is not
    found (the same 404 as an unknown id), the tenant's own continues."""
    stored = {"id": "resp_owned", "object": "response", "created_at": 1, "status": "completed", "model": "m",
              "output": [{"id": "msg_owned", "type": "message", "role": "assistant", "status": "completed",
                          "content": [{"type": "output_text", "text": "earlier", "annotations": []}]}]}
    await runtime.store.save_response(stored, [], tenant="tenant-a")
    answers = []
    for tenant, previous in (("tenant-b", "resp_owned"), ("tenant-b", "resp_unknown")):
        stream = new_stream(runtime)
        stream.tenant = tenant
        [reply] = await stream.handle(request_body({**REQUEST, "previous_response_id": previous}))
        status, _, body = immediate(reply)
        answers.append((status, body.replace(previous.encode(), b"ID")))
        assert stream.run is not None and stream.run.tenant == tenant
    assert answers[0] == answers[1] and answers[0][0] == 404
    stream = new_stream(runtime)
    stream.tenant = "tenant-a"
    [reply] = await stream.handle(request_body({**REQUEST, "previous_response_id": "resp_owned"}))
    chat = orjson.loads(reply.request_body.response.body_mutation.body)
    assert chat["messages"][0] == {"role": "assistant", "content": "earlier"}


async def test_a_body_in_several_chunks(runtime: Runtime) -> None:
    raw = orjson.dumps(REQUEST)
    stream = new_stream(runtime)
    [reply] = await stream.handle(request_body(raw[:10], False))
    assert reply.request_body.response.body_mutation.body == b"" and reply.request_body.response.HasField(
        "body_mutation")
    [reply] = await stream.handle(request_body(raw[10:20], False, mode=None))
    [reply] = await stream.handle(request_body(raw[20:], True, mode=None))
    chat = orjson.loads(reply.request_body.response.body_mutation.body)
    assert chat["messages"][-1]["content"] == REQUEST["input"]


async def test_an_invalid_body_is_a_400(runtime: Runtime) -> None:
    stream = new_stream(runtime)
    [reply] = await stream.handle(request_body(b"{not json"))
    status, _, body = immediate(reply)
    assert status == 400 and error_of(body)["type"] == "invalid_request_error"
    assert stream.done


async def test_a_body_over_the_limit_is_a_413(runtime: Runtime) -> None:
    runtime.settings.max_request_bytes = 100
    [reply] = await new_stream(runtime).handle(request_body({**REQUEST, "input": "x" * 200}))
    status, _, body = immediate(reply)
    assert status == 413 and error_of(body)["code"] == "request_too_large"


async def test_a_streamed_body_is_refused_as_soon_as_it_outgrows_the_limit(runtime: Runtime) -> None:
    """Not after every chunk was collected and joined: the chunk that crosses the limit gets the 413."""
    runtime.settings.max_request_bytes = 100
    stream = new_stream(runtime)
    [reply] = await stream.handle(request_body(b"x" * 60, False))
    assert reply.WhichOneof("response") == "request_body"
    [reply] = await stream.handle(request_body(b"x" * 60, False, mode=None))
    status, _, _ = immediate(reply)
    assert status == 413
    assert stream.admission is None and stream.done  # its chunks let go


async def test_a_large_body_is_held_once_while_it_is_translated(runtime: Runtime,
                                                               monkeypatch: pytest.MonkeyPatch) -> None:
    """Only the bytes being parsed are alive during the translation: no extra references from the servicer's
    frames or its chunk list keep them (or the message they came in) beyond it."""
    original = request_phase.parse_json_object
    references: list[int] = []

    def parse_json_object(body: bytes) -> Any:
        # getrefcount's argument, this parameter, and the one local of _begin that passed it
        references.append(sys.getrefcount(body))
        return original(body)

    monkeypatch.setattr(request_phase, "parse_json_object", parse_json_object)
    await new_stream(runtime).handle(request_body({**REQUEST, "input": "x" * 100_000}))  # whole
    raw = orjson.dumps({**REQUEST, "input": "y" * 100_000})
    stream = new_stream(runtime)
    await stream.handle(request_body(raw[:10], False))  # in two chunks, joined
    await stream.handle(request_body(raw[10:], True, mode=None))
    assert references == [3, 3] and stream.admission is None




# --- response, full duplex -------------------------------------------------------------------------------------


async def test_a_json_answer_gets_headers_and_body_at_its_end(runtime: Runtime) -> None:
    stream = await begun(runtime, REQUEST)
    completion = load_json("text_usage")
    assert await stream.handle(response_headers(200, JSON)) == []  # the status depends on the body
    assert await stream.handle(response_body(completion[:100])) == []
    assert await stream.handle(response_body(completion[100:])) == []
    headers_reply, body_reply = await stream.handle(response_body(b"", True))
    headers = set_headers(headers_reply, "response_headers")
    assert headers[":status"] == "200" and headers["content-type"] == JSON
    body, end = streamed(body_reply)
    assert end and orjson.loads(body)["output"][0]["content"][0]["text"] == TEXT
    assert await stored_status(runtime, stream) == "completed"


@pytest.mark.parametrize("client_streams", [False, True])
async def test_an_upstream_4xx_passes_through_as_an_error(runtime: Runtime, client_streams: bool) -> None:
    stream = await begun(runtime, {**REQUEST, "stream": client_streams})
    assert await stream.handle(response_headers(429, JSON)) == []
    error = b'{"error": {"message": "slow down", "type": "rate_limit_error", "code": "rate_limit_exceeded"}}'
    headers_reply, body_reply = await stream.handle(response_body(error, True))
    assert set_headers(headers_reply, "response_headers")[":status"] == "429"
    body, end = streamed(body_reply)
    assert end and error_of(body)["message"] == "slow down"


async def test_an_upstream_5xx_is_a_502_for_a_json_client(runtime: Runtime) -> None:
    stream = await begun(runtime, REQUEST)
    assert await stream.handle(response_headers(500, JSON)) == []
    headers_reply, body_reply = await stream.handle(response_body(b'{"error": {"message": "boom"}}', True))
    assert set_headers(headers_reply, "response_headers")[":status"] == "502"
    assert "boom" in error_of(streamed(body_reply)[0])["message"]


async def test_an_upstream_5xx_fails_an_event_stream(runtime: Runtime) -> None:
    stream = await begun(runtime, {**REQUEST, "stream": True})
    [reply] = await stream.handle(response_headers(503, JSON))
    headers = set_headers(reply, "response_headers")
    assert headers[":status"] == "200" and headers["content-type"].startswith(SSE)
    [reply] = await stream.handle(response_body(b'{"error": "down"}'))  # the stream's head, nothing else
    head, end = streamed(reply)
    assert not end and b"response.in_progress" in head and b"down" not in head
    [reply] = await stream.handle(response_body(b"", True))
    body, end = streamed(reply)
    assert end and sse_terminal(head + body)["type"] == "response.failed"
    assert await stored_status(runtime, stream) == "failed"


@pytest.mark.parametrize("size", [1, 7, 64, 333, 100_000])
@pytest.mark.parametrize("end_on_empty_chunk", [True, False])
async def test_sse_chunks_split_anywhere(runtime: Runtime, size: int, end_on_empty_chunk: bool) -> None:
    """Whatever the cut, the client gets whole events in order; a chunk that completes no event gets no reply;
    only the last message ends the client's response."""
    stream = await begun(runtime, {**REQUEST, "stream": True})
    [reply] = await stream.handle(response_headers(200, SSE))
    assert set_headers(reply, "response_headers")["content-type"].startswith(SSE)
    raw = load("text_usage")
    pieces = [raw[i:i + size] for i in range(0, len(raw), size)]
    messages = [response_body(p) for p in pieces]
    if end_on_empty_chunk:
        messages.append(response_body(b"", True))
    else:
        messages[-1] = response_body(pieces[-1], True)
    client = b""
    ends = []
    for message in messages:
        for reply in await stream.handle(message):
            body, end = streamed(reply)
            assert body, "an empty reply costs a message and says nothing"
            client += body
            ends.append(end)
    assert ends[-1] and not any(ends[:-1])
    events = check_stream(client)
    assert events[-1]["type"] == "response.completed"
    assert events[-1]["response"]["output"][0]["content"][0]["text"] == TEXT
    assert await stored_status(runtime, stream) == "completed"


async def test_trailers_end_the_body(runtime: Runtime) -> None:
    stream = await begun(runtime, {**REQUEST, "stream": True})
    await stream.handle(response_headers(200, SSE))
    client = b"".join(streamed(r)[0] for r in await stream.handle(response_body(load("text_usage"))))
    body_reply, trailers_reply = await stream.handle(response_trailers())
    body, end = streamed(body_reply)
    assert end and trailers_reply.WhichOneof("response") == "response_trailers"
    assert sse_terminal(client + body)["type"] == "response.completed"

    stream = await begun(runtime, REQUEST)
    await stream.handle(response_headers(200, JSON))
    assert await stream.handle(response_body(load_json("text_usage"))) == []
    assert kinds(await stream.handle(response_trailers())) == ["response_headers", "response_body",
                                                               "response_trailers"]


async def test_an_upstream_cut_leaves_a_failed_response(runtime: Runtime) -> None:
    """Envoy resets the gRPC stream when the upstream drops its connection: the handler abandons the stream."""
    stream = await begun(runtime, {**REQUEST, "stream": True})
    await stream.handle(response_headers(200, SSE))
    raw = load("text_usage")
    await stream.handle(response_body(raw[: len(raw) // 2]))
    await stream.abandon()
    assert await stored_status(runtime, stream) == "failed"


async def test_a_response_headers_message_with_end_of_stream(runtime: Runtime) -> None:
    stream = await begun(runtime, {**REQUEST, "stream": True})
    [reply] = await stream.handle(response_headers(503, None, end_of_stream=True))
    common = reply.response_headers.response
    assert common.status == common.CONTINUE_AND_REPLACE
    assert sse_terminal(common.body_mutation.body)["type"] == "response.failed"


# --- a bug in any phase still answers -------------------------------------------------------------------------


def _broken(*args: Any) -> Any:
    raise RuntimeError("injected")


async def _broken_async(*args: Any) -> Any:
    raise RuntimeError("injected")


async def test_a_bug_in_the_request_phase_is_a_500(runtime: Runtime, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(ResponseRun, "begin", _broken_async)
    [reply] = await new_stream(runtime).handle(request_body(REQUEST))
    status, _, body = immediate(reply)
    assert status == 500 and error_of(body)["type"] == "server_error"
    monkeypatch.setattr(servicer_module._Stream, "_request_body", _broken_async)
    [reply] = await new_stream(runtime).handle(request_body(REQUEST))
    assert immediate(reply)[0] == 500


@pytest.mark.parametrize("client_streams", [False, True])
async def test_a_bug_at_the_response_headers(runtime: Runtime, monkeypatch: pytest.MonkeyPatch,
                                             client_streams: bool) -> None:
    stream = await begun(runtime, {**REQUEST, "stream": client_streams})
    monkeypatch.setattr(response_phase, "_sse_headers", _broken)
    monkeypatch.setattr(ResponseRun, "on_upstream_headers", _broken) if not client_streams else None
    [reply] = await stream.handle(response_headers(200, SSE if client_streams else JSON))
    status, _headers, body = immediate(reply)  # nothing had left Envoy: the whole answer
    if client_streams:
        assert status == 200 and sse_terminal(body)["type"] == "response.failed"
        assert await stored_status(runtime, stream) == "failed"
    else:
        assert status == 502 and error_of(body)["type"] == "server_error"


async def test_a_bug_mid_stream_ends_it_with_response_failed(runtime: Runtime,
                                                            monkeypatch: pytest.MonkeyPatch) -> None:
    stream = await begun(runtime, {**REQUEST, "stream": True})
    await stream.handle(response_headers(200, SSE))
    frames = load("text_usage").split(b"\n\n")
    [reply] = await stream.handle(response_body(frames[0] + b"\n\n" + frames[1] + b"\n\n"))
    client, end = streamed(reply)
    assert not end
    monkeypatch.setattr(stream.run, "on_upstream_chunk", _broken)  # the translator's, bound at begin
    [reply] = await stream.handle(response_body(frames[2] + b"\n\n"))
    body, end = streamed(reply)
    assert end and sse_terminal(client + body)["type"] == "response.failed"
    assert await stream.handle(response_body(b"more")) == []  # the rest is dropped
    assert await stream.handle(response_trailers()) == [messages.CONTINUE_RESPONSE_TRAILERS]
    assert await stored_status(runtime, stream) == "failed"


async def test_a_bug_at_the_end_of_a_json_answer(runtime: Runtime, monkeypatch: pytest.MonkeyPatch) -> None:
    stream = await begun(runtime, REQUEST)
    await stream.handle(response_headers(200, JSON))
    monkeypatch.setattr(ResponseRun, "finish", _broken_async)
    [reply] = await stream.handle(response_body(load_json("text_usage"), True))
    status, _, body = immediate(reply)
    assert status == 502 and error_of(body)["type"] == "server_error"


async def test_a_bug_at_the_end_of_a_stream(runtime: Runtime, monkeypatch: pytest.MonkeyPatch) -> None:
    stream = await begun(runtime, {**REQUEST, "stream": True})
    await stream.handle(response_headers(200, SSE))
    client = b"".join(streamed(r)[0] for r in await stream.handle(response_body(load("text_usage"))))
    monkeypatch.setattr(ResponseRun, "finish", _broken_async)
    [reply] = await stream.handle(response_body(b"", True))
    body, end = streamed(reply)
    assert end and sse_terminal(client + body)["type"] == "response.failed"


# --- older bootstraps: response body NONE, mode chosen in the headers reply -------------------------------------


async def test_streamed_mode_answers_every_chunk(runtime: Runtime) -> None:
    stream = await begun(runtime, {**REQUEST, "stream": True}, mode=NONE)
    [reply] = await stream.handle(response_headers(200, SSE))
    assert reply.mode_override.response_body_mode == ProcessingMode.STREAMED
    raw = load("text_usage")
    client = b""
    for i in range(0, len(raw), 50):
        [reply] = await stream.handle(response_body(raw[i:i + 50]))
        assert reply.response_body.response.HasField("body_mutation")  # never the raw chunk
        client += reply.response_body.response.body_mutation.body
    [reply] = await stream.handle(response_body(b"", True))
    client += reply.response_body.response.body_mutation.body
    assert sse_terminal(client)["type"] == "response.completed"


async def test_buffered_mode_for_a_json_answer(runtime: Runtime) -> None:
    stream = await begun(runtime, REQUEST, mode=NONE)
    [reply] = await stream.handle(response_headers(200, JSON))
    assert reply.mode_override.response_body_mode == ProcessingMode.BUFFERED
    [reply] = await stream.handle(response_body(load_json("text_usage"), True))
    assert set_headers(reply, "response_body")[":status"] == "200"
    assert orjson.loads(reply.response_body.response.body_mutation.body)["status"] == "completed"


# --- draining --------------------------------------------------------------------------------------------------


async def test_a_draining_runtime_refuses_new_responses(runtime: Runtime) -> None:
    runtime.draining = True
    for message in (request_body(REQUEST), request_headers("POST", "/v1/responses")):
        [reply] = await new_stream(runtime).handle(message)
        status, _, body = immediate(reply)
        assert status == 503 and error_of(body)["code"] == "server_shutting_down"  # as the HTTP door says it
    [reply] = await new_stream(runtime).handle(request_headers("GET", "/v1/models"))  # not new work of ours
    assert reply == messages.CONTINUE_REQUEST_HEADERS


class Sent:
    """Stands in for the gRPC stream's ``write``."""

    def __init__(self) -> None:
        self.messages: list[ProcessingResponse] = []

    async def __call__(self, message: ProcessingResponse) -> None:
        self.messages.append(message)


async def test_shutting_down_an_open_stream_ends_it_now(runtime: Runtime) -> None:
    sent = Sent()
    stream = _Stream(runtime, "/v1", sent)
    await stream.handle(request_body({**REQUEST, "stream": True}))
    await stream.handle(response_headers(200, SSE))
    raw = load("text_usage")
    client = b"".join(streamed(r)[0] for r in await stream.handle(response_body(raw[:600])))
    await stream.shut_down()
    [reply] = sent.messages
    body, end = streamed(reply)
    assert end
    last = sse_terminal(client + body)
    assert last["type"] == "response.failed" and failure_reason(last["response"]["error"]) == "server_shutdown"
    assert await stream.handle(response_body(raw[600:], True)) == []
    assert await stored_status(runtime, stream) == "failed"


@pytest.mark.parametrize("client_streams", [False, True])
async def test_shutting_down_before_the_upstream_answered(runtime: Runtime, client_streams: bool) -> None:
    sent = Sent()
    stream = _Stream(runtime, "/v1", sent)
    await stream.handle(request_body({**REQUEST, "stream": client_streams}))
    await stream.shut_down()
    [reply] = sent.messages
    status, _, body = immediate(reply)
    if client_streams:
        assert status == 200
        assert failure_reason(sse_terminal(body)["response"]["error"]) == "server_shutdown"
        assert await stored_status(runtime, stream) == "failed"
    else:
        assert status == 503 and error_of(body)["code"] == "server_shutdown"


async def test_shutting_down_in_streamed_mode_waits_for_the_next_chunk(runtime: Runtime) -> None:
    sent = Sent()
    stream = _Stream(runtime, "/v1", sent)
    await stream.handle(request_body({**REQUEST, "stream": True}, mode=NONE))
    await stream.handle(response_headers(200, SSE))
    raw = load("text_usage")
    [reply] = await stream.handle(response_body(raw[:600]))
    client = reply.response_body.response.body_mutation.body
    await stream.shut_down()
    assert sent.messages == []  # STREAMED mode: the processor may only answer a chunk
    [reply] = await stream.handle(response_body(raw[600:900]))
    client += reply.response_body.response.body_mutation.body
    assert failure_reason(sse_terminal(client)["response"]["error"]) == "server_shutdown"
    [reply] = await stream.handle(response_body(raw[900:], True))
    assert reply.response_body.response.body_mutation.body == b"" and stream.done


async def test_a_long_event_leaves_in_bounded_messages_written_one_at_a_time(runtime: Runtime) -> None:
    """A 2 MB text delta and the terminal events that repeat it: every message to Envoy is at most a piece
    (adapters/pieces.py), all but the last of a reply written by the stream itself, each built just before its
    write, so gRPC never copies megabytes at once and the event loop runs between the writes."""
    sent = Sent()
    stream = _Stream(runtime, "/v1", sent)
    await stream.handle(request_body({**REQUEST, "stream": True}))
    assert await stream.handle(response_headers(200, SSE))  # the headers reply
    text = "x" * (2 * 1024 * 1024)
    chunk = {"id": "c", "object": "chat.completion.chunk", "created": 1, "model": "m",
             "choices": [{"index": 0, "delta": {"content": text}, "finish_reason": None}]}
    raw = (b"data: " + orjson.dumps(chunk) + b"\n\n" + b'data: {"choices":[{"index":0,"delta":{},'
           b'"finish_reason":"stop"}]}\n\n' + b"data: [DONE]\n\n")
    messages: list[ProcessingResponse] = []
    for start in range(0, len(raw), 65536):
        end = start + 65536 >= len(raw)
        replies = await stream.handle(response_body(raw[start:start + 65536], end))
        messages += sent.messages + replies  # what the stream wrote itself went out before its replies
        sent.messages = []
    bodies = [streamed(message) for message in messages]
    assert all(len(body) <= response_phase.PIECE_BYTES for body, _ in bodies)
    assert [end for _, end in bodies].count(True) == 1 and bodies[-1][1]
    assert len(bodies) > 4 * len(text) // response_phase.PIECE_BYTES  # the delta, and four terminal events
    events = check_stream(b"".join(body for body, _ in bodies))
    assert "".join(e["delta"] for e in events if e["type"] == "response.output_text.delta") == text
    assert events[-1]["type"] == "response.completed"


# --- over a real gRPC channel ----------------------------------------------------------------------------------


class Call:
    """One ``Process`` call from the client side, as Envoy makes it."""

    def __init__(self, channel: grpc.aio.Channel) -> None:
        self.call = external_processor_pb2_grpc.ExternalProcessorStub(channel).Process()

    async def send(self, message: ProcessingRequest, replies: int) -> list[ProcessingResponse]:
        await self.call.write(message)
        return [await self.call.read() for _ in range(replies)]


async def _open_stream(channel: grpc.aio.Channel) -> tuple[Call, str]:
    call = Call(channel)
    [reply] = await call.send(request_body({**REQUEST, "stream": True}), 1)
    assert reply.WhichOneof("response") == "request_body"
    await call.send(response_headers(200, SSE), 1)
    [reply] = await call.send(response_body(load("text_usage")[:600]), 1)
    head = streamed(reply)[0]
    response_id = orjson.loads(head.split(b"data: ", 1)[1].split(b"\n", 1)[0])["response"]["id"]
    return call, response_id


async def _status_becomes(runtime: Runtime, response_id: str, status: str) -> bool:
    for _ in range(200):  # a condition with a generous bound, not a timing assertion
        stored = await runtime.store.get_response(response_id, tenant=DEFAULT_TENANT)
        if stored is not None and stored["status"] == status:
            return True
        await asyncio.sleep(0.02)
    return False


async def test_a_client_reset_mid_stream_fails_the_response(runtime: Runtime, served: Any) -> None:
    _, channel = served
    call, response_id = await _open_stream(channel)
    call.call.cancel()  # what Envoy does when the client goes away
    assert await _status_becomes(runtime, response_id, "failed")


async def test_a_stream_closed_early_fails_the_response(runtime: Runtime, served: Any) -> None:
    _, channel = served
    call, response_id = await _open_stream(channel)
    await call.call.done_writing()  # the request iterator ends before the response did
    assert await call.call.read() == grpc.aio.EOF
    assert await _status_becomes(runtime, response_id, "failed")


async def test_a_drain_ends_live_streams_before_the_server_stops(runtime: Runtime, served: Any) -> None:
    door, channel = served
    runtime.settings.drain_timeout = 0.2
    call, response_id = await _open_stream(channel)
    stopping = asyncio.create_task(door())
    reply = await call.call.read()  # sent by the processor on its own: no upstream chunk came
    body, end = streamed(reply)
    assert end and b'"code":"server_error","message":"server_shutdown: ' in body and body.endswith(b"data: [DONE]\n\n")
    assert runtime.draining
    await call.call.done_writing()  # Envoy closes the stream once the response ended
    await asyncio.wait_for(stopping, 30)
    stored = await runtime.store.get_response(response_id, tenant=DEFAULT_TENANT)
    assert stored is not None and stored["status"] == "failed"


async def test_a_routed_request_keeps_its_stream_and_its_answer_passes_through(served: Any) -> None:
    """After the routing reply the stream stays open: a close there races the HTTP door's answer, and an answer
    whose FULL_DUPLEX_STREAMED body Envoy had already sent to the processor lost it to the close. The door's
    headers and body come back as they were, and the stream ends when Envoy ends it."""
    _, channel = served
    call = Call(channel)
    tools = [{"type": "mcp", "server_label": "docs", "server_url": "https://mcp.example.com/mcp"}]
    [routed] = await call.send(request_body({**REQUEST, "tools": tools}, sidecar_route=True), 1)
    assert routed.request_body.response.clear_route_cache
    [headers] = await call.send(response_headers(400, JSON), 1)
    assert headers.WhichOneof("response") == "response_headers"
    assert not headers.response_headers.response.HasField("header_mutation")
    error = b'{"error":{"message":"bad","type":"invalid_request_error","param":"temperature","code":null}}'
    [first] = await call.send(response_body(error[:20]), 1)
    [last] = await call.send(response_body(error[20:], True), 1)
    assert streamed(first) == (error[:20], False) and streamed(last) == (error[20:], True)
    await call.call.done_writing()
    assert await call.call.read() == grpc.aio.EOF


# --- the outbox ------------------------------------------------------------------------------------------------


async def test_the_outbox_joins_body_bytes_that_pile_up_and_keeps_the_order() -> None:
    from responses_bridge.adapters.extproc.messages import (
        CONTINUE_RESPONSE_TRAILERS,
        response_headers_reply,
        streamed_body,
    )
    from responses_bridge.adapters.extproc.outbox import Outbox

    written: list[ProcessingResponse] = []
    release, first_written = asyncio.Event(), asyncio.Event()

    async def slow_write(message: ProcessingResponse) -> None:
        written.append(message)
        first_written.set()
        await release.wait()  # the first write is still under way while the rest piles up

    outbox = Outbox(slow_write, merge=True)
    headers = response_headers_reply(None, [("content-type", SSE)])
    outbox.put([headers])
    await first_written.wait()
    outbox.put([streamed_body(b"a", False)])
    outbox.put([streamed_body(b"b", False), streamed_body(b"c", True), CONTINUE_RESPONSE_TRAILERS])
    release.set()
    await outbox.flush()
    assert written[0] is headers
    assert [streamed(r) for r in written[1:2]] == [(b"abc", True)]
    assert written[2] is CONTINUE_RESPONSE_TRAILERS and len(written) == 3


async def test_the_outbox_reports_a_broken_stream() -> None:
    from responses_bridge.adapters.extproc.messages import streamed_body
    from responses_bridge.adapters.extproc.outbox import Outbox

    async def broken(message: ProcessingResponse) -> None:
        raise RuntimeError("stream gone")

    outbox = Outbox(broken, merge=True)
    outbox.put([streamed_body(b"a", False)])
    with pytest.raises(RuntimeError):
        await outbox.flush()
    with pytest.raises(RuntimeError):
        outbox.put([streamed_body(b"b", False)])
    await outbox.close()
