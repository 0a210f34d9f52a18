"""Greedy tenants never starve the next one, end to end (fairness/share.py, fairness/headroom.py): a real sidecar
with per-tenant keys (``RESPONSES_BRIDGE_AUTH=keys``, made with the CLI), whose tenants each keep as many streams
open as they are given (the fake upstream stalls each after its first chunk: :data:`LONG_MS`, longer than the
test, or :data:`STALL_MS`, then it ends and the tenant posts again), arriving together or one after another.

* Upstream places (``RESPONSES_BRIDGE_UPSTREAM_MAX_CONNECTIONS=16``): with the rule "a tenant holding none gets a
  unit whenever one is free", 4 tenants of 10 streams held 8+5+2+1 and a 5th tenant got 10/10 503
  ``upstream_connections_exceeded``. More greedy tenants than places (8 and 16 beside 8) too.
* The memory budget (2 MiB, ~60 KiB a request: the headroom's floor, at least 64 KiB, holds one; the module's
  1 MiB before had no room for the headroom's floors beside the attack): with the geometric rule, the room left
  after k tenants shrank to nothing and a later tenant's small requests got 503 ``memory_share_exceeded`` although
  it held nothing.

The rule before took the greedy tenants' streams back (``response.failed`` ``preempted_for_fairness``: their work
thrown away); the rule after it took nothing back and let them hold the last place, so beside 4 or 8 greedy
tenants' long calls the victim got 0 of 10. Now nothing in flight is taken back and the pool keeps its headroom
(fairness/headroom.py): beside 4 and 8 greedy tenants whose calls outlast the test, the victim's 10 requests at
once are answered, their p95 within twice its p95 alone (measured first, in the same test) plus a second. Beside
16 (more fresh keys than the headroom has floors: past the rule's bound) the backstop is the queue: the place or
room a greedy stream gives back as it ends goes first to the waiting tenant served least lately — the victim.
"""

from __future__ import annotations

import asyncio
import contextlib
import statistics
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass, field

import aiohttp
import openai
import orjson
import pytest

from responses_bridge.envoy_config import Auth, render_bootstrap
from tests.support.bridge import Sidecar, create_keys, running_sidecar
from tests.support.envoy import free_port, have_envoy, start_envoy
from tests.support.sdk import async_sdk

pytestmark = pytest.mark.store_proven(
    "tests/integration/test_agents_automations_replicas.py",
    "tests/unit/test_store_contract.py",
    "tests/integration/test_replicas.py",
    "tests/integration/test_input_references.py",
    reason="every store/postgres line it covers on PostgreSQL is covered by the modules named (scripts/pg-coverage)",
)

MODEL = "fake-model"
GREEDY = 16
STREAMS = 10  # each greedy tenant's streams
NARROW = 8  # upstream places fewer than 8 or 16 greedy tenants
QUANTUM = "0.5"  # the rule before took back a place held past it for a tenant holding none
STALL_MS = 800  # a greedy stream's time held (its model's), then it ends and its tenant posts again
LONG_MS = 120_000  # a greedy stream that outlasts the test: its place is never given back while the victim asks
PAD = "x" * 1800  # a request of about 2 KB: ~60 KiB of the budget
BUDGET = 2 << 20  # 34 such requests; a tenant alone holds 17 (more than its 10 streams), the headroom's floor one


@dataclass
class Stack:
    sidecar: Sidecar
    keys: dict[str, str]
    envoy_url: str = ""

    @property
    def url(self) -> str:
        """Where clients send: Envoy (the ext_proc door) when there is one, else the HTTP door."""
        return self.envoy_url or self.sidecar.http_url


@dataclass
class Greedy:
    """One tenant's streams held open: how many are held now, and how those that ended ended."""

    key: str
    held: int = 0
    held_then: int = 0  # what it held when the victim's requests were answered
    ended: list[str] = field(default_factory=list)
    tasks: list[asyncio.Task[None]] = field(default_factory=list)

    def settled(self, enough: int) -> bool:
        """It holds ``enough``, or its streams have ended or been refused once each (a rule that gave it nothing)."""
        return self.held >= enough or len(self.ended) >= STREAMS


