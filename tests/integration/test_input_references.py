"""What a client sends by reference is served, through both doors, JSON and stream, validated strictly:

* a ``function_call_output`` without ``call_id`` answers the open call of its name (the SDK made ``call_id``
  optional in 3.5); its ``name`` / ``namespace`` / ``status`` are kept and listed, as is ``async`` on a call;
* ``item_reference`` items (typed, and the untyped ``{"id": …}``) become the stored items they name; an unknown
  id is a 404 naming the reference;
* ``personality`` on an input token count is taken, and checked as OpenAI checks it."""

from __future__ import annotations

from typing import Any

import aiohttp
import openai
import orjson
import pytest
from openai.types.responses import InputTokenCountResponse, ResponseItem
from pydantic import TypeAdapter

from tests.support.bridge import UpstreamLog
from tests.support.schema import check_stream, validate_response

ITEMS = TypeAdapter(list[ResponseItem])
WEATHER = {"type": "function", "name": "get_weather", "strict": True,
           "parameters": {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]}}
TIME = {**WEATHER, "name": "get_time"}


async def create(http: aiohttp.ClientSession, body: dict[str, Any], *, stream: bool) -> dict[str, Any]:
    async with http.post("/v1/responses", json={"model": "fake-model", **body, "stream": stream}) as answer:
        raw = await answer.read()
        assert answer.status == 200, raw
    if stream:
        response: dict[str, Any] = check_stream(raw)[-1]["response"]
    else:
        response = orjson.loads(raw)
        validate_response(response)
    assert response["status"] == "completed"
    return response


async def listed_input(http: aiohttp.ClientSession, response_id: str) -> list[dict[str, Any]]:
    async with http.get(f"/v1/responses/{response_id}/input_items?order=asc") as answer:
        page = await answer.json()
    ITEMS.validate_python(page["data"], strict=True)
    return list(page["data"])


@pytest.mark.parametrize("stream", [False, True], ids=["json", "stream"])
async def test_outputs_without_call_id_answer_the_open_call_of_their_name(
        http: aiohttp.ClientSession, upstream_log: UpstreamLog, stream: bool) -> None:
    first = await create(http, {"input": "call get_weather Oslo and call get_time Oslo",
                                "tools": [WEATHER, TIME]}, stream=stream)
    calls = {item["name"]: item["call_id"] for item in first["output"] if item["type"] == "function_call"}
    assert set(calls) == {"get_weather", "get_time"}
    second = await create(http, {"previous_response_id": first["id"], "tools": [WEATHER, TIME], "input": [
        {"type": "function_call_output", "name": "get_time", "output": "noon", "status": "incomplete"},
        {"type": "function_call_output", "output": "sunny"}]}, stream=stream)
    messages = (await upstream_log.last_body())["messages"]
    assert [(m["tool_call_id"], m["content"]) for m in messages if m["role"] == "tool"] == [
        (calls["get_time"], "noon"), (calls["get_weather"], "sunny")]
    listed = await listed_input(http, second["id"])
    assert [(item["call_id"], item.get("name"), item["status"]) for item in listed] == [
        (calls["get_time"], "get_time", "incomplete"), (calls["get_weather"], None, "completed")]


async def test_an_output_without_call_id_and_no_open_call_is_a_400(http: aiohttp.ClientSession,
                                                                   upstream_log: UpstreamLog) -> None:
    async with http.post("/v1/responses", json={"model": "fake-model", "input": [
            {"role": "user", "content": "hi"}, {"type": "function_call_output", "output": "x"}]}) as answer:
        assert answer.status == 400
        error = (await answer.json())["error"]
    assert (error["param"], error["code"]) == ("input[1].call_id", "missing_required_parameter")
    assert await upstream_log.entries() == []


@pytest.mark.parametrize("stream", [False, True], ids=["json", "stream"])
async def test_call_fields_are_kept_and_listed(http: aiohttp.ClientSession, stream: bool) -> None:
    call = {"type": "function_call", "call_id": "call_a", "name": "lookup", "namespace": "crm", "arguments": "{}",
            "async": True}
    output = {"type": "function_call_output", "call_id": "call_a", "name": "lookup", "namespace": "crm",
              "output": "found"}
    response = await create(http, {"input": [{"role": "user", "content": "hi"}, call, output]}, stream=stream)
    listed = await listed_input(http, response["id"])
    assert listed[1]["async"] is True and listed[1]["namespace"] == "crm"
    assert (listed[2]["name"], listed[2]["namespace"]) == ("lookup", "crm")


