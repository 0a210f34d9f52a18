"""One tenant's egress cannot deny service to the others, end to end: the model's code in the real bubblewrap
sandbox, the real egress proxy, real sockets, through the HTTP door with two tenants (``auth: header``).

- The bridge-wide connection cap is shared: tenant A's two calls trying 8 connections each hold only A's share
  (half of a cap of 12), and tenant B's call gets every one of its connections (it got 403
  ``bridge_connection_limit`` when the cap was one pool).
- A server answering ``100 Continue`` (or another interim head) and then a chunked echo never returns the secret
  split across its chunks; ``Expect`` is never forwarded, and a client that sent ``Expect: 100-continue`` gets the
  proxy's own ``100 Continue`` and its answer.
- While a call downloads through the masking of 32 secrets of 8 KiB (the most a container may have), ``/health``,
  ``/health/ready`` and tenant B's requests keep answering, each within its probe's timeout: the masking cost
  ~20 ms of the event loop per read and starved them.
"""

from __future__ import annotations

import asyncio
import base64
import secrets
from collections.abc import AsyncIterator
from dataclasses import dataclass
from textwrap import dedent
from typing import Any

import aiohttp
import orjson
import pytest

from responses_bridge.demo.procs import wait_http
from responses_bridge.sandbox.doctor import check_bubblewrap
from tests.integration.test_code_interpreter_e2e import run_code
from tests.support.bridge import Sidecar, start_sidecar

pytestmark = [pytest.mark.skipif(check_bubblewrap()[1] is not None, reason="bubblewrap cannot sandbox here"),
              pytest.mark.store_free]  # its subject is the egress proxy: the sidecar keeps its own SQLite file

A, B = "tenant-a", "tenant-b"
SECRET = "s3cret-Value-only-the-host-may-see"
CAP, PER_CALL = 12, 8
DOWNLOAD_CONNECTIONS, DOWNLOAD_BYTES = 4, 8 << 20  # each connection's
PACE = 64 * 1024  # bytes the download server writes every 5 ms: the download lasts seconds, whatever masks it


