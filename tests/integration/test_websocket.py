"""WebSocket mode through both doors: raw aiohttp frames and the openai SDK's ``responses.connect``."""

from __future__ import annotations

import json

import aiohttp
import openai
import pytest

from tests.support.bridge import UpstreamLog
from tests.support.schema import check_sequence, validate_event
from tests.support.sdk_strict import failure_reason, strict_ws_event

pytestmark = pytest.mark.store_proven(
    "tests/integration/test_postgres_start.py",
    "tests/integration/test_replicas_code.py",
    "tests/unit/test_store_contract.py",
    reason="every store/postgres line it covers on PostgreSQL is covered by the modules named (scripts/pg-coverage)",
)

MODEL = "fake-model"
TERMINAL = {"response.completed", "response.failed", "response.incomplete", "error"}


async def turn(ws: aiohttp.ClientWebSocketResponse, **fields) -> list[dict]:
    await ws.send_str(json.dumps({"type": "response.create", "model": MODEL, **fields}))
    events = []
    while True:
        message = await ws.receive(timeout=30)
        assert message.type == aiohttp.WSMsgType.TEXT, message
        assert not message.data.startswith(("event:", "data:")), message.data
        event = json.loads(message.data)
        strict_ws_event(event)  # as client.responses.connect() reads it, strictly
        events.append(event)
        if event["type"] in TERMINAL:
            return events


@pytest.fixture
async def ws_session(base_url: str):
    async with aiohttp.ClientSession(base_url=base_url) as session:
        yield session


async def test_one_turn_streams_json_events(ws_session: aiohttp.ClientSession) -> None:
    async with ws_session.ws_connect("/v1/responses") as ws:
        events = await turn(ws, input="hello socket")
    for event in events:
        validate_event(event)
    check_sequence(events)
    kinds = [event["type"] for event in events]
    assert kinds[:2] == ["response.created", "response.in_progress"]
    assert kinds[-1] == "response.completed"
    assert "response.output_text.delta" in kinds
    assert [event["sequence_number"] for event in events] == list(range(len(events)))
    assert events[-1]["response"]["output"][0]["content"][0]["text"] == "Echo: hello socket"


async def test_unversioned_path(ws_session: aiohttp.ClientSession) -> None:
    async with ws_session.ws_connect("/responses") as ws:
        events = await turn(ws, input="no prefix")
    assert events[-1]["type"] == "response.completed"


async def test_store_false_turns_chain_on_the_same_socket_only(ws_session: aiohttp.ClientSession,
                                                               upstream_log: UpstreamLog) -> None:
    async with ws_session.ws_connect("/v1/responses") as ws:
        first = await turn(ws, input="remember apples", store=False)
        first_id = first[-1]["response"]["id"]
        second = await turn(ws, input="what did I say?", store=False, previous_response_id=first_id)
        assert second[-1]["type"] == "response.completed"
        messages = (await upstream_log.last_body())["messages"]
        texts = [m["content"] if isinstance(m["content"], str) else m["content"][0]["text"] for m in messages]
        assert texts == ["remember apples", "Echo: remember apples", "what did I say?"]
        third = await turn(ws, input="and again", store=False, previous_response_id=second[-1]["response"]["id"])
        assert third[-1]["type"] == "response.completed"
        assert len((await upstream_log.last_body())["messages"]) == 5
    # not stored, so another socket (or HTTP) cannot continue it
    async with ws_session.ws_connect("/v1/responses") as other:
        refused = await turn(other, input="x", previous_response_id=first_id)
    assert refused == [{"type": "error", "status": 400, "error": {
        "code": "previous_response_not_found", "message": refused[0]["error"]["message"],
        "param": "previous_response_id", "type": "invalid_request_error"}}]


async def test_stored_turns_continue_anywhere(ws_session: aiohttp.ClientSession,
                                              client: openai.AsyncOpenAI) -> None:
    async with ws_session.ws_connect("/v1/responses") as ws:
        first = await turn(ws, input="stored turn")
    response_id = first[-1]["response"]["id"]
    assert (await client.responses.retrieve(response_id)).output_text == "Echo: stored turn"
    async with ws_session.ws_connect("/v1/responses") as ws:
        second = await turn(ws, input="next", previous_response_id=response_id)
    assert second[-1]["type"] == "response.completed"


async def test_failed_turn_evicts(ws_session: aiohttp.ClientSession) -> None:
    async with ws_session.ws_connect("/v1/responses") as ws:
        first = await turn(ws, input="one", store=False)
        first_id = first[-1]["response"]["id"]
        failed = await turn(ws, input="two [error=500]", store=False, previous_response_id=first_id)
        assert failed[-1]["type"] == "response.failed"
        again = await turn(ws, input="three", store=False, previous_response_id=first_id)
        assert again[-1]["type"] == "error"
        assert again[-1]["error"]["code"] == "previous_response_not_found"
        # the socket is still good
        fresh = await turn(ws, input="four", store=False)
        assert fresh[-1]["type"] == "response.completed"


