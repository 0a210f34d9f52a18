"""Real memory blamed on its holder, end to end (fairness/memory_charge.py, services/tenancy/memory_watch.py): a real
sidecar with real tenants (``RESPONSES_BRIDGE_AUTH=keys``: attacker, victim and bystander each a key made with the CLI),
a 20 MiB memory budget and the memory backstop reading its RSS five times a second, behind a real Envoy.

The issue's scene, scaled down: the attacker stores one response of 10,000 tiny input items, then continues it
(``previous_response_id``) with twelve tiny streamed requests the fake upstream stalls, while the victim's 200 KB
request is in flight. Each of those loads 1.4 MB of stored items (8.9 MiB of RSS), and was charged its 60-byte
body only: RSS passed the backstop's high watermark, whose first act ended the victim's request (the largest
charged) and whose refusals answered the bystander 503. Charged as it is loaded, the first chained request puts
the attacker past its share, so the rest wait and are refused by it (``memory_share_exceeded``); the victim's
request completes and the bystander is served — through the HTTP door and through the ext_proc door. The control:
the same twelve requests without ``previous_response_id`` are all served beside the victim and the bystander.
A WebSocket turn continuing the chain holds its history's charge while it runs (its control: its frame's alone),
and a server tool's output is charged to its request while the tool loop goes on (its control: a tiny output).

The backstop's own choice, end to end: with a budget large enough for all twelve chained requests and a high
watermark set over a fresh sidecar's RSS, their real memory passes it, and the backstop ends the attacker's
requests, never the victim's, before the bystander is served again (its control: the requests without history
never pass it). Its choice in units: tests/unit/test_memory_charge.py.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import aiohttp
import openai
import orjson
import pytest

from responses_bridge.fairness.memory_charge import COST_PER_TOOL_OUTPUT_BYTE, loaded_cost
from tests.support.bridge import budget_held_bytes
from tests.support.keyed_stack import Stack, keyed_stack
from tests.support.keyed_stack import store_history as stored_history
from tests.support.mcp_server import MCPTestServer
from tests.support.memory import status_kb
from tests.support.sdk import async_sdk

pytestmark = pytest.mark.store_proven(
    "tests/unit/test_memory_charge.py", "tests/integration/test_chains.py",
    reason="its PostgreSQL path is a chain's items loaded and charged: test_memory_charge asserts every load of stored "
           "items is charged on both stores, test_chains loads chains on PostgreSQL (scripts/pg-coverage: no line of "
           "store/postgres that only this module covers)")
MODEL = "fake-model"
MiB = 1 << 20
BUDGET = 32 * MiB  # a share of 16 MiB: one chained request (13.3 MB reserved) fits in it, a second does not
HISTORY_ITEMS = 10_000  # stored: 1.42 MB of rows, 8.9 MiB of RSS for each request continuing them
ATTACKS = 12
VICTIM = "victim [stall_after=1:5000] " + "v" * 200_000  # 6 MB of the budget, answered after 5 s
BYSTANDER_REQUESTS = 5


# each door with the attack, its control through one: what a control shows (nothing refused or ended without the
# history) does not depend on the door, and each case is a fresh sidecar and Envoy of its own
DOORS_CHAINED = pytest.mark.parametrize(("door", "chained"), [("http", True), ("http", False), ("envoy", True)],
                                        ids=["http-chained", "http-control", "envoy-chained"])


@asynccontextmanager
async def started(fake_upstream: str, tmp_path: Path, **env: str) -> AsyncIterator[Stack]:
    """A sidecar with real tenants and its Envoy; ``env``: settings besides the module's."""
    async with keyed_stack(fake_upstream, tmp_path, ("attacker", "victim", "bystander"), env={
            "RESPONSES_BRIDGE_MEMORY_BUDGET_BYTES": str(BUDGET), "RESPONSES_BRIDGE_MEMORY_WATCH_INTERVAL": "0.2",
            "RESPONSES_BRIDGE_MCP_ALLOWED_HOSTS": "127.0.0.1", **env}) as stack:
        yield stack


