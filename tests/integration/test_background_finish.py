"""A background run killed between its terminal event's write and its row's end is finished from its log.

A run makes its terminal event durable before it stores the response's end (a reader that saw the end can always
replay it), so a ``kill -9`` between the two writes leaves a complete stream under a row still ``in_progress``
(scripts/crash-probe found 19 runs of a round so, issue #64). That state is written here into a finished run's
rows: the row put back as it was while running (no output, ``in_progress``) and, for a conversation's turn, the
conversation without the turn's items (they join it in the same transaction that ends the row). The restarted
process (on PostgreSQL, ``--store=postgres``: the same sweep any replica runs once the lease lapsed) stores the
end the log holds, in its status: nothing failed, no model call made again, the stream not lengthened, the
input items kept, and the conversation given the turn's items exactly once.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import aiohttp
import pytest

from responses_bridge.store.base import DEFAULT_TENANT as TENANT
from responses_bridge.store.open import open_stores
from tests.integration.test_background import parse_sse
from tests.integration.test_background_resume import TIMEOUT, started, until_ended
from tests.support.postgres import sidecar_env


async def _requests_naming(http: aiohttp.ClientSession, requests_url: str, marker: str) -> int:
    async with http.get(requests_url) as answer:
        return sum(marker in str(entry.get("body")) for entry in (await answer.json())["data"])


async def _conversation_items(http: aiohttp.ClientSession, base: str, conversation_id: str) -> list[dict[str, Any]]:
    async with http.get(f"{base}/v1/conversations/{conversation_id}/items",
                        params={"order": "asc", "limit": "100"}) as answer:
        assert answer.status == 200, await answer.text()
        return list((await answer.json())["data"])


@pytest.mark.parametrize("end", ["completed", "failed"])
async def test_a_run_whose_stream_had_ended_is_stored_from_its_log(end: str, tmp_path: Path,
                                                                   fake_upstream: str) -> None:
    db = str(tmp_path / "finish.db")
    marker = f"finish-from-log-{end}"
    prompt = f"{marker} [chunks=5]" if end == "completed" else f"{marker} [error=500]"
    requests_url = fake_upstream.removesuffix("/v1") + "/_fake/requests"
    process, base = await started(tmp_path / "a", fake_upstream, db)
    try:
        async with aiohttp.ClientSession(timeout=TIMEOUT) as http:
            async with http.post(f"{base}/v1/conversations", json={}) as answer:
                conversation_id = (await answer.json())["id"]
            async with http.post(f"{base}/v1/responses", json={
                    "model": "fake-model", "background": True, "conversation": conversation_id,
                    "input": [{"role": "user", "content": prompt}]}) as answer:
                assert answer.status == 200, await answer.text()
                response_id = (await answer.json())["id"]
            first = await until_ended(base, response_id)
            assert first["status"] == end, first
            async with http.get(f"{base}/v1/responses/{response_id}",
                                params={"stream": "true", "starting_after": "-1"}) as answer:
                stream, _ = parse_sse(await answer.read())
            async with http.get(f"{base}/v1/responses/{response_id}/input_items",
                                params={"order": "asc"}) as answer:
                inputs = (await answer.json())["data"]
            joined = await _conversation_items(http, base, conversation_id)
            calls_before = await _requests_naming(http, requests_url, marker)
    finally:
        process.stop()
    assert stream[-1]["type"] == f"response.{end}" and calls_before >= 1
    assert len(joined) == (1 + len(first["output"]) if end == "completed" else 0)

    stores = await open_stores(db, sidecar_env(db).get("RESPONSES_BRIDGE_DATABASE_URL"))
    try:  # the rows as a kill between the terminal event's write and the row's end leaves them
        running = {**first, "status": "in_progress", "output": [], "usage": None, "error": None,
                   "completed_at": None}
        await stores.responses.save_response(running, inputs, tenant=TENANT)
        for item in joined:
            assert await stores.conversations.delete_item(conversation_id, item["id"], tenant=TENANT)
    finally:
        await stores.close()

    process, base = await started(tmp_path / "b", fake_upstream, db)
    try:
        ended = await until_ended(base, response_id)
        async with aiohttp.ClientSession(timeout=TIMEOUT) as http:
            async with http.get(f"{base}/v1/responses/{response_id}",
                                params={"stream": "true", "starting_after": "-1"}) as answer:
                again, done = parse_sse(await answer.read())
            async with http.get(f"{base}/v1/responses/{response_id}/input_items",
                                params={"order": "asc"}) as answer:
                inputs_after = (await answer.json())["data"]
            rejoined = await _conversation_items(http, base, conversation_id)
            calls_after = await _requests_naming(http, requests_url, marker)
    finally:
        process.stop()
    assert ended["status"] == end, ended.get("error")
    assert ended == stream[-1]["response"]  # the end the log held, as the run would have stored it
    assert done and again == stream  # nothing appended: no failed frame after the terminal one
    assert inputs_after == inputs
    assert calls_after == calls_before  # no model call made again
    assert [item["id"] for item in rejoined] == [item["id"] for item in joined]  # once, in order
