"""run/server_tools.py, the executor of a response's server tools, against real servers: the ``mcp`` package's
server in a child process (tests/support/mcp_server.py: ``add``, ``echo``, ``slow``, ``fail``, ``big``…) and a
SearXNG-format search server on loopback. The model's turns are recorded Chat Completions chunks fed through a real
OutputBuilder (as in test_server_tool_turns.py); every event and item is validated with the ``openai`` SDK types.
Nothing here asserts how long anything took."""

from __future__ import annotations

import asyncio
import hashlib
from collections.abc import AsyncIterator
from typing import Any

import orjson
import pytest

from responses_bridge.demo import fake_upstream
from responses_bridge.demo.procs import free_port
from responses_bridge.engine.options import EngineOptions
from responses_bridge.engine.responses.output_builder import OutputBuilder
from responses_bridge.engine.responses.request_translation import build_chat_request, plan_request_tools
from responses_bridge.engine.responses.response_object import new_response
from responses_bridge.engine.responses.turns import follow_up_request
from responses_bridge.engine.sse import encode_event
from responses_bridge.engine.tools.turn_result import TurnResult
from responses_bridge.protocol.errors import APIError
from responses_bridge.protocol.responses.request import parse_request
from responses_bridge.run.server_tools import (
    ServerToolRun,
    ServerTools,
    ServerToolServices,
    TurnOutcome,
    storable_tools,
)
from responses_bridge.run.tools.mcp import MCPLimits, MCPTools
from responses_bridge.run.tools.web_search import (
    SearchProvider,
    SearchResult,
    WebSearchError,
    WebSearchSettings,
    provider_from_settings,
)
from responses_bridge.store.base import DEFAULT_TENANT
from tests.support.mcp_server import MCPTestServer, running_mcp_server
from tests.support.schema import parse_sse, validate_response
from tests.support.search_server import SearchServer
from tests.unit.test_server_tool_turns import _item_adapter, check_event, check_item_order, end, feed_turn, text, tool

OPTIONS = EngineOptions()
LOCAL = "127.0.0.1,::1"
SECRET = "hdr-secret-4b1e9a"
TOKEN = "tok-secret-77c0d2"


@pytest.fixture(scope="module")
async def mcp_server() -> AsyncIterator[MCPTestServer]:
    async with running_mcp_server() as server:
        yield server


OPENED: dict[int, list[SearchProvider]] = {}  # per search server: the providers a test made, closed after it


@pytest.fixture
async def search() -> AsyncIterator[SearchServer]:
    async with SearchServer() as running:
        yield running
        for provider in OPENED.pop(id(running), []):
            await provider.aclose()


def limits(**overrides: Any) -> MCPLimits:
    return MCPLimits(**{"allowed_hosts": LOCAL, "connect_timeout": 2.0, "call_timeout": 10.0,
                        "total_timeout": 20.0, **overrides})


def searxng(server: SearchServer) -> SearchProvider:
    provider = provider_from_settings(WebSearchSettings(provider="searxng", base_url=server.url, timeout=5.0))
    assert provider is not None
    OPENED.setdefault(id(server), []).append(provider)
    return provider


def mcp_tool(url: str, approval: Any = "never", label: str = "tools", **fields: Any) -> dict[str, Any]:
    return {"type": "mcp", "server_label": label, "server_url": url, "require_approval": approval, **fields}


