"""The ext_proc door through a real Envoy: client -> Envoy -> (processor) -> fake upstream, all on loopback.

One stack for the module: the fake upstream, a Runtime on a temporary SQLite file, the ext_proc server and (when
it exists) the HTTP door in this process, and Envoy as a child process with the rendered bootstrap. Clients are
the ``openai`` SDK for semantics and aiohttp for the raw bytes, which must never contain a Chat Completions chunk.
"""

from __future__ import annotations

import asyncio
import importlib.util
import sys
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import aiohttp
import openai
import orjson
import pytest
from aiohttp import web

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))  # the repo root, for tests.support

from responses_bridge.adapters.extproc import start_extproc_server
from responses_bridge.config.settings import Settings
from responses_bridge.demo import fake_server
from responses_bridge.envoy_config import bootstrap_dict, render_bootstrap, to_yaml
from responses_bridge.runtime import Runtime
from responses_bridge.serve import open_runtime
from responses_bridge.store.base import DEFAULT_TENANT
from tests.support.envoy import EnvoyProcess, free_port, have_envoy, start_envoy
from tests.support.sdk import async_sdk

pytestmark = [pytest.mark.envoy, pytest.mark.skipif(not have_envoy(), reason="no envoy binary"), pytest.mark.store_free]

HAVE_HTTP_DOOR = importlib.util.find_spec("responses_bridge.adapters.http.app") is not None
RAW_CHUNK = b"chat.completion.chunk"
WEATHER = {
    "type": "function",
    "name": "get_weather",
    "description": "Weather for a city",
    "parameters": {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]},
}


@dataclass
class Stack:
    runtime: Runtime
    envoy: EnvoyProcess
    port: int
    upstream: str
    extproc_port: int

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.port}/v1"

    def client(self, **kwargs: Any) -> openai.AsyncOpenAI:
        return async_sdk(base_url=self.base_url, api_key="sk-test", max_retries=0, **kwargs)


@pytest.fixture(scope="module")
async def stack(tmp_path_factory: pytest.TempPathFactory) -> AsyncIterator[Stack]:
    runner, upstream_port = await fake_server.start()
    upstream = f"http://127.0.0.1:{upstream_port}/v1"
    db = tmp_path_factory.mktemp("extproc") / "bridge.sqlite"
    runtime = await open_runtime(Settings(upstream=upstream, db=str(db), api_key=None))
    server = await start_extproc_server(runtime, "127.0.0.1", 0)
    stop_http = None
    http_port = free_port()
    if HAVE_HTTP_DOOR:
        from responses_bridge.adapters.http.server import start_http_server

        stop_http = await start_http_server(runtime, "127.0.0.1", http_port)
    port = free_port()
    envoy = await start_envoy(render_bootstrap(listen_port=port, extproc_port=server.bound_port,
                                               http_port=http_port, upstream=upstream, admin_port=0))
    try:
        yield Stack(runtime, envoy, port, upstream, server.bound_port)
    finally:
        envoy.stop()
        if stop_http is not None:
            await stop_http()
        await server.stop(1)
        await runtime.close()
        await runner.cleanup()


async def raw_post(stack: Stack, body: dict[str, Any], path: str = "/v1/responses",
                   port: int | None = None) -> tuple[int, dict[str, str], bytes]:
    async with aiohttp.ClientSession() as session:
        async with session.post(f"http://127.0.0.1:{port or stack.port}{path}", data=orjson.dumps(body),
                                headers={"content-type": "application/json",
                                         "authorization": "Bearer sk-test"}) as response:
            data = await response.read()
            headers = {k.lower(): v for k, v in response.headers.items()}
    assert RAW_CHUNK not in data
    assert b"[DONE]" not in data or headers.get("content-type", "").startswith("text/event-stream")
    return response.status, headers, data


def sse_events(data: bytes) -> list[dict[str, Any]]:
    events = []
    for block in data.split(b"\n\n"):
        for line in block.split(b"\n"):
            if line.startswith(b"data: ") and line != b"data: [DONE]":
                events.append(orjson.loads(line[6:]))
    return events


