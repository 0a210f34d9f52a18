"""The server-side tool loop through the HTTP door, WebSocket mode and background runs: remote MCP tools and web
search run between model turns, in one response with one stream.

A sidecar of its own (module scope) reaches the MCP test server (tests/support/mcp_server.py) on loopback through
``RESPONSES_BRIDGE_MCP_ALLOWED_HOSTS=127.0.0.1`` and searches a SearXNG-format server on loopback. The fake
upstream calls a tool when the user writes ``call <name>`` (MCP tools are offered as ``<server_label>__<tool>``)
and ``[then=NAME]`` scripts the next call after each round of results, so a 3-turn loop is
``call tools__add [then=tools__echo]``. Every event is checked against the SDK's and the spec's types.
"""

from __future__ import annotations

import asyncio
import socket
from collections.abc import AsyncIterator
from typing import Any

import aiohttp
import openai
import orjson
import pytest

from tests.support.bridge import Sidecar, UpstreamLog, running_sidecar
from tests.support.mcp_server import MCPTestServer
from tests.support.schema import parse_sse, validate_response
from tests.support.sdk import async_sdk
from tests.support.sdk_strict import failure_reason
from tests.support.search_server import SearchServer
from tests.unit.test_server_tool_turns import _event_adapter, _item_adapter, check_event, check_item_order

pytestmark = pytest.mark.filterwarnings("ignore::pytest.PytestUnraisableExceptionWarning")
pytestmark = [pytestmark, pytest.mark.store_proven(
    "tests/integration/test_replicas.py",
    "tests/integration/test_agents_automations_replicas.py",
    reason="every store/postgres line it covers on PostgreSQL is covered by the modules named (scripts/pg-coverage)",
)]

MCP_CALL_TIMEOUT = 3.0


@pytest.fixture(scope="module")
async def search() -> AsyncIterator[SearchServer]:
    async with SearchServer() as server:
        yield server


@pytest.fixture(scope="module")
async def loop_sidecar(fake_upstream: str, search: SearchServer,
                       tmp_path_factory: pytest.TempPathFactory) -> AsyncIterator[Sidecar]:
    env = {"RESPONSES_BRIDGE_MCP_ALLOWED_HOSTS": "127.0.0.1", "RESPONSES_BRIDGE_WEB_SEARCH": f"searxng:{search.url}",
           "RESPONSES_BRIDGE_MCP_CALL_TIMEOUT": str(MCP_CALL_TIMEOUT),
           "RESPONSES_BRIDGE_MCP_CONNECT_TIMEOUT": "2", "RESPONSES_BRIDGE_MCP_TOTAL_TIMEOUT": "6",
           "RESPONSES_BRIDGE_MAX_TURNS": "4"}
    async with running_sidecar(str(tmp_path_factory.mktemp("loop")), fake_upstream, env=env,
                               extproc=False) as started:
        yield started


@pytest.fixture
async def sdk(loop_sidecar: Sidecar) -> AsyncIterator[openai.AsyncOpenAI]:
    async with async_sdk(base_url=f"{loop_sidecar.http_url}/v1", api_key="sk-client", max_retries=0,
                                  timeout=60) as client:
        yield client


@pytest.fixture
async def raw(loop_sidecar: Sidecar) -> AsyncIterator[aiohttp.ClientSession]:
    async with aiohttp.ClientSession(base_url=loop_sidecar.http_url,
                                     timeout=aiohttp.ClientTimeout(total=60)) as session:
        yield session


@pytest.fixture
async def upstream(loop_sidecar: Sidecar) -> UpstreamLog:
    log = UpstreamLog(loop_sidecar.upstream_url.removesuffix("/v1"))
    await log.clear()
    return log


def mcp_tool(url: str, approval: Any = "never", label: str = "tools", **fields: Any) -> dict[str, Any]:
    return {"type": "mcp", "server_label": label, "server_url": url, "require_approval": approval, **fields}


def check_response(response: dict[str, Any]) -> None:
    validate_response(response)
    for item in response["output"]:
        assert _item_adapter().validate_python(item).type == item["type"]


