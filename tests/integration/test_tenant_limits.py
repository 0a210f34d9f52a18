"""Per-tenant limits end to end: requests in flight (429 with Retry-After) and request body size (413).

Two deployments, each a real sidecar process started through the CLI:

* ``gateway``: ``RESPONSES_BRIDGE_AUTH=none`` (one tenant) behind a real Envoy, the sidecar's own model calls
  through Envoy's listener, the real MCP test server: both doors share one budget, a request Envoy hands to the
  HTTP door (server-side tools) counts once, streams and background runs hold their slot until they end.
* ``tenants``: ``RESPONSES_BRIDGE_AUTH=header`` on the HTTP door, limits from a config file's ``tenants:``: one
  tenant at its limit does not limit another; a tenant's WebSocket connections past its own limit are refused
  before the upgrade.

A held stream is a request whose upstream stalls mid-stream (``[stall_after=K:MS]``); the client then goes away.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any

import aiohttp
import openai
import pytest
import yaml

from responses_bridge.demo.procs import wait_http
from responses_bridge.envoy_config import render_bootstrap
from tests.support.bridge import Sidecar, running_sidecar, start_sidecar
from tests.support.envoy import EnvoyProcess, free_port, have_envoy, start_envoy
from tests.support.mcp_server import MCPTestServer, running_mcp_server
from tests.support.sdk import async_sdk
from tests.support.streams import held_stream

pytestmark = pytest.mark.store_proven(
    "tests/integration/test_agents_automations_replicas.py",
    "tests/integration/test_input_references.py",
    reason="every store/postgres line it covers on PostgreSQL is covered by the modules named (scripts/pg-coverage)",
)

MODEL = "fake-model"
HELD = "hold this [stall_after=1:120000]"  # the upstream stalls after one chunk: the stream stays open
BODY_LIMIT = 20_000


@dataclass
class Gateway:
    url: str  # Envoy's listener
    sidecar: Sidecar
    envoy: EnvoyProcess
    mcp: MCPTestServer


@pytest.fixture(scope="module")
async def gateway(fake_upstream: str, tmp_path_factory: pytest.TempPathFactory) -> AsyncIterator[Gateway]:
    if not have_envoy():
        pytest.skip("envoy binary not available")
    listen_port = free_port()
    env = {"RESPONSES_BRIDGE_MCP_ALLOWED_HOSTS": "127.0.0.1", "RESPONSES_BRIDGE_TENANT_MAX_CONCURRENT_REQUESTS": "1",
           "RESPONSES_BRIDGE_TENANT_MAX_REQUEST_BYTES": str(BODY_LIMIT)}
    async with running_mcp_server() as mcp, running_sidecar(
            str(tmp_path_factory.mktemp("limits")), fake_upstream, "--upstream-via",
            f"http://127.0.0.1:{listen_port}/v1", env=env) as sidecar:
        envoy = await start_envoy(render_bootstrap(
            listen_port=listen_port, extproc_port=sidecar.extproc_port,
            http_port=int(sidecar.http_url.rsplit(":", 1)[1]), upstream=fake_upstream, admin_port=0))
        try:
            yield Gateway(f"http://127.0.0.1:{listen_port}", sidecar, envoy, mcp)
        finally:
            envoy.stop()


@pytest.fixture(params=["http", "envoy"])
def door_url(request: pytest.FixtureRequest, gateway: Gateway) -> str:
    return gateway.sidecar.http_url if request.param == "http" else gateway.url


def sdk(base: str, **headers: str) -> openai.AsyncOpenAI:
    return async_sdk(base_url=f"{base}/v1", api_key="sk-client", max_retries=0, timeout=60,
                              default_headers=headers)


async def hold(client: openai.AsyncOpenAI) -> Any:
    """A streamed response left open: its first events have arrived, its upstream stalls."""
    return await held_stream(client, MODEL, HELD)


async def refused(client: openai.AsyncOpenAI) -> openai.RateLimitError:
    with pytest.raises(openai.RateLimitError) as info:
        await client.responses.create(model=MODEL, input="one more")
    return info.value


async def admitted_again(client: openai.AsyncOpenAI) -> bool:
    """The tenant's slot came back: a request is answered (bounded polling of a condition, not a timing check)."""
    for _ in range(300):
        try:
            response = await client.responses.create(model=MODEL, input="again")
        except openai.RateLimitError:
            await asyncio.sleep(0.05)
            continue
        return response.status == "completed"
    return False


# --- one tenant, both doors --------------------------------------------------------------------------------------


async def test_a_held_stream_takes_the_tenants_only_slot_on_both_doors(gateway: Gateway, door_url: str) -> None:
    """The limit is 1: while a stream is open through one door, a request through either door is a 429 in the
    OpenAI shape with Retry-After (the SDK raises RateLimitError); when the client goes away, the slot comes
    back."""
    async with sdk(door_url) as client, sdk(gateway.url) as via_envoy, sdk(gateway.sidecar.http_url) as direct:
        stream = await hold(client)
        try:
            for other in (via_envoy, direct):
                error = await refused(other)
                assert error.status_code == 429
                assert error.response.headers["retry-after"] == "1"
                assert error.body == {"message": error.body["message"], "type": "requests", "param": None,
                                      "code": "rate_limit_exceeded"}
                assert "1 request in flight" in error.body["message"]
        finally:
            await stream.close()  # the client goes away mid-stream
        assert await admitted_again(client)