class Loop:
    """Plays the run around the executor: one builder, the plan, the model's turns, the follow-up bodies."""

    def __init__(self, services: ServerToolServices, request: dict[str, Any], *, stream: bool = True,
                 history: list[dict[str, Any]] | None = None) -> None:
        self.services = services
        self.request = parse_request(orjson.dumps(dict(request, model="m", stream=stream)))
        self.history = history or []
        self.plan = plan_request_tools(self.request, self.history, OPTIONS, served=services.served)
        self.response = new_response("resp_loop", self.request, created_at=1_700_000_000)
        self.builder = OutputBuilder(self.response, encode_event if stream else None, targets=self.plan.targets)
        self.stream = stream
        self.raw = b""
        self.bodies: list[dict[str, Any]] = []
        self.run: ServerToolRun | None = None

    async def prepare(self) -> ServerToolRun:
        self.run = await ServerTools(self.services).prepare(self.request, self.history, self.plan, self.builder,
                                                            tenant=DEFAULT_TENANT)
        self.builder.lifecycle("response.created")
        self.builder.lifecycle("response.in_progress")
        body = build_chat_request(self.request, self.history, OPTIONS, self.plan)
        body["messages"].extend(self.run.first_turn_messages(OPTIONS))
        fake_upstream.validate_chat_request(body)
        self.bodies.append(body)
        return self.run

    def turn(self, chunks: list[dict[str, Any]]) -> TurnResult:
        if len(self.bodies) > 1:
            self.builder.begin_turn()
        feed_turn(self.builder, chunks, stream=self.stream)
        assert self.builder.complete
        return self.builder.end_turn()

    async def step(self, chunks: list[dict[str, Any]]) -> tuple[TurnResult, TurnOutcome]:
        """One model turn and its server calls; the next body when the loop goes on."""
        assert self.run is not None
        turn = self.turn(chunks)
        outcome = await self.run.run_turn(turn)
        if not outcome.end:
            p = self.request.params
            body = follow_up_request(self.bodies[-1], turn, outcome.results, plan=self.plan,
                                     tool_choice=p.tool_choice, parallel_tool_calls=p.parallel_tool_calls,
                                     tools_exhausted=outcome.tools_exhausted)
            fake_upstream.validate_chat_request(body)
            self.bodies.append(body)
        return turn, outcome

    def finish(self) -> list[dict[str, Any]]:
        self.builder.finish(1_700_000_001)
        if self.run is not None:
            self.run.close()
        validate_response(self.response)
        for item in self.response["output"]:
            assert _item_adapter().validate_python(item).type == item["type"]
        raw = self.raw = self.builder.take()
        if not self.stream:
            assert raw == b""
            return []
        events = parse_sse(raw + b"data: [DONE]\n\n")
        for event in events:
            check_event(event)
        per_item = check_item_order(events)
        assert sorted(per_item) == list(range(len(self.response["output"])))  # output_index dense
        assert events[-1]["response"] == orjson.loads(orjson.dumps(self.response))
        return events

    def offered(self, body: int = -1) -> set[str]:
        return {entry["function"]["name"] for entry in self.bodies[body].get("tools") or ()}


def item(loop: Loop, index: int) -> dict[str, Any]:
    return loop.response["output"][index]


# --- a whole loop -------------------------------------------------------------------------------------------------


DEFERRED = {"type": "function", "name": "get_invoice", "description": "Fetch an invoice by its number",
            "defer_loading": True, "parameters": {"type": "object", "properties": {"number": {"type": "string"}}}}