def check_events(raw_bytes: bytes) -> list[dict[str, Any]]:
    """Every event valid for the SDK (and the spec where it knows it), sequence numbers 0, 1, 2…, every
    item added once at the next output_index (unique and dense), the terminal event's response valid."""
    events = parse_sse(raw_bytes)
    for event in events:
        check_event(event)
    per_item = check_item_order(events)
    final = events[-1]["response"]
    assert sorted(per_item) == list(range(len(final["output"])))
    check_response(final)
    return events


async def stream_raw(raw: aiohttp.ClientSession, body: dict[str, Any]) -> bytes:
    async with raw.post("/v1/responses", json=dict(body, stream=True)) as answer:
        assert answer.status == 200, await answer.text()
        return await answer.read()


def types(response: dict[str, Any]) -> list[str]:
    return [item["type"] for item in response["output"]]


async def chat_bodies(upstream: UpstreamLog) -> list[dict[str, Any]]:
    return [entry["body"] for entry in await upstream.entries()]


# --- a whole loop ---------------------------------------------------------------------------------------------------


async def test_a_three_turn_mcp_loop_streamed(raw: aiohttp.ClientSession, mcp: MCPTestServer,
                                              upstream: UpstreamLog) -> None:
    body = {"model": "fake-model", "input": "call tools__add [then=tools__echo]",
            "tools": [mcp_tool(mcp.http_url, allowed_tools=["add", "echo"])]}
    events = check_events(await stream_raw(raw, body))
    final = events[-1]["response"]
    assert events[-1]["type"] == "response.completed"
    assert types(final) == ["mcp_list_tools", "mcp_call", "mcp_call", "message"]
    add, echo = final["output"][1], final["output"][2]
    assert (add["name"], add["output"], add["server_label"]) == ("add", "84", "tools")
    assert (echo["name"], echo["output"]) == ("echo", "test")
    assert final["output"][3]["content"][0]["text"] == "Tool result: test"
    kinds = [event["type"] for event in events]
    assert kinds.count("response.created") == 1 and kinds.count("response.in_progress") == 1
    assert "response.mcp_call.completed" in kinds and "response.mcp_call_arguments.done" in kinds
    bodies = await chat_bodies(upstream)
    assert len(bodies) == 3  # three model turns
    assert [message["role"] for message in bodies[2]["messages"][-4:]] == ["assistant", "tool", "assistant", "tool"]
    usage = final["usage"]
    assert usage["total_tokens"] == usage["input_tokens"] + usage["output_tokens"]
    stored = await (await raw.get(f"/v1/responses/{final['id']}")).json()
    assert types(stored) == types(final) and stored["status"] == "completed"
    assert stored["usage"] == usage


async def test_usage_is_summed_over_the_turns(sdk: openai.AsyncOpenAI, mcp: MCPTestServer) -> None:
    one = await sdk.responses.create(model="fake-model", input="call tools__add",
                                     tools=[mcp_tool(mcp.http_url, allowed_tools=["add"])])  # type: ignore[list-item]
    plain = await sdk.responses.create(model="fake-model", input="call tools__add")
    assert one.usage is not None and plain.usage is not None
    # two turns: the first (same prompt words, a call) and the second (longer prompt, an answer)
    assert one.usage.input_tokens > 2 * plain.usage.input_tokens - 1
    assert one.usage.total_tokens == one.usage.input_tokens + one.usage.output_tokens


async def test_a_three_turn_loop_not_streamed_with_the_sdk(sdk: openai.AsyncOpenAI, raw: aiohttp.ClientSession,
                                                           mcp: MCPTestServer, upstream: UpstreamLog) -> None:
    response = await sdk.responses.create(
        model="fake-model", input="call tools__add [then=tools__lookup] [then=tools__echo]",
        tools=[mcp_tool(mcp.http_url, allowed_tools=["add", "echo", "lookup"])])  # type: ignore[list-item]
    assert response.status == "completed"
    assert [item.type for item in response.output] == ["mcp_list_tools", "mcp_call", "mcp_call", "mcp_call",
                                                        "message"]
    assert [item.name for item in response.output[1:4]] == ["add", "lookup", "echo"]  # type: ignore[union-attr]
    assert response.output_text == "Tool result: test"
    assert len(await chat_bodies(upstream)) == 4
    check_response(await (await raw.get(f"/v1/responses/{response.id}")).json())  # as stored, as sent
    # the echo of the tools carries no credentials, and a continuation replays the loop's turns
    follow = await sdk.responses.create(model="fake-model", input="and now?", previous_response_id=response.id)
    replayed = (await chat_bodies(upstream))[-1]["messages"]
    assert [m["role"] for m in replayed] == ["user", "assistant", "tool", "assistant", "tool", "assistant", "tool",
                                             "assistant", "user"]
    assert follow.output_text == "Echo: and now?"


