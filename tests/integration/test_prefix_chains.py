"""Every chained turn's prompt extends its predecessor's exactly: the Chat Completions ``messages`` (and ``tools``)
sent upstream for turn n+1 begin with exactly those sent for turn n, element by element, and the model's answer to
turn n follows them as it said it. A backend's prefix cache (vLLM's automatic prefix caching, SGLang's radix cache,
llama.cpp's slot cache) holds a chain's prompt only up to the first token that differs: one earlier message
rendered otherwise on the next turn (an id, a call's arguments re-encoded, text folded differently, a tool output
shown another way) makes the backend prefill everything after it again, every turn.

Each kind of item is a turn n and a turn n+1 chained to it (``previous_response_id``, a conversation, a background
run, the server-side tool loop's turns within one response); the fake upstream records both bodies, and the model's
answer to turn n is asked of the same fake again (it is deterministic), so the answer the next turn carries is
compared with what the model wrote: text identical, a call's arguments byte for byte (``[args_raw64=…]`` makes the
model write them spaced, as vLLM's parsers do). Where the prefix cannot hold (docs/upstreams.md, "Prefix caches")
the tests say what changes instead. Through the HTTP door; one representative chain also through Envoy.
"""

from __future__ import annotations

import asyncio
import base64
from collections.abc import AsyncIterator
from typing import Any

import aiohttp
import orjson
import pytest

from responses_bridge.demo.procs import ManagedProcess, free_port, wait_http
from tests.support.bridge import PYTHON, Sidecar, UpstreamLog, running_sidecar
from tests.support.gateway import envoy_before
from tests.support.mcp_server import MCPTestServer
from tests.support.search_server import SearchServer

pytestmark = pytest.mark.filterwarnings("ignore::pytest.PytestUnraisableExceptionWarning")

INSTRUCTIONS = "You are a careful assistant. Answer briefly."
WEATHER = {"type": "function", "name": "get_weather", "description": "Weather for a city",
           "parameters": {"type": "object", "properties": {"city": {"type": "string"}, "unit": {"type": "string"}},
                          "required": ["city", "unit"]}}
TIME = {"type": "function", "name": "get_time", "description": "Time in a city",
        "parameters": {"type": "object", "properties": {"city": {"type": "string"}}}}
SPACED_ARGS = '{"unit": "C",  "city": "Rome"}'  # key order and spacing no re-encoding would keep
PNG = ("data:image/png;base64,iVBORw0KGgoAAAANSUhEUgAAAAEAAAABCAYAAAAfFcSJAAAADUlEQVR42mP8z8BQDwAEhQGAhKmMIQAAAABJRU5E"
       "rkJggg==")


def raw_args(arguments: str) -> str:
    return f"[args_raw64={base64.b64encode(arguments.encode()).decode()}]"


@pytest.fixture(scope="module")
async def search() -> AsyncIterator[SearchServer]:
    async with SearchServer() as server:
        yield server


@pytest.fixture(scope="module")
async def prefix_sidecar(fake_upstream: str, search: SearchServer,
                         tmp_path_factory: pytest.TempPathFactory) -> AsyncIterator[Sidecar]:
    env = {"RESPONSES_BRIDGE_MCP_ALLOWED_HOSTS": "127.0.0.1", "RESPONSES_BRIDGE_WEB_SEARCH": f"searxng:{search.url}"}
    async with running_sidecar(str(tmp_path_factory.mktemp("prefix")), fake_upstream, env=env) as started:
        yield started


@pytest.fixture(scope="module")
async def prefix_envoy(prefix_sidecar: Sidecar) -> AsyncIterator[str]:
    async with envoy_before(prefix_sidecar) as url:
        yield url


@pytest.fixture(scope="module")
async def strict_upstream() -> AsyncIterator[str]:
    """A fake upstream that refuses ``content: null`` beside tool calls and takes results as user turns, as llama.cpp
    does (its other quirks left off)."""
    port = free_port()
    process = ManagedProcess([PYTHON, "-m", "responses_bridge", "fake-upstream", "--port", str(port),
                              "--quirks", "null-content-400,no-pairing-check"], "fake-upstream-quirks")
    process.start()
    try:
        await wait_http(f"http://127.0.0.1:{port}/health", process=process)
        yield f"http://127.0.0.1:{port}/v1"
    finally:
        process.stop()


