"""The floors ``responses-bridge bench`` measures each door against (tools/bench/latency/floors.py): they must pass
everything through unchanged, and the ext_proc floor must sit in the bridge's own Envoy listener. No timing here:
the bench's figures are only compared within one run."""

from __future__ import annotations

import re
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import aiohttp
import grpc
import orjson
import pytest
import yaml
from aiohttp import web
from grpc_health.v1 import health_pb2, health_pb2_grpc

from responses_bridge.adapters.extproc import service as external_processor_pb2_grpc
from responses_bridge.adapters.extproc._pb.ext_proc_pb2 import ProcessingMode, ProcessingRequest
from responses_bridge.demo import fake_server
from responses_bridge.envoy_config import EXTPROC_CLUSTER, EXTPROC_SERVICE, render_bootstrap, to_yaml
from tests.support.envoy import have_envoy, validate_config
from tools.bench.latency import floors

UPSTREAM = "http://127.0.0.1:8000/v1"


# --- the HTTP floor ---------------------------------------------------------------------------------------------


@pytest.fixture
async def proxied() -> AsyncIterator[tuple[str, str]]:
    """(the fake upstream's base URL, the floor proxy's) in this loop."""
    upstream, upstream_port = await fake_server.start()
    runner = web.AppRunner(floors.proxy_app(f"http://127.0.0.1:{upstream_port}/v1"))
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    try:
        yield f"http://127.0.0.1:{upstream_port}", f"http://127.0.0.1:{runner.addresses[0][1]}"
    finally:
        await runner.cleanup()
        await upstream.cleanup()


@pytest.mark.parametrize("stream", [False, True])
async def test_the_http_floor_passes_the_answer_through_unchanged(proxied: tuple[str, str], stream: bool) -> None:
    body = {"model": "fake-model", "messages": [{"role": "user", "content": "[chunks=4] hi"}], "stream": stream}
    answers = []
    async with aiohttp.ClientSession() as session:
        for base in proxied:
            async with session.post(f"{base}/v1/chat/completions", json=body) as response:
                answers.append((response.status, response.content_type, await response.read()))
            assert response.headers.get("Content-Length") is None if stream else response.content_length
        async with session.post(f"{proxied[1]}/v1/chat/completions", json={"model": ""}) as response:
            assert response.status == 400  # the upstream's refusal, as it gave it
            assert (await response.json())["error"]["param"] == "model"
    ids = rb'"id":"chatcmpl-\d+"|"created":\d+'
    (status, kind, direct), (floor_status, floor_kind, floor) = answers
    assert (status, kind) == (floor_status, floor_kind) == (200, "text/event-stream" if stream else "application/json")
    assert re.sub(ids, b"", direct) == re.sub(ids, b"", floor)


# --- the ext_proc floor -----------------------------------------------------------------------------------------


@pytest.fixture
async def noop_channel() -> AsyncIterator[grpc.aio.Channel]:
    server, port = await floors.start_noop("127.0.0.1:0")
    try:
        async with grpc.aio.insecure_channel(f"127.0.0.1:{port}") as channel:
            yield channel
    finally:
        await server.stop(None)


def _message(**fields: Any) -> ProcessingRequest:
    """A message as Envoy sends it, from nested dicts of its fields."""
    message = ProcessingRequest()
    _fill(message, fields)
    return message


def _fill(target: Any, values: dict[str, Any]) -> None:
    for key, value in values.items():
        if isinstance(value, dict):
            _fill(getattr(target, key), value)
        else:
            setattr(target, key, value)