async def test_the_turn_cap_sends_the_last_turn_without_tools(sdk: openai.AsyncOpenAI, mcp: MCPTestServer,
                                                             upstream: UpstreamLog) -> None:
    # RESPONSES_BRIDGE_MAX_TURNS=4: the fourth turn is offered no tools, so the model answers
    response = await sdk.responses.create(
        model="fake-model", input="call tools__add [then=tools__add] [then=tools__add] [then=tools__add]",
        tools=[mcp_tool(mcp.http_url, allowed_tools=["add"])])  # type: ignore[list-item]
    assert response.status == "completed"
    assert [item.type for item in response.output] == ["mcp_list_tools", *["mcp_call"] * 3, "message"]
    bodies = await chat_bodies(upstream)
    assert len(bodies) == 4 and "tools" not in bodies[3] and "tools" in bodies[2]


async def test_credentials_are_not_echoed_or_stored(raw: aiohttp.ClientSession, mcp: MCPTestServer) -> None:
    body = {"model": "fake-model", "input": "call tools__whoami",
            "tools": [mcp_tool(mcp.http_url, allowed_tools=["whoami"], headers={"X-Api-Key": "k-secret-1"},
                               authorization="tok-secret-2")]}
    answer = await raw.post("/v1/responses", json=body)
    text = await answer.text()
    response = orjson.loads(text)
    assert response["status"] == "completed"
    assert "x-api-key=k-secret-1" in response["output"][1]["output"]  # sent to the server...
    stored = await (await raw.get(f"/v1/responses/{response['id']}")).json()
    for where in (response["tools"], stored["tools"]):  # ...never echoed or stored
        assert "headers" not in where[0] and "authorization" not in where[0]
        assert b"secret" not in orjson.dumps(where)


# --- web search -----------------------------------------------------------------------------------------------------


async def test_web_search_with_url_citations_streamed(raw: aiohttp.ClientSession, search: SearchServer) -> None:
    body = {"model": "fake-model", "input": "call web_search widgets", "tools": [{"type": "web_search"}],
            "include": ["web_search_call.action.sources"]}
    events = check_events(await stream_raw(raw, body))
    final = events[-1]["response"]
    assert types(final) == ["web_search_call", "message"]
    call = final["output"][0]
    assert call["status"] == "completed" and call["action"]["query"] == "widgets"
    assert call["action"]["sources"][0]["url"].startswith("https://example.com/widgets/")
    annotations = final["output"][1]["content"][0]["annotations"]
    assert annotations and all(a["type"] == "url_citation" for a in annotations)
    text = final["output"][1]["content"][0]["text"]
    assert text[annotations[0]["start_index"]:annotations[0]["end_index"]] in (annotations[0]["url"], "[1]")
    kinds = [event["type"] for event in events]
    assert "response.web_search_call.searching" in kinds
    assert kinds.count("response.output_text.annotation.added") == len(annotations)


# --- approvals ------------------------------------------------------------------------------------------------------


