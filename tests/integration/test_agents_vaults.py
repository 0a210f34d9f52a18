"""Vaults and credentials (``client.beta.agents.vaults``) through both doors, every 2xx validated strictly with the
SDK's types; and a session whose MCP server is reached with a credential of its vault: the real MCP test server
gets the token, while no answer, event, item, log line or database file of the bridge holds it. The credential
reaching the MCP server is behind the door: on the HTTP door alone (agent_doors ``doors``); the vaults' routes and
the refusals go through both."""

from __future__ import annotations

import hashlib
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import aiohttp
import openai
import pytest
from openai.types.beta.agents import Vault, VaultDeleted
from openai.types.beta.agents.vaults import Credential, CredentialDeleted

from tests.integration.test_agents_api import BETA, MODEL, frames, strict
from tests.integration.test_agents_approvals import read_approving
from tests.support.agent_doors import base_fixture, door_fixture, doors, envoy_fixture, sdk_fixture  # noqa: F401
from tests.support.bridge import Sidecar, running_sidecar
from tests.support.mcp_server import MCPTestServer

pytestmark = pytest.mark.store_proven(
    "tests/integration/test_agents_automations_replicas.py",
    "tests/unit/test_environment_templates.py",
    "tests/integration/test_input_references.py",
    reason="every store/postgres line it covers on PostgreSQL is covered by the modules named (scripts/pg-coverage)",
)

SECRET = "vault-token-5c7e2a91d04b"


@pytest.fixture(scope="module")
def bridge_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("agents-vaults")


@pytest.fixture(scope="module")
async def sidecar(fake_upstream: str, bridge_dir: Path) -> AsyncIterator[Sidecar]:
    async with running_sidecar(str(bridge_dir), fake_upstream, "--log-level", "debug",
                               env={"RESPONSES_BRIDGE_MCP_ALLOWED_HOSTS": "127.0.0.1"},
                               log_file=bridge_dir / "sidecar.log", own_sqlite=True) as started:
        yield started


class Seen:
    """Every body the bridge answered, to look for the secret in afterwards."""

    def __init__(self) -> None:
        self.bodies: list[bytes] = []

    async def call(self, door: aiohttp.ClientSession, method: str, path: str, body: Any = None,
                   **params: str) -> tuple[int, Any]:
        async with door.request(method, path, json=body, params=params or None) as answer:
            raw = await answer.read()
            self.bodies.append(raw)
            return answer.status, (await answer.json() if raw else None)


async def test_vault_and_credential_crud(door: aiohttp.ClientSession, sdk: openai.AsyncOpenAI) -> None:
    seen = Seen()
    status, vault = await seen.call(door, "POST", "/v1/vaults", {"name": "  team  ", "metadata": {"team": "a"}})
    assert status == 200, vault
    strict(Vault, vault)
    assert vault["name"] == "team" and vault["metadata"] == {"team": "a"}
    status, plain = await seen.call(door, "POST", "/v1/vaults", {})
    assert status == 200 and strict(Vault, plain).name is None
    status, updated = await seen.call(door, "POST", f"/v1/vaults/{vault['id']}", {"name": None,
                                                                                  "metadata": {"team": "b"}})
    assert status == 200 and strict(Vault, updated).name is None and updated["metadata"] == {"team": "b"}
    # the SDK's own list: its metadata and status filters as it encodes them
    listed = [found.id async for found in sdk.beta.agents.vaults.list(metadata={"team": "b"}, status=["active"])]
    assert listed == [vault["id"]]
    assert [found.id async for found in sdk.beta.agents.vaults.list(status="archived")] == []
    assert (await sdk.beta.agents.vaults.retrieve(vault["id"])).id == vault["id"]

    credentials = f"/v1/vaults/{vault['id']}/credentials"
    status, bearer = await seen.call(door, "POST", credentials, {
        "name": "mcp", "metadata": {"k": "v"},
        "auth": {"type": "static_bearer", "token": SECRET, "mcp_server_url": "https://mcp.example.com/mcp"}})
    assert status == 200, bearer
    strict(Credential, bearer)
    assert bearer["auth"] == {"type": "static_bearer", "mcp_server_url": "https://mcp.example.com/mcp"}
    status, oauth = await seen.call(door, "POST", credentials, {
        "name": "oauth", "auth": {"type": "mcp_oauth", "access_token": SECRET + "-oauth",
                                  "mcp_server_url": "https://mcp.example.com/mcp", "expires_at": None}})
    assert status == 200 and strict(Credential, oauth).auth.type == "mcp_oauth"
    status, env = await seen.call(door, "POST", credentials, {
        "name": "api", "auth": {"type": "environment_variable", "secret_name": "SERVICE_API_KEY",
                                "secret_value": SECRET + "-env",
                                "networking": {"type": "limited", "allowed_hosts": ["API.Example.com"]}}})
    assert status == 200 and strict(Credential, env).auth.networking.allowed_hosts == ["api.example.com"]
    status, rotated = await seen.call(door, "POST", f"{credentials}/{bearer['id']}", {
        "auth": {"type": "static_bearer", "token": SECRET + "-rotated"}, "metadata": {}})
    assert status == 200 and strict(Credential, rotated).metadata == {}
    status, page = await seen.call(door, "GET", credentials, order="asc")
    assert status == 200 and [strict(Credential, one).id for one in page["data"]] == [
        bearer["id"], oauth["id"], env["id"]]
    status, refused = await seen.call(door, "POST", f"{credentials}/{bearer['id']}", {
        "auth": {"type": "environment_variable", "secret_value": "x"}})
    assert status == 400 and refused["error"]["param"] == "auth.type"
    sdk_credential = await sdk.beta.agents.vaults.credentials.retrieve(env["id"], vault_id=vault["id"])
    assert sdk_credential.auth.type == "environment_variable"

    status, gone = await seen.call(door, "DELETE", f"{credentials}/{oauth['id']}")
    assert status == 200 and strict(CredentialDeleted, gone).deleted is True
    status, gone = await seen.call(door, "DELETE", f"/v1/vaults/{vault['id']}")
    assert status == 200 and strict(VaultDeleted, gone).id == vault["id"]
    for path in (f"/v1/vaults/{vault['id']}", f"{credentials}/{env['id']}"):
        status, missing = await seen.call(door, "GET", path)
        assert status == 404 and missing["error"]["code"] == "not_found"
    assert not [body for body in seen.bodies if SECRET.encode() in body]


