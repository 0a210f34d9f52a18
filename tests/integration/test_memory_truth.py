"""Charges that tell the truth, before the memory is held (fairness/memory_charge.py,
services/tenancy/body_admission.py), end to end: a real sidecar with real tenants (``RESPONSES_BRIDGE_AUTH=keys``,
each tenant a key made with the CLI), the memory backstop reading its RSS, through the HTTP door and a real Envoy.

* **Large holders leave room.** A 1 GiB budget; two or three tenants each hold one valid ~18 MiB request (one long
  input string) that a slow model stalls; a third tenant's small requests are answered (at least 90 %). Charged a
  flat 30 times its bytes, each holder was charged 512 MiB (its share) for 54 MiB of RSS, and two filled the budget:
  0 of 5. The control: beside one holder.
* **History reserved before it is loaded.** The issue's chained-history attack, scaled to the test (a 48 MiB budget,
  a stored response of 10,000 tiny items, twelve tiny requests continuing it): each request's history is reserved
  from the store's row sizes before a row is read, so those past the attacker's room wait and are refused, never
  loaded; the sidecar's RSS stays within its start + 64 MiB + the budget, and a bystander's 30 small requests are
  all answered. The control: the same requests without ``previous_response_id``.
* **Refused naming its size.** The chained requests refused name the history they would load, its items and bytes;
  a history larger than what one caller may hold alone is a 400 ``history_too_large``
  naming the history's items and bytes, before it is loaded.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Sequence
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import aiohttp
import openai
import orjson
import pytest

from tests.support.keyed_stack import Stack, keyed_stack, store_history
from tests.support.memory import status_kb
from tests.support.sdk import async_sdk

pytestmark = pytest.mark.store_proven(
    "tests/unit/test_memory_charge.py",
    reason="its store path is a chain's history measured and reserved before it is loaded: test_memory_charge "
           "asserts it on SQLite and on PostgreSQL (scripts/pg-coverage: no line of store/postgres that only this "
           "module covers)")
MODEL = "fake-model"
MiB = 1 << 20
GiB = 1 << 30
HOLD = "[stall_after=1:120000]"
LARGE = 18 * MiB  # one long input string: ~54 MiB of RSS held
SMALL_REQUESTS = 10


@asynccontextmanager
async def started(fake_upstream: str, tmp_path: Path, tenants: Sequence[str], budget: int,
                  **env: str) -> AsyncIterator[Stack]:
    async with keyed_stack(fake_upstream, tmp_path, tenants, env={
            "RESPONSES_BRIDGE_MEMORY_BUDGET_BYTES": str(budget), "RESPONSES_BRIDGE_MEMORY_WATCH_INTERVAL": "0.2",
            **env}) as stack:
        yield stack


def sdk(stack: Stack, door: str, tenant: str) -> openai.AsyncOpenAI:
    return async_sdk(base_url=f"{stack.url(door)}/v1", api_key=stack.keys[tenant], max_retries=0, timeout=120)


async def held_stream(session: aiohttp.ClientSession, stack: Stack, door: str, tenant: str,
                      body: bytes) -> aiohttp.ClientResponse:
    """A streamed request once its first text is in (everything it holds is held; the model stalls)."""
    answer = await session.post(f"{stack.url(door)}/v1/responses", data=body, headers={
        "Authorization": f"Bearer {stack.keys[tenant]}", "Content-Type": "application/json"})
    assert answer.status == 200, (await answer.text())[:500]
    async for line in answer.content:
        if b"response.output_text.delta" in line:
            return answer
        assert b"response.failed" not in line, line[:500]
    raise AssertionError("the held stream ended early")


async def small_requests(client: openai.AsyncOpenAI, count: int) -> list[str]:
    """``count`` small requests one after another: each one's status, or its refusal's code."""
    outcomes = []
    for index in range(count):
        try:
            outcomes.append((await client.responses.create(model=MODEL, input=f"small {index}")).status or "")
        except openai.APIStatusError as error:
            outcomes.append(str(error.body.get("code") if isinstance(error.body, dict) else error.status_code))
    return outcomes


@pytest.mark.parametrize(("door", "holders"), [("http", 1), ("http", 2), ("http", 3), ("envoy", 2), ("envoy", 3)],
                         ids=["http-control", "http-two", "http-three", "envoy-two", "envoy-three"])
async def test_a_third_tenants_small_requests_are_served_beside_large_holders(
        fake_upstream: str, tmp_path: Path, door: str, holders: int) -> None:
    tenants = [f"holder{index}" for index in range(holders)]
    body = orjson.dumps({"model": MODEL, "stream": True, "input": f"{HOLD} " + "x" * LARGE})
    answers: list[aiohttp.ClientResponse] = []
    async with started(fake_upstream, tmp_path, [*tenants, "third"], GiB) as stack, \
            aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=300)) as session, \
            sdk(stack, door, "third") as third:
        try:
            answers = list(await asyncio.gather(*(held_stream(session, stack, door, tenant, body)
                                                  for tenant in tenants)))
            outcomes = await small_requests(third, SMALL_REQUESTS)
        finally:
            for answer in answers:
                answer.close()
    assert len(answers) == holders  # every holder held its request
    assert outcomes.count("completed") >= 0.9 * SMALL_REQUESTS, outcomes


HISTORY_ITEMS = 10_000  # stored: 1.42 MB of rows, ~12.7 MiB of RSS for each request continuing them
ATTACKS = 12
CHAIN_BUDGET = 48 * MiB  # a share of 24 MiB: the attacker's room holds one such history at a time
BYSTANDER_REQUESTS = 30


async def attack(client: openai.AsyncOpenAI, index: int, previous: str | None, said: list[str]) -> Any:
    """One of the attacker's requests: its held stream, or the code of its refusal (its message into ``said``)."""
    extra = {"previous_response_id": previous} if previous is not None else {}
    try:
        stream = await client.responses.create(model=MODEL, input=f"attack {index} {HOLD}", stream=True, **extra)
        async for event in stream:
            if event.type == "response.output_text.delta":
                return stream
            if event.type == "response.failed":
                assert event.response.error is not None
                return f"failed:{event.response.error.code}"
    except openai.APIStatusError as error:
        assert isinstance(error.body, dict), error
        said.append(str(error.body.get("message")))
        return str(error.body.get("code"))
    return "ended"


