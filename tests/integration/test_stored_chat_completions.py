"""Stored Chat Completions (``store: true`` on ``POST /v1/chat/completions``) through the real ``openai`` SDK on both
doors: created as JSON and as a stream with metadata, listed by metadata and model, retrieved, updated, their
messages listed, deleted (then 404); a request without ``store`` is not stored; a tenant never sees another's."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator

import aiohttp
import openai
import pytest
from openai.types.chat import ChatCompletion, ChatCompletionDeleted
from openai.types.chat.chat_completion_store_message import ChatCompletionStoreMessage

from responses_bridge.envoy_config import render_bootstrap
from tests.support.bridge import Sidecar, running_sidecar
from tests.support.envoy import free_port, have_envoy, start_envoy
from tests.support.sdk import async_sdk

pytestmark = pytest.mark.store_proven(
    "tests/integration/test_postgres_start.py",
    "tests/unit/test_chat_completion_store.py",
    "tests/integration/test_replicas.py",
    "tests/integration/test_input_references.py",
    reason="every store/postgres line it covers on PostgreSQL is covered by the modules named (scripts/pg-coverage)",
)

MODEL = "fake-model"


async def test_stored_chat_completion_lifecycle(client: openai.AsyncOpenAI, door: str) -> None:
    run = uuid.uuid4().hex  # this run's metadata value: the session's sidecar is shared by other tests
    created = await client.chat.completions.create(
        model=MODEL, store=True, metadata={"run": run, "kind": "json"},
        messages=[{"role": "system", "content": "be brief"},
                  {"role": "user", "content": [{"type": "text", "text": "hello "}, {"type": "text", "text": "there"}]}])
    streamed_text: list[str] = []
    stream_id = None
    async with await client.chat.completions.create(
            model=MODEL, store=True, stream=True, metadata={"run": run, "kind": "stream"},
            stream_options={"include_usage": True},
            messages=[{"role": "user", "content": "stream please"}]) as stream:
        async for chunk in stream:
            stream_id = chunk.id
            streamed_text += [choice.delta.content or "" for choice in chunk.choices]
    assert stream_id is not None and stream_id != created.id

    retrieved = await client.chat.completions.retrieve(created.id)
    assert isinstance(retrieved, ChatCompletion)
    assert retrieved.id == created.id and retrieved.choices[0].message.content == created.choices[0].message.content
    assert retrieved.to_dict()["metadata"] == {"run": run, "kind": "json"}
    from_stream = await client.chat.completions.retrieve(stream_id)
    assert from_stream.choices[0].message.content == "".join(streamed_text)
    assert from_stream.choices[0].finish_reason is not None
    # one stored shape for a JSON answer and a streamed one, with every field OpenAI requires (nullable as null)
    shapes = []
    for completion_id in (created.id, stream_id):
        raw = (await client.chat.completions.with_raw_response.retrieve(completion_id)).http_response.json()
        ChatCompletion.model_validate(raw, strict=True)
        choice = raw["choices"][0]
        assert "refusal" in choice["message"] and "logprobs" in choice, raw
        shapes.append((sorted(raw), sorted(choice), sorted(choice["message"])))
    assert shapes[0] == shapes[1]

    listed = [c.id async for c in client.chat.completions.list(metadata={"run": run})]
    assert listed == [created.id, stream_id]  # ascending by default
    assert [c.id async for c in client.chat.completions.list(metadata={"run": run}, order="desc")] == \
        [stream_id, created.id]
    assert [c.id async for c in client.chat.completions.list(metadata={"run": run, "kind": "stream"})] == [stream_id]
    assert [c.id async for c in client.chat.completions.list(metadata={"run": run}, model="no-such-model")] == []
    by_model = [c.id async for c in client.chat.completions.list(metadata={"run": run}, model=retrieved.model)]
    assert by_model == [created.id, stream_id]
    first_page = await client.chat.completions.list(metadata={"run": run}, limit=1)
    assert [c.id for c in first_page.data] == [created.id] and first_page.has_more

    updated = await client.chat.completions.update(created.id, metadata={"run": run, "kind": "changed"})
    assert updated.to_dict()["metadata"]["kind"] == "changed"
    assert [c.id async for c in client.chat.completions.list(metadata={"kind": "changed", "run": run})] == \
        [created.id]

    messages = await client.chat.completions.messages.list(created.id)
    assert all(isinstance(message, ChatCompletionStoreMessage) for message in messages.data)
    assert [m.id for m in messages.data] == [f"{created.id}-0", f"{created.id}-1"]
    assert messages.data[0].content == "be brief" and messages.data[1].content == "hello there"
    assert messages.data[1].content_parts is not None and len(messages.data[1].content_parts) == 2
    after = await client.chat.completions.messages.list(created.id, after=f"{created.id}-0")
    assert [m.id for m in after.data] == [f"{created.id}-1"] and not after.has_more
    newest = await client.chat.completions.messages.list(created.id, order="desc", limit=1)
    assert [m.id for m in newest.data] == [f"{created.id}-1"] and newest.has_more

    deleted = await client.chat.completions.delete(created.id)
    assert isinstance(deleted, ChatCompletionDeleted) and deleted.deleted and deleted.id == created.id
    for call in (client.chat.completions.retrieve(created.id), client.chat.completions.delete(created.id),
                 client.chat.completions.messages.list(created.id)):
        with pytest.raises(openai.NotFoundError) as caught:
            await call
        assert caught.value.body["code"] == "not_found"  # type: ignore[index]
    assert [c.id async for c in client.chat.completions.list(metadata={"run": run})] == [stream_id]


async def test_unstored_chat_completion_is_not_kept(client: openai.AsyncOpenAI) -> None:
    run = uuid.uuid4().hex
    plain = await client.chat.completions.create(model=MODEL, metadata={"run": run},
                                                 messages=[{"role": "user", "content": "hi"}])
    refused = await client.chat.completions.create(model=MODEL, store=False, metadata={"run": run},
                                                   messages=[{"role": "user", "content": "hi"}])
    for completion_id in (plain.id, refused.id):
        with pytest.raises(openai.NotFoundError):
            await client.chat.completions.retrieve(completion_id)
    assert [c.id async for c in client.chat.completions.list(metadata={"run": run})] == []


async def test_bad_arguments_are_openai_errors(client: openai.AsyncOpenAI, http: aiohttp.ClientSession) -> None:
    with pytest.raises(openai.BadRequestError) as caught:
        await client.chat.completions.create(model=MODEL, store=True, metadata={"k": "v" * 600},
                                             messages=[{"role": "user", "content": "hi"}])
    assert caught.value.body["param"] == "metadata"  # type: ignore[index]
    for path in ("/v1/chat/completions?limit=0", "/v1/chat/completions?order=up",
                 "/v1/chat/completions?after=chatcmpl-nope", "/v1/chat/completions?limit=x"):
        async with http.get(path) as answer:
            assert answer.status == 400, path
            assert set((await answer.json())["error"]) == {"message", "type", "param", "code"}
    async with http.post("/v1/chat/completions/chatcmpl-nope", json={"metadata": {"a": "b"}}) as answer:
        assert answer.status == 404
    async with http.post("/v1/chat/completions/chatcmpl-nope", json={}) as answer:
        assert answer.status == 400 and (await answer.json())["error"]["param"] == "metadata"


@pytest.mark.parametrize("store", [False, True])
@pytest.mark.parametrize("stream", [False, True])
async def test_an_upstreams_plain_text_error_is_an_openai_error(http: aiohttp.ClientSession, stream: bool,
                                                                store: bool) -> None:
    """A backend (or a proxy before it) answering a plain-text 500: the client gets OpenAI's error object, a 502
    as on every other route; an upstream's own OpenAI-shaped error passes on as it is."""
    body = {"model": MODEL, "stream": stream, "store": store,
            "messages": [{"role": "user", "content": "[plain_error=500] hi"}]}
    async with http.post("/v1/chat/completions", json=body) as answer:
        assert answer.status == 502 and answer.content_type == "application/json"
        error = (await answer.json())["error"]
        assert set(error) == {"message", "type", "param", "code"} and error["type"] == "server_error"
        assert "HTTP 500" in error["message"]
    body["messages"] = [{"role": "user", "content": "[error=429] hi"}]
    async with http.post("/v1/chat/completions", json=body) as answer:
        assert answer.status == 429
        assert (await answer.json())["error"]["code"] == "rate_limit_exceeded"


