"""A domain secret never comes back into the sandbox: the proxy puts it only into credential header fields, refuses
TRACE where it would be sent, and writes it over in every answer it reads — a header reflected, a body echoing the
request, the value split across the server's writes — while an answer it could not scan (compressed) is refused.
Real servers on 127.0.0.1, the proxy over its real Unix socket."""

from __future__ import annotations

import asyncio
import base64
import gzip
from collections.abc import AsyncIterator

import pytest
from aiohttp import web

from responses_bridge.sandbox.egress.domain_secrets import Unsecret, carries_credentials, encodings, mask_for
from responses_bridge.sandbox.egress.policy import EgressRules
from responses_bridge.sandbox.egress.proxy import EgressLimits, EgressProxy
from tests.unit.test_egress_proxy import exchange, fake_dns, policy_of

SECRET = "sk-live-0123456789abcdef"


class Reflector:
    """A server that repeats what it got: the request's headers in its own headers and body, a value split over
    two writes, or a compressed echo."""

    def __init__(self) -> None:
        self.port = 0
        self.runner: web.AppRunner | None = None

    async def start(self) -> None:
        app = web.Application()
        app.router.add_route("*", "/reflect", self._reflect)
        app.router.add_get("/split", self._split)
        app.router.add_get("/gzip", self._gzip)
        app.router.add_get("/encoded", self._encoded)
        self.runner = web.AppRunner(app)
        await self.runner.setup()
        site = web.TCPSite(self.runner, "127.0.0.1", 0)
        await site.start()
        self.port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]

    async def _reflect(self, request: web.Request) -> web.Response:
        headers = {"Access-Control-Allow-Origin": request.headers.get("Origin", "*"),
                   "X-Debug-Authorization": request.headers.get("Authorization", "")}
        return web.json_response({"headers": dict(request.headers)}, headers=headers)

    async def _split(self, request: web.Request) -> web.StreamResponse:
        token = request.headers.get("Authorization", "").removeprefix("Bearer ")
        response = web.StreamResponse()
        await response.prepare(request)
        for piece in (b"before ", token[:7].encode(), token[7:].encode(), b" after"):
            await response.write(piece)
            await asyncio.sleep(0.05)
        await response.write_eof()
        return response

    async def _encoded(self, request: web.Request) -> web.Response:
        """The credential it got, in every encoding :func:`encoded_forms` names, one a line."""
        token = request.headers.get("Authorization", "").removeprefix("Bearer ")
        return web.Response(text="\n".join(encoded_forms(token).values()))

    async def _gzip(self, request: web.Request) -> web.Response:
        body = gzip.compress(request.headers.get("Authorization", "").encode())
        return web.Response(body=body, headers={"Content-Encoding": "gzip"})


def encoded_forms(secret: str) -> dict[str, str]:
    """``secret`` as a server may return it encoded: base64 in both alphabets, padded and not, alone and inside a
    longer base64 text at each alignment; percent-encoded with upper and lower hex digits; hex, lower and upper."""
    raw = secret.encode()
    forms: dict[str, str] = {}
    for name, encode in (("standard", base64.b64encode), ("url_safe", base64.urlsafe_b64encode)):
        forms[f"base64_{name}"] = encode(raw).decode()
        forms[f"base64_{name}_unpadded"] = encode(raw).decode().rstrip("=")
        for before in range(3):
            forms[f"base64_{name}_inside_{before}"] = encode(b"\xfb\xff"[:before] + b"{\"token\": \"" + raw +
                                                             b"\", \"scope\": \"all\"}").decode()
    forms["percent_upper"] = "".join(f"%{byte:02X}" if not chr(byte).isalnum() else chr(byte) for byte in raw)
    forms["percent_lower"] = forms["percent_upper"].replace("%2D", "%2d").replace("%5F", "%5f").replace("%2E", "%2e")
    forms["hex_lower"], forms["hex_upper"] = raw.hex(), raw.hex().upper()
    return forms