@pytest.mark.parametrize("stream", [True, False])
async def test_a_three_turn_loop_with_mcp_web_search_and_tool_search(
        stream: bool, mcp_server: MCPTestServer, search: SearchServer) -> None:
    services = ServerToolServices(MCPTools(limits()), searxng(search))
    loop = Loop(services, {
        "input": "Add 2 and 3, and look up widgets.", "include": ["web_search_call.action.sources"],
        "tools": [mcp_tool(mcp_server.http_url, allowed_tools=["add", "echo", "fail"]), {"type": "web_search"},
                  {"type": "tool_search"}, DEFERRED]}, stream=stream)
    await loop.prepare()
    listed = item(loop, 0)
    assert listed["type"] == "mcp_list_tools" and listed["error"] is None
    assert sorted(tool["name"] for tool in listed["tools"]) == ["add", "echo", "fail"]
    assert loop.offered() == {"tools__add", "tools__echo", "tools__fail", "web_search", "tool_search"}

    turn, outcome = await loop.step([
        text("Working on it."),
        tool(0, id="call_add", name="tools__add", arguments='{"a": 2, "b": 3}'),
        tool(1, id="call_ws", name="web_search", arguments='{"query": "widgets"}'),
        *end("tool_calls", 10, 5)])
    assert (outcome.end, outcome.tools_exhausted) == (False, False)
    # results name their calls by the items' ids (an mcp_call or web_search_call has no call id of its own)
    assert [result.call_id for result in outcome.results] == [call.item["id"] for call in turn.calls]
    assert [call.item["type"] for call in turn.calls] == ["mcp_call", "web_search_call"]
    assert outcome.results[0].content == "5"
    assert "[1] widgets — result 0" in outcome.results[1].content
    add, searched = (item(loop, call.output_index) for call in turn.calls)
    assert (add["type"], add["status"], add["output"], add["error"]) == ("mcp_call", "completed", "5", None)
    assert searched["status"] == "completed" and searched["action"]["query"] == "widgets"
    assert searched["action"]["sources"][0] == {"type": "url", "url": "https://example.com/widgets/0"}
    assert [call["id"] for call in loop.bodies[1]["messages"][-3]["tool_calls"]] == [add["id"], searched["id"]]
    assert loop.bodies[1]["messages"][-2:] == [
        {"role": "tool", "tool_call_id": add["id"], "content": "5"},
        {"role": "tool", "tool_call_id": searched["id"], "content": outcome.results[1].content}]

    turn, outcome = await loop.step([tool(0, id="call_ts", name="tool_search", arguments='{"query": "invoice"}'),
                                     *end("tool_calls", 20, 5)])
    assert not outcome.end and outcome.results[0].content == "Tools loaded: get_invoice"
    assert item(loop, turn.calls[0].output_index + 1)["type"] == "tool_search_output"
    assert "get_invoice" in loop.offered()

    _, outcome = await loop.step([text("5, and see [widgets](https://example.com/widgets/0)."),
                                  *end("stop", 30, 5)])
    assert (outcome.end, outcome.reason, outcome.results) == (True, "answered", [])
    events = loop.finish()
    assert [entry["type"] for entry in loop.response["output"]] == [
        "mcp_list_tools", "message", "mcp_call", "web_search_call", "tool_search_call", "tool_search_output",
        "message"]
    answer = loop.response["output"][-1]["content"][0]
    (cited,) = answer["annotations"]
    assert (cited["type"], cited["url"]) == ("url_citation", "https://example.com/widgets/0")
    assert answer["text"][cited["start_index"]:cited["end_index"]] == "[widgets](https://example.com/widgets/0)"
    assert loop.response["status"] == "completed" and loop.response["usage"]["input_tokens"] == 60
    if stream:
        assert "response.output_text.annotation.added" in [event["type"] for event in events]


# --- failures: items, never exceptions ----------------------------------------------------------------------------


async def test_failing_slow_and_huge_tools_are_items_the_model_reads(mcp_server: MCPTestServer,
                                                                    search: SearchServer) -> None:
    services = ServerToolServices(MCPTools(limits(call_timeout=1.0, total_timeout=3.0)), searxng(search))
    search.mode = "500"
    loop = Loop(services, {"input": "x", "tools": [mcp_tool(mcp_server.http_url), {"type": "web_search"}]})
    await loop.prepare()
    turn, outcome = await loop.step([
        tool(0, id="c_fail", name="tools__fail", arguments='{"message": "no widgets today"}'),
        tool(1, id="c_big", name="tools__big", arguments="{}"),
        tool(2, id="c_slow", name="tools__slow", arguments='{"seconds": 30}'),
        tool(3, id="c_bad", name="tools__add", arguments='{"a": 1,'),
        tool(4, id="c_ws", name="web_search", arguments='{"query": "widgets"}'),
        *end("tool_calls", 1, 1)])
    assert not outcome.end
    failed, big, slow, bad, searched = (item(loop, call.output_index) for call in turn.calls)
    fail_text, big_text, slow_text, bad_text, search_text = (result.content for result in outcome.results)
    assert failed["status"] == "failed" and "no widgets today" in failed["error"]["content"][0]["text"]
    assert fail_text.startswith("Error: ") and "no widgets today" in fail_text
    assert big["status"] == "completed" and big_text == big["output"]
    assert len(big_text.encode()) < 1_000_000 and big_text.endswith("bytes omitted]")
    assert slow["status"] == "failed" and slow_text.startswith("Error: ")
    assert bad["status"] == "failed" and bad_text == "Error: The arguments of tool 'add' are not valid JSON."
    assert searched["status"] == "failed" and search_text.startswith("The web search failed: ")
    _, outcome = await loop.step([text("Sorry."), *end("stop", 1, 1)])
    assert outcome.end
    events = loop.finish()
    assert loop.response["status"] == "completed"
    types = [event["type"] for event in events]
    assert types.count("response.mcp_call.failed") == 3 and types.count("response.mcp_call.completed") == 1


