"""Every tool shape real clients send, through both doors with the openai SDK: custom tools, shell, apply_patch,
client tool search, Codex's compaction_trigger; and ``truncation`` against a model with a small context."""

from __future__ import annotations

import asyncio
import base64
from typing import Any

import aiohttp
import openai
import orjson
import pytest

from responses_bridge.engine.responses.compaction import SUMMARY_PREFIX
from tests.support.bridge import UpstreamLog, running_sidecar
from tests.support.schema import check_stream, validate_response

pytestmark = pytest.mark.store_proven(
    "tests/integration/test_agents_automations_replicas.py",
    "tests/unit/test_store_contract.py",
    reason="every store/postgres line it covers on PostgreSQL is covered by the modules named (scripts/pg-coverage)",
)

MODEL = "fake-model"
CUSTOM = {"type": "custom", "name": "code_exec", "description": "Runs Python code.",
          "format": {"type": "grammar", "syntax": "regex", "definition": "[a-z]+"}}
SHELL = {"type": "shell", "environment": {"type": "local"}}
PATCH = {"type": "apply_patch"}


async def stream_raw(http: aiohttp.ClientSession, **body: Any) -> list[dict[str, Any]]:
    async with http.post("/v1/responses", json={"model": MODEL, "stream": True, **body}) as answer:
        raw = await answer.read()
        assert answer.status == 200, raw
    return check_stream(raw)


async def create_raw(http: aiohttp.ClientSession, **body: Any) -> dict[str, Any]:
    async with http.post("/v1/responses", json={"model": MODEL, **body}) as answer:
        raw = await answer.read()
        assert answer.status == 200, raw
    response = orjson.loads(raw)
    validate_response(response)
    return response


def items_of(response: Any) -> list[dict[str, Any]]:
    return [item.model_dump(exclude_none=True, warnings=False) for item in response.output]


async def test_custom_tool_call_and_its_output(client: openai.AsyncOpenAI, upstream_log: UpstreamLog) -> None:
    response = await client.responses.create(model=MODEL, input="call code_exec hello", tools=[CUSTOM])
    (call,) = response.output
    assert call.type == "custom_tool_call" and call.name == "code_exec" and call.input == "hello"
    offered = (await upstream_log.last_body())["tools"][0]["function"]
    assert offered["name"] == "code_exec" and "[a-z]+" in offered["description"]
    follow = await client.responses.create(model=MODEL, previous_response_id=response.id, tools=[CUSTOM], input=[
        {"type": "custom_tool_call_output", "call_id": call.call_id, "output": "printed hello"}])
    assert follow.output_text == "Tool result: printed hello"
    sent = (await upstream_log.last_body())["messages"]
    assert sent[-2]["tool_calls"][0]["function"] == {"name": "code_exec", "arguments": '{"input":"hello"}'}


async def test_custom_tool_call_streams_its_input(http: aiohttp.ClientSession) -> None:
    events = await stream_raw(http, input="call code_exec streamed", tools=[CUSTOM])
    kinds = [event["type"] for event in events]
    assert "response.custom_tool_call_input.delta" in kinds
    assert kinds[-3:] == ["response.custom_tool_call_input.done", "response.output_item.done",
                          "response.completed"]
    assert events[-1]["response"]["output"][0]["input"] == "streamed"
    whole = await create_raw(http, input="call code_exec whole", tools=[CUSTOM])
    assert whole["output"][0]["input"] == "whole"


async def test_shell_call_and_its_output(client: openai.AsyncOpenAI, http: aiohttp.ClientSession,
                                         upstream_log: UpstreamLog) -> None:
    arguments = orjson.dumps({"commands": ["ls -la", "echo hi"], "timeout_ms": 1000})
    text = f"call shell [args64={base64.b64encode(arguments).decode()}]"
    response = await client.responses.create(model=MODEL, input=text, tools=[SHELL])
    (call,) = response.output
    assert call.type == "shell_call" and call.action.commands == ["ls -la", "echo hi"]
    assert call.action.timeout_ms == 1000 and call.status == "completed"
    follow = await client.responses.create(model=MODEL, tools=[SHELL], input=[
        {"role": "user", "content": "run it"}, *items_of(response),
        {"type": "shell_call_output", "call_id": call.call_id, "output": [
            {"stdout": "hi", "stderr": "", "outcome": {"type": "exit", "exit_code": 0}}]}])
    assert follow.output_text == "Tool result: hi\n(exit code 0)"
    events = await stream_raw(http, input=text, tools=[SHELL])
    commands = [event["command"] for event in events if event["type"] == "response.shell_call_command.done"]
    assert commands == ["ls -la", "echo hi"]
    assert (await create_raw(http, input=text, tools=[SHELL]))["output"][0]["action"]["commands"] == commands


