"""OpenAI's Batch API (``/v1/batches``) through the real ``openai`` SDK, at both doors of the stack as deployed: the
sidecar's HTTP door, and a real Envoy in front of it (``/v1/batches`` routed to the sidecar's HTTP door, the
sidecar's model calls back through Envoy's listener, ``--upstream-via``), over real sockets.

The model is the fake upstream, served in this process with one thing added: it counts the requests it receives
per batch line (each line's text carries ``L<n>-<marker>``), so "each line answered once" is counted at the
upstream, not taken from the bridge's word. Tenants come from ``x-tenant-id`` (``RESPONSES_BRIDGE_AUTH=header``).

Durability (a drain, a kill -9, a restart): test_batches_durable.py; replicas on PostgreSQL:
test_batches_replicas.py.
"""

from __future__ import annotations

import asyncio
from collections import Counter
from collections.abc import AsyncIterator
from typing import Any

import aiohttp
import openai
import orjson
import pytest

from responses_bridge.demo.procs import wait_http
from tests.support.batches import (
    CountingUpstream,
    counting_upstream,
    file_lines,
    line,
    marker,
    settled,
    strict_batch,
    upload,
)
from tests.support.bridge import budget_held_bytes
from tests.support.envoy import have_envoy
from tests.support.gateway import Gateway, running_gateway
from tests.support.sdk import async_sdk

# the sidecar keeps its own SQLite file; the batch store's PostgreSQL side: tests/unit/test_batch_store.py and
# test_batches_replicas.py
pytestmark = [pytest.mark.skipif(not have_envoy(), reason="envoy binary not available"), pytest.mark.store_free]

A, B = "tenant-a", "tenant-b"
LIMITED = "tenant-one-at-a-time"
ENV = {"RESPONSES_BRIDGE_AUTH": "header",
       "RESPONSES_BRIDGE_TENANTS": orjson.dumps({LIMITED: {"max_concurrent_requests": 1}}).decode()}

@pytest.fixture(scope="module")
async def upstream() -> AsyncIterator[CountingUpstream]:
    async with counting_upstream() as counting:
        yield counting


@pytest.fixture(scope="module")
async def gateway(upstream: CountingUpstream, tmp_path_factory: pytest.TempPathFactory) -> AsyncIterator[Gateway]:
    async with running_gateway(str(tmp_path_factory.mktemp("batches")), upstream.url, env=ENV,
                               own_sqlite=True) as started:
        await wait_http(f"{started.sidecar.http_url}/health", headers={"x-tenant-id": A})
        yield started


def tenant_sdk(url: str, tenant: str) -> openai.AsyncOpenAI:
    return async_sdk(base_url=f"{url}/v1", api_key="sk-client", max_retries=0, timeout=120,
                     default_headers={"x-tenant-id": tenant})


@pytest.fixture
async def client(door_url: str) -> AsyncIterator[openai.AsyncOpenAI]:
    async with tenant_sdk(door_url, A) as sdk:
        yield sdk


@pytest.fixture
async def other(door_url: str) -> AsyncIterator[openai.AsyncOpenAI]:
    async with tenant_sdk(door_url, B) as sdk:
        yield sdk


