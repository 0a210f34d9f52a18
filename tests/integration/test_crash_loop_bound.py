"""A poisoned run is bounded: a background response whose every (re)start takes its process down stops after
``RESPONSES_BRIDGE_BACKGROUND_MAX_RESUMES`` resumes, ``failed`` saying so, on replicas sharing PostgreSQL, while
another run on the same replicas completes, even one that shared the poisoned run's process at each crash.

The crash is the test's doing, as an OOM kill would be the host's: whenever the poisoned run's model call reaches the
fake upstream, the replica that made it (told apart by its upstream key) is ``kill -9``'d and started again on the
same database. The other run is killed with its replica when the poisoned one lands beside it, and is resumed like
any other: the bound is per run, and a run that reached it takes nothing else with it.
"""

from __future__ import annotations

import asyncio
import base64
import os
import signal
import uuid
from collections.abc import AsyncIterator
from contextlib import AsyncExitStack
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from responses_bridge.demo.procs import ManagedProcess, wait_http
from tests.support.bridge import UpstreamLog, start_sidecar
from tests.support.postgres import PostgresServer, fresh_database

pytestmark = [pytest.mark.store_free,
              pytest.mark.filterwarnings("ignore::pytest.PytestUnraisableExceptionWarning")]

MAX_RESUMES = 2
ENV = {
    "RESPONSES_BRIDGE_SEALING_KEY": base64.urlsafe_b64encode(b"crash-loop-test-sealing-key-32by").decode(),
    "RESPONSES_BRIDGE_BACKGROUND_LEASE_SECONDS": "2",
    "RESPONSES_BRIDGE_BACKGROUND_MAX_RESUMES": str(MAX_RESUMES),
}
TIMEOUT = aiohttp.ClientTimeout(total=60)
POISONED_CALL = "[chunks=300] [delay=100]"
"""The poisoned run's model call: 30 s, the window in which the test must see it and kill its process. It never runs
to its end (a kill or the bound ends it first); at 4 s a full run's load once let the call finish before the kill,
and the kill then struck the session's next turn (whose history names the marker too)."""


@pytest.fixture
async def database_url(postgres_server: PostgresServer) -> AsyncIterator[str]:
    with fresh_database(postgres_server, f"crashloop{uuid.uuid4().hex[:8]}") as url:
        yield url


@dataclass
class Slot:
    """One replica's place: its upstream key (which names it in the upstream's log) and its current process."""

    name: str
    root: Path
    upstream: str
    database_url: str
    process: ManagedProcess | None = None
    base: str = ""

    async def start(self) -> None:
        self.process, port, _ = start_sidecar(str(self.root), self.upstream, "--api-key", f"sk-{self.name}",
                                              extproc=False, own_sqlite=True,
                                              env={**ENV, "RESPONSES_BRIDGE_DATABASE_URL": self.database_url})
        self.base = f"http://127.0.0.1:{port}"
        await wait_http(f"{self.base}/health/ready", timeout=60, process=self.process)

    def kill(self) -> None:
        assert self.process is not None and self.process.pid is not None
        os.killpg(self.process.pid, signal.SIGKILL)
        assert self.process.process is not None
        self.process.process.wait()

    async def stop(self) -> None:
        if self.process is not None:
            await asyncio.to_thread(self.process.stop)


async def calls_for(upstream: UpstreamLog, marker: str) -> list[str]:
    """The upstream key of each model call made for ``marker``'s run, in order."""
    return [str(entry["headers"].get("authorization")) for entry in await upstream.entries()
            if marker in str(entry["body"].get("messages"))]


async def background(base: str, text: str) -> str:
    async with aiohttp.ClientSession(timeout=TIMEOUT) as http, http.post(f"{base}/v1/responses", json={
            "model": "fake-model", "input": text, "background": True}) as answer:
        assert answer.status == 200, await answer.text()
        response_id: str = (await answer.json())["id"]
        return response_id