@pytest.fixture
async def stack(fake_upstream: str, tmp_path: Path) -> AsyncIterator[Stack]:
    """A fresh sidecar a test: what one test's attack left in the heap never counts in the next one's RSS."""
    async with started(fake_upstream, tmp_path) as made:
        yield made


def sdk(stack: Stack, door: str, tenant: str) -> openai.AsyncOpenAI:
    return async_sdk(base_url=f"{stack.url(door)}/v1", api_key=stack.keys[tenant], max_retries=0, timeout=60)


async def held(client: openai.AsyncOpenAI, text: str, previous: str | None) -> Any:
    """A streamed request, once its first text delta is in (its history loaded, its upstream call stalled)."""
    extra = {"previous_response_id": previous} if previous is not None else {}
    stream = await client.responses.create(model=MODEL, input=text, stream=True, **extra)
    async for event in stream:
        if event.type == "response.output_text.delta":
            return stream
    raise AssertionError("the held stream ended early")


async def attack(client: openai.AsyncOpenAI, index: int, previous: str | None) -> Any:
    """One of the attacker's requests: its held stream, or the code of its refusal, or how it ended before its
    first text (the backstop ended it)."""
    extra = {"previous_response_id": previous} if previous is not None else {}
    try:
        stream = await client.responses.create(model=MODEL, input=f"attack {index} [stall_after=1:120000]",
                                               stream=True, **extra)
        async for event in stream:
            if event.type == "response.output_text.delta":
                return stream
            if event.type == "response.failed":
                assert event.response.error is not None
                return f"failed:{event.response.error.code}"
    except openai.InternalServerError as error:
        assert error.status_code == 503 and isinstance(error.body, dict), error
        return str(error.body["code"])
    except openai.APIConnectionError:  # ended by the backstop while its answer's head was on its way (Envoy)
        return "cut"
    return "ended"


async def store_history(stack: Stack, door: str) -> str:
    """The attacker's stored response of :data:`HISTORY_ITEMS` tiny items (sent as bytes: the SDK takes seconds to
    walk a list this long)."""
    return await stored_history(stack, door, HISTORY_ITEMS, model=MODEL)


async def last_event(stream: Any) -> str:
    kind = ""
    async for event in stream:
        kind = event.type
    return kind


@DOORS_CHAINED
async def test_the_attackers_chained_history_is_its_own_the_victim_completes_and_the_bystander_is_served(
        stack: Stack, door: str, chained: bool) -> None:
    streams: list[Any] = []
    async with sdk(stack, door, "attacker") as attacker, sdk(stack, door, "victim") as victim, \
            sdk(stack, door, "bystander") as bystander:
        previous = await store_history(stack, door) if chained else None
        try:
            victims = await held(victim, VICTIM, None)
            streams.append(victims)
            first = await attack(attacker, 0, previous)  # held, its history loaded, before the others come
            rest = await asyncio.gather(*(attack(attacker, index, previous) for index in range(1, ATTACKS)))
            outcomes = [first, *rest]
            streams += [outcome for outcome in outcomes if not isinstance(outcome, str)]
            refusals = [outcome for outcome in outcomes if isinstance(outcome, str)]
            served = [(await bystander.responses.create(model=MODEL, input=f"small {index}")).status
                      for index in range(BYSTANDER_REQUESTS)]
            ended = await last_event(victims)
        finally:
            for stream in streams:
                await stream.close()
    assert ended == "response.completed"
    assert served == ["completed"] * BYSTANDER_REQUESTS
    if chained:  # its room holds its first chained request's history: the rest refused before loading theirs (by
        # its share, or with the budget full of it when it is not yet at its share)
        assert not isinstance(first, str), first
        assert refusals and set(refusals) <= {"memory_share_exceeded", "server_overloaded"}, refusals
    else:
        assert refusals == []


