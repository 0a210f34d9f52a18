"""The egress proxy over its real Unix socket, in front of real servers on 127.0.0.1: what it lets through, what it
answers 403 to (a domain not listed, an IP literal, a name resolving to a forbidden address, the bridge's own
port), the secrets it puts in, the bounds it keeps, and what it counts."""

from __future__ import annotations

import asyncio
import ipaddress
from collections.abc import AsyncIterator
from typing import Any

import pytest
from aiohttp import web
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from prometheus_client import REGISTRY

from responses_bridge.net.host_policy import IPAddress, resolve
from responses_bridge.sandbox.egress.origins import OriginGate
from responses_bridge.sandbox.egress.policy import EgressRules, NetworkPolicy, parse_policy
from responses_bridge.sandbox.egress.proxy import EgressLimits, EgressProxy

LOOPBACK = ipaddress.ip_address("127.0.0.1")


class Host:
    """A test host on loopback: ``/echo-headers`` answers the headers it got, ``/big`` 1 MiB, ``/slow`` after
    3 s; every request's headers are kept."""

    def __init__(self) -> None:
        self.seen: list[dict[str, str]] = []
        self.port = 0
        self.runner: web.AppRunner | None = None

    async def start(self) -> None:
        app = web.Application()
        app.router.add_route("*", "/echo-headers", self._echo)
        app.router.add_get("/big", self._big)
        app.router.add_get("/slow", self._slow)
        self.runner = web.AppRunner(app)
        await self.runner.setup()
        site = web.TCPSite(self.runner, "127.0.0.1", 0)
        await site.start()
        self.port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]

    async def _echo(self, request: web.Request) -> web.Response:
        self.seen.append(dict(request.headers))
        return web.json_response({"headers": dict(request.headers), "body": (await request.read()).decode()})

    async def _big(self, request: web.Request) -> web.Response:
        return web.Response(body=b"x" * (1 << 20))

    async def _slow(self, request: web.Request) -> web.Response:
        await asyncio.sleep(3)
        return web.Response(text="late")


@pytest.fixture(scope="module")
async def host() -> AsyncIterator[Host]:
    served = Host()
    await served.start()
    yield served
    assert served.runner is not None
    await served.runner.cleanup()


def policy_of(*domains: str, secrets: list[dict[str, Any]] | None = None) -> NetworkPolicy:
    found = parse_policy({"type": "allowlist", "allowed_domains": list(domains), "domain_secrets": secrets or []},
                         "network_policy")
    assert found is not None
    return found


async def fake_dns(host: str, port: int) -> list[IPAddress]:
    """``*.test`` names as a resolver might answer them (rebinding.test: a public and a private address)."""
    answers = {"app.test": ["127.0.0.1"], "other.test": ["127.0.0.1"],
               "rebinding.test": ["93.184.216.34", "10.0.0.8"], "internal.test": ["10.0.0.7"],
               "metadata.test": ["169.254.169.254"]}
    if host in answers:
        return [ipaddress.ip_address(address) for address in answers[host]]
    return await resolve(host, port)


@pytest.fixture
async def proxy_for(host: Host) -> AsyncIterator[Any]:
    made: list[EgressProxy] = []

    async def make(policy: NetworkPolicy, limits: EgressLimits | None = None,
                   targets: str | None = None, *, origins: OriginGate | None = None) -> EgressProxy:
        rules = EgressRules.parse(f"127.0.0.1:{host.port}" if targets is None else targets)
        proxy = EgressProxy(policy, rules, limits or EgressLimits(), tenant="t", resolver=fake_dns, origins=origins)
        await proxy.start()
        made.append(proxy)
        return proxy

    yield make
    for proxy in made:
        await proxy.close()


async def exchange(proxy: EgressProxy, raw: bytes, *, then: bytes = b"") -> bytes:
    """Send ``raw`` (and after the proxy's first answer line, ``then``) and read until the proxy closes."""
    reader, writer = await asyncio.open_unix_connection(proxy.socket_path)
    writer.write(raw)
    if then:
        first = await reader.readuntil(b"\r\n\r\n")
        writer.write(then)
        rest = await asyncio.wait_for(reader.read(), 15)
        writer.close()
        return first + rest
    answer = await asyncio.wait_for(reader.read(), 15)
    writer.close()
    return answer


def counted(domain: str, outcome: str) -> float:
    return REGISTRY.get_sample_value("responses_bridge_egress_connections_total",
                                     {"domain": domain, "outcome": outcome}) or 0.0


