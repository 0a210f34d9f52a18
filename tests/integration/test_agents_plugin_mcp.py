"""A plugin's MCP servers in an ``openai_hosted`` environment, through both doors, every session event validated
with the SDK's strict types: a ``stdio`` server of the plugin's ``.mcp.json`` runs in the container from the
plugin's own files (the real sandbox, a real MCP server of the ``mcp`` package), with the plugin's ``env`` (a
secret: masked in what the server says, never in the store or the log); an HTTP server of the plugin's manifest
is reached from inside the environment, its bearer token read from the environment's ``env``; a standalone
environment's and a template's plugins serve the same; a plugin's app whose id the operator's connector registry
maps is served by the registry's MCP server, with the registry's credential (never in the store, the log or the
sandbox); an app the registry does not map, a server the bridge cannot serve, two servers of one name and a clash
with the agent's own server are refused, naming them. What the plugins' servers, the sandbox and the registry do is
behind the door: those tests run on the HTTP door alone (agent_doors ``doors``); the refusals and the clash (a
streamed turn's failure, its events strict) go through both."""

from __future__ import annotations

import base64
import hashlib
import io
import json
import zipfile
from collections.abc import AsyncIterator
from pathlib import Path
from textwrap import dedent
from typing import Any

import aiohttp
import openai
import orjson
import pytest
from openai.types.beta import AgentSession
from openai.types.beta.agents.sessions import Turn

from responses_bridge.sandbox.cgroups.per_call import CgroupParent
from responses_bridge.sandbox.command import interpreter_in_sandbox
from responses_bridge.sandbox.doctor import check_bubblewrap
from tests.integration.test_agents_api import MODEL, frames, read_until_idle, strict
from tests.support.agent_doors import base_fixture, door_fixture, doors, envoy_fixture, sdk_fixture  # noqa: F401
from tests.support.bridge import Sidecar, running_sidecar
from tests.support.envoy import have_envoy
from tests.support.mcp_server import MCPTestServer
from tests.support.sdk_strict import strict_session_event

pytestmark = [pytest.mark.skipif(not have_envoy(), reason="envoy binary not available"),
              pytest.mark.skipif(check_bubblewrap()[1] is not None, reason="bubblewrap cannot sandbox here"),
              pytest.mark.skipif(CgroupParent.find() is None, reason="no cgroup per call here: no processes")]
pytestmark = [*pytestmark, pytest.mark.store_proven(
    "tests/integration/test_replicas_code.py",
    "tests/integration/test_agents_automations_replicas.py",
    "tests/integration/test_replicas_failover_envoy.py",
    reason="every store/postgres line it covers on PostgreSQL is covered by the modules named (scripts/pg-coverage)",
)]

SECRET = "plugin-mcp-secret-7d3a9e11f0"
TOKEN = "plugin-bearer-5c2b8f44aa"
APP_TOKEN = "registry-app-token-93e0b7c4d1"  # the operator's fixed header for the app's connector id

SERVER = dedent('''
    import json, os
    from mcp.server.mcpserver import MCPServer
    from mcp_types import ToolAnnotations

    server = MCPServer(name="plugin-tools", log_level="WARNING")

    @server.tool(description="Where the server runs and what it was given.",
                 annotations=ToolAnnotations(read_only_hint=True))
    def where() -> str:
        return json.dumps({"cwd": os.getcwd(), "token": os.environ.get("PLUGIN_TOKEN"),
                           "files": sorted(os.listdir("."))})

    server.run("stdio")
''')
GREET = b"---\nname: greet\ndescription: Says hello.\n---\nSay hello.\n"


