"""The attacker's findings against the fair-share rule before (fairness/share.py), each beside its control, end to end:
a real sidecar's HTTP door (the upstream connections are the sidecar's own calls: Envoy's requests reach the
upstream without them), ``RESPONSES_BRIDGE_UPSTREAM_MAX_CONNECTIONS=4``, ``auth: keys`` with the attacker's
tenants as separate keys, the real openai SDK as the victim, and the fake upstream's ``[stall=MS]`` as a model's
time (the issue's seconds scaled down).

* One take-back starved a tenant for good: the victim's long call, the only one past the quantum beside 12 tenants
  looping short calls, was taken back, and its short calls after it ranked behind every other tenant (0/8 while a
  fresh tenant's were 8/8).
* Work longer than the quantum never finished once tenants outnumbered units: 16 greedy tenants × 3 calls on 4
  units finished ~7× less than with time-sharing off, and the victim's call was taken back every try.
* Preempted durable work was failed, not resumed: a background response stored ``failed``; a session's turn failed
  and the turn queued behind it too.

Now nothing in flight is taken back for fairness, a freed connection goes to the waiting tenant served least
lately, and a durable run's call waits for one rather than fail. Waits are bounded; no timing assertions.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any

import aiohttp
import openai
import pytest

from tests.support.bridge import Sidecar, create_keys, running_sidecar
from tests.support.sdk import async_sdk

pytestmark = pytest.mark.store_proven(
    "tests/integration/test_agents_automations_replicas.py",
    "tests/unit/test_store_contract.py",
    "tests/integration/test_replicas.py",
    "tests/integration/test_input_references.py",
    reason="every store/postgres line it covers on PostgreSQL is covered by the modules named (scripts/pg-coverage)",
)

MODEL = "fake-model"
PLACES = 4
SYBILS = 12
GREEDY = 16
BETA = {"OpenAI-Beta": "agents=v1"}


@dataclass
class Stack:
    sidecar: Sidecar
    keys: dict[str, str]


async def _stack(fake_upstream: str, tmp: str, env: dict[str, str]) -> AsyncIterator[Stack]:
    db = f"{tmp}/bridge.db"
    keys = create_keys(db, [*(f"t{at}" for at in range(GREEDY)), "victim", "fresh", "control"])
    async with running_sidecar(tmp, fake_upstream, "--db", db, extproc=False,
                               env={"RESPONSES_BRIDGE_AUTH": "keys", **env}) as sidecar:
        yield Stack(sidecar, keys)


@pytest.fixture(scope="module")
async def stack(fake_upstream: str, tmp_path_factory: pytest.TempPathFactory) -> AsyncIterator[Stack]:
    """The rule before took back a connection held past the quantum (0.25 s here) for a tenant holding none."""
    async for made in _stack(fake_upstream, str(tmp_path_factory.mktemp("fair-service")), {
            "RESPONSES_BRIDGE_UPSTREAM_MAX_CONNECTIONS": str(PLACES), "RESPONSES_BRIDGE_UPSTREAM_CONNECT_TIMEOUT": "3",
            "RESPONSES_BRIDGE_UPSTREAM_TENANT_CONNECTIONS": str(PLACES),
            "RESPONSES_BRIDGE_FAIR_SHARE_QUANTUM": "0.25"}):
        yield made


@pytest.fixture(scope="module")
async def durable_stack(fake_upstream: str, tmp_path_factory: pytest.TempPathFactory) -> AsyncIterator[Stack]:
    """A wait of 1 s for a connection, and a quantum longer than any call here: the greedy calls hold theirs."""
    async for made in _stack(fake_upstream, str(tmp_path_factory.mktemp("fair-durable")), {
            "RESPONSES_BRIDGE_UPSTREAM_MAX_CONNECTIONS": str(PLACES), "RESPONSES_BRIDGE_UPSTREAM_CONNECT_TIMEOUT": "1",
            "RESPONSES_BRIDGE_FAIR_SHARE_QUANTUM": "60"}):
        yield made


async def _call(session: aiohttp.ClientSession, url: str, key: str, stall_ms: int, **extra: Any) -> str:
    """One non-streamed response of ``stall_ms`` of the model's time: ``completed`` or ``<status>:<code>``."""
    body = {"model": MODEL, "input": f"[stall={stall_ms}] hi", **extra}
    async with session.post(f"{url}/v1/responses", json=body, headers={"Authorization": f"Bearer {key}"}) as reply:
        answer = await reply.json(content_type=None)
    if reply.status == 200:
        return str(answer.get("status"))
    return f"{reply.status}:{(answer.get('error') or {}).get('code')}"