@doors("http")
async def test_a_sessions_mcp_server_reached_with_its_vaults_credential(
        door: aiohttp.ClientSession, mcp: MCPTestServer, sidecar: Sidecar, bridge_dir: Path) -> None:
    seen = Seen()
    _, vault = await seen.call(door, "POST", "/v1/vaults", {"name": "tools"})
    status, credential = await seen.call(door, "POST", f"/v1/vaults/{vault['id']}/credentials", {
        "name": "mcp", "auth": {"type": "static_bearer", "token": SECRET, "mcp_server_url": mcp.http_url}})
    assert status == 200, credential
    tool = {"type": "mcp", "server_label": "tools", "allowed_tools": ["whoami", "authorization_digest"],
            "credential_id": credential["id"], "transport": {"type": "http", "server_url": mcp.http_url}}
    _, agent = await seen.call(door, "POST", "/v1/agents", {"model": MODEL, "tools": [tool]})
    async with door.post("/v1/agents/sessions", json={
            "agent_id": agent["id"], "environment": {"type": "none"}, "vault_ids": [vault["id"]],
            "stream": True, "input": "call tools__authorization_digest"}) as answer:
        assert answer.status == 200, await answer.text()
        raw = await read_approving(door, answer)  # the tools do not say they only read: each call is approved
    seen.bodies.append(raw)
    first = frames(raw)
    events = [event for _, event in first]
    assert events[0]["session"]["vault_ids"] == [vault["id"]]
    calls = [event["item"] for event in events
             if event["type"] == "agent.session.turn.item.done" and event["item"]["type"] == "mcp_call"]
    # the MCP server got the credential as the request's bearer token
    assert calls[0]["output"] == hashlib.sha256(f"Bearer {SECRET}".encode()).hexdigest()
    session_id = events[0]["session"]["id"]

    # a server that echoes the credential: masked in the call's output, so in the model's answer too
    status, _ = await seen.call(door, "POST", f"/v1/agents/sessions/{session_id}/events", {"events": [
        {"type": "agent.session.input.message",
         "input": [{"role": "user", "content": [{"type": "input_text", "text": "call tools__whoami"}]}]}]})
    assert status == 202
    async with door.get(f"/v1/agents/sessions/{session_id}/events", params={"until_idle": "true",
                                                                                   "after": first[-1][0]}) as answer:
        raw = await read_approving(door, answer)
    seen.bodies.append(raw)
    whoami = [event["item"]["output"] for _, event in frames(raw)
              if event["type"] == "agent.session.turn.item.done" and event["item"]["type"] == "mcp_call"]
    assert whoami[-1].startswith("authorization=[redacted] ")
    for path in (f"/v1/agents/sessions/{session_id}", f"/v1/agents/sessions/{session_id}/items",
                 f"/v1/agents/sessions/{session_id}/turns", f"/v1/vaults/{vault['id']}/credentials",
                 f"/v1/vaults/{vault['id']}/credentials/{credential['id']}"):
        status, _ = await seen.call(door, "GET", path)
        assert status == 200
    assert not [body for body in seen.bodies if SECRET.encode() in body]
    # nor the bridge's log (at debug) nor any file of its database (rows, WAL)
    for path in bridge_dir.iterdir():
        if path.is_file():
            assert SECRET.encode() not in path.read_bytes(), path.name


