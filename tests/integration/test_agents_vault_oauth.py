"""An ``mcp_oauth`` credential with ``refresh`` (services/agents/vaults/oauth.py), through both doors: a session's MCP
server is reached with a token the bridge got from a real token endpoint (a local HTTP server) once the stored one
reached its ``expires_at``; the refresh token it rotated is the one sent next; an endpoint refusing the grant fails
the turn naming the credential. No refresh token, client secret or access token is in any answer, event, log line
or database file of the bridge. The refresh is behind the door: those tests run on the HTTP door alone (agent_doors
``doors``); the refusal of a configuration (an error through the vaults' route) goes through both."""

from __future__ import annotations

import base64
import hashlib
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import unquote

import aiohttp
import openai
import pytest
from aiohttp import web
from openai.types.beta.agents.vaults import Credential

from tests.integration.test_agents_api import MODEL, frames, read_until_idle, strict
from tests.integration.test_agents_vaults import Seen
from tests.support.agent_doors import base_fixture, door_fixture, doors, envoy_fixture, sdk_fixture  # noqa: F401
from tests.support.bridge import Sidecar, running_sidecar
from tests.support.mcp_server import MCPTestServer

pytestmark = pytest.mark.store_proven(
    "tests/integration/test_replicas.py",
    "tests/integration/test_input_references.py",
    reason="every store/postgres line it covers on PostgreSQL is covered by the modules named (scripts/pg-coverage)",
)

STALE = "stale-access-1f0e3b"
REFRESH = "refresh-token-8a71c2"
CLIENT_SECRET = "client-secret-5d2e90"
SECRETS = [STALE, REFRESH, CLIENT_SECRET, "fresh-access-", "rotated-refresh-"]


@dataclass
class TokenEndpoint:
    """A token endpoint that takes the refresh-token grant of one client, rotating the refresh token each time."""

    url: str = ""
    valid_refresh: str = REFRESH
    seen: list[dict[str, str]] = field(default_factory=list)

    async def token(self, request: web.Request) -> web.Response:
        form = {key: str(value) for key, value in (await request.post()).items()}
        self.seen.append({**form, "authorization": request.headers.get("Authorization", "")})
        expected = "Basic " + base64.b64encode(f"client-1:{CLIENT_SECRET}".encode()).decode()
        if request.headers.get("Authorization") != expected:
            return web.json_response({"error": "invalid_client"}, status=401)
        if form.get("grant_type") != "refresh_token" or form.get("refresh_token") != self.valid_refresh:
            return web.json_response({"error": "invalid_grant", "error_description": form.get("refresh_token")},
                                     status=400)
        count = len(self.seen)
        self.valid_refresh = f"rotated-refresh-{count}"
        return web.json_response({"access_token": f"fresh-access-{count}", "token_type": "Bearer",
                                  "expires_in": 3600, "refresh_token": self.valid_refresh})


@pytest.fixture(scope="module")
async def endpoint() -> AsyncIterator[TokenEndpoint]:
    found = TokenEndpoint()
    app = web.Application()
    app.router.add_post("/oauth/token", found.token)
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = runner.addresses[0][1]
    found.url = f"http://127.0.0.1:{port}/oauth/token"
    yield found
    await runner.cleanup()


@pytest.fixture(scope="module")
def bridge_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("agents-vault-oauth")


@pytest.fixture(scope="module")
async def sidecar(fake_upstream: str, bridge_dir: Path) -> AsyncIterator[Sidecar]:
    async with running_sidecar(str(bridge_dir), fake_upstream, "--log-level", "debug",
                               env={"RESPONSES_BRIDGE_MCP_ALLOWED_HOSTS": "127.0.0.1"},
                               log_file=bridge_dir / "sidecar.log", own_sqlite=True) as started:
        yield started


def oauth(endpoint: TokenEndpoint, mcp: MCPTestServer, *, expires_at: str | None) -> dict:
    return {"type": "mcp_oauth", "access_token": STALE, "mcp_server_url": mcp.http_url, "expires_at": expires_at,
            "refresh": {"client_id": "client-1", "refresh_token": REFRESH, "token_endpoint": endpoint.url,
                        "token_endpoint_auth": {"type": "client_secret_basic", "client_secret": CLIENT_SECRET},
                        "scope": "mcp:tools"}}