ALPHA, BETA = "alpha", "beta"


@pytest.fixture(scope="module")
async def tenanted(fake_upstream: str, tmp_path_factory: pytest.TempPathFactory) -> AsyncIterator[Sidecar]:
    """A sidecar whose tenant is the ``x-tenant-id`` header (RESPONSES_BRIDGE_AUTH=header), HTTP door."""
    async with running_sidecar(str(tmp_path_factory.mktemp("chat-tenancy")), fake_upstream, extproc=False,
                               env={"RESPONSES_BRIDGE_AUTH": "header"},
                               ready_headers={"x-tenant-id": ALPHA}) as sidecar:
        yield sidecar


async def test_a_tenant_sees_only_its_own(tenanted: Sidecar) -> None:
    clients = {tenant: async_sdk(base_url=f"{tenanted.http_url}/v1", api_key="sk-client", max_retries=0,
                                          timeout=60, default_headers={"x-tenant-id": tenant})
               for tenant in (ALPHA, BETA)}
    try:
        alpha, beta = clients[ALPHA], clients[BETA]
        mine = await alpha.chat.completions.create(model=MODEL, store=True, metadata={"owner": ALPHA},
                                                   messages=[{"role": "user", "content": "secret"}])
        assert (await alpha.chat.completions.retrieve(mine.id)).id == mine.id
        for call in (beta.chat.completions.retrieve(mine.id), beta.chat.completions.delete(mine.id),
                     beta.chat.completions.update(mine.id, metadata={"owner": BETA}),
                     beta.chat.completions.messages.list(mine.id)):
            with pytest.raises(openai.NotFoundError):
                await call
        assert [c.id async for c in beta.chat.completions.list()] == []
        with pytest.raises(openai.BadRequestError):  # another tenant's id is an unknown cursor
            await beta.chat.completions.list(after=mine.id)
        assert [c.id async for c in alpha.chat.completions.list(metadata={"owner": ALPHA})] == [mine.id]
    finally:
        for client in clients.values():
            await client.close()