def check_stream(data: bytes) -> list[dict[str, Any]]:
    """A well-formed Responses stream: whole events, consecutive sequence numbers, one terminal event."""
    assert RAW_CHUNK not in data
    assert data.endswith(b"data: [DONE]\n\n")
    events = sse_events(data)
    assert [e["sequence_number"] for e in events] == list(range(len(events)))
    assert events[0]["type"] == "response.created"
    terminal = [e for e in events if e["type"] in ("response.completed", "response.failed", "response.incomplete")]
    assert len(terminal) == 1 and terminal[0] is events[-1]
    return events


# --------------------------------------------------------------------------------------------- happy paths


async def test_non_stream(stack: Stack) -> None:
    client = stack.client()
    response = await client.responses.create(model="fake-model", input="hello there")
    assert response.status == "completed"
    assert response.output_text == "Echo: hello there"
    assert response.usage is not None and response.usage.output_tokens > 0
    stored = await stack.runtime.store.get_response(response.id, tenant=DEFAULT_TENANT)
    assert stored is not None and stored["status"] == "completed"
    assert stored["output"][0]["content"][0]["text"] == "Echo: hello there"


async def test_non_stream_raw(stack: Stack) -> None:
    status, headers, data = await raw_post(stack, {"model": "fake-model", "input": "raw bytes"})
    assert status == 200
    assert headers["content-type"] == "application/json"
    # FULL_DUPLEX_STREAMED answers are chunked (Envoy drops content-length); a length, if any, must be right
    assert int(headers.get("content-length", len(data))) == len(data)
    assert orjson.loads(data)["output"][0]["content"][0]["text"] == "Echo: raw bytes"


async def test_stream_events(stack: Stack) -> None:
    client = stack.client()
    stream = await client.responses.create(model="fake-model", input="stream me [chunks=5]", stream=True)
    types, text = [], ""
    async for event in stream:
        types.append(event.type)
        if event.type == "response.output_text.delta":
            text += event.delta
    assert types[0] == "response.created" and types[1] == "response.in_progress"
    assert types[-1] == "response.completed"
    assert text.startswith("Echo: stream me")
    assert types.count("response.output_text.delta") == 5


async def test_stream_helper_final_response(stack: Stack) -> None:
    client = stack.client()
    async with client.responses.stream(model="fake-model", input="helper") as stream:
        final = await stream.get_final_response()
    assert final.status == "completed"
    assert final.output_text == "Echo: helper"
    stored = await stack.runtime.store.get_response(final.id, tenant=DEFAULT_TENANT)
    assert stored is not None and stored["status"] == "completed"


async def test_stream_raw_bytes(stack: Stack) -> None:
    status, headers, data = await raw_post(stack, {"model": "fake-model", "input": "raw [chunks=40]",
                                                   "stream": True})
    assert status == 200
    assert headers["content-type"] == "text/event-stream; charset=utf-8"
    assert "content-length" not in headers
    events = check_stream(data)
    assert events[-1]["type"] == "response.completed"
    assert events[-1]["response"]["usage"]["output_tokens"] > 0
    stored = await stack.runtime.store.get_response(events[-1]["response"]["id"], tenant=DEFAULT_TENANT)
    assert stored is not None and stored["status"] == "completed"


async def test_tool_call(stack: Stack) -> None:
    client = stack.client()
    response = await client.responses.create(model="fake-model", input="call get_weather Paris", tools=[WEATHER])
    calls = [item for item in response.output if item.type == "function_call"]
    assert len(calls) == 1
    assert calls[0].name == "get_weather"
    assert orjson.loads(calls[0].arguments) == {"city": "Paris"}
    # the tool's result goes back as the next turn, chained through the store
    follow = await client.responses.create(
        model="fake-model", previous_response_id=response.id, tools=[WEATHER],
        input=[{"type": "function_call_output", "call_id": calls[0].call_id, "output": "sunny"}])
    assert follow.output_text == "Tool result: sunny"


async def test_tool_call_stream(stack: Stack) -> None:
    status, _, data = await raw_post(stack, {"model": "fake-model", "input": "call get_weather Paris",
                                             "tools": [WEATHER], "stream": True})
    assert status == 200
    events = check_stream(data)
    arguments = "".join(e["delta"] for e in events if e["type"] == "response.function_call_arguments.delta")
    assert orjson.loads(arguments) == {"city": "Paris"}


