"""An agent session's MCP servers beyond a plain HTTP server reached from the bridge, through both doors, the
answers validated with the SDK's strict types: a server over ``stdio`` started in the session's ``openai_hosted``
environment (the real sandbox; a real MCP server from the ``mcp`` package, placed there as an environment file),
with the environment's variables it names; a server over HTTP reached from inside the environment
(``connection_origin: "environment"``: through its egress proxy and network policy — the real MCP test server);
``request_metadata`` sent as each request's ``_meta``; ``required`` servers listed before the first turn, whose
failure fails it naming the server; and ``vault_ids`` on a standalone environment, its credentials applied as a
session's are. What the servers, the sandbox and the vault do is behind the door: those tests run on the HTTP door
alone (agent_doors ``doors``); the refusals (an error's status and shape) go through both."""

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
from openai.types.beta import AgentSession
from openai.types.beta.agents import EnvironmentInfo
from openai.types.beta.agents.sessions import Turn

from responses_bridge.sandbox.cgroups.per_call import CgroupParent
from responses_bridge.sandbox.command import interpreter_in_sandbox
from responses_bridge.sandbox.doctor import check_bubblewrap
from tests.integration.test_agents_api import MODEL, frames, read_until_idle, strict
from tests.support.agent_doors import base_fixture, door_fixture, doors, envoy_fixture, sdk_fixture  # noqa: F401
from tests.support.bridge import Sidecar, running_sidecar
from tests.support.envoy import have_envoy
from tests.support.mcp_server import MCPTestServer

pytestmark = [pytest.mark.skipif(not have_envoy(), reason="envoy binary not available"),
              pytest.mark.skipif(check_bubblewrap()[1] is not None, reason="bubblewrap cannot sandbox here"),
              pytest.mark.skipif(CgroupParent.find() is None, reason="no cgroup per call here: no processes")]
pytestmark = [*pytestmark, pytest.mark.store_proven(
    "tests/integration/test_replicas_code.py",
    "tests/integration/test_agents_automations_replicas.py",
    "tests/integration/test_replicas.py",
    "tests/unit/test_store_contract.py",
    "tests/unit/test_agent_store.py",
    "tests/integration/test_input_references.py",
    reason="every store/postgres line it covers on PostgreSQL is covered by the modules named (scripts/pg-coverage)",
)]

SECRET = "env-mcp-secret-4b8e1f2a9c"

STDIO_SERVER = dedent('''
    import json, os
    from mcp.server.mcpserver import Context, MCPServer
    from mcp_types import ToolAnnotations

    server = MCPServer(name="environment-tools", log_level="WARNING")
    READ_ONLY = ToolAnnotations(read_only_hint=True)

    @server.tool(description="Where the server runs and what it was given.", annotations=READ_ONLY)
    def where(ctx: Context) -> str:
        return json.dumps({"cwd": os.getcwd(), "greeting": os.environ.get("GREETING"),
                           "other": os.environ.get("OTHER"), "token": os.environ.get("TRACKER_TOKEN"),
                           "meta": dict(ctx.request_context.meta or {}),
                           "files": sorted(os.listdir("/mnt/data/tools"))})

    @server.tool(description="Write a file in the workspace.", annotations=READ_ONLY)
    def note(text: str) -> str:
        with open("/mnt/data/note.txt", "w") as out:
            out.write(text)
        return "noted"

    server.run("stdio")
''')


@pytest.fixture(scope="module")
def bridge_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("agents-mcp-environment")


@pytest.fixture(scope="module")
async def sidecar(fake_upstream: str, bridge_dir: Path, mcp: MCPTestServer) -> AsyncIterator[Sidecar]:
    async with running_sidecar(str(bridge_dir), fake_upstream, "--log-level", "debug",
                               env={"RESPONSES_BRIDGE_CODE_TIMEOUT": "30",
                                    "RESPONSES_BRIDGE_MCP_ALLOWED_HOSTS": "127.0.0.1",
                                    "RESPONSES_BRIDGE_CODE_EGRESS_ALLOWED_TARGETS": f"127.0.0.1:{mcp.http_port}"},
                               log_file=bridge_dir / "sidecar.log") as started:
        yield started