@pytest.fixture(scope="module")
async def switched_sidecar(strict_upstream: str, tmp_path_factory: pytest.TempPathFactory) -> AsyncIterator[Sidecar]:
    """The profile switches that change how history is rendered, each the other way: results as user turns,
    ``content: ""`` beside tool calls, reasoning sent back, the ``developer`` role."""
    env = {"RESPONSES_BRIDGE_MCP_ALLOWED_HOSTS": "127.0.0.1", "RESPONSES_BRIDGE_TOOL_RESULT_ROLE": "user",
           "RESPONSES_BRIDGE_TOOL_CALL_CONTENT": "empty", "RESPONSES_BRIDGE_REASONING_HISTORY": "reasoning_content",
           "RESPONSES_BRIDGE_DEVELOPER_ROLE": "developer"}
    async with running_sidecar(str(tmp_path_factory.mktemp("switched")), strict_upstream, env=env,
                               extproc=False) as started:
        yield started


@pytest.fixture
async def upstream(prefix_sidecar: Sidecar) -> UpstreamLog:
    log = UpstreamLog(prefix_sidecar.upstream_url.removesuffix("/v1"))
    await log.clear()
    return log


class Chain:
    """A client at one door: each turn posts a request (chained to the last unless told otherwise) and keeps the
    Chat Completions bodies the upstream received for it (several for a tool loop)."""

    def __init__(self, session: aiohttp.ClientSession, upstream: UpstreamLog) -> None:
        self.session = session
        self.upstream = upstream
        self.previous: str | None = None
        self.seen = 0
        self.bodies: list[dict[str, Any]] = []

    async def turn(self, chained: bool = True, status: str = "completed", **body: Any) -> dict[str, Any]:
        body.setdefault("model", "fake-model")
        if chained and self.previous is not None and "conversation" not in body:
            body["previous_response_id"] = self.previous
        async with self.session.post("/v1/responses", json=body) as answer:
            assert answer.status == 200, await answer.text()
            if body.get("stream"):
                final = [orjson.loads(line[6:]) for line in (await answer.read()).decode().splitlines()
                         if line.startswith("data: {")][-1]["response"]
            else:
                final = await answer.json()
        if body.get("background"):
            final = await self._finished(final["id"])
        assert final["status"] == status, final
        self.previous = final["id"]
        await self._collect()
        return final

    async def _finished(self, response_id: str) -> dict[str, Any]:
        for _ in range(600):
            async with self.session.get(f"/v1/responses/{response_id}") as answer:
                found = await answer.json()
            if found["status"] not in ("queued", "in_progress"):
                return found
            await asyncio.sleep(0.05)
        raise AssertionError(f"background response {response_id} did not finish")

    async def _collect(self) -> None:
        entries = [entry for entry in await self.upstream.entries() if entry["path"].endswith("/chat/completions")]
        self.bodies += [entry["body"] for entry in entries[self.seen:]]
        self.seen = len(entries)


async def model_answer(upstream_url: str, body: dict[str, Any]) -> dict[str, Any]:
    """What the (deterministic) model answers to ``body``, asked again without streaming: its ``message``."""
    plain = {key: value for key, value in body.items() if key not in ("stream", "stream_options")}
    async with aiohttp.ClientSession() as session, \
            session.post(f"{upstream_url}/chat/completions", json=plain) as answer:
        assert answer.status == 200, await answer.text()
        message: dict[str, Any] = (await answer.json())["choices"][0]["message"]
        return message


def assert_extends(before: dict[str, Any], after: dict[str, Any]) -> None:
    """``after``'s messages begin with exactly ``before``'s, element by element, and its tools are the same."""
    old, new = before["messages"], after["messages"]
    assert len(new) > len(old), (old, new)
    for index, message in enumerate(old):
        assert new[index] == message, f"message {index} was sent otherwise: {message!r} then {new[index]!r}"
    assert after.get("tools") == before.get("tools")


