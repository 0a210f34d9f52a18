"""The ext_proc door fails closed, over a real gRPC channel: a message that does not decode is refused or ends the
stream with an error status, never a clean close (Envoy goes on without the processor after one); and a stream
Envoy closes while the processor's last reply is being written is counted with its status, not as a client that left.

The bytes are sent raw (no serializer on the client side), as Envoy sends them: protobuf itself cannot build a
message whose string field holds bytes that are not UTF-8, so the tests make one and patch the bytes in.
"""

from __future__ import annotations

import asyncio
from typing import Any

import grpc
import orjson
import pytest
from prometheus_client import REGISTRY

from responses_bridge.adapters.extproc._pb.ext_proc_pb2 import ProcessingMode, ProcessingRequest, ProcessingResponse
from responses_bridge.adapters.extproc.decode import Undecodable, decode_request
from responses_bridge.adapters.extproc.service import SERVICE
from responses_bridge.adapters.extproc.servicer import ExtProcServicer
from responses_bridge.config.settings import Settings
from responses_bridge.runtime import Runtime
from responses_bridge.store import SQLiteResponseStore
from tests.support.runtime import runtime_over
from tests.unit.recordings import load_json

MARK = "\x01MARK\x01"
REQUEST = {"model": "fake-model", "input": "Hello there, how are you today?"}


@pytest.fixture
async def runtime(store: SQLiteResponseStore) -> Runtime:
    return runtime_over(settings=Settings(upstream="http://127.0.0.1:9/v1", db=":memory:", api_key=None), store=store)


def with_bad_utf8(message: ProcessingRequest, header: str, bad: bytes = b"\xe9") -> bytes:
    """``message`` with the forwarded metadata's ``header`` holding bytes that are not UTF-8, as the bootstrap's
    header_to_metadata filter copies a client's header."""
    message.metadata_context.filter_metadata["responses_bridge"].fields[header].string_value = MARK
    data = message.SerializeToString()
    assert data.count(MARK.encode()) == 1
    return data.replace(MARK.encode(), bad.ljust(len(MARK), b"\xff"))


def request_body(body: dict[str, Any]) -> ProcessingRequest:
    message = ProcessingRequest()
    message.request_body.body = orjson.dumps(body)
    message.request_body.end_of_stream = True
    message.protocol_config.request_body_mode = ProcessingMode.BUFFERED  # the first message, as envoy-config's
    message.protocol_config.response_body_mode = ProcessingMode.FULL_DUPLEX_STREAMED
    return message


def request_headers(method: str, path: str) -> ProcessingRequest:
    message = ProcessingRequest()
    for key, value in ((":method", method), (":path", path)):
        header = message.request_headers.headers.headers.add()
        header.key, header.raw_value = key, value.encode()
    return message


def raw_call(channel: grpc.aio.Channel) -> Any:
    """A ``Process`` call that sends bytes as they are and decodes the replies."""
    method = channel.stream_stream(f"/{SERVICE}/Process", request_serializer=None,
                                   response_deserializer=ProcessingResponse.FromString)
    return method()


def error_of(reply: ProcessingResponse) -> tuple[int, dict[str, Any]]:
    assert reply.WhichOneof("response") == "immediate_response"
    body = orjson.loads(reply.immediate_response.body)
    assert set(body["error"]) == {"message", "type", "param", "code"}
    return reply.immediate_response.status.code, body["error"]


def test_the_deserializer_names_the_phase_of_a_message_it_cannot_decode() -> None:
    data = with_bad_utf8(request_body(REQUEST), "traceparent")
    with pytest.raises(Exception, match="UTF-8"):
        ProcessingRequest.FromString(data)
    undecodable = decode_request(data)
    assert isinstance(undecodable, Undecodable) and undecodable.phase == "request_body"
    assert decode_request(b"\xff\xff\xff").phase is None  # type: ignore[union-attr]
    good = request_body(REQUEST)
    assert decode_request(good.SerializeToString()) == good


