"""Batch lines give way to interactive work (fairness/idle_capacity.py), end to end: a real sidecar behind a real
Envoy, the openai SDK as client, the sidecar's ``/metrics`` read for what its gate sees.

The interactive count is what the rule stands on, so it is checked through both doors first: a request counts
while in flight (a stream held open by a stalled upstream) and not after; a background response until its run
ends; a WebSocket connection only while a turn of it runs, never while it sits open.
"""

from __future__ import annotations

import asyncio
import re
from collections.abc import AsyncIterator

import aiohttp
import openai
import orjson
import pytest

from tests.support.gateway import Gateway, running_gateway
from tests.support.sdk import async_sdk
from tests.support.streams import held_stream

pytestmark = pytest.mark.store_free

MODEL = "fake-model"
HELD = "hold this [stall_after=1:120000]"  # the upstream stalls after one chunk: the stream stays open


@pytest.fixture(scope="module")
async def gateway(fake_upstream: str, tmp_path_factory: pytest.TempPathFactory) -> AsyncIterator[Gateway]:
    async with running_gateway(str(tmp_path_factory.mktemp("batch-idle")), fake_upstream,
                               own_sqlite=True) as started:
        yield started


def sdk(base: str, key: str = "sk-interactive") -> openai.AsyncOpenAI:
    return async_sdk(base_url=f"{base}/v1", api_key=key, max_retries=0, timeout=60)


async def gauge(gateway: Gateway, name: str) -> float:
    """One of the sidecar's gauges now (its ``/metrics``)."""
    async with aiohttp.ClientSession() as session, session.get(f"{gateway.sidecar.http_url}/metrics") as answer:
        text = await answer.text()
    found = re.search(rf"^responses_bridge_{name}(?:\{{[^}}]*\}})? (\S+)$", text, re.M)
    assert found, f"no {name} in /metrics"
    return float(found.group(1))


async def interactive_becomes(gateway: Gateway, count: int) -> bool:
    """The interactive count reaches ``count`` (a condition polled, bounded: no timing asserted)."""
    for _ in range(600):
        if await gauge(gateway, "interactive_requests_in_flight") == count:
            return True
        await asyncio.sleep(0.05)
    return False


@pytest.mark.parametrize("door", ["http", "envoy"])
async def test_a_request_counts_as_interactive_while_in_flight_through_either_door(gateway: Gateway,
                                                                                   door: str) -> None:
    assert await interactive_becomes(gateway, 0)
    async with sdk(gateway.door_url(door)) as client:
        stream = await held_stream(client, MODEL, HELD)
        try:
            assert await gauge(gateway, "interactive_requests_in_flight") == 1  # once, through either door
        finally:
            await stream.close()  # the client goes away mid-stream
        assert await interactive_becomes(gateway, 0)
        answered = await client.responses.create(model=MODEL, input="Say hello.")
        assert answered.status == "completed"
    assert await gauge(gateway, "interactive_requests_in_flight") == 0  # answered: no longer counted


@pytest.mark.parametrize("door", ["http", "envoy"])
async def test_a_background_response_counts_until_its_run_ends(gateway: Gateway, door: str) -> None:
    assert await interactive_becomes(gateway, 0)
    async with sdk(gateway.door_url(door)) as client:
        queued = await client.responses.create(model=MODEL, input=HELD, background=True)
        assert await interactive_becomes(gateway, 1)  # its request was answered; its run goes on, counted
        await client.responses.cancel(queued.id)
        assert await interactive_becomes(gateway, 0)


async def test_a_websocket_counts_only_while_a_turn_runs(gateway: Gateway) -> None:
    assert await interactive_becomes(gateway, 0)
    url = f"{gateway.sidecar.http_url}/v1/responses"
    async with aiohttp.ClientSession() as session, session.ws_connect(url) as socket:
        assert await gauge(gateway, "interactive_requests_in_flight") == 0  # open and idle: no work in flight
        await socket.send_str(orjson.dumps({"type": "response.create", "model": MODEL, "input": HELD}).decode())
        async for message in socket:
            if orjson.loads(message.data).get("type") == "response.output_text.delta":
                break
        assert await gauge(gateway, "interactive_requests_in_flight") == 1  # its turn runs
        await socket.close()  # the turn is abandoned with its connection
    assert await interactive_becomes(gateway, 0)
