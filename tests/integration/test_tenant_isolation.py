"""Two tenants on one bridge, through both doors: neither can see, continue, cancel, replay or delete the other's
objects, and "not yours" is answered byte for byte like "does not exist".

The bridge runs with ``RESPONSES_BRIDGE_AUTH=keys``; the two keys are made with the ``keys create`` command, as an
operator does. Tenant A creates one object of every kind (a response, a background response, a conversation with
an item, a prompt, a file, a vector store with a file batch); tenant B then tries every route on each of A's ids,
and the same route on an id that was never issued: both answers must be the same (status and body, with the id
swapped). B's lists hold none of A's ids, and afterwards every one of A's objects is still whole.
"""

from __future__ import annotations

import asyncio
import os
import re
import secrets
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any

import aiohttp
import orjson
import pytest

from responses_bridge.demo.procs import free_port
from responses_bridge.envoy_config import Auth, render_bootstrap
from tests.support.bridge import Sidecar, keys_command, running_sidecar
from tests.support.envoy import start_envoy

pytestmark = pytest.mark.store_proven(
    "tests/integration/test_replicas_retrieval.py",
    "tests/unit/test_store_contract.py",
    "tests/unit/test_tenancy_files_store.py",
    "tests/integration/test_agents_automations_replicas.py",
    "tests/integration/test_input_references.py",
    reason="every store/postgres line it covers on PostgreSQL is covered by the modules named (scripts/pg-coverage)",
)

MODEL = "fake-model"


def create_key(db: str, tenant: str) -> str:
    """``responses-bridge keys create``: the new key alone on stdout."""
    done = keys_command(db, "create", "--tenant", tenant)
    assert done.returncode == 0, done.stderr
    key = done.stdout.strip()
    assert key and "\n" not in key and " " not in key, done.stdout
    return key


@dataclass
class Gateway:
    sidecar: Sidecar
    envoy_url: str
    keys: dict[str, str]


@pytest.fixture(scope="module")
async def gateway(fake_upstream: str, tmp_path_factory: pytest.TempPathFactory) -> AsyncIterator[Gateway]:
    directory = str(tmp_path_factory.mktemp("tenants"))
    db = os.path.join(directory, "tenants.db")
    keys = {tenant: create_key(db, tenant) for tenant in ("alpha", "beta")}
    listen_port = free_port()
    env = {**os.environ, "RESPONSES_BRIDGE_AUTH": "keys"}
    async with running_sidecar(directory, fake_upstream, "--db", db, "--upstream-via",
                               f"http://127.0.0.1:{listen_port}/v1", env=env) as sidecar:
        envoy = await start_envoy(render_bootstrap(
            listen_port=listen_port, extproc_port=sidecar.extproc_port,
            http_port=int(sidecar.http_url.rsplit(":", 1)[1]), upstream=fake_upstream, admin_port=0,
            auth=Auth(mode="keys")))
        try:
            yield Gateway(sidecar, f"http://127.0.0.1:{listen_port}", keys)
        finally:
            envoy.stop()


@pytest.fixture(params=["http", "envoy"])
def door_url(request: pytest.FixtureRequest, gateway: Gateway) -> str:
    return gateway.sidecar.http_url if request.param == "http" else gateway.envoy_url


class Caller:
    """One tenant's raw HTTP client: exact statuses and bytes."""

    def __init__(self, session: aiohttp.ClientSession, key: str) -> None:
        self.session = session
        self.headers = {"authorization": f"Bearer {key}"}

    async def call(self, method: str, path: str, body: Any = None, *, form: aiohttp.FormData | None = None
                   ) -> tuple[int, bytes]:
        async with self.session.request(method, path, json=body if form is None else None, data=form,
                                        headers=self.headers) as response:
            return response.status, await response.read()

    async def ok(self, method: str, path: str, body: Any = None, *, form: aiohttp.FormData | None = None
                 ) -> dict[str, Any]:
        status, raw = await self.call(method, path, body, form=form)
        assert status == 200, (method, path, status, raw[:500])
        parsed: dict[str, Any] = orjson.loads(raw)
        return parsed


