"""``codex exec-server --remote`` serving a ``self_hosted`` session, through both doors: the session's executor
credentials, the exec-server's signed registration and websocket (its direct transport), and the model's shell
commands run there instead of being handed to the client as required actions. Events and items are checked with the
SDK's own types (strict); the exec-server is tests/support/exec_server.py's, written from the protocol, or the real
codex binary where ``CODEX_TEST_BINARY`` names one."""

from __future__ import annotations

import asyncio
import contextlib
import os
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import aiohttp
import openai
import pytest

from responses_bridge.demo.procs import free_port
from responses_bridge.envoy_config import Auth, render_bootstrap
from responses_bridge.services.agents.executor.noise import Identity
from tests.integration.test_agents_api import BETA, MODEL, frames, read_until_idle
from tests.support.bridge import Sidecar, keys_command, running_sidecar
from tests.support.envoy import start_envoy
from tests.support.exec_server import FakeExecServer, real_codex, running_fake_exec_server, signed_headers
from tests.support.exec_server_noise import NoiseFakeExecServer, running_noise_exec_server
from tests.support.sdk import async_sdk

pytestmark = pytest.mark.store_proven(
    "tests/integration/test_agents_automations_replicas.py",
    "tests/unit/test_store_contract.py",
    "tests/integration/test_replicas_failover_envoy.py",
    reason="every store/postgres line it covers on PostgreSQL is covered by the modules named (scripts/pg-coverage)",
)


@pytest.fixture
async def beta_client(base_url: str) -> AsyncIterator[openai.AsyncOpenAI]:
    async with async_sdk(base_url=f"{base_url}/v1", api_key="sk-client", max_retries=0,
                                  timeout=60) as sdk:
        yield sdk


async def new_session(beta_client: openai.AsyncOpenAI, workspace: Path) -> tuple[str, str]:
    agent = await beta_client.beta.agents.create(model=MODEL, instructions="Use the shell.")
    session = await beta_client.beta.agents.sessions.create(
        agent_id=agent.id, environment={"type": "self_hosted", "workspace_directory": str(workspace)})
    assert session.status == "idle" and session.environment.type == "self_hosted"
    return session.id, str(session.environment.id)  # type: ignore[union-attr]


async def credentials(http: aiohttp.ClientSession, session_id: str, headers: dict[str, str] | None = None,
                      ) -> tuple[int, dict[str, Any]]:
    async with http.post(f"/v1/agents/sessions/{session_id}/executor_credentials",
                         headers={**BETA, **(headers or {})}) as answer:
        assert answer.headers.get("Cache-Control") == "no-store" or answer.status != 200
        return answer.status, await answer.json()


async def ask(beta_client: openai.AsyncOpenAI, http: aiohttp.ClientSession, session_id: str,
              text: str) -> list[dict[str, Any]]:
    """One message to the session, and its events until it is idle (each checked against the SDK's union)."""
    await beta_client.beta.agents.sessions.events.create(session_id, events=[{
        "type": "agent.session.input.message",
        "input": [{"role": "user", "content": [{"type": "input_text", "text": text}]}]}])
    async with http.get(f"/v1/agents/sessions/{session_id}/events", headers=BETA) as answer:
        return [event for _, event in frames(await read_until_idle(answer))]


