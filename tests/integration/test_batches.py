"""OpenAI's Batch API (``/v1/batches``) through the real ``openai`` SDK, at both doors of the stack as deployed: the
sidecar's HTTP door, and a real Envoy in front of it (``/v1/batches`` routed to the sidecar's HTTP door, the
sidecar's model calls back through Envoy's listener, ``--upstream-via``), over real sockets.

The model is the fake upstream, served in this process with one thing added: it counts the requests it receives
per batch line (each line's text carries ``L<n>-<marker>``), so "each line answered once" is counted at the
upstream, not taken from the bridge's word. Tenants come from ``x-tenant-id`` (``RESPONSES_BRIDGE_AUTH=header``).

The kill -9 test runs a sidecar of its own on its own SQLite file, killed in the middle of a batch and started
again on the same file: the batch completes, every line is in the output once, and the upstream saw each line
once but for those in flight at the kill, which the store counts (``batches.rerun``).
"""

from __future__ import annotations

import asyncio
import io
import os
import re
import signal
import sqlite3
import uuid
from collections import Counter
from collections.abc import AsyncIterator
from typing import Any

import openai
import orjson
import pytest
from aiohttp import web

from responses_bridge.demo.fake_server import create_app
from responses_bridge.demo.procs import free_port, wait_http
from tests.support.bridge import Sidecar, start_sidecar
from tests.support.envoy import have_envoy
from tests.support.gateway import Gateway, running_gateway
from tests.support.sdk import async_sdk

# the sidecars here keep their own SQLite files (the kill -9 test reads the one it restarts on); the store modules'
# PostgreSQL side is covered by the unit tests of the batch store
pytestmark = [pytest.mark.skipif(not have_envoy(), reason="envoy binary not available"), pytest.mark.store_free]

A, B = "tenant-a", "tenant-b"
ENV = {"RESPONSES_BRIDGE_AUTH": "header"}
LINE_MARK = re.compile(rb"L(\d+)-([0-9a-f]{12})")
FINAL = ("completed", "failed", "cancelled", "expired")


class CountingUpstream:
    """The fake upstream (demo/fake_server.py) on a free port of this process, counting what it receives per batch
    line: ``counts[marker][n]``."""

    def __init__(self) -> None:
        self.counts: dict[str, Counter[int]] = {}
        self.url = ""

    @web.middleware
    async def count(self, request: web.Request, handler: Any) -> web.StreamResponse:
        if request.method == "POST":
            body = await request.read()
            for number, marker in set(LINE_MARK.findall(body)):
                self.counts.setdefault(marker.decode(), Counter())[int(number)] += 1
        return await handler(request)

    def of(self, marker: str) -> Counter[int]:
        return self.counts.get(marker, Counter())


@pytest.fixture(scope="module")
async def upstream() -> AsyncIterator[CountingUpstream]:
    counting = CountingUpstream()
    app = create_app()
    app.middlewares.append(counting.count)
    runner = web.AppRunner(app)
    await runner.setup()
    port = free_port()
    await web.TCPSite(runner, "127.0.0.1", port).start()
    counting.url = f"http://127.0.0.1:{port}/v1"
    try:
        yield counting
    finally:
        await runner.cleanup()


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


def marker() -> str:
    return uuid.uuid4().hex[:12]


def line(number: int, mark: str, endpoint: str = "/v1/responses", **changes: Any) -> dict[str, Any]:
    text = f"L{number}-{mark}"
    body: dict[str, Any]
    if endpoint == "/v1/responses":
        body = {"model": "fake", "input": text}
    elif endpoint == "/v1/chat/completions":
        body = {"model": "fake", "messages": [{"role": "user", "content": text}]}
    else:
        body = {"model": "fake-embedding", "input": [text, "second"], "encoding_format": "float"}
    return {"custom_id": f"c{number}", "method": "POST", "url": endpoint, "body": body, **changes}


async def upload(client: openai.AsyncOpenAI, lines: list[Any], purpose: str = "batch") -> str:
    raw = b"\n".join(entry if isinstance(entry, bytes) else orjson.dumps(entry) for entry in lines) + b"\n"
    created = await client.files.create(file=("input.jsonl", io.BytesIO(raw)), purpose=purpose)  # type: ignore[arg-type]
    return created.id


async def settled(client: openai.AsyncOpenAI, batch_id: str, statuses: tuple[str, ...] = FINAL,
                  timeout: float = 120.0) -> Any:
    """The batch once its status is one of ``statuses`` (polled)."""
    deadline = asyncio.get_running_loop().time() + timeout
    while True:
        batch = await client.batches.retrieve(batch_id)
        if batch.status in statuses:
            return batch
        assert asyncio.get_running_loop().time() < deadline, f"batch still {batch.status}"
        await asyncio.sleep(0.05)


async def file_lines(client: openai.AsyncOpenAI, file_id: str | None) -> list[dict[str, Any]]:
    if file_id is None:
        return []
    content = await client.files.content(file_id)
    return [orjson.loads(raw) for raw in content.content.splitlines() if raw]