async def test_an_unreachable_server_is_a_failed_listing_and_the_response_goes_on() -> None:
    services = ServerToolServices(MCPTools(limits()))
    loop = Loop(services, {"input": "x", "tools": [mcp_tool(f"http://127.0.0.1:{free_port()}/mcp")]})
    await loop.prepare()
    listed = item(loop, 0)
    assert listed["type"] == "mcp_list_tools" and listed["tools"] == [] and listed["error"]
    assert loop.offered() == set()
    _, outcome = await loop.step([text("I could not reach the tools."), *end("stop", 1, 1)])
    assert outcome.end
    events = loop.finish()
    assert "response.mcp_list_tools.failed" in [event["type"] for event in events]
    assert loop.response["status"] == "completed"


async def test_several_servers_are_listed_each_with_its_own_item(mcp_server: MCPTestServer) -> None:
    services = ServerToolServices(MCPTools(limits()))
    loop = Loop(services, {"input": "x", "tools": [
        mcp_tool(mcp_server.http_url, label="streamable", allowed_tools=["add"]),
        mcp_tool(f"http://127.0.0.1:{free_port()}/mcp", label="down"),
        mcp_tool(mcp_server.sse_url, label="legacy", allowed_tools={"read_only": True})]})
    await loop.prepare()
    listed = [(entry["server_label"], [tool["name"] for tool in entry["tools"]], bool(entry["error"]))
              for entry in loop.response["output"]]
    read_only = ["lookup", "whoami", "authorization_digest", "meta"]  # the test server's that say they only read
    assert listed == [("streamable", ["add"], False), ("down", [], True), ("legacy", read_only, False)]
    assert loop.offered() == {"streamable__add", *(f"legacy__{name}" for name in read_only)}
    loop.finish()


async def test_a_listing_in_the_conversation_is_reused_without_a_new_item() -> None:
    previous = {"id": "mcpl_1", "type": "mcp_list_tools", "server_label": "tools", "error": None, "tools": [
        {"name": "echo", "description": "Echo", "annotations": None,
         "input_schema": {"type": "object", "properties": {"text": {"type": "string"}}}}]}
    services = ServerToolServices(MCPTools(limits()))
    history = [{"type": "message", "role": "user", "content": [{"type": "input_text", "text": "hi"}]}, previous]
    unreachable = f"http://127.0.0.1:{free_port()}/mcp"  # never contacted: the listing is reused
    loop = Loop(services, {"input": "again", "tools": [mcp_tool(unreachable)]}, history=history)
    await loop.prepare()
    assert loop.response["output"] == [] and loop.offered() == {"tools__echo"}
    loop.finish()


# --- approvals across two requests --------------------------------------------------------------------------------