async def test_reasoning(stack: Stack) -> None:
    client = stack.client()
    response = await client.responses.create(model="fake-reasoner", input="ponder [think]")
    kinds = [item.type for item in response.output]
    assert kinds == ["reasoning", "message"]
    assert response.output_text == "Echo: ponder"
    status, _, data = await raw_post(stack, {"model": "fake-reasoner", "input": "ponder [think]", "stream": True})
    assert status == 200
    events = check_stream(data)
    assert events[-1]["type"] == "response.completed"
    assert [item["type"] for item in events[-1]["response"]["output"]] == ["reasoning", "message"]


async def test_previous_response_id(stack: Stack) -> None:
    client = stack.client()
    first = await client.responses.create(model="fake-model", input="first turn")
    second = await client.responses.create(model="fake-model", input="second turn", previous_response_id=first.id)
    assert second.output_text == "Echo: second turn"
    assert second.previous_response_id == first.id


# ------------------------------------------------------------------------------------------------ failures


async def test_upstream_500_non_stream(stack: Stack) -> None:
    client = stack.client()
    with pytest.raises(openai.APIStatusError) as caught:
        await client.responses.create(model="fake-model", input="boom [error=500]")
    assert caught.value.status_code == 502
    error = caught.value.body
    assert isinstance(error, dict) and error["type"] == "server_error"
    assert "fake upstream error 500" in error["message"]


async def test_upstream_500_stream(stack: Stack) -> None:
    client = stack.client()
    stream = await client.responses.create(model="fake-model", input="boom [error=500]", stream=True)
    events = [event async for event in stream]
    assert events[-1].type == "response.failed"
    assert "fake upstream error 500" in events[-1].response.error.message
    stored = await stack.runtime.store.get_response(events[-1].response.id, tenant=DEFAULT_TENANT)
    assert stored is not None and stored["status"] == "failed"
    status, _, data = await raw_post(stack, {"model": "fake-model", "input": "boom [error=503]", "stream": True})
    assert status == 200
    assert check_stream(data)[-1]["type"] == "response.failed"


async def test_upstream_400_passthrough(stack: Stack) -> None:
    client = stack.client()
    for stream in (False, True):
        with pytest.raises(openai.BadRequestError) as caught:
            await client.responses.create(model="fake-model", input="bad [error=400]", stream=stream)
        assert caught.value.status_code == 400
        assert caught.value.body["message"] == "fake upstream error 400"  # type: ignore[index]
    with pytest.raises(openai.RateLimitError):
        await client.responses.create(model="fake-model", input="slow down [error=429]")


async def test_invalid_request_is_answered_by_the_processor(stack: Stack) -> None:
    status, headers, data = await raw_post(stack, {"model": "fake-model"})
    assert status == 400
    assert headers["content-type"] == "application/json"
    assert orjson.loads(data)["error"]["type"] == "invalid_request_error"
    status, _, data = await raw_post(stack, {"model": "fake-model", "input": "x", "previous_response_id": "resp_no"})
    assert status == 404
    assert orjson.loads(data)["error"]["code"] == "previous_response_not_found"
    async with aiohttp.ClientSession() as session:  # no body at all: headers with end_of_stream
        async with session.post(f"http://127.0.0.1:{stack.port}/v1/responses") as response:
            assert response.status == 400
            assert (await response.json())["error"]["type"] == "invalid_request_error"
        async with session.post(f"http://127.0.0.1:{stack.port}/v1/responses", data=b"{not json",
                                headers={"content-type": "application/json"}) as response:
            assert response.status == 400


async def test_cut_mid_stream(stack: Stack) -> None:
    """The upstream drops its connection mid-stream. Envoy owns that connection: it resets the client's stream
    (or, when the cut comes before the head left Envoy, answers 502 itself). Either way the client gets a clear
    failure, never raw chunks, and the stored response is failed."""
    for delay in ("", " [delay=30]"):
        body = orjson.dumps({"model": "fake-model", "input": f"cut [chunks=10] [cut=3]{delay}", "stream": True})
        received = b""
        async with aiohttp.ClientSession() as session:
            async with session.post(f"http://127.0.0.1:{stack.port}/v1/responses", data=body,
                                    headers={"content-type": "application/json"}) as response:
                status = response.status
                try:
                    async for data in response.content.iter_any():
                        received += data
                    truncated = False
                except aiohttp.ClientPayloadError:
                    truncated = True
        assert RAW_CHUNK not in received
        if status == 502:  # Envoy's own reply, reshaped by local_reply_config
            error = orjson.loads(received)["error"]
            assert error["type"] == "server_error" and error["code"] == "upstream_disconnected"
            continue
        assert status == 200
        events = sse_events(received)
        assert events[0]["type"] == "response.created"
        if not truncated:
            assert events[-1]["type"] == "response.failed"
        response_id = events[0]["response"]["id"]
        assert await _stored_status(stack, response_id) == "failed"