async def session_with(seen: Seen, door: aiohttp.ClientSession, mcp: MCPTestServer,
                       auth: dict) -> tuple[dict, list[dict], str]:
    """A vault holding ``auth``, an agent whose MCP tool uses it, and a session's first turn calling
    ``authorization_digest``: the credential, that turn's events, the session's id."""
    _, vault = await seen.call(door, "POST", "/v1/vaults", {"name": "oauth"})
    status, credential = await seen.call(door, "POST", f"/v1/vaults/{vault['id']}/credentials",
                                         {"name": "mcp", "auth": auth})
    assert status == 200, credential
    tool = {"type": "mcp", "server_label": "tools", "allowed_tools": ["authorization_digest"],
            "credential_id": credential["id"], "transport": {"type": "http", "server_url": mcp.http_url}}
    _, agent = await seen.call(door, "POST", "/v1/agents", {"model": MODEL, "tools": [tool]})
    async with door.post("/v1/agents/sessions", json={
            "agent_id": agent["id"], "environment": {"type": "none"}, "vault_ids": [vault["id"]],
            "stream": True, "input": "call tools__authorization_digest"}) as answer:
        assert answer.status == 200, await answer.text()
        raw = await read_until_idle(answer)
    seen.bodies.append(raw)
    events = [event for _, event in frames(raw)]
    return credential, events, events[0]["session"]["id"]


async def next_turn(seen: Seen, door: aiohttp.ClientSession, session_id: str) -> list[str]:
    """Another turn calling ``authorization_digest``: the digests of the session's MCP calls so far."""
    async with door.get(f"/v1/agents/sessions/{session_id}/events", params={"until_idle": "true"}) as answer:
        last = frames(await answer.read())[-1][0]
    status, _ = await seen.call(door, "POST", f"/v1/agents/sessions/{session_id}/events", {"events": [
        {"type": "agent.session.input.message", "input": [
            {"role": "user", "content": [{"type": "input_text", "text": "call tools__authorization_digest"}]}]}]})
    assert status == 202
    async with door.get(f"/v1/agents/sessions/{session_id}/events",
                        params={"until_idle": "true", "after": last}) as answer:
        raw = await answer.read()
    seen.bodies.append(raw)
    return digests([event for _, event in frames(raw)])


def digests(events: list[dict]) -> list[str]:
    return [event["item"]["output"] for event in events
            if event["type"] == "agent.session.turn.item.done" and event["item"]["type"] == "mcp_call"]


def bearer_digest(token: str) -> str:
    return hashlib.sha256(f"Bearer {token}".encode()).hexdigest()