async def test_approval_across_two_requests_by_previous_response_id_and_inline(
        sdk: openai.AsyncOpenAI, mcp: MCPTestServer) -> None:
    tools = [mcp_tool(mcp.http_url, approval="always", allowed_tools=["add"])]
    first = await sdk.responses.create(model="fake-model", input="call tools__add", tools=tools)  # type: ignore[arg-type]
    assert first.status == "completed"
    assert [item.type for item in first.output] == ["mcp_list_tools", "mcp_approval_request"]
    request_id = first.output[1].id
    second = await sdk.responses.create(
        model="fake-model", previous_response_id=first.id, tools=tools,  # type: ignore[arg-type]
        input=[{"type": "mcp_approval_response", "approval_request_id": request_id, "approve": True}])
    assert [item.type for item in second.output] == ["mcp_call", "message"]
    assert second.output[0].output == "84"  # type: ignore[union-attr]
    assert second.output_text == "Tool result: 84"
    # inline: the whole conversation in the input, store off
    inline = await sdk.responses.create(
        model="fake-model", tools=tools, store=False,  # type: ignore[arg-type]
        input=[{"role": "user", "content": "call tools__add"},
               *[item.model_dump(mode="json", exclude_none=True) for item in first.output],
               {"type": "mcp_approval_response", "approval_request_id": request_id, "approve": True}])
    assert [item.type for item in inline.output] == ["mcp_call", "message"]
    assert inline.output_text == "Tool result: 84"


# --- failing servers ------------------------------------------------------------------------------------------------


async def test_failing_slow_and_unreachable_servers_are_failed_items(sdk: openai.AsyncOpenAI,
                                                                     mcp: MCPTestServer) -> None:
    slow = await sdk.responses.create(model="fake-model", input="call tools__slow",
                                      tools=[mcp_tool(mcp.http_url, allowed_tools=["slow"])])  # type: ignore[list-item]
    assert slow.status == "completed"
    call = slow.output[1]
    assert call.type == "mcp_call" and "did not answer the tool call within 3 s" in str(call.error)
    assert call.error is not None and call.error.type == "http_error" and call.error.code == 504  # type: ignore[union-attr]
    failing = await sdk.responses.create(model="fake-model", input="call tools__fail",
                                         tools=[mcp_tool(mcp.http_url, allowed_tools=["fail"])])  # type: ignore[list-item]
    assert failing.status == "completed" and "Error executing tool fail" in str(failing.output[1].error)  # type: ignore[union-attr]
    with socket.socket() as closed:  # a port nobody listens on
        closed.bind(("127.0.0.1", 0))
        dead_url = f"http://127.0.0.1:{closed.getsockname()[1]}/mcp"
    unreachable = await sdk.responses.create(model="fake-model", input="hello",
                                             tools=[mcp_tool(dead_url)])  # type: ignore[list-item]
    assert unreachable.status == "completed"
    assert unreachable.output[0].type == "mcp_list_tools" and unreachable.output[0].error  # type: ignore[union-attr]
    assert unreachable.output_text == "Echo: hello"


async def test_a_transport_failure_streams_the_sdks_http_error(raw: aiohttp.ClientSession,
                                                                mcp: MCPTestServer) -> None:
    """A call the server does not answer in time: ``mcp_call.failed`` and the item's error the SDK's
    ``http_error`` (504), every event strictly one of the SDK's union; stored as streamed."""
    events = check_events(await stream_raw(raw, {"model": "fake-model", "input": "call tools__slow",
                                                 "tools": [mcp_tool(mcp.http_url, allowed_tools=["slow"])]}))
    for event in events:
        _event_adapter().validate_python(event, strict=True)
    assert "response.mcp_call.failed" in [event["type"] for event in events]
    call = events[-1]["response"]["output"][1]
    assert call["type"] == "mcp_call" and call["status"] == "failed"
    assert call["error"]["type"] == "http_error" and call["error"]["code"] == 504
    assert "did not answer the tool call within 3 s" in call["error"]["message"]
    stored = await (await raw.get(f"/v1/responses/{events[-1]['response']['id']}")).json()
    assert stored["output"][1]["error"] == call["error"]


async def test_a_server_answering_garbage_is_a_failed_listing(sdk: openai.AsyncOpenAI,
                                                             search: SearchServer) -> None:
    # the search server's SearXNG route is no MCP server: its answers are not MCP
    response = await sdk.responses.create(model="fake-model", input="hello",
                                          tools=[mcp_tool(f"{search.url}/search")])  # type: ignore[list-item]
    assert response.status == "completed"
    assert response.output[0].type == "mcp_list_tools" and response.output[0].error  # type: ignore[union-attr]


