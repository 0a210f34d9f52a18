"""Greedy tenants never starve the next one, end to end (fair_share.py): a real sidecar with per-tenant keys
(``RESPONSES_BRIDGE_AUTH=keys``, made with the CLI), whose tenants each keep as many streams open as they are given
(the fake upstream stalls them after their first chunk), arriving together or one after another.

* Upstream places (``RESPONSES_BRIDGE_UPSTREAM_MAX_CONNECTIONS=16``): with the rule "a tenant holding none gets a
  unit whenever one is free", 4 tenants of 10 streams held 8+5+2+1 and a 5th tenant got 10/10 503
  ``upstream_connections_exceeded``.
* More greedy tenants than places (16 beside 16 places, 8 and 16 beside 8): every greedy tenant holds one, the
  victim's fair share C/n is less than a place, and a tenant holding one was never taken from for one holding none,
  so the victim waited out the pool's timeout (10/10 ``503 upstream_connections_exceeded``; the 16-tenant test ran
  on 32 places). Now a place held past its quantum (``RESPONSES_BRIDGE_FAIR_SHARE_QUANTUM``) is taken back for a
  tenant holding none (fair_tenure.py).
* The memory budget (1 MiB, ~60 KiB a request): with the geometric rule, the room left after k tenants shrank to
  nothing and a later tenant's small requests got 503 ``memory_share_exceeded`` although it held nothing.

Now each greedy tenant is taken back to its fair share (its newest streams end with ``response.failed``, the
listed code ``server_error`` and the reason ``preempted_for_fairness`` leading its message: engine/response_error.py)
and the victim, beside 2, 4, 8 and 16 of them, is answered as alone.
"""

from __future__ import annotations

import asyncio
import contextlib
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
QUANTUM = "0.5"  # a place's tenure before it is taken back for a tenant holding none (fair_tenure.py)
PAD = "x" * 1800  # a request of about 2 KB: ~60 KiB of the budget


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
    ended: list[str] = field(default_factory=list)
    preempted_ids: list[str] = field(default_factory=list)
    tasks: list[asyncio.Task[None]] = field(default_factory=list)

    def settled(self, enough: int) -> bool:
        """It holds ``enough``, or every stream of its holds or was refused (a rule that gave it nothing)."""
        return self.held >= enough or self.held + len(self.ended) >= STREAMS


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
            "RESPONSES_BRIDGE_MEMORY_BUDGET_BYTES": str(1 << 20)}, envoy=True):
        yield stack


@pytest.fixture(scope="module")
async def memory_stack(fake_upstream: str, tmp_path_factory: pytest.TempPathFactory) -> AsyncIterator[Stack]:
    async for stack in _stack(fake_upstream, str(tmp_path_factory.mktemp("fair-memory")), {
            "RESPONSES_BRIDGE_MEMORY_BUDGET_BYTES": str(1 << 20)}):
        yield stack


async def _hold(session: aiohttp.ClientSession, url: str, tenant: Greedy, at: int) -> None:
    body = orjson.dumps({"model": MODEL, "stream": True, "input": f"hold {at} [stall_after=1:120000] {PAD}"})
    async with session.post(url, data=body, headers={"Authorization": f"Bearer {tenant.key}",
                                                     "Content-Type": "application/json"}) as response:
        if response.status != 200:
            tenant.ended.append(f"{response.status}:{(await response.json())['error']['code']}")
            return
        holding = False
        try:
            async for line in response.content:
                if not holding and b"response.output_text.delta" in line:
                    holding = True
                    tenant.held += 1
                if line.startswith(b"data: ") and b'"response.failed"' in line:
                    failed = orjson.loads(line[6:])["response"]
                    error = failed["error"]  # a listed code, the reason leading its text
                    reason = error["message"].split(":")[0]
                    tenant.ended.append(f"failed:{error['code']}:{reason}")
                    if reason == "preempted_for_fairness":  # not a wait past the pool's timeout (beside 16)
                        tenant.preempted_ids.append(failed["id"])
        except aiohttp.ClientPayloadError:  # through Envoy, a stream taken back once its answer began is reset
            tenant.ended.append("reset")
        finally:
            if holding:
                tenant.held -= 1


async def _until(condition: object, what: str) -> None:
    """Bounded polling (not a timing check)."""
    for _ in range(300):
        if condition():  # type: ignore[operator]
            return
        await asyncio.sleep(0.05)
    raise AssertionError(f"never: {what}")


async def _victim_answers(stack: Stack, count: int) -> list[str]:
    async with async_sdk(base_url=f"{stack.url}/v1", api_key=stack.keys["victim"],
                                  max_retries=0, timeout=60) as victim:
        outcomes = []
        for at in range(count):
            try:
                answer = await victim.responses.create(model=MODEL, input=f"victim {at} {PAD}")
                outcomes.append(answer.status or "")
            except openai.APIStatusError as error:
                body = error.body if isinstance(error.body, dict) else {}
                outcomes.append(f"{error.status_code}:{body.get('code')}")
        return outcomes


