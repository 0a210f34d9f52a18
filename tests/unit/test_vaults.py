"""Vaults and credentials over the real agents store (SQLite and PostgreSQL): a credential's secret sealed in its
row and never in what a route renders, a tenant's own, gone with its vault; the look-ups sessions make (an MCP
server's bearer token, an environment's domain secrets)."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from responses_bridge.protocol.errors import APIError
from responses_bridge.sealing import Sealer
from responses_bridge.services.agents.vaults.vaults import VaultService
from responses_bridge.store.base_agents import AgentStore
from tests.unit.store_kinds import KINDS
from tests.unit.test_agent_store import agent_store

SECRET = "s3cr3t-vault-value-91f2"
MCP_URL = "https://mcp.example.com/mcp"


def bearer(token: str = SECRET) -> dict:
    return {"name": "api", "auth": {"type": "static_bearer", "token": token, "mcp_server_url": MCP_URL}}


def env_var(networking: dict, name: str = "SERVICE_KEY", value: str = SECRET) -> dict:
    return {"name": name.lower(), "auth": {"type": "environment_variable", "secret_name": name,
                                           "secret_value": value, "networking": networking}}


async def rows_hold(store: AgentStore, text: str, vault_id: str) -> bool:
    page = await store.page("vault_credential", tenant="a", parent=vault_id, limit=100)
    return text in repr(page.data)


@pytest.mark.parametrize("kind", KINDS)
async def test_credentials_are_sealed_their_tenants_and_go_with_their_vault(
        kind: str, request: pytest.FixtureRequest, tmp_path: Path) -> None:
    async with agent_store(kind, request, tmp_path) as store:
        vaults = VaultService(store, Sealer(os.urandom(32)))
        vault = await vaults.create({"name": "  team  ", "metadata": {"k": "v"}}, tenant="a")
        assert vault["name"] == "team" and vault["object"] == "vault"
        credential = await vaults.create_credential(vault["id"], bearer(), tenant="a")
        assert credential["auth"] == {"type": "static_bearer", "mcp_server_url": MCP_URL}
        assert SECRET not in repr(credential) and not await rows_hold(store, SECRET, vault["id"])
        assert await vaults.mcp_token([vault["id"]], credential["id"], MCP_URL + "/", tenant="a", param="p") == SECRET
        # rotated: the new token is the one used, still never rendered
        rotated = await vaults.update_credential(vault["id"], credential["id"],
                                                 {"auth": {"type": "static_bearer", "token": "rotated-2"}},
                                                 tenant="a")
        assert "rotated-2" not in repr(rotated)
        assert await vaults.mcp_token([vault["id"]], credential["id"], MCP_URL, tenant="a", param="p") == "rotated-2"
        for refused in ((["vault_other"], credential["id"], MCP_URL), ([vault["id"]], credential["id"],
                                                                       "https://elsewhere.example.com/mcp")):
            with pytest.raises(APIError) as caught:
                await vaults.mcp_token(*refused, tenant="a", param="agent.tools[0].credential_id")
            assert caught.value.status == 400 and "rotated-2" not in caught.value.message
        for call in (vaults.get(vault["id"], tenant="b"),
                     vaults.get_credential(vault["id"], credential["id"], tenant="b"),
                     vaults.mcp_token([vault["id"]], credential["id"], MCP_URL, tenant="b", param="p")):
            with pytest.raises(APIError):
                await call
        await vaults.delete(vault["id"], tenant="a")
        assert await store.get("vault_credential", credential["id"], tenant="a") is None


@pytest.mark.parametrize("kind", KINDS)
async def test_domain_secrets_of_a_sessions_vaults(kind: str, request: pytest.FixtureRequest,
                                                   tmp_path: Path) -> None:
    async with agent_store(kind, request, tmp_path) as store:
        vaults = VaultService(store, Sealer(os.urandom(32)))
        first = await vaults.create({}, tenant="a")
        second = await vaults.create({"name": "other"}, tenant="a")
        await vaults.create_credential(first["id"], env_var({"type": "limited",
                                                             "allowed_hosts": ["API.example.com", "not.allowed"]}),
                                       tenant="a")
        await vaults.create_credential(first["id"], bearer(), tenant="a")  # an MCP server's: no domain secret
        await vaults.create_credential(second["id"], env_var({"type": "unrestricted"}, "OTHER", "other-value"),
                                       tenant="a")
        secrets = await vaults.domain_secrets([first["id"], second["id"]], ["*.example.com", "pypi.org"],
                                              tenant="a")
        assert sorted((secret.domain, secret.name, secret.value) for secret in secrets) == [
            ("*.example.com", "OTHER", "other-value"), ("api.example.com", "SERVICE_KEY", SECRET),
            ("pypi.org", "OTHER", "other-value")]
        assert SECRET not in repr(secrets)  # a DomainSecret's value stays out of its repr (and so of logs)
        assert await vaults.domain_secrets([first["id"]], ["*.example.com"], tenant="b") == []
        await vaults.delete(second["id"], tenant="a")
        left = await vaults.domain_secrets([first["id"], second["id"]], ["api.example.com"], tenant="a")
        assert [secret.name for secret in left] == ["SERVICE_KEY"]


@pytest.mark.parametrize(("auth", "param"), [
    ({"type": "static_bearer", "token": "", "mcp_server_url": MCP_URL}, "auth.token"),
    ({"type": "static_bearer", "token": "a\nb", "mcp_server_url": MCP_URL}, "auth.token"),
    ({"type": "static_bearer", "token": "t", "mcp_server_url": "ftp://x"}, "auth.mcp_server_url"),
    ({"type": "mcp_oauth", "access_token": "t", "mcp_server_url": MCP_URL,
      "refresh": {"client_id": "c", "refresh_token": "r", "token_endpoint": "ftp://t",
                  "token_endpoint_auth": {"type": "none"}}}, "auth.refresh.token_endpoint"),
    ({"type": "mcp_oauth", "access_token": "t", "mcp_server_url": MCP_URL,
      "refresh": {"client_id": "c", "refresh_token": "", "token_endpoint": "https://t",
                  "token_endpoint_auth": {"type": "none"}}}, "auth.refresh.refresh_token"),
    ({"type": "mcp_oauth", "access_token": "t", "mcp_server_url": MCP_URL,
      "refresh": {"client_id": "c", "refresh_token": "r", "token_endpoint": "https://t",
                  "token_endpoint_auth": {"type": "none", "client_secret": "s"}}},
     "auth.refresh.token_endpoint_auth.client_secret"),
    ({"type": "mcp_oauth", "access_token": "t", "mcp_server_url": MCP_URL,
      "refresh": {"refresh_token": "r", "token_endpoint": "https://t",
                  "token_endpoint_auth": {"type": "none"}}}, "auth.refresh.client_id"),
    ({"type": "mcp_oauth", "access_token": "t", "mcp_server_url": MCP_URL, "expires_at": "tomorrow"},
     "auth.expires_at"),
    ({"type": "environment_variable", "secret_name": "CODEX_X", "secret_value": "v",
      "networking": {"type": "unrestricted"}}, "auth.secret_name"),
    ({"type": "environment_variable", "secret_name": "X", "secret_value": "v",
      "networking": {"type": "limited", "allowed_hosts": ["https://a.com"]}}, "auth.networking.allowed_hosts"),
    ({"type": "basic"}, "auth.type"),
])
async def test_bad_credentials_are_400s_naming_the_field(auth: dict, param: str, tmp_path: Path,
                                                         request: pytest.FixtureRequest) -> None:
    async with agent_store("sqlite", request, tmp_path) as store:
        vaults = VaultService(store, Sealer(os.urandom(32)))
        vault = await vaults.create({}, tenant="a")
        with pytest.raises(APIError) as caught:
            await vaults.create_credential(vault["id"], {"name": "n", "auth": auth}, tenant="a")
        assert (caught.value.status, caught.value.param) == (400, param)
