"""An Agents session's accepted input survives its replica's database outage: a loopback proxy between replica A
and PostgreSQL cuts every connection of A's (reset, new ones refused at once) for 7 s, longer than the lease, while
two sessions on A each have a turn streaming and an input queued behind it.

A's leases lapse during the outage: with B beside it, B takes the sessions over, and A, back, finds its
leases lapsed and stops without writing (B may have run the sessions' turns and let them go meanwhile); alone, A
stops the same way and its own sweep resumes the sessions from the store. Either way every input that was accepted
(202) is answered exactly once: each turn ``completed``, once, with its one answer, in order; no turn and no session
``failed``. An input sent to A during the outage waits; it is then accepted, or refused in the OpenAI shape
(409 ``session_busy``: the session goes on from the store; 503 ``store_unavailable``), never a 500, and sent
again. Beside them, a control session on a replica whose database was
never cut (B, or A's own first session before the cut) shows the scenario's answers as they are without an outage.
"""

from __future__ import annotations

import asyncio
import base64
import uuid
from collections.abc import AsyncIterator
from contextlib import AsyncExitStack, asynccontextmanager
from pathlib import Path
from typing import Any

import aiohttp
import openai
import pytest

from responses_bridge.demo.procs import ManagedProcess, wait_http
from tests.support.bridge import start_sidecar
from tests.support.db_cut import CutProxy, cut_proxy
from tests.support.postgres import PostgresServer, fresh_database
from tests.support.sdk import async_sdk

pytestmark = [pytest.mark.store_free,
              pytest.mark.filterwarnings("ignore::pytest.PytestUnraisableExceptionWarning")]

BETA = {"OpenAI-Beta": "agents=v1"}
ENV = {
    "RESPONSES_BRIDGE_SEALING_KEY": base64.urlsafe_b64encode(b"outage-test-sealing-key-32bytes!").decode(),
    "RESPONSES_BRIDGE_BACKGROUND_LEASE_SECONDS": "2",  # the outage (7 s) outlasts it
}
SLOW = "first [chunks=40] [delay=100]"  # 4 s of streaming: the turn ends, and the queued one starts, in the outage
OUTAGE_SECONDS = 7  # longer than the lease: B takes A's sessions over meanwhile
TIMEOUT = aiohttp.ClientTimeout(total=120)


@pytest.fixture
async def database_url(postgres_server: PostgresServer) -> AsyncIterator[str]:
    with fresh_database(postgres_server, f"outage{uuid.uuid4().hex[:8]}") as url:
        yield url


@asynccontextmanager
async def replica(root: Path, upstream: str, database_url: str | None, *extra: str) -> AsyncIterator[str]:
    """A sidecar on ``database_url`` (the upstream key configured: its turns are durable), its HTTP door's URL."""
    process: ManagedProcess
    database = {} if database_url is None else {"RESPONSES_BRIDGE_DATABASE_URL": database_url}
    process, http_port, _ = start_sidecar(str(root), upstream, "--api-key", "sk-upstream", *extra, extproc=False,
                                          own_sqlite=True,  # the store is the URL's, whatever the switch says
                                          env={**ENV, **database})
    base = f"http://127.0.0.1:{http_port}"
    try:
        await wait_http(f"{base}/health/ready", timeout=60, process=process)
        yield base
    finally:
        await asyncio.to_thread(process.stop)


def message(text: str) -> dict[str, Any]:
    return {"type": "agent.session.input.message",
            "input": [{"role": "user", "content": [{"type": "input_text", "text": text}]}]}


async def slow_turn_and_one_queued(sdk: openai.AsyncOpenAI, tag: str) -> str:
    session = await sdk.beta.agents.sessions.create(agent={"model": "fake-model"}, environment={"type": "none"},
                                                    input=f"{SLOW} {tag}")
    await sdk.beta.agents.sessions.events.create(session.id, events=[message(f"second {tag}")])  # type: ignore[list-item]
    return session.id


async def turns_of(http: aiohttp.ClientSession, session_id: str) -> list[dict[str, Any]]:
    async with http.get(f"/v1/agents/sessions/{session_id}/turns", params={"order": "asc"}) as answer:
        assert answer.status == 200, await answer.text()
        turns: list[dict[str, Any]] = (await answer.json())["data"]
        return turns


async def until_streaming(http: aiohttp.ClientSession, session_id: str) -> None:
    """Bounded: the session's first turn runs."""
    for _ in range(200):
        turns = await turns_of(http, session_id)
        if turns and turns[0]["status"] == "in_progress":
            return
        await asyncio.sleep(0.05)
    raise AssertionError(f"the first turn of {session_id} never started")