async def test_a_200_line_responses_batch_answers_every_line_once(client: openai.AsyncOpenAI,
                                                                  upstream: CountingUpstream,
                                                                  gateway: Gateway) -> None:
    mark = marker()
    file_id = await upload(client, [line(n, mark) for n in range(200)])
    batch = await client.batches.create(input_file_id=file_id, endpoint="/v1/responses", completion_window="24h",
                                        metadata={"purpose": "eval"})
    assert batch.status == "validating" and batch.metadata == {"purpose": "eval"}
    await strict_batch(client, batch.id)  # every field the SDK's type, whatever the status
    assert batch.expires_at == batch.created_at + 24 * 3600
    done = await settled(client, batch.id)
    assert done.status == "completed", done.errors
    assert done.request_counts is not None and done.request_counts.model_dump() == {
        "total": 200, "completed": 200, "failed": 0}
    assert done.in_progress_at and done.finalizing_at and done.completed_at and done.error_file_id is None
    assert done.model == "fake"
    output = await file_lines(client, done.output_file_id)
    assert sorted(entry["custom_id"] for entry in output) == sorted(f"c{n}" for n in range(200))
    for entry in output:
        assert entry["error"] is None and entry["id"].startswith("batch_req_")
        response = entry["response"]
        assert response["status_code"] == 200 and response["request_id"]
        assert response["body"]["object"] == "response" and response["body"]["status"] == "completed"
        assert f"L{entry['custom_id'][1:]}-{mark}" in response["body"]["output"][0]["content"][0]["text"]
    assert upstream.of(mark) == Counter({n: 1 for n in range(200)})  # each line sent upstream exactly once
    assert upstream.authorizations[mark] == {"Bearer sk-client"}  # the creator's credentials, as the route sends
    usage = done.usage
    assert usage is not None and usage.input_tokens > 0 and usage.output_tokens > 0
    assert usage.total_tokens == usage.input_tokens + usage.output_tokens
    assert usage.input_tokens == sum(entry["response"]["body"]["usage"]["input_tokens"] for entry in output)
    stored = await client.responses.retrieve(output[0]["response"]["body"]["id"])  # stored as the route stores
    assert stored.status == "completed"
    output_file = await client.files.retrieve(done.output_file_id)
    assert output_file.purpose == "batch_output"
    assert await budget_held_bytes(gateway.sidecar.http_url) == 0  # every line's memory hold given back
    listed = await client.batches.list(limit=1)
    assert listed.data[0].id == batch.id and listed.has_more in (True, False)


async def test_chat_and_embeddings_batches(client: openai.AsyncOpenAI, upstream: CountingUpstream) -> None:
    mark = marker()
    chat = await client.batches.create(
        input_file_id=await upload(client, [line(n, mark, "/v1/chat/completions") for n in range(5)]),
        endpoint="/v1/chat/completions", completion_window="24h")
    embeddings = await client.batches.create(
        input_file_id=await upload(client, [line(n, mark, "/v1/embeddings") for n in range(5, 9)]),
        endpoint="/v1/embeddings", completion_window="24h")
    chat_done, embeddings_done = await settled(client, chat.id), await settled(client, embeddings.id)
    assert chat_done.status == embeddings_done.status == "completed"
    answers = await file_lines(client, chat_done.output_file_id)
    assert {entry["custom_id"] for entry in answers} == {f"c{n}" for n in range(5)}
    for entry in answers:
        assert entry["response"]["body"]["object"] == "chat.completion"
    vectors = await file_lines(client, embeddings_done.output_file_id)
    assert {entry["custom_id"] for entry in vectors} == {f"c{n}" for n in range(5, 9)}
    for entry in vectors:
        assert [item["index"] for item in entry["response"]["body"]["data"]] == [0, 1]
    assert embeddings_done.usage is not None and embeddings_done.usage.input_tokens > 0
    assert upstream.of(mark) == Counter({n: 1 for n in range(9)})


async def test_an_invalid_input_fails_naming_each_line_and_runs_nothing(client: openai.AsyncOpenAI,
                                                                         upstream: CountingUpstream) -> None:
    mark = marker()
    lines: list[Any] = [line(0, mark), b'{"custom_id": "c1", "method": "POST", "url": "/v1/re', line(2, mark),
                        line(3, mark, url="/v1/chat/completions"), line(4, mark, custom_id="c0"),
                        line(5, mark, method="GET"), line(6, mark, body="text"), line(7, mark)]
    batch = await client.batches.create(input_file_id=await upload(client, lines), endpoint="/v1/responses",
                                        completion_window="24h")
    failed = await settled(client, batch.id)
    assert failed.status == "failed" and failed.failed_at and failed.output_file_id is None
    assert failed.errors is not None and failed.errors.data is not None
    named = {error.line: error.code for error in failed.errors.data}
    assert named == {2: "invalid_json_line", 4: "mismatched_endpoint", 5: "duplicate_custom_id", 6: "invalid_method",
                     7: "invalid_value"}
    assert all(error.message for error in failed.errors.data)
    assert failed.request_counts is not None and failed.request_counts.total == 0
    assert upstream.of(mark) == Counter()  # not one line ran