async def ended(slots: list[Slot], response_id: str, *, seconds: float = 90) -> dict[str, Any]:
    """Bounded: the run's stored end, read from any replica that answers."""
    deadline = asyncio.get_running_loop().time() + seconds
    async with aiohttp.ClientSession(timeout=TIMEOUT) as http:
        while asyncio.get_running_loop().time() < deadline:
            for slot in slots:
                try:
                    async with http.get(f"{slot.base}/v1/responses/{response_id}") as answer:
                        body: dict[str, Any] = await answer.json()
                except aiohttp.ClientError:
                    continue
                if body.get("status") not in ("queued", "in_progress"):
                    return body
            await asyncio.sleep(0.2)
    raise AssertionError(f"{response_id} never ended")


async def crash_at_each_call(slots: list[Slot], upstream: UpstreamLog, poison: str) -> None:
    """The poisoned run's first start and each resume: once its model call is made, its process is killed (and
    started again), ``MAX_RESUMES + 1`` times in all."""
    killed = 0
    deadline = asyncio.get_running_loop().time() + 120
    while killed <= MAX_RESUMES:
        made = await calls_for(upstream, poison)
        assert asyncio.get_running_loop().time() < deadline, f"the poisoned run was called {len(made)} times"
        if len(made) <= killed:
            await asyncio.sleep(0.05)
            continue
        crashed = next(slot for slot in slots if made[killed] == f"Bearer sk-{slot.name}")
        crashed.kill()  # its process dies in the poisoned run's model call
        killed += 1
        await crashed.start()


def check_bounded(failed: dict[str, Any], made: list[str], completed: dict[str, Any], other: str) -> None:
    assert failed["status"] == "failed", failed
    assert f"resumed {MAX_RESUMES} times already" in failed["error"]["message"], failed["error"]
    assert f"the limit is {MAX_RESUMES}" in failed["error"]["message"], failed["error"]
    assert len(made) == MAX_RESUMES + 1, made  # its first call and one per resume, no more
    assert completed["status"] == "completed", completed.get("error")
    assert completed["output"][0]["content"][0]["text"].startswith(f"Echo: {other}"), completed["output"]


async def test_a_run_that_crashes_its_process_every_time_stops_at_the_bound(
        tmp_path: Path, fake_upstream: str, database_url: str) -> None:
    upstream = UpstreamLog(fake_upstream.removesuffix("/v1"))
    poison, other = f"poison{uuid.uuid4().hex[:8]}", f"other{uuid.uuid4().hex[:8]}"
    slots = [Slot(name, tmp_path / name, fake_upstream, database_url) for name in ("a", "b")]
    async with AsyncExitStack() as stack:
        for slot in slots:
            await slot.start()
            stack.push_async_callback(slot.stop)
        poisoned = await background(slots[0].base, f"{poison} {POISONED_CALL}")
        survivor = await background(slots[1].base, f"{other} [chunks=80] [delay=100]")  # 8 s: outlives kills
        await crash_at_each_call(slots, upstream, poison)
        failed = await ended(slots, poisoned)
        completed = await ended(slots, survivor)
        await asyncio.sleep(3)  # past a lease and a sweep: nothing takes the failed run up again
        made = await calls_for(upstream, poison)
    check_bounded(failed, made, completed, other)


async def test_a_run_sharing_the_poisoned_runs_process_at_each_crash_is_not_failed_with_it(
        tmp_path: Path, fake_upstream: str, database_url: str) -> None:
    """One replica, both runs on it: each crash stops both, and both are resumed after the first; from the second
    on, the process resumes one of them at a time (runs stopped twice are never two in one process), so the other
    run is not stopped again and again with the poisoned one, which alone reaches the bound."""
    upstream = UpstreamLog(fake_upstream.removesuffix("/v1"))
    poison, other = f"poison{uuid.uuid4().hex[:8]}", f"other{uuid.uuid4().hex[:8]}"
    slot = Slot("a", tmp_path / "a", fake_upstream, database_url)
    async with AsyncExitStack() as stack:
        await slot.start()
        stack.push_async_callback(slot.stop)
        poisoned = await background(slot.base, f"{poison} {POISONED_CALL}")
        survivor = await background(slot.base, f"{other} [chunks=80] [delay=100]")  # 8 s: stopped with each crash
        await crash_at_each_call([slot], upstream, poison)
        failed = await ended([slot], poisoned)
        completed = await ended([slot], survivor)
        made = await calls_for(upstream, poison)
    check_bounded(failed, made, completed, other)


