"""Hostile request headers through a real Envoy with ``RESPONSES_BRIDGE_AUTH=keys``: nothing gets past the processor.

Every header the rendered bootstrap copies into the metadata it forwards to the processor (the credentials, the
request id, the trace context) is sent with bytes that are not UTF-8, and with oversized values, on every route the
processor guards, without a key and with a good one. Such a header once made the processor's message undecodable;
the processor closed its gRPC stream cleanly and Envoy sent the request on to the upstream, unauthenticated and
untranslated. Now: without a key nothing is answered 2xx and the upstream gets nothing; with a key, a 2xx answer
to ``POST /v1/responses`` is always a translated Response.

The requests are written on a raw socket: HTTP clients refuse to send such header values.
"""

from __future__ import annotations

import asyncio
import http.client
import io
import itertools
from collections.abc import AsyncIterator
from typing import Any

import grpc
import orjson
import pytest

from responses_bridge.adapters.extproc import service as external_processor_pb2_grpc
from responses_bridge.envoy_config import OBSERVED_HEADERS, render_bootstrap
from tests.integration.test_auth_keys import Stack, start_stack
from tests.support.bridge import UpstreamLog
from tests.support.envoy import free_port, have_envoy, start_envoy

pytestmark = pytest.mark.skipif(not have_envoy(), reason="envoy binary not available")
pytestmark = [pytestmark, pytest.mark.store_proven(
    "tests/integration/test_agents_automations_replicas.py",
    "tests/unit/test_store_contract.py",
    "tests/integration/test_input_references.py",
    reason="every store/postgres line it covers on PostgreSQL is covered by the modules named (scripts/pg-coverage)",
)]

MODEL = "fake-model"
HEADERS = ("authorization", *OBSERVED_HEADERS)
VALUES = (b"\xe9", b"Bearer \xff\xfe", b"00-\x80\x81-01", b"\xc3\x28", b"\xed\xa0\x80",  # bad UTF-8, a surrogate
          b"x" * 6000, b"\xe9" * 6000)  # oversized, clean and not
ROUTES = (
    ("POST", "/v1/responses", {"model": MODEL, "input": "Say hello."}),
    ("POST", "/v1/responses", {"model": MODEL, "input": "Say hello.", "stream": True}),
    ("POST", "/v1/chat/completions", {"model": MODEL, "messages": [{"role": "user", "content": "Say hello."}]}),
    ("GET", "/v1/models", None),
)


@pytest.fixture(scope="module")
async def keyed(fake_upstream: str, tmp_path_factory: pytest.TempPathFactory) -> AsyncIterator[Stack]:
    async for stack in start_stack(tmp_path_factory.mktemp("hostile"), fake_upstream, "--api-key", "sk-upstream"):
        yield stack


async def send_raw(url: str, method: str, path: str, headers: list[tuple[bytes, bytes]],
                   body: dict[str, Any] | None) -> tuple[int, bytes]:
    """One HTTP/1.1 request with the header bytes exactly as given; the status and the body as received."""
    host, port = url.removeprefix("http://").split(":")
    payload = b"" if body is None else orjson.dumps(body)
    head = [f"{method} {path} HTTP/1.1".encode(), f"Host: {host}".encode(), b"Connection: close",
            b"Content-Type: application/json", f"Content-Length: {len(payload)}".encode()]
    head += [name + b": " + value for name, value in headers]
    reader, writer = await asyncio.open_connection(host, int(port))
    try:
        writer.write(b"\r\n".join(head) + b"\r\n\r\n" + payload)
        answer = await asyncio.wait_for(reader.read(), 60)
    finally:
        writer.close()
    parsed = http.client.HTTPResponse(_Received(answer))  # type: ignore[arg-type]
    parsed.begin()
    return parsed.status, parsed.read()


class _Received:
    """What the standard library's HTTP response parser reads from (chunked bodies included)."""

    def __init__(self, data: bytes) -> None:
        self.data = data

    def makefile(self, mode: str) -> io.BytesIO:
        return io.BytesIO(self.data)