@pytest.mark.parametrize(("door", "chained"), [("http", True), ("http", False), ("envoy", True)],
                         ids=["http-chained", "http-control", "envoy-chained"])
async def test_a_chained_history_is_reserved_before_it_is_loaded_and_the_bystander_is_served(
        fake_upstream: str, tmp_path: Path, door: str, chained: bool) -> None:
    streams: list[Any] = []
    async with started(fake_upstream, tmp_path, ("attacker", "bystander"), CHAIN_BUDGET) as stack, \
            sdk(stack, door, "attacker") as attacker, sdk(stack, door, "bystander") as bystander:
        previous = await store_history(stack, door, HISTORY_ITEMS) if chained else None
        await asyncio.sleep(1)
        start = status_kb(stack.sidecar.process.pid, "VmRSS") * 1024
        peak = start
        sampling = True

        async def sample() -> None:
            nonlocal peak
            while sampling:
                peak = max(peak, status_kb(stack.sidecar.process.pid, "VmRSS") * 1024)
                await asyncio.sleep(0.02)

        sampler = asyncio.create_task(sample())
        try:
            said: list[str] = []
            outcomes = await asyncio.gather(*(attack(attacker, index, previous, said) for index in range(ATTACKS)))
            streams += [outcome for outcome in outcomes if not isinstance(outcome, str)]
            served = await small_requests(bystander, BYSTANDER_REQUESTS)
        finally:
            sampling = False
            await sampler
            for stream in streams:
                await stream.close()
    refusals = [outcome for outcome in outcomes if isinstance(outcome, str)]
    assert served == ["completed"] * BYSTANDER_REQUESTS, served
    assert peak <= start + 64 * MiB + CHAIN_BUDGET, (peak - start) / MiB
    if chained:  # one history at a time in the attacker's room: the rest waited and were refused, never loaded
        assert streams and refusals and set(refusals) <= {"memory_share_exceeded", "server_overloaded"}, refusals
        # those refused waiting for their history's room name it (others found the budget full for their body)
        assert any(f"previous_response_id '{previous}': {HISTORY_ITEMS + 1} items" in message for message in said), said
    else:
        assert refusals == [], refusals


@pytest.mark.parametrize("door", ["http", "envoy"])
async def test_a_history_past_what_a_caller_may_hold_is_refused_naming_its_size(
        fake_upstream: str, tmp_path: Path, door: str) -> None:
    async with started(fake_upstream, tmp_path, ("attacker", "bystander"), 16 * MiB) as stack, \
            sdk(stack, door, "attacker") as attacker:
        previous = await store_history(stack, door, HISTORY_ITEMS)  # ~12.7 MiB held: past a share of 8 MiB
        with pytest.raises(openai.BadRequestError) as refused:
            await attacker.responses.create(model=MODEL, input="more", previous_response_id=previous)
    error = refused.value.body
    assert isinstance(error, dict) and error["code"] == "history_too_large", error
    assert f"previous_response_id '{previous}'" in error["message"] and f"{HISTORY_ITEMS + 1} items" in error["message"]
    assert "MiB of memory held" in error["message"]
