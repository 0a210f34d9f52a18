"""``RESPONSES_BRIDGE_AUTH=keys`` through both doors: the bridge's own keys (made with ``responses-bridge keys``, in
the sidecar's database: a SQLite file, or PostgreSQL on the suite's PostgreSQL run), who gets in, and what the
upstream sees.

Two deployments, each a sidecar in its own process (its log lines read from a file) behind an Envoy rendered by
``envoy-config``'s code with ``auth: keys``, the sidecar's own model calls going through Envoy's listener
(``--upstream-via``) as in production: ``keyed`` holds an upstream key (``--api-key``), ``keyless`` holds none
(an upstream that needs no key). The fake upstream records the headers of every model call it gets.
"""

from __future__ import annotations

import asyncio
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
from responses_bridge.envoy_config import Auth, render_bootstrap
from responses_bridge.services.tenancy.identity import SIDECAR_HEADER
from tests.support import zygote
from tests.support.bridge import PYTHON, UpstreamLog, finished_after, finished_requests, keys_command
from tests.support.envoy import free_port, have_envoy, start_envoy
from tests.support.postgres import sidecar_env
from tests.support.sdk import async_sdk
from tests.support.sidecar_state import database_bytes, sidecar_stores

pytestmark = pytest.mark.skipif(not have_envoy(), reason="envoy binary not available")
pytestmark = [pytestmark, pytest.mark.store_proven(
    "tests/integration/test_agents_automations_replicas.py",
    "tests/unit/test_store_contract.py",
    "tests/integration/test_replicas_code.py",
    reason="every store/postgres line it covers on PostgreSQL is covered by the modules named (scripts/pg-coverage)",
)]

MODEL = "fake-model"
UPSTREAM_KEY = "sk-upstream-conf"
SERVER_SEARCH = [{"type": "tool_search"},
                 {"type": "function", "name": "lookup_order", "description": "Look up an order by its number.",
                  "parameters": {"type": "object", "properties": {"number": {"type": "string"}}},
                  "defer_loading": True}]