async def _stored_status(stack: Stack, response_id: str) -> str | None:
    stored = None
    for _ in range(600):
        stored = await stack.runtime.store.get_response(response_id, tenant=DEFAULT_TENANT)
        if stored is not None and stored["status"] != "in_progress":
            break
        await asyncio.sleep(0.05)
    return stored["status"] if stored else None


async def test_garbage_mid_stream(stack: Stack) -> None:
    status, _, data = await raw_post(stack, {"model": "fake-model", "input": "junk [garbage]", "stream": True})
    assert status == 200
    assert check_stream(data)[-1]["type"] == "response.failed"


async def test_upstream_unreachable(stack: Stack) -> None:
    """Envoy's own 503 (connection refused) reaches the processor and becomes an OpenAI-shaped error."""
    port = free_port()
    dead = free_port()
    envoy = await start_envoy(render_bootstrap(listen_port=port, extproc_port=stack.extproc_port,
                                               http_port=free_port(), upstream=f"http://127.0.0.1:{dead}/v1",
                                               admin_port=0))
    try:
        status, headers, data = await raw_post(stack, {"model": "fake-model", "input": "hi"}, port=port)
        assert status == 502
        assert headers["content-type"] == "application/json"
        error = orjson.loads(data)["error"]
        assert error["type"] == "server_error" and "upstream" in error["message"]
        status, _, data = await raw_post(stack, {"model": "fake-model", "input": "hi", "stream": True}, port=port)
        assert status == 200
        assert check_stream(data)[-1]["type"] == "response.failed"
    finally:
        envoy.stop()


async def test_processor_unreachable(stack: Stack) -> None:
    """No processor: a clear 5xx JSON error from Envoy, never a 200 and never an untranslated request."""
    port = free_port()
    envoy = await start_envoy(render_bootstrap(listen_port=port, extproc_port=free_port(), http_port=free_port(),
                                               upstream=stack.upstream, admin_port=0))
    fake_requests = stack.upstream.removesuffix("/v1") + "/_fake/requests"
    async with aiohttp.ClientSession() as session:
        await session.delete(fake_requests)
    try:
        for stream in (False, True):
            status, headers, data = await raw_post(stack, {"model": "fake-model", "input": "hi", "stream": stream},
                                                   port=port)
            assert status == 503
            assert headers["content-type"] == "application/json"
            error = orjson.loads(data)["error"]
            assert error["type"] == "server_error" and error["code"] == "processor_unavailable"
        client = async_sdk(base_url=f"http://127.0.0.1:{port}/v1", api_key="x", max_retries=0)
        with pytest.raises(openai.APIStatusError) as caught:
            await client.responses.create(model="fake-model", input="hi")
        assert caught.value.status_code == 503
        async with aiohttp.ClientSession() as session:  # nothing, translated or not, went upstream
            async with session.get(fake_requests) as response:
                assert (await response.json())["data"] == []
    finally:
        envoy.stop()


async def test_odd_upstream_answers(stack: Stack) -> None:
    """Answers without a body (the processor then gets end_of_stream on the headers) or with HTML still become
    OpenAI-shaped errors or response.failed events."""

    async def chat(request: web.Request) -> web.Response:
        text = (await request.json())["messages"][-1]["content"]
        if "empty503" in text:
            return web.Response(status=503)
        if "empty200" in text:
            return web.Response(status=200, content_type="application/json")
        return web.Response(status=502, text="<html>bad gateway</html>", content_type="text/html")

    app = web.Application()
    app.router.add_post("/v1/chat/completions", chat)
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    upstream_port = runner.addresses[0][1]
    port = free_port()
    envoy = await start_envoy(render_bootstrap(listen_port=port, extproc_port=stack.extproc_port,
                                               http_port=free_port(), upstream=f"http://127.0.0.1:{upstream_port}/v1",
                                               admin_port=0))
    try:
        for word in ("empty503", "empty200", "html502"):
            status, headers, data = await raw_post(stack, {"model": "m", "input": word}, port=port)
            assert status == 502, (word, data)
            assert headers["content-type"] == "application/json"
            assert orjson.loads(data)["error"]["type"] == "server_error"
            status, headers, data = await raw_post(stack, {"model": "m", "input": word, "stream": True}, port=port)
            assert status == 200, (word, data)
            assert headers["content-type"] == "text/event-stream; charset=utf-8"
            assert check_stream(data)[-1]["type"] == "response.failed"
    finally:
        envoy.stop()
        await runner.cleanup()


