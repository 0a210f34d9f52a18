"""Programs that call the bridge's own tools, through both doors: an MCP server's tools (meant for programs only)
called from a program in parallel and in sequence, run by the bridge as the model's calls are (their ``mcp_call``
items and events), the program run again with their outputs, and its result read by the model. A sidecar of its
own reaches the MCP test server on loopback (``RESPONSES_BRIDGE_MCP_ALLOWED_HOSTS``)."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from typing import Any

import aiohttp
import pytest

from tests.integration.test_tool_loop import check_events
from tests.support.bridge import Sidecar, UpstreamLog, running_sidecar
from tests.support.gateway import envoy_before
from tests.support.mcp_server import MCPTestServer
from tests.support.schema import validate_response

pytestmark = pytest.mark.store_proven(
    "tests/integration/test_agents_automations_replicas.py",
    "tests/integration/test_replicas.py",
    "tests/integration/test_input_references.py",
    reason="every store/postgres line it covers on PostgreSQL is covered by the modules named (scripts/pg-coverage)",
)

pytest.importorskip("py_mini_racer")

MODEL = "fake-model"


@pytest.fixture(scope="module")
async def mcp_sidecar(fake_upstream: str, tmp_path_factory: pytest.TempPathFactory) -> AsyncIterator[Sidecar]:
    async with running_sidecar(str(tmp_path_factory.mktemp("programs-mcp")), fake_upstream,
                               env={"RESPONSES_BRIDGE_MCP_ALLOWED_HOSTS": "127.0.0.1"}) as started:
        yield started


@pytest.fixture(scope="module")
async def mcp_envoy(mcp_sidecar: Sidecar) -> AsyncIterator[str]:
    async with envoy_before(mcp_sidecar) as envoy:
        yield envoy


@pytest.fixture(params=["http", "envoy"])
def door_url(request: pytest.FixtureRequest, mcp_sidecar: Sidecar) -> str:
    return mcp_sidecar.http_url if request.param == "http" else str(request.getfixturevalue("mcp_envoy"))


@pytest.fixture
async def door(door_url: str) -> AsyncIterator[aiohttp.ClientSession]:
    url = door_url
    async with aiohttp.ClientSession(base_url=url, timeout=aiohttp.ClientTimeout(total=60)) as session:
        yield session


@pytest.fixture
async def upstream(mcp_sidecar: Sidecar) -> UpstreamLog:
    log = UpstreamLog(mcp_sidecar.upstream_url.removesuffix("/v1"))
    await log.clear()
    return log


def tools(mcp: MCPTestServer, callers: list[str]) -> list[dict[str, Any]]:
    return [{"type": "programmatic_tool_calling"},
            {"type": "mcp", "server_label": "calc", "server_url": mcp.http_url, "require_approval": "never",
             "allowed_tools": ["add", "echo"], "allowed_callers": callers}]


PROGRAM = ("js: const [a, b] = await Promise.all([tools.calc__add({a: 2, b: 3}), tools.calc__add({a: 10, b: 20})]);"
           " const said = await tools.calc__echo({text: `sum ${Number(a) + Number(b)}`}); return said")


@pytest.mark.parametrize("stream", [False, True], ids=["json", "stream"])
async def test_a_program_calls_mcp_tools_the_model_is_not_offered(door: aiohttp.ClientSession, mcp: MCPTestServer,
                                                                  upstream: UpstreamLog, stream: bool) -> None:
    body = {"model": MODEL, "input": PROGRAM, "tools": tools(mcp, ["programmatic"]), "stream": stream}
    async with door.post("/v1/responses", json=body) as r:
        raw = await r.read()
        assert r.status == 200, raw
    if stream:
        events = check_events(raw)  # with the events of MCP items, which the spec types do not know
        response = events[-1]["response"]
        assert "response.mcp_call.completed" in [event["type"] for event in events]
    else:
        response = json.loads(raw)
        validate_response(response)
    assert response["status"] == "completed"
    kinds = [item["type"] for item in response["output"]]
    assert kinds == ["mcp_list_tools", "program", "mcp_call", "mcp_call", "mcp_call", "program_output", "message"]
    calls = response["output"][2:5]
    assert [(call["name"], call["output"]) for call in calls] == [("add", "5"), ("add", "30"), ("echo", "sum 35")]
    assert response["output"][5]["result"] == "sum 35" and response["output"][5]["status"] == "completed"
    assert response["output"][6]["content"][0]["text"] == "Tool result: sum 35"
    first_turn = (await upstream.entries())[0]["body"]
    assert [tool["function"]["name"] for tool in first_turn["tools"]] == ["program"]  # calc__* for programs only
    assert "tools.calc__add(args): Add two integers." in first_turn["tools"][0]["function"]["description"]


async def test_without_a_program_a_tool_for_programs_only_is_not_offered(
        door: aiohttp.ClientSession, mcp: MCPTestServer, upstream: UpstreamLog) -> None:
    mcp_only = tools(mcp, ["programmatic"])[1:]
    async with door.post("/v1/responses", json={"model": MODEL, "input": "hi", "tools": mcp_only}) as r:
        assert r.status == 200, await r.text()
    assert "tools" not in (await upstream.entries())[0]["body"]
    both = tools(mcp, ["direct", "programmatic"])
    async with door.post("/v1/responses", json={"model": MODEL, "input": "hi", "tools": both}) as r:
        assert r.status == 200, await r.text()
    offered = [tool["function"]["name"] for tool in (await upstream.last_body())["tools"]]
    assert offered == ["calc__add", "calc__echo", "program"]


async def test_a_program_that_mixes_client_and_bridge_tools_is_stopped_saying_why(
        door: aiohttp.ClientSession, mcp: MCPTestServer) -> None:
    mixed = [*tools(mcp, ["programmatic"]),
             {"type": "function", "name": "ask_user", "parameters": {"type": "object", "properties": {}},
              "allowed_callers": ["programmatic"]}]
    code = "js: const a = await tools.calc__add({a: 1, b: 1}); return await tools.ask_user({about: a})"
    async with door.post("/v1/responses", json={"model": MODEL, "input": code, "tools": mixed}) as r:
        response = await r.json()
        assert r.status == 200, response
    validate_response(response)
    output = next(item for item in response["output"] if item["type"] == "program_output")
    assert output["status"] == "incomplete" and "cannot be replayed" in output["result"]
    assert not any(item["type"] == "function_call" for item in response["output"])


async def test_the_chain_goes_on_after_a_program_that_called_mcp_tools(
        door: aiohttp.ClientSession, mcp: MCPTestServer, upstream: UpstreamLog) -> None:
    body = {"model": MODEL, "input": PROGRAM, "tools": tools(mcp, ["programmatic"])}
    async with door.post("/v1/responses", json=body) as r:
        first = await r.json()
        assert r.status == 200, first
    async with door.post("/v1/responses", json={**body, "input": "thanks", "previous_response_id": first["id"]}) as r:
        second = await r.json()
        assert r.status == 200, second
    validate_response(second)
    messages = (await upstream.last_body())["messages"]
    # every tool call the upstream reads is answered, each by its own tool message, before the user speaks again
    calls = [call["id"] for message in messages if message["role"] == "assistant"
             for call in message.get("tool_calls") or ()]
    answered = [message["tool_call_id"] for message in messages if message["role"] == "tool"]
    assert sorted(calls) == sorted(answered) and messages[-1] == {"role": "user", "content": "thanks"}
    program_call = next(item for item in first["output"] if item["type"] == "program")
    assert program_call["call_id"] in calls