async def test_the_noop_processor_changes_nothing(noop_channel: grpc.aio.Channel) -> None:
    call = external_processor_pb2_grpc.ExternalProcessorStub(noop_channel).Process()
    mode = ProcessingMode.FULL_DUPLEX_STREAMED
    await call.write(_message(request_body={"body": b'{"model": "m"}', "end_of_stream": True},
                              protocol_config={"response_body_mode": mode}))
    reply = await call.read()
    # CONTINUE: an empty CommonResponse, no mutation of the body Envoy buffered
    assert reply.WhichOneof("response") == "request_body" and reply.request_body.ListFields() == []
    await call.write(_message(response_headers={"end_of_stream": False}))
    reply = await call.read()
    assert reply.WhichOneof("response") == "response_headers" and reply.response_headers.ListFields() == []
    for chunk, end in ((b"data: 1\n\n", False), (b"", True)):  # FULL_DUPLEX: every byte the client gets is sent
        await call.write(_message(response_body={"body": chunk, "end_of_stream": end}))
        streamed = (await call.read()).response_body.response.body_mutation.streamed_response
        assert (streamed.body, streamed.end_of_stream) == (chunk, end)
    await call.done_writing()
    assert await call.read() is grpc.aio.EOF  # type: ignore[attr-defined]
    health = await health_pb2_grpc.HealthStub(noop_channel).Check(
        health_pb2.HealthCheckRequest(service=EXTPROC_SERVICE))
    assert health.status == health_pb2.HealthCheckResponse.SERVING  # Envoy's health check of the cluster passes


def _floor_bootstrap(**processor: Any) -> dict[str, Any]:
    bootstrap = yaml.safe_load(render_bootstrap(listen_port=10000, extproc_port=9000, http_port=8080,
                                                upstream=UPSTREAM, admin_port=9901))
    floors.add_floor_listener(bootstrap, port=10010, processor=floors.processor_address(**processor))
    return bootstrap


def _manager(listener: dict[str, Any]) -> dict[str, Any]:
    return listener["filter_chains"][0]["filters"][0]["typed_config"]


def test_the_floor_listener_is_the_bridge_listener_with_the_noop_processor() -> None:
    bootstrap = _floor_bootstrap(port=9100)
    bridge, floor = bootstrap["static_resources"]["listeners"]
    assert floor["address"]["socket_address"]["port_value"] == 10010
    pointed = orjson.dumps(_manager(floor)["http_filters"]).replace(floors.FLOOR_EXTPROC_CLUSTER.encode(),
                                                                     EXTPROC_CLUSTER.encode())
    assert pointed == orjson.dumps(_manager(bridge)["http_filters"])  # same filters, same processing mode
    routes = _manager(floor)["route_config"]["virtual_hosts"]
    assert routes == _manager(bridge)["route_config"]["virtual_hosts"]  # /v1/responses -> chat/completions
    clusters = {c["name"]: c for c in bootstrap["static_resources"]["clusters"]}
    noop = clusters[floors.FLOOR_EXTPROC_CLUSTER]
    assert noop["health_checks"] == clusters[EXTPROC_CLUSTER]["health_checks"]
    assert noop["typed_extension_protocol_options"] == clusters[EXTPROC_CLUSTER]["typed_extension_protocol_options"]
    endpoint = noop["load_assignment"]["endpoints"][0]["lb_endpoints"][0]["endpoint"]["address"]
    assert endpoint == {"socket_address": {"address": "127.0.0.1", "port_value": 9100}}
    unix = _floor_bootstrap(uds="/tmp/floor.sock")["static_resources"]["clusters"][-1]
    assert unix["load_assignment"]["endpoints"][0]["lb_endpoints"][0]["endpoint"]["address"] == {
        "pipe": {"path": "/tmp/floor.sock"}}


@pytest.mark.envoy
@pytest.mark.skipif(not have_envoy(), reason="no envoy binary")
@pytest.mark.parametrize("processor", [{"port": 9100}, {"uds": "/tmp/floor.sock"}], ids=["port", "uds"])
def test_the_floor_bootstrap_validates(processor: dict[str, Any], tmp_path: Path) -> None:
    path = tmp_path / "envoy.yaml"
    path.write_text(to_yaml(_floor_bootstrap(**processor)))
    result = validate_config(path)
    assert result.returncode == 0, result.stdout + result.stderr