def assert_answer_follows(before: dict[str, Any], after: dict[str, Any], said: dict[str, Any],
                          *, call_ids: dict[str, str] | None = None) -> None:
    """The assistant message right after ``before``'s messages is what the model ``said``: its text identical,
    its calls' names and arguments byte for byte (``call_ids``: a server call's id as the bridge keeps it, the
    item's, for the model's). Calls whose results history shows at once (parallel MCP calls) continue on the
    assistant messages after their results, with no text of their own."""
    answer = after["messages"][len(before["messages"])]
    assert answer["role"] == "assistant"
    assert (answer.get("content") or None) == (said.get("content") or None)
    assert answer.get("refusal") == said.get("refusal")
    answers = [message for message in after["messages"][len(before["messages"]):] if message["role"] == "assistant"]
    assert all(not message.get("content") for message in answers[1:])
    calls = [(call["id"], call["function"]["name"], call["function"]["arguments"])
             for message in answers for call in message.get("tool_calls") or ()]
    renamed = call_ids or {}
    assert calls == [(renamed.get(call["id"], call["id"]), call["function"]["name"], call["function"]["arguments"])
                     for call in said.get("tool_calls") or ()]


async def assert_chain_extends(chain: Chain, upstream_url: str, *, first: int = 0) -> None:
    """Every recorded turn from ``first`` on extends the one before it, with the model's answer to it next."""
    for before, after in zip(chain.bodies[first:], chain.bodies[first + 1:], strict=False):
        assert_extends(before, after)
        assert_answer_follows(before, after, await model_answer(upstream_url, before))


# --- previous_response_id chains, one item kind each ----------------------------------------------------------------


async def _session(sidecar: Sidecar) -> aiohttp.ClientSession:
    return aiohttp.ClientSession(base_url=sidecar.http_url, timeout=aiohttp.ClientTimeout(total=60))


CHAINS: dict[str, list[dict[str, Any]]] = {
    "text": [{"input": "hello there"}, {"input": "and again"}, {"input": "once more"}],
    "streamed text": [{"input": "hello there", "stream": True}, {"input": "and again", "stream": True}],
    "content parts and an image": [
        {"input": [{"role": "user", "content": [{"type": "input_text", "text": "look at"},
                                                {"type": "input_text", "text": "this picture"},
                                                {"type": "input_image", "image_url": PNG, "detail": "low"}]}]},
        {"input": [{"role": "user", "content": [{"type": "input_text", "text": "and this one"},
                                                {"type": "input_image", "image_url": PNG}]}]},
        {"input": "what did you see"}],
    "a one-part message and an easy input message": [
        {"input": [{"role": "user", "content": [{"type": "input_text", "text": "one part"}]}]},
        {"input": [{"type": "message", "role": "user", "content": "plain string content"}]},
        {"input": "third"}],
    "developer and system messages": [
        {"input": [{"role": "developer", "content": "be terse"}, {"role": "user", "content": "hi"}]},
        {"input": [{"role": "system", "content": "mind the time"}, {"role": "user", "content": "now"}]},
        {"input": "later"}],
    "reasoning": [{"input": "[think] ponder this"}, {"input": "[think] and that"}, {"input": "done"}],
    "a refusal": [{"input": "[refuse] something bad"}, {"input": "something fine"}],
    "a JSON answer": [{"input": "structured", "text": {"format": {"type": "json_object"}}},
                      {"input": "more", "text": {"format": {"type": "json_object"}}}],
    "a cut answer": [{"input": "[length] a long answer of many words", "status": "incomplete"}, {"input": "go on"}],
    "logprobs": [{"input": "with logprobs", "top_logprobs": 2}, {"input": "again", "top_logprobs": 2}],
}


@pytest.mark.parametrize("kind", list(CHAINS))
async def test_a_chained_turn_extends_the_last_prompt(kind: str, prefix_sidecar: Sidecar,
                                                      upstream: UpstreamLog) -> None:
    async with await _session(prefix_sidecar) as session:
        chain = Chain(session, upstream)
        for request in CHAINS[kind]:
            await chain.turn(instructions=INSTRUCTIONS, **request)
    assert len(chain.bodies) == len(CHAINS[kind])
    await assert_chain_extends(chain, prefix_sidecar.upstream_url)