def stdio_tool(**extra: Any) -> dict[str, Any]:
    return {"type": "mcp", "server_label": "env", "transport": {
        "type": "stdio", "command": interpreter_in_sandbox(), "args": ["server.py"], "cwd": "/workspace/tools",
        "env_vars": ["GREETING", "TRACKER_TOKEN"]}, **extra}


def hosted(**extra: Any) -> dict[str, Any]:
    return {"type": "openai_hosted", "container_size": "small", "env": {"GREETING": "hello", "OTHER": "hidden"},
            "files": [{"type": "inline", "path": "/workspace/tools/server.py",
                       "data": base64.b64encode(STDIO_SERVER.encode()).decode()}], **extra}


async def first_turn(door: aiohttp.ClientSession, body: dict[str, Any]) -> list[dict[str, Any]]:
    async with door.post("/v1/agents/sessions", json={**body, "stream": True}) as answer:
        assert answer.status == 200, await answer.text()
        return [event for _, event in frames(await read_until_idle(answer))]


def own(meta: dict[str, Any]) -> dict[str, Any]:
    """A request's ``_meta`` without what MCP's client adds itself: its reserved keys (``io.modelcontextprotocol/…``)
    and the W3C trace context it propagates where tracing is on."""
    return {key: value for key, value in meta.items()
            if not key.startswith("io.modelcontextprotocol/") and key not in ("traceparent", "tracestate", "baggage")}


def calls(events: list[dict[str, Any]], count: int | None = None) -> list[dict[str, Any]]:
    """The turn's ``mcp_call`` items (``count`` of them, when given)."""
    found = [event["item"] for event in events
             if event["type"] == "agent.session.turn.item.done" and event["item"]["type"] == "mcp_call"]
    assert count is None or len(found) == count, json.dumps(events)[-3000:]
    return found


@doors("http")
async def test_a_stdio_server_runs_in_the_environment(door: aiohttp.ClientSession, sdk: openai.AsyncOpenAI) -> None:
    agent = await sdk.beta.agents.create(model=MODEL, tools=[stdio_tool(request_metadata={"team": "blue"})])
    events = await first_turn(door, {"agent_id": agent.id, "environment": hosted(), "input": "call env__where"})
    session = strict(AgentSession, events[0]["session"])
    transport = session.agent.tools[0].transport  # type: ignore[union-attr]
    assert transport.type == "stdio" and transport.env_vars == ["GREETING", "TRACKER_TOKEN"]
    [call] = calls(events, 1)
    assert call["status"] == "completed", call
    seen = json.loads(call["output"])
    # its cwd in the workspace, the variable it names from the environment's env (not the one it does not), the
    # tool's request_metadata as the request's _meta
    assert seen["cwd"].endswith("/tools") and seen["files"] == ["server.py"]
    assert (seen["greeting"], seen["other"], seen["token"]) == ("hello", None, None)
    assert own(seen["meta"]) == {"team": "blue"}
    turns = [strict(Turn, turn.model_dump()) async for turn in sdk.beta.agents.sessions.turns.list(session.id)]
    assert [turn.status for turn in turns] == ["completed"]

    # a second turn: the server started again in the same container, and what it wrote is the environment's file
    async with door.post(f"/v1/agents/sessions/{session.id}/events", json={"events": [
            {"type": "agent.session.input.message", "input": [{"role": "user", "content": [
                {"type": "input_text", "text": 'call env__note [args={"text": "from the server"}]'}]}]}]}) as posted:
        assert posted.status == 202
    async with door.get(f"/v1/agents/sessions/{session.id}/events",
                        params={"until_idle": "true", "after": events[-1]["event_id"]}) as answer:
        later = [event for _, event in frames(await read_until_idle(answer))]
    assert [call["output"] for call in calls(later)][-1] == "noted"
    async with door.get(f"/v1/agents/environments/{session.environment.id}/files",  # type: ignore[union-attr]
                        params={"path": "/workspace"}) as answer:
        assert answer.status == 200
        paths = [entry["path"] for entry in (await answer.json())["data"]]
    assert "/workspace/note.txt" in paths