BETA = {"OpenAI-Beta": "agents=v1"}


async def session_with_input(base: str, first: str, then: str) -> str:
    """A session whose first turn says ``first``, with ``then`` queued behind it: its id."""
    async with aiohttp.ClientSession(base, headers=BETA, timeout=TIMEOUT) as http:
        async with http.post("/v1/agents/sessions", json={
                "agent": {"model": "fake-model"}, "environment": {"type": "none"}, "input": first}) as answer:
            assert answer.status == 200, await answer.text()
            session_id: str = (await answer.json())["id"]
        async with http.post(f"/v1/agents/sessions/{session_id}/events", json={"events": [
                {"type": "agent.session.input.message",
                 "input": [{"role": "user", "content": [{"type": "input_text", "text": then}]}]}]}) as answer:
            assert answer.status == 202, await answer.text()
    return session_id


async def settled_turns(slots: list[Slot], session_id: str, count: int) -> list[dict[str, Any]]:
    """Bounded: the session idle with ``count`` turns, each ended, read from any replica that answers."""
    deadline = asyncio.get_running_loop().time() + 90
    async with aiohttp.ClientSession(headers=BETA, timeout=TIMEOUT) as http:
        while asyncio.get_running_loop().time() < deadline:
            for slot in slots:
                try:
                    async with http.get(f"{slot.base}/v1/agents/sessions/{session_id}") as answer:
                        session = await answer.json()
                    async with http.get(f"{slot.base}/v1/agents/sessions/{session_id}/turns",
                                        params={"order": "asc"}) as answer:
                        turns: list[dict[str, Any]] = (await answer.json())["data"]
                except aiohttp.ClientError:
                    continue
                if session.get("status") == "idle" and len(turns) == count and \
                        all(turn["status"] not in ("queued", "in_progress") for turn in turns):
                    return turns
            await asyncio.sleep(0.2)
    raise AssertionError(f"session {session_id} never settled")


async def test_a_session_turn_that_crashes_its_process_every_time_stops_at_the_bound(
        tmp_path: Path, fake_upstream: str, database_url: str) -> None:
    """Sessions share the bound: the turn fails naming it, the input queued behind it is answered, and another
    session on the same replicas completes."""
    upstream = UpstreamLog(fake_upstream.removesuffix("/v1"))
    poison, other = f"poison{uuid.uuid4().hex[:8]}", f"other{uuid.uuid4().hex[:8]}"
    slots = [Slot(name, tmp_path / name, fake_upstream, database_url) for name in ("a", "b")]
    async with AsyncExitStack() as stack:
        for slot in slots:
            await slot.start()
            stack.push_async_callback(slot.stop)
        poisoned = await session_with_input(slots[0].base, f"{poison} {POISONED_CALL}", "after it")
        calm = await session_with_input(slots[1].base, f"{other} [chunks=40] [delay=100]", "and then")
        await crash_at_each_call(slots, upstream, poison)
        turns = await settled_turns(slots, poisoned, 2)
        calm_turns = await settled_turns(slots, calm, 2)
        made = await calls_for(upstream, poison)
    assert [turn["status"] for turn in turns] == ["failed", "completed"], turns
    assert "RESPONSES_BRIDGE_BACKGROUND_MAX_RESUMES" in turns[0]["error"]["message"], turns[0]["error"]
    assert f"the limit is {MAX_RESUMES}" in turns[0]["error"]["message"], turns[0]["error"]
    assert len(made) == MAX_RESUMES + 1, made  # its first call and one per resume, no more
    assert [turn["status"] for turn in calm_turns] == ["completed", "completed"], calm_turns