@contextlib.asynccontextmanager
async def _looping(url: str, keys: list[str], stall_ms: int) -> AsyncIterator[list[str]]:
    """Each of ``keys`` (one loop per entry) posts again as soon as its call ended, until the block ends: how each
    call ended."""
    outcomes: list[str] = []
    session = aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=120))

    async def loop(key: str) -> None:
        while True:
            ended = await _call(session, url, key, stall_ms)
            outcomes.append(ended)
            if ended.startswith("503"):
                await asyncio.sleep(0.2)  # a refused client pauses before it posts again (as the SDK would)

    tasks = [asyncio.create_task(loop(key)) for key in keys]
    try:
        yield outcomes
    finally:
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        await session.close()


async def _sdk_calls(stack: Stack, tenant: str, count: int, stall_ms: int) -> list[str]:
    async with async_sdk(base_url=f"{stack.sidecar.http_url}/v1", api_key=stack.keys[tenant], max_retries=0,
                         timeout=60) as client:
        outcomes = []
        for _ in range(count):
            try:
                answer = await client.responses.create(model=MODEL, input=f"[stall={stall_ms}] mine")
                outcomes.append(answer.status or "")
            except openai.APIStatusError as error:
                body = error.body if isinstance(error.body, dict) else {}
                outcomes.append(f"{error.status_code}:{body.get('code')}")
        return outcomes


async def _refused_within(stack: Stack, tenant: str, tries: int) -> list[str]:
    """Synchronous calls of ``tenant``, one after another, until one is refused (at most ``tries``): how each
    ended."""
    outcomes: list[str] = []
    while len(outcomes) < tries and not (outcomes and outcomes[-1].startswith("503")):
        outcomes += await _sdk_calls(stack, tenant, 1, 0)
    return outcomes


async def test_a_victims_long_call_completes_beside_twelve_short_call_tenants_then_its_short_calls_as_a_fresh_ones(
        stack: Stack) -> None:
    url = stack.sidecar.http_url
    assert await _sdk_calls(stack, "control", 1, 800) == ["completed"]  # the control: the long call alone
    async with _looping(url, [stack.keys[f"t{at}"] for at in range(SYBILS)], 100) as sybils:
        await asyncio.sleep(0.5)  # the sybils' loops under way
        long_call = await _sdk_calls(stack, "victim", 1, 800)
        victim = await _sdk_calls(stack, "victim", 8, 50)
        fresh = await _sdk_calls(stack, "fresh", 8, 50)
    # before: the long call, past the quantum, was taken back (503 preempted_for_fairness), and its short calls
    # after it waited out the connect timeout while the fresh tenant's were served
    assert long_call == ["completed"], long_call
    assert victim == fresh == ["completed"] * 8, (victim, fresh)
    assert "503:preempted_for_fairness" not in sybils and sybils.count("completed") >= SYBILS


async def _goodput(url: str, keys: list[str], seconds: float) -> tuple[int, list[str]]:
    """Calls of 1 s completed within ``seconds`` by one loop per entry of ``keys``, and how every call ended."""
    async with _looping(url, keys, 1000) as outcomes:
        await asyncio.sleep(seconds)
        done = outcomes.count("completed")
    return done, outcomes


