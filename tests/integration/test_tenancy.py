"""Two tenants on one bridge (``RESPONSES_BRIDGE_AUTH=header``, the tenant in ``x-tenant-id``), through the HTTP door:
every endpoint of responses, background runs, conversations and prompts. The other tenant must read, list,
continue, cancel, replay and delete nothing, and its "not found" must be byte for byte the answer for an id that
does not exist: each probe is made once while the object exists (as the other tenant), and again after its owner
deleted it.
"""

from __future__ import annotations

import asyncio
import json
import uuid
from collections.abc import AsyncIterator
from typing import Any

import aiohttp
import openai
import pytest
from openai.pagination import AsyncConversationCursorPage, AsyncCursorPage
from openai.types.conversations import Conversation
from openai.types.responses import Response

from tests.support.bridge import Sidecar, running_sidecar
from tests.support.sdk import async_sdk

pytestmark = pytest.mark.store_proven(
    "tests/integration/test_postgres_start.py",
    "tests/unit/test_store_contract.py",
    "tests/unit/test_background_replicas.py",
    "tests/integration/test_input_references.py",
    reason="every store/postgres line it covers on PostgreSQL is covered by the modules named (scripts/pg-coverage)",
)

MODEL = "fake-model"
ALPHA, BETA = "alpha", "beta"
Answer = tuple[int, bytes]


@pytest.fixture(scope="module")
async def tenanted(fake_upstream: str, tmp_path_factory: pytest.TempPathFactory) -> AsyncIterator[Sidecar]:
    """A sidecar whose tenant is the ``x-tenant-id`` header (RESPONSES_BRIDGE_AUTH=header), HTTP door."""
    async with running_sidecar(str(tmp_path_factory.mktemp("tenancy")), fake_upstream, extproc=False,
                               env={"RESPONSES_BRIDGE_AUTH": "header"},
                               ready_headers={"x-tenant-id": ALPHA}) as sidecar:
        yield sidecar


@pytest.fixture
async def sessions(tenanted: Sidecar) -> AsyncIterator[dict[str, aiohttp.ClientSession]]:
    timeout = aiohttp.ClientTimeout(total=60)
    async with aiohttp.ClientSession(base_url=tenanted.http_url, headers={"x-tenant-id": ALPHA},
                                     timeout=timeout) as alpha, \
            aiohttp.ClientSession(base_url=tenanted.http_url, headers={"x-tenant-id": BETA},
                                  timeout=timeout) as beta:
        yield {ALPHA: alpha, BETA: beta}


@pytest.fixture
async def clients(tenanted: Sidecar) -> AsyncIterator[dict[str, openai.AsyncOpenAI]]:
    made = {tenant: async_sdk(base_url=f"{tenanted.http_url}/v1", api_key="sk-client", max_retries=0,
                                       timeout=60, default_headers={"x-tenant-id": tenant})
            for tenant in (ALPHA, BETA)}
    try:
        yield made
    finally:
        for client in made.values():
            await client.close()


async def call(session: aiohttp.ClientSession, method: str, path: str, body: Any = None) -> Answer:
    async with session.request(method, path, json=body) as answer:
        return answer.status, await answer.read()


def ok(answer: Answer) -> Any:
    status, body = answer
    assert status == 200, body
    return json.loads(body)


def not_found(answer: Answer) -> dict:
    status, body = answer
    assert status == 404, body
    error = json.loads(body)["error"]
    assert set(error) == {"message", "type", "param", "code"}
    return error


async def probes(session: aiohttp.ClientSession, requests: list[tuple[str, str, Any]]) -> list[Answer]:
    return [await call(session, method, path, body) for method, path, body in requests]


def assert_same_as_missing(while_owned: list[Answer], after_delete: list[Answer]) -> None:
    """The other tenant's answers while the objects existed == the answers once they were gone (bytes)."""
    for owned, missing in zip(while_owned, after_delete, strict=True):
        assert owned[0] in (400, 404), owned
        assert owned == missing


async def test_requests_without_a_tenant_header_are_refused(tenanted: Sidecar) -> None:
    async with aiohttp.ClientSession(base_url=tenanted.http_url) as anonymous:
        status, body = await call(anonymous, "GET", "/v1/responses")
    assert status == 401 and json.loads(body)["error"]["code"] == "missing_tenant"