@pytest.fixture(scope="module")
async def unstored(fake_upstream: str, tmp_path_factory: pytest.TempPathFactory) -> AsyncIterator[tuple[str, str]]:
    """A sidecar with ``RESPONSES_BRIDGE_STORE_CHAT_COMPLETIONS=false`` behind a real Envoy rendered to match:
    (Envoy's URL, the HTTP door's URL)."""
    if not have_envoy():
        pytest.skip("envoy binary not available")
    async with running_sidecar(str(tmp_path_factory.mktemp("chat-unstored")), fake_upstream,
                               env={"RESPONSES_BRIDGE_STORE_CHAT_COMPLETIONS": "false"}) as sidecar:
        listen_port = free_port()
        envoy = await start_envoy(render_bootstrap(
            listen_port=listen_port, extproc_port=sidecar.extproc_port, http_port=int(sidecar.http_url.rsplit(":")[-1]),
            upstream=fake_upstream, admin_port=0, chat_store=False))
        try:
            yield f"http://127.0.0.1:{listen_port}", sidecar.http_url
        finally:
            envoy.stop()


async def test_a_deployment_without_stored_chats_passes_store_on_and_keeps_nothing(
        unstored: tuple[str, str]) -> None:
    """``store_chat_completions: false``: ``store: true`` is answered as any chat request, on both doors (through
    Envoy the chat route never reaches the processor), and nothing is kept to read back."""
    for url in unstored:
        async with async_sdk(base_url=f"{url}/v1", api_key="sk-client", max_retries=0, timeout=60) as client:
            created = await client.chat.completions.create(model=MODEL, store=True, metadata={"k": "v"},
                                                           messages=[{"role": "user", "content": "hi"}])
            assert created.choices[0].message.content
            with pytest.raises(openai.NotFoundError):
                await client.chat.completions.retrieve(created.id)
            assert [c.id async for c in client.chat.completions.list()] == []