@pytest.mark.parametrize("stream", [False, True], ids=["json", "stream"])
async def test_item_references_become_the_items_they_name(http: aiohttp.ClientSession, upstream_log: UpstreamLog,
                                                          stream: bool) -> None:
    first = await create(http, {"input": "Remember the word lighthouse."}, stream=stream)
    [asked] = await listed_input(http, first["id"])
    answer = first["output"][-1]
    second = await create(http, {"previous_response_id": first["id"], "input": [
        {"type": "item_reference", "id": asked["id"]}, {"id": answer["id"]}]}, stream=stream)
    sent = (await upstream_log.last_body())["messages"][-2:]
    assert sent[0] == {"role": "user", "content": "Remember the word lighthouse."}
    assert sent[1]["role"] == "assistant" and sent[1]["content"] == answer["content"][0]["text"]
    listed = await listed_input(http, second["id"])
    assert [(item["type"], item["id"]) for item in listed] == [("message", asked["id"]), ("message", answer["id"])]


async def test_an_unknown_item_reference_is_a_404_naming_it(http: aiohttp.ClientSession,
                                                            upstream_log: UpstreamLog) -> None:
    async with http.post("/v1/responses", json={"model": "fake-model", "input": [
            {"role": "user", "content": "hi"}, {"type": "item_reference", "id": "msg_nowhere"}]}) as answer:
        assert answer.status == 404
        error = (await answer.json())["error"]
    assert (error["param"], error["code"]) == ("input[1].id", "item_not_found")
    assert await upstream_log.entries() == []


async def test_input_token_counts_take_a_personality(client: openai.AsyncOpenAI,
                                                     http: aiohttp.ClientSession) -> None:
    plain = await client.responses.input_tokens.count(model="fake-model", input="hello world")
    styled = await client.responses.input_tokens.count(model="fake-model", input="hello world",
                                                       personality="pragmatic")
    assert styled.input_tokens == plain.input_tokens  # no upstream has model-owned presets: the input's own count
    async with http.post("/v1/responses/input_tokens", json={"input": "hi", "personality": "x" * 64}) as answer:
        InputTokenCountResponse.model_validate(await answer.json(), strict=True)
    for wrong, code in (("x" * 65, "invalid_value"), (7, "invalid_type")):
        async with http.post("/v1/responses/input_tokens", json={"input": "hi", "personality": wrong}) as answer:
            assert answer.status == 400
            error = (await answer.json())["error"]
        assert (error["param"], error["code"]) == ("personality", code)


async def test_conversation_items_take_references_and_outputs_without_call_id(http: aiohttp.ClientSession) -> None:
    call = {"type": "function_call", "call_id": "call_c", "name": "lookup", "arguments": "{}"}
    async with http.post("/v1/conversations", json={"items": [
            {"type": "message", "role": "user", "content": "hi"}, call]}) as answer:
        conversation = await answer.json()
    async with http.get(f"/v1/conversations/{conversation['id']}/items?order=asc") as answer:
        first = (await answer.json())["data"][0]
    async with http.post(f"/v1/conversations/{conversation['id']}/items", json={"items": [
            {"type": "function_call_output", "output": "found", "name": "lookup"}, {"id": first["id"]}]}) as answer:
        assert answer.status == 200, await answer.text()
        added = (await answer.json())["data"]
    ITEMS.validate_python(added, strict=True)
    assert added[0]["call_id"] == "call_c" and added[0]["name"] == "lookup"
    assert (added[1]["type"], added[1]["id"], added[1]["content"]) == ("message", first["id"], first["content"])
    async with http.post(f"/v1/conversations/{conversation['id']}/items", json={"items": [
            {"type": "item_reference", "id": "msg_elsewhere"}]}) as answer:
        assert answer.status == 404
        assert (await answer.json())["error"]["param"] == "items[0].id"