def plugin(name: str, manifest: dict[str, Any] | None = None, files: dict[str, bytes] | None = None,
           mcp: dict[str, Any] | None = None) -> dict[str, Any]:
    """An inline plugin: its manifest, files, and ``.mcp.json`` (``mcp``: its servers)."""
    out = io.BytesIO()
    with zipfile.ZipFile(out, "w") as archive:
        archive.writestr(".codex-plugin/plugin.json", orjson.dumps({"name": name, "description": "Tools.",
                                                                   **(manifest or {})}))
        for path, data in (files or {}).items():
            archive.writestr(path, data)
        if mcp is not None:
            archive.writestr(".mcp.json", orjson.dumps({"mcpServers": mcp}))
    return {"type": "inline", "name": name, "description": "Tools.",
            "source": {"type": "base64", "media_type": "application/zip",
                       "data": base64.b64encode(out.getvalue()).decode()}}


def stdio_plugin(name: str = "repo-tools", label: str = "repo", cwd: str = "server") -> dict[str, Any]:
    """A plugin whose ``stdio`` server is one of its files (``cwd``: relative to the plugin, or naming its root)."""
    return plugin(name, files={"server/main.py": SERVER.encode(), "skills/greet/SKILL.md": GREET}, mcp={label: {
        "command": interpreter_in_sandbox(), "args": ["main.py"], "cwd": cwd, "env": {"PLUGIN_TOKEN": SECRET}}})


HOSTED = {"type": "openai_hosted", "container_size": "small"}


@pytest.fixture(scope="module")
def bridge_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("agents-plugin-mcp")


@pytest.fixture(scope="module")
async def sidecar(fake_upstream: str, bridge_dir: Path, mcp: MCPTestServer) -> AsyncIterator[Sidecar]:
    connectors = {"asdk_app_notes": {"server_url": mcp.http_url, "headers": {"Authorization": f"Bearer {APP_TOKEN}"}}}
    async with running_sidecar(str(bridge_dir), fake_upstream, "--log-level", "debug",
                               env={"RESPONSES_BRIDGE_CODE_TIMEOUT": "30",
                                    "RESPONSES_BRIDGE_CODE_EGRESS_ALLOWED_TARGETS": f"127.0.0.1:{mcp.http_port}",
                                    "RESPONSES_BRIDGE_MCP_ALLOWED_HOSTS": "127.0.0.1",
                                    "RESPONSES_BRIDGE_MCP_CONNECTORS": json.dumps(connectors)},
                               log_file=bridge_dir / "sidecar.log") as started:
        yield started


async def turn(door: aiohttp.ClientSession, body: dict[str, Any]) -> list[dict[str, Any]]:
    """A session's first turn, every event strict."""
    async with door.post("/v1/agents/sessions", json={**body, "stream": True}) as answer:
        assert answer.status == 200, await answer.text()
        events = [event for _, event in frames(await read_until_idle(answer))]
    for event in events:
        strict_session_event(event)
    return events


def calls(events: list[dict[str, Any]]) -> list[dict[str, Any]]:
    return [event["item"] for event in events
            if event["type"] == "agent.session.turn.item.done" and event["item"]["type"] == "mcp_call"]


def no_secret(bridge_dir: Path, *secrets: str) -> None:
    for path in bridge_dir.iterdir():  # the log (at debug), the database and its WAL
        if path.is_file():
            for secret in secrets:
                assert secret.encode() not in path.read_bytes(), path.name


@doors("http")
async def test_a_plugins_stdio_server_runs_in_the_environment(door: aiohttp.ClientSession, sdk: openai.AsyncOpenAI,
                                                              bridge_dir: Path) -> None:
    events = await turn(door, {"agent": {"model": MODEL}, "environment": {**HOSTED, "plugins": [stdio_plugin()]},
                               "input": "call repo__where"})
    session = strict(AgentSession, events[0]["session"])
    assert session.agent.tools == []  # the plugin's server is the environment's, not the agent's
    [call] = calls(events)
    assert (call["status"], call["server_label"], call["name"]) == ("completed", "repo", "where"), call
    seen = json.loads(call["output"])
    # in the plugin's own directory (its relative cwd), the plugin's env given and its secret masked
    assert seen["cwd"].endswith("/.codex/plugins/repo-tools/server") and seen["files"] == ["main.py"], seen
    assert seen["token"] == "[redacted]", seen
    turns = [strict(Turn, entry.model_dump()) async for entry in sdk.beta.agents.sessions.turns.list(session.id)]
    assert [entry.status for entry in turns] == ["completed"]
    # the plugin's skill beside its server
    async with door.get(f"/v1/agents/sessions/{session.id}") as answer:
        shown = await answer.text()
    assert SECRET not in shown and "repo-tools" in shown
    no_secret(bridge_dir, SECRET)