async def test_function_calls_and_their_outputs_extend_the_prompt(prefix_sidecar: Sidecar,
                                                                  upstream: UpstreamLog) -> None:
    """A call's arguments go back byte for byte as the model wrote them (spaced, keys in its order), parallel
    calls on one assistant message, and outputs as text and as parts."""
    tools = [WEATHER, TIME]
    async with await _session(prefix_sidecar) as session:
        chain = Chain(session, upstream)
        first = await chain.turn(instructions=INSTRUCTIONS, tools=tools,
                                 input=f"call get_weather {raw_args(SPACED_ARGS)}")
        call = first["output"][-1]
        assert call["arguments"] == SPACED_ARGS
        parallel = await chain.turn(instructions=INSTRUCTIONS, tools=tools, input=[
            {"type": "function_call_output", "call_id": call["call_id"], "output": "sunny"},
            {"role": "user", "content": "call get_weather Paris call get_time Paris"}])
        calls = [item for item in parallel["output"] if item["type"] == "function_call"]
        assert len(calls) == 2
        await chain.turn(instructions=INSTRUCTIONS, tools=tools, input=[
            {"type": "function_call_output", "call_id": calls[0]["call_id"],
             "output": [{"type": "input_text", "text": "rain"}, {"type": "input_text", "text": " later"}]},
            {"type": "function_call_output", "call_id": calls[1]["call_id"],
             "output": [{"type": "input_text", "text": "noon"}]}])
        await chain.turn(instructions=INSTRUCTIONS, tools=tools, input="thanks")
    assert len(chain.bodies) == 4
    await assert_chain_extends(chain, prefix_sidecar.upstream_url)
    sent_back = chain.bodies[1]["messages"][len(chain.bodies[0]["messages"])]["tool_calls"][0]["function"]
    assert sent_back["arguments"] == SPACED_ARGS


async def test_a_custom_tool_call_extends_the_prompt(prefix_sidecar: Sidecar, upstream: UpstreamLog) -> None:
    """The prompt before a custom tool's call holds; the call itself is stored as its input alone (the item has no
    arguments), so it goes back as the compact JSON of that input whatever spacing the model wrote: the one place
    a chained turn's prompt departs from the model's own words is inside the answer it is continuing from."""
    tools = [{"type": "custom", "name": "run_code", "description": "Runs code"}]
    async with await _session(prefix_sidecar) as session:
        chain = Chain(session, upstream)
        first = await chain.turn(instructions=INSTRUCTIONS, tools=tools,
                                 input="call run_code " + raw_args('{"input": "print(1)"}'))
        call = first["output"][-1]
        assert call["type"] == "custom_tool_call"
        await chain.turn(instructions=INSTRUCTIONS, tools=tools, input=[
            {"type": "custom_tool_call_output", "call_id": call["call_id"], "output": "1"}])
        await chain.turn(instructions=INSTRUCTIONS, tools=tools, input="and then")
    assert len(chain.bodies) == 3
    before, after, last = chain.bodies
    assert_extends(before, after)
    assert_extends(after, last)
    said = (await model_answer(prefix_sidecar.upstream_url, before))["tool_calls"][0]
    sent = after["messages"][len(before["messages"])]["tool_calls"][0]
    assert said["function"]["arguments"] == '{"input": "print(1)"}'
    assert sent == dict(said, function={"name": "run_code", "arguments": '{"input":"print(1)"}'})
    assert_answer_follows(after, last, await model_answer(prefix_sidecar.upstream_url, after))


# --- the server-side tool loop: turns within one response, then the next response ---------------------------------


