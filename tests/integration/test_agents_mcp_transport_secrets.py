"""An agent's MCP transport secrets as the SDK sends them, through both doors: an HTTP server's ``authorization``
(sent to the real MCP test server as ``Authorization: Bearer``) and a ``stdio`` server's ``env`` (set for its
process in the session's ``openai_hosted`` environment, the real sandbox). Each is accepted by the SDK's own call,
reaches the server, and is in no answer (the SDK's strict types: the persisted transport has neither field), no
event, no log line (at debug) and no file of the database; a server that echoes one hands back ``[redacted]``.
The stdio server's env is the sandbox's, behind the door: on the HTTP door alone (agent_doors ``doors``); the HTTP
server's (the agent made, read, listed and updated with the SDK, the session's stream) and the refusals go through
both."""

from __future__ import annotations

import base64
import hashlib
import json
from collections.abc import AsyncIterator
from pathlib import Path
from textwrap import dedent
from typing import Any

import aiohttp
import openai
import pytest
from openai.types.beta import Agent, AgentSession

from responses_bridge.sandbox.cgroups.per_call import CgroupParent
from responses_bridge.sandbox.command import interpreter_in_sandbox
from responses_bridge.sandbox.doctor import check_bubblewrap
from tests.integration.test_agents_api import MODEL, frames, read_until_idle, strict
from tests.support.agent_doors import base_fixture, door_fixture, doors, envoy_fixture, sdk_fixture  # noqa: F401
from tests.support.bridge import Sidecar, running_sidecar
from tests.support.envoy import have_envoy
from tests.support.mcp_server import MCPTestServer
from tests.support.sidecar_state import database_bytes

pytestmark = pytest.mark.skipif(not have_envoy(), reason="envoy binary not available")
pytestmark = [pytestmark, pytest.mark.store_proven(
    "tests/integration/test_replicas_code.py",
    "tests/integration/test_agents_automations_replicas.py",
    "tests/integration/test_replicas.py",
    "tests/unit/test_agent_store.py",
    "tests/integration/test_input_references.py",
    reason="every store/postgres line it covers on PostgreSQL is covered by the modules named (scripts/pg-coverage)",
)]
sandboxed = pytest.mark.skipif(check_bubblewrap()[1] is not None or CgroupParent.find() is None,
                               reason="no bubblewrap sandbox with a cgroup per call here")

DB = "bridge.db"
SECRET = "transport-secret-7d41c09be2"
ENV_SECRET = "stdio-env-secret-5f0a83d61c"

STDIO_SERVER = dedent('''
    import hashlib, os
    from mcp.server.mcpserver import MCPServer
    from mcp_types import ToolAnnotations

    server = MCPServer(name="env-tools", log_level="WARNING")
    READ_ONLY = ToolAnnotations(read_only_hint=True)

    @server.tool(description="The SHA-256 of the TOKEN variable.", annotations=READ_ONLY)
    def digest() -> str:
        return hashlib.sha256(os.environ.get("TOKEN", "").encode()).hexdigest()

    @server.tool(description="The TOKEN variable itself.", annotations=READ_ONLY)
    def leak() -> str:
        return "token=" + os.environ.get("TOKEN", "")

    server.run("stdio")
''')


@pytest.fixture(scope="module")
def bridge_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("agents-mcp-transport-secrets")


@pytest.fixture(scope="module")
async def sidecar(fake_upstream: str, bridge_dir: Path, mcp: MCPTestServer) -> AsyncIterator[Sidecar]:
    async with running_sidecar(str(bridge_dir), fake_upstream, "--log-level", "debug", "--db", str(bridge_dir / DB),
                               env={"RESPONSES_BRIDGE_CODE_TIMEOUT": "30",
                                    "RESPONSES_BRIDGE_MCP_ALLOWED_HOSTS": "127.0.0.1"},
                               log_file=bridge_dir / "sidecar.log") as started:
        yield started


def http_tool(mcp: MCPTestServer) -> dict[str, Any]:
    return {"type": "mcp", "server_label": "tools", "allowed_tools": ["authorization_digest", "whoami"],
            "transport": {"type": "http", "server_url": mcp.http_url, "authorization": SECRET}}