async def test_responses_are_the_owners_alone(sessions: dict[str, aiohttp.ClientSession]) -> None:
    alpha, beta = sessions[ALPHA], sessions[BETA]
    tag = uuid.uuid4().hex
    created = ok(await call(alpha, "POST", "/v1/responses", {"model": MODEL, "input": "alpha's secret",
                                                             "metadata": {"tag": tag}}))
    rid = created["id"]
    assert ok(await call(alpha, "GET", f"/v1/responses/{rid}"))["id"] == rid

    requests: list[tuple[str, str, Any]] = [
        ("GET", f"/v1/responses/{rid}", None),
        ("GET", f"/v1/responses/{rid}/input_items", None),
        ("GET", f"/v1/responses/{rid}?stream=true", None),
        ("POST", f"/v1/responses/{rid}/cancel", None),
        ("POST", "/v1/responses", {"model": MODEL, "input": "go on", "previous_response_id": rid}),
        ("POST", "/v1/responses", {"model": MODEL, "input": "go on", "previous_response_id": rid, "stream": True}),
        ("POST", "/v1/responses", {"model": MODEL, "input": "go on", "previous_response_id": rid,
                                   "background": True}),
        ("POST", "/v1/responses/input_tokens", {"model": MODEL, "input": "x", "previous_response_id": rid}),
        ("POST", "/v1/responses/compact", {"model": MODEL, "input": "x", "previous_response_id": rid}),
        ("GET", f"/v1/responses?after={rid}", None),
        ("GET", f"/v1/responses?before={rid}", None),
        ("DELETE", f"/v1/responses/{rid}", None),
    ]
    foreign = await probes(beta, requests)
    for answer in foreign[:-3]:
        if answer[0] == 404:
            assert rid in not_found(answer)["message"]
    assert not_found(foreign[4])["code"] == "previous_response_not_found"
    listed = ok(await call(beta, "GET", f"/v1/responses?metadata[tag]={tag}"))
    assert listed["data"] == [] and listed["first_id"] is None
    assert rid not in (await call(beta, "GET", "/v1/responses?limit=100"))[1].decode()

    # still alpha's, untouched (beta's DELETE deleted nothing)
    assert ok(await call(alpha, "GET", f"/v1/responses/{rid}"))["id"] == rid
    assert [r["id"] for r in ok(await call(alpha, "GET", f"/v1/responses?metadata[tag]={tag}"))["data"]] == [rid]
    follow = ok(await call(alpha, "POST", "/v1/responses", {"model": MODEL, "input": "and?",
                                                            "previous_response_id": rid}))
    assert follow["previous_response_id"] == rid

    assert ok(await call(alpha, "DELETE", f"/v1/responses/{rid}"))["deleted"] is True
    assert_same_as_missing(foreign, await probes(beta, requests))
    assert_same_as_missing(foreign, await probes(alpha, requests))  # the owner now gets the very same answers


async def test_background_runs_are_the_owners_alone(sessions: dict[str, aiohttp.ClientSession],
                                                     clients: dict[str, openai.AsyncOpenAI]) -> None:
    alpha, beta = sessions[ALPHA], sessions[BETA]
    running = await clients[ALPHA].responses.create(model=MODEL, input="slow work [chunks=40] [delay=150]",
                                                    background=True)
    rid = running.id
    requests: list[tuple[str, str, Any]] = [
        ("GET", f"/v1/responses/{rid}", None),
        ("GET", f"/v1/responses/{rid}?stream=true", None),
        ("GET", f"/v1/responses/{rid}?stream=true&starting_after=2", None),
        ("POST", f"/v1/responses/{rid}/cancel", None),
        ("DELETE", f"/v1/responses/{rid}", None),
    ]
    foreign = await probes(beta, requests)
    for answer in foreign:
        assert rid in not_found(answer)["message"]
    # the run was neither cancelled nor deleted by beta: alpha still finds it running, and cancels it
    assert ok(await call(alpha, "GET", f"/v1/responses/{rid}"))["status"] in ("queued", "in_progress")
    cancelled = ok(await call(alpha, "POST", f"/v1/responses/{rid}/cancel"))
    assert cancelled["status"] == "cancelled"
    status, replay = await call(alpha, "GET", f"/v1/responses/{rid}?stream=true")
    assert status == 200 and b"event: response.failed" in replay and b'"status":"cancelled"' in replay

    assert ok(await call(alpha, "DELETE", f"/v1/responses/{rid}"))["deleted"] is True
    assert_same_as_missing(foreign, await probes(beta, requests))