async def test_an_approval_request_ends_the_response_and_the_next_request_runs_the_call(
        mcp_server: MCPTestServer) -> None:
    services = ServerToolServices(MCPTools(limits()))
    tools = [mcp_tool(mcp_server.http_url, approval={"never": {"tool_names": ["add"]}})]
    first = Loop(services, {"input": "Echo hello.", "tools": tools})
    await first.prepare()
    turn, outcome = await first.step([tool(0, id="c1", name="tools__echo", arguments='{"text": "hello"}'),
                                      *end("tool_calls", 1, 1)])
    assert (outcome.end, outcome.reason) == (True, "approval_requested")
    asked = item(first, turn.calls[0].output_index)
    assert asked["type"] == "mcp_approval_request" and asked["arguments"] == '{"text": "hello"}'
    first.finish()

    history = [*first.request.input_items, *first.response["output"]]
    answer = {"type": "mcp_approval_response", "approval_request_id": asked["id"], "approve": True}
    second = Loop(services, {"input": [answer], "tools": tools}, history=history)
    run = await second.prepare()
    made = item(second, 0)  # no new listing: the first response's is reused
    assert (made["type"], made["status"], made["output"], made["approval_request_id"]) == (
        "mcp_call", "completed", "hello", asked["id"])
    assert run.tool_calls == 1
    assert second.bodies[0]["messages"][-2:] == [
        {"role": "assistant", "content": None, "tool_calls": [{"id": asked["id"], "type": "function", "function": {
            "name": "tools__echo", "arguments": '{"text": "hello"}'}}]},
        {"role": "tool", "tool_call_id": asked["id"], "content": "hello"}]
    _, outcome = await second.step([text("It said hello."), *end("stop", 1, 1)])
    assert outcome.end
    events = second.finish()
    assert [event["type"] for event in events][2:4] == ["response.output_item.added",
                                                        "response.mcp_call_arguments.delta"]

    refused = dict(answer, approve=False)
    third = Loop(services, {"input": [refused], "tools": tools}, history=history)
    await third.prepare()
    assert third.response["output"] == [] and third.bodies[0]["messages"][-1]["role"] == "user"
    third.finish()

    limited = Loop(services, {"input": [answer], "tools": tools, "max_tool_calls": 1}, history=history)
    run = await limited.prepare()  # the approved call counts: the first turn must go without tools
    assert run.tool_calls == 1 and run.tools_exhausted
    limited.finish()

    done = [*history, *second.request.input_items, *second.response["output"]]
    again = Loop(services, {"input": [answer], "tools": tools}, history=done)
    await again.prepare()  # the approved call was made already: not made twice
    assert again.response["output"] == []
    again.finish()


async def test_an_answer_to_an_unknown_approval_request_is_a_400(mcp_server: MCPTestServer) -> None:
    services = ServerToolServices(MCPTools(limits()))
    answer = {"type": "mcp_approval_response", "approval_request_id": "mcpr_nope", "approve": True}
    loop = Loop(services, {"input": [answer], "tools": [mcp_tool(mcp_server.http_url)]})
    with pytest.raises(APIError) as refused:
        await loop.prepare()
    assert refused.value.status == 400 and "mcpr_nope" in str(refused.value)
    assert loop.response["output"] == [] and loop.builder.take() == b""


# --- parallel_tool_calls, max_tool_calls, client calls ------------------------------------------------------------


class Counting:
    """A search provider around a real one that records how many searches were running at once."""

    def __init__(self, inner: SearchProvider) -> None:
        self.inner = inner
        self.running = 0
        self.peak = 0

    async def search(self, query: str, *, max_results: int, user_location: dict[str, Any] | None,
                     allowed_domains: list[str] | None) -> list[SearchResult]:
        self.running += 1
        self.peak = max(self.peak, self.running)
        try:
            return await self.inner.search(query, max_results=max_results, user_location=user_location,
                                           allowed_domains=allowed_domains)
        finally:
            self.running -= 1

    async def aclose(self) -> None:
        await self.inner.aclose()


THREE_SEARCHES = [tool(index, id=f"c{index}", name="web_search", arguments=f'{{"query": "q{index}"}}')
                  for index in range(3)]