async def _stack(fake_upstream: str, tmp: str, env: dict[str, str], envoy: bool = False) -> AsyncIterator[Stack]:
    db = f"{tmp}/bridge.db"
    keys = create_keys(db, [*(f"greedy{at}" for at in range(GREEDY)), "victim"])
    if not envoy:
        async with running_sidecar(tmp, fake_upstream, "--db", db, extproc=False,
                                   env={"RESPONSES_BRIDGE_AUTH": "keys", **env}) as sidecar:
            yield Stack(sidecar, keys)
        return
    listen_port = free_port()
    async with running_sidecar(tmp, fake_upstream, "--db", db, "--upstream-via", f"http://127.0.0.1:{listen_port}/v1",
                               env={"RESPONSES_BRIDGE_AUTH": "keys", **env}) as sidecar:
        proxy = await start_envoy(render_bootstrap(
            listen_port=listen_port, extproc_port=sidecar.extproc_port,
            http_port=int(sidecar.http_url.rsplit(":", 1)[1]), upstream=fake_upstream, admin_port=0,
            auth=Auth("keys")))
        try:
            yield Stack(sidecar, keys, f"http://127.0.0.1:{listen_port}")
        finally:
            proxy.stop()


@pytest.fixture(scope="module")
async def upstream_stack(fake_upstream: str, tmp_path_factory: pytest.TempPathFactory) -> AsyncIterator[Stack]:
    async for stack in _stack(fake_upstream, str(tmp_path_factory.mktemp("fair-upstream")), {
            "RESPONSES_BRIDGE_UPSTREAM_MAX_CONNECTIONS": "16", "RESPONSES_BRIDGE_UPSTREAM_CONNECT_TIMEOUT": "3",
            "RESPONSES_BRIDGE_FAIR_SHARE_QUANTUM": QUANTUM}):
        yield stack


@pytest.fixture(scope="module")
async def narrow_upstream_stack(fake_upstream: str, tmp_path_factory: pytest.TempPathFactory) -> AsyncIterator[Stack]:
    """Fewer places than greedy tenants: each holds one, more than its ``C / n`` (see the module's text)."""
    async for stack in _stack(fake_upstream, str(tmp_path_factory.mktemp("fair-upstream-narrow")), {
            "RESPONSES_BRIDGE_UPSTREAM_MAX_CONNECTIONS": str(NARROW), "RESPONSES_BRIDGE_UPSTREAM_CONNECT_TIMEOUT": "3",
            "RESPONSES_BRIDGE_FAIR_SHARE_QUANTUM": QUANTUM}):
        yield stack


@pytest.fixture(scope="module")
async def envoy_memory_stack(fake_upstream: str, tmp_path_factory: pytest.TempPathFactory) -> AsyncIterator[Stack]:
    if not have_envoy():
        pytest.skip("envoy binary not available")
    async for stack in _stack(fake_upstream, str(tmp_path_factory.mktemp("fair-envoy")), {
            "RESPONSES_BRIDGE_MEMORY_BUDGET_BYTES": str(BUDGET)}, envoy=True):
        yield stack


@pytest.fixture(scope="module")
async def memory_stack(fake_upstream: str, tmp_path_factory: pytest.TempPathFactory) -> AsyncIterator[Stack]:
    async for stack in _stack(fake_upstream, str(tmp_path_factory.mktemp("fair-memory")), {
            "RESPONSES_BRIDGE_MEMORY_BUDGET_BYTES": str(BUDGET)}):
        yield stack


async def _hold(session: aiohttp.ClientSession, url: str, tenant: Greedy, at: int, stall_ms: int) -> None:
    """One of the tenant's streams, posted again as soon as the last one ended (after a pause if refused)."""
    body = orjson.dumps({"model": MODEL, "stream": True, "input": f"hold {at} [stall_after=1:{stall_ms}] {PAD}"})
    while True:
        ended = await _hold_once(session, url, tenant, body)
        tenant.ended.append(ended)
        if ended != "completed":
            await asyncio.sleep(0.2)


