"""The process's memory budget for requests in flight, end to end (services/tenancy/memory_budget.py): a real sidecar
whose budget (``RESPONSES_BRIDGE_MEMORY_BUDGET_BYTES``, 3 MiB) one large request fills, behind a real Envoy. While that
request's stream is held open, a request through either door waits its two seconds and gets a 503
``server_overloaded`` in the OpenAI shape with ``Retry-After`` (the SDK raises ``InternalServerError`` and would
retry it), and so does a WebSocket turn; once the held stream ends, the budget comes back and requests are served.
The budget here has no per-caller share (``RESPONSES_BRIDGE_MEMORY_BUDGET_SHARE=1``), so that one request can fill
it; the share: tests/integration/test_memory_fairness.py.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from typing import Any

import aiohttp
import openai
import pytest

from responses_bridge.envoy_config import render_bootstrap
from tests.support.bridge import Sidecar, running_sidecar
from tests.support.envoy import free_port, have_envoy, start_envoy
from tests.support.sdk import async_sdk
from tests.support.streams import held_stream

pytestmark = pytest.mark.store_free  # its subject is the memory budget: the sidecar keeps its own SQLite file

MODEL = "fake-model"
BUDGET = 3 << 20
LARGE = "hold this [stall_after=1:120000] " + "x" * (1200 << 10)  # 1.2 MiB: 3 times that is past the budget


@pytest.fixture(scope="module")
async def stack(fake_upstream: str, tmp_path_factory: pytest.TempPathFactory) -> AsyncIterator[tuple[str, Sidecar]]:
    if not have_envoy():
        pytest.skip("envoy binary not available")
    listen_port = free_port()
    async with running_sidecar(str(tmp_path_factory.mktemp("memory")), fake_upstream, "--upstream-via",
                               f"http://127.0.0.1:{listen_port}/v1",
                               env={"RESPONSES_BRIDGE_MEMORY_BUDGET_BYTES": str(BUDGET),
                                    "RESPONSES_BRIDGE_MEMORY_BUDGET_SHARE": "1"}, own_sqlite=True) as sidecar:
        envoy = await start_envoy(render_bootstrap(
            listen_port=listen_port, extproc_port=sidecar.extproc_port,
            http_port=int(sidecar.http_url.rsplit(":", 1)[1]), upstream=fake_upstream, admin_port=0))
        try:
            yield f"http://127.0.0.1:{listen_port}", sidecar
        finally:
            envoy.stop()


@pytest.fixture(params=["http", "envoy"])
def door_url(request: pytest.FixtureRequest, stack: tuple[str, Sidecar]) -> str:
    return stack[1].http_url if request.param == "http" else stack[0]


def sdk(base: str) -> openai.AsyncOpenAI:
    return async_sdk(base_url=f"{base}/v1", api_key="sk-client", max_retries=0, timeout=60)


async def hold(client: openai.AsyncOpenAI) -> Any:
    """A large streamed response left open: it holds the whole budget while its upstream stalls."""
    return await held_stream(client, MODEL, LARGE)


async def served_again(client: openai.AsyncOpenAI) -> bool:
    """The budget came back: a request is answered (bounded polling of a condition, not a timing check)."""
    for _ in range(100):
        try:
            return (await client.responses.create(model=MODEL, input="again")).status == "completed"
        except openai.InternalServerError:
            await asyncio.sleep(0.1)
    return False


async def test_a_full_budget_answers_503_with_retry_after_on_both_doors(stack: tuple[str, Sidecar],
                                                                        door_url: str) -> None:
    envoy_url, sidecar = stack
    async with sdk(door_url) as client, sdk(envoy_url) as via_envoy, sdk(sidecar.http_url) as direct:
        stream = await hold(client)
        try:
            for other in (via_envoy, direct):
                with pytest.raises(openai.InternalServerError) as caught:
                    await other.responses.create(model=MODEL, input="one more")
                error = caught.value
                assert error.status_code == 503 and error.response.headers["retry-after"] == "1"
                assert isinstance(error.body, dict)
                assert error.body["code"] == "server_overloaded" and error.body["type"] == "server_error"
                assert "RESPONSES_BRIDGE_MEMORY_BUDGET_BYTES" in error.body["message"]
        finally:
            await stream.close()  # the client goes away: the held request gives its part back
        assert await served_again(client)


async def test_a_websocket_turn_past_the_budget_is_refused_and_the_socket_serves_on(
        stack: tuple[str, Sidecar]) -> None:
    _, sidecar = stack
    async with sdk(sidecar.http_url) as client, aiohttp.ClientSession(base_url=sidecar.http_url) as session, \
            session.ws_connect("/v1/responses", headers={"Authorization": "Bearer sk-client"}) as ws:
        # the same caller as the held stream (another caller would wait for room the same way: fairness/share.py)
        stream = await hold(client)
        try:
            await ws.send_str(json.dumps({"type": "response.create", "model": MODEL, "input": "queued"}))
            refused = json.loads((await ws.receive(timeout=60)).data)
            assert refused["type"] == "error" and refused["status"] == 503, refused
            assert refused["error"]["code"] == "server_overloaded"
        finally:
            await stream.close()
        assert await served_again(client)
        await ws.send_str(json.dumps({"type": "response.create", "model": MODEL, "input": "now"}))
        while (event := json.loads((await ws.receive(timeout=60)).data))["type"] != "response.completed":
            assert event["type"] != "error", event
