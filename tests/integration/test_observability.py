"""Logs, metrics and traces as an operator sees them, through both doors.

One sidecar of its own (its log lines read from its stderr, its spans exported over OTLP/HTTP to a collector in
this process, so nothing another test does moves its numbers), with a real Envoy in front of it. The collector is
a small aiohttp server decoding the protobuf export requests with ``opentelemetry-proto``.
"""

from __future__ import annotations

import asyncio
import contextlib
import gzip
import os
import secrets
import signal
import subprocess
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path

import aiohttp
import openai
import orjson
import pytest
from aiohttp import web
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import (
    ExportTraceServiceRequest,
    ExportTraceServiceResponse,
)
from prometheus_client.parser import text_string_to_metric_families

from responses_bridge.demo.procs import free_port, wait_http
from responses_bridge.envoy_config import bootstrap_dict, render_bootstrap, to_yaml
from tests.support.bridge import PYTHON, UpstreamLog
from tests.support.envoy import start_envoy
from tests.support.sdk import async_sdk

pytestmark = [pytest.mark.envoy, pytest.mark.store_free]

SECRET_KEY = "sk-very-secret-client-key-4711"
SECRET_TEXT = "confidential-body-words-0815"


@dataclass
class Span:
    name: str
    trace_id: str
    span_id: str
    parent_span_id: str
    kind: int
    attributes: dict[str, object]


class Collector:
    """An OTLP/HTTP trace receiver: ``POST /v1/traces`` with an ``ExportTraceServiceRequest``."""

    def __init__(self) -> None:
        self.spans: list[Span] = []
        self.changed = asyncio.Event()

    async def receive(self, request: web.Request) -> web.Response:
        body = await request.read()
        if request.headers.get("Content-Encoding") == "gzip":
            body = gzip.decompress(body)
        export = ExportTraceServiceRequest.FromString(body)
        for resource_spans in export.resource_spans:
            for scope_spans in resource_spans.scope_spans:
                for span in scope_spans.spans:
                    attributes = {kv.key: getattr(kv.value, kv.value.WhichOneof("value")) for kv in span.attributes}
                    self.spans.append(Span(span.name, span.trace_id.hex(), span.span_id.hex(),
                                           span.parent_span_id.hex(), span.kind, attributes))
        self.changed.set()
        return web.Response(body=ExportTraceServiceResponse().SerializeToString(),
                            content_type="application/x-protobuf")

    async def trace(self, trace_id: str, *names: str, timeout: float = 20.0) -> list[Span]:
        """The spans of one trace, once every name in ``names`` has arrived."""
        deadline = time.monotonic() + timeout
        while True:
            spans = [span for span in self.spans if span.trace_id == trace_id]
            if {span.name for span in spans} >= set(names) or time.monotonic() > deadline:
                return spans
            self.changed.clear()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self.changed.wait(), max(0.01, deadline - time.monotonic()))


@dataclass
class Stack:
    http_url: str
    envoy_url: str
    extproc_port: int
    collector_port: int
    fake_upstream: str
    log_path: Path
    collector: Collector
    upstream: UpstreamLog
    upstream_host: str

    def base(self, door: str) -> str:
        return self.envoy_url if door == "envoy" else self.http_url

    def log_lines(self) -> list[dict]:
        lines = []
        for raw in self.log_path.read_text().splitlines():
            raw = raw.strip()
            if raw.startswith("{"):
                lines.append(orjson.loads(raw))
        return lines