async def test_hostile_headers_without_a_key_never_pass(keyed: Stack) -> None:
    await keyed.upstream.clear()
    passed = []
    for header, value, (method, path, body) in itertools.product(HEADERS, VALUES, ROUTES):
        status, answer = await send_raw(keyed.envoy_url, method, path, [(header.encode(), value)], body)
        if status < 300:
            passed.append((header, value[:12], path, status, answer[:120]))
    assert passed == []
    assert await keyed.upstream.entries() == []


async def test_hostile_headers_with_a_key_are_refused_or_translated(keyed: Stack) -> None:
    key = f"Bearer {keyed.keys.acme}".encode()
    untranslated = []
    for header, value, (method, path, body) in itertools.product(OBSERVED_HEADERS, VALUES, ROUTES[:2]):
        status, answer = await send_raw(keyed.envoy_url, method, path, [(b"authorization", key),
                                                                        (header.encode(), value)], body)
        if status >= 300:
            assert status < 500, (header, value[:12], status, answer[:200])
            continue
        if b"chat.completion" in answer or (not body.get("stream") and orjson.loads(answer)["object"] != "response"):
            untranslated.append((header, value[:12], answer[:120]))
    assert untranslated == []
    # every model call made was the translated one, with the upstream's key, never the client's
    entries = await keyed.upstream.entries()
    assert {entry["headers"]["authorization"] for entry in entries} <= {"Bearer sk-upstream"}


async def test_a_non_utf8_trace_header_is_an_openai_shaped_400(keyed: Stack) -> None:
    status, answer = await send_raw(keyed.envoy_url, "POST", "/v1/responses",
                                    [(b"authorization", f"Bearer {keyed.keys.acme}".encode()),
                                     (b"traceparent", b"\xe9")], {"model": MODEL, "input": "hi"})
    assert status == 400
    error = orjson.loads(answer)["error"]
    assert set(error) == {"message", "type", "param", "code"} and error["code"] == "invalid_header_value"


class _Failing(external_processor_pb2_grpc.ExternalProcessorServicer):
    """A processor that ends every stream with an error status at the first message (what the bridge's processor
    now does when a stream breaks), or, with ``clean``, closes it with OK having answered nothing."""

    def __init__(self, clean: bool) -> None:
        self.clean = clean

    async def Process(self, request_iterator: Any, context: grpc.aio.ServicerContext) -> None:
        async for _ in request_iterator:
            if not self.clean:
                await context.abort(grpc.StatusCode.INTERNAL, "broken")
            return


async def test_a_processor_ending_its_stream_with_an_error_fails_closed(fake_upstream: str) -> None:
    """Through the rendered bootstrap: an error status from the processor is an OpenAI-shaped 503, and nothing
    reaches the upstream. (A clean close instead lets Envoy go on without the processor: shown alongside, which
    is why the processor must never close cleanly before it has answered.)"""
    upstream = UpstreamLog(fake_upstream.removesuffix("/v1"))
    outcomes = {}
    for clean in (False, True):
        server = grpc.aio.server()
        external_processor_pb2_grpc.add_ExternalProcessorServicer_to_server(_Failing(clean), server)
        extproc_port = server.add_insecure_port("127.0.0.1:0")
        await server.start()
        listen_port = free_port()
        envoy = await start_envoy(render_bootstrap(listen_port=listen_port, extproc_port=extproc_port,
                                                   http_port=free_port(), upstream=fake_upstream, admin_port=0))
        try:
            await upstream.clear()
            status, answer = await send_raw(f"http://127.0.0.1:{listen_port}", "POST", "/v1/responses", [],
                                            {"model": MODEL, "input": "hi"})
            outcomes[clean] = (status, answer, len(await upstream.entries()))
        finally:
            envoy.stop()
            await server.stop(0)
    status, answer, reached = outcomes[False]
    assert status == 503 and reached == 0, answer
    assert set(orjson.loads(answer)["error"]) == {"message", "type", "param", "code"}
    assert outcomes[True][2] == 1  # the fail-open a clean close causes