async def test_the_create_requests_refusals(client: openai.AsyncOpenAI) -> None:
    file_id = await upload(client, [line(0, marker())])
    with pytest.raises(openai.BadRequestError) as unserved:
        await client.batches.create(input_file_id=file_id, endpoint="/v1/videos", completion_window="24h")
    assert unserved.value.param == "endpoint"
    assert all(name in unserved.value.message for name in ("/v1/responses", "/v1/chat/completions", "/v1/embeddings"))
    with pytest.raises(openai.BadRequestError) as window:
        await client.batches.create(input_file_id=file_id, endpoint="/v1/responses",
                                    completion_window="1h")  # type: ignore[arg-type]
    assert window.value.param == "completion_window"
    wrong_purpose = await upload(client, [line(0, marker())], purpose="user_data")
    with pytest.raises(openai.BadRequestError) as purpose:
        await client.batches.create(input_file_id=wrong_purpose, endpoint="/v1/responses", completion_window="24h")
    assert purpose.value.param == "input_file_id"
    with pytest.raises(openai.NotFoundError):
        await client.batches.create(input_file_id="file-" + "0" * 32, endpoint="/v1/responses",
                                    completion_window="24h")
    with pytest.raises(openai.BadRequestError) as expiry:
        await client.batches.create(input_file_id=file_id, endpoint="/v1/responses", completion_window="24h",
                                    output_expires_after={"anchor": "created_at", "seconds": 60})
    assert expiry.value.param == "output_expires_after.seconds"
    with pytest.raises(openai.NotFoundError):
        await client.batches.retrieve("batch_" + "0" * 32)


async def test_line_errors_go_to_the_error_file_and_the_rest_goes_on(client: openai.AsyncOpenAI) -> None:
    mark = marker()
    refused_upstream = line(1, mark)
    refused_upstream["body"]["input"] += " [error=400]"
    refused_here = line(2, mark)
    refused_here["body"]["temperature"] = "hot"
    streamed = line(3, mark)
    streamed["body"]["stream"] = True
    batch = await client.batches.create(
        input_file_id=await upload(client, [line(0, mark), refused_upstream, refused_here, streamed, line(4, mark)]),
        endpoint="/v1/responses", completion_window="24h", output_expires_after={"anchor": "created_at",
                                                                                 "seconds": 3600})
    done = await settled(client, batch.id)
    assert done.status == "completed"
    assert done.request_counts is not None and done.request_counts.model_dump() == {
        "total": 5, "completed": 2, "failed": 3}
    assert {entry["custom_id"] for entry in await file_lines(client, done.output_file_id)} == {"c0", "c4"}
    errors = {entry["custom_id"]: entry for entry in await file_lines(client, done.error_file_id)}
    assert set(errors) == {"c1", "c2", "c3"}
    for entry in errors.values():
        assert entry["response"]["status_code"] == 400 and entry["error"] is None
        assert set(entry["response"]["body"]["error"]) >= {"message", "type", "param", "code"}
    assert errors["c2"]["response"]["body"]["error"]["param"] == "temperature"
    error_file = await client.files.retrieve(done.error_file_id)
    assert error_file.expires_at == error_file.created_at + 3600