@doors("http")
async def test_an_expired_token_is_refreshed_at_its_endpoint_and_the_rotated_refresh_token_kept(
        door: aiohttp.ClientSession, sdk: openai.AsyncOpenAI, mcp: MCPTestServer, endpoint: TokenEndpoint,
        bridge_dir: Path) -> None:
    seen = Seen()
    endpoint.valid_refresh, endpoint.seen[:] = REFRESH, []
    credential, events, session_id = await session_with(seen, door, mcp,
                                                        oauth(endpoint, mcp, expires_at="2020-01-01T00:00:00Z"))
    shown = strict(Credential, credential)
    assert shown.auth.type == "mcp_oauth" and shown.auth.refresh is not None
    assert shown.auth.refresh.token_endpoint_auth.type == "client_secret_basic"
    # the MCP server got the token the endpoint gave, not the stored stale one
    assert digests(events) == [bearer_digest("fresh-access-1")]
    assert len(endpoint.seen) == 1
    sent = endpoint.seen[0]
    assert (sent["grant_type"], sent["refresh_token"], sent["scope"]) == ("refresh_token", REFRESH, "mcp:tools")
    assert "client_secret" not in sent and "client_id" not in sent  # Basic carries both
    assert unquote(base64.b64decode(sent["authorization"].split()[1]).decode()) == f"client-1:{CLIENT_SECRET}"
    # the credential now shows the new expiry; no secret of it is shown
    credentials = sdk.beta.agents.vaults.credentials
    after = await credentials.with_raw_response.retrieve(credential["id"], vault_id=credential["vault_id"])
    seen.bodies.append(after.content)
    refreshed = strict(Credential, after.http_response.json())
    assert refreshed.auth.type == "mcp_oauth"
    assert refreshed.auth.expires_at is not None and refreshed.auth.expires_at > "2026"

    # the next turn uses the refreshed token while it is valid: no second exchange
    assert (await next_turn(seen, door, session_id))[-1] == bearer_digest("fresh-access-1")
    assert len(endpoint.seen) == 1

    # rotated to a past expiry again: the rotated refresh token (not the first one) is what is sent
    rotated = await credentials.with_raw_response.update(
        credential["id"], vault_id=credential["vault_id"],
        auth={"type": "mcp_oauth", "expires_at": "2020-01-01T00:00:00Z"})
    seen.bodies.append(rotated.content)
    assert strict(Credential, rotated.http_response.json()).auth.expires_at == "2020-01-01T00:00:00Z"
    assert (await next_turn(seen, door, session_id))[-1] == bearer_digest("fresh-access-2")
    assert [entry["refresh_token"] for entry in endpoint.seen] == [REFRESH, "rotated-refresh-1"]

    for secret in SECRETS:
        assert not [body for body in seen.bodies if secret.encode() in body], secret
    for file in bridge_dir.iterdir():
        if file.is_file():
            data = file.read_bytes()
            assert not [secret for secret in SECRETS if secret.encode() in data], file.name


@doors("http")
async def test_a_refused_refresh_fails_the_turn_naming_the_credential(
        door: aiohttp.ClientSession, mcp: MCPTestServer, endpoint: TokenEndpoint) -> None:
    seen = Seen()
    endpoint.valid_refresh, endpoint.seen[:] = "another-refresh-token", []
    _, events, _ = await session_with(seen, door, mcp, oauth(endpoint, mcp, expires_at="2020-01-01T00:00:00Z"))
    assert len(endpoint.seen) == 1 and not digests(events)  # the stale token was never sent
    failed = [event for event in events if event["type"] == "agent.session.turn.failed"]
    assert failed, [event["type"] for event in events]
    error = failed[-1]["turn"]["error"]
    assert "could not be refreshed" in error["message"] and "invalid_grant" in error["message"]
    assert "credential_id" in error["message"]
    for secret in SECRETS:
        assert not [body for body in seen.bodies if secret.encode() in body], secret


@doors("http")
async def test_a_token_not_yet_expired_is_sent_as_stored(
        door: aiohttp.ClientSession, mcp: MCPTestServer, endpoint: TokenEndpoint) -> None:
    seen = Seen()
    endpoint.seen[:] = []
    _, events, _ = await session_with(seen, door, mcp, oauth(endpoint, mcp, expires_at="2099-01-01T00:00:00Z"))
    assert digests(events) == [bearer_digest(STALE)] and endpoint.seen == []


async def test_a_refresh_configuration_the_types_refuse_is_a_400_naming_it(door: aiohttp.ClientSession,
                                                                            mcp: MCPTestServer,
                                                                            endpoint: TokenEndpoint) -> None:
    seen = Seen()
    _, vault = await seen.call(door, "POST", "/v1/vaults", {"name": "bad"})
    auth = oauth(endpoint, mcp, expires_at=None)
    auth["refresh"]["token_endpoint_auth"] = {"type": "client_secret_basic"}
    status, error = await seen.call(door, "POST", f"/v1/vaults/{vault['id']}/credentials",
                                    {"name": "mcp", "auth": auth})
    assert status == 400 and error["error"]["param"] == "auth.refresh.token_endpoint_auth.client_secret"
    auth["refresh"]["token_endpoint_auth"] = {"type": "private_key_jwt"}
    status, error = await seen.call(door, "POST", f"/v1/vaults/{vault['id']}/credentials",
                                    {"name": "mcp", "auth": auth})
    assert status == 400 and error["error"]["param"] == "auth.refresh.token_endpoint_auth.type"
