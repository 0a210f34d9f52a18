"""Automatic compaction (``context_management: [{"type": "compaction", "compact_threshold": N}]``) through both
doors with the real SDK: a chain compacts once its context passes the threshold, later turns send the compacted
context upstream, a tool loop compacts between its turns, and nothing changes under the threshold."""

from __future__ import annotations

from typing import Any

import aiohttp
import openai
import pytest

from responses_bridge.engine.responses.compaction import SUMMARY_PREFIX
from tests.support.bridge import UpstreamLog
from tests.support.sdk_strict import strict_event

pytestmark = pytest.mark.store_proven(
    "tests/integration/test_postgres_start.py",
    "tests/integration/test_replicas_retrieval.py",
    "tests/integration/test_input_references.py",
    reason="every store/postgres line it covers on PostgreSQL is covered by the modules named (scripts/pg-coverage)",
)

MODEL = "fake-model"
THRESHOLD = 250  # tokens: one turn of TOPIC text is under it, two are over


def turn_text(n: int) -> str:
    return f"Turn {n} notes: " + " ".join(f"fact{n}x{i}" for i in range(40))


def compaction_of(threshold: int) -> list[dict[str, Any]]:
    return [{"type": "compaction", "compact_threshold": threshold}]


def texts(body: dict[str, Any]) -> str:
    out = []
    for message in body["messages"]:
        content = message.get("content")
        if isinstance(content, list):
            content = " ".join(part.get("text", "") for part in content if isinstance(part, dict))
        out.append(content or "")
    return "\n".join(out)


async def test_a_chain_compacts_once_past_the_threshold(client: openai.AsyncOpenAI,
                                                        upstream_log: UpstreamLog) -> None:
    previous = None
    kinds: list[list[str]] = []
    for n in range(4):
        response = await client.responses.create(model=MODEL, input=turn_text(n), previous_response_id=previous,
                                                 context_management=compaction_of(THRESHOLD))
        assert response.status == "completed"
        assert response.to_dict()["context_management"] == compaction_of(THRESHOLD)  # echoed
        kinds.append([item.type for item in response.output])
        previous = response.id
    assert kinds[0] == ["message"]  # under the threshold: nothing changes
    compacted = [n for n, turn in enumerate(kinds) if "compaction" in turn]
    assert compacted and compacted[0] > 0
    assert all(turn[0] == "compaction" and turn[1:] == ["message"] for turn in (kinds[n] for n in compacted))
    last = await upstream_log.last_body()
    sent = texts(last)
    assert SUMMARY_PREFIX in sent and turn_text(3) in sent
    assert turn_text(0) not in sent  # the first turn reaches the model only through the summary
    whole = sum(len(turn_text(n)) * 2 for n in range(4))  # every input and its echoed answer
    assert len(sent) < whole
    # the stored chain is whole: the compacted response's input is the client's own
    listed = await client.responses.input_items.list(previous)
    assert [item.type for item in listed.data] == ["message"]


async def test_the_compaction_events_of_a_stream(client: openai.AsyncOpenAI) -> None:
    first = await client.responses.create(model=MODEL, input=turn_text(0))
    events = []
    async with await client.responses.create(model=MODEL, input=turn_text(1), previous_response_id=first.id,
                                             context_management=compaction_of(THRESHOLD),
                                             stream=True) as stream:
        async for event in stream:
            events.append(event)
    for event in events:  # strictly one of the SDK's union (the lifecycle events' timestamps come back as floats)
        if not hasattr(event, "response"):
            strict_event(event.model_dump(mode="json", exclude_unset=True))
    types = [event.type for event in events]
    assert types[:2] == ["response.created", "response.in_progress"]
    at = types.index("response.compaction.compacting")
    assert types[at:at + 3] == ["response.compaction.compacting", "response.output_item.added",
                                "response.output_item.done"]
    compacting, added = events[at], events[at + 1]
    assert compacting.output_index == 0 and added.item.type == "compaction" and added.item.id == compacting.item_id
    assert [event.sequence_number for event in events] == list(range(len(events)))
    completed = events[-1].response
    assert [item.type for item in completed.output] == ["compaction", "message"]
    assert completed.usage.input_tokens > 0
    retrieved = await client.responses.retrieve(completed.id)
    assert retrieved.output[0].encrypted_content == completed.output[0].encrypted_content


async def test_under_the_threshold_nothing_changes(client: openai.AsyncOpenAI, upstream_log: UpstreamLog) -> None:
    first = await client.responses.create(model=MODEL, input=turn_text(0))
    second = await client.responses.create(model=MODEL, input=turn_text(1), previous_response_id=first.id,
                                           context_management=compaction_of(100_000))
    assert [item.type for item in second.output] == ["message"]
    sent = texts(await upstream_log.last_body())
    assert turn_text(0) in sent and SUMMARY_PREFIX not in sent
    assert len(await upstream_log.entries()) == 2  # no summarising call