@pytest.mark.parametrize(("parallel", "max_parallel", "peak"), [(None, 8, 3), (True, 2, 2), (False, 8, 1)])
async def test_calls_run_concurrently_unless_parallel_tool_calls_is_false(
        search: SearchServer, parallel: bool | None, max_parallel: int, peak: int) -> None:
    counting = Counting(searxng(search))
    services = ServerToolServices(MCPTools(limits()), counting, max_parallel=max_parallel)
    request: dict[str, Any] = {"input": "x", "tools": [{"type": "web_search"}]}
    if parallel is not None:
        request["parallel_tool_calls"] = parallel
    loop = Loop(services, request)
    await loop.prepare()
    turn, outcome = await loop.step([*THREE_SEARCHES, *end("tool_calls", 1, 1)])
    assert counting.peak == peak
    assert [result.call_id for result in outcome.results] == [call.item["id"] for call in turn.calls]  # in order
    assert [call.item["action"]["query"] for call in turn.calls] == ["q0", "q1", "q2"]
    if parallel is False:  # sources are numbered on across the searches, in the order they ran
        assert [result.content.split("\n")[2][:6] for result in outcome.results] == ["[1] q0", "[6] q1", "[11] q"]
    loop.finish()


async def test_max_tool_calls_refuses_further_calls_and_the_next_turn_has_no_tools(search: SearchServer) -> None:
    services = ServerToolServices(MCPTools(limits()), searxng(search))
    loop = Loop(services, {"input": "x", "max_tool_calls": 2, "tools": [{"type": "web_search"}]})
    await loop.prepare()
    turn, outcome = await loop.step([*THREE_SEARCHES, *end("tool_calls", 1, 1)])
    assert (outcome.end, outcome.tools_exhausted) == (False, True)
    assert [item(loop, call.output_index)["status"] for call in turn.calls] == ["completed", "completed", "failed"]
    assert "max_tool_calls" in outcome.results[2].content
    assert "tools" not in loop.bodies[-1] and "tool_choice" not in loop.bodies[-1]
    _, outcome = await loop.step([tool(0, id="c9", name="web_search", arguments='{"query": "more"}'),
                                  *end("tool_calls", 1, 1)])
    assert (outcome.end, outcome.reason) == (True, "tools_exhausted")
    assert len(search.requests) == 2
    loop.finish()


async def test_max_tool_calls_zero_sends_the_first_turn_without_tools(search: SearchServer) -> None:
    services = ServerToolServices(MCPTools(limits()), searxng(search))
    loop = Loop(services, {"input": "x", "max_tool_calls": 0, "tools": [{"type": "web_search"}]})
    run = await loop.prepare()
    assert run.tools_exhausted and run.tool_calls == 0
    turn, outcome = await loop.step([THREE_SEARCHES[0], *end("tool_calls", 1, 1)])  # a model that calls anyway
    assert (outcome.end, outcome.reason) == (True, "tools_exhausted") and search.requests == []
    assert item(loop, turn.calls[0].output_index)["status"] == "failed"
    loop.finish()


async def test_a_client_call_ends_the_response_after_the_server_calls_ran(mcp_server: MCPTestServer) -> None:
    services = ServerToolServices(MCPTools(limits()))
    weather = {"type": "function", "name": "get_weather", "parameters": {"type": "object", "properties": {}}}
    loop = Loop(services, {"input": "x", "tools": [mcp_tool(mcp_server.http_url), weather]}, stream=False)
    await loop.prepare()
    turn, outcome = await loop.step([tool(0, id="c1", name="get_weather", arguments="{}"),
                                     tool(1, id="c2", name="tools__add", arguments='{"a": 1, "b": 1}'),
                                     *end("tool_calls", 1, 1)])
    assert (outcome.end, outcome.reason) == (True, "client_calls")
    assert item(loop, turn.calls[1].output_index)["output"] == "2"
    loop.finish()
    assert [entry["type"] for entry in loop.response["output"]] == ["mcp_list_tools", "function_call", "mcp_call"]


