"""HTTPS to a host with domain secrets: the egress proxy ends the code's TLS with the call's own authority, puts the
secret into the request's headers, and sends it over its own TLS to the real server, which it verifies as any
client of the bridge's would; the authority can vouch for the secret domains only (a critical name constraint,
enforced by OpenSSL), and a server whose certificate does not name the host is refused."""

from __future__ import annotations

import asyncio
import ssl
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
from aiohttp import web
from cryptography import x509

from responses_bridge.sandbox.egress.policy import EgressRules, parse_policy
from responses_bridge.sandbox.egress.proxy import EgressLimits, EgressProxy
from responses_bridge.sandbox.egress.tls import Interceptor
from tests.support.tls_ca import make_test_ca
from tests.unit.test_egress_proxy import fake_dns

SECRET = "tls-s3cret"


@pytest.fixture(scope="module")
async def tls_host(tmp_path_factory: pytest.TempPathFactory) -> AsyncIterator[tuple[int, Path, list[Any]]]:
    """A TLS host on 127.0.0.1 whose certificate names ``app.test`` and 127.0.0.1 (signed by a test authority)."""
    ca_file, context = make_test_ca(tmp_path_factory.mktemp("tls"), "app.test", "127.0.0.1")
    seen: list[dict[str, str]] = []

    async def echo(request: web.Request) -> web.Response:
        seen.append(dict(request.headers))
        return web.Response(text=f"tls hello {request.path_qs}")

    app = web.Application()
    app.router.add_get("/{tail:.*}", echo)
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0, ssl_context=context)
    await site.start()
    yield site._server.sockets[0].getsockname()[1], ca_file, seen  # type: ignore[union-attr]
    await runner.cleanup()


@pytest.fixture
async def proxy(tls_host: tuple[int, Path, list[Any]], monkeypatch: pytest.MonkeyPatch) -> AsyncIterator[EgressProxy]:
    port, ca_file, _ = tls_host
    monkeypatch.setenv("SSL_CERT_FILE", str(ca_file))  # the bridge's trust store holds the test authority
    policy = parse_policy({"type": "allowlist", "allowed_domains": ["app.test", "other.test"],
                           "domain_secrets": [{"domain": "app.test", "name": "API_KEY", "value": SECRET},
                                              {"domain": "other.test", "name": "OTHER", "value": "x"}]}, "p")
    assert policy is not None
    made = EgressProxy(policy, EgressRules.parse(f"127.0.0.1:{port}"), EgressLimits(), resolver=fake_dns)
    await made.start()
    yield made
    await made.close()


async def https_through(proxy: EgressProxy, host: str, port: int, request: bytes) -> bytes:
    """CONNECT, then TLS trusting what the sandbox is given (the bundle), then ``request``; the answer."""
    reader, writer = await asyncio.open_unix_connection(proxy.socket_path)
    writer.write(f"CONNECT {host}:{port} HTTP/1.1\r\n\r\n".encode())
    established = await reader.readuntil(b"\r\n\r\n")
    assert established.startswith(b"HTTP/1.1 200"), established
    assert proxy.tls is not None
    context = ssl.create_default_context(cadata=proxy.tls.ca_pem().decode())
    await writer.start_tls(context, server_hostname=host)
    writer.write(request)
    answer = await asyncio.wait_for(reader.read(), 15)
    writer.close()
    return answer


async def test_a_secret_reaches_an_https_host_in_its_header(proxy: EgressProxy,
                                                            tls_host: tuple[int, Path, list[Any]]) -> None:
    port, _, seen = tls_host
    placeholder = proxy.environment()["API_KEY"]
    assert proxy.environment()["SSL_CERT_FILE"] == "/run/egress-ca.pem"
    answer = await https_through(proxy, "app.test", port, (
        f"GET /v1/x?q=1 HTTP/1.1\r\nHost: app.test\r\nAuthorization: Bearer {placeholder}\r\n\r\n").encode())
    assert answer.startswith((b"HTTP/1.1 200", b"HTTP/1.0 200")) and answer.endswith(b"tls hello /v1/x?q=1")
    assert seen[-1]["Authorization"] == f"Bearer {SECRET}" and seen[-1]["Host"] == f"app.test:{port}"


async def test_a_server_whose_certificate_does_not_name_the_host_is_refused(
        proxy: EgressProxy, tls_host: tuple[int, Path, list[Any]]) -> None:
    port, _, seen = tls_host
    before = len(seen)
    answer = await https_through(proxy, "other.test", port, b"GET / HTTP/1.1\r\nHost: other.test\r\n\r\n")
    assert answer.startswith(b"HTTP/1.1 502") and b"X-Egress-Outcome: connect_failed" in answer
    assert len(seen) == before


async def test_the_sandbox_bundle_holds_the_system_authorities_and_the_calls(proxy: EgressProxy) -> None:
    binding = proxy.binding()
    [(bundle, inside)] = binding.files.items()
    assert inside == "/run/egress-ca.pem"
    text = Path(bundle).read_bytes()
    assert proxy.tls is not None and text.endswith(proxy.tls.ca_pem()) and text.count(b"BEGIN CERTIFICATE") >= 2


async def test_the_authority_vouches_for_the_secret_domains_only() -> None:
    interceptor = Interceptor(["*.svc.example", "api.example.com", "10.1.2.3"])
    constraint = interceptor.ca.extensions.get_extension_for_class(x509.NameConstraints)
    assert constraint.critical
    assert constraint.value.permitted_subtrees is not None and set(constraint.value.permitted_subtrees) >= {
        x509.DNSName("svc.example"), x509.DNSName("api.example.com")}
    trusting = ssl.create_default_context(cadata=interceptor.ca_pem().decode())
    for host, trusted in (("a.svc.example", True), ("api.example.com", True), ("evil.example.net", False)):
        server = interceptor.server_context(host)  # signed by the authority whatever the name: OpenSSL decides
        ok = await _handshake(server, trusting, host)
        assert ok is trusted, host


async def _handshake(server: ssl.SSLContext, client: ssl.SSLContext, host: str) -> bool:
    async def serve(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await reader.read()
        writer.close()

    listening = await asyncio.start_server(serve, "127.0.0.1", 0, ssl=server)
    port = listening.sockets[0].getsockname()[1]
    try:
        _, writer = await asyncio.open_connection("127.0.0.1", port, ssl=client, server_hostname=host)
    except ssl.SSLCertVerificationError:
        return False
    finally:
        listening.close()
    writer.close()
    return True