def stdio_tool() -> dict[str, Any]:
    return {"type": "mcp", "server_label": "env", "transport": {
        "type": "stdio", "command": interpreter_in_sandbox(), "args": ["server.py"], "cwd": "/workspace/tools",
        "env": {"TOKEN": ENV_SECRET}}}


def hosted() -> dict[str, Any]:
    return {"type": "openai_hosted", "container_size": "small",
            "files": [{"type": "inline", "path": "/workspace/tools/server.py",
                       "data": base64.b64encode(STDIO_SERVER.encode()).decode()}]}


async def turn(door: aiohttp.ClientSession, session_id: str, text: str | None,
               after: str | None) -> tuple[bytes, str, str]:
    """One more turn of the session (``text``; None: the turn its create queued): its events' raw bytes, its one
    ``mcp_call``'s output, and its last event's id."""
    if text is not None:
        async with door.post(f"/v1/agents/sessions/{session_id}/events", json={"events": [
                {"type": "agent.session.input.message",
                 "input": [{"role": "user", "content": [{"type": "input_text", "text": text}]}]}]}) as posted:
            assert posted.status == 202, await posted.text()
    async with door.get(f"/v1/agents/sessions/{session_id}/events",
                        params={"until_idle": "true", **({"after": after} if after else {})}) as answer:
        raw = await read_until_idle(answer)
    events = [event for _, event in frames(raw)]
    calls = [event["item"] for event in events
             if event["type"] == "agent.session.turn.item.done" and event["item"]["type"] == "mcp_call"]
    assert calls and calls[-1]["status"] == "completed", json.dumps(events)[-3000:]
    return raw, str(calls[-1]["output"]), str(events[-1]["event_id"])


async def shown(door: aiohttp.ClientSession, path: str) -> dict[str, Any]:
    async with door.get(path) as answer:
        text = await answer.text()
        assert answer.status == 200, text
    assert SECRET not in text and ENV_SECRET not in text, text
    return dict(json.loads(text))


def nowhere_on_disk(bridge_dir: Path) -> None:
    """Neither secret in the log (at debug), a file beside the database, or the database (SQLite's files, or a
    data-only dump of the PostgreSQL database under ``--store=postgres``)."""
    held = [(path.name, path.read_bytes()) for path in bridge_dir.iterdir() if path.is_file()]
    for name, data in [*held, ("database", database_bytes(str(bridge_dir / DB)))]:
        assert SECRET.encode() not in data and ENV_SECRET.encode() not in data, name


async def test_an_http_servers_authorization(door: aiohttp.ClientSession, sdk: openai.AsyncOpenAI,
                                             mcp: MCPTestServer, bridge_dir: Path) -> None:
    agent = await sdk.beta.agents.create(model=MODEL, tools=[http_tool(mcp)])  # type: ignore[list-item]
    stored = strict(Agent, await shown(door, f"/v1/agents/{agent.id}"))
    assert stored.tools[0].transport.model_dump() == {"type": "http", "server_url": mcp.http_url, "headers": {}}
    listed = await shown(door, "/v1/agents?limit=100")
    assert agent.id in [entry["id"] for entry in listed["data"]]
    retrieved = await sdk.beta.agents.retrieve(agent.id)  # the SDK's own reads, as its types parse them
    assert retrieved.model_dump()["tools"] == stored.model_dump()["tools"] and SECRET not in retrieved.model_dump_json()
    assert agent.id in [entry.id async for entry in sdk.beta.agents.list(limit=100)]
    updated = await sdk.beta.agents.update(agent.id, name="renamed")  # the sealed secret kept, still not shown
    assert SECRET not in updated.model_dump_json()

    # a session of the saved agent, and one with the agent inline (the SDK's session create): the server is sent
    # the authorization as a bearer token; a server echoing it hands back [redacted]
    first = "call tools__authorization_digest"
    inline = await sdk.beta.agents.sessions.create(agent={"model": MODEL, "tools": [http_tool(mcp)]},  # type: ignore[list-item]
                                                   environment={"type": "none"}, input=first)
    assert SECRET not in inline.model_dump_json()
    saved = await sdk.beta.agents.sessions.create(agent_id=agent.id, environment={"type": "none"}, input=first)
    expected = hashlib.sha256(f"Bearer {SECRET}".encode()).hexdigest()
    for session_id in (inline.id, saved.id):
        raw, output, last = await turn(door, session_id, None, None)
        assert output == expected and SECRET.encode() not in raw
        raw, output, _ = await turn(door, session_id, "call tools__whoami", last)
        assert output.startswith("authorization=[redacted] ") and SECRET.encode() not in raw, output
        # a session's snapshot of an HTTP transport is the SDK's AgentTool's: no headers (the agent's type has them)
        session = strict(AgentSession, await shown(door, f"/v1/agents/sessions/{session_id}"))
        assert session.agent.tools[0].transport.model_dump() == {"type": "http", "server_url": mcp.http_url}
    await shown(door, "/v1/agents/sessions?limit=100")
    nowhere_on_disk(bridge_dir)


