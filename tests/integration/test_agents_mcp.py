"""A session's agent with an MCP server over HTTP: the bridge's tool loop calls it inside the turn (a read-only
tool without asking for approval: test_agents_approvals.py has the others), the call shown as the SDK's ``mcp_call``
item, through both doors; a server in an environment without one is refused."""

from __future__ import annotations

from collections.abc import AsyncIterator

import aiohttp
import pytest

from tests.integration.test_agents_api import _ITEMS, BETA, MODEL, frames, read_until_idle, strict
from tests.support.bridge import Sidecar, running_sidecar
from tests.support.gateway import envoy_before
from tests.support.mcp_server import MCPTestServer

pytestmark = pytest.mark.store_proven(
    "tests/integration/test_agents_automations_replicas.py",
    "tests/integration/test_input_references.py",
    reason="every store/postgres line it covers on PostgreSQL is covered by the modules named (scripts/pg-coverage)",
)


@pytest.fixture(scope="module")
async def mcp_sidecar(fake_upstream: str, tmp_path_factory: pytest.TempPathFactory) -> AsyncIterator[Sidecar]:
    async with running_sidecar(str(tmp_path_factory.mktemp("agents-mcp")), fake_upstream,
                               env={"RESPONSES_BRIDGE_MCP_ALLOWED_HOSTS": "127.0.0.1"}) as sidecar:
        yield sidecar


@pytest.fixture(scope="module")
async def mcp_envoy(mcp_sidecar: Sidecar) -> AsyncIterator[str]:
    async with envoy_before(mcp_sidecar) as url:
        yield url


@pytest.fixture(params=["http", "envoy"])
def door_base(request: pytest.FixtureRequest, mcp_sidecar: Sidecar) -> str:
    return mcp_sidecar.http_url if request.param == "http" else str(request.getfixturevalue("mcp_envoy"))


@pytest.fixture
async def door(door_base: str) -> AsyncIterator[aiohttp.ClientSession]:
    async with aiohttp.ClientSession(door_base, headers=BETA, timeout=aiohttp.ClientTimeout(total=60)) as http:
        yield http


async def test_an_mcp_servers_tool_called_inside_a_turn(door: aiohttp.ClientSession, mcp: MCPTestServer) -> None:
    tool = {"type": "mcp", "server_label": "tools", "allowed_tools": ["lookup"],
            "transport": {"type": "http", "server_url": mcp.http_url}}
    async with door.post("/v1/agents", json={"model": MODEL, "tools": [tool]}) as answer:
        assert answer.status == 200, await answer.text()
        agent = await answer.json()
    async with door.post("/v1/agents/sessions", json={
            "agent_id": agent["id"], "environment": {"type": "none"}, "stream": True,
            "input": 'call tools__lookup [args={"key": "over the wire"}]'}) as answer:
        assert answer.status == 200, await answer.text()
        events = [event for _, event in frames(await read_until_idle(answer))]
    done = [event["item"] for event in events if event["type"] == "agent.session.turn.item.done"]
    assert [item["type"] for item in done] == ["mcp_call", "message"]
    call = done[0]
    assert (call["server_label"], call["name"], call["arguments"], call["status"]) == (
        "tools", "lookup", {"key": "over the wire"}, "completed")
    assert "over the wire" in call["output"]
    text = "".join(e["delta"] for e in events if e["type"] == "agent.session.turn.output_text.delta")
    assert text.startswith("Tool result:") and "over the wire" in text
    session_id = events[0]["session"]["id"]
    async with door.get(f"/v1/agents/sessions/{session_id}/items", params={"order": "asc"}) as answer:
        items = [strict(_ITEMS, item) for item in (await answer.json())["data"]]
    assert [item.type for item in items] == ["message", "mcp_call", "message"]


@pytest.mark.parametrize(("change", "param"), [
    ({"transport": {"type": "stdio", "command": "server", "cwd": "/workspace"}}, "agent.tools[0].transport.type"),
    ({"connection_origin": "environment"}, "agent.tools[0].connection_origin"),
])
async def test_mcp_servers_a_session_cannot_reach_are_refused(door: aiohttp.ClientSession, change: dict,
                                                              param: str) -> None:
    """A server in the environment (test_agents_mcp_environment.py) needs one the bridge runs."""
    tool = {"type": "mcp", "server_label": "tools", "transport": {"type": "http", "server_url": "http://x"},
            **change}
    async with door.post("/v1/agents/sessions", json={"agent": {"model": MODEL, "tools": [tool]},
                                                      "environment": {"type": "none"}, "input": "x"}) as answer:
        assert answer.status == 400
        error = (await answer.json())["error"]
    assert error["param"] == param and "openai_hosted" in error["message"]
