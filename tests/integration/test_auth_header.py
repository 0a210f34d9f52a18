"""``RESPONSES_BRIDGE_AUTH=header`` through a real Envoy rendered with the ``jwt_authn`` example: the tenant is the
verified token's claim, and a client that sends the tenant header itself is ignored on every route.

The token is HS256, signed in the test with the standard library; Envoy verifies it against an inline ``oct``
JWKS. The sidecar's log lines name the tenant each door resolved (``request_finished``); the fake upstream records
the tenant header Envoy's translated call carried.
"""

from __future__ import annotations

import asyncio
import base64
import hashlib
import hmac
import os
import signal
import subprocess
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import aiohttp
import orjson
import pytest

from responses_bridge.demo.procs import wait_http
from responses_bridge.envoy_config import Auth, JwtExample, render_bootstrap
from tests.support.bridge import PYTHON, UpstreamLog, finished_after, finished_requests
from tests.support.envoy import free_port, have_envoy, start_envoy

pytestmark = [pytest.mark.skipif(not have_envoy(), reason="envoy binary not available"), pytest.mark.store_free]

MODEL = "fake-model"
ISSUER = "https://issuer.example"
SECRET = b"a-shared-hs256-secret-of-32-bytes!"
FORGED = {"x-tenant-id": "other"}
SERVER_SEARCH = [{"type": "tool_search"},
                 {"type": "function", "name": "lookup_order", "description": "Look up an order by its number.",
                  "parameters": {"type": "object", "properties": {"number": {"type": "string"}}},
                  "defer_loading": True}]


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def jwt(claims: dict[str, Any], secret: bytes = SECRET) -> str:
    head = _b64(orjson.dumps({"alg": "HS256", "typ": "JWT", "kid": "k1"}))
    body = _b64(orjson.dumps({"iss": ISSUER, "exp": int(time.time()) + 3600, **claims}))
    signature = hmac.new(secret, f"{head}.{body}".encode(), hashlib.sha256).digest()
    return f"{head}.{body}.{_b64(signature)}"


JWKS = orjson.dumps({"keys": [{"kty": "oct", "alg": "HS256", "kid": "k1", "k": _b64(SECRET)}]}).decode()


@dataclass
class Stack:
    envoy_url: str
    http_url: str
    log_path: Path
    upstream: UpstreamLog
    bare_envoy_url: str  # header mode without the jwt_authn example: nothing sets the header

    def finished(self, door: str) -> list[dict[str, Any]]:
        return finished_requests(self.log_path, door)

    async def finished_after(self, door: str, before: int) -> list[dict[str, Any]]:
        return await finished_after(self.log_path, door, before)


@pytest.fixture(scope="module")
async def stack(fake_upstream: str, tmp_path_factory: pytest.TempPathFactory) -> AsyncIterator[Stack]:
    tmp = tmp_path_factory.mktemp("auth_header")
    listen_port, http_port, extproc_port = free_port(), free_port(), free_port()
    log_path = tmp / "sidecar.log"
    env = {**os.environ, "RESPONSES_BRIDGE_AUTH": "header", "RESPONSES_BRIDGE_LOG_LEVEL": "info"}
    with open(log_path, "wb") as log_file:
        process = subprocess.Popen(
            [PYTHON, "-m", "responses_bridge", "serve", "--upstream", fake_upstream, "--http-port", str(http_port),
             "--extproc-port", str(extproc_port), "--db", str(tmp / "bridge.db"),
             "--upstream-via", f"http://127.0.0.1:{listen_port}/v1"],
            stdout=log_file, stderr=log_file, env=env, start_new_session=True)
    envoys = []
    try:
        await wait_http(f"http://127.0.0.1:{http_port}/health")
        auth = Auth("header", jwt=JwtExample(issuer=ISSUER, jwks=JWKS, tenant_claim="team"))
        envoys.append(await start_envoy(render_bootstrap(listen_port=listen_port, extproc_port=extproc_port,
                                                         http_port=http_port, upstream=fake_upstream, admin_port=0,
                                                         auth=auth)))
        bare_port = free_port()
        envoys.append(await start_envoy(render_bootstrap(listen_port=bare_port, extproc_port=extproc_port,
                                                         http_port=http_port, upstream=fake_upstream, admin_port=0,
                                                         auth=Auth("header"))))
        yield Stack(f"http://127.0.0.1:{listen_port}", f"http://127.0.0.1:{http_port}", log_path,
                    UpstreamLog(fake_upstream.removesuffix("/v1")), f"http://127.0.0.1:{bare_port}")
    finally:
        for envoy in envoys:
            envoy.stop()
        os.killpg(process.pid, signal.SIGTERM)
        process.wait(timeout=30)


async def _call(method: str, url: str, headers: dict[str, str], **kwargs: Any) -> tuple[int, Any]:
    async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=60)) as session:
        async with session.request(method, url, headers=headers, **kwargs) as response:
            raw = await response.read()
            if response.content_type == "text/event-stream":
                return response.status, raw.decode()
            return response.status, orjson.loads(raw) if raw else None


