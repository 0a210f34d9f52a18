"""A desktop's browser in an agent-sandbox pod reaches its call's egress proxy through its proxy relay
(sandbox/desktop/proxy_relay.py, the credential put in) and the bridge's egress door: a request head too large for
the door and the proxy — a URL of 40,000 characters, or a head just under 32 KiB that the credential puts past it —
is refused by the relay as the proxy refuses one (a 400 ``head_too_large``, not a connection closed unanswered,
which the door did, the proxy never hearing of it), and its request line's start, carried by the desktop's next
answer, is told to the model with its host (egress_watch.py) — beside a request of normal length relayed, served,
and told nothing (the control). All on real sockets: the relay's threads, the door on 127.0.0.1, the proxy on its
Unix socket, a test host behind it."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from typing import Any

import pytest

from responses_bridge.sandbox.agent_sandbox.egress_door import EgressDoor
from responses_bridge.sandbox.desktop.egress_watch import DesktopEgress
from responses_bridge.sandbox.desktop.origins import OriginApprovals
from responses_bridge.sandbox.desktop.proxy_relay import RELAY_HEAD_LIMIT, relayed_proxy, take_refused
from responses_bridge.sandbox.egress.rates import EgressRates
from responses_bridge.sandbox.egress.refusals import TOO_LARGE
from responses_bridge.sandbox.egress.request_head import MAX_HEAD_BYTES
from tests.unit.test_egress_proxy import Host, policy_of
from tests.unit.test_egress_proxy import host as host  # the fixtures: this module's own test host (module scope)
from tests.unit.test_egress_proxy import proxy_for as proxy_for  # and proxies to it, closed after each test

pytestmark = pytest.mark.store_free


@pytest.fixture
async def door() -> AsyncIterator[EgressDoor]:
    made = EgressDoor("127.0.0.1", 0, "http://127.0.0.1:0")
    await made.start()
    yield made
    await made.close()


async def through(relay: str, raw: bytes) -> bytes:
    """Send ``raw`` to the relay as the browser does and read the answer until it is closed."""
    reader, writer = await asyncio.open_connection("127.0.0.1", int(relay.rsplit(":", 1)[1]))
    writer.write(raw)
    answer = await asyncio.wait_for(reader.read(), 15)
    writer.close()
    return answer


def test_the_relays_bound_is_the_proxys() -> None:
    assert RELAY_HEAD_LIMIT == MAX_HEAD_BYTES


async def test_a_head_too_large_is_refused_by_the_relay_and_told_with_its_host(door: EgressDoor, host: Host,
                                                                              proxy_for: Any) -> None:
    egress = DesktopEgress(OriginApprovals(), EgressRates(), approve=False)
    proxy = await proxy_for(policy_of("app.test"), origins=egress)
    _token, url = door.admit(proxy.socket_path)
    relay = relayed_proxy(url)
    assert relay is not None and relay != url
    take_refused()  # whatever an earlier test of this process left

    def get(query: str) -> bytes:
        return f"GET http://app.test:{host.port}/echo-headers?q={query} HTTP/1.1\r\nUser-Agent: t\r\n\r\n".encode()

    served = await through(relay, get("a" * 2000))  # the control: relayed, served, nothing told
    assert served.startswith(b"HTTP/1.1 200") and b"a" * 2000 not in served.split(b"\r\n\r\n", 1)[0]
    egress.relayed(take_refused())
    assert egress.report() == ()

    # the second head is within the bound by itself (the proxy would take it), past it with the credential put in
    assert len(get("b" * (MAX_HEAD_BYTES - 120))) < MAX_HEAD_BYTES
    for query in ("a" * 40_000, "b" * (MAX_HEAD_BYTES - 120)):
        refused = await through(relay, get(query))
        assert refused.startswith(b"HTTP/1.1 400") and b"X-Egress-Outcome: head_too_large" in refused, refused[:200]
        assert b"over 32 KiB" in refused
    starts = take_refused()
    assert [start[:60] for start in starts] == [get("a" * 40)[:60].decode(), get("b" * 40)[:60].decode()]
    egress.relayed(starts)
    [said] = egress.report()
    assert said.startswith("a request to app.test was refused (2 times): the request head is over 32 KiB"), said
    assert said.endswith("[head_too_large]"), said
    egress.relayed(["\x00 not a request line", 7, "CONNECT"])  # starts that name no host: told without one
    assert egress.report() == (f"a connection was refused (3 times): {TOO_LARGE} [head_too_large]",)
    egress.relayed({"not": "a list"})
    assert egress.report() == ()
