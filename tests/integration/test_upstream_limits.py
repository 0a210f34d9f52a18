"""Large upstream events, through both doors: one arriving in small reads streams through intact, and one over
``RESPONSES_BRIDGE_MAX_EVENT_BYTES`` (16 MiB by default) fails its response with ``response.failed`` (or a 502
for a JSON client) that names the limit, and is stored as failed.

The fake upstream's ``[huge=N:W]`` directive puts an N-byte word first in the answer, its SSE event written W
bytes at a time."""

from __future__ import annotations

import aiohttp
import openai

from tests.support.schema import check_stream

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
    assert deltas[0] == "x" * size + " "


async def test_an_event_over_the_limit_fails_the_stream(http: aiohttp.ClientSession,
                                                        client: openai.AsyncOpenAI) -> None:
    events = await stream_events(http, f"too big [huge={LIMIT + 1024}:1048576]")
    failed = events[-1]
    assert failed["type"] == "response.failed"
    error = failed["response"]["error"]
    assert error["code"] == "upstream_too_large"
    assert f"{LIMIT} bytes" in error["message"] and "RESPONSES_BRIDGE_MAX_EVENT_BYTES" in error["message"]
    assert not any(e["type"] == "response.output_text.delta" for e in events)  # nothing of it was forwarded
    stored = await client.responses.retrieve(failed["response"]["id"])
    assert stored.status == "failed" and stored.error is not None and stored.error.code == "upstream_too_large"


async def test_a_json_answer_over_the_limit_is_a_502(http: aiohttp.ClientSession) -> None:
    body = {"model": "fake-model", "input": f"too big [huge={LIMIT + 1024}:1048576]"}
    async with http.post("/v1/responses", json=body) as response:
        assert response.status == 502
        error = (await response.json())["error"]
    assert error["code"] == "upstream_too_large" and "RESPONSES_BRIDGE_MAX_EVENT_BYTES" in error["message"]