def revealed(secret: str, text: bytes) -> list[str]:
    """The encodings of ``secret`` (:func:`encoded_forms`) ``text`` still reveals it through: one decoded from a
    line of ``text`` (or, base64 inside a longer text, one whose decoding still holds the secret)."""
    found = []
    lines = text.decode("latin-1").split("\n")
    for line in lines:
        for decode in (base64.b64decode, base64.urlsafe_b64decode):
            try:
                if secret.encode() in decode(line + "=" * (-len(line) % 4)):
                    found.append(line)
            except ValueError:
                pass
        if secret.encode().hex() in line.lower() or secret in line.replace("%2d", "-").replace("%2D", "-"):
            found.append(line)
    return found


@pytest.fixture(scope="module")
async def reflector() -> AsyncIterator[Reflector]:
    served = Reflector()
    await served.start()
    yield served
    assert served.runner is not None
    await served.runner.cleanup()


@pytest.fixture
async def proxy(reflector: Reflector) -> AsyncIterator[EgressProxy]:
    made = EgressProxy(policy_of("app.test", secrets=[{"domain": "app.test", "name": "API_KEY", "value": SECRET}]),
                       EgressRules.parse(f"127.0.0.1:{reflector.port}"), EgressLimits(), tenant="t",
                       resolver=fake_dns)
    await made.start()
    yield made
    await made.close()


def _request(proxy: EgressProxy, port: int, path: str, *, method: str = "GET") -> bytes:
    placeholder = proxy.environment()["API_KEY"]
    return (f"{method} http://app.test:{port}{path} HTTP/1.1\r\nAuthorization: Bearer {placeholder}\r\n"
            f"Origin: http://{placeholder}.example\r\nX-Debug: {placeholder}\r\n\r\n").encode()


async def test_reflected_headers_and_an_echoed_request_never_carry_the_secret(proxy: EgressProxy,
                                                                             reflector: Reflector) -> None:
    answer = await exchange(proxy, _request(proxy, reflector.port, "/reflect"))
    assert answer.startswith((b"HTTP/1.1 200", b"HTTP/1.0 200")), answer[:200]
    assert SECRET.encode() not in answer
    placeholder = proxy.environment()["API_KEY"]
    assert mask_for(SECRET, placeholder).encode() in answer  # where it came back, the mask stands
    assert f"Access-Control-Allow-Origin: http://{placeholder}.example".encode() in answer  # Origin: never put in


async def test_a_secret_split_across_the_servers_writes_is_still_written_over(proxy: EgressProxy,
                                                                              reflector: Reflector) -> None:
    answer = await exchange(proxy, _request(proxy, reflector.port, "/split"))
    assert SECRET.encode() not in answer and answer.endswith(b" after"), answer[-200:]
    assert f"before {mask_for(SECRET, proxy.environment()['API_KEY'])} after".encode() in answer


SECRET_WITH_SYMBOLS = "sk-live_0123.4567~89ab/cd+ef?z=1&y"