async def test_servicer_bug_still_answers_cleanly(stack: Stack, monkeypatch: pytest.MonkeyPatch) -> None:
    """A bug in the servicer's own code (not the exchange's) is caught too: Envoy always gets an answer that
    keeps the client away from the raw upstream bytes."""
    from responses_bridge.adapters.extproc import response_phase as servicer

    def broken(*args: Any) -> Any:
        raise RuntimeError("injected")

    monkeypatch.setattr(servicer, "_json_headers", broken)  # the buffered (non-stream) answer breaks
    status, _, data = await raw_post(stack, {"model": "fake-model", "input": "x"})
    assert status == 502 and orjson.loads(data)["error"]["type"] == "server_error"
    monkeypatch.setattr(servicer, "_sse_headers", broken)  # the stream's head breaks
    status, _, data = await raw_post(stack, {"model": "fake-model", "input": "x [chunks=5]", "stream": True})
    assert status == 200
    assert check_stream(data)[-1]["type"] == "response.failed"


@pytest.mark.parametrize("where", ["on_upstream_headers", "on_upstream_chunk", "finish"])
async def test_processor_bug_still_answers_cleanly(stack: Stack, monkeypatch: pytest.MonkeyPatch,
                                                   where: str) -> None:
    """Whatever raises inside the processor, the client gets an error or a response.failed, never raw chunks."""
    from responses_bridge.engine.responses.translator import Translator
    from responses_bridge.run.response_run import ResponseRun

    owner = Translator if where == "on_upstream_chunk" else ResponseRun  # the run binds the translator's at begin
    original = getattr(owner, where)
    calls = {"n": 0}

    def broken(self: Any, *args: Any) -> Any:
        calls["n"] += 1
        if where == "on_upstream_chunk" and self.streaming and calls["n"] < 2:
            return original(self, *args)  # let the stream start, then break
        raise RuntimeError("injected")

    async def broken_async(self: ResponseRun, *args: Any) -> Any:
        raise RuntimeError("injected")

    monkeypatch.setattr(owner, where, broken_async if where == "finish" else broken)
    status, _, data = await raw_post(stack, {"model": "fake-model", "input": "x"})
    assert status >= 500 and orjson.loads(data)["error"]["type"] == "server_error"
    status, _, data = await raw_post(stack, {"model": "fake-model", "input": "x [chunks=30]", "stream": True})
    assert status == 200
    events = check_stream(data)
    assert events[-1]["type"] == "response.failed"


# ---------------------------------------------------------------------------------------------- load, size


async def test_ten_megabyte_input(stack: Stack) -> None:
    text = "word " * (2 * 1024 * 1024)  # 10 MiB
    client = stack.client(timeout=60)
    response = await client.responses.create(model="fake-model", input=[
        {"role": "user", "content": [{"type": "input_text", "text": text}]}])
    assert response.status == "completed"
    assert len(response.output_text) > 10_000_000


async def test_fifty_concurrent_streams(stack: Stack) -> None:
    async def one(i: int) -> bytes:
        status, _, data = await raw_post(stack, {"model": "fake-model", "input": f"n{i} [chunks=20]", "stream": True})
        assert status == 200
        return data

    results = await asyncio.gather(*(one(i) for i in range(50)))
    for i, data in enumerate(results):
        events = check_stream(data)
        assert events[-1]["type"] == "response.completed"
        text = "".join(e["delta"] for e in events if e["type"] == "response.output_text.delta")
        assert text.startswith(f"Echo: n{i} ")