async def test_the_commands_run_on_the_exec_server(beta_client: openai.AsyncOpenAI, http: aiohttp.ClientSession,
                                                   base_url: str, tmp_path: Path) -> None:
    session_id, environment_id = await new_session(beta_client, tmp_path)
    status, creds = await credentials(http, session_id)
    assert status == 200 and creds["environment_id"] == environment_id and not creds["connected"]
    assert creds["remote_path"] == "/v1/agents/executor" and creds["transport"] == "direct_jsonrpc_v1"
    async with running_fake_exec_server(base_url + creds["remote_path"], environment_id,
                                        creds["aws_access_key_id"], creds["aws_secret_access_key"]) as server:
        assert (await credentials(http, session_id))[1]["connected"]
        events = await ask(beta_client, http, session_id, "sh: echo hello > greeting.txt && cat greeting.txt")
    types = [event["type"] for event in events]
    assert "agent.session.requires_action" not in types and types[-1] == "agent.session.idle"
    [done] = [event["item"] for event in events if event["type"] == "agent.session.turn.item.done"
              and event["item"]["type"] == "command_execution"]
    assert done["status"] == "completed" and done["output"] == "hello\n" and done["exit_code"] == 0
    assert done["cwd"] == str(tmp_path) and (tmp_path / "greeting.txt").read_text() == "hello\n"
    assert server.requests[:2] == ["initialize", "process/start"] and "process/read" in server.requests
    text = "".join(event["delta"] for event in events if event["type"] == "agent.session.turn.output_text.delta")
    assert "hello" in text
    items = (await beta_client.beta.agents.sessions.items.list(session_id, order="asc")).data
    assert [item.type for item in items] == ["message", "command_execution", "message"]
    assert items[1].exit_code == 0 and items[1].output == "hello\n"  # type: ignore[union-attr]


async def test_the_commands_run_over_the_noise_relay(beta_client: openai.AsyncOpenAI, http: aiohttp.ClientSession,
                                                     base_url: str, tmp_path: Path) -> None:
    """codex's default transport: the registration bearer, the bridge's hybrid IK handshake as the harness, the
    registry's validation of its key, then JSON-RPC in Noise records (200 KB of output in several of them)."""
    session_id, environment_id = await new_session(beta_client, tmp_path)
    creds = (await credentials(http, session_id))[1]
    async with running_noise_exec_server(base_url + creds["remote_path"], environment_id,
                                         creds["registration_bearer"]) as server:
        assert server.valid and (await credentials(http, session_id))[1]["connected"]
        events = await ask(beta_client, http, session_id,
                           "sh: head -c 200000 /dev/zero | tr '\\0' a; echo; echo noise > n.txt && cat n.txt")
        async with aiohttp.ClientSession() as raw:  # the authorization was good once, for that handshake only
            async with raw.post(f"{base_url}{creds['remote_path']}/cloud/environment/{environment_id}/validate",
                                headers={"Authorization": f"Bearer {creds['registration_bearer']}"},
                                json={"executor_registration_id": server.registration_id,
                                      "harness_public_key": server.identity.public().as_json(),
                                      "harness_key_authorization": "x"}) as answer:
                assert await answer.json() == {"valid": False}
    [done] = [event["item"] for event in events if event["type"] == "agent.session.turn.item.done"
              and event["item"]["type"] == "command_execution"]
    assert done["status"] == "completed" and done["exit_code"] == 0
    assert done["output"] == "a" * 200000 + "\nnoise\n" and (tmp_path / "n.txt").read_text() == "noise\n"
    assert server.requests[:2] == ["initialize", "process/start"] and "process/read" in server.requests
    assert [event["type"] for event in events][-1] == "agent.session.idle"


async def test_a_noise_relay_for_another_session_or_a_spent_url(
        beta_client: openai.AsyncOpenAI, http: aiohttp.ClientSession, base_url: str, tmp_path: Path) -> None:
    session_id, environment_id = await new_session(beta_client, tmp_path)
    other_id, _ = await new_session(beta_client, tmp_path)
    creds = (await credentials(http, session_id))[1]
    others = (await credentials(http, other_id))[1]
    remote = base_url + creds["remote_path"]
    async with aiohttp.ClientSession() as raw:
        server = NoiseFakeExecServer(remote, environment_id, creds["registration_bearer"])
        status, registered = await server.register(raw)
        assert status == 200
        # another session's exec-server cannot validate this registration's harness (its bearer names its own)
        spy = NoiseFakeExecServer(remote, environment_id, others["registration_bearer"])
        spy.registration_id, spy.identity = registered["executor_registration_id"], server.identity
        spied = asyncio.ensure_future(spy.serve(raw, registered["url"]))
        await asyncio.wait_for(spied, 30)
        assert spy.valid is False and not (await credentials(http, session_id))[1]["connected"]
        with pytest.raises(aiohttp.WSServerHandshakeError) as spent:  # the relay URL was used
            await raw.ws_connect(registered["url"])
        assert spent.value.status == 409


