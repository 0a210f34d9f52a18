"""A response that fails reads as the SDK's own types, strictly, wherever a client meets it (issue 57 item 2): its
``response.failed`` event, the stored Response (``GET /v1/responses/{id}``), a background run's replay, and every
frame of WebSocket mode — for each way the fake upstream can fail one (silence past the idle timeout, a connection
cut mid-stream, a 5xx, an event over ``RESPONSES_BRIDGE_MAX_EVENT_BYTES``, a chunk that is not JSON) and for a
client that hangs up, through both doors.

A failed Response's ``error.code`` is one of the SDK's ``ResponseError`` codes; the bridge's own reason leads the
message (engine/response_error.py). An HTTP error body is not a Response and keeps the bridge's code.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from typing import Any

import aiohttp
import openai
import pytest

from tests.support.gateway import Gateway, running_gateway
from tests.support.schema import check_sequence, parse_sse
from tests.support.sdk_strict import failure_reason, strict_event, strict_response, strict_ws_event

pytestmark = pytest.mark.store_proven(
    "tests/integration/test_agents_automations_replicas.py",
    "tests/integration/test_replicas.py",
    "tests/unit/test_store_contract.py",
    reason="every store/postgres line it covers on PostgreSQL is covered by the modules named (scripts/pg-coverage)",
)

MAX_EVENT_BYTES = 65536

# How the fake upstream fails a response (demo/fake_upstream.py, 9 and 13), and the reasons each path can give for it:
# "" is a failure under OpenAI's own code (no reason of the bridge's), None a response the path completes, "reply"
# an error answer instead of a stream. The sidecar runs background and WebSocket turns itself, through Envoy
# (--upstream-via); Envoy's door hands the upstream's bytes to the processor (no idle timeout of the sidecar's, and
# a connection cut before Envoy passed the answer on is Envoy's own 502).
SIDECAR, ENVOY = "sidecar", "envoy"
FAILURES: dict[str, tuple[str, dict[str, set[str | None]]]] = {
    "timeout": ("[stall_after=2:4000] one two three four", {SIDECAR: {"upstream_timeout"}, ENVOY: {None}}),
    # Envoy, between the sidecar and the upstream, either resets the stream it began or answers 502 itself
    "cut": ("[cut=2] one two three four", {SIDECAR: {"upstream_connection_error", "upstream_timeout", ""},
                                           ENVOY: {"reply", ""}}),
    "5xx": ("[error=503] one two", {SIDECAR: {""}, ENVOY: {""}}),
    "too_large": (f"[huge={4 * MAX_EVENT_BYTES}:8192] one two", {SIDECAR: {"upstream_too_large"},
                                                                 ENVOY: {"upstream_too_large"}}),
    "malformed": ("[garbage] one two three", {SIDECAR: {""}, ENVOY: {""}}),
}
JSON_FAILURES = {"timeout": "[stall=4000] one two", "5xx": "[error=503] one two",
                 "too_large": f"[huge={4 * MAX_EVENT_BYTES}:8192] one two"}


@pytest.fixture(scope="module")
async def gateway(fake_upstream: str, tmp_path_factory: pytest.TempPathFactory) -> AsyncIterator[Gateway]:
    """Both doors of one sidecar that gives up on a silent upstream after 1 s and holds at most 64 KiB of one
    upstream event."""
    env = {"RESPONSES_BRIDGE_UPSTREAM_IDLE_TIMEOUT": "1", "RESPONSES_BRIDGE_MAX_EVENT_BYTES": str(MAX_EVENT_BYTES)}
    async with running_gateway(str(tmp_path_factory.mktemp("failing")), fake_upstream, env=env) as started:
        yield started


@pytest.fixture
def door_name(door_url: str, gateway: Gateway) -> str:
    """Who meets the upstream's failure on a streamed create: the sidecar (HTTP door) or Envoy's door."""
    return SIDECAR if door_url == gateway.sidecar.http_url else ENVOY


def _reason(error: dict[str, Any] | Any) -> str:
    """The bridge's reason for a failed Response, or "" when its code is OpenAI's own (a 5xx, a broken stream)."""
    code = error["code"] if isinstance(error, dict) else error.code
    message = error["message"] if isinstance(error, dict) else error.message
    if code == "server_error" and ": " in message and message.split(": ", 1)[0].isidentifier():
        reason = failure_reason(error)
        return reason if reason.islower() else ""
    return ""


async def _stored(http: aiohttp.ClientSession, response_id: str, *, until: str = "failed") -> dict[str, Any]:
    for _ in range(600):
        async with http.get(f"/v1/responses/{response_id}") as answer:
            if answer.status == 200:
                body = await answer.json()
                if body["status"] == until:
                    return body
        await asyncio.sleep(0.05)
    raise AssertionError(f"{response_id} never became {until}")


@pytest.mark.parametrize("failure", sorted(FAILURES))
async def test_a_streamed_failure_and_its_stored_response_validate(door_url: str, door_name: str,
                                                                   failure: str) -> None:
    prompt, reasons = FAILURES[failure]
    async with aiohttp.ClientSession(base_url=door_url) as http:
        async with http.post("/v1/responses", json={"model": "fake-model", "input": prompt, "stream": True}) as r:
            try:
                raw = await r.read()
            except aiohttp.ClientPayloadError:  # the cut reached the client: Envoy reset the stream it began
                assert failure == "cut" and door_name == ENVOY
                return
            if r.status != 200:  # Envoy's own reply: an error body, not a Response
                assert "reply" in reasons[door_name], raw
                assert set(json.loads(raw)["error"]) == {"message", "type", "param", "code"}
                return
            events = parse_sse(raw)
        check_sequence(events)
        for event in events:
            strict_event(event)
        last = events[-1]
        if None in reasons[door_name] and last["type"] == "response.completed":
            return
        assert last["type"] == "response.failed", [event["type"] for event in events]
        assert _reason(last["response"]["error"]) in reasons[door_name], last["response"]["error"]
        stored = await _stored(http, last["response"]["id"])
    strict_response(stored)
    assert stored["error"] == last["response"]["error"]


@pytest.mark.parametrize("failure", sorted(FAILURES))
async def test_a_background_failure_its_retrieval_and_replay_validate(door_url: str, sdk: openai.AsyncOpenAI,
                                                                      failure: str) -> None:
    prompt, reasons = FAILURES[failure]
    created = await sdk.responses.create(model="fake-model", input=prompt, background=True)
    async with aiohttp.ClientSession(base_url=door_url) as http:
        stored = await _stored(http, created.id)
        strict_response(stored)
        assert _reason(stored["error"]) in reasons[SIDECAR], stored["error"]  # a background run is the sidecar's
        async with http.get(f"/v1/responses/{created.id}?stream=true") as replay:
            events = parse_sse(await replay.read())
    for event in events:
        strict_event(event)
    assert events[-1]["type"] == "response.failed" and events[-1]["response"]["error"] == stored["error"]
    retrieved = await sdk.responses.retrieve(created.id)  # the SDK's own reading
    assert retrieved.status == "failed" and retrieved.error is not None
    assert (retrieved.error.code, retrieved.error.message) == (stored["error"]["code"], stored["error"]["message"])


@pytest.mark.parametrize("failure", sorted(JSON_FAILURES))
async def test_a_json_failure_is_an_error_body_or_a_failed_response(door_url: str, door_name: str,
                                                                    failure: str) -> None:
    """A JSON client gets the failure as an HTTP error (not a Response: the bridge's code kept), or, once the
    answer is under way, as a failed Response that validates."""
    async with aiohttp.ClientSession(base_url=door_url) as http:
        async with http.post("/v1/responses", json={"model": "fake-model", "input": JSON_FAILURES[failure]}) as r:
            body = await r.json()
    if r.status == 200:
        strict_response(body)
        assert body["status"] == "failed" or (None in FAILURES[failure][1][door_name] and body["status"] == "completed")
    else:
        assert r.status >= 500 and set(body) == {"error"}
        assert set(body["error"]) == {"message", "type", "param", "code"} and body["error"]["code"]
        if failure in ("timeout", "too_large") and door_name == SIDECAR:
            assert body["error"]["code"] == f"upstream_{failure}"


async def test_a_client_that_hangs_up_leaves_a_response_that_validates(door_url: str) -> None:
    async with aiohttp.ClientSession(base_url=door_url) as http:
        body = {"model": "fake-model", "input": "[delay=100] [chunks=40] slow", "stream": True}
        async with http.post("/v1/responses", json=body) as r:
            first = await r.content.readuntil(b"\n\n")
            response_id = parse_sse(first + b"data: [DONE]\n\n")[0]["response"]["id"]
            r.close()
        stored = await _stored(http, response_id)
    strict_response(stored)
    assert _reason(stored["error"]) == "client_disconnected"


# --- WebSocket mode, through the SDK's own client.responses.connect() -------------------------------------------


async def _frames(connection: Any) -> list[dict[str, Any]]:
    """Every frame of one turn, as sent, until its terminal one; each also parsed as the SDK's client parses it."""
    frames: list[dict[str, Any]] = []
    while True:
        raw = await asyncio.wait_for(connection.recv_bytes(), timeout=60)
        frame = json.loads(raw)
        assert connection.parse_event(raw).type == frame["type"]
        frames.append(frame)
        if frame["type"] in ("response.completed", "response.failed", "response.incomplete", "error"):
            return frames


@pytest.mark.parametrize("failure", sorted(FAILURES))
async def test_a_failed_turn_over_websocket_validates(sdk: openai.AsyncOpenAI, failure: str) -> None:
    prompt, reasons = FAILURES[failure]
    async with sdk.responses.connect() as connection:
        await connection.response.create(model="fake-model", input=prompt, stream_id="lane-1")  # type: ignore[call-arg]
        frames = await _frames(connection)
    for frame in frames:
        strict_ws_event(frame)
    assert {frame.get("stream_id") for frame in frames} == {"lane-1"}
    last = frames[-1]
    if last["type"] == "error":  # refused before its first event: the bridge's code kept
        assert last["error"]["code"] and "" in reasons[SIDECAR], last
    else:
        assert last["type"] == "response.failed", last
        assert _reason(last["response"]["error"]) in reasons[SIDECAR], last["response"]["error"]


WS_REFUSALS: list[tuple[str, Any, str]] = [
    ("not json", "{not json", "invalid_json"),
    ("unknown event", {"type": "response.nonsense"}, "unsupported_event_type"),
    ("unknown previous response", {"type": "response.create", "model": "fake-model", "input": "x",
                                   "previous_response_id": "resp_nope"}, "previous_response_not_found"),
    ("bad field", {"type": "response.create", "model": "fake-model", "input": "x", "temperature": "hot"},
     "invalid_type"),
]


@pytest.mark.parametrize(("name", "sent", "code"), WS_REFUSALS, ids=[case[0] for case in WS_REFUSALS])
async def test_a_websocket_error_frame_validates(sdk: openai.AsyncOpenAI, name: str, sent: Any, code: str) -> None:
    async with sdk.responses.connect() as connection:
        await connection.send_raw(sent if isinstance(sent, str) else json.dumps(sent))  # type: ignore[attr-defined]
        [frame] = await _frames(connection)
    parsed = strict_ws_event(frame)
    assert parsed.type == "error" and parsed.error.code == code, frame


@pytest.mark.parametrize(("status", "code", "reason"), [(400, "invalid_prompt", ""),
                                                        (401, "invalid_prompt", "invalid_api_key"),
                                                        (429, "rate_limit_exceeded", "")])
async def test_a_background_response_the_upstream_refuses_carries_openais_code(door_url: str,
                                                                               sdk: openai.AsyncOpenAI, status: int,
                                                                               code: str, reason: str) -> None:
    """A refusal (4xx) fails a background response, which has no HTTP status to carry it: ``invalid_prompt`` (the
    request was at fault) or ``rate_limit_exceeded``, the upstream's own code leading the message."""
    created = await sdk.responses.create(model="fake-model", input=f"[error={status}] refuse", background=True)
    async with aiohttp.ClientSession(base_url=door_url) as http:
        stored = await _stored(http, created.id)
    strict_response(stored)
    assert stored["error"]["code"] == code, stored["error"]
    assert stored["error"]["message"].startswith(f"{reason}: " if reason else "fake upstream error"), stored["error"]
