"""A browser's bounds on the egress proxy (sandbox/egress/rates.py), over its real Unix socket in front of a real
server on 127.0.0.1: no lifetime count of connections (a hundred pages' worth are served where a code call stops at
its 64), connections open at once and new ones a second bounded instead, and every refusal heard by the gate's
owner — each beside the code call's bound it replaces, which stays."""

from __future__ import annotations

from typing import Any

import pytest

from responses_bridge.sandbox.desktop.egress_watch import MAX_KEPT, DesktopEgress
from responses_bridge.sandbox.desktop.origins import OriginApprovals
from responses_bridge.sandbox.egress.proxy import EgressLimits
from responses_bridge.sandbox.egress.rates import EgressOwner, EgressRates, TokenBucket
from tests.unit.test_egress_proxy import Host, exchange, policy_of
from tests.unit.test_egress_proxy import host as host  # the fixtures: this module's own test host (module scope)
from tests.unit.test_egress_proxy import proxy_for as proxy_for  # and proxies to it, closed after each test

pytestmark = pytest.mark.store_free


class Owner:
    """A gate that approves every origin, with ``rates``, and keeps what it was told."""

    def __init__(self, rates: EgressRates) -> None:
        self.rates = rates
        self.told: list[tuple[str | None, str]] = []

    async def decide(self, origin: str) -> bool:
        return True

    def refused(self, host: str | None, outcome: str, message: str) -> None:
        assert message
        self.told.append((host, outcome))


def get(host: Host, path: str = "/echo-headers", name: str = "app.test") -> bytes:
    return f"GET http://{name}:{host.port}{path} HTTP/1.1\r\n\r\n".encode()


async def test_a_browser_opens_connections_past_a_code_calls_lifetime_count(proxy_for: Any, host: Host) -> None:
    """100 connections one after another: the code call's 64th is its last (control), the browser's are all
    served — its bounds are what it holds at once and how fast it opens them."""
    code, browser = await proxy_for(policy_of("app.test")), await proxy_for(policy_of("app.test"),
                                                                             origins=Owner(EgressRates()))
    assert isinstance(Owner(EgressRates()), EgressOwner)
    coded = [(await exchange(code, get(host)))[:12] for _ in range(EgressLimits().connections + 1)]
    assert coded[-1] == b"HTTP/1.1 403" and set(coded[:-1]) == {b"HTTP/1.1 200"}
    browsed = [(await exchange(browser, get(host)))[:12] for _ in range(100)]
    assert set(browsed) == {b"HTTP/1.1 200"}


async def test_a_browser_past_its_connection_rate_is_refused_and_its_owner_told(proxy_for: Any,
                                                                                host: Host) -> None:
    owner = Owner(EgressRates(connection_burst=3, connections_per_second=0.001, wait=0.5))
    proxy = await proxy_for(policy_of("app.test"), origins=owner)
    answers = [await exchange(proxy, get(host)) for _ in range(4)]
    assert [answer[:12] for answer in answers] == [b"HTTP/1.1 200"] * 3 + [b"HTTP/1.1 403"]
    assert b"X-Egress-Outcome: connection_rate" in answers[-1] and b"PER_SECOND" in answers[-1]
    assert owner.told == [(None, "connection_rate")]


async def test_a_browser_past_its_open_connections_waits_then_is_refused(proxy_for: Any, host: Host) -> None:
    """One place: a second connection while the first is open waits for it, at most ``wait``, then is refused."""
    import asyncio

    owner = Owner(EgressRates(connections=1, wait=0.2))
    proxy = await proxy_for(policy_of("app.test"), origins=owner)
    slow = asyncio.ensure_future(exchange(proxy, get(host, "/slow")))
    await asyncio.sleep(0.3)
    refused = await exchange(proxy, get(host))
    assert refused.startswith(b"HTTP/1.1 403") and b"X-Egress-Outcome: concurrent_limit" in refused
    assert (await slow).startswith(b"HTTP/1.1 200")
    assert (await exchange(proxy, get(host))).startswith(b"HTTP/1.1 200")  # its place given back
    assert owner.told == [(None, "concurrent_limit")]


async def test_a_refused_destination_is_told_with_its_host(proxy_for: Any, host: Host) -> None:
    """A host outside the policy gets its 403 and the owner hears it, naming the host; a served one is not told
    (control)."""
    owner = Owner(EgressRates())
    proxy = await proxy_for(policy_of("app.test"), origins=owner)
    assert (await exchange(proxy, get(host))).startswith(b"HTTP/1.1 200")
    assert owner.told == []
    assert (await exchange(proxy, get(host, name="other.test"))).startswith(b"HTTP/1.1 403")
    assert owner.told == [("other.test", "denied_domain")]


async def test_a_browsers_bytes_are_paced_past_their_burst_never_cut(proxy_for: Any, host: Host) -> None:
    """Three downloads of 1 MiB: a code call bounded to 2.5 MB in all gets two and a cut third (control); a browser
    whose burst is 256 KiB gets all three whole, the bytes past the burst slowed (its bucket: the test below)."""
    limits = EgressLimits(call_bytes=2_500_000)
    code = await proxy_for(policy_of("app.test"), limits)
    sizes = [len(await exchange(code, get(host, "/big"))) for _ in range(3)]
    assert sizes[0] > 1 << 20 and sizes[2] < 1 << 20
    owner = Owner(EgressRates(bytes_per_second=16 << 20, byte_burst=256 << 10))
    browser = await proxy_for(policy_of("app.test"), limits, origins=owner)
    sizes = [len(await exchange(browser, get(host, "/big"))) for _ in range(3)]
    assert all(size > 1 << 20 for size in sizes) and owner.told == []