class Hosts:
    """The test's servers on 127.0.0.1, raw asyncio so each byte they send is the test's own choice:

    ``/hold``: answered only once :attr:`release` is set (counted in :attr:`held`); ``/quick``: answered at once;
    ``/1xx/NNN``: an interim ``NNN`` head, then a chunked echo of the Authorization value split across chunks;
    ``/big``: ``DOWNLOAD_BYTES`` of text, paced (``sending`` counts the answers under way).
    """

    def __init__(self) -> None:
        self.port = 0
        self.server: asyncio.Server | None = None
        self.held = 0
        self.release = asyncio.Event()
        self.heads: list[bytes] = []
        self.bodies: list[bytes] = []
        self.sending = 0
        self.started_sending = asyncio.Event()

    async def start(self) -> None:
        self.server = await asyncio.start_server(self._answer, "127.0.0.1", 0)
        self.port = self.server.sockets[0].getsockname()[1]

    async def _answer(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            head = await reader.readuntil(b"\r\n\r\n")
            self.heads.append(head)
            fields = dict(line.split(b": ", 1) for line in head.split(b"\r\n")[1:] if b": " in line)
            self.bodies.append(await reader.readexactly(int(fields.get(b"Content-Length", b"0"))))
            path = head.split(b" ", 2)[1].decode()
            if path == "/hold":
                self.held += 1
                await self.release.wait()
            if path.startswith("/1xx/"):
                await self._interim_then_chunked(writer, path[5:].encode(), fields.get(b"Authorization", b""))
            elif path == "/big":
                await self._big(writer)
            else:
                writer.write(b"HTTP/1.0 200 OK\r\nContent-Length: 2\r\n\r\nok")
            await writer.drain()
        except (OSError, asyncio.IncompleteReadError):
            pass
        finally:
            writer.close()

    @staticmethod
    async def _interim_then_chunked(writer: asyncio.StreamWriter, status: bytes, authorization: bytes) -> None:
        token = authorization.removeprefix(b"Bearer ")
        writer.write(b"HTTP/1.1 %s Interim\r\n\r\nHTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n" % status)
        for piece in (b"echo ", token[:9], token[9:], b" end"):
            writer.write(b"%x\r\n%s\r\n" % (len(piece), piece))
        writer.write(b"0\r\n\r\n")

    async def _big(self, writer: asyncio.StreamWriter) -> None:
        self.sending += 1
        self.started_sending.set()
        try:
            writer.write(b"HTTP/1.0 200 OK\r\nContent-Length: %d\r\n\r\n" % DOWNLOAD_BYTES)
            text = base64.urlsafe_b64encode(bytes(range(256)) * (PACE // 340 + 1))[:PACE]
            for _ in range(DOWNLOAD_BYTES // PACE):
                writer.write(text)
                await writer.drain()
                await asyncio.sleep(0.005)
        finally:
            self.sending -= 1


@dataclass
class Stack:
    sidecar: Sidecar
    hosts: Hosts


@pytest.fixture(scope="module")
async def stack(fake_upstream: str, tmp_path_factory: pytest.TempPathFactory) -> AsyncIterator[Stack]:
    hosts = Hosts()
    await hosts.start()
    env = {"RESPONSES_BRIDGE_AUTH": "header", "RESPONSES_BRIDGE_CODE_TIMEOUT": "90",
           "RESPONSES_BRIDGE_CODE_CONCURRENCY": "4",  # tenant A's two calls and B's one run at once
           "RESPONSES_BRIDGE_CODE_EGRESS_ALLOWED_TARGETS": f"127.0.0.1:{hosts.port}",
           "RESPONSES_BRIDGE_CODE_EGRESS_BRIDGE_CONNECTIONS": str(CAP),
           "RESPONSES_BRIDGE_CODE_EGRESS_MAX_CONNECTIONS": str(PER_CALL),
           "RESPONSES_BRIDGE_CODE_EGRESS_MAX_BYTES": str(8 * DOWNLOAD_CONNECTIONS * DOWNLOAD_BYTES),
           "RESPONSES_BRIDGE_CODE_EGRESS_CONNECTION_TIMEOUT": "90"}
    process, http_port, _ = start_sidecar(str(tmp_path_factory.mktemp("egress-fairness")), fake_upstream, env=env,
                                          extproc=False, own_sqlite=True)
    try:
        url = f"http://127.0.0.1:{http_port}"
        await wait_http(f"{url}/health", process=process, headers={"x-tenant-id": A})
        yield Stack(Sidecar(fake_upstream, url, 0, process), hosts)
    finally:
        process.stop()
        assert hosts.server is not None
        hosts.server.close()


async def post(stack: Stack, tenant: str, path: str, body: dict[str, Any], timeout: float = 120) -> dict[str, Any]:
    async with aiohttp.ClientSession(stack.sidecar.http_url) as http, http.post(
            path, json=body, headers={"x-tenant-id": tenant}, timeout=aiohttp.ClientTimeout(total=timeout)) as reply:
        found: dict[str, Any] = await reply.json()
        assert reply.status == 200, found
        return found


async def run(stack: Stack, tenant: str, code: str, container: Any) -> Any:
    """Run ``code`` in ``tenant``'s ``container``: the JSON its last line prints."""
    answer = await post(stack, tenant, "/v1/responses", {
        "model": "fake-model", "input": run_code(dedent(code)), "include": ["code_interpreter_call.outputs"],
        "tools": [{"type": "code_interpreter", "container": container}]})
    call = answer["output"][0]
    assert call["type"] == "code_interpreter_call" and call["status"] == "completed", call
    logs = "".join(output["logs"] for output in call.get("outputs") or () if output["type"] == "logs")
    return orjson.loads(logs.strip().splitlines()[-1])


ALLOW = {"type": "auto", "network_policy": {"type": "allowlist", "allowed_domains": ["127.0.0.1"]}}


def through_socket(port: int, path: str, count: int) -> str:
    """Code that opens ``count`` connections straight to the proxy's socket at once, each asking for ``path``, and
    prints each answer's head."""
    return f"""
        import json, socket, threading
        heads = [None] * {count}
        def one(at):
            try:
                end = socket.socket(socket.AF_UNIX)
                end.connect("/run/egress.sock")
                end.sendall(b"GET http://127.0.0.1:{port}{path} HTTP/1.1\\r\\n\\r\\n")
                data = b""
                while piece := end.recv(65536):
                    data += piece
                heads[at] = data.split(b"\\r\\n\\r\\n")[0].decode()
            except OSError as error:
                heads[at] = type(error).__name__
        threads = [threading.Thread(target=one, args=(at,)) for at in range({count})]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
        print(json.dumps(heads))
    """


async def test_another_tenants_call_gets_its_connections_while_one_tenant_holds_its_share(stack: Stack) -> None:
    hosts = stack.hosts
    hosts.held, _ = 0, hosts.release.clear()
    greedy = [asyncio.create_task(run(stack, A, through_socket(hosts.port, "/hold", PER_CALL), ALLOW))
              for _ in range(2)]
    try:
        seen, steady = -1, 0
        for _ in range(300):  # until tenant A's connections stop arriving (both calls have tried all theirs)
            await asyncio.sleep(0.1)
            steady = steady + 1 if hosts.held == seen and seen > 0 else 0
            seen = hosts.held
            if steady >= 15:
                break
        other = await run(stack, B, through_socket(hosts.port, "/quick", 4), ALLOW)
    finally:
        hosts.release.set()
    held = [head for found in await asyncio.gather(*greedy) for head in found]
    assert all(head.startswith("HTTP/1.0 200") for head in other), other  # every one of B's connections
    assert sum(head.startswith("HTTP/1.0 200") for head in held) == CAP // 2, held  # A: its share, no more
    assert all("X-Egress-Outcome: tenant_connection_limit" in head for head in held
               if not head.startswith("HTTP/1.0 200")), held


async def _container_with_secrets(stack: Stack, values: list[str]) -> str:
    made = await post(stack, A, "/v1/containers", {"name": "secrets", "network_policy": {
        "type": "allowlist", "allowed_domains": ["127.0.0.1"],
        "domain_secrets": [{"domain": "127.0.0.1", "name": f"KEY{at}", "value": value}
                           for at, value in enumerate(values)]}})
    return str(made["id"])


def through_proxy(port: int, request: str, then: str = "") -> str:
    """Code that sends ``request`` (placeholders as ``{KEY0}``) through the proxy's relay, and ``then`` once the
    first head is back; prints everything it got, base64."""
    return f"""
        import base64, json, os, socket
        end = socket.create_connection(("127.0.0.1", 3128), timeout=30)
        end.sendall({request!r}.format(**os.environ).encode())
        data = b""
        while b"\\r\\n\\r\\n" not in data and (piece := end.recv(65536)):
            data += piece
        if {then!r}:
            end.sendall({then!r}.encode())
        while piece := end.recv(65536):
            data += piece
        print(json.dumps({{"got": base64.b64encode(data).decode()}}))
    """


@pytest.mark.parametrize("interim", ["100", "103"])
async def test_the_secret_never_comes_back_behind_an_interim_head(stack: Stack, interim: str) -> None:
    container = await _container_with_secrets(stack, [SECRET])
    port = stack.hosts.port
    found = await run(stack, A, through_proxy(port, f"GET http://127.0.0.1:{port}/1xx/{interim} HTTP/1.1\r\n"
                                                    "Authorization: Bearer {KEY0}\r\n\r\n"), container)
    got = base64.b64decode(found["got"])
    assert f"Bearer {SECRET}".encode() in stack.hosts.heads[-1]  # the server had it, and echoed it in two chunks
    assert SECRET[:9].encode() not in got and SECRET[9:].encode() not in got, got
    assert got.startswith(b"HTTP/1.1 502") and b"X-Egress-Outcome: unscannable_answer" in got, got[:300]


async def test_expect_is_not_forwarded_and_the_client_that_sent_it_gets_its_answer(stack: Stack) -> None:
    container = await _container_with_secrets(stack, [SECRET])
    port = stack.hosts.port
    found = await run(stack, A, through_proxy(
        port, f"POST http://127.0.0.1:{port}/quick HTTP/1.1\r\nAuthorization: Bearer {{KEY0}}\r\n"
              "Expect: 100-continue\r\nContent-Length: 9\r\n\r\n", then="the body"[:9].ljust(9, ".")), container)
    got = base64.b64decode(found["got"])
    head = stack.hosts.heads[-1]
    assert b"expect" not in head.lower() and f"Bearer {SECRET}".encode() in head, head
    assert stack.hosts.bodies[-1] == b"the body."
    assert got.startswith(b"HTTP/1.1 100 Continue\r\n\r\nHTTP/1.0 200 OK") and got.endswith(b"\r\n\r\nok"), got


DOWNLOAD = f"""
    import json, os, threading, urllib.request
    got = []
    def one():
        request = urllib.request.Request("http://127.0.0.1:{{port}}/big",
                                         headers={{{{"Authorization": "Bearer " + os.environ["KEY0"]}}}})
        with urllib.request.urlopen(request, timeout=120) as answer:
            size = 0
            while piece := answer.read(1 << 20):
                size += len(piece)
            got.append(size)
    threads = [threading.Thread(target=one) for _ in range({DOWNLOAD_CONNECTIONS})]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    print(json.dumps({{{{"got": got}}}}))
"""


async def test_health_and_another_tenant_answer_while_a_call_downloads_through_the_masking(stack: Stack) -> None:
    values = [secrets.token_urlsafe(8192)[:8192] for _ in range(32)]  # the most a container may have
    container = await _container_with_secrets(stack, values)
    hosts = stack.hosts
    hosts.started_sending.clear()
    download = asyncio.create_task(run(stack, A, DOWNLOAD.format(port=hosts.port), container))
    answered: list[tuple[str, int]] = []
    async with aiohttp.ClientSession(stack.sidecar.http_url) as http:
        await asyncio.wait([download, asyncio.create_task(hosts.started_sending.wait())],
                           return_when=asyncio.FIRST_COMPLETED)
        while hosts.sending and not download.done():
            for path, timeout in (("/health/ready", 2.0), ("/health", 2.0)):  # the probes' timeouts
                async with http.get(path, timeout=aiohttp.ClientTimeout(total=timeout)) as reply:
                    answered.append((path, reply.status))
            async with http.post("/v1/responses", json={"model": "fake-model", "input": "say hi"},
                                 headers={"x-tenant-id": B}, timeout=aiohttp.ClientTimeout(total=5)) as reply:
                answered.append(("other tenant", reply.status))
            await asyncio.sleep(0.1)
        during = len(answered)
    found = await download
    assert found["got"] == [DOWNLOAD_BYTES] * DOWNLOAD_CONNECTIONS  # the download went on to its end
    assert during >= 3 and all(status == 200 for _, status in answered), answered
