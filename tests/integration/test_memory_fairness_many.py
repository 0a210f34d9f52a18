"""The memory budget against several attacking tenants at once, end to end (fairness/share.py,
services/tenancy/memory_budget.py): a real sidecar (``auth: none``: callers told apart by their key) with a 256 MiB
budget, behind a real Envoy.

Two, then three attackers each hold as many legal requests with a slow answer (a stream the fake upstream stalls)
as the budget lets them, 31.9 MiB of the budget each (17 steps of the HTTP door's reading). With a fixed share of a
half, two of them held 255 of the 256 MiB and every request of another caller was refused (503). The rule after it
took an attacker's stream back for each of the victim's requests (its work thrown away); the rule after that took
nothing back and let the attackers hold the last of the budget, so the victim waited for their streams to end. Now
nothing in flight is ended and the budget keeps its headroom (fairness/headroom.py): the first attacker holds its
share alone, the second what is left above the headroom (an eighth of the budget), every later one at most its
floor of the headroom (4 MiB: less than one of these requests), and the
victim's requests — one after another and then together — are all answered at once beside every attacker stream
still held, through the HTTP door and through Envoy (the ext_proc door's body phase).

Slow bodies (the findings' second attack): attackers one after another open requests whose bodies arrive a few
bytes at a time, each holding a step of the budget (1.9 MiB) while it arrives, until one is refused; the victim's
twenty 2 KB requests one at a time are answered (before: 0 of 20, ``server_overloaded``). The slow bodies reach the
budget through the HTTP door only (Envoy buffers a body whole before the ext_proc door is given it:
adapters/http/body_pace.py); the victim's requests go through both doors.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator

import aiohttp
import openai
import orjson
import pytest

from responses_bridge.fairness.memory_charge import BODY_BYTE_COST
from responses_bridge.services.tenancy.memory_budget import STEP_COST
from tests.support.bridge import budget_held_bytes
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
    env = {"RESPONSES_BRIDGE_MEMORY_BUDGET_BYTES": str(BUDGET),
           "RESPONSES_BRIDGE_REQUEST_BODY_TIMEOUT": "120"}  # slow bodies outlast their attack
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
            break  # refused: the budget holds all it gives this attacker
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
            # the first holds its share alone (four fill it but 0.5 MiB), the second three more above the headroom
            # (an eighth of the budget); a third's request is larger than its floor of the headroom, so it waits
            # for room above it and is refused (its share beside others, or — holding nothing through Envoy, which
            # hands the body over whole — a budget busy with others' work)
            assert len(streams) == 7, "the first two attackers held less than the rule gives them"
            assert all(refused and set(refused) <= {"memory_share_exceeded", "server_overloaded"}
                       for refused in refusals), refusals
            assert set(refusals[0]) == {"memory_share_exceeded"}, refusals
            assert await stack.held_bytes() >= 4 * HOLD_BYTES * BODY_BYTE_COST
            held = len(streams)
            answers = [await victim.responses.create(model=MODEL, input=f"victim {at} {VICTIM}") for at in range(6)]
            together = await asyncio.gather(*(victim.responses.create(model=MODEL, input=f"together {at} {VICTIM}")
                                              for at in range(3)))
            # at once, beside every attacker stream still held: none ended or taken back for the victim
            assert len(streams) == held and await stack.held_bytes() >= len(streams) * HOLD_BYTES * BODY_BYTE_COST
        finally:
            for stream in streams:
                stream.close()
    assert [answer.status for answer in [*answers, *together]] == ["completed"] * 9
    await _given_back(stack)


async def _given_back(stack: Gateway) -> None:
    """Bounded polling until the budget holds nothing (the attackers' connections closed)."""

    for _ in range(300):
        if await stack.held_bytes() == 0:
            return
        await asyncio.sleep(0.1)
    raise AssertionError("the attackers' budget never came back")


SLOW_DECLARED = 1 << 20  # a slow body's declared length: it sends a few bytes of it and holds one step (1.9 MiB)
SLOW_ATTACKERS = 4  # one after another; the rule before: the first two held 68 each, the victim 0 of 20


async def open_slow_body(port: int, key: str) -> tuple[asyncio.StreamWriter | None, str]:
    """A request whose body has begun and then stalls: ("", writer) once the budget holds a step for it, (None,
    code) if it was refused."""
    before = await budget_held(port)
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    writer.write(f"POST /v1/responses HTTP/1.1\r\nHost: 127.0.0.1\r\nAuthorization: Bearer {key}\r\n"
                 f"Content-Type: application/json\r\nContent-Length: {SLOW_DECLARED}\r\n\r\n".encode()
                 + b'{"model": "fake-model", "input": "' + b"s" * 200)
    await writer.drain()
    for _ in range(600):  # bounded: held (its step reserved) or answered (refused after its wait for room)
        if await budget_held(port) >= before + STEP_COST:
            return writer, ""
        with contextlib.suppress(TimeoutError):
            head = await asyncio.wait_for(reader.read(65536), 0.05)
            writer.close()
            status = head.split(b" ", 2)[1].decode() if head else "closed"
            code = orjson.loads(head.split(b"\r\n\r\n", 1)[1])["error"]["code"] if b"{" in head else ""
            return None, f"{status}:{code}"
    raise AssertionError(f"a slow body neither held nor refused (the budget held {before}, then "
                         f"{await budget_held(port)})")


async def budget_held(port: int) -> int:
    return await budget_held_bytes(f"http://127.0.0.1:{port}")


async def test_a_victims_small_requests_are_answered_beside_slow_body_holders(stack: Gateway) -> None:
    """256 MiB; attackers one after another open slow bodies until one is refused; the victim's twenty 2 KB requests
    one at a time through each door, beside its control (the same requests alone, first)."""
    port = int(stack.sidecar.http_url.rsplit(":", 1)[1])
    small = "v" * 1900  # with the request's JSON about 2 KB: 60 KiB of the budget
    async with sdk(stack.door_url("http"), "sk-slow-victim") as http_victim, \
            sdk(stack.door_url("envoy"), "sk-slow-victim") as envoy_victim:
        async def twenty(client: openai.AsyncOpenAI) -> list[str]:
            outcomes = []
            for at in range(20):
                try:
                    answer = await client.responses.create(model=MODEL, input=f"{at} {small}")
                    outcomes.append(answer.status or "")
                except openai.APIStatusError as error:
                    outcomes.append(f"{error.status_code}:{getattr(error, 'code', '')}")
            return outcomes
        alone = [*await twenty(http_victim), *await twenty(envoy_victim)]
        assert alone == ["completed"] * 40, alone  # the control
        await _given_back(stack)  # each slow body's step is read against a budget no answer still holds
        writers: list[asyncio.StreamWriter] = []
        try:
            held_by: list[int] = []
            for at in range(SLOW_ATTACKERS):
                count, refused = 0, ""
                while not refused and count < 200:
                    writer, refused = await open_slow_body(port, f"sk-slow-attacker-{at}")
                    if writer is not None:
                        writers.append(writer)
                        count += 1
                assert refused.startswith("503:"), refused
                held_by.append(count)
            # the first alone its share (68 steps of 128 MiB), the second what is left above the headroom (51 of
            # 96 MiB), every later one its floor of it (2 steps of 4 MiB): the headroom less those floors stays free
            assert held_by[0] >= 60 and 45 <= held_by[1] <= 51 and all(1 <= count <= 2 for count in held_by[2:]), \
                held_by
            beside = [*await twenty(http_victim), *await twenty(envoy_victim)]
            still = await budget_held(port)
        finally:
            for writer in writers:
                writer.close()
    print(f"slow bodies held {held_by}; the victim beside them {beside.count('completed')}/40")
    assert beside[:20].count("completed") >= 18 and beside[20:].count("completed") >= 18, beside
    assert still >= sum(held_by) * STEP_COST  # every slow body still held while the victim was answered
    await _given_back(stack)