def _as(tenant: str) -> dict[str, str]:
    """A client holding a token for ``tenant`` that also claims, in the header, to be someone else."""
    return {"Authorization": f"Bearer {jwt({'team': tenant})}", **FORGED}


@pytest.mark.parametrize("stream", [False, True], ids=["json", "sse"])
async def test_the_tokens_tenant_wins_over_the_clients_header_on_the_processor(stack: Stack, stream: bool) -> None:
    await stack.upstream.clear()
    before = len(stack.finished("extproc"))
    status, _ = await _call("POST", f"{stack.envoy_url}/v1/responses", _as("acme"),
                            json={"model": MODEL, "input": "Say hello.", "stream": stream})
    assert status == 200
    assert [line.get("tenant") for line in await stack.finished_after("extproc", before)] == ["acme"]
    [entry] = await stack.upstream.entries()
    assert entry["headers"]["x-tenant-id"] == "acme"  # the trusted header, never the client's
    assert entry["headers"]["authorization"] is None  # the token stops at Envoy (forward: false)


async def test_the_tokens_tenant_wins_on_the_routes_to_the_sidecar(stack: Stack) -> None:
    """GET routes, files and a tool-loop request all reach the HTTP door with the trusted header only."""
    status, created = await _call("POST", f"{stack.envoy_url}/v1/responses", _as("acme"),
                                  json={"model": MODEL, "input": "Say hello."})
    assert status == 200
    before = len(stack.finished("http"))
    status, body = await _call("GET", f"{stack.envoy_url}/v1/responses/{created['id']}", _as("acme"))
    assert status == 200 and body["id"] == created["id"]
    form = aiohttp.FormData()
    form.add_field("purpose", "assistants")
    form.add_field("file", b"hello", filename="hello.txt", content_type="text/plain")
    status, body = await _call("POST", f"{stack.envoy_url}/v1/files", _as("beta"), data=form)
    assert status == 200 and body["object"] == "file"
    status, body = await _call("POST", f"{stack.envoy_url}/v1/responses", _as("gamma"),
                               json={"model": MODEL, "input": "Say hello.", "tools": SERVER_SEARCH})
    assert status == 200 and body["status"] == "completed"
    lines = await stack.finished_after("http", before)
    for _ in range(400):  # the three requests' lines, in the order they ended
        if len(lines) >= 3:
            break
        await asyncio.sleep(0.025)
        lines = stack.finished("http")[before:]
    assert [(line["route"], line.get("tenant")) for line in lines] == [
        ("GET /v1/responses/{response_id}", "acme"), ("POST /v1/files", "beta"), ("POST /v1/responses", "gamma")]


@pytest.mark.parametrize("token", ["none", "bad_signature", "other_issuer", "expired"])
async def test_without_a_valid_token_the_forged_header_gets_nothing(stack: Stack, token: str) -> None:
    headers = dict(FORGED)
    if token != "none":
        claims = {"team": "acme"}
        secret = SECRET
        if token == "bad_signature":
            secret = b"another-secret-another-secret-!!"
        elif token == "other_issuer":
            claims["iss"] = "https://elsewhere.example"
        else:
            claims["exp"] = int(time.time()) - 600  # type: ignore[assignment]  # beyond jwt_authn's 60 s skew
        headers["Authorization"] = f"Bearer {jwt(claims, secret)}"
    await stack.upstream.clear()
    status, body = await _call("POST", f"{stack.envoy_url}/v1/responses", headers,
                               json={"model": MODEL, "input": "Say hello."})
    assert status == 401 and body["error"]["code"] == "missing_tenant"
    status, body = await _call("GET", f"{stack.envoy_url}/v1/responses/resp_0123", headers)
    assert status == 401 and body["error"]["code"] == "missing_tenant"
    assert await stack.upstream.entries() == []


@pytest.mark.parametrize("header", ["x-tenant-id", "X-Tenant-Id"])
async def test_envoy_removes_a_clients_tenant_header_before_anything_else(stack: Stack, header: str) -> None:
    """Header mode without a filter that sets the header: a client's own never reaches the processor or the HTTP
    door, which both answer 401 ``missing_tenant`` (the same request straight to the HTTP door, which trusts the
    header because only Envoy may reach it, gets in)."""
    forged = {header: "other"}
    await stack.upstream.clear()
    status, body = await _call("POST", f"{stack.bare_envoy_url}/v1/responses", forged,
                               json={"model": MODEL, "input": "Say hello."})
    assert status == 401 and body["error"]["code"] == "missing_tenant"
    status, body = await _call("GET", f"{stack.bare_envoy_url}/v1/responses/resp_0123", forged)
    assert status == 401 and body["error"]["code"] == "missing_tenant"
    assert await stack.upstream.entries() == []
    status, body = await _call("GET", f"{stack.http_url}/v1/responses/resp_0123", forged)
    assert status == 404
