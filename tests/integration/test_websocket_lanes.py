"""WebSocket lanes (``stream_id``) through both doors, with raw aiohttp frames: lanes run at once on one socket,
turns on a lane run in order, every event echoes its lane, a lane forks another's chain by
``previous_response_id``, a lane past the limit is refused, and a closed socket stops every lane's run."""

from __future__ import annotations

import asyncio
import json
from typing import Any

import aiohttp
import openai
import pytest
from openai.types.beta.beta_responses_server_event import BetaResponseWsError

from tests.support.bridge import UpstreamLog
from tests.support.schema import check_sequence, validate_event
from tests.support.sdk_strict import failure_reason, strict_ws_event

pytestmark = pytest.mark.store_proven(
    "tests/integration/test_replicas.py",
    "tests/integration/test_input_references.py",
    reason="every store/postgres line it covers on PostgreSQL is covered by the modules named (scripts/pg-coverage)",
)

MODEL = "fake-model"
TERMINAL = {"response.completed", "response.failed", "response.incomplete", "error"}
SLOW = "[chunks=30] [delay=100]"  # three seconds of stream: long enough for another lane to finish meanwhile


@pytest.fixture
async def ws_session(base_url: str):
    async with aiohttp.ClientSession(base_url=base_url) as session:
        yield session


async def create(ws: aiohttp.ClientWebSocketResponse, text: str, stream_id: str | None = None,
                 **fields: Any) -> None:
    lane = {"stream_id": stream_id} if stream_id is not None else {}
    await ws.send_str(json.dumps({"type": "response.create", "model": MODEL, "input": text, **lane, **fields}))


async def receive_until(ws: aiohttp.ClientWebSocketResponse, terminals: int) -> list[dict]:
    """Every event until ``terminals`` terminal events (one per turn) have arrived, in arrival order."""
    events: list[dict] = []
    while terminals:
        message = await ws.receive(timeout=60)
        assert message.type == aiohttp.WSMsgType.TEXT, message
        event = json.loads(message.data)
        strict_ws_event(event)
        events.append(event)
        terminals -= event["type"] in TERMINAL
    return events


def lane_events(events: list[dict], stream_id: str | None) -> list[dict]:
    return [event for event in events if event.get("stream_id") == stream_id]


def check_lane(events: list[dict], stream_id: str) -> None:
    """One response's events on one lane: each carries this ``stream_id`` (as the SDK's beta WebSocket server
    events name it) and, with the lane key set aside, is the spec's event, in the spec's sequence."""
    for event in events:
        assert event["stream_id"] == stream_id, event
        validate_event({key: value for key, value in event.items() if key != "stream_id"})
    check_sequence([{key: value for key, value in event.items() if key != "stream_id"} for event in events])


async def test_two_lanes_run_at_once_and_each_event_names_its_lane(ws_session: aiohttp.ClientSession) -> None:
    async with ws_session.ws_connect("/v1/responses") as ws:
        await create(ws, f"slow {SLOW}", "slow")
        await create(ws, "fast", "fast")
        events = await receive_until(ws, 2)
    terminals = [event for event in events if event["type"] in TERMINAL]
    # sent second, finished first: the fast lane did not wait for the slow one
    assert [(event["type"], event["stream_id"]) for event in terminals] == [
        ("response.completed", "fast"), ("response.completed", "slow")]
    assert all("stream_id" in event for event in events)
    slow, fast = lane_events(events, "slow"), lane_events(events, "fast")
    assert len(slow) + len(fast) == len(events)
    check_lane(slow, "slow")
    check_lane(fast, "fast")
    assert fast[-1]["response"]["output"][0]["content"][0]["text"] == "Echo: fast"
    assert slow[-1]["response"]["output"][0]["content"][0]["text"].startswith("Echo: slow")


async def test_turns_on_one_lane_run_in_order(ws_session: aiohttp.ClientSession) -> None:
    async with ws_session.ws_connect("/v1/responses") as ws:
        await create(ws, "first [chunks=10] [delay=50]", "a")
        await create(ws, "second", "a")
        await create(ws, "default lane [chunks=5] [delay=50]")
        await create(ws, "default again")
        events = await receive_until(ws, 4)
    on_a, default = lane_events(events, "a"), lane_events(events, None)
    assert len(on_a) + len(default) == len(events)
    assert all("stream_id" not in event for event in default)  # no stream_id sent: none echoed
    for lane in (on_a, default):
        ends = [index for index, event in enumerate(lane) if event["type"] in TERMINAL]
        assert len(ends) == 2
        first, second = lane[:ends[0] + 1], lane[ends[0] + 1:]
        assert [event["type"] for event in (first[-1], second[-1])] == ["response.completed"] * 2
        # the second turn of a lane starts only once the first has ended
        assert second[0]["type"] == "response.created" and second[0]["sequence_number"] == 0
        assert first[-1]["response"]["id"] != second[-1]["response"]["id"]
    texts = [lane[-1]["response"]["output"][0]["content"][0]["text"] for lane in (on_a, default)]
    assert texts == ["Echo: second", "Echo: default again"]