async def test_the_tool_loops_turns_and_the_next_response_extend_the_prompt(
        prefix_sidecar: Sidecar, upstream: UpstreamLog, mcp: MCPTestServer) -> None:
    tools = [{"type": "mcp", "server_label": "tools", "server_url": mcp.http_url, "require_approval": "never",
              "allowed_tools": ["add", "echo"]}]
    async with await _session(prefix_sidecar) as session:
        chain = Chain(session, upstream)
        first = await chain.turn(instructions=INSTRUCTIONS, tools=tools,
                                 input="call tools__echo " + raw_args('{"text": "spaced  out"}') + " [then=tools__add]")
        assert [item["type"] for item in first["output"]] == ["mcp_list_tools", "mcp_call", "mcp_call", "message"]
        assert first["output"][1]["arguments"] == '{"text": "spaced  out"}'
        assert len(chain.bodies) == 3  # three model turns in one response
        await chain.turn(instructions=INSTRUCTIONS, tools=tools, input="and now")
    assert len(chain.bodies) == 4
    calls = [item for item in first["output"] if item["type"] == "mcp_call"]
    renamed = {f"call_tools__{call['name']}_0": call["id"] for call in calls}
    for before, after in zip(chain.bodies, chain.bodies[1:], strict=False):
        assert_extends(before, after)
        assert_answer_follows(before, after, await model_answer(prefix_sidecar.upstream_url, before),
                              call_ids=renamed)


async def test_parallel_server_calls_and_the_next_response_extend_the_prompt(
        prefix_sidecar: Sidecar, upstream: UpstreamLog, mcp: MCPTestServer) -> None:
    """Two MCP calls in one turn: history keeps each as an item holding its result, so the loop's next turn shows
    them so too (each answered before the next), and the next response's prompt repeats it."""
    tools = [{"type": "mcp", "server_label": "tools", "server_url": mcp.http_url, "require_approval": "never",
              "allowed_tools": ["add", "echo"]}]
    async with await _session(prefix_sidecar) as session:
        chain = Chain(session, upstream)
        first = await chain.turn(instructions=INSTRUCTIONS, tools=tools, input="call tools__add call tools__echo")
        assert [item["type"] for item in first["output"]] == ["mcp_list_tools", "mcp_call", "mcp_call", "message"]
        await chain.turn(instructions=INSTRUCTIONS, tools=tools, input="and now")
    assert len(chain.bodies) == 3
    add, echo = (item for item in first["output"] if item["type"] == "mcp_call")
    loop, after_loop, chained = chain.bodies
    assert_extends(loop, after_loop)
    assert_extends(after_loop, chained)
    said = await model_answer(prefix_sidecar.upstream_url, loop)
    assert [call["function"]["arguments"] for call in said["tool_calls"]] == [add["arguments"], echo["arguments"]]
    assert after_loop["messages"][len(loop["messages"]):] == [
        {"role": "assistant", "content": None, "tool_calls": [
            {"id": add["id"], "type": "function", "function": {"name": "tools__add", "arguments": add["arguments"]}}]},
        {"role": "tool", "tool_call_id": add["id"], "content": add["output"]},
        {"role": "assistant", "content": None, "tool_calls": [
            {"id": echo["id"], "type": "function", "function": {"name": "tools__echo",
                                                                 "arguments": echo["arguments"]}}]},
        {"role": "tool", "tool_call_id": echo["id"], "content": echo["output"]}]
    assert_answer_follows(after_loop, chained, await model_answer(prefix_sidecar.upstream_url, after_loop))


