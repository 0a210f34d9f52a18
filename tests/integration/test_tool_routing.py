"""Requests with server-side tools go through Envoy to the sidecar's HTTP door, whose model calls go back through
Envoy's listener; every other Responses request keeps the ext_proc path.

One sidecar (its own upstream calls made through Envoy: ``--upstream-via``), one Envoy in front of it, and the
real MCP test server. Envoy's admin counters show which cluster each request took: ``responses_bridge_http`` (the
sidecar's HTTP door) and ``llm_upstream`` (every model call, the processor's translated ones and the sidecar's
own alike).
"""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any

import aiohttp
import openai
import orjson
import pytest

from responses_bridge.envoy_config import (
    HTTP_CLUSTER,
    UPSTREAM_CLUSTER,
    render_bootstrap,
)
from tests.support.bridge import running_sidecar
from tests.support.envoy import EnvoyProcess, free_port, have_envoy, start_envoy
from tests.support.mcp_server import MCPTestServer, running_mcp_server
from tests.support.sdk import async_sdk

# which door runs a request is the subject, not its store: on SQLite files of its own, once (tests/conftest.py)
pytestmark = [pytest.mark.skipif(not have_envoy(), reason="envoy binary not available"), pytest.mark.store_free]

SIDECAR_REQUESTS = f"cluster.{HTTP_CLUSTER}.upstream_rq_total"
MODEL_CALLS = f"cluster.{UPSTREAM_CLUSTER}.upstream_rq_total"


@dataclass
class Gateway:
    url: str
    envoy: EnvoyProcess
    mcp: MCPTestServer

    async def counts(self) -> tuple[int, int]:
        """(requests Envoy sent to the sidecar's HTTP door, model calls Envoy sent upstream)."""
        stats = await self.envoy.stats("cluster.")
        return int(stats.get(SIDECAR_REQUESTS, 0)), int(stats.get(MODEL_CALLS, 0))


@pytest.fixture(scope="module")
async def gateway(fake_upstream: str, tmp_path_factory: pytest.TempPathFactory) -> AsyncIterator[Gateway]:
    listen_port = free_port()  # first: the sidecar makes its own model calls through this listener
    env = {"RESPONSES_BRIDGE_MCP_ALLOWED_HOSTS": "127.0.0.1"}
    async with running_mcp_server() as mcp, running_sidecar(
            str(tmp_path_factory.mktemp("routing")), fake_upstream, "--upstream-via",
            f"http://127.0.0.1:{listen_port}/v1", env=env, own_sqlite=True) as sidecar:
        envoy = await start_envoy(render_bootstrap(
            listen_port=listen_port, extproc_port=sidecar.extproc_port,
            http_port=int(sidecar.http_url.rsplit(":", 1)[1]), upstream=fake_upstream, admin_port=0))
        try:
            yield Gateway(f"http://127.0.0.1:{listen_port}", envoy, mcp)
        finally:
            envoy.stop()


@pytest.fixture
async def sdk(gateway: Gateway) -> AsyncIterator[openai.AsyncOpenAI]:
    async with async_sdk(base_url=f"{gateway.url}/v1", api_key="sk-client", max_retries=0,
                                  timeout=60) as client:
        yield client


def _mcp_tool(gateway: Gateway) -> dict[str, Any]:
    return {"type": "mcp", "server_label": "tools", "server_url": gateway.mcp.http_url, "require_approval": "never",
            "allowed_tools": ["add"]}


SERVER_SEARCH = [{"type": "tool_search"},
                 {"type": "function", "name": "lookup_order", "description": "Look up an order by its number.",
                  "parameters": {"type": "object", "properties": {"number": {"type": "string"}}},
                  "defer_loading": True}]


async def _create(sdk: openai.AsyncOpenAI, stream: bool, **params: Any) -> Any:
    """The final Response, streamed or not (a streamed one from its terminal event)."""
    if not stream:
        return await sdk.responses.create(model="fake-model", input="Say hello.", **params)
    final = None
    async with await sdk.responses.create(model="fake-model", input="Say hello.", stream=True, **params) as events:
        async for event in events:
            if event.type in ("response.completed", "response.failed", "response.incomplete"):
                final = event.response
    assert final is not None, "the stream ended without a terminal event"
    return final