async def test_an_allowed_domain_is_reached_with_its_secret_in_the_header(proxy_for: Any, host: Host) -> None:
    proxy = await proxy_for(policy_of("app.test", secrets=[{"domain": "app.test", "name": "API_KEY",
                                                            "value": "s3cret-value"}]))
    placeholder = proxy.environment()["API_KEY"]
    assert placeholder != "s3cret-value" and proxy.environment()["HTTPS_PROXY"] == "http://127.0.0.1:3128"
    before = counted("app.test", "ok")
    body = f'{{"token": "{placeholder}"}}'
    answer = await exchange(proxy, (f"POST http://app.test:{host.port}/echo-headers HTTP/1.1\r\n"
                                    f"Authorization: Bearer {placeholder}\r\nContent-Length: {len(body)}\r\n\r\n"
                                    f"{body}").encode())
    assert answer.startswith((b"HTTP/1.1 200", b"HTTP/1.0 200"))  # asked as HTTP/1.0 (sandbox/egress/domain_secrets.py)
    assert host.seen[-1]["Authorization"] == "Bearer s3cret-value"
    assert host.seen[-1]["Host"] == f"app.test:{host.port}"
    assert placeholder.encode() in answer  # the body is the code's own, not rewritten (it came back as sent)
    assert counted("app.test", "ok") == before + 1


@pytest.mark.parametrize(("domains", "target", "outcome"), [
    (("app.test",), "http://elsewhere.test:{port}/echo-headers", "denied_domain"),
    (("*.app.test",), "http://app.test:{port}/echo-headers", "denied_domain"),
    (("app.test",), "http://127.0.0.1:{port}/echo-headers", "denied_domain"),  # an IP literal not listed
    (("internal.test",), "http://internal.test:{port}/", "denied_address"),
    (("metadata.test",), "http://metadata.test/latest/meta-data/", "denied_address"),
    (("rebinding.test",), "http://rebinding.test:{port}/", "denied_address"),  # one bad address is enough
    (("app.test",), "http://app.test:{other}/", "denied_address"),  # the allowed host, another port of it
    (("localhost",), "http://localhost:{other}/", "denied_address"),
    (("127.0.0.1",), "http://127.0.0.1:{other}/", "denied_address"),
])
async def test_refused_targets_get_a_403_from_the_proxy(proxy_for: Any, host: Host, domains: tuple[str, ...],
                                                         target: str, outcome: str) -> None:
    proxy = await proxy_for(policy_of(*domains))
    url = target.format(port=host.port, other=host.port + 1)
    before = len(host.seen)
    answer = await exchange(proxy, f"GET {url} HTTP/1.1\r\n\r\n".encode())
    assert answer.startswith(b"HTTP/1.1 403") and f"X-Egress-Outcome: {outcome}".encode() in answer
    assert len(host.seen) == before


async def test_a_tunnel_to_a_host_with_secrets_is_never_a_blind_one(proxy_for: Any, host: Host) -> None:
    """Bytes that are not TLS to the call's authority (test_egress_tls.py) never reach the server."""
    proxy = await proxy_for(policy_of("app.test", secrets=[{"domain": "app.test", "name": "K", "value": "v1"}]))
    before = len(host.seen)
    answer = await exchange(proxy, f"CONNECT app.test:{host.port} HTTP/1.1\r\n\r\n".encode(),
                            then=b"GET /echo-headers HTTP/1.1\r\nHost: app.test\r\n\r\n")
    assert answer.startswith(b"HTTP/1.1 200 Connection established\r\n\r\n")
    assert b"echo" not in answer and len(host.seen) == before


async def test_bad_requests_get_a_400(proxy_for: Any) -> None:
    proxy = await proxy_for(policy_of("app.test"))
    for raw in (b"GET /relative HTTP/1.1\r\n\r\n", b"GET https://app.test/ HTTP/1.1\r\n\r\n",
                b"GET http://app.test/ HTTP/1.1\r\nHost: a\r\nHost: b\r\n\r\n", b"x" * 40000 + b"\r\n\r\n"):
        assert (await exchange(proxy, raw)).startswith(b"HTTP/1.1 400")


async def test_a_connection_stops_at_its_bytes(proxy_for: Any, host: Host) -> None:
    proxy = await proxy_for(policy_of("app.test"), EgressLimits(connection_bytes=100_000))
    before = counted("app.test", "bytes_limit")
    answer = await exchange(proxy, f"GET http://app.test:{host.port}/big HTTP/1.1\r\n\r\n".encode())
    assert answer.startswith(b"HTTP/1.1 200") and len(answer) < 100_000 + 1000
    assert counted("app.test", "bytes_limit") == before + 1