async def test_a_background_run_deleted_by_its_owner_mid_run(sessions: dict[str, aiohttp.ClientSession],
                                                           clients: dict[str, openai.AsyncOpenAI]) -> None:
    running = await clients[ALPHA].responses.create(model=MODEL, input="long [chunks=40] [delay=150]",
                                                    background=True)
    not_found(await call(sessions[BETA], "DELETE", f"/v1/responses/{running.id}"))
    assert ok(await call(sessions[ALPHA], "GET", f"/v1/responses/{running.id}"))["status"] in ("queued",
                                                                                                "in_progress")
    assert ok(await call(sessions[ALPHA], "DELETE", f"/v1/responses/{running.id}"))["deleted"] is True
    not_found(await call(sessions[ALPHA], "GET", f"/v1/responses/{running.id}"))


async def test_conversations_are_the_owners_alone(sessions: dict[str, aiohttp.ClientSession]) -> None:
    alpha, beta = sessions[ALPHA], sessions[BETA]
    conversation = ok(await call(alpha, "POST", "/v1/conversations", {
        "metadata": {"owner": "alpha"}, "items": [{"type": "message", "role": "user", "content": "alpha's note"}]}))
    cid = conversation["id"]
    item_id = ok(await call(alpha, "GET", f"/v1/conversations/{cid}/items"))["data"][0]["id"]
    turn = ok(await call(alpha, "POST", "/v1/responses", {"model": MODEL, "input": "hello", "conversation": cid}))
    assert turn["conversation"]["id"] == cid

    requests: list[tuple[str, str, Any]] = [
        ("GET", f"/v1/conversations/{cid}", None),
        ("POST", f"/v1/conversations/{cid}", {"metadata": {"owner": "beta"}}),
        ("GET", f"/v1/conversations/{cid}/items", None),
        ("POST", f"/v1/conversations/{cid}/items", {"items": [{"type": "message", "role": "user",
                                                               "content": "planted"}]}),
        ("GET", f"/v1/conversations/{cid}/items/{item_id}", None),
        ("DELETE", f"/v1/conversations/{cid}/items/{item_id}", None),
        ("POST", "/v1/responses", {"model": MODEL, "input": "join", "conversation": cid}),
        ("POST", "/v1/responses", {"model": MODEL, "input": "join", "conversation": {"id": cid}, "store": False}),
        ("GET", f"/v1/conversations?after={cid}", None),
        ("DELETE", f"/v1/conversations/{cid}", None),
    ]
    foreign = await probes(beta, requests)
    for answer in foreign[:-2]:
        assert cid in not_found(answer)["message"]
    assert all(conv["id"] != cid for conv in ok(await call(beta, "GET", "/v1/conversations?limit=100"))["data"])

    # untouched: alpha's metadata, its items (none planted, none deleted)
    assert ok(await call(alpha, "GET", f"/v1/conversations/{cid}"))["metadata"] == {"owner": "alpha"}
    items = ok(await call(alpha, "GET", f"/v1/conversations/{cid}/items?order=asc"))["data"]
    assert items[0]["id"] == item_id and len(items) == 3  # the note, the turn's input and its answer
    assert cid in [conv["id"] for conv in ok(await call(alpha, "GET", "/v1/conversations?limit=100"))["data"]]

    assert ok(await call(alpha, "DELETE", f"/v1/conversations/{cid}"))["deleted"] is True
    assert_same_as_missing(foreign, await probes(beta, requests))


