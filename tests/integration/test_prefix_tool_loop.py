"""The prompt of every turn of the server-side tool loop, and of the response chained after it, extends the last one
exactly (test_prefix_chains.py says why and how it is checked): MCP calls one after another and in parallel, an
approved MCP call, a server tool search that loads tools, a web search (whose result history keeps only as its
sources: the one message a chained turn re-renders), background runs and a resumed one, and the same chains under
the profile switches' other values (results as user turns, ``content: ""`` beside calls, reasoning sent back, the
``developer`` role). The loop runs in the sidecar whichever door the request came in by: parallel calls, approvals
and background runs through both doors (HTTP and Envoy), the rest through the HTTP door.
"""

from __future__ import annotations

import asyncio
import os
import signal
import uuid
from collections.abc import AsyncIterator
from pathlib import Path

import aiohttp
import orjson
import pytest

from responses_bridge.demo.procs import ManagedProcess, free_port, wait_http
from responses_bridge.engine.tools.server import image_replay_note
from responses_bridge.engine.tools.turn_result import continues_turn
from responses_bridge.sandbox.doctor import check_bubblewrap
from tests.integration.test_background_resume import read_until_deltas, until_ended
from tests.support.bridge import PYTHON, Sidecar, UpstreamLog, running_sidecar, start_sidecar
from tests.support.gateway import envoy_before
from tests.support.mcp_server import MCPTestServer
from tests.support.prefix_chains import (
    INSTRUCTIONS,
    SPACED_ARGS,
    TIME,
    WEATHER,
    Chain,
    assert_answer_follows,
    assert_extends,
    at_door,
    model_answer,
    raw_args,
    session_at,
)
from tests.support.search_server import SearchServer

pytestmark = pytest.mark.filterwarnings("ignore::pytest.PytestUnraisableExceptionWarning")


@pytest.fixture(scope="module")
async def search() -> AsyncIterator[SearchServer]:
    async with SearchServer() as server:
        yield server


@pytest.fixture(scope="module")
async def prefix_sidecar(fake_upstream: str, search: SearchServer,
                         tmp_path_factory: pytest.TempPathFactory) -> AsyncIterator[Sidecar]:
    env = {"RESPONSES_BRIDGE_MCP_ALLOWED_HOSTS": "127.0.0.1", "RESPONSES_BRIDGE_WEB_SEARCH": f"searxng:{search.url}",
           "RESPONSES_BRIDGE_IMAGE_GENERATION": "upstream"}
    async with running_sidecar(str(tmp_path_factory.mktemp("prefix")), fake_upstream, env=env) as started:
        yield started


@pytest.fixture(scope="module")
async def prefix_envoy(prefix_sidecar: Sidecar) -> AsyncIterator[str]:
    async with envoy_before(prefix_sidecar) as url:
        yield url


@pytest.fixture(params=["http", "envoy"])
def door_base(request: pytest.FixtureRequest, prefix_sidecar: Sidecar) -> str:
    """The base URL of the door under test: the loop runs in the sidecar either way, its prompts the same."""
    return prefix_sidecar.http_url if request.param == "http" else str(request.getfixturevalue("prefix_envoy"))


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


# --- the server-side tool loop: turns within one response, then the next response ---------------------------------


async def test_the_tool_loops_turns_and_the_next_response_extend_the_prompt(
        prefix_sidecar: Sidecar, upstream: UpstreamLog, mcp: MCPTestServer) -> None:
    tools = [{"type": "mcp", "server_label": "tools", "server_url": mcp.http_url, "require_approval": "never",
              "allowed_tools": ["add", "echo"]}]
    async with await session_at(prefix_sidecar) as session:
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
        prefix_sidecar: Sidecar, door_base: str, upstream: UpstreamLog, mcp: MCPTestServer) -> None:
    """Two MCP calls in one turn: the loop's next turn shows the turn as the model made it (one assistant message
    with both calls, then both results), and the next response's history shows it so too: the second call's item
    says it continues the turn (turn_result.TURN_MARK), where each item alone holds its call and its result."""
    tools = [{"type": "mcp", "server_label": "tools", "server_url": mcp.http_url, "require_approval": "never",
              "allowed_tools": ["add", "echo"]}]
    async with at_door(door_base) as session:
        chain = Chain(session, upstream)
        first = await chain.turn(instructions=INSTRUCTIONS, tools=tools, input="call tools__add call tools__echo")
        assert [item["type"] for item in first["output"]] == ["mcp_list_tools", "mcp_call", "mcp_call", "message"]
        await chain.turn(instructions=INSTRUCTIONS, tools=tools, input="and now")
        async with session.get(f"/v1/responses/{first['id']}") as answer:  # stored so, read back so
            assert [item["id"] for item in (await answer.json())["output"]] == [item["id"] for item in first["output"]]
    assert len(chain.bodies) == 3
    add, echo = (item for item in first["output"] if item["type"] == "mcp_call")
    assert (continues_turn(add), continues_turn(echo)) == (False, True)
    loop, after_loop, chained = chain.bodies
    assert_extends(loop, after_loop)
    assert_extends(after_loop, chained)
    said = await model_answer(prefix_sidecar.upstream_url, loop)
    assert [call["function"]["arguments"] for call in said["tool_calls"]] == [add["arguments"], echo["arguments"]]
    assert after_loop["messages"][len(loop["messages"]):] == [
        {"role": "assistant", "content": None, "tool_calls": [
            {"id": add["id"], "type": "function", "function": {"name": "tools__add", "arguments": add["arguments"]}},
            {"id": echo["id"], "type": "function", "function": {"name": "tools__echo",
                                                                 "arguments": echo["arguments"]}}]},
        {"role": "tool", "tool_call_id": add["id"], "content": add["output"]},
        {"role": "tool", "tool_call_id": echo["id"], "content": echo["output"]}]
    assert_answer_follows(loop, after_loop, said, call_ids={"call_tools__add_0": add["id"],
                                                            "call_tools__echo_1": echo["id"]})
    assert_answer_follows(after_loop, chained, await model_answer(prefix_sidecar.upstream_url, after_loop))


