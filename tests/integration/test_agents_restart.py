"""A session whose turn was running when its sidecar stopped: on SQLite (one process on the database) the next start
fails the turn and leaves the session idle and usable; on PostgreSQL (replicas share the database: the turn may run
on another) the restart touches nothing, and the next input, once the stopped replica's lease ran out, does."""

from __future__ import annotations

import asyncio
import os

import aiohttp
import pytest

from tests.support.bridge import running_sidecar
from tests.support.postgres import store_from_env

BETA = {"OpenAI-Beta": "agents=v1"}
LEASE_SECONDS = 2
TIMEOUT = aiohttp.ClientTimeout(total=30)


async def test_a_turn_left_running_by_a_stopped_sidecar(fake_upstream: str,
                                                        tmp_path_factory: pytest.TempPathFactory) -> None:
    directory = str(tmp_path_factory.mktemp("agents-restart"))
    db = ["--db", os.path.join(directory, "bridge.db")]
    env = {"RESPONSES_BRIDGE_BACKGROUND_LEASE_SECONDS": str(LEASE_SECONDS)}
    async with running_sidecar(directory, fake_upstream, *db, extproc=False, env=env) as first:
        async with aiohttp.ClientSession(first.http_url, headers=BETA, timeout=TIMEOUT) as http:
            async with http.post("/v1/agents/sessions", json={
                    "agent": {"model": "fake-model"}, "environment": {"type": "none"},
                    "input": "slow [chunks=50] [delay=200]"}) as answer:
                assert answer.status == 200
                session = await answer.json()
            for _ in range(100):  # until its turn runs
                async with http.get(f"/v1/agents/sessions/{session['id']}") as answer:
                    if (await answer.json())["status"] == "in_progress":
                        break
                await asyncio.sleep(0.05)
    async with running_sidecar(directory, fake_upstream, *db, extproc=False, env=env) as second:
        async with aiohttp.ClientSession(second.http_url, headers=BETA, timeout=TIMEOUT) as http:
            async with http.get(f"/v1/agents/sessions/{session['id']}") as answer:
                after = await answer.json()
            async with http.get(f"/v1/agents/sessions/{session['id']}/turns") as answer:
                turns = (await answer.json())["data"]
            if store_from_env() == "postgres":
                # shared: untouched at the start (another replica may run it), taken over by the next input once
                # the stopped replica's lease on it ran out
                assert after["status"] == "in_progress" and turns[0]["status"] == "in_progress"
                await asyncio.sleep(LEASE_SECONDS + 0.5)
                async with http.post(f"/v1/agents/sessions/{session['id']}/events", json={"events": [
                        {"type": "agent.session.input.cancel"}]}) as answer:
                    assert answer.status == 202
                async with http.get(f"/v1/agents/sessions/{session['id']}/turns") as answer:
                    turns = (await answer.json())["data"]
                async with http.get(f"/v1/agents/sessions/{session['id']}") as answer:
                    after = await answer.json()
            assert after["status"] == "idle"
            assert turns[0]["status"] == "failed" and "restarted" in turns[0]["error"]["message"]
            async with http.post(f"/v1/agents/sessions/{session['id']}/events", json={"events": [
                    {"type": "agent.session.input.message",
                     "input": [{"role": "user", "content": [{"type": "input_text", "text": "again"}]}]}]}) as answer:
                assert answer.status == 202
            last = await _last_event(http, session["id"])
            async with http.get(f"/v1/agents/sessions/{session['id']}/events",
                                params={"until_idle": "true", "after": last}) as answer:
                raw = await answer.read()
            assert b"event: agent.session.turn.completed\n" in raw and b"Echo: again" in raw


async def _last_event(http: aiohttp.ClientSession, session_id: str) -> str:
    """The id of the idle event the restart wrote (the session's first)."""
    async with http.get(f"/v1/agents/sessions/{session_id}/events") as answer:
        raw = b""
        async for chunk in answer.content.iter_any():
            raw += chunk
            if b"event: agent.session.idle\n" in raw and raw.endswith(b"\n\n"):
                break
    first_idle = raw.decode().split("event: agent.session.idle\n", 1)[0]  # a read may hold the next turn too
    return [line[4:] for line in first_idle.splitlines() if line.startswith("id: ")][-1]