@doors("http")
@sandboxed
async def test_a_stdio_servers_env(door: aiohttp.ClientSession, sdk: openai.AsyncOpenAI, bridge_dir: Path) -> None:
    agent = await sdk.beta.agents.create(model=MODEL, tools=[stdio_tool()])  # type: ignore[list-item]
    stored = strict(Agent, await shown(door, f"/v1/agents/{agent.id}"))
    assert stored.tools[0].transport.model_dump() == {  # type: ignore[union-attr]
        "type": "stdio", "command": interpreter_in_sandbox(), "args": ["server.py"], "cwd": "/workspace/tools",
        "env_vars": []}
    session = await sdk.beta.agents.sessions.create(agent_id=agent.id, environment=hosted(),  # type: ignore[arg-type]
                                                    input="call env__digest")
    strict(AgentSession, await shown(door, f"/v1/agents/sessions/{session.id}"))
    raw, output, last = await turn(door, session.id, None, None)
    assert output == hashlib.sha256(ENV_SECRET.encode()).hexdigest() and ENV_SECRET.encode() not in raw
    raw, output, _ = await turn(door, session.id, "call env__leak", last)
    assert output == "token=[redacted]" and ENV_SECRET.encode() not in raw, output
    nowhere_on_disk(bridge_dir)


async def test_malformed_secrets_are_refused(door: aiohttp.ClientSession) -> None:
    for transport, param in (({"type": "http", "server_url": "http://x", "authorization": "a\nb"},
                              "agent.tools[0].transport.authorization"),
                             ({"type": "stdio", "command": "x", "cwd": "", "env": {"1BAD": SECRET}},
                              "agent.tools[0].transport.env"),
                             ({"type": "stdio", "command": "x", "cwd": "", "env": {"OK": 1}},
                              "agent.tools[0].transport.env")):
        tool = {"type": "mcp", "server_label": "s", "transport": transport}
        async with door.post("/v1/agents/sessions", json={"agent": {"model": MODEL, "tools": [tool]},
                                                          "environment": {"type": "openai_hosted"}}) as answer:
            text = await answer.text()
        assert answer.status == 400 and SECRET not in text, text
        assert json.loads(text)["error"]["param"] == param, text
    # an automation's inline agent is shown whole: its transport secrets are refused there, by name
    tool = {"type": "mcp", "server_label": "s",
            "transport": {"type": "http", "server_url": "http://x", "authorization": SECRET}}
    message = {"type": "message", "role": "user", "content": [{"type": "input_text", "text": "go"}]}
    async with door.post("/v1/agents/automations", json={
            "type": "periodic", "name": "nightly", "expression": "0 3 * * *", "timezone": "UTC",
            "target": {"type": "new_session", "agent": {"model": MODEL, "tools": [tool]},
                       "environment": {"type": "none"}, "input": [message]}}) as answer:
        text = await answer.text()
    assert answer.status == 400 and SECRET not in text, text
    assert json.loads(text)["error"]["param"] == "target.agent.tools[0].transport", text
