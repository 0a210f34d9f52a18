"""Large upstream events, through both doors: one arriving in small reads streams through intact, and one over
``RESPONSES_BRIDGE_MAX_EVENT_BYTES`` (16 MiB by default) fails its response with ``response.failed`` (or a 502
for a JSON client) that names the limit, and is stored as failed.

The fake upstream's ``[huge=N:W]`` directive puts an N-byte word first in the answer, its SSE event written W
bytes at a time."""

from __future__ import annotations

from collections.abc import AsyncIterator

import aiohttp
import openai
import orjson
import pytest

from tests.support.bridge import running_sidecar
from tests.support.schema import check_stream
from tests.support.sdk_strict import failure_reason

pytestmark = pytest.mark.store_proven(
    "tests/integration/test_agents_automations_replicas.py",
    "tests/integration/test_input_references.py",
    reason="every store/postgres line it covers on PostgreSQL is covered by the modules named (scripts/pg-coverage)",
)

LIMIT = 16 * 1024 * 1024


async def stream_events(http: aiohttp.ClientSession, text: str) -> list[dict]:
    async with http.post("/v1/responses", json={"model": "fake-model", "input": text, "stream": True}) as response:
        assert response.status == 200
        return check_stream(await response.read())


async def test_a_2mb_event_in_512_byte_writes_streams_through(http: aiohttp.ClientSession) -> None:
    size = 2 * 1024 * 1024
    events = await stream_events(http, f"big one [huge={size}:512]")
    assert events[-1]["type"] == "response.completed"
    text = events[-1]["response"]["output"][0]["content"][0]["text"]
    assert text == "x" * size + " Echo: big one"
    deltas = [e["delta"] for e in events if e["type"] == "response.output_text.delta"]
    # the huge word arrives in bounded slices (engine/responses/long_events.py), which join back to exactly its text
    assert "".join(deltas) == text
    assert len(deltas) > 2 and max(len(delta) for delta in deltas) < size


async def test_an_event_over_the_limit_fails_the_stream(http: aiohttp.ClientSession,
                                                        client: openai.AsyncOpenAI) -> None:
    events = await stream_events(http, f"too big [huge={LIMIT + 1024}:1048576]")
    failed = events[-1]
    assert failed["type"] == "response.failed"
    error = failed["response"]["error"]
    assert failure_reason(error) == "upstream_too_large"
    assert f"{LIMIT} bytes" in error["message"] and "RESPONSES_BRIDGE_MAX_EVENT_BYTES" in error["message"]
    assert not any(e["type"] == "response.output_text.delta" for e in events)  # nothing of it was forwarded
    stored = await client.responses.retrieve(failed["response"]["id"])
    assert stored.status == "failed" and failure_reason(stored.error) == "upstream_too_large"


async def test_a_json_answer_over_the_limit_is_a_502(http: aiohttp.ClientSession) -> None:
    body = {"model": "fake-model", "input": f"too big [huge={LIMIT + 1024}:1048576]"}
    async with http.post("/v1/responses", json=body) as response:
        assert response.status == 502
        error = (await response.json())["error"]
    assert error["code"] == "upstream_too_large" and "RESPONSES_BRIDGE_MAX_EVENT_BYTES" in error["message"]


# --- a sidecar with small limits (HTTP door only): request bodies and whole upstream answers -------------------

SMALL_REQUEST = 1024 * 1024
SMALL_EVENT = 64 * 1024


@pytest.fixture(scope="module")
async def small(fake_upstream: str, tmp_path_factory: pytest.TempPathFactory) -> AsyncIterator[str]:
    env = {"RESPONSES_BRIDGE_MAX_REQUEST_BYTES": str(SMALL_REQUEST),
           "RESPONSES_BRIDGE_MAX_EVENT_BYTES": str(SMALL_EVENT)}
    async with running_sidecar(str(tmp_path_factory.mktemp("small")), fake_upstream, env=env,
                               extproc=False) as sidecar:
        yield sidecar.http_url


async def chunked(data: bytes) -> AsyncIterator[bytes]:
    """A body without Content-Length: its size is only known once it has been read."""
    for start in range(0, len(data), 64 * 1024):
        yield data[start:start + 64 * 1024]


@pytest.mark.parametrize("declared", [True, False])
async def test_a_request_body_over_the_limit_is_a_413(small: str, declared: bool) -> None:
    def body(size: int) -> bytes:  # a large first message and a short question: the answer stays small
        return orjson.dumps({"model": "fake-model", "input": [{"role": "user", "content": "x" * size},
                                                              {"role": "user", "content": "and?"}]})
    fits, too_big = body(SMALL_REQUEST - 1000), body(SMALL_REQUEST)
    async with aiohttp.ClientSession(base_url=small) as session:
        for body, status in ((too_big, 413), (fits, 200)):
            data = body if declared else chunked(body)
            async with session.post("/v1/responses", data=data,
                                    headers={"Content-Type": "application/json"}) as response:
                assert response.status == status
                answer = await response.json()
            if status == 413:
                assert answer["error"]["code"] == "request_too_large"
            else:
                assert answer["status"] == "completed"


@pytest.mark.parametrize("declared", [True, False])
async def test_an_embeddings_body_over_the_limit_is_a_413(small: str, declared: bool) -> None:
    """``/v1/embeddings`` reads its body under the same bound as every route: one long input cannot make the
    sidecar hold (and parse, and weigh) more than ``RESPONSES_BRIDGE_MAX_REQUEST_BYTES``."""
    too_big = orjson.dumps({"model": "tokenlearn-static-model", "input": "x" * SMALL_REQUEST})
    async with aiohttp.ClientSession(base_url=small) as session:
        async with session.post("/v1/embeddings", data=too_big if declared else chunked(too_big),
                                headers={"Content-Type": "application/json"}) as response:
            assert response.status == 413
            assert (await response.json())["error"]["code"] == "request_too_large"


async def test_a_compaction_answer_over_the_limit_is_a_502(small: str) -> None:
    body = {"model": "fake-model", "input": [
        {"role": "user", "content": f"remember this [huge={SMALL_EVENT}:{SMALL_EVENT}]"},
        {"role": "assistant", "content": "noted"},
        {"role": "user", "content": "what now?"},
    ]}
    async with aiohttp.ClientSession(base_url=small) as session:
        async with session.post("/v1/responses/compact", json=body) as response:
            assert response.status == 502
            error = (await response.json())["error"]
        assert error["code"] == "upstream_too_large" and f"{SMALL_EVENT} bytes" in error["message"]
        body["input"][0]["content"] = "remember this"  # the same request, with a summary of normal size
        async with session.post("/v1/responses/compact", json=body) as response:
            assert response.status == 200


async def test_the_json_answer_limit_is_configurable(small: str) -> None:
    async with aiohttp.ClientSession(base_url=small) as session:
        async with session.post("/v1/responses", json={"model": "fake-model",
                                                        "input": f"big [huge={SMALL_EVENT}:4096]"}) as response:
            assert response.status == 502
            assert f"{SMALL_EVENT} bytes" in (await response.json())["error"]["message"]
        async with session.post("/v1/responses", json={"model": "fake-model", "input": f"big [huge={SMALL_EVENT}:4096]",
                                                        "stream": True}) as response:
            events = check_stream(await response.read())
        assert events[-1]["type"] == "response.failed"
        assert failure_reason(events[-1]["response"]["error"]) == "upstream_too_large"