async def _hold_once(session: aiohttp.ClientSession, url: str, tenant: Greedy, body: bytes) -> str:
    async with session.post(url, data=body, headers={"Authorization": f"Bearer {tenant.key}",
                                                     "Content-Type": "application/json"}) as response:
        if response.status != 200:
            return f"{response.status}:{(await response.json())['error']['code']}"
        holding, ended = False, "cut"
        try:
            async for line in response.content:
                if not holding and b"response.output_text.delta" in line:
                    holding = True
                    tenant.held += 1
                if line.startswith(b"data: ") and b'"response.failed"' in line:
                    error = orjson.loads(line[6:])["response"]["error"]  # a listed code, the reason leading its text
                    ended = f"failed:{error['code']}:{error['message'].split(':')[0]}"
                elif line.startswith(b"data: ") and b'"response.completed"' in line:
                    ended = "completed"
        except aiohttp.ClientPayloadError:  # through Envoy, a stream ended once its answer began is reset
            ended = "reset"
        finally:
            if holding:
                tenant.held -= 1
        return ended


async def _until(condition: object, what: str) -> None:
    """Bounded polling (not a timing check)."""
    for _ in range(300):
        if condition():  # type: ignore[operator]
            return
        await asyncio.sleep(0.05)
    raise AssertionError(f"never: {what}")


async def _victim_answers(stack: Stack, count: int, at_once: bool = False) -> tuple[list[str], list[float]]:
    """The victim's ``count`` requests, one after another or all at once: each one's outcome and seconds."""
    async with async_sdk(base_url=f"{stack.url}/v1", api_key=stack.keys["victim"],
                                  max_retries=0, timeout=60) as victim:
        async def one(at: int) -> tuple[str, float]:
            started = time.monotonic()
            try:
                answer = await victim.responses.create(model=MODEL, input=f"victim {at} {PAD}")
                outcome = answer.status or ""
            except openai.APIStatusError as error:
                body = error.body if isinstance(error.body, dict) else {}
                outcome = f"{error.status_code}:{body.get('code')}"
            return outcome, time.monotonic() - started
        if at_once:
            answers = await asyncio.gather(*(one(at) for at in range(count)))
        else:
            answers = [await one(at) for at in range(count)]
        return [outcome for outcome, _ in answers], [seconds for _, seconds in answers]


def p95(seconds: list[float]) -> float:
    return statistics.quantiles(seconds, n=20, method="inclusive")[18]


async def _attack(stack: Stack, greedy: int, together: bool, enough: int, stall_ms: int = STALL_MS,
                  first: int | None = None, at_once: bool = False) -> tuple[list[Greedy], list[str], list[float]]:
    """``greedy`` tenants' streams held (each tenant's ``enough`` held before the next comes, one after another;
    the first tenant's ``first``), then the victim's requests; what each side saw, and the victim's seconds."""
    url = f"{stack.url}/v1/responses"
    tenants = [Greedy(stack.keys[f"greedy{at}"]) for at in range(greedy)]
    async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=180)) as session:
        try:
            for index, tenant in enumerate(tenants):
                tenant.tasks = [asyncio.create_task(_hold(session, url, tenant, at, stall_ms))
                                for at in range(STREAMS)]
                part = first if index == 0 and first is not None else enough
                if not together:
                    await _until(lambda tenant=tenant, part=part: tenant.settled(part),
                                 "the greedy tenant took its part")
            await _until(lambda: all(tenant.settled(enough) for tenant in tenants), "the greedy tenants settled")
            outcomes, seconds = await _victim_answers(stack, 10, at_once)
            for tenant in tenants:
                tenant.held_then = tenant.held
        finally:
            for tenant in tenants:
                for task in tenant.tasks:
                    task.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await asyncio.gather(*tenant.tasks, return_exceptions=True)
    return tenants, outcomes, seconds


# 4 and 8 greedy tenants one after another, 1 s apart, each wanting 10 of the 16 places (alone 8), their calls
# outlasting the test (the findings': 40 s); then the victim's 10 at once. The rule before this one: 0 of 10.
@pytest.mark.parametrize("greedy", [4, 8])
async def test_upstream_places_a_victim_is_answered_as_alone_beside_greedy_tenants_long_calls(
        upstream_stack: Stack, greedy: int) -> None:
    alone, alone_seconds = await _victim_answers(upstream_stack, 10, at_once=True)  # the control, same sidecar
    assert alone == ["completed"] * 10, alone
    tenants, outcomes, seconds = await _attack(upstream_stack, greedy, False, 1, LONG_MS, first=8, at_once=True)
    print(f"victim alone p95 {p95(alone_seconds):.2f} s; beside {greedy} greedy tenants {outcomes.count('completed')}"
          f"/10, p95 {p95(seconds):.2f} s")
    assert outcomes.count("completed") >= 9, outcomes
    assert p95(seconds) <= 2 * p95(alone_seconds) + 1.0, (seconds, alone_seconds)
    ended = [outcome for tenant in tenants for outcome in tenant.ended]
    # no greedy call was ended for the victim: theirs outlast the test, and only their excess waited out the
    # connect timeout or the full queue; the first holds its 8, every later one its floor at least
    assert set(ended) <= {"503:upstream_connections_exceeded",
                          "failed:server_error:upstream_connections_exceeded"}, ended
    assert tenants[0].held_then == 8 and all(tenant.held_then >= 1 for tenant in tenants), [
        tenant.held_then for tenant in tenants]


