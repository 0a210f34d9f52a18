"""Strict by construction: every 2xx answer of the routes besides ``POST /v1/responses`` (whose answers and events the
schema oracle judges in every suite: tests/support/schema.py) validated with the installed openai SDK's types in
pydantic's strict mode — ``model_validate(strict=True)``, never ``construct`` — route by route, through both doors:
files, uploads and their parts, vector stores (their files, batches, search, content), conversations and their items,
containers and their files, skills and versions, stored chat completions, models, input items, compaction.

Where the SDK's own types cannot hold what OpenAI's documentation says a route answers, the SDK is not followed and
the test says why: ``ChatCompletionStoreMessage`` types ``role`` as ``"assistant"`` only, yet the stored messages
of a request are the user's and the system's too; ``CompactedResponse.output`` is typed as output items, yet its
documentation says it is "a list of all user messages, followed by a single compaction item"."""

from __future__ import annotations

import io
import zipfile
from typing import Any

import openai
import pytest
from openai.types import (
    ContainerCreateResponse,
    ContainerListResponse,
    ContainerRetrieveResponse,
    FileDeleted,
    FileObject,
    Model,
    Skill,
    Upload,
    VectorStore,
    VectorStoreDeleted,
    VectorStoreSearchResponse,
)
from openai.types.chat import ChatCompletion, ChatCompletionDeleted, ChatCompletionStoreMessage
from openai.types.containers import FileCreateResponse, FileListResponse, FileRetrieveResponse
from openai.types.conversations import (
    Conversation,
    ConversationDeletedResource,
    ConversationItem,
    ConversationItemList,
)
from openai.types.responses import CompactedResponse, ResponseItem
from openai.types.skills import SkillVersion
from openai.types.uploads import UploadPart
from openai.types.vector_stores import FileContentResponse, VectorStoreFile, VectorStoreFileBatch
from pydantic import BaseModel, TypeAdapter

pytestmark = pytest.mark.store_proven(
    "tests/integration/test_replicas_retrieval.py",
    "tests/unit/test_store_contract.py",
    "tests/integration/test_replicas_code.py",
    "tests/unit/test_uploads_service.py",
    "tests/unit/test_tenancy_files_store.py",
    "tests/unit/test_chat_completion_store.py",
    "tests/unit/test_retrieval_index.py",
    "tests/unit/test_skills_service.py",
    reason="every store/postgres line it covers on PostgreSQL is covered by the modules named (scripts/pg-coverage)",
)

MODEL = "fake-model"


def strict(model: Any, body: Any) -> Any:
    """``body`` as ``model`` in strict mode; a validation error names every field that is wrong."""
    if isinstance(model, type) and issubclass(model, BaseModel):
        return model.model_validate(body, strict=True)
    return TypeAdapter(model).validate_python(body, strict=True)


async def answer(call: Any) -> Any:
    """The JSON a ``with_raw_response`` call got (the SDK's parsing would coerce what strict mode refuses)."""
    return (await call).http_response.json()


def page(model: Any, body: dict[str, Any], kind: str = "list", paged: bool = True) -> list[Any]:
    """A list answer: its ``object``, ``has_more`` where the list pages (the models list does not), each item."""
    assert body["object"] == kind and (not paged or isinstance(body["has_more"], bool)), body
    return [strict(model, item) for item in body["data"]]


async def test_files_and_vector_stores(client: openai.AsyncOpenAI) -> None:
    raw = client.with_raw_response
    file = strict(FileObject, await answer(raw.files.create(file=("a.txt", b"hello strict world"),
                                                            purpose="assistants")))
    strict(FileObject, await answer(raw.files.retrieve(file.id)))
    page(FileObject, await answer(raw.files.list()))
    store = strict(VectorStore, await answer(raw.vector_stores.create(name="strict", file_ids=[file.id])))
    strict(VectorStore, await answer(raw.vector_stores.retrieve(store.id)))
    strict(VectorStore, await answer(raw.vector_stores.update(store.id, name="stricter")))
    page(VectorStore, await answer(raw.vector_stores.list()))
    await client.vector_stores.files.poll(file.id, vector_store_id=store.id, poll_interval_ms=50)
    page(VectorStoreFile, await answer(raw.vector_stores.files.list(store.id)))
    strict(VectorStoreFile, await answer(raw.vector_stores.files.retrieve(file.id, vector_store_id=store.id)))
    page(VectorStoreSearchResponse, await answer(raw.vector_stores.search(store.id, query="hello")),
         "vector_store.search_results.page")
    content = await answer(raw.vector_stores.files.content(file.id, vector_store_id=store.id))
    [strict(FileContentResponse, part) for part in content["data"]]
    second = await client.files.create(file=("b.txt", b"another file"), purpose="assistants")
    batch = strict(VectorStoreFileBatch, await answer(raw.vector_stores.file_batches.create(
        store.id, file_ids=[second.id])))
    strict(VectorStoreFileBatch, await answer(raw.vector_stores.file_batches.retrieve(batch.id,
                                                                                     vector_store_id=store.id)))
    strict(VectorStoreDeleted, await answer(raw.vector_stores.delete(store.id)))
    strict(FileDeleted, await answer(raw.files.delete(second.id)))