async def settled(http: aiohttp.ClientSession, session_id: str, turns: int) -> list[dict[str, Any]]:
    """Bounded: the session idle (or failed) with ``turns`` turns, each ended; its turns, oldest first."""
    found: list[dict[str, Any]] = []
    for _ in range(900):
        async with http.get(f"/v1/agents/sessions/{session_id}") as answer:
            session = await answer.json() if answer.status == 200 else {}
        found = await turns_of(http, session_id) if answer.status == 200 else []
        if session.get("status") in ("idle", "failed") and len(found) >= turns and \
                all(turn["status"] not in ("queued", "in_progress") for turn in found):
            return found
        await asyncio.sleep(0.1)
    raise AssertionError(f"session {session_id} never settled: {[turn['status'] for turn in found]}")


async def answers(http: aiohttp.ClientSession, session_id: str, turns: list[dict[str, Any]]) -> list[list[str]]:
    said = []
    for turn in turns:
        async with http.get(f"/v1/agents/sessions/{session_id}/turns/{turn['id']}/items",
                            params={"order": "asc"}) as answer:
            items = (await answer.json())["data"]
        said.append([item["content"][0]["text"] for item in items
                     if item["type"] == "message" and item["role"] == "assistant"])
    return said


async def send_during_outage(sdk: openai.AsyncOpenAI, session_id: str, text: str) -> int:
    """The status an input sent while the database is away gets: 202 (accepted, so stored), or a refusal in the
    OpenAI shape that says why (503 ``store_unavailable``, 409 ``session_busy`` when another replica took the
    session over meanwhile); never a 500."""
    try:
        await sdk.beta.agents.sessions.events.create(session_id, events=[message(text)])  # type: ignore[list-item]
    except openai.APIStatusError as error:
        body = error.body if isinstance(error.body, dict) else {}
        assert (error.status_code, body.get("code")) in ((503, "store_unavailable"), (409, "session_busy")), \
            (error.status_code, body)
        return error.status_code
    return 202


@pytest.mark.parametrize("replicas", [1, 2], ids=["alone", "beside-b"])
async def test_no_accepted_input_is_lost_through_a_database_outage(replicas: int, tmp_path: Path,
                                                                  fake_upstream: str, database_url: str) -> None:
    async with AsyncExitStack() as stack:
        proxy: CutProxy = await stack.enter_async_context(cut_proxy(database_url))
        a = await stack.enter_async_context(replica(tmp_path / "a", fake_upstream, proxy.url_for(database_url)))
        b = await stack.enter_async_context(replica(tmp_path / "b", fake_upstream, database_url)) \
            if replicas == 2 else None
        sdk_a = await stack.enter_async_context(async_sdk(base_url=f"{a}/v1", api_key="sk-client", max_retries=0,
                                                          timeout=120.0))
        http_a = await stack.enter_async_context(aiohttp.ClientSession(a, headers=BETA, timeout=TIMEOUT))
        control = await slow_turn_and_one_queued(sdk_a, "control")  # on A, before and without any cut
        await settled(http_a, control, 2)
        sessions = [await slow_turn_and_one_queued(sdk_a, tag) for tag in ("one", "two")]
        for session_id in sessions:
            await until_streaming(http_a, session_id)
        await asyncio.sleep(0.5)  # their first turns stream
        proxy.cut()
        late = asyncio.create_task(send_during_outage(sdk_a, sessions[0], "late one"))  # to A, its database away
        await asyncio.sleep(OUTAGE_SECONDS)
        waited = not late.done()  # not acknowledged while its turn cannot be stored
        proxy.restore()
        late_status = await late
        reader = b if b is not None else a
        sdk = sdk_a if b is None else await stack.enter_async_context(async_sdk(
            base_url=f"{b}/v1", api_key="sk-client", max_retries=0, timeout=120.0))
        for _ in range(60):  # refused, so not accepted: the client sends it again (a 409 too, for a while)
            if late_status == 202:
                break
            await asyncio.sleep(0.5)
            late_status = await send_during_outage(sdk, sessions[0], "late one")
        assert late_status == 202
        async with aiohttp.ClientSession(reader, headers=BETA, timeout=TIMEOUT) as http:
            ended = {session_id: await settled(http, session_id, 3 if session_id == sessions[0] else 2)
                     for session_id in [control, *sessions]}
            said = {session_id: await answers(http, session_id, turns) for session_id, turns in ended.items()}
            states = {}
            for session_id in ended:
                async with http.get(f"/v1/agents/sessions/{session_id}") as answer:
                    states[session_id] = (await answer.json())["status"]
    for session_id, tag in zip([control, *sessions], ("control", "one", "two"), strict=True):
        assert states[session_id] == "idle", (tag, states[session_id], ended[session_id])
        assert [turn["status"] for turn in ended[session_id]] == ["completed"] * len(ended[session_id]), \
            (tag, ended[session_id])
        assert len(said[session_id][0]) == 1 and said[session_id][0][0].startswith("Echo: first"), said[session_id]
        assert said[session_id][1] == [f"Echo: second {tag}"], said[session_id]
    assert said[sessions[0]][2] == ["Echo: late one"], said[sessions[0]]  # once: accepted, or refused and sent again
    assert waited  # neither acknowledged nor refused while the database was away