async def test_apply_patch_call_and_its_output(client: openai.AsyncOpenAI, http: aiohttp.ClientSession) -> None:
    text = 'call apply_patch [args={"type": "create_file", "path": "a.py", "diff": "+x = 1"}]'
    response = await client.responses.create(model=MODEL, input=text, tools=[PATCH])
    (call,) = response.output
    assert call.type == "apply_patch_call" and call.status == "completed"
    assert call.operation.type == "create_file" and call.operation.path == "a.py" and call.operation.diff == "+x = 1"
    follow = await client.responses.create(model=MODEL, previous_response_id=response.id, tools=[PATCH], input=[
        {"type": "apply_patch_call_output", "call_id": call.call_id, "status": "completed", "output": "done"}])
    assert follow.output_text == "Tool result: completed: done"
    events = await stream_raw(http, input=text, tools=[PATCH])
    assert events[-1]["response"]["output"][0]["operation"]["path"] == "a.py"
    assert (await create_raw(http, input=text, tools=[PATCH]))["output"][0]["operation"]["diff"] == "+x = 1"


async def test_client_tool_search_loads_deferred_tools(client: openai.AsyncOpenAI,
                                                       upstream_log: UpstreamLog) -> None:
    search = {"type": "tool_search", "execution": "client"}
    deferred = {"type": "function", "name": "get_weather", "defer_loading": True,
                "parameters": {"type": "object", "properties": {"city": {"type": "string"}}}}
    response = await client.responses.create(model=MODEL, input="call tool_search weather",
                                             tools=[search, deferred])
    (call,) = response.output
    assert call.type == "tool_search_call" and call.arguments == {"query": "weather"}
    assert [tool["function"]["name"] for tool in (await upstream_log.last_body())["tools"]] == ["tool_search"]
    follow = await client.responses.create(model=MODEL, previous_response_id=response.id, tools=[search, deferred],
                                           input=[{"type": "tool_search_output", "call_id": call.call_id,
                                                   "execution": "client", "tools": [deferred]},
                                                  {"role": "user", "content": "call get_weather Paris"}])
    (weather,) = follow.output
    assert weather.type == "function_call" and weather.name == "get_weather"
    assert orjson.loads(weather.arguments) == {"city": "Paris"}


CONVERSATION = [{"role": "user", "content": "my name is Zed and I like plums"},
                {"role": "assistant", "content": "Nice to meet you, Zed."}]


@pytest.mark.parametrize("stream", [False, True])
async def test_compaction_trigger(stream: bool, client: openai.AsyncOpenAI, http: aiohttp.ClientSession,
                                  upstream_log: UpstreamLog) -> None:
    body = {"model": MODEL, "input": [*CONVERSATION, {"type": "compaction_trigger"}], "stream": stream}
    async with http.post("/v1/responses", json=body) as answer:
        raw = await answer.read()
        assert answer.status == 200, raw
    response = check_stream(raw)[-1]["response"] if stream else orjson.loads(raw)
    validate_response(response)
    (item,) = response["output"]
    assert item["type"] == "compaction" and item["encrypted_content"].startswith("rb1.")
    summarised = await upstream_log.last_body()
    assert "my name is Zed" in summarised["messages"][-1]["content"] and "stream" not in summarised
    async with http.get(f"/v1/responses/{response['id']}") as stored:
        assert stored.status == 404  # never stored as history
    follow = await client.responses.create(model=MODEL, input=[item, {"role": "user", "content": "and now?"}])
    assert follow.status == "completed"
    sent = (await upstream_log.last_body())["messages"]
    assert sent[0]["content"].startswith(SUMMARY_PREFIX) and sent[-1]["content"] == "and now?"


LONG = [item for turn in range(8) for item in (
    {"role": "user", "content": f"question {turn} " + "filler " * 30},
    {"role": "assistant", "content": f"answer {turn} " + "filler " * 30})]


@pytest.mark.parametrize("stream", [False, True])
async def test_truncation_auto_drops_the_oldest_and_retries(stream: bool, http: aiohttp.ClientSession,
                                                           upstream_log: UpstreamLog) -> None:
    body = {"model": MODEL, "instructions": "Be terse.", "truncation": "auto", "stream": stream,
            "input": [*LONG, {"role": "user", "content": "newest [context=200]"}]}
    async with http.post("/v1/responses", json=body) as answer:
        raw = await answer.read()
        assert answer.status == 200, raw
    response = check_stream(raw)[-1]["response"] if stream else orjson.loads(raw)
    validate_response(response)
    assert response["status"] == "completed" and response["output"][0]["content"][0]["text"] == "Echo: newest"
    first, retried = [entry["body"] for entry in (await upstream_log.entries())[-2:]]
    assert len(first["messages"]) == len(LONG) + 2
    assert retried["messages"][0] == {"role": "system", "content": "Be terse."}
    assert retried["messages"][-1]["content"] == "newest [context=200]"
    assert 2 < len(retried["messages"]) < len(first["messages"])
    assert retried["messages"][1]["content"] != first["messages"][1]["content"]  # the oldest went first