@pytest.fixture(scope="module")
async def stack(fake_upstream: str, tmp_path_factory: pytest.TempPathFactory) -> AsyncIterator[Stack]:
    tmp = tmp_path_factory.mktemp("observability")
    collector = Collector()
    app = web.Application()
    app.router.add_post("/v1/traces", collector.receive)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    collector_port = free_port()
    await web.TCPSite(runner, "127.0.0.1", collector_port).start()
    http_port, extproc_port = free_port(), free_port()
    log_path = tmp / "sidecar.log"
    env = {**os.environ, "OTEL_EXPORTER_OTLP_ENDPOINT": f"http://127.0.0.1:{collector_port}",
           "OTEL_BSP_SCHEDULE_DELAY": "50", "RESPONSES_BRIDGE_LOG_LEVEL": "info"}
    with open(log_path, "wb") as log_file:
        process = subprocess.Popen(
            [PYTHON, "-m", "responses_bridge", "serve", "--upstream", fake_upstream, "--http-port", str(http_port),
             "--extproc-port", str(extproc_port), "--db", str(tmp / "bridge.db")],
            stdout=log_file, stderr=log_file, env=env, start_new_session=True)
    envoy = None
    try:
        await wait_http(f"http://127.0.0.1:{http_port}/health")
        listen_port = free_port()
        envoy = await start_envoy(render_bootstrap(listen_port=listen_port, extproc_port=extproc_port,
                                                   http_port=http_port, upstream=fake_upstream, admin_port=0))
        yield Stack(f"http://127.0.0.1:{http_port}", f"http://127.0.0.1:{listen_port}", extproc_port,
                    collector_port, fake_upstream, log_path, collector,
                    UpstreamLog(fake_upstream.removesuffix("/v1")), fake_upstream.split("/")[2])
    finally:
        if envoy is not None:
            envoy.stop()
        os.killpg(process.pid, signal.SIGTERM)
        # waited for off the loop: the sidecar's last export on its way out goes to the collector, which this loop
        # serves (a blocking wait held it until the exporter's 10-second timeout gave up)
        await asyncio.to_thread(process.wait, 30)
        await runner.cleanup()


async def scrape(stack: Stack) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    async with aiohttp.ClientSession() as session, session.get(f"{stack.http_url}/metrics") as response:
        assert response.status == 200
        text = await response.text()
    values = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            values[(sample.name, tuple(sorted(sample.labels.items())))] = sample.value
    return values


async def settled(stack: Stack) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    """A scrape once no ext_proc stream is open: Envoy closes a stream's gRPC call a moment after the client got
    the last byte, and the stream is recorded when it closes."""
    deadline = time.monotonic() + 10
    previous = None
    while True:
        metrics = await scrape(stack)
        # closed, and nothing still being recorded: two scrapes in a row agree on the bridge's own metrics
        ours = {key: number for key, number in metrics.items() if key[0].startswith("responses_bridge_")}
        if value(metrics, "responses_bridge_extproc_streams_active") == 0 and ours == previous:
            return metrics
        if time.monotonic() > deadline:
            return metrics
        previous = ours
        await asyncio.sleep(0.1)


def value(metrics: dict, name: str, **labels: str) -> float:
    return metrics.get((name, tuple(sorted(labels.items()))), 0.0)


def sdk(stack: Stack, door: str, **headers: str) -> openai.AsyncOpenAI:
    return async_sdk(base_url=f"{stack.base(door)}/v1", api_key=SECRET_KEY, max_retries=0, timeout=60,
                              default_headers=headers or None)


async def stream_one(client: openai.AsyncOpenAI, text: str = "hello metrics world") -> str:
    stream = await client.responses.create(model="fake-model", input=text, stream=True)
    response_id = ""
    async for event in stream:
        if event.type == "response.completed":
            response_id = event.response.id
    assert response_id
    return response_id


@pytest.mark.parametrize("door", ["http", "envoy"])
async def test_metrics_move_as_requests_flow(stack: Stack, door: str) -> None:
    route = "POST /v1/responses"
    label = "extproc" if door == "envoy" else "http"  # through Envoy, the ext_proc door answers
    before = await scrape(stack)
    async with sdk(stack, door) as client:
        await stream_one(client)
        with pytest.raises(openai.BadRequestError):
            await client.responses.create(model="fake-model", input="x", temperature=9)
    after = await settled(stack)

    def moved(name: str, **labels: str) -> float:
        return value(after, name, **labels) - value(before, name, **labels)

    assert moved("responses_bridge_requests_total", door=label, route=route, status="200") == 1
    assert moved("responses_bridge_requests_total", door=label, route=route, status="400") == 1
    assert moved("responses_bridge_request_duration_seconds_count", door=label, route=route) == 2
    assert moved("responses_bridge_time_to_first_event_seconds_count", door=label) == 1
    assert value(after, "responses_bridge_active_streams", door=label) == 0
    # labelled by the upstream's name and mode, whichever door: never Envoy's or a listener's host:port
    assert moved("responses_bridge_upstream_latency_seconds_count", upstream="default", mode="translate") == 1
    upstream_series = ("responses_bridge_upstream_latency", "responses_bridge_upstream_errors")
    assert {dict(labels).get("upstream") for name, labels in after if name.startswith(upstream_series)} == {"default"}
    # the fake counts words: "hello metrics world" + 1 per message in, "Echo: hello metrics world" out
    assert moved("responses_bridge_tokens_total", model="fake-model", direction="input") == 4
    assert moved("responses_bridge_tokens_total", model="fake-model", direction="output") == 4
    assert moved("responses_bridge_store_operation_seconds_count", operation="save") >= 1
    if door == "envoy":
        assert moved("responses_bridge_extproc_streams_total") == 2
        assert value(after, "responses_bridge_extproc_streams_active") == 0
        assert moved("responses_bridge_extproc_message_seconds_count", phase="request_body") == 2
        assert moved("responses_bridge_extproc_message_seconds_count", phase="response_headers") == 1
        assert moved("responses_bridge_extproc_message_seconds_count", phase="response_body") >= 2
    else:
        assert moved("responses_bridge_extproc_streams_total") == 0