@doors("http")
async def test_a_server_reached_from_the_environment(door: aiohttp.ClientSession, sdk: openai.AsyncOpenAI,
                                                     mcp: MCPTestServer, bridge_dir: Path) -> None:
    vault = await sdk.beta.agents.vaults.create(name="tools")
    credential = await sdk.beta.agents.vaults.credentials.create(vault.id, name="mcp", auth={
        "type": "static_bearer", "token": SECRET, "mcp_server_url": mcp.http_url})
    tool = {"type": "mcp", "server_label": "tools", "allowed_tools": ["lookup", "meta", "authorization_digest",
                                                                      "whoami"],
            "connection_origin": "environment", "request_metadata": {"trace": "t-1"},
            "credential_id": credential.id, "transport": {"type": "http", "server_url": mcp.http_url}}
    agent = await sdk.beta.agents.create(model=MODEL, tools=[tool])  # type: ignore[list-item]
    network = {"access": "restricted", "allowed_domains": ["127.0.0.1"]}
    events = await first_turn(door, {"agent_id": agent.id, "environment": hosted(network=network),
                                     "vault_ids": [vault.id], "input": "call tools__meta"})
    assert strict(AgentSession, events[0]["session"]).agent.tools[0].connection_origin == "environment"
    [call] = calls(events, 1)
    assert call["status"] == "completed" and own(json.loads(call["output"])) == {"trace": "t-1"}, call
    # the tool's vault credential reached the server from the environment; a server echoing it does not hand it on
    session_id = events[0]["session"]["id"]
    for text, expected in (("call tools__authorization_digest", hashlib.sha256(f"Bearer {SECRET}".encode())
                            .hexdigest()), ("call tools__whoami", "authorization=[redacted] ")):
        async with door.post(f"/v1/agents/sessions/{session_id}/events", json={"events": [
                {"type": "agent.session.input.message",
                 "input": [{"role": "user", "content": [{"type": "input_text", "text": text}]}]}]}) as posted:
            assert posted.status == 202
        async with door.get(f"/v1/agents/sessions/{session_id}/events",
                            params={"until_idle": "true", "after": events[-1]["event_id"]}) as answer:
            raw = await read_until_idle(answer)
        events = [event for _, event in frames(raw)]
        assert calls(events)[-1]["output"].startswith(expected), calls(events)
        assert SECRET.encode() not in raw
    for path in bridge_dir.iterdir():  # nor the log (at debug) nor a file of the database
        if path.is_file():
            assert SECRET.encode() not in path.read_bytes(), path.name

    # without the environment's network the server is not reached (required: the turn fails, naming it)
    required = await sdk.beta.agents.create(model=MODEL, tools=[{**tool, "required": True}])  # type: ignore[list-item]
    events = await first_turn(door, {"agent_id": required.id, "environment": hosted(), "vault_ids": [vault.id],
                                     "input": "call tools__meta"})
    failed = [event for event in events if event["type"] == "agent.session.turn.failed"]
    assert len(failed) == 1 and not calls(events)
    error = strict(Turn, failed[0]["turn"]).error
    assert error is not None and error.code == "connection_failed" and "'tools'" in error.message, error


@doors("http")
async def test_request_metadata_from_the_bridge(door: aiohttp.ClientSession, mcp: MCPTestServer) -> None:
    tool = {"type": "mcp", "server_label": "tools", "allowed_tools": ["meta"],
            "request_metadata": {"tenant_hint": "a", "depth": 2},
            "transport": {"type": "http", "server_url": mcp.http_url}}
    events = await first_turn(door, {"agent": {"model": MODEL, "tools": [tool]}, "environment": {"type": "none"},
                                     "input": "call tools__meta"})
    [call] = calls(events, 1)
    assert own(json.loads(call["output"])) == {"depth": 2, "tenant_hint": "a"}, call