@pytest.fixture
async def callers(door_url: str, gateway: Gateway) -> AsyncIterator[tuple[Caller, Caller]]:
    timeout = aiohttp.ClientTimeout(total=120)
    async with aiohttp.ClientSession(base_url=door_url, timeout=timeout) as session:
        yield Caller(session, gateway.keys["alpha"]), Caller(session, gateway.keys["beta"])


@dataclass
class Owned:
    """One of every kind of object, all tenant A's."""

    response: str
    background: str
    conversation: str
    conversation_item: str
    prompt: str
    file: str
    vector_store: str
    batch: str


async def create_everything(a: Caller) -> Owned:
    response = await a.ok("POST", "/v1/responses", {"model": MODEL, "input": "alpha's secret plan",
                                                     "metadata": {"owner": "alpha"}})
    background = await a.ok("POST", "/v1/responses", {"model": MODEL, "input": "alpha in the background",
                                                       "background": True})
    for _ in range(600):
        if (await a.ok("GET", f"/v1/responses/{background['id']}"))["status"] not in ("queued", "in_progress"):
            break
        await asyncio.sleep(0.05)
    conversation = await a.ok("POST", "/v1/conversations", {
        "items": [{"type": "message", "role": "user", "content": "alpha's first words"}]})
    items = await a.ok("GET", f"/v1/conversations/{conversation['id']}/items")
    prompt = await a.ok("POST", "/v1/prompts", {"name": "alpha", "instructions": "Be alpha about {{topic}}."})
    form = aiohttp.FormData()
    form.add_field("purpose", "assistants")
    form.add_field("file", b"alpha keeps the pump primed with cold water.\n", filename="alpha.txt",
                   content_type="text/plain")
    uploaded = await a.ok("POST", "/v1/files", form=form)
    store = await a.ok("POST", "/v1/vector_stores", {"name": "alpha store", "file_ids": [uploaded["id"]]})
    batch = await a.ok("POST", f"/v1/vector_stores/{store['id']}/file_batches", {"file_ids": [uploaded["id"]]})
    for _ in range(600):
        if (await a.ok("GET", f"/v1/vector_stores/{store['id']}"))["file_counts"]["in_progress"] == 0:
            break
        await asyncio.sleep(0.05)
    return Owned(response["id"], background["id"], conversation["id"], items["data"][0]["id"], prompt["id"],
                 uploaded["id"], store["id"], batch["id"])


def never_issued(identifier: str) -> str:
    """An id of the same kind and length that no object has."""
    prefix, _, rest = identifier.partition("_")
    return f"{prefix}_{secrets.token_hex(len(rest))[:len(rest)]}"