async def test_cancel_stops_new_lines_and_keeps_the_finished(client: openai.AsyncOpenAI,
                                                             upstream: CountingUpstream) -> None:
    mark = marker()
    lines = [line(n, mark) for n in range(60)]
    for entry in lines:
        entry["body"]["input"] += " [header_delay=150]"
    batch = await client.batches.create(input_file_id=await upload(client, lines), endpoint="/v1/responses",
                                        completion_window="24h")
    deadline = asyncio.get_running_loop().time() + 60
    while (await client.batches.retrieve(batch.id)).request_counts.completed < 3:  # type: ignore[union-attr]
        assert asyncio.get_running_loop().time() < deadline
        await asyncio.sleep(0.02)
    cancelling = await client.batches.cancel(batch.id)
    assert cancelling.status == "cancelling" and cancelling.cancelling_at
    done = await settled(client, batch.id)
    assert done.status == "cancelled" and done.cancelled_at
    counts = done.request_counts
    assert counts is not None and counts.total == 60 and 3 <= counts.completed < 60 and counts.failed == 0
    kept = await file_lines(client, done.output_file_id)
    assert len(kept) == counts.completed  # the finished lines kept, the lines in flight at the cancel among them
    sent = upstream.of(mark)
    assert set(sent.values()) == {1} and len(sent) == counts.completed  # nothing started after the cancel
    with pytest.raises(openai.APIStatusError) as again:
        await client.batches.cancel(batch.id)
    assert again.value.status_code == 409


async def test_another_tenant_sees_neither_the_batch_nor_its_files(client: openai.AsyncOpenAI,
                                                                   other: openai.AsyncOpenAI) -> None:
    mark = marker()
    refused = line(1, mark)
    refused["body"]["input"] += " [error=400]"
    batch = await client.batches.create(input_file_id=await upload(client, [line(0, mark), refused]),
                                        endpoint="/v1/responses", completion_window="24h")
    done = await settled(client, batch.id)
    assert done.output_file_id and done.error_file_id
    with pytest.raises(openai.NotFoundError):
        await other.batches.retrieve(batch.id)
    with pytest.raises(openai.NotFoundError):
        await other.batches.cancel(batch.id)
    for file_id in (done.output_file_id, done.error_file_id, done.input_file_id):
        with pytest.raises(openai.NotFoundError):
            await other.files.retrieve(file_id)
        with pytest.raises(openai.NotFoundError):
            await other.files.content(file_id)
    assert batch.id not in {entry.id for entry in (await other.batches.list()).data}
    with pytest.raises(openai.NotFoundError):  # nor can it run a batch over another tenant's input file
        await other.batches.create(input_file_id=done.input_file_id, endpoint="/v1/responses",
                                   completion_window="24h")


async def test_a_tenants_limit_holds_its_lines_back_instead_of_failing_them(door_url: str) -> None:
    """A tenant allowed one request at a time: its batch's lines wait for the place (an interactive request over the
    limit gets a 429; a line does not), and all of them are answered."""
    async with tenant_sdk(door_url, LIMITED) as sdk:
        batch = await sdk.batches.create(input_file_id=await upload(sdk, [line(n, marker()) for n in range(12)]),
                                         endpoint="/v1/responses", completion_window="24h")
        done = await settled(sdk, batch.id)
    assert done.status == "completed" and done.request_counts is not None
    assert done.request_counts.model_dump() == {"total": 12, "completed": 12, "failed": 0}


VALID = {"input_file_id": "file-" + "0" * 32, "endpoint": "/v1/responses", "completion_window": "24h"}
MALFORMED = [b"not json", b"[1]", *(orjson.dumps({**VALID, **change}) for change in (
    {"input_file_id": ["x"]}, {"endpoint": ["/v1/responses"]}, {"completion_window": {"h": 24}}, {"metadata": [1]},
    {"output_expires_after": {"anchor": "x", "seconds": "y"}}, {"output_expires_after": 5}, {"surprise": 1}))]


@pytest.mark.parametrize("body", MALFORMED)
async def test_a_malformed_create_is_a_400_in_openais_shape(door_url: str, body: bytes) -> None:
    headers = {"x-tenant-id": A, "Content-Type": "application/json"}
    async with aiohttp.ClientSession() as session, session.post(f"{door_url}/v1/batches", data=body,
                                                                headers=headers) as answer:
        assert answer.status == 400, await answer.text()
        error = (await answer.json())["error"]
    assert set(error) == {"message", "type", "param", "code"} and error["type"] == "invalid_request_error"
