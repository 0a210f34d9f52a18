"""Every stored response's timing, kept by default (no extra installed, nothing exported), through both doors of one
real sidecar with a real Envoy in front, on whichever store the run puts sidecars (SQLite or PostgreSQL).

What it proves: a streamed response's stored time to first token lies between what the upstream was told to take
before its first token and what the client measured (a loose bound: no wall-clock assertion of the bridge's own
speed); a response that waited for the upstream connections (one place, two calls at once) says how long, in its
waits and as a span; the timing is in the row (its columns sort in SQL) and goes with the response when it is
deleted. The console's pages of it are the browser's (test_console_traces.py)."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any

import aiohttp
import openai
import orjson
import pytest

from responses_bridge.observability.timing import readable
from responses_bridge.store.base import DEFAULT_TENANT
from responses_bridge.store.timings import timing_document
from tests.support.bridge import Sidecar, running_sidecar
from tests.support.envoy import have_envoy
from tests.support.gateway import envoy_before
from tests.support.sdk import async_sdk
from tests.support.sidecar_state import sidecar_stores

pytestmark = pytest.mark.skipif(not have_envoy(), reason="envoy binary not available")

MODEL = "fake-model"
FIRST_TOKEN_MS = 300  # the fake upstream holds its first token this long after its headers ([first_byte_delay])
HELD_MS = 600  # a call holding the one upstream connection this long before its headers ([header_delay])


@dataclass
class Stack:
    sidecar: Sidecar
    envoy: str
    db: str

    def url(self, door: str) -> str:
        return self.sidecar.http_url if door == "http" else self.envoy


@pytest.fixture(scope="module")
async def stack(fake_upstream: str, tmp_path_factory: pytest.TempPathFactory) -> AsyncIterator[Stack]:
    tmp = tmp_path_factory.mktemp("timing")
    db = str(tmp / "bridge.db")
    # one upstream connection for the sidecar's own calls: a second call at once waits for it
    async with running_sidecar(str(tmp), fake_upstream, "--db", db,
                               env={"RESPONSES_BRIDGE_UPSTREAM_MAX_CONNECTIONS": "1",
                                    "RESPONSES_BRIDGE_UPSTREAM_CONNECT_TIMEOUT": "30"}) as sidecar, \
            envoy_before(sidecar) as envoy:
        yield Stack(sidecar, envoy, db)


async def stored_timing(db: str, response_id: str) -> dict[str, Any] | None:
    async with sidecar_stores(db) as stores:
        browser = stores.responses.browser  # type: ignore[attr-defined]
        stored = timing_document(await browser.response_timing(response_id, tenant=DEFAULT_TENANT))
    return readable(stored) if stored is not None else None


def client(stack: Stack, door: str) -> openai.AsyncOpenAI:
    return async_sdk(base_url=f"{stack.url(door)}/v1", api_key="sk-test", max_retries=0, timeout=60)


@pytest.mark.parametrize("door", ["http", "envoy"])
async def test_a_streamed_responses_time_to_first_token_is_what_the_client_saw(stack: Stack, door: str) -> None:
    async with client(stack, door) as sdk:
        async for _ in await sdk.responses.create(model=MODEL, input="warm the connection", stream=True):
            pass  # the client's connection and the SDK's first-use work, out of the measured call
        sent = time.perf_counter()
        seen: float | None = None
        response_id = ""
        async for event in await sdk.responses.create(model=MODEL, stream=True,
                                                      input=f"hello timing [first_byte_delay={FIRST_TOKEN_MS}]"):
            if event.type == "response.output_text.delta" and seen is None:
                seen = (time.perf_counter() - sent) * 1000
            if event.type == "response.completed":
                response_id = event.response.id
    assert seen is not None and response_id
    timing = await stored_timing(stack.db, response_id)
    assert timing is not None
    # the bridge saw its first token after the upstream held it, and before the client did
    assert FIRST_TOKEN_MS <= timing["ttft_ms"] <= seen + 1.0, (timing, seen)
    # in that order; the first byte is a span's start plus its offset, each rounded to the microsecond, so it may
    # read 0.001 ms past a first token taken at the same instant (the ext_proc door: one chunk brings both)
    assert timing["upstream_headers_ms"] <= timing["upstream_first_byte_ms"] <= timing["ttft_ms"] + 0.002
    assert timing["ttft_ms"] <= timing["latency_ms"]
    assert timing["upstream"] == "default"
    [call] = [span for span in timing["spans"] if span["kind"] == "model"]
    assert call["attributes"]["gen_ai.request.model"] == MODEL
    assert call["attributes"]["output"] == [0, 1]  # the one message it made, read from the stored response
    assert call["attributes"]["first_token_ms"] >= FIRST_TOKEN_MS
    assert "replica" in timing  # filled where the request's route names one (several replicas)


async def test_a_plain_json_response_has_its_timing_too(stack: Stack) -> None:
    for door in ("http", "envoy"):
        async with client(stack, door) as sdk:
            response = await sdk.responses.create(model=MODEL, input="plain")
        timing = await stored_timing(stack.db, response.id)
        assert timing is not None, door
        assert timing["ttft_ms"] is not None and 0 < timing["ttft_ms"] <= timing["latency_ms"], (door, timing)
        assert timing["waits_ms"] == {}  # nothing waited: the pools' fast path records nothing
        [call] = timing["spans"]
        assert call["kind"] == "model" and call["attributes"]["output"] == [0, 1], (door, timing)
        assert call["attributes"]["gen_ai.usage.output_tokens"] > 0


async def test_a_response_that_waited_for_an_upstream_connection_shows_the_wait(stack: Stack) -> None:
    async with client(stack, "http") as sdk:
        first, second = await asyncio.gather(*(
            sdk.responses.create(model=MODEL, input=f"call {n} [header_delay={HELD_MS}]") for n in (1, 2)))
    timings = [await stored_timing(stack.db, response.id) for response in (first, second)]
    assert all(timing is not None for timing in timings)
    waits = [timing["waits_ms"].get("upstream connections", 0.0) for timing in timings]  # type: ignore[index]
    waited = timings[waits.index(max(waits))]
    assert waited is not None
    # the one that came second waited for the first call's answer: most of its header delay
    assert max(waits) >= HELD_MS / 2, timings
    [wait] = [span for span in waited["spans"] if span["kind"] == "wait"]
    assert wait["name"] == "wait upstream connections" and wait["attributes"]["pool"] == "upstream connections"
    [call] = [span for span in waited["spans"] if span["kind"] == "model"]
    assert wait["start_ms"] <= wait["end_ms"] <= call["end_ms"]
    assert waited["latency_ms"] >= max(waits) + HELD_MS / 2


async def test_the_timing_is_in_the_row_and_goes_with_its_response(stack: Stack) -> None:
    async with client(stack, "http") as sdk:
        response = await sdk.responses.create(model=MODEL, input="to be deleted")
        assert await stored_timing(stack.db, response.id) is not None
        async with sidecar_stores(stack.db) as stores:  # the summary columns, for sorting and filtering in SQL
            latency = await _latency_column(stores, response.id)
        assert latency is not None and latency > 0
        await sdk.responses.delete(response.id)
    assert await stored_timing(stack.db, response.id) is None
    async with sidecar_stores(stack.db) as stores:
        assert await _latency_column(stores, response.id) is None


async def test_a_background_response_keeps_its_timing_from_its_request(stack: Stack) -> None:
    async with client(stack, "http") as sdk:
        queued = await sdk.responses.create(model=MODEL, input="in the background [delay=20]", background=True)
        for _ in range(200):
            done = await sdk.responses.retrieve(queued.id)
            if done.status not in ("queued", "in_progress"):
                break
            await asyncio.sleep(0.05)
    assert done.status == "completed"
    timing = await stored_timing(stack.db, queued.id)
    assert timing is not None
    assert 0 < timing["ttft_ms"] <= timing["latency_ms"]
    assert [span["kind"] for span in timing["spans"]] == ["model"]


async def test_each_run_of_a_program_has_its_own_span_inside_its_tool_call(stack: Stack) -> None:
    """A program (the V8 isolate) runs in a worker, as code runs in the sandbox: its run is a span of its own,
    inside the call of ``program``, between the model's two calls."""
    pytest.importorskip("py_mini_racer")
    async with client(stack, "http") as sdk:
        response = await sdk.responses.create(model=MODEL, input="js: return `six times seven is ${6 * 7}`",
                                              tools=[{"type": "programmatic_tool_calling"}])  # type: ignore[list-item]
    assert [item.type for item in response.output] == ["program", "program_output", "message"], response.output
    timing = await stored_timing(stack.db, response.id)
    assert timing is not None
    assert [(span["kind"], span["name"] if span["kind"] != "model" else "") for span in timing["spans"]] == [
        ("model", ""), ("sandbox", "program run"), ("tool", "tool program"), ("model", "")], timing["spans"]
    # (a span is added as it ends: the run before its call)
    first, run, call, last = timing["spans"]
    assert call["start_ms"] <= run["start_ms"] <= run["end_ms"] <= call["end_ms"], (run, call)
    assert run["attributes"]["responses_bridge.program.memory_bytes"] > 0
    # each model call says what it made and what its answer said, the one that asked for the program too (its JSON
    # answer is read only as the tool starts): the console's span page shows its item, its model and tokens
    assert first["name"] == last["name"] == f"chat {MODEL}", timing["spans"]
    assert first["attributes"]["output"] == [0, 1] and last["attributes"]["output"] == [2, 3], timing["spans"]
    assert first["attributes"]["gen_ai.response.finish_reasons"] == ["tool_calls"], first
    assert first["attributes"]["gen_ai.usage.output_tokens"] > 0, first
    assert timing["ttft_ms"] <= first["end_ms"]  # the program item, the response's first output


