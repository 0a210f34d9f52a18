"""Reasoning for clients: summary parts when ``reasoning.summary`` is asked for, ``encrypted_content`` sealed with
the deployment's key for ``include: ["reasoning.encrypted_content"]``, and unsealed when it comes back."""

from __future__ import annotations

import os
from typing import Any

import orjson
import pytest

from responses_bridge.engine.options import EngineOptions
from responses_bridge.protocol.errors import APIError
from responses_bridge.protocol.tools.multi_agent import beta_surface
from responses_bridge.run.response_run import ResponseRun
from responses_bridge.sealing import Sealer
from responses_bridge.store import SQLiteResponseStore
from responses_bridge.store.base import DEFAULT_TENANT
from tests.support.schema import check_stream
from tests.unit import recordings

SEALER = Sealer(os.urandom(32))
THINK = {"model": "fake-reasoner", "input": "Why is the sky blue? [think]", "stream": True}


async def run(store: SQLiteResponseStore, body: dict[str, Any], *, sealer: Sealer | None = SEALER,
              options: EngineOptions | None = None) -> tuple[list[dict[str, Any]], dict[str, Any], ResponseRun]:
    exchange = ResponseRun(store, options or EngineOptions(), sealer, tenant=DEFAULT_TENANT)
    call = await exchange.begin(orjson.dumps(body))
    head = exchange.on_upstream_headers(200, recordings.SSE)
    out = exchange.on_upstream_chunk(recordings.load("think"))
    reply = await exchange.finish()
    events = check_stream(head + out + reply.body)
    return events, orjson.loads(call.body), exchange


@pytest.mark.parametrize("mode", ["auto", "concise", "detailed"])
async def test_summary_parts_carry_the_reasoning(store: SQLiteResponseStore, mode: str) -> None:
    events, _, _ = await run(store, {**THINK, "reasoning": {"summary": mode}})
    kinds = [e["type"] for e in events]
    for kind in ("response.reasoning_summary_part.added", "response.reasoning_summary_text.delta",
                 "response.reasoning_summary_text.done", "response.reasoning_summary_part.done",
                 "response.reasoning_text.delta"):
        assert kind in kinds, kind
    item = events[-1]["response"]["output"][0]
    assert item["summary"] == [{"type": "summary_text", "text": item["content"][0]["text"]}]
    assert item["summary"][0]["text"].startswith("Thinking about:")


async def test_no_summary_unless_asked(store: SQLiteResponseStore) -> None:
    events, _, _ = await run(store, THINK)
    assert not any(e["type"].startswith("response.reasoning_summary") for e in events)
    assert events[-1]["response"]["output"][0]["summary"] == []
    assert "encrypted_content" not in events[-1]["response"]["output"][0]


async def test_encrypted_content_round_trip(store: SQLiteResponseStore) -> None:
    body = {**THINK, "store": False, "include": ["reasoning.encrypted_content"]}
    events, _, _ = await run(store, body)
    done = [e["item"] for e in events if e["type"] == "response.output_item.done" and e["item"]["type"] ==
            "reasoning"]
    item = events[-1]["response"]["output"][0]
    assert done == [item] and item["encrypted_content"].startswith("rb1.")
    assert SEALER.open("reasoning", item["encrypted_content"])["text"] == item["content"][0]["text"]
    # sent back with only the blob, it becomes reasoning the upstream accepts again
    history = [{"role": "user", "content": "Why?"},
               {"type": "reasoning", "id": item["id"], "summary": [], "encrypted_content": item["encrypted_content"]},
               {"role": "assistant", "content": "Because."}, {"role": "user", "content": "More [think]"}]
    _, chat, _ = await run(store, {**body, "input": history},
                           options=EngineOptions(reasoning_history="reasoning_content"))
    assistant = [m for m in chat["messages"] if m["role"] == "assistant"]
    assert assistant[0]["reasoning_content"] == item["content"][0]["text"]
    _, chat, _ = await run(store, {**body, "input": history})  # default: dropped
    assert all("reasoning_content" not in m for m in chat["messages"])


@pytest.mark.parametrize("blob", ["rb1.AAAA", "not-ours", "rb1." + "A" * 80, 12])
async def test_foreign_or_tampered_blobs_are_400(store: SQLiteResponseStore, blob: Any) -> None:
    body = {**THINK, "input": [{"role": "user", "content": "x"},
                               {"type": "reasoning", "summary": [], "encrypted_content": blob}]}
    if not isinstance(blob, str):
        # a non-string blob is not kept by the parser: nothing to open
        await run(store, body)
        return
    with pytest.raises(APIError) as caught:
        await run(store, body)
    assert caught.value.status == 400 and caught.value.param == "input[1].encrypted_content"


async def test_blob_from_another_key_is_400(store: SQLiteResponseStore) -> None:
    foreign = Sealer(os.urandom(32)).seal("reasoning", {"v": 1, "text": "x"})
    body = {**THINK, "input": [{"type": "reasoning", "summary": [], "encrypted_content": foreign},
                               {"role": "user", "content": "x"}]}
    with pytest.raises(APIError) as caught:
        await run(store, body)
    assert caught.value.code == "invalid_encrypted_content"


async def test_a_compaction_blob_is_not_reasoning(store: SQLiteResponseStore) -> None:
    other_purpose = SEALER.seal("compaction", {"v": 1, "text": "x"})
    body = {**THINK, "input": [{"type": "reasoning", "summary": [], "encrypted_content": other_purpose},
                               {"role": "user", "content": "x"}]}
    with pytest.raises(APIError):
        await run(store, body)


@pytest.mark.parametrize(("event_names", "header", "spec"), [
    ("openai", False, False), ("openai", True, True), ("open-responses", False, True)])
async def test_the_reasoning_events_names(store: SQLiteResponseStore, event_names: str, header: bool,
                                          spec: bool) -> None:
    """The SDK's names unless the request names the Open Responses version, or the deployment serves Open
    Responses clients only (``event_names: open-responses``)."""
    exchange = ResponseRun(store, EngineOptions(event_names=event_names), SEALER,  # type: ignore[arg-type]
                           tenant=DEFAULT_TENANT)
    exchange.beta = beta_surface({}, {"openresponses-version": "2026-04-24"} if header else {})
    await exchange.begin(orjson.dumps(THINK))
    head = exchange.on_upstream_headers(200, recordings.SSE)
    out = exchange.on_upstream_chunk(recordings.load("think"))
    reply = await exchange.finish()
    kinds = {event["type"] for event in check_stream(head + out + reply.body)}
    named = {"response.reasoning.delta", "response.reasoning.done"}
    sdk_named = {"response.reasoning_text.delta", "response.reasoning_text.done"}
    assert (named if spec else sdk_named) <= kinds and not (sdk_named if spec else named) & kinds