async def test_an_approved_mcp_call_extends_the_prompt(prefix_sidecar: Sidecar, door_base: str,
                                                      upstream: UpstreamLog, mcp: MCPTestServer) -> None:
    """A call that needs approval: the approval request is not for the model; the response that approves it shows
    the call made (under the approval request's id, its arguments as the model wrote them) and its result,
    extending the prompt that asked for it; the next response's history shows it so too, and extends that."""
    tools = [{"type": "mcp", "server_label": "tools", "server_url": mcp.http_url, "require_approval": "always",
              "allowed_tools": ["echo"]}]
    async with at_door(door_base) as session:
        chain = Chain(session, upstream)
        first = await chain.turn(instructions=INSTRUCTIONS, tools=tools,
                                 input="call tools__echo " + raw_args('{"text":  "hi"}'))
        request = first["output"][-1]
        assert request["type"] == "mcp_approval_request" and request["arguments"] == '{"text":  "hi"}'
        approved = await chain.turn(instructions=INSTRUCTIONS, tools=tools, input=[
            {"type": "mcp_approval_response", "approval_request_id": request["id"], "approve": True}])
        await chain.turn(instructions=INSTRUCTIONS, tools=tools, input="[think] and now")
    assert len(chain.bodies) == 3
    made = next(item for item in approved["output"] if item["type"] == "mcp_call")
    for before, after in zip(chain.bodies, chain.bodies[1:], strict=False):
        assert_extends(before, after)
        assert_answer_follows(before, after, await model_answer(prefix_sidecar.upstream_url, before),
                              call_ids={"call_tools__echo_0": request["id"]})
    assert made["approval_request_id"] == request["id"]


async def test_a_server_tool_search_and_the_next_response_extend_the_prompt(
        prefix_sidecar: Sidecar, upstream: UpstreamLog) -> None:
    """The tools a tool search loaded are offered from the loop's next turn on, in the place the next response,
    planning them from its history, gives them: its tools are the loop's last, in the same order."""
    invoice = {"type": "function", "name": "get_invoice", "description": "Fetch an invoice", "defer_loading": True,
               "parameters": {"type": "object", "properties": {"number": {"type": "string"}}}}
    tools = [{"type": "tool_search"}, invoice, WEATHER]
    async with await session_at(prefix_sidecar) as session:
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
    async with await session_at(prefix_sidecar) as session:
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