async def test_a_server_tool_search_and_the_next_response_extend_the_prompt(
        prefix_sidecar: Sidecar, upstream: UpstreamLog) -> None:
    """The tools a tool search loaded are offered from the loop's next turn on, in the place the next response,
    planning them from its history, gives them: its tools are the loop's last, in the same order."""
    invoice = {"type": "function", "name": "get_invoice", "description": "Fetch an invoice", "defer_loading": True,
               "parameters": {"type": "object", "properties": {"number": {"type": "string"}}}}
    tools = [{"type": "tool_search"}, invoice, WEATHER]
    async with await _session(prefix_sidecar) as session:
        chain = Chain(session, upstream)
        first = await chain.turn(instructions=INSTRUCTIONS, tools=tools,
                                 input="call tool_search invoice [then=get_invoice]")
        assert [item["type"] for item in first["output"]] == ["tool_search_call", "tool_search_output",
                                                              "function_call"]
        await chain.turn(instructions=INSTRUCTIONS, tools=tools, input=[
            {"type": "function_call_output", "call_id": first["output"][-1]["call_id"], "output": "paid"}])
    assert len(chain.bodies) == 3
    loop, after_loop, chained = chain.bodies
    assert "get_invoice" not in [tool["function"]["name"] for tool in loop["tools"]]
    assert "get_invoice" in [tool["function"]["name"] for tool in after_loop["tools"]]
    assert_extends(after_loop, chained)  # messages and tools
    assert_answer_follows(after_loop, chained, await model_answer(prefix_sidecar.upstream_url, after_loop))
    assert loop["messages"] == after_loop["messages"][:len(loop["messages"])]


async def test_a_web_search_turn_extends_the_prompt(prefix_sidecar: Sidecar, upstream: UpstreamLog) -> None:
    """Within the response the loop's turns extend each other; the next response's prompt repeats them up to the
    search's result, which the model read as the results' text and history sends back as their sources (the text
    is not stored): the one message a chained turn re-renders, and every message after it is prefilled again."""
    tools = [{"type": "web_search"}]
    async with await _session(prefix_sidecar) as session:
        chain = Chain(session, upstream)
        first = await chain.turn(instructions=INSTRUCTIONS, tools=tools, input="call web_search widgets",
                                 include=["web_search_call.action.sources"])
        assert [item["type"] for item in first["output"]] == ["web_search_call", "message"]
        await chain.turn(instructions=INSTRUCTIONS, tools=tools, input="tell me more")
    assert len(chain.bodies) == 3
    searched = first["output"][0]
    loop, after_loop, chained = chain.bodies
    assert_extends(loop, after_loop)
    assert_answer_follows(loop, after_loop, await model_answer(prefix_sidecar.upstream_url, loop),
                          call_ids={"call_web_search_0": searched["id"]})
    result = len(loop["messages"]) + 1
    assert chained["messages"][:result] == after_loop["messages"][:result]  # the call itself is sent alike
    read, sent_back = after_loop["messages"][result], chained["messages"][result]
    assert read["content"].startswith("Web search results. Where you use a source")
    assert sent_back == dict(read, content="Web search results (sources): " + ", ".join(
        source["url"] for source in searched["action"]["sources"]))
    assert chained["messages"][result + 1]["content"] == first["output"][-1]["content"][0]["text"]


async def test_chains_extend_the_prompt_under_the_other_switches(switched_sidecar: Sidecar, mcp: MCPTestServer
                                                                 ) -> None:
    """Under the switches' other values the same holds: reasoning goes back as the model wrote it, results as user
    turns (several answering one message share one), an assistant message's calls beside ``content: ""``."""
    tools = [WEATHER, TIME, {"type": "mcp", "server_label": "tools", "server_url": mcp.http_url,
                             "require_approval": "never", "allowed_tools": ["add", "echo"]}]
    upstream = UpstreamLog(switched_sidecar.upstream_url.removesuffix("/v1"))
    await upstream.clear()
    async with aiohttp.ClientSession(base_url=switched_sidecar.http_url,
                                     timeout=aiohttp.ClientTimeout(total=60)) as session:
        chain = Chain(session, upstream)
        await chain.turn(instructions=INSTRUCTIONS, tools=tools, input=[
            {"role": "developer", "content": "be terse"}, {"role": "user", "content": "[think] hello"}])
        called = await chain.turn(instructions=INSTRUCTIONS, tools=tools,
                                  input="[think] call get_weather Rome call get_time Rome")
        calls = [item for item in called["output"] if item["type"] == "function_call"]
        assert len(calls) == 2
        await chain.turn(instructions=INSTRUCTIONS, tools=tools, input=[
            {"type": "function_call_output", "call_id": call["call_id"], "output": f"result {index}"}
            for index, call in enumerate(calls)])
        looped = await chain.turn(instructions=INSTRUCTIONS, tools=tools,
                                  input="[think] call tools__add call tools__echo")
        await chain.turn(instructions=INSTRUCTIONS, tools=tools, input="bye")
    assert len(chain.bodies) == 6  # the MCP calls' turn and the loop's next
    assert chain.bodies[0]["messages"][1] == {"role": "developer", "content": "be terse"}
    renamed = {f"call_tools__{item['name']}_{index}": item["id"]
               for index, item in enumerate(item for item in looped["output"] if item["type"] == "mcp_call")}
    for before, after in zip(chain.bodies, chain.bodies[1:], strict=False):
        assert_extends(before, after)
        said = await model_answer(switched_sidecar.upstream_url, before)
        assert_answer_follows(before, after, said, call_ids=renamed)
        answer = after["messages"][len(before["messages"])]
        assert answer.get("reasoning_content") == said.get("reasoning_content")
    results = chain.bodies[2]["messages"][-1]
    assert results["role"] == "user" and "result 0" in results["content"] and "result 1" in results["content"]


