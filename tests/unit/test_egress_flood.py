"""One call's flood of connections to its egress socket (bound into the sandbox, so the code reaches it directly,
past the launcher's relay): counted as each is accepted, so 3,000 idle connections leave the bridge holding at most
the call's limit, another call's proxy still relays, and the refusals are one log line at the call's end. A
bridge-wide cap bounds every call's connections together, and tenants' calls are admitted by the fair-share rule
(fairness/share.py), so however many tenants flood, another tenant's call always gets connections."""

from __future__ import annotations

import asyncio
import os
import resource
from collections.abc import AsyncIterator
from typing import Any

import pytest
import structlog

from responses_bridge.sandbox.egress.head_reading import LINGERING
from responses_bridge.sandbox.egress.limits import SHARES
from responses_bridge.sandbox.egress.policy import EgressRules
from responses_bridge.sandbox.egress.proxy import EgressLimits, EgressProxy
from tests.unit.test_egress_proxy import Host, exchange, fake_dns, policy_of

FLOOD = 3000


@pytest.fixture(scope="module")
async def host() -> AsyncIterator[Host]:
    served = Host()
    await served.start()
    yield served
    assert served.runner is not None
    await served.runner.cleanup()


@pytest.fixture(autouse=True)
def descriptors() -> Any:
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    wanted = min(hard, 4 * FLOOD)
    resource.setrlimit(resource.RLIMIT_NOFILE, (max(soft, wanted), hard))
    yield
    resource.setrlimit(resource.RLIMIT_NOFILE, (soft, hard))


def _open_fds() -> int:
    return len(os.listdir("/proc/self/fd"))


async def _proxy(host: Host, limits: EgressLimits, tenant: str = "t") -> EgressProxy:
    proxy = EgressProxy(policy_of("app.test"), EgressRules.parse(f"127.0.0.1:{host.port}"), limits, tenant=tenant,
                        resolver=fake_dns)
    await proxy.start()
    return proxy


async def _flood(proxy: EgressProxy, count: int) -> list[asyncio.StreamWriter]:
    writers = []
    for _ in range(count):
        with_reader = await asyncio.open_unix_connection(proxy.socket_path)
        writers.append(with_reader[1])
    await asyncio.sleep(0.2)  # the proxy's loop accepts what is queued (this is the same loop)
    return writers


async def test_a_flood_of_idle_connections_holds_only_the_calls_limit(host: Host) -> None:
    limits = EgressLimits(connections=64)
    flooded, other = await _proxy(host, limits), await _proxy(host, limits)
    before = _open_fds()
    with structlog.testing.capture_logs() as logs:
        writers = await _flood(flooded, FLOOD)
        held = _open_fds() - before - FLOOD  # the flood's own client ends are this process's too
        answer = await exchange(other, f"GET http://app.test:{host.port}/echo-headers HTTP/1.1\r\n\r\n".encode())
        for writer in writers:
            writer.close()
        await flooded.close()
        await other.close()
    assert held <= limits.connections + LINGERING + 4, held  # was one per connection: 3,000, each for 10 s
    assert answer.startswith(b"HTTP/1.1 200"), answer[:200]
    refused = [entry for entry in logs if entry["event"] == "egress_connections_refused"]
    assert len(refused) == 1 and refused[0]["refused"] == FLOOD - limits.connections
    assert sum(entry["event"] == "egress_connection" for entry in logs) <= limits.connections + 1


async def test_the_connection_past_the_limit_is_refused_before_its_head(host: Host) -> None:
    proxy = await _proxy(host, EgressLimits(connections=1))
    try:
        first = await exchange(proxy, f"GET http://app.test:{host.port}/echo-headers HTTP/1.1\r\n\r\n".encode())
        reader, writer = await asyncio.open_unix_connection(proxy.socket_path)  # sends nothing at all
        second = await asyncio.wait_for(reader.read(), 5)
        writer.close()
    finally:
        await proxy.close()
    assert first.startswith(b"HTTP/1.1 200")
    assert second.startswith(b"HTTP/1.1 403") and b"X-Egress-Outcome: connection_limit" in second