def probes(o: Owned, own_store: str) -> list[tuple[str, str, Any]]:
    """Every route of B that names one of A's objects: (method, path, body); ``{x}`` marks A's ids in them."""
    return [
        ("GET", f"/v1/responses/{o.response}", None),
        ("GET", f"/v1/responses/{o.response}?stream=true", None),
        ("GET", f"/v1/responses/{o.background}?stream=true&starting_after=0", None),
        ("GET", f"/v1/responses/{o.response}/input_items", None),
        ("POST", f"/v1/responses/{o.background}/cancel", None),
        ("POST", "/v1/responses", {"model": MODEL, "input": "go on", "previous_response_id": o.response}),
        ("POST", "/v1/responses", {"model": MODEL, "input": "go on", "previous_response_id": o.response,
                                   "stream": True}),
        ("POST", "/v1/responses", {"model": MODEL, "input": "join", "conversation": o.conversation}),
        ("POST", "/v1/responses", {"model": MODEL, "input": "use", "prompt": {"id": o.prompt}}),
        ("POST", "/v1/responses/input_tokens", {"model": MODEL, "input": "count",
                                                "previous_response_id": o.response}),
        ("POST", "/v1/responses/compact", {"model": MODEL, "input": "x", "previous_response_id": o.response}),
        ("GET", f"/v1/conversations/{o.conversation}", None),
        ("POST", f"/v1/conversations/{o.conversation}", {"metadata": {"owner": "beta"}}),
        ("GET", f"/v1/conversations/{o.conversation}/items", None),
        ("POST", f"/v1/conversations/{o.conversation}/items",
         {"items": [{"type": "message", "role": "user", "content": "beta was here"}]}),
        ("GET", f"/v1/conversations/{o.conversation}/items/{o.conversation_item}", None),
        ("DELETE", f"/v1/conversations/{o.conversation}/items/{o.conversation_item}", None),
        ("GET", f"/v1/prompts/{o.prompt}", None),
        ("POST", f"/v1/prompts/{o.prompt}", {"instructions": "beta's now"}),
        ("GET", f"/v1/prompts/{o.prompt}/versions", None),
        ("POST", f"/v1/prompts/{o.prompt}/default_version", {"version": 1}),
        ("GET", f"/v1/files/{o.file}", None),
        ("GET", f"/v1/files/{o.file}/content", None),
        ("GET", f"/v1/vector_stores/{o.vector_store}", None),
        ("POST", f"/v1/vector_stores/{o.vector_store}", {"name": "beta's now"}),
        ("POST", f"/v1/vector_stores/{o.vector_store}/search", {"query": "pump"}),
        ("GET", f"/v1/vector_stores/{o.vector_store}/files", None),
        ("GET", f"/v1/vector_stores/{o.vector_store}/files/{o.file}", None),
        ("POST", f"/v1/vector_stores/{o.vector_store}/files/{o.file}", {"attributes": {"k": "v"}}),
        ("GET", f"/v1/vector_stores/{o.vector_store}/files/{o.file}/content", None),
        ("POST", f"/v1/vector_stores/{o.vector_store}/files", {"file_id": o.file}),
        ("POST", f"/v1/vector_stores/{own_store}/files", {"file_id": o.file}),
        ("POST", f"/v1/vector_stores/{own_store}/file_batches", {"file_ids": [o.file]}),
        ("GET", f"/v1/vector_stores/{o.vector_store}/file_batches/{o.batch}", None),
        ("GET", f"/v1/vector_stores/{o.vector_store}/file_batches/{o.batch}/files", None),
        ("POST", f"/v1/vector_stores/{o.vector_store}/file_batches/{o.batch}/cancel", None),
        # deletions last: none may succeed
        ("DELETE", f"/v1/vector_stores/{o.vector_store}/files/{o.file}", None),
        ("DELETE", f"/v1/vector_stores/{o.vector_store}", None),
        ("DELETE", f"/v1/files/{o.file}", None),
        ("DELETE", f"/v1/prompts/{o.prompt}", None),
        ("DELETE", f"/v1/conversations/{o.conversation}", None),
        ("DELETE", f"/v1/responses/{o.response}", None),
        ("DELETE", f"/v1/responses/{o.background}", None),
    ]


def owned_ids(o: Owned) -> list[str]:
    return [o.response, o.background, o.conversation, o.conversation_item, o.prompt, o.file, o.vector_store,
            o.batch]


def swap_ids(text: str, ids: dict[str, str]) -> str:
    for real, fake in ids.items():
        text = text.replace(real, fake)
    return text


async def file_search_outcome(caller: Caller, vector_store: str) -> tuple[Any, ...]:
    """What the run made of a file_search call over ``vector_store``: the call's status and results, the output's
    item types, and whether the store's id or any of its file's text reached the answer."""
    tool = {"type": "file_search", "vector_store_ids": [vector_store]}
    status, raw = await caller.call("POST", "/v1/responses",
                                    {"model": MODEL, "input": "call file_search pump", "tools": [tool]})
    assert status == 200, raw[:300]
    response = orjson.loads(raw)
    [call] = [item for item in response["output"] if item["type"] == "file_search_call"]
    return (call["status"], call.get("results"), [item["type"] for item in response["output"]],
            response["status"], b"primed" in raw)