async def test_a_file_search_turn_extends_the_prompt(prefix_sidecar: Sidecar, upstream: UpstreamLog) -> None:
    """Within the response the loop's turns extend each other; the next response's prompt repeats them up to the
    search's result, which the model read with the bridge's citing instructions and numbering and history sends as
    the stored ``results`` (when included): that tool message is re-rendered, as for a web search."""
    async with await session_at(prefix_sidecar) as session:
        form = aiohttp.FormData()
        form.add_field("purpose", "assistants")
        form.add_field("file", b"Prime the pump: fill the casing with water through the priming plug.\n",
                       filename="pump.md", content_type="text/markdown")
        async with session.post("/v1/files", data=form) as answer:
            assert answer.status == 200, await answer.text()
            file_id = (await answer.json())["id"]
        async with session.post("/v1/vector_stores", json={"name": "manuals", "file_ids": [file_id]}) as answer:
            assert answer.status == 200, await answer.text()
            store_id = (await answer.json())["id"]
        for _ in range(600):
            async with session.get(f"/v1/vector_stores/{store_id}/files/{file_id}") as answer:
                status = (await answer.json())["status"]
            if status != "in_progress":
                break
            await asyncio.sleep(0.05)
        assert status == "completed"
        tools = [{"type": "file_search", "vector_store_ids": [store_id]}]
        chain = Chain(session, upstream)
        first = await chain.turn(instructions=INSTRUCTIONS, tools=tools, input="call file_search priming",
                                 include=["file_search_call.results"])
        assert [item["type"] for item in first["output"]] == ["file_search_call", "message"]
        await chain.turn(instructions=INSTRUCTIONS, tools=tools, input="tell me more")
    assert len(chain.bodies) == 3
    searched = first["output"][0]
    loop, after_loop, chained = chain.bodies
    assert_extends(loop, after_loop)
    assert_answer_follows(loop, after_loop, await model_answer(prefix_sidecar.upstream_url, loop),
                          call_ids={"call_file_search_0": searched["id"]})
    result = len(loop["messages"]) + 1
    assert chained["messages"][:result] == after_loop["messages"][:result]  # the call itself is sent alike
    read, sent_back = after_loop["messages"][result], chained["messages"][result]
    assert read["content"].startswith("File search results. Where you use a source")
    assert sent_back["content"].startswith("File search results:\n") and "priming plug" in sent_back["content"]
    assert chained["messages"][result + 1]["content"] == first["output"][-1]["content"][0]["text"]


@pytest.mark.skipif(check_bubblewrap()[1] is not None, reason="bubblewrap cannot sandbox here")
async def test_a_code_interpreter_turn_extends_the_prompt(prefix_sidecar: Sidecar, upstream: UpstreamLog) -> None:
    """The code's call goes back as its item keeps it (its code, as compact JSON: what the model wrote here) and its
    result as the logs, which the item keeps when the request includes ``code_interpreter_call.outputs``: the next
    response's prompt repeats the loop's exactly (without them, history says only that the code ran)."""
    tools = [{"type": "code_interpreter", "container": {"type": "auto"}}]
    code = "call python " + raw_args('{"code":"print(6 * 7)"}')
    async with await session_at(prefix_sidecar) as session:
        chain = Chain(session, upstream)
        first = await chain.turn(instructions=INSTRUCTIONS, tools=tools, input=code,
                                 include=["code_interpreter_call.outputs"])
        assert [item["type"] for item in first["output"]] == ["code_interpreter_call", "message"]
        await chain.turn(instructions=INSTRUCTIONS, tools=tools, input="[think] and now",
                         include=["code_interpreter_call.outputs"])
    assert len(chain.bodies) == 3
    ran = first["output"][0]
    assert ran["outputs"][0]["logs"].strip() == "42"
    for before, after in zip(chain.bodies, chain.bodies[1:], strict=False):
        assert_extends(before, after)
        assert_answer_follows(before, after, await model_answer(prefix_sidecar.upstream_url, before),
                              call_ids={"call_python_0": ran["id"]})


@pytest.mark.skipif(check_bubblewrap()[1] is not None, reason="bubblewrap cannot sandbox here")
async def test_a_hosted_shell_turn_extends_the_prompt_up_to_its_output(prefix_sidecar: Sidecar,
                                                                        upstream: UpstreamLog) -> None:
    """The shell the bridge runs (in a container): the loop's turns extend each other, and the next response's
    prompt repeats them up to the shell's output, its call as its item keeps it (the action, as compact JSON: what
    the model wrote here). The output is the one message re-rendered: the loop shows each command before what it
    printed, history the ``shell_call_output`` item's outputs alone (docs/upstreams.md, "Prefix caches")."""
    tools = [{"type": "shell", "environment": {"type": "container_auto"}}]
    async with await session_at(prefix_sidecar) as session:
        chain = Chain(session, upstream)
        first = await chain.turn(instructions=INSTRUCTIONS, tools=tools,
                                 input="call shell " + raw_args('{"commands":["echo 42"]}'))
        assert [item["type"] for item in first["output"]] == ["shell_call", "shell_call_output", "message"]
        await chain.turn(instructions=INSTRUCTIONS, tools=tools, input="[think] and now")
    assert len(chain.bodies) == 3
    loop, after_loop, chained = chain.bodies
    assert_extends(loop, after_loop)
    assert_answer_follows(loop, after_loop, await model_answer(prefix_sidecar.upstream_url, loop))
    output = len(loop["messages"]) + 1
    assert chained["messages"][:output] == after_loop["messages"][:output]  # the call itself is sent alike
    read, sent_back = after_loop["messages"][output], chained["messages"][output]
    assert (read["content"], sent_back["content"]) == ("$ echo 42\n42\n\n(exit code 0)", "42\n\n(exit code 0)")
    assert chained["messages"][output + 1]["content"] == first["output"][-1]["content"][0]["text"]