async def test_a_failing_command_and_the_client_after_a_disconnect(
        beta_client: openai.AsyncOpenAI, http: aiohttp.ClientSession, base_url: str, tmp_path: Path) -> None:
    session_id, environment_id = await new_session(beta_client, tmp_path)
    creds = (await credentials(http, session_id))[1]
    async with running_fake_exec_server(base_url + creds["remote_path"], environment_id,
                                        creds["aws_access_key_id"], creds["aws_secret_access_key"]):
        events = await ask(beta_client, http, session_id, "sh: echo oops >&2; exit 3")
    [done] = [event["item"] for event in events if event["type"] == "agent.session.turn.item.done"
              and event["item"]["type"] == "command_execution"]
    assert done["status"] == "failed" and done["exit_code"] == 3 and done["output"] == "oops\n"
    for _ in range(100):  # the bridge sees the websocket close
        if not (await credentials(http, session_id))[1]["connected"]:
            break
        await asyncio.sleep(0.05)
    await beta_client.beta.agents.sessions.events.create(session_id, events=[{
        "type": "agent.session.input.message",
        "input": [{"role": "user", "content": [{"type": "input_text", "text": "sh: echo mine"}]}]}])
    async with http.get(f"/v1/agents/sessions/{session_id}/events", headers=BETA) as answer:
        raw = b""
        async for chunk in answer.content.iter_any():
            raw += chunk
            if b"event: agent.session.requires_action\n" in raw and raw.endswith(b"\n\n"):
                break
    assert any(event["type"] == "agent.session.requires_action" for _, event in frames(raw))  # the client's again
    await beta_client.beta.agents.sessions.events.create(session_id, events=[{"type": "agent.session.input.cancel"}])