async def test_a_loopback_server_not_allowed_is_a_400(raw: aiohttp.ClientSession, upstream: UpstreamLog) -> None:
    answer = await raw.post("/v1/responses", json={"model": "fake-model", "input": "x",
                                                   "tools": [mcp_tool("http://127.0.0.2:9/mcp")]})
    assert answer.status == 400
    error = (await answer.json())["error"]
    assert error["type"] == "invalid_request_error" and "127.0.0.2" in error["message"]
    assert await upstream.entries() == []


# --- max_tool_calls, parallel_tool_calls, tool_choice ---------------------------------------------------------------


async def test_max_tool_calls_and_parallel_tool_calls(sdk: openai.AsyncOpenAI, mcp: MCPTestServer,
                                                      upstream: UpstreamLog) -> None:
    tools = [mcp_tool(mcp.http_url, allowed_tools=["add", "echo"])]
    limited = await sdk.responses.create(model="fake-model", input="call tools__add call tools__echo",
                                         tools=tools, max_tool_calls=1)  # type: ignore[arg-type]
    calls = [item for item in limited.output if item.type == "mcp_call"]
    assert len(calls) == 2 and calls[0].error is None and calls[1].error  # type: ignore[union-attr]
    assert limited.status == "completed"
    assert "tools" not in (await chat_bodies(upstream))[-1]  # the last turn goes without tools
    await upstream.clear()
    serial = await sdk.responses.create(model="fake-model", input="call tools__add call tools__echo",
                                        tools=tools, parallel_tool_calls=False)  # type: ignore[arg-type]
    assert [item.type for item in serial.output] == ["mcp_list_tools", "mcp_call", "message"]
    assert (await chat_bodies(upstream))[0]["parallel_tool_calls"] is False


async def test_tool_choice_forcing_an_mcp_server(sdk: openai.AsyncOpenAI, mcp: MCPTestServer,
                                                 upstream: UpstreamLog) -> None:
    other = {"type": "function", "name": "other", "parameters": {"type": "object", "properties": {}}}
    response = await sdk.responses.create(
        model="fake-model", input="just say hi", tool_choice={"type": "mcp", "server_label": "tools"},
        tools=[mcp_tool(mcp.http_url, allowed_tools=["lookup", "add"]), other])  # type: ignore[list-item]
    assert [item.type for item in response.output] == ["mcp_list_tools", "mcp_call", "message"]
    first, second = await chat_bodies(upstream)
    assert first["tool_choice"] == "required"  # the first turn offers only the server's tools, and must call
    assert sorted(tool["function"]["name"] for tool in first["tools"]) == ["tools__add", "tools__lookup"]
    assert second["tool_choice"] == "auto" and len(second["tools"]) == 3


async def test_the_servers_description_reaches_the_model(sdk: openai.AsyncOpenAI, mcp: MCPTestServer,
                                                         upstream: UpstreamLog) -> None:
    """``server_description`` is what the model knows of the server: before each of its tools' own descriptions
    (it was parsed and dropped)."""
    await sdk.responses.create(model="fake-model", input="just say hi", tools=[mcp_tool(
        mcp.http_url, allowed_tools=["lookup"], server_description="The team's wiki.")])  # type: ignore[list-item]
    offered = (await chat_bodies(upstream))[0]["tools"]
    assert [tool["function"]["name"] for tool in offered] == ["tools__lookup"]
    assert offered[0]["function"]["description"].startswith("The team's wiki.\n\n")


# --- cancellation ---------------------------------------------------------------------------------------------------


async def until(condition: Any, what: str, deadline: float = 20.0) -> Any:
    async with asyncio.timeout(deadline):
        while not (value := await condition()):
            await asyncio.sleep(0.05)
    assert value, what
    return value