@pytest.mark.parametrize("stream", [False, True], ids=["json", "sse"])
@pytest.mark.parametrize("tools", ["mcp", "tool_search"])
async def test_server_side_tools_go_to_the_http_door_and_its_model_call_through_envoy(
        gateway: Gateway, sdk: openai.AsyncOpenAI, stream: bool, tools: str) -> None:
    request_tools = [_mcp_tool(gateway)] if tools == "mcp" else SERVER_SEARCH
    sidecar_before, model_before = await gateway.counts()
    response = await _create(sdk, stream, tools=request_tools)
    assert response.status == "completed"
    assert response.output_text  # the model's answer reached the client through the HTTP door
    sidecar_after, model_after = await gateway.counts()
    assert sidecar_after == sidecar_before + 1  # Envoy sent the request to the sidecar's HTTP door
    assert model_after > model_before  # and the sidecar's model call came back through Envoy's listener
    if tools == "mcp":  # the echo of the tools never carries credentials, whichever door answered
        echoed = [tool for tool in response.tools if tool.type == "mcp"]
        assert echoed and echoed[0].server_label == "tools"


@pytest.mark.parametrize("stream", [False, True], ids=["json", "sse"])
@pytest.mark.parametrize("route_header", [False, True], ids=["plain", "client_route_header"])
async def test_requests_without_server_side_tools_keep_the_ext_proc_path(
        gateway: Gateway, stream: bool, route_header: bool) -> None:
    """Nothing a client sends picks the sidecar's route (the processor marks a request with dynamic metadata, not
    a header): a plain request that carries the header a header-routed design would use still takes the ext_proc
    path. The processor translates the request (the fake upstream gets a Chat Completions body at
    ``/v1/chat/completions``), and Envoy makes the one model call."""
    headers = {"x-responses-bridge-route": "sidecar"} if route_header else {}
    function = {"type": "function", "name": "get_weather", "parameters": {"type": "object", "properties": {}}}
    async with async_sdk(base_url=f"{gateway.url}/v1", api_key="sk-client", max_retries=0, timeout=60,
                                  default_headers=headers) as sdk:
        sidecar_before, model_before = await gateway.counts()
        response = await _create(sdk, stream, tools=[function])
    assert response.status == "completed"
    assert response.output_text
    sidecar_after, model_after = await gateway.counts()
    assert sidecar_after == sidecar_before  # never through the sidecar's HTTP door
    assert model_after == model_before + 1


async def test_web_search_without_a_provider_keeps_the_ext_proc_path(gateway: Gateway,
                                                                    sdk: openai.AsyncOpenAI) -> None:
    """This deployment has no search provider: web search is not a tool it runs, so today's unsupported-tool
    policy applies in the processor (the tool is dropped) and the request never reaches the sidecar's door."""
    sidecar_before, model_before = await gateway.counts()
    response = await _create(sdk, False, tools=[{"type": "web_search"}])
    assert response.status == "completed"
    sidecar_after, model_after = await gateway.counts()
    assert (sidecar_after, model_after) == (sidecar_before, model_before + 1)


async def test_a_routed_request_keeps_its_body_and_its_errors(gateway: Gateway) -> None:
    """The routed request reaches the HTTP door unchanged: a parameter the door refuses is refused there, with
    the same OpenAI-shaped 400 the processor would have given, and Envoy makes no model call."""
    body = {"model": "fake-model", "input": "hi", "tools": SERVER_SEARCH, "temperature": "hot"}
    sidecar_before, model_before = await gateway.counts()
    async with aiohttp.ClientSession() as session, session.post(
            f"{gateway.url}/v1/responses", data=json.dumps(body),
            headers={"content-type": "application/json"}) as answer:
        status, payload = answer.status, await answer.json()
    assert status == 400, payload
    assert payload["error"]["param"] == "temperature", payload
    sidecar_after, model_after = await gateway.counts()
    assert (sidecar_after, model_after) == (sidecar_before + 1, model_before)


@pytest.mark.parametrize("stream", [False, True], ids=["json", "sse"])
async def test_every_turn_of_a_three_turn_loop_goes_through_envoy(gateway: Gateway, sdk: openai.AsyncOpenAI,
                                                                 stream: bool) -> None:
    """The HTTP door runs the loop; each of its three model turns is one more request on Envoy's upstream
    cluster, and the client gets one response with both calls."""
    tool = {**_mcp_tool(gateway), "allowed_tools": ["add", "echo"]}
    sidecar_before, model_before = await gateway.counts()
    if stream:
        final = None
        async with await sdk.responses.create(model="fake-model", input="call tools__add [then=tools__echo]",
                                              tools=[tool], stream=True) as events:  # type: ignore[list-item]
            kinds = []
            async for event in events:
                kinds.append(event.type)
                if event.type == "response.completed":
                    final = event.response
        assert kinds.count("response.created") == 1 and kinds[-1] == "response.completed"
    else:
        final = await sdk.responses.create(model="fake-model", input="call tools__add [then=tools__echo]",
                                           tools=[tool])  # type: ignore[list-item]
    assert final is not None and final.status == "completed"
    assert [item.type for item in final.output] == ["mcp_list_tools", "mcp_call", "mcp_call", "message"]
    assert final.output_text == "Tool result: test"
    sidecar_after, model_after = await gateway.counts()
    assert (sidecar_after, model_after) == (sidecar_before + 1, model_before + 3)


