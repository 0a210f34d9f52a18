"""Background responses through both doors: queued at once, run in the sidecar, retrievable, resumable, cancellable."""

from __future__ import annotations

import asyncio
import json

import aiohttp
import openai
import pytest

from responses_bridge.demo.procs import ManagedProcess, envoy_binary, free_port, wait_http
from responses_bridge.envoy_config import render_bootstrap
from tests.support.bridge import start_sidecar
from tests.support.schema import check_stream
from tests.support.sdk import async_sdk

pytestmark = pytest.mark.store_proven(
    "tests/integration/test_replicas.py",
    "tests/integration/test_agents_automations_replicas.py",
    "tests/unit/test_background_replicas.py",
    reason="every store/postgres line it covers on PostgreSQL is covered by the modules named (scripts/pg-coverage)",
)

MODEL = "fake-model"


async def wait_status(client: openai.AsyncOpenAI, response_id: str, statuses: set[str], timeout: float = 20):
    deadline = asyncio.get_running_loop().time() + timeout
    while True:
        response = await client.responses.retrieve(response_id)
        if response.status in statuses:
            return response
        assert asyncio.get_running_loop().time() < deadline, f"still {response.status}"
        await asyncio.sleep(0.05)


def parse_sse(body: bytes) -> tuple[list[dict], bool]:
    events, done = [], False
    for frame in body.split(b"\n\n"):
        if not frame:
            continue
        lines = frame.split(b"\n")
        data = [line[6:] for line in lines if line.startswith(b"data: ")]
        assert len(data) == 1, frame
        if data[0] == b"[DONE]":
            done = True
            continue
        event = json.loads(data[0])
        kinds = [line[7:].decode() for line in lines if line.startswith(b"event: ")]
        assert kinds == [event["type"]], frame
        events.append(event)
    return events, done


async def test_background_returns_queued_then_completes(client: openai.AsyncOpenAI) -> None:
    response = await client.responses.create(model=MODEL, input="hello there [delay=20]", background=True)
    assert response.status in ("queued", "in_progress")
    assert response.background is True
    done = await wait_status(client, response.id, {"completed", "failed"})
    assert done.status == "completed"
    assert done.output_text == "Echo: hello there"
    assert done.background is True


async def test_background_run_sends_the_clients_key_upstream(client: openai.AsyncOpenAI, upstream_log) -> None:
    # through Envoy the processor never sees the request headers: the bootstrap forwards the credentials to it
    response = await client.responses.create(model=MODEL, input="whose key?", background=True)
    assert (await wait_status(client, response.id, {"completed", "failed"})).status == "completed"
    sent = [e for e in await upstream_log.entries() if "whose key?" in str(e["body"])]
    assert sent and sent[-1]["headers"]["authorization"] == "Bearer sk-client"


async def test_background_shows_in_progress_while_running(client: openai.AsyncOpenAI) -> None:
    response = await client.responses.create(model=MODEL, input="slow [chunks=20] [delay=100]", background=True)
    running = await wait_status(client, response.id, {"in_progress"}, timeout=5)
    assert running.status == "in_progress"
    done = await wait_status(client, response.id, {"completed"})
    assert done.output_text.startswith("Echo: slow")


async def test_background_requires_store(client: openai.AsyncOpenAI) -> None:
    with pytest.raises(openai.BadRequestError) as info:
        await client.responses.create(model=MODEL, input="x", background=True, store=False)
    assert info.value.body["param"] == "background"


async def test_background_stream_is_the_event_stream(client: openai.AsyncOpenAI) -> None:
    stream = await client.responses.create(model=MODEL, input="streamed in background", background=True,
                                           stream=True)
    events = [event async for event in stream]
    kinds = [event.type for event in events]
    assert kinds[:3] == ["response.created", "response.queued", "response.in_progress"]
    assert kinds[-1] == "response.completed"
    assert [event.sequence_number for event in events] == list(range(len(events)))
    assert events[0].response.status == "queued"
    assert events[-1].response.output_text == "Echo: streamed in background"