async def test_uploads_and_parts(client: openai.AsyncOpenAI) -> None:
    raw = client.with_raw_response
    made = strict(Upload, await answer(raw.uploads.create(bytes=11, filename="u.txt", mime_type="text/plain",
                                                          purpose="assistants")))
    first = strict(UploadPart, await answer(raw.uploads.parts.create(made.id, data=b"hello ")))
    second = strict(UploadPart, await answer(raw.uploads.parts.create(made.id, data=b"world")))
    done = strict(Upload, await answer(raw.uploads.complete(made.id, part_ids=[first.id, second.id])))
    assert done.status == "completed" and done.file is not None and done.file.bytes == 11
    other = strict(Upload, await answer(raw.uploads.create(bytes=1, filename="v.txt", mime_type="text/plain",
                                                           purpose="assistants")))
    assert strict(Upload, await answer(raw.uploads.cancel(other.id))).status == "cancelled"
    await client.files.delete(done.file.id)


async def test_conversations_and_items(client: openai.AsyncOpenAI) -> None:
    raw = client.with_raw_response
    conversation = strict(Conversation, await answer(raw.conversations.create(
        items=[{"type": "message", "role": "user", "content": "hi"}], metadata={"k": "v"})))
    strict(Conversation, await answer(raw.conversations.retrieve(conversation.id)))
    strict(Conversation, await answer(raw.conversations.update(conversation.id, metadata={"k": "w"})))
    added = strict(ConversationItemList, await answer(raw.conversations.items.create(
        conversation.id, items=[{"type": "message", "role": "user", "content": "more"}])))
    listed = strict(ConversationItemList, await answer(raw.conversations.items.list(conversation.id)))
    assert {item.id for item in added.data} <= {item.id for item in listed.data}
    strict(ConversationItem, await answer(raw.conversations.items.retrieve(listed.data[0].id,
                                                                          conversation_id=conversation.id)))
    strict(Conversation, await answer(raw.conversations.items.delete(listed.data[0].id,
                                                                     conversation_id=conversation.id)))
    strict(ConversationDeletedResource, await answer(raw.conversations.delete(conversation.id)))


async def test_containers_and_their_files(client: openai.AsyncOpenAI) -> None:
    raw = client.with_raw_response
    container = strict(ContainerCreateResponse, await answer(raw.containers.create(name="strict")))
    strict(ContainerRetrieveResponse, await answer(raw.containers.retrieve(container.id)))
    page(ContainerListResponse, await answer(raw.containers.list()))
    made = strict(FileCreateResponse, await answer(raw.containers.files.create(container.id,
                                                                              file=("x.csv", b"a,b\n"))))
    strict(FileRetrieveResponse, await answer(raw.containers.files.retrieve(made.id, container_id=container.id)))
    page(FileListResponse, await answer(raw.containers.files.list(container.id)))
    await client.containers.delete(container.id)


async def test_skills_and_versions(client: openai.AsyncOpenAI) -> None:
    raw = client.with_raw_response
    bundle = io.BytesIO()
    with zipfile.ZipFile(bundle, "w") as archive:
        archive.writestr("strict-skill/SKILL.md", "---\nname: strict-skill\ndescription: A strict skill.\n---\nBody")
    skill = strict(Skill, await answer(raw.skills.create(files=("s.zip", bundle.getvalue(), "application/zip"))))
    strict(Skill, await answer(raw.skills.retrieve(skill.id)))
    page(Skill, await answer(raw.skills.list()))
    page(SkillVersion, await answer(raw.skills.versions.list(skill.id)))
    strict(SkillVersion, await answer(raw.skills.versions.retrieve("1", skill_id=skill.id)))
    await client.skills.delete(skill.id)


async def test_stored_chat_completions_and_models(client: openai.AsyncOpenAI) -> None:
    raw = client.with_raw_response
    for stream in (False, True):
        created = await client.chat.completions.create(model=MODEL, store=True, stream=stream,
                                                       messages=[{"role": "system", "content": "be brief"},
                                                                 {"role": "user", "content": "hi"}])
        chunks = [chunk async for chunk in created] if stream else []  # type: ignore[union-attr]
        completion_id = chunks[0].id if stream else created.id  # type: ignore[union-attr]
        strict(ChatCompletion, await answer(raw.chat.completions.retrieve(completion_id)))
        strict(ChatCompletion, await answer(raw.chat.completions.update(completion_id, metadata={"a": "b"})))
        messages = await answer(raw.chat.completions.messages.list(completion_id))
        # the SDK types a stored message's role as "assistant" only; the request's own are the system's and user's
        assert [message["role"] for message in messages["data"]] == ["system", "user"]
        page(ChatCompletionStoreMessage, {**messages, "data": [{**message, "role": "assistant"}
                                                               for message in messages["data"]]})
        strict(ChatCompletionDeleted, await answer(raw.chat.completions.delete(completion_id)))
    page(ChatCompletion, await answer(raw.chat.completions.list()))
    page(Model, await answer(raw.models.list()), paged=False)
    strict(Model, await answer(raw.models.retrieve(MODEL)))


async def test_input_items_and_compaction(client: openai.AsyncOpenAI) -> None:
    raw = client.with_raw_response
    response = await client.responses.create(model=MODEL, input="hello")
    page(ResponseItem, await answer(raw.responses.input_items.list(response.id)))
    compacted = await answer(raw.responses.compact(model=MODEL, input=[{"role": "user", "content": "hello"},
                                                                       {"role": "assistant", "content": "hi"},
                                                                       {"role": "user", "content": "again"}]))
    users = [item for item in compacted["output"] if item.get("role") == "user"]
    assert users and all(item["type"] == "message" for item in users)
    # the SDK types ``output`` as output items, its documentation as "all user messages, followed by a single
    # compaction item": the rest is judged strictly
    strict(CompactedResponse, {**compacted, "output": [item for item in compacted["output"] if item not in users]})
    assert compacted["output"][-1]["type"] == "compaction"
