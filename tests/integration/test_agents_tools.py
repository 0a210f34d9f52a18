"""The bridge's own tools as an agent's, in a session's turns, through both doors: ``web_search`` (the bridge's web
search: a ``web_search_call`` item; ``mode: "disabled"`` offers none), ``tool_search`` (the server's search over
the agent's deferred functions, the one found then called by the client; the session shows the agent's tools
without it, as the SDK's ``AgentTool`` has no such variant), ``programmatic_tool_calling`` (a program
the model writes calls the agent's MCP tools); ``computer_use`` is refused by name (the ``automations`` tool:
test_agents_automations_sessions.py).
Every event and item is validated strictly with the SDK's types."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import aiohttp
import pytest

from tests.integration.test_agents_api import _ITEMS, BETA, MODEL, frames, read_until_idle, strict
from tests.integration.test_agents_approvals import read_until
from tests.support.bridge import Sidecar, running_sidecar
from tests.support.gateway import envoy_before
from tests.support.mcp_server import MCPTestServer
from tests.support.search_server import SearchServer

pytestmark = pytest.mark.store_proven(
    "tests/integration/test_agents_automations_replicas.py",
    "tests/integration/test_replicas.py",
    "tests/integration/test_input_references.py",
    reason="every store/postgres line it covers on PostgreSQL is covered by the modules named (scripts/pg-coverage)",
)


@pytest.fixture(scope="module")
async def search() -> AsyncIterator[SearchServer]:
    async with SearchServer() as server:
        yield server


@pytest.fixture(scope="module")
async def tools_sidecar(fake_upstream: str, search: SearchServer,
                        tmp_path_factory: pytest.TempPathFactory) -> AsyncIterator[Sidecar]:
    env = {"RESPONSES_BRIDGE_MCP_ALLOWED_HOSTS": "127.0.0.1", "RESPONSES_BRIDGE_WEB_SEARCH": f"searxng:{search.url}"}
    async with running_sidecar(str(tmp_path_factory.mktemp("agents-tools")), fake_upstream, env=env) as sidecar:
        yield sidecar


@pytest.fixture(scope="module")
async def tools_envoy(tools_sidecar: Sidecar) -> AsyncIterator[str]:
    async with envoy_before(tools_sidecar) as url:
        yield url


@pytest.fixture(params=["http", "envoy"])
def door_base(request: pytest.FixtureRequest, tools_sidecar: Sidecar) -> str:
    return tools_sidecar.http_url if request.param == "http" else str(request.getfixturevalue("tools_envoy"))


@pytest.fixture
async def door(door_base: str) -> AsyncIterator[aiohttp.ClientSession]:
    async with aiohttp.ClientSession(door_base, headers=BETA, timeout=aiohttp.ClientTimeout(total=60)) as http:
        yield http


async def run_session(door: aiohttp.ClientSession, tools: list[dict[str, Any]],
                      text: str) -> tuple[str, list[dict[str, Any]]]:
    async with door.post("/v1/agents/sessions", json={"agent": {"model": MODEL, "tools": tools}, "stream": True,
                                                      "environment": {"type": "none"}, "input": text}) as answer:
        assert answer.status == 200, await answer.text()
        events = [event for _, event in frames(await read_until_idle(answer))]
    return events[0]["session"]["id"], events


async def items_of(door: aiohttp.ClientSession, session_id: str) -> list[Any]:
    async with door.get(f"/v1/agents/sessions/{session_id}/items", params={"order": "asc"}) as answer:
        assert answer.status == 200
        return [strict(_ITEMS, item) for item in (await answer.json())["data"]]


def answer_text(events: list[dict[str, Any]]) -> str:
    return "".join(e["delta"] for e in events if e["type"] == "agent.session.turn.output_text.delta")


async def test_web_search_is_the_bridges(door: aiohttp.ClientSession, search: SearchServer) -> None:
    before = len(search.requests)
    session_id, events = await run_session(door, [{"type": "web_search", "context_size": "low"}],
                                           "call web_search wrens")
    [call] = [e["item"] for e in events if e["type"] == "agent.session.turn.item.done"
              and e["item"]["type"] == "web_search_call"]
    assert call["status"] == "completed" and call["action"]["type"] == "search"
    assert call["action"]["query"] == "wrens"
    assert len(search.requests) > before and search.requests[-1].query.get("q") == "wrens"
    assert answer_text(events).startswith("Tool result:")
    assert [item.type for item in await items_of(door, session_id)] == ["message", "web_search_call", "message"]


async def test_a_disabled_web_search_is_not_offered(door: aiohttp.ClientSession, search: SearchServer) -> None:
    before = len(search.requests)
    _, events = await run_session(door, [{"type": "web_search", "mode": "disabled"}], "call web_search wrens")
    assert answer_text(events) == "Echo: call web_search wrens"
    assert len(search.requests) == before


async def test_tool_search_finds_a_deferred_function_the_client_runs(door: aiohttp.ClientSession) -> None:
    lookup = {"type": "function", "name": "lookup_bird", "description": "Look a bird up by its name",
              "defer_loading": True, "parameters": {"type": "object", "properties": {"name": {"type": "string"}}}}
    async with door.post("/v1/agents/sessions", json={
            "agent": {"model": MODEL, "tools": [{"type": "tool_search"}, lookup]}, "stream": True,
            "environment": {"type": "none"}, "input": "call tool_search bird [then=lookup_bird]"}) as answer:
        assert answer.status == 200, await answer.text()
        first = frames(await read_until(answer, "agent.session.requires_action"))
    session = first[-1][1]["session"]
    assert [tool["type"] for tool in session["agent"]["tools"]] == ["function"]
    assert session["agent"]["tools"][0]["defer_loading"] is True
    [action] = session["required_actions"]
    assert action["type"] == "function_call" and action["name"] == "lookup_bird"
    async with door.post(f"/v1/agents/sessions/{session['id']}/events", json={"events": [{
            "type": "agent.session.input.tool_result", "call_id": action["call_id"], "turn_id": action["turn_id"],
            "success": True, "output": "a small brown bird"}]}) as answer:
        assert answer.status == 202
    async with door.get(f"/v1/agents/sessions/{session['id']}/events",
                        headers={"Last-Event-ID": first[-1][0]}) as answer:
        rest = [event for _, event in frames(await read_until_idle(answer))]
    assert answer_text(rest) == "Tool result: a small brown bird"


async def test_a_program_calls_the_agents_mcp_tools(door: aiohttp.ClientSession, mcp: MCPTestServer) -> None:
    tools = [{"type": "programmatic_tool_calling", "enabled": True},
             {"type": "mcp", "server_label": "tools", "allowed_tools": ["lookup"],
              "transport": {"type": "http", "server_url": mcp.http_url}}]
    session_id, events = await run_session(door, tools, 'js: const a = await tools.tools__lookup({key: "k1"}); '
                                                        'const b = await tools.tools__lookup({key: "k2"}); '
                                                        'return `${a} and ${b}`')
    calls = [e["item"] for e in events if e["type"] == "agent.session.turn.item.done"
             and e["item"]["type"] == "mcp_call"]
    assert [call["output"] for call in calls] == ["value of k1", "value of k2"]
    assert answer_text(events) == "Tool result: value of k1 and value of k2"
    assert [item.type for item in await items_of(door, session_id)] == ["message", "mcp_call", "mcp_call",
                                                                        "message"]


@pytest.mark.parametrize(("tools", "param", "words"), [
    ([{"type": "computer_use"}], "agent.tools[0].type", "needs a desktop in the session's environment"),
    ([{"type": "automations"}, {"type": "function", "name": "create_automation", "description": "",
                                  "parameters": {}}], "agent.tools[0].type", "'create_automation'"),
])
async def test_tools_a_session_cannot_run_are_refused(door: aiohttp.ClientSession, tools: list[dict[str, Any]],
                                                      param: str, words: str) -> None:
    async with door.post("/v1/agents/sessions", json={"agent": {"model": MODEL, "tools": tools},
                                                      "environment": {"type": "none"}, "input": "x"}) as answer:
        assert answer.status == 400
        error = (await answer.json())["error"]
    assert error["param"] == param and words in error["message"]
    assert error["code"] == "invalid_value"


async def test_a_program_never_makes_a_call_that_needs_approval(door: aiohttp.ClientSession,
                                                                mcp: MCPTestServer) -> None:
    tools = [{"type": "programmatic_tool_calling", "enabled": True},
             {"type": "mcp", "server_label": "tools", "allowed_tools": ["echo"],
              "transport": {"type": "http", "server_url": mcp.http_url}}]
    _, events = await run_session(door, tools, 'js: const a = await tools.tools__echo({text: "k1"}); return a')
    assert "agent.session.requires_action" not in [e["type"] for e in events]
    assert not [e for e in events if e["type"].startswith("agent.session.turn.item")
                and e["item"]["type"] == "mcp_call"]
    assert "Program stopped: it calls 'tools__echo', an MCP tool that needs the client's approval" in \
        answer_text(events)