async def test_resume_with_starting_after(client: openai.AsyncOpenAI, http: aiohttp.ClientSession) -> None:
    response = await client.responses.create(model=MODEL, input="resume me [chunks=15] [delay=60]",
                                             background=True)
    # joined mid-run: the stored events after 3, then the live ones until the end
    async with http.get(f"/v1/responses/{response.id}", params={"stream": "true", "starting_after": "3"}) as live:
        assert live.status == 200
        assert live.headers["Content-Type"].startswith("text/event-stream")
        live_events, done = parse_sse(await live.read())
    assert done
    assert live_events[0]["sequence_number"] == 4
    assert [e["sequence_number"] for e in live_events] == list(range(4, 4 + len(live_events)))
    assert live_events[-1]["type"] == "response.completed"
    # after the end: the whole stream from the store, the same events
    async with http.get(f"/v1/responses/{response.id}?stream=true") as replay:
        raw = await replay.read()
    all_events, done = parse_sse(raw)
    assert done
    assert check_stream(raw) == all_events  # framing, event shapes and order, against the spec's types
    assert all_events[4:] == live_events
    assert [e["type"] for e in all_events[:3]] == ["response.created", "response.queued", "response.in_progress"]
    # the SDK's own resume call
    stream = await client.responses.retrieve(response.id, stream=True, starting_after=len(all_events) - 2)
    tail = [event async for event in stream]
    assert [event.type for event in tail] == ["response.completed"]


async def test_stream_of_a_foreground_response_is_refused(client: openai.AsyncOpenAI,
                                                          http: aiohttp.ClientSession) -> None:
    response = await client.responses.create(model=MODEL, input="plain")
    async with http.get(f"/v1/responses/{response.id}?stream=true") as answer:
        assert answer.status == 400
    async with http.get("/v1/responses/resp_missing?stream=true") as answer:
        assert answer.status == 404


async def test_cancel(client: openai.AsyncOpenAI, http: aiohttp.ClientSession) -> None:
    response = await client.responses.create(model=MODEL, input="long [chunks=100] [delay=100]", background=True)
    await wait_status(client, response.id, {"in_progress"}, timeout=5)
    cancelled = await client.responses.cancel(response.id)
    assert cancelled.status == "cancelled"
    assert (await client.responses.retrieve(response.id)).status == "cancelled"
    again = await client.responses.cancel(response.id)  # idempotent
    assert again.status == "cancelled"
    async with http.get(f"/v1/responses/{response.id}?stream=true") as replay:
        events, done = parse_sse(await replay.read())
    assert done and events[-1]["type"] == "response.failed" and events[-1]["response"]["status"] == "cancelled"


async def test_cancel_finished_or_foreground_is_400(client: openai.AsyncOpenAI) -> None:
    response = await client.responses.create(model=MODEL, input="quick", background=True)
    await wait_status(client, response.id, {"completed"})
    with pytest.raises(openai.BadRequestError):
        await client.responses.cancel(response.id)
    plain = await client.responses.create(model=MODEL, input="quick")
    with pytest.raises(openai.BadRequestError):
        await client.responses.cancel(plain.id)
    with pytest.raises(openai.NotFoundError):
        await client.responses.cancel("resp_does_not_exist")


async def test_background_upstream_error_is_a_failed_response(client: openai.AsyncOpenAI) -> None:
    response = await client.responses.create(model=MODEL, input="boom [error=400]", background=True)
    done = await wait_status(client, response.id, {"failed", "completed"})
    assert done.status == "failed"
    assert done.error is not None