# --- cancellation -------------------------------------------------------------------------------------------------


def established(port: int) -> int:
    """TCP connections in state ESTABLISHED whose local port is ``port`` (the server's side), from /proc."""
    count = 0
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        try:
            with open(table) as lines:
                next(lines)
                for line in lines:
                    fields = line.split()
                    if int(fields[1].rsplit(":", 1)[1], 16) == port and fields[3] == "01":
                        count += 1
        except FileNotFoundError:
            continue
    return count


async def until(condition: Any, what: str, deadline: float = 20.0) -> None:
    async with asyncio.timeout(deadline):
        while not condition():
            await asyncio.sleep(0.02)
    assert condition(), what


@pytest.mark.parametrize("parallel", [True, False])
async def test_cancelling_a_turn_mid_call_closes_the_connection(parallel: bool) -> None:
    async with running_mcp_server() as server:  # its own server: its connections are this test's alone
        services = ServerToolServices(MCPTools(limits(call_timeout=120.0, total_timeout=120.0)))
        loop = Loop(services, {"input": "x", "parallel_tool_calls": parallel, "tools": [mcp_tool(server.http_url)]})
        run = await loop.prepare()
        await until(lambda: established(server.http_port) == 0, "the listing's connections closed")
        turn = loop.turn([tool(0, id="c1", name="tools__slow", arguments='{"seconds": 600}'),
                          tool(1, id="c2", name="tools__slow", arguments='{"seconds": 600}'),
                          *end("tool_calls", 1, 1)])
        task = asyncio.create_task(run.run_turn(turn))
        await until(lambda: established(server.http_port) >= (2 if parallel else 1), "the calls connected")
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await asyncio.wait_for(task, 20)
        await until(lambda: established(server.http_port) == 0, "the calls' connections closed")
        assert [item(loop, call.output_index)["status"] for call in turn.calls] == ["in_progress", "in_progress"]
        loop.builder.cancel()
        run.close()
        assert [item(loop, call.output_index)["status"] for call in turn.calls] == ["incomplete", "incomplete"]
        assert loop.response["status"] == "cancelled"


class CancelAsError(Counting):
    """A provider that reports its cancellation as an error of its own, as some client libraries do."""

    async def search(self, query: str, *, max_results: int, user_location: dict[str, Any] | None,
                     allowed_domains: list[str] | None) -> list[SearchResult]:
        try:
            return await super().search(query, max_results=max_results, user_location=user_location,
                                        allowed_domains=allowed_domains)
        except asyncio.CancelledError:
            raise WebSearchError("the connection was closed") from None


async def test_a_cancellation_reported_as_an_error_is_still_a_cancellation(search: SearchServer) -> None:
    search.mode = "slow"
    provider = CancelAsError(searxng(search))
    services = ServerToolServices(MCPTools(limits()), provider)
    loop = Loop(services, {"input": "x", "parallel_tool_calls": False, "tools": [{"type": "web_search"}]})
    run = await loop.prepare()
    turn = loop.turn([*THREE_SEARCHES, *end("tool_calls", 1, 1)])
    task = asyncio.create_task(run.run_turn(turn))
    await until(lambda: len(search.requests) == 1, "the first search reached the server")
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await asyncio.wait_for(task, 20)
    assert len(search.requests) == 1  # the turn did not go on to its next search
    assert [item(loop, call.output_index)["status"] for call in turn.calls] == ["searching"] * 3


# --- safety -------------------------------------------------------------------------------------------------------


async def test_a_loopback_server_without_the_allow_list_is_a_400_before_anything_is_sent(
        mcp_server: MCPTestServer) -> None:
    services = ServerToolServices(MCPTools(limits(allowed_hosts="")))
    loop = Loop(services, {"input": "x", "tools": [{"type": "web_search"}, mcp_tool(mcp_server.http_url)]})
    with pytest.raises(APIError) as refused:
        await loop.prepare()
    assert (refused.value.status, refused.value.param, refused.value.code) == (
        400, "tools[1].server_url", "mcp_host_not_allowed")
    assert "RESPONSES_BRIDGE_MCP_ALLOWED_HOSTS" in str(refused.value)
    assert loop.response["output"] == [] and loop.builder.take() == b""