def test_the_byte_bucket_paces_past_its_burst() -> None:
    now = [0.0]
    bucket = TokenBucket(100.0, 1000.0, clock=lambda: now[0])
    assert bucket.take(1000) == 0.0  # the burst at once
    assert bucket.take(200) == pytest.approx(2.0)  # into debt: two seconds of the rate
    assert bucket.delay(1) == pytest.approx(2.01)
    now[0] = 12.0
    assert bucket.delay(1000) == 0.0 and bucket.take(500) == 0.0  # refilled, never past the burst
    assert bucket.delay(5000) == pytest.approx(5.0)  # at most the burst is waited for


async def test_a_desktop_reports_each_refusal_once_with_its_count() -> None:
    egress = DesktopEgress(OriginApprovals(), EgressRates())
    for _ in range(3):
        egress.refused("ads.test", "denied_domain", "ads.test is not in the container's allowed domains")
    egress.refused(None, "connection_rate", "more than 500 new connections at once")
    report = egress.report()
    assert report == ("a request to ads.test was refused (3 times): ads.test is not in the container's allowed "
                      "domains [denied_domain]",
                      "a connection was refused: more than 500 new connections at once [connection_rate]")
    assert egress.report() == ()  # told once
    egress.refused("android.clients.google.com", "denied_domain", "not allowed")  # the browser's own: not told
    assert egress.report() == ()
    for index in range(MAX_KEPT + 5):
        egress.refused(f"h{index}.test", "denied_domain", "no")
    assert len(egress.report()) == MAX_KEPT + 1  # bounded, the rest counted
    assert await DesktopEgress(OriginApprovals(), EgressRates(), approve=False).decide("https://any.test")


async def test_every_refused_request_is_told_and_a_socket_left_unused_is_not(proxy_for: Any, host: Host) -> None:
    """A URL whose request head passes the proxy's 32 KiB: the client gets the proxy's 400 (not a reset), the owner
    hears it with the host the head's start named; a malformed whole head and a tunnel that carried no TLS are
    told too. Not told: a normal-length URL served (the control), a socket opened and closed without a head, a
    head cut off, a tunnel that carried nothing — no request of anyone's was refused."""
    import asyncio

    owner = Owner(EgressRates())
    proxy = await proxy_for(policy_of("app.test"), origins=owner)
    normal = await exchange(proxy, get(host, "/echo-headers?q=" + "a" * 2000))
    assert normal.startswith(b"HTTP/1.1 200") and owner.told == []

    long = await exchange(proxy, get(host, "/echo-headers?q=" + "a" * 40_000))
    assert long.startswith(b"HTTP/1.1 400") and b"X-Egress-Outcome: head_too_large" in long, long[:300]
    assert b"over 32 KiB" in long
    assert owner.told == [("app.test", "head_too_large")]

    for unused in (b"", b"GET http://app.test/ HT"):  # closed before a whole head: nothing told
        reader, writer = await asyncio.open_unix_connection(proxy.socket_path)
        writer.write(unused)
        writer.write_eof()
        assert (await asyncio.wait_for(reader.read(), 15)).startswith(b"HTTP/1.1 400")
        writer.close()
    tunnel = f"CONNECT app.test:{host.port} HTTP/1.1\r\n\r\n".encode()
    reader, writer = await asyncio.open_unix_connection(proxy.socket_path)  # a tunnel opened, then left unused
    writer.write(tunnel)
    await reader.readuntil(b"\r\n\r\n")
    writer.write_eof()
    assert await asyncio.wait_for(reader.read(), 15) == b""
    writer.close()
    assert owner.told == [("app.test", "head_too_large")]

    bad = await exchange(proxy, b"GET http://app.test/ HTTP/1.1\r\nHost: a\r\nHost: b\r\n\r\n")
    assert bad.startswith(b"HTTP/1.1 400")
    plain = await exchange(proxy, tunnel, then=b"GET /echo-headers HTTP/1.1\r\nHost: app.test\r\n\r\n")
    assert plain.startswith(b"HTTP/1.1 200 Connection established\r\n\r\n") and b"echo" not in plain
    assert owner.told == [("app.test", "head_too_large"), (None, "bad_request"), ("app.test", "not_tls")]


async def test_an_answer_the_proxy_cannot_read_for_secrets_is_told(proxy_for: Any, host: Host) -> None:
    """A host with a secret whose server closes without answering: the proxy, which reads each head of such an
    answer to write the secret out of it, has none to pass on, and the owner hears why (``bad_answer``); the same
    request to the test host's server, answered, is not told (the control)."""
    import asyncio

    async def mute(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await reader.readuntil(b"\r\n\r\n")
        writer.close()

    server = await asyncio.start_server(mute, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    try:
        owner = Owner(EgressRates())
        policy = policy_of("app.test", secrets=[{"domain": "app.test", "name": "K", "value": "v1"}])
        proxy = await proxy_for(policy, targets=f"127.0.0.1:{host.port},127.0.0.1:{port}", origins=owner)
        assert (await exchange(proxy, get(host))).startswith(b"HTTP/1.0 200") and owner.told == []  # (with a secret)
        assert await exchange(proxy, f"GET http://app.test:{port}/ HTTP/1.1\r\n\r\n".encode()) == b""
        assert owner.told == [("app.test", "bad_answer")]
    finally:
        server.close()