def keys_cli(db: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return keys_command(str(db), *args)


@dataclass
class Keys:
    acme: str
    beta: str
    revoked: str
    expired: str


@dataclass
class Stack:
    http_url: str
    envoy_url: str
    log_path: Path
    keys: Keys
    upstream: UpstreamLog
    upstream_key: bool  # the sidecar holds UPSTREAM_KEY (--api-key)

    def url(self, door: str) -> str:
        return self.envoy_url if door == "envoy" else self.http_url

    def finished(self, door: str) -> list[dict[str, Any]]:
        """The door's request lines of identified callers (a request's line is written when it ends)."""
        return finished_requests(self.log_path, door, identified=True)

    async def finished_after(self, door: str, before: int) -> list[dict[str, Any]]:
        return await finished_after(self.log_path, door, before, identified=True)


async def make_keys(db: Path) -> Keys:
    """Keys as an operator makes them (the CLI), and one that expired (the store itself: the CLI refuses a past
    expiry)."""
    made = {}
    for tenant in ("acme", "beta", "gone"):
        result = keys_cli(db, "create", "--tenant", tenant, "--expires", "30d")
        assert result.returncode == 0, result.stderr
        made[tenant] = result.stdout.strip()
    revoke = keys_cli(db, "revoke", made["gone"].split("_")[1])
    assert revoke.returncode == 0, revoke.stderr
    async with sidecar_stores(str(db)) as stores:
        expired, _ = await stores.api_keys.create_key("acme", expires_at=int(time.time()) - 60)
    return Keys(made["acme"], made["beta"], made["gone"], expired)


async def start_stack(tmp: Path, fake_upstream: str, *flags: str) -> AsyncIterator[Stack]:
    db = tmp / "bridge.db"
    keys = await make_keys(db)
    listen_port, http_port, extproc_port = free_port(), free_port(), free_port()
    log_path = tmp / "sidecar.log"
    env = {**os.environ, "RESPONSES_BRIDGE_AUTH": "keys", "RESPONSES_BRIDGE_LOG_LEVEL": "info",
           **sidecar_env(str(db))}
    with open(log_path, "wb") as log_file:
        process = zygote.popen(
            [PYTHON, "-m", "responses_bridge", "serve", "--upstream", fake_upstream, "--http-port", str(http_port),
             "--extproc-port", str(extproc_port), "--db", str(db),
             "--upstream-via", f"http://127.0.0.1:{listen_port}/v1", *flags],
            stdout=log_file, stderr=log_file, env=env, start_new_session=True)
    envoy = None
    try:
        await wait_http(f"http://127.0.0.1:{http_port}/health")
        envoy = await start_envoy(render_bootstrap(listen_port=listen_port, extproc_port=extproc_port,
                                                   http_port=http_port, upstream=fake_upstream, admin_port=0,
                                                   auth=Auth("keys")))
        yield Stack(f"http://127.0.0.1:{http_port}", f"http://127.0.0.1:{listen_port}", log_path, keys,
                    UpstreamLog(fake_upstream.removesuffix("/v1")), "--api-key" in flags)
    finally:
        if envoy is not None:
            envoy.stop()
        os.killpg(process.pid, signal.SIGTERM)
        process.wait(timeout=30)


@pytest.fixture(scope="module")
async def keyed(fake_upstream: str, tmp_path_factory: pytest.TempPathFactory) -> AsyncIterator[Stack]:
    async for stack in start_stack(tmp_path_factory.mktemp("keyed"), fake_upstream, "--api-key", UPSTREAM_KEY):
        yield stack


@pytest.fixture(scope="module")
async def keyless(fake_upstream: str, tmp_path_factory: pytest.TempPathFactory) -> AsyncIterator[Stack]:
    async for stack in start_stack(tmp_path_factory.mktemp("keyless"), fake_upstream):
        yield stack


@pytest.fixture(params=["keyed", "keyless"])
def stack(request: pytest.FixtureRequest) -> Stack:
    """Each deployment in turn (a sync fixture: the module's async ones are started outside the test's loop)."""
    return request.getfixturevalue(request.param)  # type: ignore[no-any-return]


async def _create(base_url: str, key: str, stream: bool = False, **params: Any) -> Any:
    async with async_sdk(base_url=f"{base_url}/v1", api_key=key, max_retries=0, timeout=60) as sdk:
        if not stream:
            return await sdk.responses.create(model=MODEL, input="Say hello.", **params)
        final = None
        async with await sdk.responses.create(model=MODEL, input="Say hello.", stream=True, **params) as events:
            async for event in events:
                if event.type in ("response.completed", "response.failed", "response.incomplete"):
                    final = event.response
        assert final is not None, "the stream ended without a terminal event"
        return final


async def _raw(method: str, url: str, key: str | None, body: dict[str, Any] | None = None) -> tuple[int, Any]:
    headers = {"Authorization": f"Bearer {key}"} if key is not None else {}
    async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=60)) as session:
        async with session.request(method, url, headers=headers, json=body) as response:
            return response.status, await response.json(content_type=None)


# --- the keys command ----------------------------------------------------------------------------------------


def test_keys_create_list_revoke(tmp_path: Path) -> None:
    db = tmp_path / "keys.db"
    created = keys_cli(db, "create", "--tenant", "acme", "--expires", "2099-01-31")
    assert created.returncode == 0, created.stderr
    key = created.stdout.strip()
    assert created.stdout == key + "\n"  # the key alone on stdout
    assert key.startswith("rbk_") and key not in created.stderr
    key_id = key.split("_")[1]
    listed = keys_cli(db, "list")
    assert listed.returncode == 0, listed.stderr
    secret = key.split("_", 2)[2]
    assert secret not in listed.stdout and key not in listed.stdout  # never the key
    [row] = [line.split() for line in listed.stdout.splitlines() if line.startswith(key_id)]
    assert row[1:] == ["acme", row[2], "2099-01-31T00:00:00Z", "-"]
    assert keys_cli(db, "revoke", key_id).returncode == 0
    [row] = [line.split() for line in keys_cli(db, "list").stdout.splitlines() if line.startswith(key_id)]
    assert row[4] != "-"  # the time it was revoked
    missing = keys_cli(db, "revoke", "000000000000")
    assert missing.returncode == 1 and "000000000000" in missing.stderr
    # only a salted hash is stored: the secret is nowhere in the database
    assert secret.encode() not in database_bytes(str(db))