async def test_the_first_event_reaches_the_client_before_the_second_model_turn_starts(gateway: Gateway) -> None:
    """One stream, streamed: the client holds the opening events while turn 1's tool call is still running (a
    slow MCP tool), so turn 2 has not been asked for yet; the upstream cluster then sees the second call."""
    tool = {**_mcp_tool(gateway), "allowed_tools": ["slow"]}
    body = {"model": "fake-model", "stream": True, "tools": [tool],
            "input": 'call tools__slow [args={"seconds": 3}]'}
    _, model_before = await gateway.counts()
    events: list[dict[str, Any]] = []
    async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=60)) as session, \
            session.post(f"{gateway.url}/v1/responses", json=body) as answer:
        assert answer.status == 200
        buffer = b""
        model_calls_at_first_event = None
        async for chunk in answer.content.iter_any():
            buffer += chunk
            while b"\n\n" in buffer:
                frame, buffer = buffer.split(b"\n\n", 1)
                data = next((line[6:] for line in frame.split(b"\n") if line.startswith(b"data: ")), b"")
                if data and data != b"[DONE]":
                    events.append(orjson.loads(data))
                    if model_calls_at_first_event is None:
                        model_calls_at_first_event = (await gateway.counts())[1]
    assert events[0]["type"] == "response.created" and events[-1]["type"] == "response.completed"
    # turn 2 not started while the client had event 1 (turn 1 itself may not have reached the cluster yet: the
    # door sends response.created first, and the turn's chat call passes the processor's chat route before it)
    assert model_calls_at_first_event is not None and model_calls_at_first_event <= model_before + 1
    assert (await gateway.counts())[1] == model_before + 2
    calls = [e["item"] for e in events if e["type"] == "response.output_item.done" and e["item"]["type"] == "mcp_call"]
    assert len(calls) == 1 and calls[0]["error"] is None



ROUTED_ROUNDS = 100


async def test_every_routed_answer_keeps_its_body(gateway: Gateway) -> None:
    """Routed answers pass through the processor's still-open stream, whole. When the processor closed its gRPC
    stream right after the routing reply, a fast answer from the HTTP door (a 400) sometimes reached Envoy first:
    Envoy had already handed the FULL_DUPLEX_STREAMED body to the processor, the close dropped it, and the client
    got the status with an empty body (1 to 14 in a hundred 400s). Three hundred quick 400s, a hundred JSON answers
    and a hundred event streams, each body read and checked."""
    refused = {"model": "fake-model", "input": "hi", "tools": SERVER_SEARCH, "temperature": "hot"}
    answered = {"model": "fake-model", "input": "hi", "tools": SERVER_SEARCH}
    streamed = {**answered, "stream": True}
    sidecar_before, _ = await gateway.counts()
    damaged: list[tuple[str, int, bytes]] = []
    async with aiohttp.ClientSession() as session:
        for _ in range(ROUTED_ROUNDS):
            for kind, body in (("400", refused), ("400", refused), ("400", refused), ("json", answered),
                               ("sse", streamed)):
                async with session.post(f"{gateway.url}/v1/responses", json=body) as answer:
                    status, raw = answer.status, await answer.read()
                if kind == "400":
                    whole = status == 400 and orjson.loads(raw or b"{}").get("error", {}).get("param") == "temperature"
                elif kind == "json":
                    whole = status == 200 and orjson.loads(raw or b"{}").get("status") == "completed"
                else:
                    whole = (status == 200 and b'"type":"response.completed"' in raw
                             and raw.rstrip().endswith(b"data: [DONE]"))
                if not whole:
                    damaged.append((kind, status, raw[:200]))
    assert not damaged, f"{len(damaged)} of {5 * ROUTED_ROUNDS} routed answers damaged: {damaged[:5]}"
    sidecar_after, _ = await gateway.counts()
    assert sidecar_after == sidecar_before + 5 * ROUTED_ROUNDS  # every one of them was routed to the HTTP door