async def test_a_failed_request_gives_its_slot_back(gateway: Gateway, door_url: str) -> None:
    async with sdk(door_url) as client:
        with pytest.raises(openai.APIStatusError):
            await client.responses.create(model=MODEL, input="boom [error=500]")
        assert await admitted_again(client)


async def test_a_request_envoy_hands_to_the_http_door_counts_once(gateway: Gateway) -> None:
    """A request with an MCP tool goes through the processor and then to the sidecar's HTTP door, which runs the
    tool loop: with a limit of 1 it is answered (two counts would refuse it), and while it holds the slot, the
    next request is refused."""
    tool = {"type": "mcp", "server_label": "tools", "server_url": gateway.mcp.http_url, "require_approval": "never",
            "allowed_tools": ["add"]}
    async with sdk(gateway.url) as client:
        response = await client.responses.create(model=MODEL, input="Say hello.", tools=[tool])
        assert response.status == "completed"
        stream = await client.responses.create(model=MODEL, input=HELD, tools=[tool], stream=True)
        async for event in stream:
            if event.type == "response.output_text.delta":
                break
        try:
            await refused(client)
        finally:
            await stream.close()
        assert await admitted_again(client)


async def test_a_background_run_holds_its_slot_until_it_ends(gateway: Gateway, door_url: str) -> None:
    """A background response calls the upstream after its request has been answered: it counts until its run
    ends (here, until it is cancelled)."""
    async with sdk(door_url) as client:
        queued = await client.responses.create(model=MODEL, input=HELD, background=True)
        try:
            await refused(client)
        finally:
            await client.responses.cancel(queued.id)
        assert await admitted_again(client)


async def test_back_to_back_requests_never_find_the_last_one_still_counted(gateway: Gateway) -> None:
    """The limit is 1 and each request is sent the moment the last one's answer is whole (JSON, and a stream read
    to its end), in turn through Envoy and to the HTTP door, with no client library in between: each door gave the
    slot back before its terminal bytes went out, so none of them is a 429."""
    statuses: list[int] = []
    async with aiohttp.ClientSession() as session:
        for number in range(300):
            door = gateway.url if number % 2 == 0 else gateway.sidecar.http_url
            body = {"model": MODEL, "input": "Say hello.", "stream": number % 4 >= 2}
            async with session.post(f"{door}/v1/responses", json=body) as answer:
                text = await answer.text()
                statuses.append(answer.status)
                if answer.status == 200:
                    assert ("response.completed" if body["stream"] else '"completed"') in text
    assert statuses.count(429) == 0 and set(statuses) == {200}


async def test_a_body_over_the_tenant_limit_is_a_413(gateway: Gateway, door_url: str) -> None:
    async with aiohttp.ClientSession() as session:
        big = {"model": MODEL, "input": "x" * BODY_LIMIT}
        async with session.post(f"{door_url}/v1/responses", json=big) as answer:
            assert answer.status == 413
            error = (await answer.json())["error"]
        assert error["code"] == "request_too_large" and f"({BODY_LIMIT} bytes)" in error["message"]
        assert error["type"] == "invalid_request_error"
        async with session.post(f"{door_url}/v1/responses", json={"model": MODEL, "input": "x" * 1000}) as answer:
            assert answer.status == 200


# --- several tenants (auth: header, HTTP door) -------------------------------------------------------------------


@pytest.fixture(scope="module")
async def tenants(fake_upstream: str, tmp_path_factory: pytest.TempPathFactory) -> AsyncIterator[str]:
    directory = tmp_path_factory.mktemp("tenant-limits")
    config = directory / "bridge.yaml"
    config.write_text(yaml.safe_dump({
        "auth": "header", "tenant_max_concurrent_requests": 1,
        "tenants": {"wide": {"max_concurrent_requests": 2}, "tiny": {"max_request_bytes": 500},
                    "sockets": {"max_concurrent_requests": 10, "max_websocket_connections": 2}}}))
    process, http_port, _ = start_sidecar(str(directory), fake_upstream, "--config", str(config), extproc=False)
    url = f"http://127.0.0.1:{http_port}"
    try:
        # every route, /health too, wants the tenant header in this mode
        await wait_http(f"{url}/health", process=process, headers={"x-tenant-id": "probe"})
        yield url
    finally:
        process.stop()


async def test_one_tenant_at_its_limit_does_not_limit_another(tenants: str) -> None:
    async with sdk(tenants, **{"x-tenant-id": "a"}) as a, sdk(tenants, **{"x-tenant-id": "b"}) as b, \
            sdk(tenants, **{"x-tenant-id": "wide"}) as wide:
        held = await hold(a)
        try:
            await refused(a)
            assert (await b.responses.create(model=MODEL, input="mine")).status == "completed"
            streams = [await hold(wide), await hold(wide)]  # its own limit is 2
            try:
                await refused(wide)
            finally:
                for stream in streams:
                    await stream.close()
        finally:
            await held.close()
        assert await admitted_again(a)


