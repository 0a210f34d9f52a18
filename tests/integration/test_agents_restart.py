"""A session whose turn was running when its sidecar stopped: on SQLite (one process on the database) the next start
resumes the turn, which completes, and leaves the session idle and usable; on PostgreSQL (replicas share the
database: the turn may run on another) the restarted process's sweep takes it over once the stopped replica's lease
on it ran out, and resumes it the same way. (Kills, drains and queued input: test_agents_durable.py.)"""

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
                # shared: the turn is still in progress, taken over by a sweep once the stopped replica's lease
                # ran out or was let go
                assert after["status"] == "in_progress" and turns[0]["status"] == "in_progress"
            deadline = asyncio.get_running_loop().time() + 30
            while after["status"] != "idle":
                assert asyncio.get_running_loop().time() < deadline, after
                await asyncio.sleep(0.2)
                async with http.get(f"/v1/agents/sessions/{session['id']}") as answer:
                    after = await answer.json()
            async with http.get(f"/v1/agents/sessions/{session['id']}/turns") as answer:
                turns = (await answer.json())["data"]
            assert [turn["status"] for turn in turns] == ["completed"]
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
    """The id of the idle event the resumed turn's end wrote (the session's first)."""
    async with http.get(f"/v1/agents/sessions/{session_id}/events") as answer:
        raw = b""
        async for chunk in answer.content.iter_any():
            raw += chunk
            if b"event: agent.session.idle\n" in raw and raw.endswith(b"\n\n"):
                break
    first_idle = raw.decode().split("event: agent.session.idle\n", 1)[0]  # a read may hold the next turn too
    return [line[4:] for line in first_idle.splitlines() if line.startswith("id: ")][-1]