async def test_what_the_registry_refuses(beta_client: openai.AsyncOpenAI, http: aiohttp.ClientSession,
                                        base_url: str, tmp_path: Path) -> None:
    session_id, environment_id = await new_session(beta_client, tmp_path)
    other_id, other_environment = await new_session(beta_client, tmp_path)
    creds = (await credentials(http, session_id))[1]
    remote = base_url + creds["remote_path"]
    async with aiohttp.ClientSession() as raw:
        # the Noise relay's registration (codex's default transport) takes the session's registration bearer
        noise = f"{remote}/cloud/environment/{environment_id}/register"
        key = Identity.generate().public().as_json()
        bearer = {"Authorization": f"Bearer {creds['registration_bearer']}"}
        for headers in ({"Authorization": "Bearer sk-client"}, {},
                        {"Authorization": f"Bearer {creds['aws_access_key_id']}.{'0' * 32}"}):
            async with raw.post(noise, json={"security_profile": "noise_hybrid_ik_v1", "executor_public_key": key},
                                headers=headers) as answer:
                assert answer.status == 401 and (await answer.json())["error"]["code"] == "invalid_api_key"
        for body, param in (({"security_profile": "legacy", "executor_public_key": key}, "security_profile"),
                            ({"security_profile": "noise_hybrid_ik_v1", "executor_public_key": {**key, "suite": "x"}},
                             "executor_public_key")):
            async with raw.post(noise, json=body, headers=bearer) as answer:
                assert answer.status == 400 and (await answer.json())["error"]["param"] == param
        async with raw.post(f"{remote}/cloud/environment/{other_environment}/register", headers=bearer,
                            json={"security_profile": "noise_hybrid_ik_v1", "executor_public_key": key}) as answer:
            assert answer.status == 404  # the bearer is the session's, for its environment only
        async with raw.post(noise, json={"security_profile": "noise_hybrid_ik_v1", "executor_public_key": key},
                            headers=bearer) as answer:
            registered = await answer.json()
            assert answer.status == 200 and registered["security_profile"] == "noise_hybrid_ik_v1"
            assert registered["url"].startswith("ws://") and "/relay/" in registered["url"]
        with pytest.raises(aiohttp.WSServerHandshakeError) as signed_only:  # a relay URL is not a direct one
            await raw.ws_connect(registered["url"].replace("/relay/", "/connect/"), headers=signed_headers(
                "GET", registered["url"].replace("/relay/", "/connect/"), b"", creds["aws_access_key_id"],
                creds["aws_secret_access_key"]))
        assert signed_only.value.status == 409
        async with raw.post(f"{remote}/cloud/environment/{environment_id}/validate", headers=bearer, json={
                "executor_registration_id": registered["executor_registration_id"], "harness_public_key": key,
                "harness_key_authorization": "made-up"}) as answer:
            assert answer.status == 200 and await answer.json() == {"valid": False}  # no handshake carried it
        wrong = FakeExecServer(remote, environment_id, creds["aws_access_key_id"], "not-the-secret")
        status, body = await wrong.register(raw)
        assert status == 401 and body["error"]["code"] == "invalid_signature"
        unsigned = await raw.post(f"{remote}/cloud/environment/{environment_id}/direct/register",
                                  json={"transport": "direct_jsonrpc_v1"})
        assert unsigned.status == 401 and "not-the-secret" not in await unsigned.text()
        # a session's credentials are for its own environment only
        status, body = await FakeExecServer(remote, other_environment, creds["aws_access_key_id"],
                                            creds["aws_secret_access_key"]).register(raw)
        assert status == 404, body
        server = FakeExecServer(remote, environment_id, creds["aws_access_key_id"], creds["aws_secret_access_key"])
        status, body = await server.register(raw, b'{"transport":"legacy"}')
        assert status == 400 and body["error"]["param"] == "transport"
        status, registered = await server.register(raw)
        assert status == 200 and registered["transport"] == "direct_jsonrpc_v1"
        assert registered["environment_id"] == environment_id and registered["url"].startswith("ws://")
        url = registered["url"]
        with pytest.raises(aiohttp.WSServerHandshakeError) as unsigned_ws:  # the websocket is signed too
            await raw.ws_connect(url)
        assert unsigned_ws.value.status == 401
        connected = asyncio.Event()
        serving = asyncio.ensure_future(server.serve(raw, url, connected))
        await asyncio.wait_for(connected.wait(), 30)
        with pytest.raises(aiohttp.WSServerHandshakeError) as spent:  # the URL's token is spent
            await raw.ws_connect(url, headers=signed_headers("GET", url, b"", creds["aws_access_key_id"],
                                                             creds["aws_secret_access_key"]))
        assert spent.value.status == 409  # codex registers again on a 409
        # a second exec-server of the session is refused while the first serves (never displacing each other)
        status, again = await server.register(raw)
        assert status == 200
        second = again["url"]
        with pytest.raises(aiohttp.WSServerHandshakeError) as served:
            await raw.ws_connect(second, headers=signed_headers("GET", second, b"", creds["aws_access_key_id"],
                                                                creds["aws_secret_access_key"]))
        assert served.value.status == 409 and not serving.done()
        status, body = await server.register(raw, b"x" * 5000)  # bounded before its signature is checked
        assert status == 413, body
        serving.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await serving
    status, body = await credentials(http, "sess_nope")
    assert status == 404
    assert other_id != session_id


ALPHA, OTHER = "alpha", "beta"


