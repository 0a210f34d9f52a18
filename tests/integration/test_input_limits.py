"""Input items per request are bounded (the ``max_input_items`` setting, 100,000 by default): one item past it is a
400 ``array_above_max_length`` naming ``input``, through both doors (the ext_proc door through a real Envoy) and as
a WebSocket frame arrives, before the turn waits, and the socket serves its next turn (at the limit a request
parses: tests/unit/test_request_checks.py)."""

from __future__ import annotations

import json

import aiohttp
import openai
import pytest

from responses_bridge.protocol.responses.request import DEFAULT_MAX_INPUT_ITEMS
from tests.support.bridge import Sidecar

pytestmark = pytest.mark.store_proven(
    "tests/integration/test_replicas.py",
    reason="every store/postgres line it covers on PostgreSQL is covered by the modules named (scripts/pg-coverage)",
)

MODEL = "fake-model"


def items(count: int) -> list[dict[str, str]]:
    return [{"role": "user", "content": "x"}] * count


async def test_one_item_past_the_limit_is_a_400_naming_input(client: openai.AsyncOpenAI) -> None:
    with pytest.raises(openai.BadRequestError) as caught:
        # the items as extra_body: the SDK sends them as they are (as `input`, they cost seconds of its own
        # transforms per call, which this test is not about)
        await client.responses.create(model=MODEL, extra_body={"input": items(DEFAULT_MAX_INPUT_ITEMS + 1)},
                                      store=True)
    error = caught.value.body
    assert isinstance(error, dict)
    assert error["param"] == "input" and error["code"] == "array_above_max_length", error
    assert f"maximum length {DEFAULT_MAX_INPUT_ITEMS}" in error["message"]
    assert f"length {DEFAULT_MAX_INPUT_ITEMS + 1} instead" in error["message"]


async def test_a_stream_past_the_limit_is_refused_before_it_opens(http: aiohttp.ClientSession) -> None:
    body = {"model": MODEL, "stream": True, "input": items(DEFAULT_MAX_INPUT_ITEMS + 5)}
    async with http.post("/v1/responses", json=body) as answer:
        assert answer.status == 400
        error = (await answer.json())["error"]
    assert error["param"] == "input" and error["code"] == "array_above_max_length"
    assert error["type"] == "invalid_request_error"


async def test_a_websocket_frame_past_the_limit_is_refused_as_it_arrives(sidecar: Sidecar) -> None:
    async with aiohttp.ClientSession(base_url=sidecar.http_url) as session, \
            session.ws_connect("/v1/responses") as ws:
        await ws.send_str(json.dumps({"type": "response.create", "model": MODEL,
                                      "input": items(DEFAULT_MAX_INPUT_ITEMS + 1)}))
        refused = json.loads((await ws.receive(timeout=60)).data)
        assert refused["type"] == "error" and refused["status"] == 400, refused
        assert refused["error"]["param"] == "input" and refused["error"]["code"] == "array_above_max_length"
        await ws.send_str(json.dumps({"type": "response.create", "model": MODEL, "input": "hello"}))
        while (event := json.loads((await ws.receive(timeout=60)).data))["type"] != "response.completed":
            assert event["type"] != "error", event  # the socket serves its next turn