async def test_a_tool_loop_compacts_between_its_turns(client: openai.AsyncOpenAI, http: aiohttp.ClientSession,
                                                      upstream_log: UpstreamLog) -> None:
    body: dict[str, Any] = {"model": MODEL, "input": "Check the manuals. call file_search pumps [then=file_search]",
                            "tools": [{"type": "file_search", "vector_store_ids": ["vs_nowhere"]}],
                            "max_tool_calls": 2}
    async with http.post("/v1/responses/input_tokens", json=body) as counted:
        first_turn = (await counted.json())["input_tokens"]
    # the first turn is under it; the third (two calls and their results on top) is over it
    response = await client.responses.create(**body, context_management=compaction_of(first_turn + 25))
    assert response.status == "completed"
    assert [item.type for item in response.output] == ["file_search_call", "file_search_call", "compaction",
                                                       "message"]
    entries = [entry["body"] for entry in await upstream_log.entries()]
    summarising, last = entries[-2], entries[-1]
    assert summarising["messages"][0]["role"] == "system" and "tool" not in summarising
    roles = [message["role"] for message in last["messages"]]
    assert roles == ["user", "assistant", "tool"]  # the question (with the summary), the last call, its result
    assert last["messages"][0]["content"].startswith(SUMMARY_PREFIX)
    assert "call file_search pumps" in last["messages"][0]["content"]


async def test_a_bad_context_management_is_a_400(http: aiohttp.ClientSession) -> None:
    for value, param in (([{"type": "truncate"}], "context_management[0].type"),
                         ([{"type": "compaction", "compact_threshold": 0}],
                          "context_management[0].compact_threshold"),
                         ([{"type": "compaction", "compact_threshold": 10}, {"type": "compaction"}],
                          "context_management[1]"),
                         ([{"type": "compaction"}], "context_management[0].compact_threshold"),
                         ("compaction", "context_management")):
        async with http.post("/v1/responses", json={"model": MODEL, "input": "hi",
                                                    "context_management": value}) as answer:
            assert answer.status == 400, value
            error = (await answer.json())["error"]
            assert error["param"] == param and error["type"] == "invalid_request_error", (value, error)


@pytest.mark.parametrize("stream", [False, True])
async def test_a_failed_summary_fails_the_response(client: openai.AsyncOpenAI, stream: bool) -> None:
    first = await client.responses.create(model=MODEL, input=turn_text(0))
    # the summarising call's transcript carries this note, and the fake fails any call whose last user text has
    # the directive: the summary fails, the turn itself is never sent
    turn = [{"role": "assistant", "content": "noted [error=503]"}, {"role": "user", "content": turn_text(1)}]
    if not stream:
        with pytest.raises(openai.APIStatusError) as failed:
            await client.responses.create(model=MODEL, input=turn, previous_response_id=first.id,
                                          context_management=compaction_of(THRESHOLD))
        assert failed.value.status_code == 502
        return
    events = []
    async with await client.responses.create(model=MODEL, input=turn, previous_response_id=first.id,
                                             context_management=compaction_of(THRESHOLD),
                                             stream=True) as events_stream:
        async for event in events_stream:
            events.append(event)
    assert events[-1].type == "response.failed"
    assert "response.output_item.added" not in [event.type for event in events]
    stored = await client.responses.retrieve(events[-1].response.id)
    assert stored.status == "failed" and stored.output == []


async def test_websocket_turns_compact_too(base_url: str) -> None:
    """WebSocket mode's ``response.create`` takes ``context_management`` as POST does; a ``store: false`` chain
    (held by the connection) compacts like a stored one."""
    async with aiohttp.ClientSession(base_url=base_url) as session, session.ws_connect("/v1/responses") as ws:
        previous = None
        kinds = []
        for n in range(3):
            await ws.send_json({"type": "response.create", "model": MODEL, "input": turn_text(n), "store": False,
                                "previous_response_id": previous, "context_management": compaction_of(THRESHOLD)})
            events = []
            while not events or events[-1]["type"] not in ("response.completed", "response.failed", "error"):
                events.append(await ws.receive_json(timeout=60))
            assert events[-1]["type"] == "response.completed", events[-1]
            response = events[-1]["response"]
            kinds.append([item["type"] for item in response["output"]])
            previous = response["id"]
            if "compaction" in kinds[-1]:
                types = [event["type"] for event in events]
                assert types.index("response.compaction.compacting") < types.index("response.output_item.added")
    assert kinds[0] == ["message"] and ["compaction", "message"] in kinds[1:]