async def test_prompts_are_the_owners_alone(sessions: dict[str, aiohttp.ClientSession]) -> None:
    alpha, beta = sessions[ALPHA], sessions[BETA]
    prompt = ok(await call(alpha, "POST", "/v1/prompts", {"name": "p", "instructions": "Talk about {{topic}}."}))
    pid = prompt["id"]
    requests: list[tuple[str, str, Any]] = [
        ("GET", f"/v1/prompts/{pid}", None),
        ("GET", f"/v1/prompts/{pid}?version=1", None),
        ("POST", f"/v1/prompts/{pid}", {"instructions": "hijacked"}),
        ("GET", f"/v1/prompts/{pid}/versions", None),
        ("POST", f"/v1/prompts/{pid}/default_version", {"version": "1"}),
        ("POST", "/v1/responses", {"model": MODEL, "input": "x", "prompt": {"id": pid,
                                                                            "variables": {"topic": "t"}}}),
        ("GET", f"/v1/prompts?after={pid}", None),
        ("DELETE", f"/v1/prompts/{pid}", None),
    ]
    foreign = await probes(beta, requests)
    for answer in foreign[:-2]:
        assert pid in not_found(answer)["message"]
    assert all(p["id"] != pid for p in ok(await call(beta, "GET", "/v1/prompts?limit=100"))["data"])

    own = ok(await call(alpha, "GET", f"/v1/prompts/{pid}"))
    assert own["instructions"] == "Talk about {{topic}}." and own["version"] == "1"
    used = ok(await call(alpha, "POST", "/v1/responses", {"model": MODEL, "input": "x",
                                                          "prompt": {"id": pid, "variables": {"topic": "t"}}}))
    assert used["instructions"] == "Talk about t."

    assert ok(await call(alpha, "DELETE", f"/v1/prompts/{pid}"))["deleted"] is True
    assert_same_as_missing(foreign, await probes(beta, requests))


async def test_websocket_mode_continues_only_the_upgrade_requests_tenant(
        sessions: dict[str, aiohttp.ClientSession]) -> None:
    created = ok(await call(sessions[ALPHA], "POST", "/v1/responses", {"model": MODEL, "input": "remember 7"}))

    async def turn(session: aiohttp.ClientSession) -> dict:
        async with session.ws_connect("/v1/responses") as ws:
            await ws.send_str(json.dumps({"type": "response.create", "model": MODEL, "input": "what number?",
                                          "previous_response_id": created["id"]}))
            while True:
                event = json.loads((await ws.receive(timeout=30)).data)
                if event["type"] in ("response.completed", "response.failed", "error"):
                    return event

    refused = await turn(sessions[BETA])
    assert refused["type"] == "error" and refused["error"]["code"] == "previous_response_not_found"
    continued = await turn(sessions[ALPHA])
    assert continued["type"] == "response.completed"
    assert continued["response"]["previous_response_id"] == created["id"]
    # the turn alpha stored over the socket is alpha's too
    not_found(await call(sessions[BETA], "GET", f"/v1/responses/{continued['response']['id']}"))
    assert ok(await call(sessions[ALPHA], "GET", f"/v1/responses/{continued['response']['id']}"))


async def test_lists_hold_only_the_callers_objects(clients: dict[str, openai.AsyncOpenAI]) -> None:
    """Walked with the SDK's own cursor pages (small pages, so the cursors are used)."""
    tag = uuid.uuid4().hex
    mine = {tenant: [await clients[tenant].responses.create(model=MODEL, input=f"{tenant} {n}",
                                                             metadata={"tag": tag}) for n in range(3)]
            for tenant in (ALPHA, BETA)}
    conversations = {tenant: [await clients[tenant].conversations.create() for _ in range(3)]
                     for tenant in (ALPHA, BETA)}
    for tenant, other in ((ALPHA, BETA), (BETA, ALPHA)):
        client = clients[tenant]
        tagged = client.get_api_list("/responses", model=Response, page=AsyncCursorPage[Response],
                                     options={"params": {"metadata[tag]": tag, "limit": 2}})
        assert sorted([r.id async for r in tagged]) == sorted(r.id for r in mine[tenant])
        every = client.get_api_list("/responses", model=Response, page=AsyncCursorPage[Response],
                                    options={"params": {"limit": 2}})
        listed = {r.id async for r in every}
        assert {r.id for r in mine[tenant]} <= listed and not listed & {r.id for r in mine[other]}
        pages = client.get_api_list("/conversations", model=Conversation,
                                    page=AsyncConversationCursorPage[Conversation], options={"params": {"limit": 2}})
        listed = {c.id async for c in pages}
        assert {c.id for c in conversations[tenant]} <= listed and not listed & {c.id for c in conversations[other]}
    await asyncio.gather(*(clients[t].conversations.delete(c.id) for t in conversations for c in conversations[t]))