async def test_credentials_are_sent_to_the_server_and_never_echoed_or_stored(mcp_server: MCPTestServer) -> None:
    declared = mcp_tool(mcp_server.http_url, headers={"X-Api-Key": SECRET}, authorization=TOKEN)
    other = {"type": "function", "name": "f", "parameters": {"type": "object", "properties": {}}}
    stored = storable_tools([declared, other])
    assert stored == [{key: value for key, value in declared.items() if key not in ("headers", "authorization")},
                      other]
    assert declared["headers"] == {"X-Api-Key": SECRET} and declared["authorization"] == TOKEN  # not changed

    services = ServerToolServices(MCPTools(limits()))
    sent = Loop(services, {"input": "x", "tools": [declared, other]})
    await sent.prepare()
    _, outcome = await sent.step([tool(0, id="c1", name="tools__whoami", arguments="{}"),
                                  tool(1, id="c2", name="tools__authorization_digest", arguments="{}"),
                                  *end("tool_calls", 1, 1)])
    # they were sent; the token is masked where the server echoes it (the client's own headers are not)
    assert f"authorization=[redacted] x-api-key={SECRET}" in outcome.results[0].content
    assert hashlib.sha256(f"Bearer {TOKEN}".encode()).hexdigest() in outcome.results[1].content

    loop = Loop(services, {"input": "x", "tools": [declared, other]})
    await loop.prepare()
    await loop.step([tool(0, id="c1", name="tools__echo", arguments='{"text": "hi"}'), *end("tool_calls", 1, 1)])
    await loop.step([text("Done."), *end("stop", 1, 1)])
    loop.finish()
    everything = orjson.dumps(loop.response) + loop.raw
    assert SECRET.encode() not in everything and TOKEN.encode() not in everything
    assert loop.response["tools"][0] == stored[0]


async def test_without_a_search_provider_web_search_falls_under_the_unsupported_tool_policy() -> None:
    services = ServerToolServices(MCPTools(limits()))
    assert "web_search" not in services.served and "mcp" in services.served
    loop = Loop(services, {"input": "x", "tools": [{"type": "web_search"}]})
    await loop.prepare()
    assert loop.plan.dropped == ["web_search"] and loop.offered() == set()
    loop.finish()
    with pytest.raises(APIError) as refused:
        plan_request_tools(loop.request, [], EngineOptions(unsupported_tools="reject"), served=services.served)
    assert refused.value.status == 400


async def test_two_mcp_tools_with_one_label_are_a_400() -> None:
    services = ServerToolServices(MCPTools(limits()))
    url = f"http://127.0.0.1:{free_port()}/mcp"
    loop = Loop(services, {"input": "x", "tools": [mcp_tool(url), mcp_tool(url)]})
    with pytest.raises(APIError) as refused:
        await loop.prepare()
    assert (refused.value.status, refused.value.param) == (400, "tools[1].server_label")


def services_of(settings: Any) -> ServerToolServices:
    """As the runtime builds them (a ``Settings``)."""
    return ServerToolServices.configured(settings.mcp_limits(), settings.web_search_settings())


async def test_services_from_settings_serve_web_search_only_with_a_provider() -> None:
    from responses_bridge.config.settings import Settings

    plain = services_of(Settings(mcp_allowed_hosts="10.0.0.0/8"))
    assert plain.search is None and plain.mcp.limits.allowed_hosts == "10.0.0.0/8"
    searching = services_of(Settings(web_search="searxng:http://127.0.0.1:9"))
    assert searching.search is not None and "web_search" in searching.served
    await searching.aclose()
    await plain.aclose()