async def _attack(stack: Stack, greedy: int, together: bool, enough: int) -> tuple[list[Greedy], list[str]]:
    """``greedy`` tenants' streams held (each tenant's ``enough`` held before the next comes, one after another),
    then the victim's requests; what each side saw."""
    url = f"{stack.url}/v1/responses"
    tenants = [Greedy(stack.keys[f"greedy{at}"]) for at in range(greedy)]
    async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=180)) as session:
        try:
            for tenant in tenants:
                tenant.tasks = [asyncio.create_task(_hold(session, url, tenant, at)) for at in range(STREAMS)]
                if not together:
                    await _until(lambda tenant=tenant: tenant.settled(enough), "the greedy tenant took its part")
            await _until(lambda: all(tenant.settled(enough) for tenant in tenants), "the greedy tenants settled")
            outcomes = await _victim_answers(stack, 10)
        finally:
            for tenant in tenants:
                for task in tenant.tasks:
                    task.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await asyncio.gather(*tenant.tasks, return_exceptions=True)
    return tenants, outcomes


@pytest.mark.parametrize("together", [False, True], ids=["one-after-another", "together"])
@pytest.mark.parametrize("greedy", [2, 4, 8])
async def test_upstream_places_a_victim_is_answered_as_alone_beside_greedy_tenants(
        upstream_stack: Stack, greedy: int, together: bool) -> None:
    await _upstream_victim(upstream_stack, 16, greedy, together)


@pytest.mark.parametrize("together", [False, True], ids=["one-after-another", "together"])
async def test_upstream_places_a_victim_is_answered_as_alone_beside_16_greedy_tenants(
        upstream_stack: Stack, together: bool) -> None:
    await _upstream_victim(upstream_stack, 16, 16, together)


@pytest.mark.parametrize("together", [False, True], ids=["one-after-another", "together"])
@pytest.mark.parametrize("greedy", [8, 16])
async def test_upstream_places_a_victim_is_answered_as_alone_beside_more_greedy_tenants_than_places(
        narrow_upstream_stack: Stack, greedy: int, together: bool) -> None:
    """Before: every greedy tenant held one of the 8 places, and the victim got 10/10 503."""
    await _upstream_victim(narrow_upstream_stack, NARROW, greedy, together)


async def _upstream_victim(upstream_stack: Stack, places: int, greedy: int, together: bool) -> None:
    tenants, outcomes = await _attack(upstream_stack, greedy, together, max(1, places // (greedy + 1)))
    assert outcomes.count("completed") >= 9 and not [one for one in outcomes if one.startswith("503")], outcomes
    ended = [outcome for tenant in tenants for outcome in tenant.ended]
    # a greedy stream whose wait for a place outlived the pool's timeout ends failed the same way (beside 16)
    assert set(ended) <= {"failed:server_error:preempted_for_fairness", "503:upstream_connections_exceeded",
                          "failed:server_error:upstream_connections_exceeded"}, ended
    if greedy > 2:  # taken back to their fair share for the later ones (alone 8 each: two fill the pool)
        assert "failed:server_error:preempted_for_fairness" in ended
        taken = next(tenant for tenant in tenants if tenant.preempted_ids)
        async with async_sdk(base_url=f"{upstream_stack.sidecar.http_url}/v1", api_key=taken.key,
                                      max_retries=0) as owner:
            stored = await owner.responses.retrieve(taken.preempted_ids[0])
        assert stored.status == "failed" and stored.error is not None  # stored so, never completed
        assert stored.error.message.startswith("preempted_for_fairness: ")


@pytest.mark.parametrize("together", [False, True], ids=["one-after-another", "together"])
@pytest.mark.parametrize("greedy", [2, 4, 8, 16])
async def test_memory_budget_a_victim_is_answered_as_alone_beside_greedy_tenants(
        memory_stack: Stack, greedy: int, together: bool) -> None:
    # each greedy tenant's requests cost ~60 KiB: a fair share of 1 MiB among 9 holds one or two
    tenants, outcomes = await _attack(memory_stack, greedy, together, 1)
    assert outcomes.count("completed") >= 9 and not [one for one in outcomes if one.startswith("503")], outcomes
    ended = [outcome for tenant in tenants for outcome in tenant.ended]
    # beside 16, 160 streams outgrow the budget's queue: the greedy tenants' newest waiters are refused in its place
    assert set(ended) <= {"failed:server_error:preempted_for_fairness", "503:memory_share_exceeded",
                          "503:preempted_for_fairness", "503:server_overloaded"}, ended


@pytest.mark.parametrize("greedy", [2, 4])
async def test_through_envoy_a_victim_is_answered_as_alone_beside_greedy_tenants(
        envoy_memory_stack: Stack, greedy: int) -> None:
    """The ext_proc door holds a translated stream's budget in its gRPC stream: one taken back ends with a 503
    (or, its answer begun, Envoy resets it), and the victim's requests through Envoy are answered."""
    # each tenant's streams all held or refused before the next comes: the budget is then full to within a request
    tenants, outcomes = await _attack(envoy_memory_stack, greedy, False, STREAMS + 1)
    assert outcomes.count("completed") >= 9 and not [one for one in outcomes if one.startswith("503")], outcomes
    ended = [outcome for tenant in tenants for outcome in tenant.ended]
    assert set(ended) <= {"failed:server_error:preempted_for_fairness", "503:memory_share_exceeded",
                          "503:preempted_for_fairness", "503:server_overloaded", "reset"}, ended
    if greedy > 2:  # two fill the budget but a request's room: the victim's is taken back from them beside four
        assert any(outcome.endswith("preempted_for_fairness") or outcome == "reset" for outcome in ended), ended