async def test_a_tenants_own_body_limit(tenants: str) -> None:
    body = {"model": MODEL, "input": "y" * 600}
    async with aiohttp.ClientSession() as session:
        async with session.post(f"{tenants}/v1/responses", json=body, headers={"x-tenant-id": "tiny"}) as answer:
            assert answer.status == 413
            assert "(500 bytes)" in (await answer.json())["error"]["message"]
        async with session.post(f"{tenants}/v1/responses", json=body, headers={"x-tenant-id": "a"}) as answer:
            assert answer.status == 200


async def test_probes_and_metrics_are_never_refused(tenants: str) -> None:
    async with sdk(tenants, **{"x-tenant-id": "a"}) as a, aiohttp.ClientSession() as session:
        held = await hold(a)
        try:
            for path in ("/health", "/health/ready", "/metrics"):
                async with session.get(f"{tenants}{path}", headers={"x-tenant-id": "a"}) as answer:
                    assert answer.status == 200, path
            await refused(a)  # a request over the limit, so the counter has its series however the tests run
            async with session.get(f"{tenants}/metrics", headers={"x-tenant-id": "a"}) as answer:
                text = await answer.text()
            assert 'responses_bridge_tenant_limited_total{limit="concurrency"}' in text
        finally:
            await held.close()
        assert await admitted_again(a)  # the held stream's slot is back before the next test counts on it



async def test_a_websocket_holds_a_slot_while_open_and_its_messages_have_the_tenants_body_limit(
        tenants: str) -> None:
    async with aiohttp.ClientSession() as session, sdk(tenants, **{"x-tenant-id": "a"}) as a:
        # a stream another test closed may still be unwinding on the server: the tenant's one slot is free first
        assert await admitted_again(a)
        async with session.ws_connect(f"{tenants}/v1/responses", headers={"x-tenant-id": "a"}) as socket:
            await socket.send_json({"type": "response.create", "model": MODEL, "input": "over the socket"})
            async for message in socket:
                if '"response.completed"' in message.data:
                    break
            await refused(a)  # the open connection is the tenant's one request in flight
        assert await admitted_again(a)
        async with session.ws_connect(f"{tenants}/v1/responses", headers={"x-tenant-id": "tiny"}) as socket:
            await socket.send_json({"type": "response.create", "model": MODEL, "input": "z" * 600})
            message = await socket.receive()
            assert message.type == aiohttp.WSMsgType.CLOSE and message.data == aiohttp.WSCloseCode.MESSAGE_TOO_BIG


async def test_a_websocket_connection_past_the_tenants_limit_is_refused_before_the_upgrade(tenants: str) -> None:
    """Its own limit is 2 (and 10 requests, so the connection limit is the one met): a third socket gets the
    OpenAI-shaped 429 with Retry-After instead of the upgrade, which the openai SDK's ``responses.connect``
    reports as the handshake's status; another tenant still connects, and a closed socket frees its place."""
    invalid_status = pytest.importorskip("websockets.exceptions").InvalidStatus
    url = f"{tenants}/v1/responses"
    async with aiohttp.ClientSession() as session, sdk(tenants, **{"x-tenant-id": "sockets"}) as client:
        open_ = [await session.ws_connect(url, headers={"x-tenant-id": "sockets"}) for _ in range(2)]
        try:
            with pytest.raises(invalid_status) as info:
                async with client.responses.connect():
                    pass
            answer = info.value.response
            assert answer.status_code == 429 and answer.headers["Retry-After"] == "1"
            error = json.loads(answer.body)["error"]
            assert error == {"message": error["message"], "type": "connections", "param": None,
                             "code": "rate_limit_exceeded"}
            assert "2 open at once" in error["message"] and "WebSocket" in error["message"]
            async with session.ws_connect(url, headers={"x-tenant-id": "b"}) as other:  # not this tenant's limit
                await other.send_json({"type": "response.create", "model": MODEL, "input": "still mine"})
                async for message in other:
                    if '"response.completed"' in message.data:
                        break
            for open_socket in open_[1:]:  # the open sockets still work
                await open_socket.send_json({"type": "response.create", "model": MODEL, "input": "open"})
                assert '"response.created"' in (await open_socket.receive(timeout=30)).data
        finally:
            await open_.pop(0).close()
        try:
            for _ in range(300):  # the closed socket's place comes back once its handler has ended
                try:
                    open_.append(await session.ws_connect(url, headers={"x-tenant-id": "sockets"}))
                    break
                except aiohttp.WSServerHandshakeError as refused_again:
                    assert refused_again.status == 429
                    await asyncio.sleep(0.05)
            assert len(open_) == 2
        finally:
            for open_socket in open_:
                await open_socket.close()