async def test_client_disconnect_marks_response_failed(stack: Stack) -> None:
    body = orjson.dumps({"model": "fake-model", "input": "slow [chunks=50] [delay=50]", "stream": True})
    async with aiohttp.ClientSession() as session:
        response = await session.post(f"http://127.0.0.1:{stack.port}/v1/responses", data=body,
                                       headers={"content-type": "application/json"})
        first = await response.content.readuntil(b"\n\n")
        response.close()  # drop the connection mid-stream
    response_id = orjson.loads(first.split(b"data: ", 1)[1])["response"]["id"]
    for _ in range(600):
        stored = await stack.runtime.store.get_response(response_id, tenant=DEFAULT_TENANT)
        if stored is not None and stored["status"] != "in_progress":
            break
        await asyncio.sleep(0.05)
    assert stored is not None and stored["status"] == "failed"


# ----------------------------------------------------------------------------------------- other routes


async def _recorded_authorization(stack: Stack) -> str | None:
    async with aiohttp.ClientSession() as session:
        async with session.get(stack.upstream.removesuffix("/v1") + "/_fake/requests") as response:
            return (await response.json())["data"][-1]["headers"]["authorization"]


async def test_unversioned_path_and_client_key(stack: Stack) -> None:
    status, _, data = await raw_post(stack, {"model": "fake-model", "input": "no v1"}, path="/responses")
    assert status == 200
    assert orjson.loads(data)["output"][0]["content"][0]["text"] == "Echo: no v1"
    assert await _recorded_authorization(stack) == "Bearer sk-test"  # no configured key: the client's goes up


async def test_configured_key_and_request_headers_mode(stack: Stack, tmp_path: Path) -> None:
    """A processor whose runtime holds the upstream key, behind a bootstrap that also sends it the request
    headers (the other supported processing mode): the key replaces the client's, everything else as usual."""
    settings = Settings(upstream=stack.upstream, db=str(tmp_path / "keyed.sqlite"), api_key="sk-upstream",
                        max_request_bytes=1024 * 1024)
    runtime = await open_runtime(settings)
    server = await start_extproc_server(runtime, "127.0.0.1", 0)
    config = bootstrap_dict(listen_port=free_port(), extproc_port=server.bound_port, http_port=free_port(),
                            upstream=stack.upstream, admin_port=0)
    listener = config["static_resources"]["listeners"][0]
    port = listener["address"]["socket_address"]["port_value"]
    hcm = listener["filter_chains"][0]["filters"][0]["typed_config"]
    ext_proc = next(f for f in hcm["http_filters"] if f["name"] == "envoy.filters.http.ext_proc")
    ext_proc["typed_config"]["processing_mode"]["request_header_mode"] = "SEND"
    chat_route = next(r for r in hcm["route_config"]["virtual_hosts"][0]["routes"] if r["name"] == "chat_completions")
    chat_route["typed_per_filter_config"]["envoy.filters.http.ext_proc"] = {  # as envoy/README.md suggests
        "@type": "type.googleapis.com/envoy.extensions.filters.http.ext_proc.v3.ExtProcPerRoute",
        "overrides": {"processing_mode": {"request_header_mode": "SEND", "response_header_mode": "SKIP",
                                          "request_body_mode": "NONE", "response_body_mode": "NONE"}},
    }
    listener["per_connection_buffer_limit_bytes"] = 4 * 1024 * 1024  # so that Envoy's own 413 is cheap to see
    for route in hcm["route_config"]["virtual_hosts"][0]["routes"]:
        route.pop("request_body_buffer_limit", None)
    envoy = await start_envoy(to_yaml(config))
    fake_requests = stack.upstream.removesuffix("/v1") + "/_fake/requests"
    try:
        async with aiohttp.ClientSession() as session:
            await session.delete(fake_requests)
        # over the processor's limit (1 MiB here), then over Envoy's buffer limit (4 MiB here): 413, and nothing
        # goes upstream
        for size in (2 * 1024 * 1024, 5 * 1024 * 1024):
            status, headers, data = await raw_post(stack, {"model": "fake-model", "input": "x" * size}, port=port)
            assert status == 413, data[:300]
            assert headers["content-type"] == "application/json"
            assert orjson.loads(data)["error"]["code"] == "request_too_large"
        async with aiohttp.ClientSession() as session:
            async with session.get(fake_requests) as response:
                assert (await response.json())["data"] == []
        status, _, data = await raw_post(stack, {"model": "fake-model", "input": "keyed"}, port=port)
        assert status == 200 and orjson.loads(data)["status"] == "completed"
        assert await _recorded_authorization(stack) == "Bearer sk-upstream"
        status, _, data = await raw_post(stack, {"model": "fake-model", "input": "keyed [chunks=4]", "stream": True},
                                         port=port)
        assert status == 200 and check_stream(data)[-1]["type"] == "response.completed"
        status, _, data = await raw_post(stack, {"model": "fake-model", "input": "bad [error=400]"}, port=port)
        assert status == 400
        async with aiohttp.ClientSession() as session:
            async with session.post(f"http://127.0.0.1:{port}/v1/responses") as response:
                assert response.status == 400
                assert (await response.json())["error"]["type"] == "invalid_request_error"
            async with session.post(f"http://127.0.0.1:{port}/v1/chat/completions",
                                    json={"model": "fake-model", "messages": [{"role": "user", "content": "hi"}]},
                                    headers={"authorization": "Bearer sk-client"}) as response:
                assert response.status == 200
                assert (await response.json())["choices"][0]["message"]["content"] == "Echo: hi"
        assert await _recorded_authorization(stack) == "Bearer sk-upstream"
    finally:
        envoy.stop()
        await server.stop(1)
        await runtime.close()