@pytest.mark.parametrize("expires", ["3x", "yesterday", "2001-01-01", "0d"])
def test_keys_create_refuses_a_bad_or_past_expiry(tmp_path: Path, expires: str) -> None:
    result = keys_cli(tmp_path / "keys.db", "create", "--tenant", "acme", "--expires", expires)
    assert result.returncode == 2 and result.stdout == ""
    assert "--expires" in result.stderr


# --- who gets in ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize("stream", [False, True], ids=["json", "sse"])
@pytest.mark.parametrize("door", ["http", "envoy"])
async def test_a_valid_key_gets_in_and_the_upstream_gets_the_upstream_key(keyed: Stack, door: str,
                                                                          stream: bool) -> None:
    await keyed.upstream.clear()
    side = "extproc" if door == "envoy" else "http"
    before = len(keyed.finished(side))
    response = await _create(keyed.url(door), keyed.keys.beta, stream)
    assert response.status == "completed"
    sent = [entry["headers"] for entry in await keyed.upstream.entries()]
    assert [headers["authorization"] for headers in sent] == [f"Bearer {UPSTREAM_KEY}"]
    assert [line["tenant"] for line in await keyed.finished_after(side, before)] == ["beta"]


@pytest.mark.parametrize("door", ["http", "envoy"])
async def test_without_an_upstream_key_the_upstream_gets_no_authorization(keyless: Stack, door: str) -> None:
    await keyless.upstream.clear()
    response = await _create(keyless.url(door), keyless.keys.beta)
    assert response.status == "completed"
    [entry] = await keyless.upstream.entries()
    assert entry["headers"]["authorization"] is None


@pytest.mark.parametrize("which", ["missing", "unknown", "malformed", "wrong_secret", "revoked", "expired"])
@pytest.mark.parametrize("door", ["http", "envoy"])
async def test_bad_keys_get_401_without_the_key_in_the_answer(keyed: Stack, door: str, which: str) -> None:
    acme = keyed.keys.acme
    key = {"missing": None, "unknown": "rbk_0123456789ab_" + "A" * 43, "malformed": "sk-not-ours",
           "wrong_secret": acme[:-4] + ("AAAA" if not acme.endswith("AAAA") else "BBBB"),
           "revoked": keyed.keys.revoked, "expired": keyed.keys.expired}[which]
    await keyed.upstream.clear()
    status, body = await _raw("POST", f"{keyed.url(door)}/v1/responses", key, {"model": MODEL, "input": "hi"})
    assert status == 401
    assert set(body["error"]) == {"message", "type", "param", "code"}
    assert body["error"]["code"] == "invalid_api_key" and body["error"]["type"] == "invalid_request_error"
    if key is not None:
        secret = key.split("_", 2)[-1]  # rbk_<id>_<secret>: the secret itself may hold an underscore
        assert key not in orjson.dumps(body).decode() and secret not in body["error"]["message"]
    if which in ("revoked", "expired"):
        assert which in body["error"]["message"]
    assert await keyed.upstream.entries() == []  # nothing went upstream


@pytest.mark.parametrize("door", ["http", "envoy"])
async def test_stored_state_routes_need_a_key_too(keyed: Stack, door: str) -> None:
    response = await _create(keyed.url(door), keyed.keys.acme, store=True)
    status, _ = await _raw("GET", f"{keyed.url(door)}/v1/responses/{response.id}", None)
    assert status == 401
    status, body = await _raw("GET", f"{keyed.url(door)}/v1/responses/{response.id}", keyed.keys.acme)
    assert status == 200 and body["id"] == response.id
    status, _ = await _raw("GET", f"{keyed.url(door)}/v1/responses/{response.id}", keyed.keys.revoked)
    assert status == 401
    status, body = await _raw("GET", f"{keyed.url(door)}/health", None)  # probes carry no key
    assert status == 200