@pytest.mark.parametrize("door", ["http", "envoy"])
async def test_upstream_errors_are_counted_by_upstream(stack: Stack, door: str) -> None:
    before = await scrape(stack)
    async with sdk(stack, door) as client:
        with pytest.raises(openai.APIStatusError):
            await client.responses.create(model="fake-model", input="[error=503] down")
    after = await settled(stack)
    labels = {"upstream": "default", "mode": "translate", "kind": "http_5xx"}
    key = ("responses_bridge_upstream_errors_total", tuple(sorted(labels.items())))
    assert after.get(key, 0) - before.get(key, 0) == 1


async def test_background_queue_depth(stack: Stack) -> None:
    async with sdk(stack, "http") as client:
        started = await client.responses.create(model="fake-model", input="[stall=1500] later", background=True)
        during = await scrape(stack)
        assert value(during, "responses_bridge_background_queue_depth") == 1
        deadline = time.monotonic() + 30
        while (await client.responses.retrieve(started.id)).status in ("queued", "in_progress"):
            assert time.monotonic() < deadline, "the background response never ended"
            await asyncio.sleep(0.1)
    assert value(await scrape(stack), "responses_bridge_background_queue_depth") == 0


@pytest.mark.parametrize("door", ["http", "envoy"])
async def test_trace_joins_the_callers_traceparent(stack: Stack, door: str) -> None:
    trace_id, parent_id = secrets.token_hex(16), secrets.token_hex(8)
    await stack.upstream.clear()
    async with sdk(stack, door, traceparent=f"00-{trace_id}-{parent_id}-01") as client:
        await stream_one(client, "trace me")
    root = "extproc" if door == "envoy" else "POST /v1/responses"
    upstream_span = "upstream POST chat/completions"
    expected = [root, upstream_span, "store save"]
    if door == "envoy":
        expected += ["extproc request_body", "extproc response_headers", "extproc response_body"]
    else:  # the model call the bridge makes itself: its span (model, tokens) holds the HTTP call's
        expected.append("chat fake-model")
    spans = await stack.collector.trace(trace_id, *expected)
    by_name = {span.name: span for span in spans}
    assert set(expected) <= set(by_name), sorted(by_name)
    request_span = by_name[root]
    assert request_span.parent_span_id == parent_id  # the caller's span (passed on by Envoy) is the parent
    assert request_span.kind == 2  # SERVER
    if door == "envoy":
        assert by_name[upstream_span].parent_span_id == request_span.span_id
    else:
        chat = by_name["chat fake-model"]
        assert chat.parent_span_id == request_span.span_id and by_name[upstream_span].parent_span_id == chat.span_id
        assert chat.attributes["gen_ai.request.model"] == "fake-model"
        assert int(chat.attributes["gen_ai.usage.output_tokens"]) > 0  # type: ignore[call-overload]
    ids = {span.span_id for span in spans}
    assert by_name["store save"].parent_span_id in ids  # the save runs inside the request's spans
    if door == "envoy":
        for phase in ("request_body", "response_headers", "response_body"):
            assert by_name[f"extproc {phase}"].parent_span_id == request_span.span_id
    # the upstream's own spans nest under the bridge's span of the call, through either door (Envoy's call
    # carries the context the processor leaves in metadata for the route)
    sent = (await stack.upstream.entries())[-1]["headers"]["traceparent"]
    assert sent.split("-")[1] == trace_id
    assert sent.split("-")[2] == by_name[upstream_span].span_id


