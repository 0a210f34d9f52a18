"""Retrieval end to end, with the real ``openai`` SDK through both doors: upload files, build a vector store
(``vector_stores.create`` with ``file_ids``, ``file_batches``), search it, and ask a question with the
``file_search`` tool: the answer cites the uploaded files with ``file_citation`` annotations.

One sidecar whose own model calls go through Envoy's listener (``--upstream-via``) and one real Envoy in front of
it: the ``http`` door is the sidecar's HTTP server, the ``envoy`` door is Envoy, which routes the Files and Vector
Stores routes, and any request carrying the ``file_search`` tool, to that HTTP server. The fake upstream calls the
file search when the user writes ``call file_search <word>`` and then answers ``Tool result: <what it read>``; what
it read numbers the retrieved chunks ``[1]``, ``[2]``…, so its answer cites them as a model asked to would.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any

import aiohttp
import openai
import orjson
import pytest

from tests.support.bridge import UpstreamLog
from tests.support.envoy import have_envoy
from tests.support.gateway import Gateway, running_gateway
from tests.support.schema import parse_sse, validate_response
from tests.unit.test_server_tool_turns import _item_adapter, check_event, check_item_order

pytestmark = [
    pytest.mark.skipif(not have_envoy(), reason="envoy binary not available"),
    pytest.mark.store_proven(
        "tests/integration/test_replicas_retrieval.py",
        "tests/integration/test_postgres_start.py",
        "tests/unit/test_tenancy_files_store.py",
        "tests/integration/test_input_references.py",
        reason="every store/postgres line it covers on PostgreSQL is covered by the modules named "
               "(scripts/pg-coverage)",
    ),
]

PUMP = (b"# Pump manual\n\nBefore the first start the pump must be primed: fill the casing with water through "
        b"the priming plug, then open the suction valve. A dry start ruins the mechanical seal.\n")
VALVE = (b"Relief valve guide\n\nClose the relief valve slowly, over about ten seconds, so that the pipes are not "
         b"hit by water hammer. Check the valve seat for limescale every spring.\n")
BOILER = b"Boiler notes: the boiler's flue must be swept once a year by a certified sweep.\n"




@pytest.fixture(scope="module")
async def gateway(fake_upstream: str, tmp_path_factory: pytest.TempPathFactory) -> AsyncIterator[Gateway]:
    async with running_gateway(str(tmp_path_factory.mktemp("file_search")), fake_upstream) as started:
        yield started


@dataclass
class Library:
    vector_store_id: str
    pump_id: str
    valve_id: str


async def build_library(sdk: openai.AsyncOpenAI) -> Library:
    """Upload three files; a vector store made with one of them, a batch adding the others; all ingested."""
    pump = await sdk.files.create(file=("pump-manual.md", PUMP), purpose="assistants")
    valve = await sdk.files.create(file=("valve-guide.txt", VALVE), purpose="assistants")
    boiler = await sdk.files.create(file=("boiler.txt", BOILER), purpose="assistants")
    assert (pump.filename, pump.bytes, pump.purpose) == ("pump-manual.md", len(PUMP), "assistants")
    store = await sdk.vector_stores.create(name="plant manuals", file_ids=[pump.id])
    batch = await sdk.vector_stores.file_batches.create_and_poll(
        vector_store_id=store.id, file_ids=[valve.id, boiler.id], poll_interval_ms=100)
    assert batch.status == "completed" and batch.file_counts.completed == 2
    attached = await sdk.vector_stores.files.poll(pump.id, vector_store_id=store.id, poll_interval_ms=100)
    assert attached.status == "completed" and attached.last_error is None
    files = [entry async for entry in sdk.vector_stores.files.list(vector_store_id=store.id)]
    assert sorted(entry.id for entry in files) == sorted([pump.id, valve.id, boiler.id])
    assert all(entry.status == "completed" for entry in files)
    assert (await sdk.vector_stores.retrieve(store.id)).file_counts.completed == 3
    return Library(store.id, pump.id, valve.id)


@pytest.fixture
async def library(sdk: openai.AsyncOpenAI) -> Library:
    return await build_library(sdk)


async def test_the_search_route_finds_the_uploaded_text(sdk: openai.AsyncOpenAI, library: Library) -> None:
    page = await sdk.vector_stores.search(library.vector_store_id, query="how do I prime the pump with water",
                                          max_num_results=2)
    results = [result async for result in page]
    assert results and results[0].file_id == library.pump_id and results[0].filename == "pump-manual.md"
    assert "priming plug" in results[0].content[0].text and 0 <= results[0].score <= 1


def file_search_tool(library: Library, **fields: Any) -> dict[str, Any]:
    return {"type": "file_search", "vector_store_ids": [library.vector_store_id], **fields}


def check_answer(response: Any, library: Library, *, results: bool) -> Any:
    """The response is a file_search_call (its results only when included), then an answer citing the pump
    manual with file_citation annotations pointing at their markers."""
    assert response.status == "completed"
    searched, answer = response.output
    assert searched.type == "file_search_call" and searched.status == "completed"
    assert searched.queries == ["priming"]
    if results:
        assert searched.results and searched.results[0].file_id == library.pump_id
        assert searched.results[0].filename == "pump-manual.md" and "priming plug" in searched.results[0].text
    else:
        assert searched.results is None
    part = answer.content[0]
    assert "priming plug" in part.text  # the model read the retrieved chunk
    citations = [entry for entry in part.annotations if entry.type == "file_citation"]
    assert citations, part.text
    assert {(entry.file_id, entry.filename) for entry in citations} >= {(library.pump_id, "pump-manual.md")}
    for entry in citations:
        assert part.text[entry.index] == "["
    return answer


@pytest.mark.parametrize("include", [True, False])
async def test_a_file_search_answer_cites_the_uploaded_files(
        sdk: openai.AsyncOpenAI, library: Library, include: bool, gateway: Gateway, door_url: str) -> None:
    before = await gateway.sidecar_requests()
    raw = await sdk.responses.with_raw_response.create(
        model="fake-model", input="How is the pump primed? call file_search priming",
        tools=[file_search_tool(library, max_num_results=3)],
        include=["file_search_call.results"] if include else [])
    response = raw.parse()
    check_answer(response, library, results=include)
    as_sent = orjson.loads(raw.http_response.content)
    validate_response(as_sent)
    for item in as_sent["output"]:
        assert _item_adapter().validate_python(item).type == item["type"]
    if door_url == gateway.url:  # Envoy handed the request carrying file_search to the sidecar's HTTP door
        assert await gateway.sidecar_requests() > before
    stored = await sdk.responses.retrieve(response.id)
    assert [item.type for item in stored.output] == ["file_search_call", "message"]
    assert stored.output[1].content[0].annotations == response.output[1].content[0].annotations


async def test_a_streamed_answer_has_the_file_search_events_and_annotations(
        sdk: openai.AsyncOpenAI, library: Library, door_url: str) -> None:
    body = {"model": "fake-model", "input": "How is the pump primed? call file_search priming", "stream": True,
            "tools": [file_search_tool(library)], "include": ["file_search_call.results"]}
    async with aiohttp.ClientSession() as session, session.post(f"{door_url}/v1/responses", json=body) as answer:
        assert answer.status == 200
        raw = await answer.read()
    events = parse_sse(raw)
    for event in events:
        check_event(event)
    check_item_order(events)
    types = [event["type"] for event in events]
    for kind in ("response.file_search_call.in_progress", "response.file_search_call.searching",
                 "response.file_search_call.completed"):
        assert types.count(kind) == 1, kind
    added = [event["annotation"] for event in events if event["type"] == "response.output_text.annotation.added"]
    assert any(entry["type"] == "file_citation" and entry["file_id"] == library.pump_id for entry in added)
    final = events[-1]["response"]
    assert events[-1]["type"] == "response.completed" and final["output"][1]["content"][0]["annotations"] == added

    # the SDK reads the same stream
    async with await sdk.responses.create(model="fake-model", input="How is the pump primed? call file_search "
                                          "priming", tools=[file_search_tool(library)], stream=True) as stream:
        seen = [event async for event in stream]
    check_answer(seen[-1].response, library, results=False)


async def test_a_continuation_replays_the_search_for_the_model(
        sdk: openai.AsyncOpenAI, library: Library, gateway: Gateway) -> None:
    first = await sdk.responses.create(model="fake-model", input="How is the pump primed? call file_search priming",
                                       tools=[file_search_tool(library)], include=["file_search_call.results"])
    log = UpstreamLog(gateway.sidecar.upstream_url.removesuffix("/v1"))
    await log.clear()
    second = await sdk.responses.create(model="fake-model", input="Thanks.", previous_response_id=first.id,
                                        tools=[file_search_tool(library)])
    assert second.status == "completed" and second.output_text == "Echo: Thanks."
    messages = (await log.last_body())["messages"]
    searched = first.output[0]
    call = next(message for message in messages if message.get("tool_calls"))
    assert call["tool_calls"][0]["id"] == searched.id
    assert orjson.loads(call["tool_calls"][0]["function"]["arguments"]) == {"query": "priming"}
    result = next(message for message in messages if message.get("role") == "tool")
    assert "pump-manual.md" in result["content"] and "priming plug" in result["content"]


async def test_bad_file_search_tools_are_400s(sdk: openai.AsyncOpenAI, library: Library) -> None:
    for tool, param in [({"type": "file_search", "vector_store_ids": []}, "tools[0].vector_store_ids"),
                        (file_search_tool(library, max_num_results=99), "tools[0].max_num_results"),
                        (file_search_tool(library, filters={"type": "eq", "value": 1}), "tools[0].filters.key")]:
        with pytest.raises(openai.BadRequestError) as raised:
            await sdk.responses.create(model="fake-model", input="x", tools=[tool])
        assert raised.value.status_code == 400 and raised.value.body["param"] == param  # type: ignore[index]


async def test_an_unknown_vector_store_is_a_failed_call_and_a_completed_answer(sdk: openai.AsyncOpenAI) -> None:
    response = await sdk.responses.create(
        model="fake-model", input="call file_search priming",
        tools=[{"type": "file_search", "vector_store_ids": ["vs_doesnotexist"]}])
    assert response.status == "completed"
    assert [(item.type, item.status) for item in response.output[:1]] == [("file_search_call", "failed")]
    assert "vs_doesnotexist" in response.output_text