async def test_an_image_generation_turn_extends_the_prompt_up_to_its_call(prefix_sidecar: Sidecar,
                                                                          upstream: UpstreamLog) -> None:
    """The loop's turns extend each other; the next response's history shows the image generation as a one-line
    note (never the image), where the loop sent a call and its result: the prompt holds up to that call
    (docs/upstreams.md, "Prefix caches"), and everything after it is prefilled again."""
    tools = [{"type": "image_generation", "size": "1024x1024", "quality": "low"}]
    async with await session_at(prefix_sidecar) as session:
        chain = Chain(session, upstream)
        first = await chain.turn(instructions=INSTRUCTIONS, tools=tools,
                                 input="call image_generation " + raw_args('{"prompt":"a red kite"}'))
        assert [item["type"] for item in first["output"]] == ["image_generation_call", "message"]
        await chain.turn(instructions=INSTRUCTIONS, tools=tools, input="and now")
    assert len(chain.bodies) == 3
    loop, after_loop, chained = chain.bodies
    assert_extends(loop, after_loop)
    assert_answer_follows(loop, after_loop, await model_answer(prefix_sidecar.upstream_url, loop))
    call = len(loop["messages"])
    assert chained["messages"][:call] == loop["messages"]
    noted = chained["messages"][call]  # the note, the answer's text after it on the same message
    assert noted["role"] == "assistant" and "tool_calls" not in noted
    assert noted["content"].startswith(image_replay_note(first["output"][0]))
    assert "tool_calls" in after_loop["messages"][call]


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


# --- background runs -----------------------------------------------------------------------------------------------


async def test_background_turns_extend_the_prompt(prefix_sidecar: Sidecar, door_base: str, upstream: UpstreamLog,
                                                  mcp: MCPTestServer) -> None:
    tools = [{"type": "mcp", "server_label": "tools", "server_url": mcp.http_url, "require_approval": "never",
              "allowed_tools": ["add"]}, WEATHER]
    async with at_door(door_base) as session:
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


async def test_a_resumed_runs_turns_extend_the_prompt(tmp_path: Path, fake_upstream: str,
                                                      mcp: MCPTestServer) -> None:
    """A background run killed (``kill -9``) after its parallel MCP calls' results were recorded, in the model call
    after them, is resumed by the restarted process: the call it makes again is the one made before, message for
    message (the turn rebuilt from its record as the loop first sent it), and a response chained to it extends it."""
    marker = f"r{uuid.uuid4().hex[:10]}"
    tools = [{"type": "mcp", "server_label": "tools", "server_url": mcp.http_url, "require_approval": "never",
              "allowed_tools": ["add", "echo"]}]
    db = str(tmp_path / "resumed.db")
    env = {"RESPONSES_BRIDGE_BACKGROUND_LEASE_SECONDS": "3", "RESPONSES_BRIDGE_MCP_ALLOWED_HOSTS": "127.0.0.1"}

    async def started() -> tuple[ManagedProcess, str]:
        process, http_port, _ = start_sidecar(str(tmp_path), fake_upstream, "--db", db, env=env, extproc=False)
        base = f"http://127.0.0.1:{http_port}"
        await wait_http(f"{base}/health", process=process)
        return process, base

    process, base = await started()
    try:
        request = {"model": "fake-model", "instructions": INSTRUCTIONS, "tools": tools, "background": True,
                   "stream": True, "input": f"call tools__add call tools__echo {marker} [chunks=20] [delay=100]"}
        async with at_door(base) as session, session.post("/v1/responses", json=request) as answer:
            seen = await read_until_deltas(answer)  # text comes only in the model call after the results
            os.kill(process.pid, signal.SIGKILL)
            process.process.wait()
    finally:
        process.stop()
    process, base = await started()
    try:
        response_id = seen[0]["response"]["id"]
        ended = await until_ended(base, response_id)
        assert ended["status"] == "completed", ended.get("error")
        async with at_door(base) as session:
            chain = Chain(session, UpstreamLog(fake_upstream.removesuffix("/v1")))
            chain.previous = response_id
            await chain.turn(instructions=INSTRUCTIONS, tools=tools, input=f"and now {marker}")
    finally:
        process.stop()
    bodies = [body for body in chain.bodies if marker in orjson.dumps(body["messages"]).decode()]
    assert len(bodies) == 4  # the calls, the answer, the answer made again after the restart, the chained turn
    loop, before_kill, resumed, chained = bodies
    assert resumed == before_kill
    add, echo = (item for item in ended["output"] if item["type"] == "mcp_call")
    assert [call["id"] for call in resumed["messages"][len(loop["messages"])]["tool_calls"]] == [add["id"], echo["id"]]
    assert_extends(loop, resumed)
    assert_extends(resumed, chained)
    assert_answer_follows(resumed, chained, await model_answer(fake_upstream, resumed))