@pytest.mark.parametrize("header", ["authorization", "traceparent", "x-request-id", "b3"])
async def test_a_non_utf8_forwarded_header_is_a_400_before_anything_goes_upstream(served: Any, header: str) -> None:
    _, channel = served
    call = raw_call(channel)
    await call.write(with_bad_utf8(request_body(REQUEST), header))
    status, error = error_of(await call.read())
    assert status == 400 and error["code"] == "invalid_header_value"
    await call.done_writing()
    assert await call.read() == grpc.aio.EOF


async def test_a_passthrough_route_with_a_non_utf8_header_is_a_400(served: Any) -> None:
    _, channel = served
    call = raw_call(channel)
    await call.write(with_bad_utf8(request_headers("GET", "/v1/models"), "authorization", b"\xff\xfe"))
    status, _ = error_of(await call.read())
    assert status == 400


async def test_a_message_that_is_not_protobuf_ends_the_stream_with_an_error_status(served: Any) -> None:
    _, channel = served
    call = raw_call(channel)
    await call.write(b"\xff\xff\xff\xff")
    with pytest.raises(grpc.aio.AioRpcError) as raised:
        await call.read()
    assert raised.value.code() == grpc.StatusCode.INTERNAL  # never OK: Envoy must not go on without us


async def test_an_undecodable_message_mid_response_ends_the_client_stream_with_a_failure(served: Any) -> None:
    _, channel = served
    call = raw_call(channel)
    await call.write(request_body({**REQUEST, "stream": True}).SerializeToString())
    assert (await call.read()).WhichOneof("response") == "request_body"
    headers = ProcessingRequest()
    for key, value in ((":status", "200"), ("content-type", "text/event-stream")):
        header = headers.response_headers.headers.headers.add()
        header.key, header.raw_value = key, value.encode()
    await call.write(headers.SerializeToString())
    assert (await call.read()).WhichOneof("response") == "response_headers"
    chunk = ProcessingRequest()
    chunk.response_body.body = b"data: {}\n\n"
    await call.write(with_bad_utf8(chunk, "traceparent"))
    reply = await call.read()
    body = reply.response_body.response.body_mutation.streamed_response
    assert b"response.failed" in body.body and body.body.endswith(b"data: [DONE]\n\n") and body.end_of_stream


def _count(status: int) -> float:
    value = REGISTRY.get_sample_value("responses_bridge_requests_total",
                                      {"door": "extproc", "route": "POST /v1/responses", "status": str(status)})
    return value or 0.0


class ResetOnLastWrite:
    """The servicer context of a stream Envoy resets while the processor's last reply is being written: Envoy
    got the reply (the client has its answer) and closed the stream before gRPC reported the write done."""

    def __init__(self, messages: list[ProcessingRequest]) -> None:
        self.messages = messages
        self.written: list[ProcessingResponse] = []

    async def read(self) -> ProcessingRequest:
        return self.messages.pop(0)

    async def write(self, reply: ProcessingResponse) -> None:
        self.written.append(reply)
        if reply.WhichOneof("response") == "response_body":
            raise asyncio.CancelledError

    def invocation_metadata(self) -> tuple[()]:
        return ()


async def test_a_stream_envoy_resets_during_the_last_write_counts_as_delivered(runtime: Runtime) -> None:
    """The request was answered, so it is recorded with its status, not as 499 (client closed)."""
    headers = ProcessingRequest()
    for key, value in ((":status", "200"), ("content-type", "application/json")):
        header = headers.response_headers.headers.headers.add()
        header.key, header.raw_value = key, value.encode()
    body = ProcessingRequest()
    body.response_body.body = load_json("text_usage")
    body.response_body.end_of_stream = True
    context = ResetOnLastWrite([request_body(REQUEST), headers, body])
    ok, closed = _count(200), _count(499)
    with pytest.raises(asyncio.CancelledError):
        await ExtProcServicer(runtime, "/v1").Process(None, context)  # type: ignore[arg-type]
    assert [reply.WhichOneof("response") for reply in context.written] == [
        "request_body", "response_headers", "response_body"]
    assert (_count(200), _count(499)) == (ok + 1, closed)