async def test_a_lane_forks_another_lanes_response(ws_session: aiohttp.ClientSession,
                                                   upstream_log: UpstreamLog) -> None:
    async with ws_session.ws_connect("/v1/responses") as ws:
        await create(ws, "remember apples", "a", store=False)
        first = await receive_until(ws, 1)
        assert first[-1]["type"] == "response.completed" and first[-1]["stream_id"] == "a"
        first_id = first[-1]["response"]["id"]
        for lane, question in (("b", "what fruit?"), ("c", "which again?")):
            await create(ws, question, lane, store=False, previous_response_id=first_id)
            forked = await receive_until(ws, 1)
            assert forked[-1]["type"] == "response.completed", forked[-1]
            assert {event["stream_id"] for event in forked} == {lane}
            messages = (await upstream_log.last_body())["messages"]
            texts = [m["content"] if isinstance(m["content"], str) else m["content"][0]["text"] for m in messages]
            assert texts == ["remember apples", "Echo: remember apples", question]


async def test_a_lane_past_the_limit_is_refused(ws_session: aiohttp.ClientSession) -> None:
    async with ws_session.ws_connect("/v1/responses") as ws:
        for lane in range(8):  # the default limit: every one busy streaming for three seconds
            await create(ws, f"busy {SLOW}", f"lane-{lane}", store=False)
        await create(ws, "one too many", "lane-8", store=False)
        refused = None
        while refused is None:
            event = json.loads((await ws.receive(timeout=30)).data)
            if event["type"] == "error":
                refused = event
        assert refused == {"type": "error", "status": 400, "stream_id": "lane-8", "error": {
            "code": "too_many_lanes", "message": refused["error"]["message"], "param": "stream_id",
            "type": "invalid_request_error"}}
        assert "8" in refused["error"]["message"]
        assert BetaResponseWsError.model_validate(refused).stream_id == "lane-8"
        # a busy lane still takes turns, and the refused lane works once the others have ended
        await create(ws, "queued behind", "lane-0", store=False)
        events = await receive_until(ws, 9)
        ended = [event["stream_id"] for event in events if event["type"] == "response.completed"]
        assert sorted(ended) == sorted([f"lane-{lane}" for lane in range(8)] + ["lane-0"])
        await create(ws, "now there is room", "lane-8", store=False)
        later = await receive_until(ws, 1)
        assert later[-1]["type"] == "response.completed" and later[-1]["stream_id"] == "lane-8"


async def stored_after_close(client: openai.AsyncOpenAI, response_id: str) -> Any:
    for _ in range(600):
        try:
            stored = await client.responses.retrieve(response_id)
        except openai.NotFoundError:
            await asyncio.sleep(0.05)
            continue
        if stored.status != "in_progress":
            return stored
        await asyncio.sleep(0.05)
    raise AssertionError(f"{response_id} was never recorded as ended")


async def test_closing_the_socket_stops_every_lane(ws_session: aiohttp.ClientSession,
                                                   client: openai.AsyncOpenAI) -> None:
    async with ws_session.ws_connect("/v1/responses") as ws:
        await create(ws, f"left behind {SLOW}", "one")
        await create(ws, f"also left {SLOW}", "two")
        created: dict[str, str] = {}
        while len(created) < 2:
            event = json.loads((await ws.receive(timeout=30)).data)
            if event["type"] == "response.created":
                created[event["stream_id"]] = event["response"]["id"]
    for response_id in created.values():
        stored = await stored_after_close(client, response_id)
        assert stored.status == "failed" and failure_reason(stored.error) == "client_disconnected", stored


async def test_a_stream_id_that_is_not_a_string_is_refused(ws_session: aiohttp.ClientSession) -> None:
    async with ws_session.ws_connect("/v1/responses") as ws:
        await ws.send_str(json.dumps({"type": "response.create", "model": MODEL, "input": "x", "stream_id": 7}))
        refused = json.loads((await ws.receive(timeout=10)).data)
        assert refused["error"]["param"] == "stream_id" and refused["status"] == 400
        assert refused["error"]["code"] == "invalid_type"
        await create(ws, "still open", "ok")
        assert (await receive_until(ws, 1))[-1]["type"] == "response.completed"