async def test_b3_headers_are_accepted(stack: Stack) -> None:
    trace_id, parent_id = secrets.token_hex(16), secrets.token_hex(8)
    async with sdk(stack, "envoy", **{"X-B3-TraceId": trace_id, "X-B3-SpanId": parent_id,
                                      "X-B3-Sampled": "1"}) as client:
        await stream_one(client, "b3 please")
    spans = await stack.collector.trace(trace_id, "extproc")
    assert [span.parent_span_id for span in spans if span.name == "extproc"] == [parent_id]


async def test_http_door_echoes_and_logs_the_request_id(stack: Stack) -> None:
    async with aiohttp.ClientSession() as session:
        async with session.post(f"{stack.http_url}/v1/responses", headers={"X-Request-Id": "rid-from-client-1",
                                                                            "Authorization": f"Bearer {SECRET_KEY}"},
                                json={"model": "fake-model", "input": SECRET_TEXT, "stream": True}) as response:
            assert response.status == 200
            assert response.headers["X-Request-Id"] == "rid-from-client-1"  # on an event stream too
            await response.read()
        async with session.get(f"{stack.http_url}/v1/responses/resp_missing") as response:
            assert response.status == 404
            generated = response.headers["X-Request-Id"]
            assert len(generated) == 36 and generated != "rid-from-client-1"
    lines = await wait_for_lines(stack, "rid-from-client-1")
    assert any(line["event"] == "request_finished" and line["status"] == 200 and line["door"] == "http"
               and line["route"] == "POST /v1/responses" for line in lines)
    assert await wait_for_lines(stack, generated)
    assert_no_secrets(stack)


async def test_extproc_logs_carry_envoys_request_id(stack: Stack) -> None:
    await stack.upstream.clear()
    async with sdk(stack, "envoy") as client:
        await stream_one(client, SECRET_TEXT)
    request_id = (await stack.upstream.entries())[-1]["headers"]["x-request-id"]  # what Envoy sent upstream
    assert request_id
    lines = await wait_for_lines(stack, request_id)
    assert any(line["event"] == "request_finished" and line["door"] == "extproc" and line["status"] == 200
               and line["upstream"] == "default" and line["mode"] == "translate" for line in lines)
    assert_no_secrets(stack)


@pytest.mark.parametrize("stream", [False, True])
async def test_through_envoy_the_client_sees_the_request_id_the_bridge_logged(stack: Stack, stream: bool) -> None:
    """Not the upstream's own ``x-request-id`` (the fake answers with its ``chatcmpl-…`` id, as servers do): the
    client's, or when it sent none, the one Envoy made, which the bridge logged."""
    body = {"model": "fake-model", "input": "which id?", "stream": stream}
    auth = {"Authorization": f"Bearer {SECRET_KEY}"}
    async with aiohttp.ClientSession() as session:
        async with session.post(f"{stack.envoy_url}/v1/responses", json=body,
                                headers={**auth, "X-Request-Id": f"rid-through-envoy-{stream}"}) as response:
            assert response.status == 200
            assert response.headers.getall("x-request-id") == [f"rid-through-envoy-{stream}"]
            await response.read()
        async with session.post(f"{stack.envoy_url}/v1/responses", json=body, headers=auth) as response:
            assert response.status == 200
            assigned = response.headers.getall("x-request-id")
            await response.read()
    assert len(assigned) == 1 and not assigned[0].startswith("chatcmpl")
    for request_id in (f"rid-through-envoy-{stream}", assigned[0]):
        lines = await wait_for_lines(stack, request_id)
        assert any(line["event"] == "request_finished" and line["door"] == "extproc" and line["upstream"] == "default"
                   for line in lines), request_id


async def test_the_http_door_logs_the_upstream_that_served(stack: Stack) -> None:
    async with sdk(stack, "http", **{"X-Request-Id": "rid-http-upstream"}) as client:
        await stream_one(client, "who served?")
    lines = await wait_for_lines(stack, "rid-http-upstream")
    assert any(line["event"] == "request_finished" and line["upstream"] == "default" and line["mode"] == "translate"
               for line in lines)


