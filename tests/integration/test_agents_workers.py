"""Sessions on a sidecar of two worker processes on one database: a session's turns run in the process that holds
its lease (input sent to the other one while a turn runs is a 409 ``session_busy``, and is taken once the session is
idle), and a stream read from either process has every event once, in order."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import aiohttp
import pytest

from tests.integration.test_agents_api import BETA, MODEL, frames
from tests.support.bridge import Sidecar, running_sidecar

MESSAGE = {"type": "agent.session.input.message",
           "input": [{"role": "user", "content": [{"type": "input_text", "text": "next [chunks=5] [delay=40]"}]}]}


@pytest.fixture(scope="module")
async def workers(fake_upstream: str, tmp_path_factory: pytest.TempPathFactory) -> AsyncIterator[Sidecar]:
    async with running_sidecar(str(tmp_path_factory.mktemp("agents-workers")), fake_upstream, "--workers", "2",
                               extproc=False) as sidecar:
        yield sidecar


async def test_a_session_across_two_worker_processes(workers: Sidecar) -> None:
    timeout = aiohttp.ClientTimeout(total=60)
    async with aiohttp.ClientSession(workers.http_url, headers=BETA, timeout=timeout) as http:
        async with http.post("/v1/agents/sessions", json={"agent": {"model": MODEL}, "environment": {"type": "none"},
                                                          "input": "first [chunks=5]"}) as answer:
            assert answer.status == 200
            session_id = (await answer.json())["id"]
        busy = 0  # how many went to the other process mid-turn: the kernel's choice, not asserted
        for _ in range(6):
            for _attempt in range(200):
                # a new connection each time: the kernel hands it to either worker
                async with aiohttp.ClientSession(workers.http_url, headers=BETA, timeout=timeout) as fresh, \
                        fresh.post(f"/v1/agents/sessions/{session_id}/events", json={"events": [MESSAGE]}) as answer:
                    if answer.status == 202:
                        break
                    assert answer.status == 409, await answer.text()
                    assert (await answer.json())["error"]["code"] == "session_busy"
                    busy += 1
                await asyncio.sleep(0.05)
            else:
                pytest.fail("the session never took the input")
        for _attempt in range(400):
            async with http.get(f"/v1/agents/sessions/{session_id}") as answer:
                if (await answer.json())["status"] == "idle":
                    break
            await asyncio.sleep(0.05)
        async with http.get(f"/v1/agents/sessions/{session_id}/turns", params={"limit": 100}) as answer:
            turns = (await answer.json())["data"]
        assert len(turns) == 7 and {turn["status"] for turn in turns} == {"completed"}
        for _ in range(2):  # either process: the whole log, once each, in order
            async with aiohttp.ClientSession(workers.http_url, headers=BETA, timeout=timeout) as fresh, \
                    fresh.get(f"/v1/agents/sessions/{session_id}/events") as answer:
                raw = b""
                async for chunk in answer.content.iter_any():
                    raw += chunk
                    if raw.count(b"event: agent.session.turn.completed\n") == 7 and \
                            raw.rstrip().endswith(b"}") and raw.count(b"event: agent.session.idle\n") >= 1 and \
                            raw.endswith(b"\n\n"):
                        break
            events = [event for _, event in frames(raw)]
            assert len({event["event_id"] for event in events}) == len(events)
            completed = [event["turn_id"] for event in events if event["type"] == "agent.session.turn.completed"]
            assert sorted(completed) == sorted(turn["id"] for turn in turns)
            texts = "".join(event["delta"] for event in events
                            if event["type"] == "agent.session.turn.output_text.delta")
            assert texts.count("Echo: next") == 6 and texts.count("Echo: first") == 1