@pytest.mark.parametrize("chained", [True, False], ids=["chained", "control"])
async def test_a_websocket_turn_continuing_a_chain_holds_its_historys_charge_while_it_runs(
        stack: Stack, chained: bool) -> None:
    """A WebSocket turn is charged where it runs (its lane's task): the chained turn's holding, read from the
    budget's gauge while the upstream stalls, is its history's cost, the control's its frame's alone."""
    previous = await store_history(stack, "http") if chained else None
    frame = orjson.dumps({"type": "response.create", "model": MODEL, "input": "hold [stall_after=1:120000]",
                          **({"previous_response_id": previous} if previous else {})})
    async with aiohttp.ClientSession() as session, session.ws_connect(
            f"{stack.sidecar.http_url}/v1/responses",
            headers={"Authorization": f"Bearer {stack.keys['attacker']}"}) as ws:
        await ws.send_bytes(frame)
        while True:  # its history loaded and translated, its upstream call stalled
            event = orjson.loads((await ws.receive(timeout=60)).data)
            assert event["type"] != "error", event
            if event["type"] == "response.output_text.delta":
                break
        held = await budget_held_bytes(stack.sidecar.http_url)
    history = HISTORY_ITEMS * 140  # at least the stored rows of 10,000 items (1.42 MB)
    if chained:
        assert held >= loaded_cost(history, HISTORY_ITEMS), held
    else:
        assert held <= len(frame) * 30 + 64 * 1024, held


TOOL_OUTPUT = 200_000  # characters of the MCP tool's answer (the bridge reads at most 256 KiB of one)


@pytest.mark.parametrize(("door", "size"), [("http", TOOL_OUTPUT), ("http", 10), ("envoy", TOOL_OUTPUT)],
                         ids=["http-large", "http-control", "envoy-large"])
async def test_a_tools_output_is_charged_to_the_request_while_its_loop_goes_on(
        stack: Stack, mcp: MCPTestServer, door: str, size: int) -> None:
    """A server tool's output is held from its call to the request's end (in the output, in every later turn's
    upstream body): charged to the request as it comes. The request calls ``big`` (``size`` characters), then
    ``slow``, while which the budget's gauge is read: the large answer's charge is held, the control's is not."""
    tool = {"type": "mcp", "server_label": "tools", "server_url": mcp.json_url, "require_approval": "never",
            "allowed_tools": ["big", "slow"]}
    body = orjson.dumps({"model": MODEL, "stream": True, "tools": [tool], "input": (
        f'call tools__big [args={{"size": {size}, "seconds": 60}}] [then=tools__slow]')})
    async with aiohttp.ClientSession() as session, session.post(f"{stack.url(door)}/v1/responses", data=body, headers={
            "Authorization": f"Bearer {stack.keys['attacker']}", "Content-Type": "application/json"}) as answer:
        assert answer.status == 200, await answer.text()
        calls = 0
        async for line in answer.content:  # until the second call (slow) is under way: big's output is in
            if line.startswith(b"data: ") and b'"response.mcp_call.in_progress"' in line:
                calls += 1
                if calls == 2:
                    break
        assert calls == 2
        held = await budget_held_bytes(stack.sidecar.http_url)
    if size == TOOL_OUTPUT:
        assert held >= TOOL_OUTPUT * COST_PER_TOOL_OUTPUT_BYTE, held
    else:
        assert held < TOOL_OUTPUT, held


