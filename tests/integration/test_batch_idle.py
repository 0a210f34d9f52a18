"""Batch lines give way to interactive work (fairness/idle_capacity.py), end to end: a real sidecar behind a real
Envoy, the openai SDK as client, the sidecar's ``/metrics`` read for what its gate sees.

The interactive count is what the rule stands on, so it is checked through both doors first: a request counts
while in flight (a stream held open by a stalled upstream) and not after; a background response until its run
ends; a WebSocket connection only while a turn of it runs, never while it sits open. Then the rule itself, with the
batch concurrency at 2: while an interactive request is in flight (through either door) a batch's lines wait and
none runs; the lines already in flight when it came finish; once it ends the batch runs to ``completed``, each line
answered.
"""

from __future__ import annotations

import asyncio
import io
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
CONCURRENCY = 2
SLOW = "slow line [header_delay=4000]"  # a line in flight for a while: the interactive request comes meanwhile


@pytest.fixture(scope="module")
async def gateway(fake_upstream: str, tmp_path_factory: pytest.TempPathFactory) -> AsyncIterator[Gateway]:
    async with running_gateway(str(tmp_path_factory.mktemp("batch-idle")), fake_upstream, own_sqlite=True,
                               env={"RESPONSES_BRIDGE_BATCH_CONCURRENCY": str(CONCURRENCY)}) as started:
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


async def start_batch(client: openai.AsyncOpenAI, inputs: list[str]) -> str:
    lines = b"".join(orjson.dumps({"custom_id": f"line-{at}", "method": "POST", "url": "/v1/responses",
                                   "body": {"model": MODEL, "input": text}}) + b"\n"
                     for at, text in enumerate(inputs))
    uploaded = await client.files.create(file=("lines.jsonl", io.BytesIO(lines)), purpose="batch")
    batch = await client.batches.create(input_file_id=uploaded.id, endpoint="/v1/responses", completion_window="24h")
    return batch.id


async def until(condition: object, *args: object) -> bool:
    """``await condition(*args)`` becomes true (polled, bounded)."""
    for _ in range(1200):
        if await condition(*args):  # type: ignore[operator]
            return True
        await asyncio.sleep(0.05)
    return False


@pytest.mark.parametrize("door", ["http", "envoy"])
async def test_lines_wait_while_an_interactive_request_runs_and_those_in_flight_finish(gateway: Gateway,
                                                                                        door: str) -> None:
    assert await interactive_becomes(gateway, 0)
    async with sdk(gateway.door_url(door)) as person, sdk(gateway.door_url(door), "sk-batch") as owner:
        inputs = [SLOW] * CONCURRENCY + [f"quick line {at}" for at in range(6)]
        batch_id = await start_batch(owner, inputs)

        async def running(count: int) -> bool:
            return await gauge(gateway, "batch_lines_running") == count

        assert await until(running, CONCURRENCY)  # an idle bridge: the slow lines start at once, side by side
        stream = await held_stream(person, MODEL, HELD)  # an interactive request comes while they run
        try:
            async def waiting() -> bool:
                return await gauge(gateway, "batch_lines_waiting") == 1 and await running(0)

            assert await until(waiting)  # the lines in flight finished; the next waits for the request
            batch = await owner.batches.retrieve(batch_id)
            assert batch.status == "in_progress"
            assert batch.request_counts is not None and batch.request_counts.completed == CONCURRENCY
            assert await gauge(gateway, "batch_lines_waiting") == 1  # still held back: nothing else started
            assert (await owner.batches.retrieve(batch_id)).request_counts.completed == CONCURRENCY  # type: ignore
        finally:
            await stream.close()

        async def done() -> bool:
            return (await owner.batches.retrieve(batch_id)).status == "completed"

        assert await until(done)  # the request ended: the rest ran
        batch = await owner.batches.retrieve(batch_id)
        assert batch.request_counts is not None
        assert (batch.request_counts.completed, batch.request_counts.failed) == (len(inputs), 0)
        assert batch.output_file_id is not None
        output = (await owner.files.content(batch.output_file_id)).content
        answered = [orjson.loads(line) for line in output.splitlines()]
        assert sorted(line["custom_id"] for line in answered) == sorted(f"line-{at}" for at in range(len(inputs)))
        assert {line["response"]["status_code"] for line in answered} == {200}


async def test_a_batch_cancelled_while_its_line_waits_gives_its_place_back(gateway: Gateway) -> None:
    """The line waiting for idle capacity is given its place after the cancel, sees it, and gives the place back:
    the gate counts no line running once the batch is ``cancelled`` (a place kept would hold later batches back)."""
    assert await interactive_becomes(gateway, 0)
    async with sdk(gateway.sidecar.http_url) as person, sdk(gateway.sidecar.http_url, "sk-batch") as owner:
        stream = await held_stream(person, MODEL, HELD)
        try:
            batch_id = await start_batch(owner, [f"line {at}" for at in range(4)])

            async def waiting() -> bool:
                return await gauge(gateway, "batch_lines_waiting") == 1

            assert await until(waiting)
            await owner.batches.cancel(batch_id)
        finally:
            await stream.close()

        async def cancelled() -> bool:
            return (await owner.batches.retrieve(batch_id)).status == "cancelled"

        assert await until(cancelled)
        assert await gauge(gateway, "batch_lines_running") == 0
        assert await gauge(gateway, "batch_lines_waiting") == 0