async def test_a_200_line_responses_batch_answers_every_line_once(client: openai.AsyncOpenAI,
                                                                  upstream: CountingUpstream) -> None:
    mark = marker()
    file_id = await upload(client, [line(n, mark) for n in range(200)])
    batch = await client.batches.create(input_file_id=file_id, endpoint="/v1/responses", completion_window="24h",
                                        metadata={"purpose": "eval"})
    assert batch.status == "validating" and batch.metadata == {"purpose": "eval"}
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
    usage = done.usage
    assert usage is not None and usage.input_tokens > 0 and usage.output_tokens > 0
    assert usage.total_tokens == usage.input_tokens + usage.output_tokens
    assert usage.input_tokens == sum(entry["response"]["body"]["usage"]["input_tokens"] for entry in output)
    stored = await client.responses.retrieve(output[0]["response"]["body"]["id"])  # stored as the route stores
    assert stored.status == "completed"
    output_file = await client.files.retrieve(done.output_file_id)
    assert output_file.purpose == "batch_output"
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


async def test_kill_9_in_the_middle_then_restart_completes_each_line_once(
        upstream: CountingUpstream, tmp_path_factory: pytest.TempPathFactory) -> None:
    """A sidecar of its own, at its HTTP door: durability is the runner's, whichever door created the batch."""
    folder = tmp_path_factory.mktemp("batches-kill")
    database = str(folder / "bridge.db")
    mark = marker()
    lines = [line(n, mark) for n in range(80)]
    for entry in lines:
        entry["body"]["input"] += " [header_delay=100]"
    first = await _sidecar(str(folder), upstream.url, database)
    try:
        async with tenant_sdk(first.http_url, A) as sdk:
            batch = await sdk.batches.create(input_file_id=await upload(sdk, lines), endpoint="/v1/responses",
                                             completion_window="24h")
            deadline = asyncio.get_running_loop().time() + 60
            while (await sdk.batches.retrieve(batch.id)).request_counts.completed < 10:  # type: ignore[union-attr]
                assert asyncio.get_running_loop().time() < deadline
                await asyncio.sleep(0.02)
        os.killpg(first.process.pid, signal.SIGKILL)
        first.process.process.wait()  # type: ignore[union-attr]
    finally:
        first.process.stop()
    sent_before = sum(upstream.of(mark).values())
    assert sent_before < 80, "the batch ended before the kill: nothing was tested"
    second = await _sidecar(str(folder), upstream.url, database)
    try:
        async with tenant_sdk(second.http_url, A) as sdk:
            done = await settled(sdk, batch.id)
            assert done.status == "completed"
            assert done.request_counts is not None and done.request_counts.model_dump() == {
                "total": 80, "completed": 80, "failed": 0}
            output = await file_lines(sdk, done.output_file_id)
    finally:
        second.process.stop()
    assert sorted(entry["custom_id"] for entry in output) == sorted(f"c{n}" for n in range(80))  # each once
    sent = upstream.of(mark)
    assert set(sent) == set(range(80)) and max(sent.values()) <= 2
    sent_twice = sum(1 for count in sent.values() if count == 2)
    with sqlite3.connect(database) as db:
        (rerun,) = db.execute("SELECT rerun FROM batches WHERE id = ?", (batch.id,)).fetchone()
    assert sent_twice == rerun  # only the lines in flight at the kill were sent again, and they were counted
    assert rerun <= 8  # no more than the lines in flight at once (the default gate: 8)


async def _sidecar(folder: str, upstream_url: str, database: str) -> Sidecar:
    process, http_port, _ = start_sidecar(folder, upstream_url, "--db", database, env=ENV, extproc=False,
                                          own_sqlite=True)
    url = f"http://127.0.0.1:{http_port}"
    try:
        await wait_http(f"{url}/health", process=process, headers={"x-tenant-id": A})
    except BaseException:
        process.stop()
        raise
    return Sidecar(upstream_url, url, 0, process)


async def test_a_drain_hands_the_batch_over_at_a_line_boundary(upstream: CountingUpstream,
                                                               tmp_path_factory: pytest.TempPathFactory) -> None:
    """SIGTERM mid-batch: the lines in flight finish and are recorded, the lease is let go, and the next process
    resumes the batch without sending any line again."""
    folder = tmp_path_factory.mktemp("batches-drain")
    database = str(folder / "bridge.db")
    mark = marker()
    lines = [line(n, mark) for n in range(40)]
    for entry in lines:
        entry["body"]["input"] += " [header_delay=100]"
    first = await _sidecar(str(folder), upstream.url, database)
    try:
        async with tenant_sdk(first.http_url, A) as sdk:
            batch = await sdk.batches.create(input_file_id=await upload(sdk, lines), endpoint="/v1/responses",
                                             completion_window="24h")
            deadline = asyncio.get_running_loop().time() + 60
            while (await sdk.batches.retrieve(batch.id)).request_counts.completed < 5:  # type: ignore[union-attr]
                assert asyncio.get_running_loop().time() < deadline
                await asyncio.sleep(0.02)
    finally:
        await asyncio.to_thread(first.process.stop)  # SIGTERM: the drain
    with sqlite3.connect(database) as db:
        owner, done_before = db.execute("SELECT owner, completed FROM batches WHERE id = ?", (batch.id,)).fetchone()
    assert owner is None and 5 <= done_before < 40  # let go, not lapsed
    assert sum(upstream.of(mark).values()) == done_before  # every line sent was recorded before the exit
    second = await _sidecar(str(folder), upstream.url, database)
    try:
        async with tenant_sdk(second.http_url, A) as sdk:
            done = await settled(sdk, batch.id)
    finally:
        second.process.stop()
    assert done.status == "completed" and done.request_counts is not None and done.request_counts.completed == 40
    assert upstream.of(mark) == Counter({n: 1 for n in range(40)})