@pytest.mark.parametrize("secret", [SECRET, SECRET_WITH_SYMBOLS, SECRET_WITH_SYMBOLS[:-1], SECRET_WITH_SYMBOLS[:-2]])
def test_every_encoding_of_a_secret_is_written_over_like_its_value(secret: str) -> None:
    forms = encoded_forms(secret)
    assert len(revealed(secret, "\n".join(forms.values()).encode())) >= len(forms)  # the check can fail
    for name, form in forms.items():
        for cut in (1, 7, len(form) // 2):
            stream = Unsecret({secret: "PLACEHOLDER_VALUE_XYZ"})
            text = f"before {form} after".encode()
            written = stream.feed(text[:cut]) + stream.feed(text[cut:]) + stream.end()
            assert len(written) == len(text), name  # same length: Content-Length stays true
            assert not revealed(secret, written.removeprefix(b"before ").removesuffix(b" after")), (name, written)
            assert secret.encode() not in written


def test_the_encodings_masked_are_those_of_the_secret_alone() -> None:
    found = encodings(SECRET_WITH_SYMBOLS)
    assert SECRET_WITH_SYMBOLS not in found and len(found) == len(set(found))
    assert SECRET_WITH_SYMBOLS.encode().hex() in found and SECRET_WITH_SYMBOLS.encode().hex().upper() in found
    assert all(len(text) >= 4 for text in encodings("abc"))
    ordinary = Unsecret({SECRET: "PLACEHOLDER"})  # text that only resembles an encoding goes through as it was
    text = base64.b64encode(b"sk-live-0123456789abcdeX" * 2) + b" " + SECRET.encode().hex()[:-2].encode()
    assert ordinary.feed(text) + ordinary.end() == text


async def test_a_host_returning_the_credential_encoded_returns_it_masked(proxy: EgressProxy,
                                                                        reflector: Reflector) -> None:
    answer = await exchange(proxy, _request(proxy, reflector.port, "/encoded"))
    assert answer.startswith((b"HTTP/1.1 200", b"HTTP/1.0 200")), answer[:200]
    body = answer.partition(b"\r\n\r\n")[2]
    assert len(body.split(b"\n")) == len(encoded_forms(SECRET))
    assert not revealed(SECRET, body), body


async def test_an_answer_the_proxy_cannot_scan_is_refused(proxy: EgressProxy, reflector: Reflector) -> None:
    answer = await exchange(proxy, _request(proxy, reflector.port, "/gzip"))
    assert answer.startswith(b"HTTP/1.1 502") and b"X-Egress-Outcome: unscannable_answer" in answer
    assert gzip.compress(f"Bearer {SECRET}".encode()) not in answer


async def test_trace_is_refused_where_a_secret_would_be_sent(proxy: EgressProxy, reflector: Reflector) -> None:
    answer = await exchange(proxy, _request(proxy, reflector.port, "/reflect", method="TRACE"))
    assert answer.startswith(b"HTTP/1.1 403") and b"X-Egress-Outcome: trace_refused" in answer


def test_only_credential_fields_carry_a_secret() -> None:
    assert all(carries_credentials(name) for name in ("Authorization", "X-Api-Key", "api-key", "X-Auth-Token",
                                                      "Private-Token", "X-Service-Key", "Proxy-Authorization"))
    assert not any(carries_credentials(name) for name in ("Host", "Origin", "Referer", "Via", "Forwarded", "Cookie",
                                                          "X-Debug", "User-Agent", "X-Forwarded-Host"))


@pytest.mark.parametrize("cut", range(1, 12))
def test_the_stream_writes_over_a_secret_wherever_the_pieces_are_cut(cut: int) -> None:
    unsecret = Unsecret({"s3cret-value": "PLACEHOLDER!"})
    data = b"x" * 5 + b"s3cret-value" + b"y" * 3 + b"s3cret-value"
    out = b"".join(unsecret.feed(data[at:at + cut]) for at in range(0, len(data), cut)) + unsecret.end()
    assert out == b"x" * 5 + b"PLACEHOLDER!" + b"y" * 3 + b"PLACEHOLDER!"


class RawServer:
    """A server that answers in bytes of its own choosing: an interim ``100 Continue`` (or another 1xx) before a
    chunked echo of the request's Authorization value, split across chunks; it keeps each request head it got."""

    def __init__(self) -> None:
        self.heads: list[bytes] = []
        self.bodies: list[bytes] = []
        self.server: asyncio.Server | None = None
        self.port = 0

    async def start(self) -> None:
        self.server = await asyncio.start_server(self._answer, "127.0.0.1", 0)
        self.port = self.server.sockets[0].getsockname()[1]

    async def _answer(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        head = await reader.readuntil(b"\r\n\r\n")
        self.heads.append(head)
        fields = dict(line.split(b": ", 1) for line in head.split(b"\r\n")[1:] if b": " in line)
        self.bodies.append(await reader.readexactly(int(fields.get(b"Content-Length", b"0"))))
        token = fields.get(b"Authorization", b"").removeprefix(b"Bearer ")
        interim = head.split(b" ", 2)[1].rsplit(b"/", 1)[1]  # /100, /103, /101: the interim status sent first
        writer.write(b"HTTP/1.1 %s Interim\r\n\r\n" % interim)
        writer.write(b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n")
        for piece in (b"echo ", token[:5], token[5:], b" end"):
            writer.write(b"%x\r\n%s\r\n" % (len(piece), piece))
        writer.write(b"0\r\n\r\n")
        await writer.drain()
        writer.close()


@pytest.fixture
async def raw_server() -> AsyncIterator[RawServer]:
    served = RawServer()
    await served.start()
    yield served
    assert served.server is not None
    served.server.close()


async def _raw_proxy(raw_server: RawServer) -> EgressProxy:
    made = EgressProxy(policy_of("app.test", secrets=[{"domain": "app.test", "name": "API_KEY", "value": SECRET}]),
                       EgressRules.parse(f"127.0.0.1:{raw_server.port}"), EgressLimits(), tenant="t",
                       resolver=fake_dns)
    await made.start()
    return made


@pytest.mark.parametrize("interim", ["100", "102", "103", "101"])
async def test_a_chunked_answer_behind_an_interim_head_is_refused_and_the_secret_never_comes_back(
        raw_server: RawServer, interim: str) -> None:
    proxy = await _raw_proxy(raw_server)
    try:
        answer = await exchange(proxy, _request(proxy, raw_server.port, f"/{interim}"))
    finally:
        await proxy.close()
    assert raw_server.heads and f"Bearer {SECRET}".encode() in raw_server.heads[-1]  # the server had it
    assert SECRET[:5].encode() not in answer and SECRET[5:].encode() not in answer  # neither chunk of it
    assert answer.startswith(b"HTTP/1.1 502") and b"X-Egress-Outcome: unscannable_answer" in answer, answer[:300]


async def test_expect_is_met_by_the_proxy_and_not_forwarded(raw_server: RawServer) -> None:
    """A client that sends ``Expect: 100-continue`` gets the proxy's own ``100 Continue`` once its request is on its
    way, sends its body, and the server gets the body without any ``Expect``."""
    proxy = await _raw_proxy(raw_server)
    placeholder = proxy.environment()["API_KEY"]
    head = (f"POST http://app.test:{raw_server.port}/100 HTTP/1.1\r\nAuthorization: Bearer {placeholder}\r\n"
            "Expect: 100-continue\r\nContent-Length: 4\r\n\r\n").encode()
    try:
        answer = await exchange(proxy, head, then=b"body")
    finally:
        await proxy.close()
    assert answer.startswith(b"HTTP/1.1 100 Continue\r\n\r\n"), answer[:200]
    assert raw_server.bodies[-1] == b"body"
    assert b"expect" not in raw_server.heads[-1].lower(), raw_server.heads[-1]


async def test_an_expectation_the_proxy_does_not_meet_is_a_417(raw_server: RawServer) -> None:
    proxy = await _raw_proxy(raw_server)
    placeholder = proxy.environment()["API_KEY"]
    head = (f"GET http://app.test:{raw_server.port}/100 HTTP/1.1\r\nAuthorization: Bearer {placeholder}\r\n"
            "Expect: something-else\r\n\r\n").encode()
    try:
        answer = await exchange(proxy, head)
    finally:
        await proxy.close()
    assert answer.startswith(b"HTTP/1.1 417") and b"X-Egress-Outcome: expectation_failed" in answer
    assert raw_server.heads == []