@doors("http")
async def test_a_plugins_http_server_is_reached_from_the_environment(door: aiohttp.ClientSession,
                                                                     mcp: MCPTestServer, bridge_dir: Path) -> None:
    served = plugin("remote-tools", manifest={"mcpServers": {"remote": {
        "url": mcp.http_url, "bearer_token_env_var": "REMOTE_TOKEN", "enabled_tools": ["authorization_digest",
                                                                                       "whoami"]}}})
    environment = {**HOSTED, "plugins": [served], "env": {"REMOTE_TOKEN": TOKEN},
                   "network": {"access": "restricted", "allowed_domains": ["127.0.0.1"]}}
    events = await turn(door, {"agent": {"model": MODEL}, "environment": environment,
                               "input": "call remote__authorization_digest"})
    [call] = calls(events)
    assert call["status"] == "completed", call
    assert call["output"] == hashlib.sha256(f"Bearer {TOKEN}".encode()).hexdigest()
    # a server echoing the token hands back [redacted]
    events = await turn(door, {"agent": {"model": MODEL}, "environment": environment, "input": "call remote__whoami"})
    [call] = calls(events)
    assert call["output"].startswith("authorization=Bearer [redacted] "), call
    # without the environment's network the server is not reached: the call's error, the turn goes on
    events = await turn(door, {"agent": {"model": MODEL}, "environment": {**HOSTED, "plugins": [served],
                                                                          "env": {"REMOTE_TOKEN": TOKEN}},
                               "input": "call remote__whoami"})
    assert not [call for call in calls(events) if call["status"] == "completed"], calls(events)
    no_secret(bridge_dir, TOKEN)


@doors("http")
async def test_a_plugins_app_is_served_through_the_connector_registry(door: aiohttp.ClientSession,
                                                                       bridge_dir: Path) -> None:
    app = plugin("notes-app", files={".app.json": orjson.dumps({"apps": {"notes": {"id": "asdk_app_notes"}}})})
    environment = {**HOSTED, "plugins": [app]}  # no network: the bridge reaches the app's server, not the sandbox
    events = await turn(door, {"agent": {"model": MODEL}, "environment": environment,
                               "input": "call notes__authorization_digest"})
    [call] = calls(events)
    assert (call["status"], call["server_label"], call["name"]) == ("completed", "notes", "authorization_digest")
    assert call["output"] == hashlib.sha256(f"Bearer {APP_TOKEN}".encode()).hexdigest()  # the registry's header
    events = await turn(door, {"agent": {"model": MODEL}, "environment": environment, "input": "call notes__whoami"})
    [call] = calls(events)
    assert call["output"].startswith("authorization=[redacted] "), call  # a server echoing it hands back neither
    no_secret(bridge_dir, APP_TOKEN)


@doors("http")
async def test_a_standalone_environments_and_a_templates_plugins(door: aiohttp.ClientSession) -> None:
    async with door.post("/v1/agents/environments", json={"environment": {
            **HOSTED, "plugins": [stdio_plugin()]}}) as answer:
        assert answer.status == 200, await answer.text()
        made = await answer.json()
    events = await turn(door, {"agent": {"model": MODEL}, "input": "call repo__where",
                               "environment": {"type": "openai_hosted", "environment_id": made["id"]}})
    assert [call["status"] for call in calls(events)] == ["completed"]
    rooted = stdio_plugin("other-tools", "other", cwd="${CODEX_PLUGIN_ROOT}/server")
    async with door.post("/v1/agents/environments/templates", json={"name": "with tools",
                                                                     "plugins": [rooted]}) as answer:
        assert answer.status == 200, await answer.text()
        template = await answer.json()
    events = await turn(door, {"agent": {"model": MODEL}, "input": "call other__where", "environment": {
        "type": "openai_hosted", "environment_template_id": template["id"]}})
    [call] = calls(events)
    assert call["status"] == "completed" and "/.codex/plugins/other-tools/server" in call["output"], call