async def wait_for_lines(stack: Stack, request_id: str) -> list[dict]:
    """The sidecar's JSON log lines that carry ``request_id`` (a line is written when its request ends, which the
    client may see a moment before it happens)."""
    deadline = time.monotonic() + 10
    while True:
        lines = [line for line in stack.log_lines() if line.get("request_id") == request_id]
        if (lines and any(line["event"] == "request_finished" for line in lines)) or time.monotonic() > deadline:
            return lines
        await asyncio.sleep(0.05)


def assert_no_secrets(stack: Stack) -> None:
    text = stack.log_path.read_text()
    assert text.strip(), "the sidecar logged nothing"
    assert SECRET_KEY not in text
    assert SECRET_TEXT not in text
    for raw in text.splitlines():  # every line is one JSON object
        if raw.strip():
            orjson.loads(raw)


def traced_bootstrap(stack: Stack, listen_port: int) -> str:
    """The rendered bootstrap with Envoy's own OpenTelemetry tracer, exporting to the test's collector."""
    config = bootstrap_dict(listen_port=listen_port, extproc_port=stack.extproc_port,
                            http_port=int(stack.http_url.rsplit(":", 1)[1]), upstream=stack.fake_upstream,
                            admin_port=0)
    manager = config["static_resources"]["listeners"][0]["filter_chains"][0]["filters"][0]["typed_config"]
    manager["tracing"] = {"provider": {"name": "envoy.tracers.opentelemetry", "typed_config": {
        "@type": "type.googleapis.com/envoy.config.trace.v3.OpenTelemetryConfig",
        "http_service": {"http_uri": {"uri": f"http://127.0.0.1:{stack.collector_port}/v1/traces",
                                      "cluster": "otel_collector", "timeout": "2s"}},
        "service_name": "envoy"}}}
    config["static_resources"]["clusters"].append({
        "name": "otel_collector", "type": "STATIC", "connect_timeout": "1s",
        "load_assignment": {"cluster_name": "otel_collector", "endpoints": [{"lb_endpoints": [{"endpoint": {
            "address": {"socket_address": {"address": "127.0.0.1", "port_value": stack.collector_port}}}}]}]}})
    config["stats_flush_interval"] = "0.2s"  # Envoy's tracer exports its spans at each stats flush
    return to_yaml(config)


async def test_envoys_span_and_the_bridges_spans_join(stack: Stack) -> None:
    """With Envoy tracing too, one trace holds the client's span, Envoy's and the bridge's."""
    listen_port = free_port()
    envoy = await start_envoy(traced_bootstrap(stack, listen_port))
    try:
        trace_id, parent_id = secrets.token_hex(16), secrets.token_hex(8)
        async with async_sdk(base_url=f"http://127.0.0.1:{listen_port}/v1", api_key=SECRET_KEY,
                                      max_retries=0, timeout=60,
                                      default_headers={"traceparent": f"00-{trace_id}-{parent_id}-01"}) as client:
            await stream_one(client, "trace through envoy")
        spans = await stack.collector.trace(trace_id, "extproc", "extproc response_body", timeout=20)
        deadline = time.monotonic() + 20
        while not any(span.parent_span_id == parent_id and span.name != "extproc" for span in spans):
            assert time.monotonic() < deadline, [(span.name, span.parent_span_id) for span in spans]
            await asyncio.sleep(0.1)
            spans = [span for span in stack.collector.spans if span.trace_id == trace_id]
    finally:
        envoy.stop()
    envoys = {span.span_id: span for span in spans if not span.name.startswith(("extproc", "upstream ", "store "))}
    (ingress,) = [span for span in envoys.values() if span.parent_span_id == parent_id]  # Envoy's request span
    (bridge,) = [span for span in spans if span.name == "extproc"]
    # the bridge's request span: a child of Envoy's span of its gRPC call, itself a child of Envoy's request span
    assert bridge.parent_span_id in envoys, [(span.name, span.span_id, span.parent_span_id) for span in spans]
    assert envoys[bridge.parent_span_id].parent_span_id == ingress.span_id
    # Envoy's tracer sets the upstream call's trace context after the route's headers: its request span is the
    # parent of the upstream's spans, not the bridge's span of the call
    sent = (await stack.upstream.entries())[-1]["headers"]["traceparent"]
    assert sent.split("-")[1:3] == [trace_id, ingress.span_id]