async def test_models_passthrough(stack: Stack) -> None:
    client = stack.client()
    models = await client.models.list()
    # the upstream's, then the sidecar's embedder (its door answers the list through Envoy too)
    assert [m.id for m in models.data] == ["fake-model", "fake-reasoner", "fake-embedding", "tokenlearn-static-model"]


async def test_chat_completions_passthrough(stack: Stack) -> None:
    client = stack.client()
    completion = await client.chat.completions.create(model="fake-model",
                                                      messages=[{"role": "user", "content": "direct"}])
    assert completion.choices[0].message.content == "Echo: direct"


@pytest.mark.skipif(not HAVE_HTTP_DOOR, reason="the HTTP door is not there yet")
async def test_http_door_routes(stack: Stack) -> None:
    client = stack.client()
    created = await client.responses.create(model="fake-model", input="keep me")
    fetched = await client.responses.retrieve(created.id)
    assert fetched.id == created.id and fetched.output_text == "Echo: keep me"
    async with aiohttp.ClientSession() as session:
        async with session.get(f"http://127.0.0.1:{stack.port}/health") as response:
            assert response.status == 200



async def test_a_bootstrap_with_the_former_processing_mode(stack: Stack) -> None:
    """Bootstraps rendered before the full-duplex mode (response body NONE, the processor picking STREAMED or
    BUFFERED in its headers reply) keep working: JSON, streams, and failures in both."""
    config = bootstrap_dict(listen_port=free_port(), extproc_port=stack.extproc_port, http_port=free_port(),
                            upstream=stack.upstream, admin_port=0)
    listener = config["static_resources"]["listeners"][0]
    port = listener["address"]["socket_address"]["port_value"]
    hcm = listener["filter_chains"][0]["filters"][0]["typed_config"]
    ext_proc = next(f for f in hcm["http_filters"] if f["name"] == "envoy.filters.http.ext_proc")["typed_config"]
    ext_proc["processing_mode"].update(response_body_mode="NONE", response_trailer_mode="SKIP")
    ext_proc["allow_mode_override"] = True
    envoy = await start_envoy(to_yaml(config))
    try:
        status, headers, data = await raw_post(stack, {"model": "fake-model", "input": "former"}, port=port)
        assert status == 200 and int(headers["content-length"]) == len(data)  # BUFFERED keeps the length
        assert orjson.loads(data)["output"][0]["content"][0]["text"] == "Echo: former"
        status, _, data = await raw_post(stack, {"model": "fake-model", "input": "former [chunks=20]",
                                                 "stream": True}, port=port)
        assert status == 200 and check_stream(data)[-1]["type"] == "response.completed"
        status, _, data = await raw_post(stack, {"model": "fake-model", "input": "x [error=500]"}, port=port)
        assert status == 502
        status, _, data = await raw_post(stack, {"model": "fake-model", "input": "x [error=500]", "stream": True},
                                         port=port)
        assert status == 200 and check_stream(data)[-1]["type"] == "response.failed"
    finally:
        envoy.stop()