# --- conversations and background runs ------------------------------------------------------------------------------


async def test_a_conversations_turns_extend_the_prompt(prefix_sidecar: Sidecar, upstream: UpstreamLog) -> None:
    async with await _session(prefix_sidecar) as session:
        async with session.post("/v1/conversations", json={"items": [
                {"type": "message", "role": "user", "content": "from the start"}]}) as answer:
            assert answer.status == 200, await answer.text()
            conversation = (await answer.json())["id"]
        chain = Chain(session, upstream)
        await chain.turn(instructions=INSTRUCTIONS, conversation=conversation, tools=[WEATHER], input="first")
        called = await chain.turn(instructions=INSTRUCTIONS, conversation=conversation, tools=[WEATHER],
                                  input=f"call get_weather {raw_args(SPACED_ARGS)}")
        await chain.turn(instructions=INSTRUCTIONS, conversation=conversation, tools=[WEATHER], input=[
            {"type": "function_call_output", "call_id": called["output"][-1]["call_id"], "output": "sunny"}])
        await chain.turn(instructions=INSTRUCTIONS, conversation=conversation, tools=[WEATHER], input="[think] 4th")
    assert len(chain.bodies) == 4
    await assert_chain_extends(chain, prefix_sidecar.upstream_url)
    assert chain.bodies[0]["messages"][1] == {"role": "user", "content": "from the start"}


async def test_background_turns_extend_the_prompt(prefix_sidecar: Sidecar, upstream: UpstreamLog,
                                                  mcp: MCPTestServer) -> None:
    tools = [{"type": "mcp", "server_label": "tools", "server_url": mcp.http_url, "require_approval": "never",
              "allowed_tools": ["add"]}, WEATHER]
    async with await _session(prefix_sidecar) as session:
        chain = Chain(session, upstream)
        first = await chain.turn(instructions=INSTRUCTIONS, tools=tools, background=True, input="call tools__add")
        called = await chain.turn(instructions=INSTRUCTIONS, tools=tools, background=True, stream=True,
                                  input=f"call get_weather {raw_args(SPACED_ARGS)}")
        await chain.turn(instructions=INSTRUCTIONS, tools=tools, background=True, input=[
            {"type": "function_call_output", "call_id": called["output"][-1]["call_id"], "output": "sunny"},
            {"role": "user", "content": "[think] after"}])
    assert len(chain.bodies) == 4
    added = next(item for item in first["output"] if item["type"] == "mcp_call")
    for before, after in zip(chain.bodies, chain.bodies[1:], strict=False):
        assert_extends(before, after)
        assert_answer_follows(before, after, await model_answer(prefix_sidecar.upstream_url, before),
                              call_ids={"call_tools__add_0": added["id"]})