async def test_errors_keep_the_socket_open(ws_session: aiohttp.ClientSession) -> None:
    async with ws_session.ws_connect("/v1/responses") as ws:
        await ws.send_str("not json")
        error = json.loads((await ws.receive(timeout=10)).data)
        assert error["type"] == "error" and error["status"] == 400
        await ws.send_str(json.dumps({"type": "response.cancel"}))
        error = json.loads((await ws.receive(timeout=10)).data)
        assert error["error"]["param"] == "type"
        missing = await turn(ws, model=None, input="x")
        assert missing[-1]["error"]["param"] == "model"
        upstream_refused = await turn(ws, input="bad [error=400]")
        assert upstream_refused[-1]["type"] == "error" and upstream_refused[-1]["status"] == 400
        background = await turn(ws, input="x", background=True)
        assert background[-1]["error"]["param"] == "background"
        ok = await turn(ws, input="still here")
        assert ok[-1]["type"] == "response.completed"


async def test_an_incomplete_upgrade_is_refused_and_a_plain_get_lists(http: aiohttp.ClientSession) -> None:
    # an upgrade without its handshake headers: WebSocket mode's own error, not the list
    async with http.get("/v1/responses", headers={"Connection": "Upgrade", "Upgrade": "websocket"}) as answer:
        assert answer.status == 400
        assert (await answer.json())["error"]["code"] == "websocket_upgrade_required"
    async with http.get("/v1/responses", params={"limit": "1"}) as answer:  # GET /v1/responses without Upgrade
        assert answer.status == 200 and (await answer.json())["object"] == "list"


async def test_sdk_connect(client: openai.AsyncOpenAI) -> None:
    pytest.importorskip("websockets")
    async with client.responses.connect() as connection:
        await connection.response.create(model=MODEL, input="from the sdk", store=False)
        first = None
        async for event in connection:
            if event.type == "response.completed":
                first = event.response
                break
            assert event.type != "error", event
        assert first is not None and first.output_text == "Echo: from the sdk"
        await connection.response.create(model=MODEL, input="second", store=False, previous_response_id=first.id)
        async for event in connection:
            if event.type in ("response.completed", "error"):
                assert event.type == "response.completed", event
                assert event.response.output_text == "Echo: second"
                break


async def test_stream_id_is_echoed(ws_session: aiohttp.ClientSession) -> None:
    async with ws_session.ws_connect("/v1/responses") as ws:
        events = await turn(ws, input="lane", stream_id="lane-7")
        assert {event["stream_id"] for event in events} == {"lane-7"}
        refused = await turn(ws, input="x", previous_response_id="resp_nope", stream_id="lane-8")
        assert refused[-1]["stream_id"] == "lane-8"
        plain = await turn(ws, input="no lane")
        assert all("stream_id" not in event for event in plain)


async def test_closing_mid_turn_records_the_response_as_failed(ws_session: aiohttp.ClientSession,
                                                               client: openai.AsyncOpenAI) -> None:
    import asyncio

    async with ws_session.ws_connect("/v1/responses") as ws:
        await ws.send_str(json.dumps({"type": "response.create", "model": MODEL,
                                      "input": "slow [chunks=50] [delay=100]"}))
        created = json.loads((await ws.receive(timeout=10)).data)
        assert created["type"] == "response.created"
    response_id = created["response"]["id"]
    for _ in range(600):
        try:
            stored = await client.responses.retrieve(response_id)
        except openai.NotFoundError:
            await asyncio.sleep(0.05)
            continue
        break
    assert stored.status == "failed" and failure_reason(stored.error) == "client_disconnected"


async def test_generate_false_warms_up_without_the_model(ws_session: aiohttp.ClientSession,
                                                         upstream_log: UpstreamLog) -> None:
    async with ws_session.ws_connect("/v1/responses") as ws:
        warm = await turn(ws, input="context to keep", store=False, generate=False)
        assert warm[-1]["type"] == "response.completed"
        assert warm[-1]["response"]["output"] == []
        assert await upstream_log.entries() == []
        follow = await turn(ws, input="now answer", store=False, previous_response_id=warm[-1]["response"]["id"])
        assert follow[-1]["type"] == "response.completed"
        sent = (await upstream_log.last_body())["messages"]
        assert [m["content"] for m in sent] == ["context to keep", "now answer"]