@pytest.fixture(scope="module")
async def tenanted(fake_upstream: str, tmp_path_factory: pytest.TempPathFactory) -> AsyncIterator[Sidecar]:
    async with running_sidecar(str(tmp_path_factory.mktemp("exec-tenancy")), fake_upstream, extproc=False,
                               env={"RESPONSES_BRIDGE_AUTH": "header"},
                               ready_headers={"x-tenant-id": ALPHA}) as sidecar:
        yield sidecar


async def test_another_tenant_cannot_attach(tenanted: Sidecar, tmp_path: Path) -> None:
    async with async_sdk(base_url=f"{tenanted.http_url}/v1", api_key="sk-client", max_retries=0,
                                  timeout=60, default_headers={"x-tenant-id": ALPHA}) as alpha, \
            aiohttp.ClientSession(tenanted.http_url) as http:
        session_id, environment_id = await new_session(alpha, tmp_path)
        status, _ = await credentials(http, session_id, {"x-tenant-id": OTHER})
        assert status == 404  # another tenant's session
        theirs, _ = await new_session(async_sdk(
            base_url=f"{tenanted.http_url}/v1", api_key="sk-client", max_retries=0,
            default_headers={"x-tenant-id": OTHER}), tmp_path)
        status, creds = await credentials(http, theirs, {"x-tenant-id": OTHER})
        assert status == 200
        remote = tenanted.http_url + creds["remote_path"]
        # its own credentials do not reach alpha's environment, nor does a key id naming alpha without alpha's secret
        status, _ = await FakeExecServer(remote, environment_id, creds["aws_access_key_id"],
                                         creds["aws_secret_access_key"]).register(http)
        assert status == 404
        mine = (await credentials(http, session_id, {"x-tenant-id": ALPHA}))[1]
        status, body = await FakeExecServer(remote, environment_id, mine["aws_access_key_id"],
                                            creds["aws_secret_access_key"]).register(http)
        assert status == 401 and body["error"]["code"] == "invalid_signature"


@pytest.mark.skipif(real_codex() is None, reason="CODEX_TEST_BINARY names no codex binary")
@pytest.mark.parametrize("transport", ["direct", "noise"])
async def test_the_real_codex_exec_server(beta_client: openai.AsyncOpenAI, http: aiohttp.ClientSession,
                                          base_url: str, tmp_path: Path, transport: str) -> None:
    """Both transports of the real binary: ``direct`` signing with SigV4, and its default, the Noise relay, with
    the registration bearer on its standard input (the hybrid IK handshake, the registry's validation of the
    bridge's harness key, then the same JSON-RPC in Noise records)."""
    session_id, environment_id = await new_session(beta_client, tmp_path)
    creds = (await credentials(http, session_id))[1]
    home = tmp_path / "codex-home"
    home.mkdir()
    env = {"PATH": os.environ.get("PATH", "/usr/bin:/bin"), "CODEX_HOME": str(home),
           "AWS_ACCESS_KEY_ID": creds["aws_access_key_id"], "AWS_SECRET_ACCESS_KEY": creds["aws_secret_access_key"],
           "AWS_REGION": "us-east-1", "AWS_EC2_METADATA_DISABLED": "true"}
    how = ["--aws-sigv4"] if transport == "direct" else ["--registration-bearer-stdin"]
    codex = await asyncio.create_subprocess_exec(
        str(real_codex()), "exec-server", "--remote", base_url + creds["remote_path"], "--environment-id",
        environment_id, "--remote-transport", transport, *how, env=env, stdin=asyncio.subprocess.PIPE,
        stdout=asyncio.subprocess.DEVNULL, stderr=asyncio.subprocess.PIPE)
    assert codex.stdin is not None
    if transport == "noise":
        codex.stdin.write(creds["registration_bearer"].encode() + b"\n")
        await codex.stdin.drain()
    try:
        for _ in range(300):
            if (await credentials(http, session_id))[1]["connected"]:
                break
            await asyncio.sleep(0.1)
        else:
            pytest.fail("the codex exec-server did not connect")
        # 200 KB of output first: a process/read answer spans several Noise records (60 KiB each), put back together
        events = await ask(beta_client, http, session_id,
                           "sh: head -c 200000 /dev/zero | tr '\\0' a; echo; echo real > real.txt && cat real.txt")
    finally:
        codex.kill()
        await codex.wait()
    [done] = [event["item"] for event in events if event["type"] == "agent.session.turn.item.done"
              and event["item"]["type"] == "command_execution"]
    assert done["status"] == "completed" and done["exit_code"] == 0 and done["output"] == "a" * 200000 + "\nreal\n"
    assert (tmp_path / "real.txt").read_text() == "real\n"