@pytest.mark.parametrize("store", [True, False])
async def test_websocket_turns_extend_the_prompt(store: bool, prefix_sidecar: Sidecar, upstream: UpstreamLog) -> None:
    """WebSocket mode's chains, stored or held by the connection alone (``store: false``)."""
    async with await _session(prefix_sidecar) as session, session.ws_connect("/v1/responses") as ws:
        chain = Chain(session, upstream)

        async def turn(**fields: Any) -> dict[str, Any]:
            if chain.previous is not None:
                fields["previous_response_id"] = chain.previous
            await ws.send_str(orjson.dumps({"type": "response.create", "model": "fake-model", "store": store,
                                            "instructions": INSTRUCTIONS, "tools": [WEATHER], **fields}).decode())
            while True:
                event = orjson.loads((await ws.receive(timeout=30)).data)
                if event["type"] in ("response.completed", "response.failed", "response.incomplete", "error"):
                    break
            assert event["type"] == "response.completed", event
            chain.previous = event["response"]["id"]
            await chain._collect()
            return dict(event["response"])

        called = await turn(input=f"call get_weather {raw_args(SPACED_ARGS)}")
        await turn(input=[{"type": "function_call_output", "call_id": called["output"][-1]["call_id"],
                           "output": "sunny"}])
        await turn(input="[think] and then")
        await turn(input="bye")
    assert len(chain.bodies) == 4
    await assert_chain_extends(chain, prefix_sidecar.upstream_url)


async def test_an_agent_sessions_turns_extend_the_prompt(prefix_sidecar: Sidecar, upstream: UpstreamLog) -> None:
    """An Agents API session's turns are runs over the session's history: each turn's prompt extends the last."""
    beta = {"OpenAI-Beta": "agents=v1"}
    async with await _session(prefix_sidecar) as session:
        chain = Chain(session, upstream)

        async def idle(session_id: str, turns: int) -> None:
            for _ in range(600):
                async with session.get(f"/v1/agents/sessions/{session_id}", headers=beta) as answer:
                    assert answer.status == 200, await answer.text()
                    status = (await answer.json())["status"]
                await chain._collect()
                if status == "idle" and len(chain.bodies) >= turns:
                    return
                await asyncio.sleep(0.05)
            raise AssertionError(f"session {session_id} did not finish turn {turns}")

        async with session.post("/v1/agents/sessions", headers=beta, json={
                "agent": {"model": "fake-model", "instructions": INSTRUCTIONS}, "environment": {"type": "none"},
                "input": "hello agent"}) as answer:
            assert answer.status == 200, await answer.text()
            session_id = (await answer.json())["id"]
        await idle(session_id, 1)
        for turns, text in enumerate(("[think] second", "third"), 2):
            async with session.post(f"/v1/agents/sessions/{session_id}/events", headers=beta, json={"events": [
                    {"type": "agent.session.input.message",
                     "input": [{"role": "user", "content": [{"type": "input_text", "text": text}]}]}]}) as answer:
                assert answer.status in (200, 201, 202), await answer.text()
            await idle(session_id, turns)
    assert len(chain.bodies) == 3
    await assert_chain_extends(chain, prefix_sidecar.upstream_url)


# --- through Envoy ---------------------------------------------------------------------------------------------------


async def test_a_chain_through_envoy_extends_the_prompt(prefix_envoy: str, prefix_sidecar: Sidecar,
                                                        upstream: UpstreamLog) -> None:
    async with aiohttp.ClientSession(base_url=prefix_envoy, timeout=aiohttp.ClientTimeout(total=60)) as session:
        chain = Chain(session, upstream)
        first = await chain.turn(instructions=INSTRUCTIONS, tools=[WEATHER], stream=True,
                                 input=f"call get_weather {raw_args(SPACED_ARGS)}")
        await chain.turn(instructions=INSTRUCTIONS, tools=[WEATHER], input=[
            {"type": "function_call_output", "call_id": first["output"][-1]["call_id"], "output": "sunny"}])
        await chain.turn(instructions=INSTRUCTIONS, tools=[WEATHER], stream=True, input=[
            {"role": "user", "content": [{"type": "input_text", "text": "[think] and"},
                                         {"type": "input_image", "image_url": PNG}]}])
        await chain.turn(instructions=INSTRUCTIONS, tools=[WEATHER], input="bye")
    assert len(chain.bodies) == 4
    await assert_chain_extends(chain, prefix_sidecar.upstream_url)