async def test_every_calls_connections_together_stay_under_the_bridges_cap(host: Host) -> None:
    """Four tenants' floods of 8 against a cap of 10 (alone 5 each): the first two take the cap, then each
    newcomer is given connections taken back from the tenants above their fair share (C / n) — the whole cap, never
    past it once the taken-back ones are closed, each near 10 / 4 — and a fifth tenant's call is still relayed."""
    limits = EgressLimits(connections=64, bridge_connections=10)
    tenants = ("t1", "t2", "t3", "t4", "t5")
    proxies = [await _proxy(host, limits, tenant) for tenant in tenants]
    try:
        writers = []
        for proxy in proxies[:4]:
            writers += await _flood(proxy, 8)
            await asyncio.sleep(0.2)  # each flood counted before the next tenant's, the taken-back ones closed
        held = [SHARES.held(tenant) for tenant in tenants[:4]]
        answer = await exchange(proxies[4], f"GET http://app.test:{host.port}/echo-headers HTTP/1.1\r\n\r\n"
                                .encode())
        for one in writers:
            one.close()
    finally:
        for proxy in proxies:
            await proxy.close()
    assert sum(held) == 10 and min(held) >= 2 and max(held) <= 3, held
    assert answer.startswith(b"HTTP/1.1 200"), answer[:200]


async def test_one_tenants_calls_hold_only_its_share_and_another_tenants_call_gets_its_connections(
        host: Host) -> None:
    """The flood the bridge-wide cap once lost to: one tenant's 4 calls trying 8 connections each, with a cap of
    16. They hold its share, 8; the other tenant's call gets its connections, each relayed."""
    limits = EgressLimits(connections=8, bridge_connections=16)
    greedy = [await _proxy(host, limits, "greedy") for _ in range(5)]
    other = await _proxy(host, limits, "other")
    try:
        writers = [writer for proxy in greedy[:4] for writer in await _flood(proxy, 8)]
        reader, writer = await asyncio.open_unix_connection(greedy[4].socket_path)  # a fifth call of the tenant
        refused = await asyncio.wait_for(reader.read(), 5)
        writer.close()
        answers = await asyncio.gather(*(exchange(other, f"GET http://app.test:{host.port}/echo-headers HTTP/1.1"
                                                         "\r\n\r\n".encode()) for _ in range(5)))
        for held in writers:
            held.close()
    finally:
        for proxy in (*greedy, other):
            await proxy.close()
    assert b"X-Egress-Outcome: tenant_connection_limit" in refused and b"its share of the bridge's 16" in refused
    assert b"holds 8 egress connections" in refused or b"hold 8 egress connections" in refused
    assert all(answer.startswith(b"HTTP/1.1 200") for answer in answers), [answer[:120] for answer in answers]


@pytest.mark.parametrize("attackers", [2, 3])
async def test_another_tenants_call_is_relayed_beside_two_and_three_flooding_tenants(
        host: Host, attackers: int) -> None:
    """With a fixed half each, two tenants' floods took the cap of 16 whole and a third tenant's call was refused
    (``bridge_connection_limit``). By the fair-share rule a third flood is given connections taken back from the
    first two, and the victim's call is relayed as well."""
    limits = EgressLimits(connections=64, bridge_connections=16)
    floods = [await _proxy(host, limits, f"attacker-{at}") for at in range(attackers)]
    victim = await _proxy(host, limits, "victim")
    try:
        writers = []
        for proxy in floods:
            writers += await _flood(proxy, 16)
            await asyncio.sleep(0.2)  # each flood counted before the next tenant's
        held = [SHARES.held(f"attacker-{at}") for at in range(attackers)]
        answer = await exchange(victim, f"GET http://app.test:{host.port}/echo-headers HTTP/1.1\r\n\r\n".encode())
        for writer in writers:
            writer.close()
    finally:
        for proxy in (*floods, victim):
            await proxy.close()
    assert sum(held) <= 16 and min(held) >= 16 // (attackers + 1), held
    assert answer.startswith(b"HTTP/1.1 200"), answer[:200]
