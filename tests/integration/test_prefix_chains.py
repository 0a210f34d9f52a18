"""Every chained turn's prompt extends its predecessor's exactly: the Chat Completions ``messages`` (and ``tools``)
sent upstream for turn n+1 begin with exactly those sent for turn n, element by element, and the model's answer to
turn n follows them as it said it. A backend's prefix cache (vLLM's automatic prefix caching, SGLang's radix cache,
llama.cpp's slot cache) holds a chain's prompt only up to the first token that differs: one earlier message
rendered otherwise on the next turn (an id, a call's arguments re-encoded, text folded differently, a tool output
shown another way) makes the backend prefill everything after it again, every turn.

Each kind of item is a turn n and a turn n+1 chained to it (``previous_response_id``, a conversation, WebSocket mode,
an Agents API session's turns); the fake upstream records both bodies, and the model's answer to turn n is asked of
the same fake again (it is deterministic), so the answer the next turn carries is compared with what the model
wrote: text identical, a call's arguments byte for byte (``[args_raw64=…]`` makes the model write them spaced, as
vLLM's parsers do). Where the prefix cannot hold (docs/upstreams.md, "Prefix caches") the tests say what changes
instead. Through the HTTP door; conversations, WebSocket mode, Agents API sessions and one representative chain also
through Envoy. The tool loop's turns, approvals, background and resumed runs and the profile switches' other
values: test_prefix_tool_loop.py.
"""

from __future__ import annotations

import asyncio
import base64
from collections.abc import AsyncIterator
from typing import Any

import aiohttp
import orjson
import pytest

from tests.support.bridge import Sidecar, UpstreamLog, running_sidecar
from tests.support.gateway import envoy_before
from tests.support.prefix_chains import (
    INSTRUCTIONS,
    PNG,
    SPACED_ARGS,
    TIME,
    WEATHER,
    Chain,
    assert_answer_follows,
    assert_chain_extends,
    assert_extends,
    at_door,
    model_answer,
    raw_args,
    session_at,
)

pytestmark = pytest.mark.filterwarnings("ignore::pytest.PytestUnraisableExceptionWarning")


@pytest.fixture(scope="module")
async def prefix_sidecar(fake_upstream: str, tmp_path_factory: pytest.TempPathFactory) -> AsyncIterator[Sidecar]:
    async with running_sidecar(str(tmp_path_factory.mktemp("prefix")), fake_upstream) as started:
        yield started


@pytest.fixture(scope="module")
async def prefix_envoy(prefix_sidecar: Sidecar) -> AsyncIterator[str]:
    async with envoy_before(prefix_sidecar) as url:
        yield url


@pytest.fixture(params=["http", "envoy"])
def door_base(request: pytest.FixtureRequest, prefix_sidecar: Sidecar) -> str:
    """The base URL of the door under test."""
    return prefix_sidecar.http_url if request.param == "http" else str(request.getfixturevalue("prefix_envoy"))


@pytest.fixture
async def upstream(prefix_sidecar: Sidecar) -> UpstreamLog:
    log = UpstreamLog(prefix_sidecar.upstream_url.removesuffix("/v1"))
    await log.clear()
    return log


# --- previous_response_id chains, one item kind each ----------------------------------------------------------------

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
    async with await session_at(prefix_sidecar) as session:
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
    async with await session_at(prefix_sidecar) as session:
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
    async with await session_at(prefix_sidecar) as session:
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


COMPUTER = {"type": "computer_use_preview", "display_width": 1024, "display_height": 768, "environment": "linux"}
# each client tool's call (the model's arguments written compactly, as its item will send them back), then its output
CLIENT_TOOLS: dict[str, tuple[dict[str, Any], str, Any]] = {
    "shell": ({"type": "shell", "environment": {"type": "local"}}, "call shell " + raw_args('{"commands":["ls"]}'),
              lambda call: {"type": "shell_call_output", "call_id": call["call_id"], "output": [
                  {"stdout": "a.txt", "stderr": "", "outcome": {"type": "exit", "exit_code": 0}}]}),
    "local shell": ({"type": "local_shell"}, "call local_shell " + raw_args(
        '{"command":["ls","-la"],"working_directory":"/srv"}'),
                    lambda call: {"type": "local_shell_call_output", "id": call["call_id"], "output": "a.txt"}),
    "apply patch": ({"type": "apply_patch"}, "call apply_patch " + raw_args(
        '{"type":"create_file","path":"a.py","diff":"+x = 1"}'),
                    lambda call: {"type": "apply_patch_call_output", "call_id": call["call_id"],
                                  "status": "completed", "output": "done"}),
    "computer use": (COMPUTER, "call computer " + raw_args('{"type":"click","button":"left","x":1,"y":2}'),
                     lambda call: {"type": "computer_call_output", "call_id": call["call_id"],
                                   "output": {"type": "computer_screenshot", "image_url": PNG}}),
}