@pytest.mark.parametrize("door", ["http", "envoy"])
async def test_embeddings_and_one_model_need_a_key(keyed: Stack, door: str) -> None:
    """The sidecar answers both on either door (Envoy sends them to the HTTP door): the same 401 without a key."""
    embedding = {"model": "tokenlearn-static-model", "input": "hello"}
    for key in (None, keyed.keys.revoked, "sk-anything"):
        status, body = await _raw("POST", f"{keyed.url(door)}/v1/embeddings", key, embedding)
        assert status == 401 and body["error"]["code"] == "invalid_api_key"
        status, body = await _raw("GET", f"{keyed.url(door)}/v1/models/{MODEL}", key)
        assert status == 401 and body["error"]["code"] == "invalid_api_key"
    status, body = await _raw("POST", f"{keyed.url(door)}/v1/embeddings", keyed.keys.acme, embedding)
    assert status == 200 and len(body["data"][0]["embedding"]) == 64
    status, body = await _raw("GET", f"{keyed.url(door)}/v1/models/{MODEL}", keyed.keys.acme)
    assert status == 200 and body["id"] == MODEL
    # an upstream's embedding model: the same key check, then the sidecar's own call (through Envoy, where the
    # processor lets the sidecar's credential through) with the upstream's key
    upstream_embedding = {"model": "fake-embedding", "input": "hello"}
    status, body = await _raw("POST", f"{keyed.url(door)}/v1/embeddings", "sk-anything", upstream_embedding)
    assert status == 401 and body["error"]["code"] == "invalid_api_key"
    status, body = await _raw("POST", f"{keyed.url(door)}/v1/embeddings", keyed.keys.acme, upstream_embedding)
    assert status == 200 and body["model"] == "fake-embedding" and len(body["data"][0]["embedding"]) == 64


# --- the passthrough routes: the upstream key is never anyone's for the asking -------------------------------


@pytest.mark.parametrize("door", ["http", "envoy"])
async def test_passthrough_routes_need_a_valid_key(stack: Stack, door: str) -> None:
    chat = {"model": MODEL, "messages": [{"role": "user", "content": "Say hello."}]}
    await stack.upstream.clear()
    for key in (None, stack.keys.revoked, stack.keys.expired, "sk-anything"):
        status, body = await _raw("POST", f"{stack.url(door)}/v1/chat/completions", key, chat)
        assert status == 401 and body["error"]["code"] == "invalid_api_key"
        status, body = await _raw("GET", f"{stack.url(door)}/v1/models", key)
        assert status == 401 and body["error"]["code"] == "invalid_api_key"
    assert await stack.upstream.entries() == []
    status, body = await _raw("POST", f"{stack.url(door)}/v1/chat/completions", stack.keys.acme, chat)
    assert status == 200 and body["object"] == "chat.completion"
    status, body = await _raw("GET", f"{stack.url(door)}/v1/models", stack.keys.acme)
    assert status == 200 and body["object"] == "list"
    [entry] = await stack.upstream.entries()
    assert entry["headers"]["authorization"] == (f"Bearer {UPSTREAM_KEY}" if stack.upstream_key else None)
    # the Codex CLI's catalog request (the sidecar's door on both): the same key check, the same upstream key
    codex_catalog = f"{stack.url(door)}/v1/models?client_version=0.169.0"
    for key in (None, stack.keys.revoked, "sk-anything"):
        status, body = await _raw("GET", codex_catalog, key)
        assert status == 401 and body["error"]["code"] == "invalid_api_key"
    status, body = await _raw("GET", codex_catalog, stack.keys.acme)
    assert status == 200 and body["object"] == "list" and body["models"] == []
    entry = (await stack.upstream.entries())[-1]
    assert entry["headers"]["authorization"] == (f"Bearer {UPSTREAM_KEY}" if stack.upstream_key else None)


async def test_a_client_cannot_pass_as_the_sidecar(keyless: Stack) -> None:
    """The sidecar's own credential is an HMAC of its sealing key: a made-up one opens nothing."""
    chat = {"model": MODEL, "messages": [{"role": "user", "content": "Say hello."}]}
    async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=60)) as session:
        async with session.post(f"{keyless.envoy_url}/v1/chat/completions", json=chat,
                                headers={SIDECAR_HEADER: "0" * 64}) as response:
            assert response.status == 401