async def test_a_client_that_disconnects_mid_loop_leaves_a_failed_response(
        loop_sidecar: Sidecar, raw: aiohttp.ClientSession, mcp: MCPTestServer) -> None:
    body = {"model": "fake-model", "input": "call tools__slow", "stream": True,
            "tools": [mcp_tool(mcp.http_url, allowed_tools=["slow"])]}
    response_id = None
    async with aiohttp.ClientSession() as session:
        async with session.post(f"{loop_sidecar.http_url}/v1/responses", json=body) as answer:
            seen = b""
            async for line in answer.content:
                seen += line
                if response_id is None and b'"response.created"' in line:
                    response_id = orjson.loads(line.removeprefix(b"data: "))["response"]["id"]
                if b"response.mcp_call.in_progress" in line:
                    answer.close()  # the call runs now: hang up mid-loop
                    break
    assert response_id is not None

    async def stored() -> dict[str, Any] | None:
        answer = await raw.get(f"/v1/responses/{response_id}")
        found = await answer.json() if answer.status == 200 else None
        return found if found and found["status"] != "in_progress" else None

    response = await until(stored, "the abandoned response is stored")
    assert response["status"] == "failed" and failure_reason(response["error"]) == "client_disconnected"


async def test_cancelling_a_background_loop(raw: aiohttp.ClientSession, mcp: MCPTestServer) -> None:
    body = {"model": "fake-model", "input": "call tools__slow", "background": True,
            "tools": [mcp_tool(mcp.http_url, allowed_tools=["slow"])]}
    created = await (await raw.post("/v1/responses", json=body)).json()
    assert created["status"] == "queued"
    response_id = created["id"]
    async with raw.get(f"/v1/responses/{response_id}", params={"stream": "true"}) as events:
        async for line in events.content:
            if b"response.mcp_call.in_progress" in line:
                break
    cancelled = await (await raw.post(f"/v1/responses/{response_id}/cancel")).json()
    assert cancelled["status"] == "cancelled"
    stored = await (await raw.get(f"/v1/responses/{response_id}")).json()
    assert stored["status"] == "cancelled"
    assert [item["type"] for item in stored["output"]][:2] == ["mcp_list_tools", "mcp_call"]


async def test_deleting_a_background_loop_mid_call(raw: aiohttp.ClientSession, mcp: MCPTestServer) -> None:
    body = {"model": "fake-model", "input": "call tools__slow", "background": True,
            "tools": [mcp_tool(mcp.http_url, allowed_tools=["slow"])]}
    response_id = (await (await raw.post("/v1/responses", json=body)).json())["id"]
    async with raw.get(f"/v1/responses/{response_id}", params={"stream": "true"}) as events:
        async for line in events.content:
            if b"response.mcp_call.in_progress" in line:
                break
    deleted = await raw.delete(f"/v1/responses/{response_id}")
    assert deleted.status == 200 and (await deleted.json())["deleted"] is True
    assert (await raw.get(f"/v1/responses/{response_id}")).status == 404


async def test_a_background_loop_completes(raw: aiohttp.ClientSession, mcp: MCPTestServer) -> None:
    body = {"model": "fake-model", "input": "call tools__add [then=tools__echo]", "background": True,
            "tools": [mcp_tool(mcp.http_url, allowed_tools=["add", "echo"])]}
    created = await (await raw.post("/v1/responses", json=body)).json()
    async with raw.get(f"/v1/responses/{created['id']}", params={"stream": "true"}) as answer:
        replay = await answer.read()
    events = parse_sse(replay)
    for event in events:
        check_event(event)
    final = events[-1]["response"]
    assert events[-1]["type"] == "response.completed"
    assert types(final) == ["mcp_list_tools", "mcp_call", "mcp_call", "message"]


# --- WebSocket mode -------------------------------------------------------------------------------------------------


async def test_a_websocket_loop(loop_sidecar: Sidecar, mcp: MCPTestServer) -> None:
    body = {"type": "response.create", "model": "fake-model", "input": "call tools__add [then=tools__echo]",
            "tools": [mcp_tool(mcp.http_url, allowed_tools=["add", "echo"])]}
    events: list[dict[str, Any]] = []
    async with aiohttp.ClientSession() as session:
        async with session.ws_connect(f"{loop_sidecar.http_url.replace('http', 'ws')}/v1/responses") as ws:
            await ws.send_str(orjson.dumps(body).decode())
            while not events or events[-1]["type"] not in ("response.completed", "response.failed", "error"):
                events.append(orjson.loads((await ws.receive()).data))
    for event in events:
        check_event(event)
    check_item_order(events)
    final = events[-1]["response"]
    assert types(final) == ["mcp_list_tools", "mcp_call", "mcp_call", "message"]
    assert [event["type"] for event in events].count("response.created") == 1
