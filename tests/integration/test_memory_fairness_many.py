"""The memory budget against several attacking tenants at once, end to end (fairness/share.py,
services/tenancy/memory_budget.py): a real sidecar (``auth: none``: callers told apart by their key) with a 256 MiB
budget, behind a real Envoy.

Two, then three attackers each hold as many legal requests with a slow answer (a stream the fake upstream stalls)
as the budget lets them, 31.9 MiB of the budget each (17 steps of the HTTP door's reading). With a fixed share of a
half, two of them held 255 of the 256 MiB and every request of another caller was refused (503). The rule after it
took an attacker's stream back for each of the victim's requests (its work thrown away). Now nothing in flight is
ended for another's share (fairness/share.py): the victim's request waits in the budget's queue, and the room an
attacker's stream gives back as it ends (here: its client goes away) goes to the victim first — one after another
and then together, all answered, and every other attacker stream still held — through the HTTP door and through
Envoy (the ext_proc door's body phase).
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import aiohttp
import openai
import orjson
import pytest

from responses_bridge.fairness.memory_charge import BODY_BYTE_COST
from responses_bridge.services.tenancy.memory_budget import STEP_COST
from tests.support.envoy import have_envoy
from tests.support.gateway import Gateway, running_gateway
from tests.support.sdk import async_sdk

pytestmark = pytest.mark.store_free  # its subject is the memory budget: the sidecar keeps its own SQLite file

MODEL = "fake-model"
MiB = 1 << 20
BUDGET = 256 * MiB
HOLD_BYTES = 17 * STEP_COST // BODY_BYTE_COST  # a body of 17 steps' cost: 31.875 MiB of the budget (and 1,000 bytes
# for its one JSON object), four fill a share but 0.5 MiB
TRIES = 5  # streams each attacker tries to hold (the fifth never fits)
VICTIM = "y" * 400_000  # 1.2 MiB of the budget through either door: more than the old shares left


def hold_body() -> bytes:
    """A legal streamed request of exactly :data:`HOLD_BYTES` whose answer the fake upstream stalls."""
    body = {"model": MODEL, "input": "hold this [stall_after=1:120000] ", "stream": True}
    pad = HOLD_BYTES - len(orjson.dumps(body))
    body["input"] = str(body["input"]) + "x" * pad
    encoded = orjson.dumps(body)
    assert len(encoded) == HOLD_BYTES
    return encoded


@pytest.fixture(scope="module")
async def stack(fake_upstream: str, tmp_path_factory: pytest.TempPathFactory) -> AsyncIterator[Gateway]:
    if not have_envoy():
        pytest.skip("envoy binary not available")
    env = {"RESPONSES_BRIDGE_MEMORY_BUDGET_BYTES": str(BUDGET)}
    async with running_gateway(str(tmp_path_factory.mktemp("fairness-many")), fake_upstream, env=env,
                               own_sqlite=True) as gateway:
        yield gateway


def sdk(base: str, key: str) -> openai.AsyncOpenAI:
    return async_sdk(base_url=f"{base}/v1", api_key=key, max_retries=0, timeout=60)



async def hold_all_it_may(session: aiohttp.ClientSession, base: str, key: str,
                          streams: list[aiohttp.ClientResponse]) -> list[str]:
    """An attacker's streams held open (each once its first text delta is in) until the budget refuses one; the
    codes of its refusals."""
    refusals, body = [], hold_body()
    for _ in range(TRIES):
        response = await session.post(f"{base}/v1/responses", data=body, headers={
            "Authorization": f"Bearer {key}", "Content-Type": "application/json"})
        if response.status != 200:
            answer = await response.json()
            response.release()
            assert response.status == 503 and response.headers.get("retry-after") == "1", answer
            refusals.append(str(answer["error"]["code"]))
            continue
        streams.append(response)
        async for line in response.content:
            if b"response.output_text.delta" in line:
                break
    return refusals


@pytest.mark.parametrize("door", ["http", "envoy"])
@pytest.mark.parametrize("attackers", [2, 3])
async def test_another_caller_is_answered_as_alone_beside_two_and_three_attackers(
        stack: Gateway, door: str, attackers: int) -> None:
    base = stack.door_url(door)
    streams: list[aiohttp.ClientResponse] = []
    async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=120)) as session, \
            sdk(base, "sk-victim") as victim:
        try:
            refusals = [await hold_all_it_may(session, base, f"sk-attacker-{at}", streams) for at in range(attackers)]
            assert len(streams) >= attackers + 2, "the attackers held less than the attack needs"
            # refused for its own share, or (the last, under its share) for a budget full of work it may not take
            # back without leaving another under what it would then hold
            assert all(refused and set(refused) <= {"memory_share_exceeded", "server_overloaded"}
                       for refused in refusals), refusals
            assert set(refusals[0]) == {"memory_share_exceeded"}, refusals
            assert await stack.held_bytes() >= BUDGET * 2 // 3  # 191 MiB by two, 223 MiB by three
            held = len(streams)
            answers = []
            for at in range(3):  # each waits; an attacker's stream ends (its client gone): the room is the victim's
                waiting = asyncio.create_task(victim.responses.create(model=MODEL, input=f"victim {at} {VICTIM}"))
                await asyncio.sleep(0.3)
                streams.pop().close()
                answers.append(await waiting)
            answers += [await victim.responses.create(model=MODEL, input=f"again {at} {VICTIM}") for at in range(3)]
            together = await asyncio.gather(*(victim.responses.create(model=MODEL, input=f"together {at} {VICTIM}")
                                              for at in range(3)))
            # before: an attacker's stream was also taken back for each of the victim's requests
            assert len(streams) == held - 3 and await stack.held_bytes() >= len(streams) * HOLD_BYTES * BODY_BYTE_COST
        finally:
            for stream in streams:
                stream.close()
    assert [answer.status for answer in [*answers, *together]] == ["completed"] * 9

    async def given_back() -> bool:
        return await stack.held_bytes() == 0
    for _ in range(300):
        if await given_back():
            break
        await asyncio.sleep(0.1)
    assert await given_back(), "the attackers' budget never came back"