@pytest.mark.parametrize("stream", [False, True])
async def test_truncation_disabled_is_a_clear_400(stream: bool, client: openai.AsyncOpenAI) -> None:
    with pytest.raises(openai.BadRequestError) as error:
        await client.responses.create(model=MODEL, stream=stream,
                                      input=[*LONG, {"role": "user", "content": "newest [context=200]"}])
    assert error.value.status_code == 400
    assert error.value.code == "context_length_exceeded" and error.value.param == "input"
    assert error.value.type == "invalid_request_error"


async def test_truncation_auto_in_a_background_run(client: openai.AsyncOpenAI) -> None:
    response = await client.responses.create(model=MODEL, background=True, truncation="auto", input=[
        *LONG, {"role": "user", "content": "newest [context=200]"}])
    deadline = asyncio.get_running_loop().time() + 20
    while response.status in ("queued", "in_progress"):
        assert asyncio.get_running_loop().time() < deadline, "the background run never ended"
        await asyncio.sleep(0.05)
        response = await client.responses.retrieve(response.id)
    assert response.status == "completed" and response.output_text == "Echo: newest"


async def test_truncation_in_websocket_turns(base_url: str) -> None:
    async with aiohttp.ClientSession(base_url=base_url) as session, session.ws_connect("/v1/responses") as ws:
        for truncation, expected in (("auto", "response.completed"), ("disabled", "error")):
            await ws.send_str(orjson.dumps({"type": "response.create", "model": MODEL, "truncation": truncation,
                                            "input": [*LONG, {"role": "user", "content": "newest [context=200]"}]
                                            }).decode())
            while True:
                event = orjson.loads((await ws.receive(timeout=30)).data)
                if event["type"] in ("response.completed", "response.failed", "error"):
                    break
            assert event["type"] == expected, event
            if expected == "error":
                assert event["error"]["code"] == "context_length_exceeded" and event["status"] == 400


async def test_a_compaction_turn_on_a_websocket_is_not_continuable(base_url: str) -> None:
    async with aiohttp.ClientSession(base_url=base_url) as session, session.ws_connect("/v1/responses") as ws:
        events = []
        await ws.send_str(orjson.dumps({"type": "response.create", "model": MODEL, "store": False, "input": [
            *CONVERSATION, {"type": "compaction_trigger"}]}).decode())
        while not events or events[-1]["type"] not in ("response.completed", "response.failed", "error"):
            events.append(orjson.loads((await ws.receive(timeout=30)).data))
        assert events[-1]["type"] == "response.completed", events[-1]
        assert [item["type"] for item in events[-1]["response"]["output"]] == ["compaction"]
        await ws.send_str(orjson.dumps({"type": "response.create", "model": MODEL, "input": "more",
                                        "previous_response_id": events[-1]["response"]["id"]}).decode())
        error = orjson.loads((await ws.receive(timeout=30)).data)
        assert error["type"] == "error" and error["error"]["code"] == "previous_response_not_found"


async def test_a_declared_context_window_shrinks_the_first_call(fake_upstream: str, tmp_path,
                                                                upstream_log: UpstreamLog) -> None:
    async with running_sidecar(str(tmp_path), fake_upstream, env={"RESPONSES_BRIDGE_CONTEXT_WINDOW": "300"},
                               extproc=False) as sidecar, aiohttp.ClientSession(base_url=sidecar.http_url) as http:
        body = {"model": MODEL, "truncation": "auto", "input": [*LONG, {"role": "user", "content": "newest"}]}
        async with http.post("/v1/responses", json=body) as answer:
            assert answer.status == 200 and (await answer.json())["status"] == "completed"
        (entry,) = await upstream_log.entries()  # one call, already short enough
        sent = entry["body"]["messages"]
        assert len(orjson.dumps(entry["body"])) <= 300 * 4 and sent[-1]["content"] == "newest"
        async with http.post("/v1/responses", json=dict(body, truncation="disabled")) as answer:
            assert answer.status == 200
        assert len((await upstream_log.last_body())["messages"]) == len(LONG) + 1  # disabled sends it all
