"""A session's turns are durable with only the client's own ``Authorization``: no upstream key is configured, the
openai SDK sends its key (as it always does), and that header is what goes upstream. The sidecar is killed
(``kill -9``) mid model call, or drained (SIGTERM, a drain shorter than the call: the turn is handed off), with a
second input queued behind the running turn; on SQLite the sidecar is started
again on the same file, on PostgreSQL (``--store=postgres``) a second replica takes the session over once the dead
one's lease lapsed. The running turn is resumed and the queued one run, each completed once, and every model call
(the resumed one too) reached the upstream with the client's ``Authorization``: it was kept with the turns, sealed,
never in clear in the database (its file and WAL bytes are searched), and erased from the turns' rows once they
ended. ``serve`` said at start that runs are durable, and how.
"""

from __future__ import annotations

import asyncio
from contextlib import AsyncExitStack
from pathlib import Path
from typing import Any

import aiohttp
import orjson
import pytest

from responses_bridge.services.agents.turn_queue import CLIENT_AUTHORIZATION
from responses_bridge.store.base import DEFAULT_TENANT as TENANT
from responses_bridge.store.open import open_stores
from tests.integration.test_agents_durable import (
    BETA,
    SLOW,
    TIMEOUT,
    frames,
    read_to_end,
    read_until_deltas,
    sidecar,
    stop,
)
from tests.support.postgres import sidecar_env, store_from_env
from tests.support.sdk import async_sdk

CLIENT_KEY = "sk-client-own-0123456789"


def clear_in_files(db: str) -> list[str]:
    """The SQLite files (the database, its WAL and shared memory) holding the client's key in clear."""
    return [path.name for path in Path(db).parent.glob(Path(db).name + "*")
            if CLIENT_KEY.encode() in path.read_bytes()]


async def stored_turns(db: str, session_id: str) -> list[dict[str, Any]]:
    """The session's turn records as stored (their private part included), oldest first."""
    stores = await open_stores(db, sidecar_env(db).get("RESPONSES_BRIDGE_DATABASE_URL"))
    try:
        return (await stores.agents.page("turn", tenant=TENANT, parent=session_id, limit=10, order="asc")).data
    finally:
        await stores.close()


@pytest.mark.parametrize("how", ["kill", "term"])
async def test_a_turn_stopped_mid_call_with_only_the_clients_authorization_completes_after_the_restart(
        how: str, fake_upstream: str, tmp_path: Path) -> None:
    db = str(tmp_path / "bridge.db")
    shared = store_from_env() == "postgres"
    started_log = tmp_path / "a.log"
    recorded = fake_upstream.removesuffix("/v1") + "/_fake/requests"  # what the fake upstream was sent
    async with aiohttp.ClientSession() as fake:
        async with fake.delete(recorded) as cleared:
            assert cleared.status in (200, 204)
    async with AsyncExitStack() as stack:
        first, first_base = await stack.enter_async_context(sidecar(tmp_path / "a", fake_upstream, db,
                                                                    log_file=started_log))
        other = await stack.enter_async_context(sidecar(tmp_path / "b", fake_upstream, db)) if shared else None
        async with async_sdk(base_url=f"{first_base}/v1", api_key=CLIENT_KEY, max_retries=0, timeout=60) as sdk:
            agent = await sdk.beta.agents.create(model="fake-model")
            session = await sdk.beta.agents.sessions.create(agent_id=agent.id, environment={"type": "none"},
                                                            input=SLOW)
            await sdk.beta.agents.sessions.events.create(session.id, events=[{
                "type": "agent.session.input.message",
                "input": [{"role": "user", "content": [{"type": "input_text", "text": "second"}]}]}])
        async with aiohttp.ClientSession(first_base, headers=BETA, timeout=TIMEOUT) as http:
            async with http.get(f"/v1/agents/sessions/{session.id}/events") as reading:
                raw = await read_until_deltas(reading)
                stop(first, how)  # mid model call
                if how == "term":  # the draining process ends its readers' streams cleanly
                    raw += await read_to_end(reading)
                before = frames(raw)
        assert first.process is not None
        await asyncio.get_running_loop().run_in_executor(None, first.process.wait, 30)
        clear_while_kept = [] if shared else clear_in_files(db)
        kept = await stored_turns(db, session.id)
        if other is None:  # SQLite: the restarted process resumes the turn
            other = await stack.enter_async_context(sidecar(tmp_path / "c", fake_upstream, db))
        _, base = other
        async with aiohttp.ClientSession(base, headers=BETA, timeout=TIMEOUT) as http:
            async with http.get(f"/v1/agents/sessions/{session.id}/events",
                                params={"until_idle": "true", "after": before[-1][0]}) as answer:
                after = frames(await answer.read())
            async with http.get(f"/v1/agents/sessions/{session.id}/turns", params={"order": "asc"}) as answer:
                turns = (await answer.json())["data"]
            answers = []
            for turn in turns:
                async with http.get(f"/v1/agents/sessions/{session.id}/turns/{turn['id']}/items",
                                    params={"order": "asc"}) as answer:
                    items = (await answer.json())["data"]
                answers.append([item["content"][0]["text"] for item in items
                                if item["type"] == "message" and item["role"] == "assistant"])
        async with aiohttp.ClientSession() as fake:
            async with fake.get(recorded) as answer:
                calls = [call for call in (await answer.json())["data"] if call.get("path") == "/v1/chat/completions"]
    ended = await stored_turns(db, session.id)
    kinds = [kind for _, kind, _ in after]
    # resumed and completed, the queued input after it, each once
    assert "agent.session.turn.failed" not in kinds and kinds.count("agent.session.turn.completed") == 2, kinds
    resumed = [event["turn_id"] for _, kind, event in after if kind == "agent.session.turn.in_progress"]
    assert resumed[0] == turns[0]["id"]
    assert [turn["status"] for turn in turns] == ["completed", "completed"]
    assert answers[0][0].startswith("Echo: first") and answers[1] == ["Echo: second"], answers
    # every model call, the resumed one among them, carried the client's own Authorization
    assert len(calls) == 3, calls  # the interrupted call, made again, then the queued turn's
    assert {call["headers"].get("authorization") for call in calls} == {f"Bearer {CLIENT_KEY}"}
    # kept sealed while the turns ran, never in clear; gone from their rows once they ended
    assert clear_while_kept == []
    assert [str(turn["_private"].get(CLIENT_AUTHORIZATION))[:4] for turn in kept] == ["rb1.", "rb1."]
    assert all(CLIENT_KEY not in orjson.dumps(turn).decode() for turn in kept)
    assert all(CLIENT_AUTHORIZATION not in turn.get("_private", {}) for turn in ended), ended
    answered = orjson.dumps([before, after, turns]).decode()  # what the client was shown: never the key, sealed or not
    assert CLIENT_KEY not in answered and CLIENT_AUTHORIZATION not in answered and "rb1." not in answered
    assert shared or clear_in_files(db) == []
    said = [orjson.loads(line) for line in started_log.read_text().splitlines() if "runs_durable" in line]
    assert len(said) == 1 and said[0]["client_header"].startswith("kept sealed"), said
    assert said[0]["sealed_with"] == ("the database (one key every replica on it shares)" if shared
                                      else "sealing.key beside the database")