async def test_neither_tenant_reaches_the_others_objects(callers: tuple[Caller, Caller]) -> None:
    a, b = callers
    owned = await create_everything(a)
    own_store = (await b.ok("POST", "/v1/vector_stores", {"name": "beta store"}))["id"]
    fakes = {real: never_issued(real) for real in owned_ids(owned)}
    for method, path, body in probes(owned, own_store):
        status, raw = await b.call(method, path, body)
        assert 400 <= status < 500, (method, path, status, raw[:300])
        # the same request naming ids that were never issued: the same answer, byte for byte (ids swapped)
        fake_path = swap_ids(path, fakes)
        fake_body = None if body is None else orjson.loads(swap_ids(
            orjson.dumps(body).decode(), fakes))
        fake_status, fake_raw = await b.call(method, fake_path, fake_body)
        assert (status, swap_ids(raw.decode(), fakes)) == (fake_status, fake_raw.decode()), (method, path)
        for real in owned_ids(owned):
            assert real.encode() not in raw or real.encode() in path.encode() or (
                body is not None and real in str(body)), (method, path, raw[:300])

    # B's lists hold none of A's objects
    for listing in ("/v1/responses?limit=100", "/v1/conversations?limit=100", "/v1/prompts?limit=100",
                    "/v1/files?limit=100", "/v1/vector_stores?limit=100"):
        status, raw = await b.call("GET", listing)
        assert status == 200, (listing, raw[:300])
        assert not any(real.encode() in raw for real in owned_ids(owned)), listing

    # file_search over A's vector store fails in-band (after the listings: B's own
    # response echoes the tool's vector_store_ids), exactly as over one that was never issued
    searched = [await file_search_outcome(b, store) for store in (owned.vector_store, fakes[owned.vector_store])]
    assert searched[0] == searched[1] and searched[0][0] == "failed", searched

    # and every one of A's objects is still whole
    response = await a.ok("GET", f"/v1/responses/{owned.response}")
    assert response["status"] == "completed" and response["metadata"] == {"owner": "alpha"}
    assert (await a.ok("GET", f"/v1/responses/{owned.background}"))["status"] in ("completed", "cancelled")
    assert (await a.ok("GET", f"/v1/responses/{owned.response}/input_items"))["data"]
    conversation = await a.ok("GET", f"/v1/conversations/{owned.conversation}")
    assert conversation["metadata"] != {"owner": "beta"}
    items = await a.ok("GET", f"/v1/conversations/{owned.conversation}/items")
    assert [item["id"] for item in items["data"]] == [owned.conversation_item]
    prompt = await a.ok("GET", f"/v1/prompts/{owned.prompt}")
    assert prompt["version"] == "1" and "alpha" in prompt["instructions"]
    assert (await a.ok("GET", f"/v1/files/{owned.file}"))["id"] == owned.file
    store = await a.ok("GET", f"/v1/vector_stores/{owned.vector_store}")
    assert store["name"] == "alpha store" and store["file_counts"]["completed"] == 1
    hits = await a.ok("POST", f"/v1/vector_stores/{owned.vector_store}/search", {"query": "pump primed"})
    assert hits["data"] and hits["data"][0]["file_id"] == owned.file

    # A's lists hold them
    listed = (await a.call("GET", "/v1/responses?limit=100"))[1]
    assert owned.response.encode() in listed and owned.background.encode() in listed


async def test_a_continuation_by_the_owner_still_works(callers: tuple[Caller, Caller]) -> None:
    a, b = callers
    first = await a.ok("POST", "/v1/responses", {"model": MODEL, "input": "remember 41"})
    second = await a.ok("POST", "/v1/responses", {"model": MODEL, "input": "and now?",
                                                   "previous_response_id": first["id"]})
    assert second["previous_response_id"] == first["id"]
    status, _ = await b.call("POST", "/v1/responses", {"model": MODEL, "input": "steal",
                                                        "previous_response_id": second["id"]})
    assert status == 404


@pytest.mark.parametrize("credentials", [None, "Bearer rbk_not_a_key", "Basic YWxwaGE6YmV0YQ=="])
async def test_requests_without_a_valid_key_are_refused(door_url: str, credentials: str | None) -> None:
    headers = {} if credentials is None else {"authorization": credentials}
    async with aiohttp.ClientSession(base_url=door_url) as session:
        for method, path in (("GET", "/v1/responses"), ("POST", "/v1/responses"), ("GET", "/v1/files"),
                             ("GET", "/v1/conversations")):
            body = {"model": MODEL, "input": "hi"} if method == "POST" else None
            async with session.request(method, path, json=body, headers=headers) as response:
                raw = await response.read()
                assert response.status == 401, (method, path, raw[:300])
                error = orjson.loads(raw)["error"]
                assert set(error) == {"message", "type", "param", "code"}
                if credentials:
                    assert not re.search(re.escape(credentials.split()[-1]), error["message"])
