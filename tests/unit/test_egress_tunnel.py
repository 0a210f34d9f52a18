"""A CONNECT tunnel carries TLS to the allowed host and nothing else: a real TLS client through the real proxy
reaches the host whose name it sends; plain bytes, a ClientHello naming another site, and a tunnel to a port HTTPS
does not use (unless the deployment names it) never reach a server."""

from __future__ import annotations

import asyncio
import ssl
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
from aiohttp import web

from responses_bridge.sandbox.egress.policy import EgressRules
from responses_bridge.sandbox.egress.proxy import EgressLimits, EgressProxy
from responses_bridge.sandbox.egress.tunnel import NotTheAllowedTLS, server_name
from tests.support.tls_ca import make_test_ca
from tests.unit.test_egress_proxy import Host, exchange, fake_dns, policy_of


@pytest.fixture(scope="module")
async def tls_host(tmp_path_factory: pytest.TempPathFactory) -> AsyncIterator[tuple[int, Path, list[str]]]:
    """A TLS host on 127.0.0.1 whose certificate names ``app.test`` and ``other.test``."""
    ca_file, context = make_test_ca(tmp_path_factory.mktemp("tls"), "app.test", "other.test")
    seen: list[str] = []

    async def hello(request: web.Request) -> web.Response:
        seen.append(request.host)
        return web.Response(text="tunnelled hello")

    app = web.Application()
    app.router.add_get("/{tail:.*}", hello)
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0, ssl_context=context)
    await site.start()
    yield site._server.sockets[0].getsockname()[1], ca_file, seen  # type: ignore[union-attr]
    await runner.cleanup()


@pytest.fixture
async def proxy(tls_host: tuple[int, Path, list[str]]) -> AsyncIterator[EgressProxy]:
    made = EgressProxy(policy_of("app.test"), EgressRules.parse(f"127.0.0.1:{tls_host[0]}"), EgressLimits(),
                       resolver=fake_dns)
    await made.start()
    yield made
    await made.close()


async def _through_tunnel(proxy: EgressProxy, port: int, ca_file: Path, server_name: str) -> bytes:
    """CONNECT app.test:port, then TLS (naming ``server_name``) and one request inside: what came back."""
    reader, writer = await asyncio.open_unix_connection(proxy.socket_path)
    writer.write(f"CONNECT app.test:{port} HTTP/1.1\r\n\r\n".encode())
    established = await reader.readuntil(b"\r\n\r\n")
    assert established.startswith(b"HTTP/1.1 200")
    context = ssl.create_default_context(cafile=str(ca_file))
    try:
        await writer.start_tls(context, server_hostname=server_name)
        writer.write(f"GET / HTTP/1.1\r\nHost: {server_name}\r\nConnection: close\r\n\r\n".encode())
        return await asyncio.wait_for(reader.read(), 10)
    except (ssl.SSLError, ConnectionError, asyncio.IncompleteReadError):
        return b""
    finally:
        writer.close()


async def test_tls_to_the_allowed_host_goes_through(proxy: EgressProxy, tls_host: Any) -> None:
    port, ca_file, seen = tls_host
    answer = await _through_tunnel(proxy, port, ca_file, "app.test")
    assert answer.startswith(b"HTTP/1.1 200") and answer.endswith(b"tunnelled hello"), answer[:100]
    assert seen[-1].startswith("app.test")


async def test_a_hello_naming_another_site_never_reaches_the_server(proxy: EgressProxy, tls_host: Any) -> None:
    port, ca_file, seen = tls_host
    before = len(seen)
    assert await _through_tunnel(proxy, port, ca_file, "other.test") == b""  # a shared front end would serve it
    assert len(seen) == before


async def test_plain_bytes_in_a_tunnel_never_reach_the_server() -> None:
    plain = Host()  # a plain HTTP server: a blind tunnel would carry the request to it
    await plain.start()
    proxy = EgressProxy(policy_of("app.test"), EgressRules.parse(f"127.0.0.1:{plain.port}"), EgressLimits(),
                        resolver=fake_dns)
    await proxy.start()
    try:
        answer = await exchange(proxy, f"CONNECT app.test:{plain.port} HTTP/1.1\r\n\r\n".encode(),
                                then=b"GET /echo-headers HTTP/1.1\r\nHost: app.test\r\n\r\n")
    finally:
        await proxy.close()
        assert plain.runner is not None
        await plain.runner.cleanup()
    assert answer == b"HTTP/1.1 200 Connection established\r\n\r\n" and plain.seen == []


async def test_a_tunnel_goes_to_443_unless_the_deployment_names_the_port() -> None:
    proxy = EgressProxy(policy_of("app.test"), EgressRules.parse("10.0.0.0/8"), EgressLimits(),
                        resolver=fake_dns)  # app.test -> 127.0.0.1: a pair would be needed anyway; 22 is asked
    await proxy.start()
    try:
        for raw in (b"CONNECT app.test:22 HTTP/1.1\r\n\r\n", b"GET http://app.test:8080/ HTTP/1.1\r\n\r\n"):
            answer = await exchange(proxy, raw)
            assert answer.startswith(b"HTTP/1.1 403"), answer
    finally:
        await proxy.close()
    public = EgressProxy(policy_of("example.com"), EgressRules.parse(""), EgressLimits(),
                         resolver=_public_dns)
    await public.start()
    try:
        answer = await exchange(public, b"CONNECT example.com:22 HTTP/1.1\r\n\r\n")
    finally:
        await public.close()
    assert answer.startswith(b"HTTP/1.1 403") and b"X-Egress-Outcome: denied_port" in answer


async def _public_dns(host: str, port: int) -> list[Any]:
    import ipaddress

    return [ipaddress.ip_address("93.184.216.34")]


def test_a_hello_is_parsed_for_its_name_and_anything_else_refused() -> None:
    hello = _hello(b"app.test")
    assert server_name(hello) == "app.test"
    for broken in (b"\x02" + hello[1:], hello[:20], hello[:-3]):
        with pytest.raises(NotTheAllowedTLS):
            server_name(broken)


def _hello(name: bytes) -> bytes:
    sni = b"\x00\x00" + (len(name) + 5).to_bytes(2, "big") + (len(name) + 3).to_bytes(2, "big") + b"\x00" + \
        len(name).to_bytes(2, "big") + name
    body = b"\x03\x03" + b"\x00" * 32 + b"\x00" + b"\x00\x02\x13\x01" + b"\x01\x00" + len(sni).to_bytes(2, "big") + sni
    return b"\x01" + len(body).to_bytes(3, "big") + body