@pytest.mark.parametrize("together", [True], ids=["together"])
async def test_upstream_places_a_victim_is_answered_as_alone_beside_16_greedy_tenants(
        upstream_stack: Stack, together: bool) -> None:
    await _upstream_victim(upstream_stack, 16, 16, together)


@pytest.mark.parametrize("together", [False], ids=["one-after-another"])
@pytest.mark.parametrize("greedy", [16])
async def test_upstream_places_a_victim_is_answered_as_alone_beside_more_greedy_tenants_than_places(
        narrow_upstream_stack: Stack, greedy: int, together: bool) -> None:
    """Before: every greedy tenant held one of the 8 places, and the victim got 10/10 503."""
    await _upstream_victim(narrow_upstream_stack, NARROW, greedy, together)


async def _upstream_victim(upstream_stack: Stack, places: int, greedy: int, together: bool) -> None:
    """Past the headroom's bound (more fresh keys than it has floors): the victim is served as greedy calls end."""
    tenants, outcomes, _ = await _attack(upstream_stack, greedy, together, max(1, places // (greedy + 1)))
    assert outcomes == ["completed"] * 10, outcomes
    ended = [outcome for tenant in tenants for outcome in tenant.ended]
    # before: the greedy tenants' streams were taken back for the victim (failed preempted_for_fairness); now each
    # ends by itself, or waited out the connect timeout behind the others (beside 16 the queue is full too)
    assert "completed" in ended and set(ended) <= {
        "completed", "503:upstream_connections_exceeded", "failed:server_error:upstream_connections_exceeded"}, ended


@pytest.mark.parametrize(("greedy", "together"), [(4, True), (16, False)], ids=["4-together", "16-one-after-another"])
async def test_memory_budget_a_victim_is_answered_as_alone_beside_greedy_tenants(
        memory_stack: Stack, greedy: int, together: bool) -> None:
    # each greedy tenant's requests cost ~60 KiB: a fair share of 2 MiB among 17 holds two; beside 4 their
    # streams outlast the test (the headroom's floors: served at once), beside 16 they end (the queue's backstop)
    tenants, outcomes, _ = await _attack(memory_stack, greedy, together, 1, LONG_MS if greedy <= 4 else STALL_MS)
    assert outcomes == ["completed"] * 10, outcomes
    ended = [outcome for tenant in tenants for outcome in tenant.ended]
    # nothing taken back (before: 503 / failed preempted_for_fairness); beside 16 the queue refuses their excess
    assert ("completed" in ended) == (greedy > 4) and set(ended) <= {
        "completed", "503:memory_share_exceeded", "503:server_overloaded"}, ended


@pytest.mark.parametrize("greedy", [4])
async def test_through_envoy_a_victim_is_answered_as_alone_beside_greedy_tenants(
        envoy_memory_stack: Stack, greedy: int) -> None:
    """The ext_proc door holds a translated stream's budget in its gRPC stream: before, one taken back ended with a
    503 (or, its answer begun, Envoy reset it); then none was, and the victim waited for greedy streams to end. Now
    the greedy streams outlast the test, and the victim's requests through Envoy are answered beside them from the
    headroom (fairness/headroom.py)."""
    # each tenant's streams all held or refused before the next comes: the first holds its share alone, every
    # later one its floor of the headroom
    tenants, outcomes, _ = await _attack(envoy_memory_stack, greedy, False, 1, LONG_MS, first=8)
    assert outcomes == ["completed"] * 10, outcomes
    ended = [outcome for tenant in tenants for outcome in tenant.ended]
    assert set(ended) <= {"503:memory_share_exceeded", "503:server_overloaded"}, ended