async def test_background_chain(client: openai.AsyncOpenAI) -> None:
    first = await client.responses.create(model=MODEL, input="first turn", background=True)
    await wait_status(client, first.id, {"completed"})
    second = await client.responses.create(model=MODEL, input="second turn", previous_response_id=first.id,
                                           background=True)
    done = await wait_status(client, second.id, {"completed"})
    assert done.output_text == "Echo: second turn"


@pytest.mark.envoy
async def test_envoy_background_upstream_call_goes_through_envoy(fake_upstream: str, tmp_path) -> None:
    """With --upstream-via at Envoy's listener, the sidecar's own upstream call is counted by Envoy's upstream
    cluster (the passthrough /v1/chat/completions route)."""
    listen_port, admin_port = free_port(), free_port()
    process, http_port, extproc_port = start_sidecar(str(tmp_path), fake_upstream, "--upstream-via",
                                                     f"http://127.0.0.1:{listen_port}/v1")
    config = tmp_path / "envoy.yaml"
    config.write_text(render_bootstrap(listen_port=listen_port, extproc_port=extproc_port, http_port=http_port,
                                       upstream=fake_upstream, admin_port=admin_port))
    envoy = ManagedProcess([envoy_binary(), "-c", str(config), "--log-level", "warn", "--base-id",
                            str(listen_port), "--concurrency", "1"], "envoy-bg", quiet=False)
    try:
        await wait_http(f"http://127.0.0.1:{http_port}/health", process=process)
        envoy.start()
        await wait_http(f"http://127.0.0.1:{admin_port}/ready", process=envoy)
        await wait_http(f"http://127.0.0.1:{listen_port}/health", process=envoy)

        stats = f"http://127.0.0.1:{admin_port}/stats?filter=llm_upstream.upstream_rq_completed"

        async def upstream_requests() -> int:
            async with aiohttp.ClientSession() as session, session.get(stats) as answer:
                text = await answer.text()
            counts = dict(line.split(": ", 1) for line in text.splitlines() if ": " in line)
            return int(counts.get("cluster.llm_upstream.upstream_rq_completed", 0))

        before = await upstream_requests()  # completed: Envoy may open (and reset) one for the POST it holds
        async with async_sdk(base_url=f"http://127.0.0.1:{listen_port}/v1", api_key="sk-x",
                                      max_retries=0) as client:
            response = await client.responses.create(model=MODEL, input="via envoy", background=True)
            assert response.status == "queued"
            done = await wait_status(client, response.id, {"completed", "failed"})
            assert done.status == "completed", done.error
            assert done.output_text == "Echo: via envoy"
        after = await upstream_requests()
        assert after == before + 1, (before, after)
    finally:
        envoy.stop()
        process.stop()


async def test_background_objects_match_the_spec(http: aiohttp.ClientSession) -> None:
    from tests.support.schema import validate_response

    async with http.post("/v1/responses", json={"model": MODEL, "input": "spec [chunks=50] [delay=50]",
                                                "background": True}) as answer:
        assert answer.status == 200
        queued = await answer.json()
    validate_response(queued)
    assert queued["status"] == "queued" and queued["background"] is True and queued["output"] == []
    async with http.post(f"/v1/responses/{queued['id']}/cancel") as answer:
        assert answer.status == 200
        cancelled = await answer.json()
    validate_response(cancelled)
    assert cancelled["status"] == "cancelled"


async def test_delete_stops_a_running_background_response(client: openai.AsyncOpenAI) -> None:
    script = "[chunks=40] [delay=50]"
    response = await client.responses.create(model=MODEL, input=f"doomed {script}", background=True)
    twin = await client.responses.create(model=MODEL, input=f"twin {script}", background=True)
    await wait_status(client, response.id, {"in_progress"}, timeout=5)
    await client.responses.delete(response.id)
    # a run still going would store the response again when it ends: by the time its twin (same script,
    # started with it) has ended, it would have
    await wait_status(client, twin.id, {"completed"})
    with pytest.raises(openai.NotFoundError):
        await client.responses.retrieve(response.id)