Keyed = tuple[str, str, dict[str, str]]


@pytest.fixture(scope="module")
async def keyed(fake_upstream: str, tmp_path_factory: pytest.TempPathFactory) -> AsyncIterator[Keyed]:
    """RESPONSES_BRIDGE_AUTH=keys, both doors (Envoy checking keys too): (HTTP door, Envoy door, tenant -> key)."""
    directory = str(tmp_path_factory.mktemp("exec-keys"))
    db = os.path.join(directory, "keys.db")
    keys = {}
    for tenant in (ALPHA, OTHER):
        made = keys_command(db, "create", "--tenant", tenant)
        assert made.returncode == 0, made.stderr
        keys[tenant] = made.stdout.strip()
    listen_port = free_port()
    async with running_sidecar(directory, fake_upstream, "--db", db, "--upstream-via",
                               f"http://127.0.0.1:{listen_port}/v1",
                               env={**os.environ, "RESPONSES_BRIDGE_AUTH": "keys"}) as sidecar:
        envoy = await start_envoy(render_bootstrap(
            listen_port=listen_port, extproc_port=sidecar.extproc_port,
            http_port=int(sidecar.http_url.rsplit(":", 1)[1]), upstream=fake_upstream, admin_port=0,
            auth=Auth(mode="keys")))
        try:
            yield sidecar.http_url, f"http://127.0.0.1:{listen_port}", keys
        finally:
            envoy.stop()


@pytest.mark.parametrize("through", ["http", "envoy"])
async def test_with_bridge_keys(keyed: Keyed, through: str, tmp_path: Path) -> None:
    """The credentials take the tenant's bridge key; the exec-server's own requests carry none (the middleware
    leaves them to their signature), and another tenant's key reaches nothing of the session."""
    base = keyed[0] if through == "http" else keyed[1]
    keys = keyed[2]
    async with async_sdk(base_url=f"{base}/v1", api_key=keys[ALPHA], max_retries=0, timeout=60) as alpha, \
            aiohttp.ClientSession(base) as http:
        session_id, environment_id = await new_session(alpha, tmp_path)
        assert (await credentials(http, session_id))[0] == 401  # no key
        assert (await credentials(http, session_id, {"Authorization": f"Bearer {keys[OTHER]}"}))[0] == 404
        status, creds = await credentials(http, session_id, {"Authorization": f"Bearer {keys[ALPHA]}"})
        assert status == 200
        for secret in (keys[ALPHA], keys[OTHER]):
            assert secret not in str(creds)
        async with running_fake_exec_server(base + creds["remote_path"], environment_id, creds["aws_access_key_id"],
                                            creds["aws_secret_access_key"]):
            await alpha.beta.agents.sessions.events.create(session_id, events=[{
                "type": "agent.session.input.message",
                "input": [{"role": "user", "content": [{"type": "input_text", "text": "sh: echo keyed"}]}]}])
            async with http.get(f"/v1/agents/sessions/{session_id}/events",
                                headers={**BETA, "Authorization": f"Bearer {keys[ALPHA]}"}) as answer:
                events = [event for _, event in frames(await read_until_idle(answer))]
    [done] = [event["item"] for event in events if event["type"] == "agent.session.turn.item.done"
              and event["item"]["type"] == "command_execution"]
    assert done["status"] == "completed" and done["output"] == "keyed\n"