async def test_credentials_a_session_cannot_use_are_refused(door: aiohttp.ClientSession,
                                                            mcp: MCPTestServer) -> None:
    seen = Seen()
    _, vault = await seen.call(door, "POST", "/v1/vaults", {})
    _, other = await seen.call(door, "POST", "/v1/vaults", {})
    _, credential = await seen.call(door, "POST", f"/v1/vaults/{vault['id']}/credentials", {
        "name": "mcp", "auth": {"type": "static_bearer", "token": SECRET, "mcp_server_url": mcp.http_url}})
    tool = {"type": "mcp", "server_label": "tools", "credential_id": credential["id"],
            "transport": {"type": "http", "server_url": mcp.http_url}}

    async def session(vault_ids: list[str], server_url: str = mcp.http_url) -> tuple[int, Any]:
        return await seen.call(door, "POST", "/v1/agents/sessions", {
            "agent": {"model": MODEL, "tools": [{**tool, "transport": {"type": "http", "server_url": server_url}}]},
            "environment": {"type": "none"}, "vault_ids": vault_ids, "input": "x"})

    for vault_ids, server_url in (([], mcp.http_url), ([other["id"]], mcp.http_url),
                                  ([vault["id"]], mcp.json_url)):  # not in its vaults; another server
        status, refused = await session(vault_ids, server_url)
        assert status == 400 and refused["error"]["param"] == "agent.tools[0].credential_id", refused
    status, missing = await session(["vault_nope"])
    assert status == 404 and missing["error"]["param"] == "vault_id"
    assert not [body for body in seen.bodies if SECRET.encode() in body]


async def test_another_tenants_vault_is_a_404(fake_upstream: str, tmp_path_factory: pytest.TempPathFactory) -> None:
    async with running_sidecar(str(tmp_path_factory.mktemp("vaults-tenancy")), fake_upstream, extproc=False,
                               env={"RESPONSES_BRIDGE_AUTH": "header"},
                               ready_headers={"x-tenant-id": "alpha"}) as tenanted, \
            aiohttp.ClientSession(tenanted.http_url, timeout=aiohttp.ClientTimeout(total=60)) as http:
        async def call(tenant: str, method: str, path: str, body: Any = None) -> tuple[int, Any]:
            async with http.request(method, path, json=body, headers={**BETA, "x-tenant-id": tenant}) as answer:
                return answer.status, await answer.json()

        _, vault = await call("alpha", "POST", "/v1/vaults", {"name": "mine"})
        status, credential = await call("alpha", "POST", f"/v1/vaults/{vault['id']}/credentials", {
            "name": "c", "auth": {"type": "static_bearer", "token": SECRET, "mcp_server_url": "https://a.example/m"}})
        assert status == 200
        for method, path in (("GET", f"/v1/vaults/{vault['id']}"), ("POST", f"/v1/vaults/{vault['id']}"),
                             ("DELETE", f"/v1/vaults/{vault['id']}"),
                             ("GET", f"/v1/vaults/{vault['id']}/credentials"),
                             ("GET", f"/v1/vaults/{vault['id']}/credentials/{credential['id']}"),
                             ("DELETE", f"/v1/vaults/{vault['id']}/credentials/{credential['id']}")):
            status, _ = await call("beta", method, path, {} if method == "POST" else None)
            assert status == 404, (method, path)
        status, listed = await call("beta", "GET", "/v1/vaults")
        assert status == 200 and listed["data"] == []
        status, refused = await call("beta", "POST", "/v1/agents/sessions", {
            "agent": {"model": MODEL}, "environment": {"type": "none"}, "vault_ids": [vault["id"]], "input": "x"})
        assert status == 404 and refused["error"]["param"] == "vault_id"
        status, still = await call("alpha", "GET", f"/v1/vaults/{vault['id']}/credentials/{credential['id']}")
        assert status == 200 and strict(Credential, still).id == credential["id"]