async def test_sixteen_greedy_tenants_finish_as_much_as_without_take_backs_and_the_victims_call_completes(
        stack: Stack) -> None:
    """The control: the same 48 loops of one tenant, whose calls were never taken back (it is alone, within the
    share it may hold alone). Beside it, 16 tenants × 3: before, every call past the quantum was taken back."""
    url = stack.sidecar.http_url
    alone, _ = await _goodput(url, [stack.keys["control"]] * 3 * GREEDY, 5.0)
    async with _looping(url, [stack.keys[f"t{at}"] for at in range(GREEDY) for _ in range(3)], 1000) as greedy:
        await asyncio.sleep(0.5)
        victim = await _sdk_calls(stack, "victim", 1, 1000)
        await asyncio.sleep(4.5)
        shared = greedy.count("completed")
    assert victim == ["completed"], victim
    assert "503:preempted_for_fairness" not in greedy, greedy
    assert alone >= PLACES and shared >= 0.9 * alone - 1, (shared, alone)  # one call's grain of the window


async def _background(client: openai.AsyncOpenAI, text: str) -> str:
    """A background response's final status (bounded polling)."""
    created = await client.responses.create(model=MODEL, input=text, background=True, store=True)
    for _ in range(600):
        stored = await client.responses.retrieve(created.id)
        if stored.status not in ("queued", "in_progress"):
            return f"{stored.status}:{stored.error.message.split(':')[0] if stored.error else ''}"
        await asyncio.sleep(0.1)
    raise AssertionError("the background response never ended")


async def _turns(url: str, key: str, session_id: str, count: int) -> list[str]:
    """The statuses of a session's first ``count`` turns once they have all ended (bounded polling)."""
    headers = {**BETA, "Authorization": f"Bearer {key}"}
    async with aiohttp.ClientSession() as http:
        for _ in range(600):
            async with http.get(f"{url}/v1/agents/sessions/{session_id}/turns", params={"order": "asc"},
                                headers=headers) as reply:
                turns = (await reply.json())["data"]
            statuses = [turn["status"] for turn in turns]
            if len(statuses) >= count and all(status in ("completed", "failed", "cancelled", "incomplete")
                                              for status in statuses):
                return statuses
            await asyncio.sleep(0.1)
    raise AssertionError(f"the session's turns never ended: {statuses}")


async def test_a_background_response_and_a_session_turn_waiting_past_the_connect_timeout_complete(
        durable_stack: Stack) -> None:
    """Every connection held by calls of 4 s, past the 1 s wait (five tenants looping one call each, so the rule
    before took none back within its quantum either): a synchronous request is refused after its wait (the
    control), a background response and a session's two turns wait at their step boundary and complete. Before,
    the background response was stored failed ``upstream_connections_exceeded``."""
    stack, url = durable_stack, durable_stack.sidecar.http_url
    holders = [stack.keys[f"t{at}"] for at in range(5)]
    async with async_sdk(base_url=f"{url}/v1", api_key=stack.keys["victim"], max_retries=0,
                         timeout=60) as victim, _looping(url, holders, 4000) as greedy:
        for _ in range(300):  # bounded polling: the fifth tenant's call waited out its 1 s, the four places held
            if "503:upstream_connections_exceeded" in greedy:
                break
            await asyncio.sleep(0.02)
        synchronous = asyncio.create_task(_refused_within(stack, "control", 5))
        background = asyncio.create_task(_background(victim, "background [stall=200] mine"))
        session = await victim.beta.agents.sessions.create(agent={"model": MODEL}, environment={"type": "none"},
                                                           input="[stall=200] first")
        await victim.beta.agents.sessions.events.create(session.id, events=[
            {"type": "agent.session.input.message",
             "input": [{"role": "user", "content": [{"type": "input_text", "text": "[stall=200] second"}]}]}])
        turns = await _turns(url, stack.keys["victim"], session.id, 2)
        # the control: it waited 1 s and was refused (a call that began as a holder's call ended took the place
        # that freed, and completed: on a loaded host the 4 s holds drift, so the next call is tried)
        control = await synchronous
        assert control[-1] == "503:upstream_connections_exceeded", control
        assert set(control[:-1]) <= {"completed"}, control
        assert await background == "completed:"
    assert turns == ["completed", "completed"], turns
    assert "503:preempted_for_fairness" not in greedy
