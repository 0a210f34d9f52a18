"""The Conversations API and ``conversation`` on responses, through both doors (openai SDK + raw HTTP)."""

from __future__ import annotations

import aiohttp
import openai
import pytest

from tests.support.schema import check_stream, validate_response

pytestmark = pytest.mark.store_proven(
    "tests/unit/test_store_contract.py",
    "tests/integration/test_replicas.py",
    reason="every store/postgres line it covers on PostgreSQL is covered by the modules named (scripts/pg-coverage)",
)

WEATHER_TOOL = {
    "type": "function", "name": "get_weather", "description": "Weather for a city", "strict": True,
    "parameters": {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]},
}


def texts(messages: list[dict]) -> list[tuple[str, object]]:
    return [(m["role"], m.get("content")) for m in messages]


async def all_items(client: openai.AsyncOpenAI, conversation_id: str) -> list:
    return [item async for item in client.conversations.items.list(conversation_id, order="asc", limit=100)]


async def test_conversation_crud(client: openai.AsyncOpenAI, http: aiohttp.ClientSession) -> None:
    created = await client.conversations.create(
        items=[{"type": "message", "role": "user", "content": "first"},
               {"type": "message", "role": "assistant", "content": "reply"}],
        metadata={"topic": "demo"})
    assert created.id.startswith("conv_") and created.object == "conversation"
    assert created.metadata == {"topic": "demo"}
    fetched = await client.conversations.retrieve(created.id)
    assert (fetched.id, fetched.created_at, fetched.metadata) == (created.id, created.created_at, {"topic": "demo"})
    updated = await client.conversations.update(created.id, metadata={"topic": "changed"})
    assert updated.metadata == {"topic": "changed"}

    added = await client.conversations.items.create(
        created.id, items=[{"type": "message", "role": "user", "content": "third"},
                           {"type": "function_call", "call_id": "call_1", "name": "f", "arguments": "{}"},
                           {"type": "function_call_output", "call_id": "call_1", "output": "ok"}])
    assert added.object == "list" and [i.type for i in added.data] == ["message", "function_call",
                                                                        "function_call_output"]
    items = await all_items(client, created.id)
    assert [getattr(i, "role", i.type) for i in items] == ["user", "assistant", "user", "function_call",
                                                           "function_call_output"]
    assert items[1].content[0].type == "output_text" and items[1].content[0].text == "reply"

    # pagination: newest first by default, `after` continues
    first_page = await client.conversations.items.list(created.id, limit=2)
    assert [i.id for i in first_page.data] == [items[4].id, items[3].id] and first_page.has_more
    second_page = await client.conversations.items.list(created.id, limit=2, after=first_page.last_id)
    assert [i.id for i in second_page.data] == [items[2].id, items[1].id]
    everything = [i.id async for i in client.conversations.items.list(created.id, limit=2)]
    assert everything == [i.id for i in reversed(items)]

    one = await client.conversations.items.retrieve(items[2].id, conversation_id=created.id)
    assert one.id == items[2].id and one.content[0].text == "third"
    after_delete = await client.conversations.items.delete(items[2].id, conversation_id=created.id)
    assert after_delete.id == created.id and after_delete.object == "conversation"
    with pytest.raises(openai.NotFoundError):
        await client.conversations.items.retrieve(items[2].id, conversation_id=created.id)
    assert len(await all_items(client, created.id)) == 4

    deleted = await client.conversations.delete(created.id)
    assert (deleted.id, deleted.object, deleted.deleted) == (created.id, "conversation.deleted", True)
    async with http.get(f"/v1/conversations/{created.id}") as raw:
        assert raw.status == 404
        assert set((await raw.json())["error"]) == {"message", "type", "param", "code"}
    with pytest.raises(openai.NotFoundError):
        await client.conversations.items.list(created.id)


async def test_conversation_validation(client: openai.AsyncOpenAI, http: aiohttp.ClientSession) -> None:
    for body, param in [({"items": [{"role": "user", "content": "x"}] * 21}, "items"),
                        ({"metadata": {f"k{n}": "v" for n in range(17)}}, "metadata"),
                        ({"metadata": {"k": "v" * 513}}, "metadata"),
                        ({"items": [{"type": "nonsense"}]}, "items[0].type")]:
        async with http.post("/v1/conversations", json=body) as raw:
            assert raw.status == 400, body
            assert (await raw.json())["error"]["param"] == param
    async with http.post("/v1/conversations", data=b"{not json") as raw:
        assert raw.status == 400
    empty = await client.conversations.create()
    assert empty.metadata == {}
    with pytest.raises(openai.BadRequestError):
        await client.conversations.items.create(empty.id, items=[{"role": "user", "content": "x"}] * 21)
    with pytest.raises(openai.BadRequestError):
        await client.conversations.items.list(empty.id, limit=0)
    with pytest.raises(openai.BadRequestError):
        await client.conversations.items.list(empty.id, after="msg_unknown")