@pytest.mark.parametrize("stream", [False, True], ids=["json", "sse"])
async def test_server_side_tools_through_envoy(stack: Stack, stream: bool) -> None:
    """Envoy hands this request to the sidecar's HTTP door, whose model turns come back through Envoy's
    passthrough route as the sidecar's own calls: let through, and neither the client's key nor the sidecar's
    credential reaches the upstream."""
    await stack.upstream.clear()
    response = await _create(stack.envoy_url, stack.keys.acme, stream, tools=SERVER_SEARCH)
    assert response.status == "completed"
    sent = [entry["headers"] for entry in await stack.upstream.entries()]
    assert sent
    expected = f"Bearer {UPSTREAM_KEY}" if stack.upstream_key else None
    assert {headers["authorization"] for headers in sent} == {expected}
    assert {headers[SIDECAR_HEADER] for headers in sent} == {None}


async def test_a_revoked_key_stops_working_at_once(keyed: Stack, tmp_path: Path) -> None:
    db = keyed.log_path.parent / "bridge.db"
    made = keys_cli(db, "create", "--tenant", "acme")
    key = made.stdout.strip()
    assert (await _create(keyed.envoy_url, key)).status == "completed"
    assert keys_cli(db, "revoke", key.split("_")[1]).returncode == 0
    for door in ("http", "envoy"):
        status, body = await _raw("POST", f"{keyed.url(door)}/v1/responses", key, {"model": MODEL, "input": "hi"})
        assert status == 401 and "revoked" in body["error"]["message"]


async def test_keys_are_never_logged(keyed: Stack) -> None:
    for door in ("http", "envoy"):
        for key in (keyed.keys.acme, keyed.keys.revoked, keyed.keys.expired):
            await _raw("POST", f"{keyed.url(door)}/v1/responses", key, {"model": MODEL, "input": "hi"})
    await keyed.finished_after("extproc", 0)
    text = keyed.log_path.read_text()
    assert "request_finished" in text
    for key in (keyed.keys.acme, keyed.keys.revoked, keyed.keys.expired, UPSTREAM_KEY):
        assert key not in text and key.split("_", 2)[-1] not in text


@pytest.mark.parametrize("door", ["http", "envoy"])
async def test_background_runs_call_upstream_as_the_sidecar(stack: Stack, door: str) -> None:
    """A background run's model call is the sidecar's own, through Envoy's passthrough route: let through, with
    the upstream key or none."""
    await stack.upstream.clear()
    async with async_sdk(base_url=f"{stack.url(door)}/v1", api_key=stack.keys.acme, max_retries=0,
                                  timeout=60) as sdk:
        response = await sdk.responses.create(model=MODEL, input="in the background", background=True)
        for _ in range(400):
            response = await sdk.responses.retrieve(response.id)
            if response.status in ("completed", "failed", "cancelled", "incomplete"):
                break
            await asyncio.sleep(0.025)
    assert response.status == "completed"
    [entry] = await stack.upstream.entries()
    assert entry["headers"]["authorization"] == (f"Bearer {UPSTREAM_KEY}" if stack.upstream_key else None)
    assert entry["headers"][SIDECAR_HEADER] is None


@pytest.mark.parametrize("door", ["http", "envoy"])
async def test_websocket_mode_needs_a_key(keyless: Stack, door: str) -> None:
    async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=60)) as session:
        with pytest.raises(aiohttp.WSServerHandshakeError) as refused:
            async with session.ws_connect(f"{keyless.url(door)}/v1/responses"):
                pass
        assert refused.value.status == 401
        await keyless.upstream.clear()
        async with session.ws_connect(f"{keyless.url(door)}/v1/responses",
                                      headers={"Authorization": f"Bearer {keyless.keys.acme}"}) as ws:
            await ws.send_str(orjson.dumps({"type": "response.create", "model": MODEL, "input": "hi"}).decode())
            while True:
                event = orjson.loads((await ws.receive(timeout=30)).data)
                if event["type"] in ("response.completed", "response.failed", "error"):
                    break
    assert event["type"] == "response.completed"
    [entry] = await keyless.upstream.entries()
    assert entry["headers"]["authorization"] is None