async def test_the_agents_own_server_of_the_same_name_fails_the_turn(door: aiohttp.ClientSession) -> None:
    own = {"type": "mcp", "server_label": "repo", "transport": {"type": "http", "server_url": "http://127.0.0.1:9"}}
    events = await turn(door, {"agent": {"model": MODEL, "tools": [own]}, "input": "call repo__where",
                               "environment": {**HOSTED, "plugins": [stdio_plugin()]}})
    [failed] = [event for event in events if event["type"] == "agent.session.turn.failed"]
    error = strict(Turn, failed["turn"]).error
    assert error is not None and "agent.tools[0].server_label" in error.message and "repo-tools" in error.message


@pytest.mark.parametrize(("plugins", "words"), [
    ([plugin("apps", files={".app.json": orjson.dumps({"apps": {"calendar": {"id": "connector_1"}}})},
             mcp={"x": {"command": "true"}})], "does not serve (calendar (connector_1))"),
    ([plugin("apps", manifest={"apps": "./apps.json"}, files={
        "apps.json": orjson.dumps({"apps": {"drive": {"id": "connector_2"}}})})], "RESPONSES_BRIDGE_MCP_CONNECTORS"),
    ([plugin("apps", manifest={"apps": {"notes": {"id": "asdk_app_notes", "url": "http://x"}}})], "'url' is not"),
    ([plugin("odd", mcp={"x": {"command": "true", "oauth": {}}})], "'oauth' is not served"),
    ([plugin("odd", mcp={"x": {"type": "websocket", "url": "ws://x"}})], "'websocket'"),
    ([plugin("odd", mcp={"bad name": {"command": "true"}})], "expected a name"),
    ([plugin("odd", manifest={"mcpServers": "./missing.json"})], "does not hold"),
    ([stdio_plugin("one"), stdio_plugin("two")], "Two plugins' MCP servers are named 'repo'"),
])
async def test_what_a_plugin_cannot_bring_is_a_400_naming_it(door: aiohttp.ClientSession,
                                                             plugins: list[dict[str, Any]], words: str) -> None:
    async with door.get("/v1/containers?limit=100") as answer:
        before = len((await answer.json())["data"])
    async with door.post("/v1/agents/sessions", json={"agent": {"model": MODEL}, "input": "hi",
                                                      "environment": {**HOSTED, "plugins": plugins}}) as answer:
        assert answer.status == 400, await answer.text()
        error = (await answer.json())["error"]
    assert error["param"].startswith("environment.plugins[") and words in error["message"], error
    async with door.get("/v1/containers?limit=100") as answer:
        assert len((await answer.json())["data"]) == before  # nothing was made


@doors("http")
async def test_a_required_plugin_server_that_cannot_start_fails_the_first_turn(door: aiohttp.ClientSession) -> None:
    broken = plugin("broken-tools", mcp={"gone": {"command": interpreter_in_sandbox(), "args": ["missing.py"],
                                                  "required": True}})
    events = await turn(door, {"agent": {"model": MODEL}, "input": "hello",
                               "environment": {**HOSTED, "plugins": [broken]}})
    [failed] = [event for event in events if event["type"] == "agent.session.turn.failed"]
    error = strict(Turn, failed["turn"]).error
    assert error is not None and error.code == "connection_failed", error
    assert "MCP server 'gone' is required (by the plugin 'broken-tools')" in error.message, error
    assert not [event for event in events if event["type"] == "agent.session.turn.output_text.delta"]