async def test_a_call_stops_at_its_bytes_over_all_connections(proxy_for: Any, host: Host) -> None:
    proxy = await proxy_for(policy_of("app.test"), EgressLimits(call_bytes=2_500_000))
    sizes = [len(await exchange(proxy, f"GET http://app.test:{host.port}/big HTTP/1.1\r\n\r\n".encode()))
             for _ in range(3)]
    assert sizes[0] > 1 << 20 and sizes[1] > 1 << 20 and sizes[2] < 1 << 20
    last = await exchange(proxy, f"GET http://app.test:{host.port}/big HTTP/1.1\r\n\r\n".encode())
    assert last.startswith(b"HTTP/1.1 403") and b"X-Egress-Outcome: bytes_limit" in last


async def test_a_connection_stops_at_its_time(proxy_for: Any, host: Host) -> None:
    proxy = await proxy_for(policy_of("app.test"), EgressLimits(connection_seconds=0.5))
    before = counted("app.test", "timeout")
    answer = await exchange(proxy, f"GET http://app.test:{host.port}/slow HTTP/1.1\r\n\r\n".encode())
    assert answer == b"" and counted("app.test", "timeout") == before + 1


async def test_a_call_opens_at_most_its_connections(proxy_for: Any, host: Host) -> None:
    proxy = await proxy_for(policy_of("app.test"), EgressLimits(connections=2))
    request = f"GET http://app.test:{host.port}/echo-headers HTTP/1.1\r\n\r\n".encode()
    answers = [await exchange(proxy, request) for _ in range(3)]
    assert [answer[:12] for answer in answers] == [b"HTTP/1.1 200", b"HTTP/1.1 200", b"HTTP/1.1 403"]


async def test_closing_the_proxy_ends_its_connections_and_removes_its_socket(proxy_for: Any, host: Host) -> None:
    proxy = await proxy_for(policy_of("app.test"))
    reader, writer = await asyncio.open_unix_connection(proxy.socket_path)
    writer.write(f"GET http://app.test:{host.port}/slow HTTP/1.1\r\n\r\n".encode())
    await writer.drain()
    await asyncio.sleep(0.2)
    path = proxy.socket_path
    await proxy.close()
    assert await asyncio.wait_for(reader.read(), 5) == b""
    writer.close()
    import os

    assert not os.path.exists(path)


HOSTS = st.sampled_from(["app.test", "APP.test", "other.test", "elsewhere.test", "127.0.0.1", "[::1]", "internal.test",
                         "app.test.", "app.test@other.test", "xn--app.test", "a_b.test", ""])
METHODS = st.sampled_from(["GET", "POST", "CONNECT", "PUT", "get", "G ET"])
FIELD_LINES = st.lists(st.sampled_from(["Host: other.test", "Host: app.test", "Content-Length: 0",
                                        "Transfer-Encoding: chunked", "X: \x00", "Proxy-Authorization: x",
                                        "Connection: Host", "X-Long: " + "y" * 100]), max_size=3)


@given(METHODS, st.sampled_from(["http://", "https://", "", "ftp://"]), HOSTS,
       st.sampled_from(["", ":{port}", ":0", ":99999", ":x"]), st.sampled_from(["", "/echo-headers", "?q"]),
       FIELD_LINES)
@settings(max_examples=150, deadline=None, suppress_health_check=list(HealthCheck), derandomize=True)
async def test_generated_requests_reach_only_the_allowed_host(host: Host, method: str, scheme: str, name: str,
                                                              port: str, path: str, fields: list[str]) -> None:
    """Whatever the head, the proxy answers it or forwards it, and only ever to ``app.test`` at its port."""
    proxy = EgressProxy(policy_of("app.test"), EgressRules.parse(f"127.0.0.1:{host.port}"), EgressLimits(),
                        resolver=fake_dns)
    await proxy.start()
    try:
        before = len(host.seen)
        target = f"{scheme}{name}{port.format(port=host.port)}{path}"
        head = f"{method} {target} HTTP/1.1\r\n" + "".join(f"{line}\r\n" for line in fields) + "\r\n"
        answer = await exchange(proxy, head.encode("latin-1"))
        assert answer == b"" or answer.startswith(b"HTTP/1.1 ")
        for headers in host.seen[before:]:
            assert headers["Host"] == f"app.test:{host.port}"
    finally:
        await proxy.close()