PREEMPTED_BY_BACKSTOP = 'responses_bridge_memory_budget_preempted_total{reason="memory_high_watermark"}'
LOW_OVER_START = 75 * MiB
"""The low watermark over the fresh sidecar's RSS: the allocator keeps part of what the attacker's ended requests
freed (RSS stood 61-69 MiB over its start once they had all ended, in full runs on a busy machine), and with the
low watermark at 60 MiB the backstop went on to end the victim for memory that was no longer any request's (seen
twice in three runs). The rule under test is the order (by holder), not the allocator's return of memory."""
LARGE_BUDGET = 512 * MiB  # the attacker's twelve chained requests (137 MB charged) all fit in its share
VICTIM_LARGE = "victim [stall_after=1:8000] " + "v" * 300_000  # charged 9 MB, answered after 8 s


async def metric(stack: Stack, name: str) -> float:
    async with aiohttp.ClientSession() as session, session.get(f"{stack.sidecar.http_url}/metrics") as answer:
        text = await answer.text()
    return sum(float(line.rsplit(" ", 1)[1]) for line in text.splitlines()
               if line.startswith(name) and not line.startswith("#"))


@DOORS_CHAINED
async def test_past_the_watermark_the_backstop_ends_the_attackers_requests_never_the_victims(
        fake_upstream: str, tmp_path: Path, door: str, chained: bool) -> None:
    """The backstop's choice, end to end: a budget large enough for all twelve chained requests (each charged its
    history, 11.4 MB; 137 MB together) beside the victim's 300 KB request (9 MB), and a high watermark 80 MiB over
    a fresh sidecar's RSS (read from one started the same way first; the low one ``LOW_OVER_START`` over it). The
    chained requests' real memory (8.9 MiB each) passes it; the backstop ends the attacker's requests (the holder
    charged most), never the victim's, and once under the low watermark the bystander is served. Before, its first act
    ended the victim's request, the largest charged. (With a 1 MB victim, 30 MB charged, the rule ends it once the
    attacker's requests left are charged less: seen when ten were ended and the RSS, lagging what was freed,
    stood a megabyte over the low watermark.)"""
    async with started(fake_upstream, tmp_path / "probe", RESPONSES_BRIDGE_MEMORY_BUDGET_BYTES=str(LARGE_BUDGET),
                       RESPONSES_BRIDGE_MEMORY_WATCH_INTERVAL="0") as probe:
        await asyncio.sleep(1)
        at_start = status_kb(probe.sidecar.process.pid, "VmRSS") * 1024
    streams: list[Any] = []
    async with started(fake_upstream, tmp_path / "sidecar", RESPONSES_BRIDGE_MEMORY_BUDGET_BYTES=str(LARGE_BUDGET),
                       RESPONSES_BRIDGE_MEMORY_HIGH_WATERMARK_BYTES=str(at_start + 80 * MiB),
                       RESPONSES_BRIDGE_MEMORY_LOW_WATERMARK_BYTES=str(at_start + LOW_OVER_START)) as stack, \
            sdk(stack, door, "attacker") as attacker, sdk(stack, door, "victim") as victim, \
            sdk(stack, door, "bystander") as bystander:
        previous = await store_history(stack, door) if chained else None
        try:
            victims = await held(victim, VICTIM_LARGE, None)
            streams.append(victims)
            outcomes = await asyncio.gather(*(attack(attacker, index, previous) for index in range(ATTACKS)))
            streams += [outcome for outcome in outcomes if not isinstance(outcome, str)]
            # the ones not held were refused or ended by the backstop (the budget has room for all twelve)
            ended = await last_event(victims)
            for _ in range(300):  # the backstop done: under its low watermark, or never past the high one
                if not await metric(stack, "responses_bridge_memory_backstop_active"):
                    break
                await asyncio.sleep(0.1)
            served = [(await bystander.responses.create(model=MODEL, input=f"small {index}")).status
                      for index in range(BYSTANDER_REQUESTS)]
            taken = await metric(stack, PREEMPTED_BY_BACKSTOP)
        finally:
            for stream in streams:
                await stream.close()
    assert ended == "response.completed"
    assert served == ["completed"] * BYSTANDER_REQUESTS
    assert bool(taken) == chained, taken  # the control's requests hold too little to pass the watermark