@doors("http")
async def test_required_servers_start_before_the_first_turn(door: aiohttp.ClientSession, sdk: openai.AsyncOpenAI,
                                                            mcp: MCPTestServer) -> None:
    # listed before the turn, then used in it
    events = await first_turn(door, {"agent": {"model": MODEL, "tools": [stdio_tool(required=True)]},
                                     "environment": hosted(), "input": "call env__where"})
    assert [call["status"] for call in calls(events)] == ["completed"]
    assert strict(AgentSession, events[0]["session"]).agent.tools[0].required is True

    # one that cannot start, in the environment or over HTTP: the turn fails naming it, no model is called
    broken = {**stdio_tool(required=True), "server_label": "broken"}
    broken["transport"] = {**broken["transport"], "args": ["missing.py"]}
    unreachable = {"type": "mcp", "server_label": "gone", "required": True,
                   "transport": {"type": "http", "server_url": "http://127.0.0.1:9/mcp"}}
    for tool, environment in ((broken, hosted()), (unreachable, {"type": "none"})):
        events = await first_turn(door, {"agent": {"model": MODEL, "tools": [tool]}, "environment": environment,
                                         "input": "hello"})
        failed = [event for event in events if event["type"] == "agent.session.turn.failed"]
        assert len(failed) == 1, events
        error = strict(Turn, failed[0]["turn"]).error
        assert error is not None and error.code == "connection_failed", error
        assert f"MCP server '{tool['server_label']}' is required" in error.message
        assert not [event for event in events if event["type"] == "agent.session.turn.output_text.delta"]
        session_id = events[0]["session"]["id"]
        assert (await sdk.beta.agents.sessions.retrieve(session_id)).status == "idle"


@pytest.mark.parametrize(("tool", "param"), [
    (stdio_tool(), "agent.tools[0].transport.type"),
    ({"type": "mcp", "server_label": "tools", "connection_origin": "environment",
      "transport": {"type": "http", "server_url": "http://x"}}, "agent.tools[0].connection_origin"),
])
async def test_servers_in_an_environment_need_one(door: aiohttp.ClientSession, tool: dict[str, Any],
                                                  param: str) -> None:
    for environment in ({"type": "none"}, {"type": "self_hosted", "workspace_directory": "/tmp"}):
        async with door.post("/v1/agents/sessions", json={"agent": {"model": MODEL, "tools": [tool]},
                                                          "environment": environment, "input": "x"}) as answer:
            assert answer.status == 400
            error = (await answer.json())["error"]
        assert error["param"] == param and "openai_hosted" in error["message"], error


@doors("http")
async def test_vault_ids_on_a_standalone_environment(door: aiohttp.ClientSession, sdk: openai.AsyncOpenAI,
                                                     bridge_dir: Path) -> None:
    vault = await sdk.beta.agents.vaults.create(name="environment")
    await sdk.beta.agents.vaults.credentials.create(vault.id, name="tracker", auth={  # type: ignore[arg-type]
        "type": "environment_variable", "secret_name": "TRACKER_TOKEN", "secret_value": SECRET,
        "networking": {"type": "limited", "allowed_hosts": ["127.0.0.1"]}})
    environment = hosted(network={"access": "restricted", "allowed_domains": ["127.0.0.1"]})
    async with door.post("/v1/agents/environments", json={"environment": environment,
                                                          "vault_ids": [vault.id]}) as answer:
        assert answer.status == 200, await answer.text()
        made = strict(EnvironmentInfo, await answer.json())
    # a session that takes it: the stdio server inherits the credential's variable — the placeholder, never the
    # value, which only the egress proxy puts into requests to the credential's hosts
    events = await first_turn(door, {"agent": {"model": MODEL, "tools": [stdio_tool()]},
                                     "environment": {"type": "openai_hosted", "environment_id": made.id},
                                     "input": "call env__where"})
    [call] = calls(events, 1)
    token = json.loads(call["output"])["token"]
    assert token and SECRET not in token, call
    async with door.get(f"/v1/agents/environments/{made.id}") as answer:
        assert answer.status == 200 and SECRET not in await answer.text()
    for refused, param, status in (([vault.id, vault.id], "vault_ids", 400), (["vault_nope"], "vault_id", 404)):
        async with door.post("/v1/agents/environments", json={"environment": {"type": "openai_hosted"},
                                                              "vault_ids": refused}) as answer:
            assert answer.status == status
            assert (await answer.json())["error"]["param"] == param
    for path in bridge_dir.iterdir():  # nor the log (at debug) nor a file of the database
        if path.is_file():
            assert SECRET.encode() not in path.read_bytes(), path.name
