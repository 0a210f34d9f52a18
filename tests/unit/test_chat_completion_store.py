"""Stored Chat Completions on SQLite and on PostgreSQL (tests/unit/store_kinds.py): a completion is its tenant's only
(another tenant's answers exactly as a missing one, and the same id may be stored by both), a reused id replaces the
tenant's older answer, pages follow storing order with the ``model`` and ``metadata`` filters, and retention purges
by tenant cutoff. Also the recorder that folds an answer into the stored completion (engine/chat_record.py)."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import orjson
import pytest
from openai.types.chat import ChatCompletion

from responses_bridge.engine.chat_ids import IdSwap
from responses_bridge.engine.chat_record import ChatRecorder, request_messages
from responses_bridge.store.base import ChatCompletionStore
from responses_bridge.store.postgres.chat_completions import PostgresChatCompletionStore
from responses_bridge.store.records import InvalidCursor, StoredChatCompletion
from responses_bridge.store.sqlite.chat_completions import SQLiteChatCompletionStore
from tests.unit.store_kinds import KINDS, postgres_database, sqlite_database

A, B = "tenant-a", "tenant-b"


@pytest.fixture(params=KINDS)
async def chats(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[ChatCompletionStore]:
    if request.param == "sqlite":
        async with sqlite_database(tmp_path) as db:
            yield SQLiteChatCompletionStore(db)
    else:
        async with postgres_database(request) as pg:
            yield PostgresChatCompletionStore(pg)


def record(completion_id: str, at: int, *, model: str = "m1", metadata: dict[str, str] | None = None,
           text: str = "hi") -> StoredChatCompletion:
    completion = {"id": completion_id, "object": "chat.completion", "created": at, "model": model,
                  "choices": [{"index": 0, "message": {"role": "assistant", "content": text},
                               "finish_reason": "stop"}]}
    return StoredChatCompletion(id=completion_id, created_at=at, model=model, metadata=metadata or {},
                                completion=completion,
                                messages=request_messages({"messages": [{"role": "user", "content": text}]},
                                                          completion_id))


async def test_owned_by_tenant_and_replaced_on_a_reused_id(chats: ChatCompletionStore) -> None:
    assert isinstance(chats, ChatCompletionStore)
    await chats.save_chat_completion(record("chatcmpl-1", 10, text="first"), tenant=A)
    await chats.save_chat_completion(record("chatcmpl-1", 11, text="other tenant"), tenant=B)
    assert (await chats.get_chat_completion("chatcmpl-1", tenant=A)).completion["choices"][0]["message"][  # type: ignore[union-attr]
        "content"] == "first"
    await chats.save_chat_completion(record("chatcmpl-1", 12, text="again"), tenant=A)  # the upstream reused it
    got = await chats.get_chat_completion("chatcmpl-1", tenant=A)
    assert got is not None and got.created_at == 12 and got.completion["choices"][0]["message"]["content"] == "again"
    assert (await chats.chat_completion_messages("chatcmpl-1", tenant=A)) == [
        {"role": "user", "content": "again", "content_parts": None, "id": "chatcmpl-1-0"}]
    assert len((await chats.list_chat_completions(tenant=A)).data) == 1
    assert await chats.delete_chat_completion("chatcmpl-1", tenant=A)
    assert await chats.get_chat_completion("chatcmpl-1", tenant=A) is None
    assert await chats.chat_completion_messages("chatcmpl-1", tenant=A) is None
    assert not await chats.delete_chat_completion("chatcmpl-1", tenant=A)
    assert await chats.get_chat_completion("chatcmpl-1", tenant=B) is not None  # B's own is untouched
    assert await chats.update_chat_completion("chatcmpl-1", {"k": "v"}, tenant=A) is None
    updated = await chats.update_chat_completion("chatcmpl-1", {"k": "v"}, tenant=B)
    assert updated is not None and updated.metadata == {"k": "v"}


async def test_pages_and_filters(chats: ChatCompletionStore) -> None:
    for n in range(5):
        await chats.save_chat_completion(record(f"chatcmpl-{n}", 100 + n, model="m2" if n % 2 else "m1",
                                                metadata={"n": str(n), "even": str(n % 2 == 0).lower()}), tenant=A)
    await chats.save_chat_completion(record("chatcmpl-b", 100, metadata={"even": "true"}), tenant=B)
    page = await chats.list_chat_completions(tenant=A, limit=2)
    assert [c.id for c in page.data] == ["chatcmpl-0", "chatcmpl-1"] and page.has_more
    page = await chats.list_chat_completions(tenant=A, after="chatcmpl-1", limit=2)
    assert [c.id for c in page.data] == ["chatcmpl-2", "chatcmpl-3"] and page.has_more
    page = await chats.list_chat_completions(tenant=A, order="desc", after="chatcmpl-1")
    assert [c.id for c in page.data] == ["chatcmpl-0"] and not page.has_more
    assert [c.id for c in (await chats.list_chat_completions(tenant=A, model="m2")).data] == \
        ["chatcmpl-1", "chatcmpl-3"]
    assert [c.id for c in (await chats.list_chat_completions(tenant=A, metadata=[("even", "true")])).data] == \
        ["chatcmpl-0", "chatcmpl-2", "chatcmpl-4"]
    assert [c.id for c in (await chats.list_chat_completions(
        tenant=A, metadata=[("even", "true"), ("n", "2")], model="m1")).data] == ["chatcmpl-2"]
    assert (await chats.list_chat_completions(tenant=A, metadata=[("missing", "x")])).data == []
    with pytest.raises(InvalidCursor):
        await chats.list_chat_completions(tenant=A, after="chatcmpl-b")  # another tenant's id is unknown
    assert sorted(await chats.chat_completion_tenants()) == [A, B]
    assert await chats.purge_chat_completions({A: 102, B: 50}, limit=10) == 2
    assert [c.id for c in (await chats.list_chat_completions(tenant=A)).data] == \
        ["chatcmpl-2", "chatcmpl-3", "chatcmpl-4"]
    assert await chats.get_chat_completion("chatcmpl-b", tenant=B) is not None


def sse(*chunks: dict[str, object]) -> bytes:
    return b"".join(b"data: " + orjson.dumps(chunk) + b"\n\n" for chunk in chunks) + b"data: [DONE]\n\n"


def test_a_stream_folds_into_one_completion() -> None:
    head = {"id": "chatcmpl-s", "object": "chat.completion.chunk", "created": 5, "model": "m"}
    body = sse({**head, "choices": [{"index": 0, "delta": {"role": "assistant", "content": "Hel"}}]},
               {**head, "choices": [{"index": 0, "delta": {"content": "lo"}}]},
               {**head, "choices": [{"index": 0, "delta": {"tool_calls": [
                   {"index": 0, "id": "call_1", "type": "function",
                    "function": {"name": "get", "arguments": "{\"a\""}}]}}]},
               {**head, "choices": [{"index": 0, "delta": {"tool_calls": [
                   {"index": 0, "function": {"arguments": ": 1}"}}]}, "finish_reason": "tool_calls"}]},
               {**head, "choices": [], "usage": {"prompt_tokens": 3, "completion_tokens": 4, "total_tokens": 7}})
    recorder = ChatRecorder(stream=True)
    relayed = b""
    for start in range(0, len(body), 7):  # cut anywhere, as Envoy and the network cut it
        assert not recorder.done or body[start:].strip() == b""
        relayed += recorder.relay(body[start:start + 7])
    assert recorder.done
    relayed += recorder.relay_end()
    own = recorder.completion_id
    assert own.startswith("chatcmpl-") and own != "chatcmpl-s"
    # the client's bytes are the upstream's with the bridge's id in every chunk, nothing else changed
    assert relayed == body.replace(b'"id":"chatcmpl-s"', b'"id":"' + own.encode() + b'"')
    completion = ChatCompletion.model_validate(recorder.completion(), strict=True)
    assert completion.id == own and completion.choices[0].message.content == "Hello"
    assert completion.choices[0].finish_reason == "tool_calls"
    call = completion.choices[0].message.tool_calls[0]  # type: ignore[index]
    assert call.id == "call_1" and call.function.arguments == "{\"a\": 1}"  # type: ignore[union-attr]
    assert completion.usage is not None and completion.usage.total_tokens == 7


def test_an_error_answer_is_no_completion() -> None:
    recorder = ChatRecorder(stream=False)
    recorder.feed(b'{"error": {"message": "bad", "type": "invalid_request_error", "param": null, "code": null}}')
    assert recorder.completion() is None
    streamed = ChatRecorder(stream=True)
    streamed.feed(b'data: {"error": {"message": "x"}}\n\n')
    assert streamed.completion() is None


def test_a_json_answer_gets_the_bridges_id_wherever_its_id_stands() -> None:
    """llama.cpp sorts its keys: ``choices`` (with a tool call's own ``id``) comes before the completion's ``id``;
    a content that quotes an id is escaped JSON and stays as it was."""
    body = (b'{"choices": [{"index": 0, "finish_reason": "tool_calls", "message": {"role": "assistant", '
            b'"content": "say \\"id\\": \\"7\\"", "tool_calls": [{"id": "7", "type": "function", '
            b'"function": {"name": "f", "arguments": "{}"}}]}}], "created": 1, "id": "chatcmpl-7", '
            b'"model": "m", "object": "chat.completion"}')
    recorder = ChatRecorder(stream=False)
    relayed = b"".join(recorder.relay(body[start:start + 5]) for start in range(0, len(body), 5))
    assert relayed == b""  # held whole: the id may come last
    relayed = recorder.relay_end()
    own = recorder.completion_id
    assert relayed == body.replace(b'"id": "chatcmpl-7"', b'"id": "' + own.encode() + b'"')
    assert orjson.loads(relayed)["choices"][0]["message"]["tool_calls"][0]["id"] == "7"
    stored = recorder.completion()
    assert stored is not None and stored["id"] == own


def test_two_answers_with_one_upstream_id_are_two_completions() -> None:
    """Ollama numbers its completions: the same upstream id twice must never make one stored completion."""
    ids = set()
    for _ in range(2):
        recorder = ChatRecorder(stream=False)
        recorder.relay(b'{"id": "chatcmpl-1", "object": "chat.completion", "created": 1, "model": "m", '
                       b'"choices": [{"index": 0, "message": {"role": "assistant", "content": "x"}, '
                       b'"finish_reason": "stop"}]}')
        recorder.relay_end()
        completion = recorder.completion()
        assert completion is not None
        ids.add(completion["id"])
    assert len(ids) == 2 and "chatcmpl-1" not in ids


def test_an_error_answer_passes_as_it_came() -> None:
    body = b'{"error": {"message": "bad", "type": "invalid_request_error", "param": null, "code": null}}'
    recorder = ChatRecorder(stream=False)
    assert recorder.relay(body) == b"" and recorder.relay_end() == body and recorder.completion() is None
    streamed = ChatRecorder(stream=True)
    error_event = b'data: {"error": {"message": "x"}}\n\n'
    assert streamed.relay(error_event) + streamed.relay_end() == error_event


def test_the_swap_holds_back_only_what_may_be_a_split_id() -> None:
    swap = IdSwap("chatcmpl-9", "chatcmpl-own")
    assert swap.feed(b'data: {"id":"chat') == b"data: {"  # '"id":"chat' may be the id's start: held
    assert swap.feed(b'cmpl-9","x":1}\n\n') == b'"id":"chatcmpl-own","x":1}\n\n'
    assert swap.feed(b'data: {"id": "chatcmpl-9"}\n\n') == b'data: {"id": "chatcmpl-own"}\n\n'
    assert swap.feed(b'{"id":"chatcmpl-90"}') == b'{"id":"chatcmpl-90"}'  # another id: untouched
    assert swap.feed(b'"') == b"" and swap.end() == b'"'


def test_a_stream_whose_events_name_no_id_is_not_held_back() -> None:
    """Nothing to swap and nothing to store: each event goes on as it comes, not at the stream's end."""
    recorder = ChatRecorder(stream=True)
    event = b'data: {"object": "chat.completion.chunk", "choices": [{"index": 0, "delta": {"content": "a"}}]}\n\n'
    assert recorder.relay(event) == event
    assert recorder.relay(b"data: [DONE]\n\n") == b"data: [DONE]\n\n" and recorder.relay_end() == b""
    assert recorder.completion() is None