async def test_responses_in_a_conversation(client: openai.AsyncOpenAI, http: aiohttp.ClientSession,
                                           upstream_log) -> None:
    conversation = await client.conversations.create(
        items=[{"type": "message", "role": "user", "content": "remember the number 7"},
               {"type": "message", "role": "assistant", "content": "Noted: 7."}])
    first = await client.responses.create(model="fake-model", input="what was it?", conversation=conversation.id,
                                          instructions="Be exact.")
    assert first.output_text == "Echo: what was it?"
    assert first.conversation.id == conversation.id
    sent = await upstream_log.last_body()
    assert texts(sent["messages"]) == [("system", "Be exact."), ("user", "remember the number 7"),
                                       ("assistant", "Noted: 7."), ("user", "what was it?")]

    # items added through the Items API reach the model, and so do earlier responses' inputs and outputs
    await client.conversations.items.create(conversation.id, items=[
        {"type": "message", "role": "developer", "content": "Answer in French."}])
    async with http.post("/v1/responses", json={"model": "fake-model", "input": "again",
                                                "conversation": {"id": conversation.id}}) as raw:
        assert raw.status == 200
        second = await raw.json()
    validate_response(second)
    assert second["conversation"] == {"id": conversation.id} and second["instructions"] is None
    sent = await upstream_log.last_body()
    assert texts(sent["messages"]) == [
        ("user", "remember the number 7"), ("assistant", "Noted: 7."), ("user", "what was it?"),
        ("assistant", "Echo: what was it?"), ("system", "Answer in French."), ("user", "again")]

    items = await all_items(client, conversation.id)
    assert items[-1].id == second["output"][0]["id"]
    assert [getattr(i, "role", None) for i in items] == ["user", "assistant", "user", "assistant", "developer",
                                                         "user", "assistant"]
    assert items[3].id == first.output[0].id

    # streamed too; the stream's response events carry the conversation
    async with http.post("/v1/responses", json={"model": "fake-model", "input": "streamed", "stream": True,
                                                "conversation": conversation.id}) as raw:
        events = check_stream(await raw.read())
    assert events[0]["response"]["conversation"] == {"id": conversation.id}
    assert events[-1]["type"] == "response.completed"
    assert len(await all_items(client, conversation.id)) == 9


async def test_tool_calls_in_a_conversation(client: openai.AsyncOpenAI, upstream_log) -> None:
    conversation = await client.conversations.create()
    first = await client.responses.create(model="fake-model", input="call get_weather Oslo",
                                          tools=[WEATHER_TOOL], conversation=conversation.id)
    call = first.output[-1]
    assert call.type == "function_call"
    second = await client.responses.create(
        model="fake-model", tools=[WEATHER_TOOL], conversation=conversation.id,
        input=[{"type": "function_call_output", "call_id": call.call_id, "output": "snow"}])
    assert second.output_text == "Tool result: snow"
    sent = await upstream_log.last_body()
    assert [m["role"] for m in sent["messages"]] == ["user", "assistant", "tool"]
    assert sent["messages"][1]["tool_calls"][0]["id"] == call.call_id
    kinds = [i.type for i in await all_items(client, conversation.id)]
    assert kinds == ["message", "function_call", "function_call_output", "message"]


async def test_failed_response_appends_nothing(client: openai.AsyncOpenAI, http: aiohttp.ClientSession) -> None:
    conversation = await client.conversations.create(items=[{"role": "user", "content": "hello"}])
    with pytest.raises(openai.APIStatusError):
        await client.responses.create(model="fake-model", input="boom [error=500]", conversation=conversation.id)
    async with http.post("/v1/responses", json={"model": "fake-model", "input": "cut [cut=1]", "stream": True,
                                                "conversation": conversation.id}) as raw:
        try:
            failed = await raw.read()
        except aiohttp.ClientPayloadError:  # Envoy may reset the client's stream when the upstream's breaks
            failed = b"response.failed"
    assert b"response.failed" in failed or b"upstream_disconnected" in failed  # (Envoy may answer it itself)
    assert len(await all_items(client, conversation.id)) == 1
    # an upstream 4xx (the request's own fault) appends nothing either
    with pytest.raises(openai.BadRequestError):
        await client.responses.create(model="fake-model", input="bad [error=400]", conversation=conversation.id)
    assert len(await all_items(client, conversation.id)) == 1


async def test_store_false_in_a_conversation(client: openai.AsyncOpenAI) -> None:
    conversation = await client.conversations.create()
    response = await client.responses.create(model="fake-model", input="unstored", store=False,
                                             conversation=conversation.id)
    with pytest.raises(openai.NotFoundError):
        await client.responses.retrieve(response.id)
    assert [i.type for i in await all_items(client, conversation.id)] == ["message", "message"]


async def test_conversation_errors(client: openai.AsyncOpenAI, http: aiohttp.ClientSession) -> None:
    first = await client.responses.create(model="fake-model", input="one")
    conversation = await client.conversations.create()
    with pytest.raises(openai.BadRequestError) as caught:
        await client.responses.create(model="fake-model", input="x", conversation=conversation.id,
                                      previous_response_id=first.id)
    assert caught.value.body["param"] == "conversation"
    with pytest.raises(openai.NotFoundError) as caught:
        await client.responses.create(model="fake-model", input="x", conversation="conv_does_not_exist")
    assert caught.value.body["param"] == "conversation"
    async with http.post("/v1/responses", json={"model": "fake-model", "input": "x", "stream": True,
                                                "conversation": "conv_does_not_exist"}) as raw:
        assert raw.status == 404
    async with http.post("/v1/responses", json={"model": "fake-model", "input": "x",
                                                "conversation": {}}) as raw:
        assert raw.status == 400 and (await raw.json())["error"]["param"] == "conversation.id"
    async with http.post("/v1/responses", json={"model": "fake-model", "input": "x",
                                                "conversation": {"name": "no id"}}) as raw:
        error = (await raw.json())["error"]
        assert raw.status == 400 and (error["param"], error["code"]) == ("conversation.name", "unknown_parameter")
    await client.conversations.delete(conversation.id)
    with pytest.raises(openai.NotFoundError):
        await client.responses.create(model="fake-model", input="x", conversation=conversation.id)