async def test_a_stored_chat_completion_keeps_its_latency(stack: Stack) -> None:
    for door in ("http", "envoy"):
        async with client(stack, door) as sdk:
            chat = await sdk.chat.completions.create(model=MODEL, store=True,
                                                     messages=[{"role": "user", "content": f"timed chat {door}"}])
        async with sidecar_stores(stack.db) as stores:
            if stores.postgres is not None:
                async with stores.postgres.acquire("test") as conn:
                    latency = await conn.fetchval("SELECT latency_ms FROM chat_completions WHERE id = $1", chat.id)
            else:
                async with stores.responses.reading() as conn:  # type: ignore[attr-defined]
                    rows = list(await conn.execute_fetchall("SELECT latency_ms FROM chat_completions WHERE id = ?",
                                                            (chat.id,)))
                latency = rows[0][0] if rows else None
        assert latency is not None and latency > 0, door


async def test_a_timing_is_never_in_the_apis_answer(stack: Stack) -> None:
    async with aiohttp.ClientSession(stack.sidecar.http_url) as http:
        async with http.post("/v1/responses", json={"model": MODEL, "input": "no timing shown"}) as answer:
            created = await answer.json()
        async with http.get(f"/v1/responses/{created['id']}") as answer:
            body = orjson.loads(await answer.read())
    assert "timing" not in body and "ttft_ms" not in orjson.dumps(body).decode()


async def _latency_column(stores: Any, response_id: str) -> float | None:
    """The ``latency_ms`` column of the response's row (None: no row, or none kept)."""
    if stores.postgres is not None:
        async with stores.postgres.acquire("test") as conn:
            return await conn.fetchval("SELECT latency_ms FROM responses WHERE id = $1", response_id)
    async with stores.responses.reading() as conn:
        rows = list(await conn.execute_fetchall("SELECT latency_ms FROM responses WHERE id = ?", (response_id,)))
    return rows[0][0] if rows else None