@pytest.mark.parametrize("kind", list(CLIENT_TOOLS))
async def test_a_client_tools_call_and_output_extend_the_prompt(kind: str, prefix_sidecar: Sidecar,
                                                                upstream: UpstreamLog) -> None:
    """A built-in client tool's call (a shell, a local shell, apply_patch, computer use with its screenshot, a client
    tool search) and its output, chained: each turn's prompt extends the last, the call as the model wrote it."""
    tool, said, output = CLIENT_TOOLS[kind]
    tools = [tool, WEATHER]
    async with await session_at(prefix_sidecar) as session:
        chain = Chain(session, upstream)
        first = await chain.turn(instructions=INSTRUCTIONS, tools=tools, input=said)
        call = first["output"][-1]
        assert call["type"].endswith("_call"), call
        await chain.turn(instructions=INSTRUCTIONS, tools=tools, input=[output(call)])
        await chain.turn(instructions=INSTRUCTIONS, tools=tools, input="[think] and then")
    assert len(chain.bodies) == 3
    await assert_chain_extends(chain, prefix_sidecar.upstream_url)


async def test_a_client_tool_search_extends_the_prompt(prefix_sidecar: Sidecar, upstream: UpstreamLog) -> None:
    """A client tool search's call and output: the messages extend the last turn's; the tools it loaded are offered
    from the next turn on (docs/upstreams.md: a change of tools, where the prefix ends), then stay as they are."""
    tools = [{"type": "tool_search", "execution": "client"}, dict(TIME, defer_loading=True), WEATHER]
    async with await session_at(prefix_sidecar) as session:
        chain = Chain(session, upstream)
        first = await chain.turn(instructions=INSTRUCTIONS, tools=tools, input="call tool_search time")
        call = first["output"][-1]
        assert call["type"] == "tool_search_call"
        await chain.turn(instructions=INSTRUCTIONS, tools=tools, input=[
            {"type": "tool_search_output", "call_id": call["call_id"], "execution": "client",
             "tools": [dict(TIME, defer_loading=True)]}])
        timed = await chain.turn(instructions=INSTRUCTIONS, tools=tools,
                                 input="call get_time " + raw_args('{"city": "Oslo"}'))
        await chain.turn(instructions=INSTRUCTIONS, tools=tools, input=[
            {"type": "function_call_output", "call_id": timed["output"][-1]["call_id"], "output": "noon"}])
    assert len(chain.bodies) == 4
    before, loaded = chain.bodies[:2]
    assert "get_time" not in [tool["function"]["name"] for tool in before["tools"]]
    assert "get_time" in [tool["function"]["name"] for tool in loaded["tools"]]
    assert_extends(before, dict(loaded, tools=before["tools"]))  # the messages
    assert_answer_follows(before, loaded, await model_answer(prefix_sidecar.upstream_url, before))
    await assert_chain_extends(chain, prefix_sidecar.upstream_url, first=1)


async def test_a_file_input_extends_the_prompt(prefix_sidecar: Sidecar, upstream: UpstreamLog) -> None:
    """A file given inline and one uploaded and named by ``file_id``: the next turns send them as first sent."""
    async with await session_at(prefix_sidecar) as session:
        form = aiohttp.FormData()
        form.add_field("purpose", "user_data")
        form.add_field("file", b"the plums are ripe\n", filename="notes.txt", content_type="text/plain")
        async with session.post("/v1/files", data=form) as answer:
            assert answer.status == 200, await answer.text()
            file_id = (await answer.json())["id"]
        inline = "data:text/plain;base64," + base64.b64encode(b"apples, pears\n").decode()
        chain = Chain(session, upstream)
        await chain.turn(instructions=INSTRUCTIONS, input=[{"role": "user", "content": [
            {"type": "input_text", "text": "read these"}, {"type": "input_file", "file_id": file_id},
            {"type": "input_file", "filename": "fruit.txt", "file_data": inline}]}])
        await chain.turn(instructions=INSTRUCTIONS, input="what is ripe")
        await chain.turn(instructions=INSTRUCTIONS, input="thanks")
    assert len(chain.bodies) == 3
    await assert_chain_extends(chain, prefix_sidecar.upstream_url)
    assert "the plums are ripe" in orjson.dumps(chain.bodies[0]["messages"][1]).decode()


# --- conversations, WebSocket mode, Agents API sessions -------------------------------------------------------------


async def test_a_conversations_turns_extend_the_prompt(prefix_sidecar: Sidecar, door_base: str,
                                                      upstream: UpstreamLog) -> None:
    async with at_door(door_base) as session:
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


@pytest.mark.parametrize("store", [True, False])
async def test_websocket_turns_extend_the_prompt(store: bool, prefix_sidecar: Sidecar, door_base: str,
                                                 upstream: UpstreamLog) -> None:
    """WebSocket mode's chains, stored or held by the connection alone (``store: false``)."""
    async with at_door(door_base) as session, session.ws_connect("/v1/responses") as ws:
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


async def test_an_agent_sessions_turns_extend_the_prompt(prefix_sidecar: Sidecar, door_base: str,
                                                         upstream: UpstreamLog) -> None:
    """An Agents API session's turns are runs over the session's history: each turn's prompt extends the last."""
    beta = {"OpenAI-Beta": "agents=v1"}
    async with at_door(door_base) as session:
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
