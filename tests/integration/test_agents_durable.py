"""An Agents session's turn outlives its sidecar: ``kill -9``, and a SIGTERM whose drain timeout is shorter than the
turn, while the turn runs with two more inputs queued behind it and a client reads the session's event stream.

On SQLite the sidecar is started again on the same file, and the restarted process resumes the turn at its start;
on PostgreSQL (``--store=postgres``) a second replica runs beside the first from the start, and takes the session
over (after a kill, once the dead process's lease lapsed; after a SIGTERM, as soon as the drain let it go).
Either way: every accepted input is answered exactly once (three turns, each ``completed`` once, each with one
answer, in order; no turn ever ``failed``), and the reader, resuming with ``Last-Event-ID`` on the process that
survived, gets the rest of the stream without a gap or a repeat (what it read before and after is the whole stored
log, in order). A SIGTERM ends the reader's stream cleanly on the draining process.

The Agents API is served by the HTTP door only (Envoy routes ``/v1/agents`` to it), so the door a client used does
not change what survives; the turn itself runs as a background response inside the sidecar.
"""

from __future__ import annotations

import asyncio
import os
import signal
from collections.abc import AsyncIterator
from contextlib import AsyncExitStack, asynccontextmanager
from pathlib import Path
from typing import Any

import aiohttp
import orjson
import pytest

from responses_bridge.demo.procs import ManagedProcess, wait_http
from responses_bridge.services.agents.turn_queue import STEP_RESPONSE, WAITING
from responses_bridge.store.base import DEFAULT_TENANT as TENANT
from responses_bridge.store.open import open_stores
from tests.support.bridge import start_sidecar
from tests.support.postgres import sidecar_env, store_from_env

BETA = {"OpenAI-Beta": "agents=v1"}
ENV = {
    # a dead replica's sessions are taken over soon; yet longer than a loaded host's stalls: a lease the process
    # running the turn could not renew in time is lost, and the turn resumed — a resume the limit counts, and
    # with the client's credentials not kept, a turn failed (two of this module's tests saw it at 1 s in a full run)
    "RESPONSES_BRIDGE_BACKGROUND_LEASE_SECONDS": "4",
    "RESPONSES_BRIDGE_DRAIN_TIMEOUT": "1",  # shorter than the turn
}
SLOW = "first [chunks=40] [delay=100]"  # 4 s of streaming: the stop lands mid-way
TIMEOUT = aiohttp.ClientTimeout(total=90)
DELTAS_BEFORE_STOP = 3


@asynccontextmanager
async def sidecar(tmp_path: Path, fake_upstream: str, db: str, env: dict[str, str] | None = None,
                  log_file: Path | None = None) -> AsyncIterator[tuple[ManagedProcess, str]]:
    process, http_port, _ = start_sidecar(str(tmp_path), fake_upstream, "--db", db, env={**ENV, **(env or {})},
                                          extproc=False, log_file=log_file)
    base = f"http://127.0.0.1:{http_port}"
    try:
        await wait_http(f"{base}/health", process=process)
        yield process, base
    finally:
        process.stop()


def frames(raw: bytes) -> list[tuple[str, str, dict[str, Any]]]:
    """``(event id, event type, event)`` of each SSE frame."""
    found = []
    for frame in raw.split(b"\n\n"):
        fields = dict(line.split(b": ", 1) for line in frame.split(b"\n") if b": " in line and line[:1] != b":")
        if b"data" in fields:
            found.append((fields[b"id"].decode(), fields[b"event"].decode(), orjson.loads(fields[b"data"])))
    return found


def _deltas_since_start(raw: bytes, resumed: bool) -> int:
    """Text deltas read (``resumed``: since the ``agent.session.turn.in_progress`` that starts a resumed step)."""
    kinds = [kind for _, kind, _ in frames(raw)]
    if resumed:
        if "agent.session.turn.in_progress" not in kinds:
            return 0
        kinds = kinds[kinds.index("agent.session.turn.in_progress"):]
    return kinds.count("agent.session.turn.output_text.delta")


async def read_until_deltas(answer: aiohttp.ClientResponse, *, resumed: bool = False) -> bytes:
    raw = b""
    while _deltas_since_start(raw, resumed) < DELTAS_BEFORE_STOP:
        chunk = await answer.content.readuntil(b"\n\n")
        assert chunk, "the stream ended before the turn streamed"
        raw += chunk
    return raw


async def read_to_end(answer: aiohttp.ClientResponse) -> bytes:
    """The rest of a stream the server ends: a clean end (the chunked body's last chunk), not a cut connection,
    which aiohttp raises as a payload error."""
    return await answer.content.read()


async def slow_turn_and_two_queued(http: aiohttp.ClientSession) -> str:
    """A new session whose first turn streams slowly (:data:`SLOW`), with two more inputs queued behind it: its id."""
    async with http.post("/v1/agents/sessions", json={
            "agent": {"model": "fake-model"}, "environment": {"type": "none"}, "input": SLOW}) as answer:
        assert answer.status == 200, await answer.text()
        session_id: str = (await answer.json())["id"]
    for text in ("second", "third"):  # queued behind the running turn
        async with http.post(f"/v1/agents/sessions/{session_id}/events", json={"events": [
                {"type": "agent.session.input.message",
                 "input": [{"role": "user", "content": [{"type": "input_text", "text": text}]}]}]}) as answer:
            assert answer.status == 202, await answer.text()
    return session_id


async def resumed_log(http: aiohttp.ClientSession, session_id: str, cursor: dict[str, Any]
                      ) -> tuple[list[tuple[str, str, dict[str, Any]]], list[tuple[str, str, dict[str, Any]]],
                                 list[dict[str, Any]]]:
    """What a reader resuming with ``cursor`` (``Last-Event-ID``, or ``after``) reads until the session is idle, the
    whole log read from the start, and the session's turns, oldest first."""
    events = f"/v1/agents/sessions/{session_id}/events"
    async with http.get(events, **{"params": {"until_idle": "true"}, **cursor}) as answer:
        assert answer.status == 200, await answer.text()
        after = frames(await answer.read())
    async with http.get(events, params={"until_idle": "true"}) as answer:
        whole = frames(await answer.read())
    async with http.get(f"/v1/agents/sessions/{session_id}/turns", params={"order": "asc"}) as answer:
        turns = (await answer.json())["data"]
    return after, whole, turns


def stop(process: ManagedProcess, how: str) -> None:
    assert process.pid is not None
    os.killpg(process.pid, signal.SIGKILL if how == "kill" else signal.SIGTERM)


@pytest.mark.parametrize("how", ["kill", "term"])
async def test_a_running_turn_and_its_queued_input_survive_the_sidecar(how: str, fake_upstream: str,
                                                                      tmp_path: Path) -> None:
    db = str(tmp_path / "bridge.db")
    shared = store_from_env() == "postgres"
    async with AsyncExitStack() as stack:
        first, first_base = await stack.enter_async_context(sidecar(tmp_path / "a", fake_upstream, db))
        other = await stack.enter_async_context(sidecar(tmp_path / "b", fake_upstream, db)) if shared else None
        async with aiohttp.ClientSession(first_base, headers=BETA, timeout=TIMEOUT) as http:
            session_id = await slow_turn_and_two_queued(http)
            async with http.get(f"/v1/agents/sessions/{session_id}/events") as reading:
                before = await read_until_deltas(reading)
                stop(first, how)
                if how == "term":  # the draining process ends its readers' streams cleanly
                    before += await read_to_end(reading)
        if how == "kill":
            assert first.process is not None
            first.process.wait()
        else:
            assert first.process is not None
            await asyncio.get_running_loop().run_in_executor(None, first.process.wait, 30)
        if other is None:  # SQLite: the restarted process resumes its own
            other = await stack.enter_async_context(sidecar(tmp_path / "c", fake_upstream, db))
        _, base = other
        seen_before = frames(before)
        async with aiohttp.ClientSession(base, headers=BETA, timeout=TIMEOUT) as http:
            cursor = {"headers": {"Last-Event-ID": seen_before[-1][0]}} if how == "term" else \
                {"params": {"until_idle": "true", "after": seen_before[-1][0]}}  # the SDK's two ways to resume
            after, whole, turns = await resumed_log(http, session_id, cursor)
            answers = []
            for turn in turns:
                async with http.get(f"/v1/agents/sessions/{session_id}/turns/{turn['id']}/items",
                                    params={"order": "asc"}) as answer:
                    items = (await answer.json())["data"]
                answers.append([item["content"][0]["text"] for item in items
                                if item["type"] == "message" and item["role"] == "assistant"])
    # the reader: what it saw, then the rest, is the whole log, each event once
    assert [event_id for event_id, _, _ in seen_before + after] == [event_id for event_id, _, _ in whole]
    kinds = [kind for _, kind, _ in whole]
    assert "agent.session.turn.failed" not in kinds and "agent.session.failed" not in kinds
    assert kinds.count("agent.session.turn.completed") == 3
    resumed = [event["turn_id"] for _, kind, event in after if kind == "agent.session.turn.in_progress"]
    assert resumed[0] == turns[0]["id"]  # the first turn continued where the other process left it
    assert [turn["status"] for turn in turns] == ["completed"] * 3
    assert len(answers) == 3 and all(len(texts) == 1 for texts in answers), answers
    assert answers[0][0].startswith("Echo: first")
    assert answers[1:] == [["Echo: second"], ["Echo: third"]]


async def test_a_turn_resumed_past_the_limit_fails_saying_so_and_the_queue_goes_on(fake_upstream: str,
                                                                                   tmp_path: Path) -> None:
    """``RESPONSES_BRIDGE_BACKGROUND_MAX_RESUMES`` bounds a crash loop: killed again in its resumed run, the turn
    is not resumed a second time; it fails naming the limit, and the input queued behind it is answered."""
    db = str(tmp_path / "bridge.db")
    env = {"RESPONSES_BRIDGE_BACKGROUND_MAX_RESUMES": "1"}
    async with sidecar(tmp_path / "a", fake_upstream, db, env) as (first, base):
        async with aiohttp.ClientSession(base, headers=BETA, timeout=TIMEOUT) as http:
            async with http.post("/v1/agents/sessions", json={
                    "agent": {"model": "fake-model"}, "environment": {"type": "none"}, "input": SLOW}) as answer:
                session_id = (await answer.json())["id"]
            async with http.post(f"/v1/agents/sessions/{session_id}/events", json={"events": [
                    {"type": "agent.session.input.message",
                     "input": [{"role": "user", "content": [{"type": "input_text", "text": "next"}]}]}]}) as answer:
                assert answer.status == 202
            async with http.get(f"/v1/agents/sessions/{session_id}/events") as reading:
                last = frames(await read_until_deltas(reading))[-1][0]
                stop(first, "kill")
    async with sidecar(tmp_path / "b", fake_upstream, db, env) as (second, base):  # resumed once: killed again
        async with aiohttp.ClientSession(base, headers=BETA, timeout=TIMEOUT) as http:
            async with http.get(f"/v1/agents/sessions/{session_id}/events",
                                headers={"Last-Event-ID": last}) as reading:
                await read_until_deltas(reading, resumed=True)
                stop(second, "kill")
    async with sidecar(tmp_path / "c", fake_upstream, db, env) as (_, base):
        async with aiohttp.ClientSession(base, headers=BETA, timeout=TIMEOUT) as http:
            async with http.get(f"/v1/agents/sessions/{session_id}/events",
                                params={"until_idle": "true"}) as answer:
                kinds = [kind for _, kind, _ in frames(await answer.read())]
            async with http.get(f"/v1/agents/sessions/{session_id}/turns", params={"order": "asc"}) as answer:
                turns = (await answer.json())["data"]
    assert [turn["status"] for turn in turns] == ["failed", "completed"]
    assert "RESPONSES_BRIDGE_BACKGROUND_MAX_RESUMES" in turns[0]["error"]["message"]
    assert kinds.count("agent.session.turn.failed") == 1 and kinds.count("agent.session.turn.completed") == 1


@pytest.mark.parametrize("how", ["kill", "term"])
async def test_a_turn_that_called_with_the_clients_credentials_is_not_resumed_when_they_are_not_kept(
        how: str, fake_upstream: str, tmp_path: Path) -> None:
    """The operator opted out (``RESPONSES_BRIDGE_DURABLE_CLIENT_CREDENTIALS=false``) and no upstream key is
    configured, so the turn's model call carries the client's own ``Authorization``, held in memory only: after its
    process stopped nobody could make the call again. ``serve`` said so at start; the turn fails saying so, the
    input queued behind it fails saying so too (its credentials went with the stopped process), and no model call
    ever goes out without the client's credentials; the session then takes new input, with them, as before."""
    db = str(tmp_path / "bridge.db")
    opted_out = {"RESPONSES_BRIDGE_DURABLE_CLIENT_CREDENTIALS": "false"}
    started_log = tmp_path / "a.log"
    shared = store_from_env() == "postgres"
    client = {**BETA, "Authorization": "Bearer sk-client-own"}
    recorded = fake_upstream.removesuffix("/v1") + "/_fake/requests"  # what the fake upstream was sent
    async with aiohttp.ClientSession() as fake:
        async with fake.delete(recorded) as cleared:
            assert cleared.status in (200, 204)
    async with AsyncExitStack() as stack:
        first, first_base = await stack.enter_async_context(sidecar(tmp_path / "a", fake_upstream, db, opted_out,
                                                                    log_file=started_log))
        other = await stack.enter_async_context(sidecar(tmp_path / "b", fake_upstream, db, opted_out)) \
            if shared else None
        async with aiohttp.ClientSession(first_base, headers=client, timeout=TIMEOUT) as http:
            async with http.post("/v1/agents/sessions", json={
                    "agent": {"model": "fake-model"}, "environment": {"type": "none"}, "input": SLOW}) as answer:
                assert answer.status == 200, await answer.text()
                session_id = (await answer.json())["id"]
            async with http.post(f"/v1/agents/sessions/{session_id}/events", json={"events": [
                    {"type": "agent.session.input.message",
                     "input": [{"role": "user", "content": [{"type": "input_text", "text": "queued"}]}]}]}) as answer:
                assert answer.status == 202, await answer.text()
            async with http.get(f"/v1/agents/sessions/{session_id}/events") as reading:
                await read_until_deltas(reading)
                stop(first, how)
        assert first.process is not None
        await asyncio.get_running_loop().run_in_executor(None, first.process.wait, 30)
        if other is None:  # SQLite: the restarted process finds the turns
            other = await stack.enter_async_context(sidecar(tmp_path / "c", fake_upstream, db, opted_out))
        _, base = other
        async with aiohttp.ClientSession(base, headers=client, timeout=TIMEOUT) as http:
            async with http.get(f"/v1/agents/sessions/{session_id}/events", params={"until_idle": "true"}) as answer:
                seen = frames(await answer.read())
            kinds = [kind for _, kind, _ in seen]
            async with http.get(f"/v1/agents/sessions/{session_id}/turns", params={"order": "asc"}) as answer:
                stopped = (await answer.json())["data"]
            async with http.post(f"/v1/agents/sessions/{session_id}/events", json={"events": [
                    {"type": "agent.session.input.message",
                     "input": [{"role": "user", "content": [{"type": "input_text", "text": "again"}]}]}]}) as answer:
                assert answer.status == 202, await answer.text()
            async with http.get(f"/v1/agents/sessions/{session_id}/events",  # to the idle after the new turn
                                params={"until_idle": "true", "after": seen[-1][0]}) as answer:
                after_new_input = [kind for _, kind, _ in frames(await answer.read())]
            async with http.get(f"/v1/agents/sessions/{session_id}/turns", params={"order": "asc"}) as answer:
                turns = (await answer.json())["data"]
        async with aiohttp.ClientSession() as fake:
            async with fake.get(recorded) as answer:
                calls = (await answer.json())["data"]
    said = [orjson.loads(line) for line in started_log.read_text().splitlines() if "runs_not_durable" in line]
    assert len(said) == 1 and "RESPONSES_BRIDGE_DURABLE_CLIENT_CREDENTIALS=false" in said[0]["reason"], said
    assert [turn["status"] for turn in stopped] == ["failed", "failed"]
    running, queued = stopped[0]["error"]["message"], stopped[1]["error"]["message"]
    assert "carried the client's own Authorization, which was not kept" in running
    assert "RESPONSES_BRIDGE_DURABLE_CLIENT_CREDENTIALS is false" in running and "configure the upstream key" in running
    assert "would carry the client's own Authorization" in queued and "send the input again" in queued
    assert "agent.session.turn.completed" not in kinds and kinds.count("agent.session.turn.failed") == 2
    assert kinds[-1] == "agent.session.idle"
    assert [turn["status"] for turn in turns] == ["failed", "failed", "completed"]
    assert after_new_input.count("agent.session.turn.completed") == 1
    sent = [call for call in calls if call.get("path") == "/v1/chat/completions"]
    assert len(sent) == 2, sent  # the first turn's call before the stop, then the new input's: none made again
    assert {call["headers"].get("authorization") for call in sent} == {"Bearer sk-client-own"}


LOOKUP = {"type": "function", "name": "lookup", "description": "Look a word up",
          "parameters": {"type": "object", "properties": {"word": {"type": "string"}}}}


async def _read_until(answer: aiohttp.ClientResponse, event: bytes) -> bytes:
    raw = b""
    while event not in raw:
        chunk = await answer.content.readuntil(b"\n\n")
        assert chunk, "the stream ended before " + event.decode()
        raw += chunk
    return raw


@pytest.mark.parametrize("told", ["told", "untold", "logged", "calls", "answered"])
async def test_a_turn_whose_step_response_had_ended_is_ended_from_it_without_a_model_call(
        told: str, fake_upstream: str, tmp_path: Path) -> None:
    """The stored state a ``kill -9`` leaves when it lands between the end of a turn's step response and the turn's
    own end (issue #64, found by scripts/crash-probe): the step response ``completed``, the turn still
    ``in_progress`` with that response as its step in flight, the session ``in_progress``. It is written here into
    a finished turn's rows (the log keeps that run's events: only what comes after the cursor is the restart's).
    The restarted process ends the turn from the stored response: one answer, ``completed`` once, the session idle,
    and no model call made again. ``untold``: the answer's item was not stored yet, so the restart tells it.
    ``logged``: the kill came before the response's end was stored, after its terminal event was (the next
    start's sweep stores it ``failed``, "its stream had already ended"): the turn ends from that event.
    ``calls``: the response ended with a call of the client's function: the turn begins the wait the stopped
    process was about to (the session ``requires_action`` for that call, no model call made again), and the
    client's result completes it, with one more model call. ``answered``: the client's result had come (and been
    stored) before that wait began: nothing is waited for, the turn goes on with it."""
    db = str(tmp_path / "bridge.db")
    requests_url = fake_upstream.removesuffix("/v1") + "/_fake/requests"
    async with sidecar(tmp_path / "a", fake_upstream, db) as (_, base):
        async with aiohttp.ClientSession(base, headers=BETA, timeout=TIMEOUT) as http:
            calls = told in ("calls", "answered")
            agent = {"model": "fake-model", "tools": [LOOKUP]} if calls else {"model": "fake-model"}
            async with http.post("/v1/agents/sessions", json={
                    "agent": agent, "environment": {"type": "none"},
                    "input": "call lookup now" if calls else "once"}) as answer:
                assert answer.status == 200, await answer.text()
                session_id = (await answer.json())["id"]
            async with http.get(f"/v1/agents/sessions/{session_id}/events") as answer:
                ending = b"event: agent.session.requires_action\n" if calls else \
                    b"event: agent.session.idle\n"
                cursor = frames(await _read_until(answer, ending))[-1][0]
            async with http.get(requests_url) as answer:
                calls_before = len((await answer.json())["data"])
    stores = await open_stores(db, sidecar_env(db).get("RESPONSES_BRIDGE_DATABASE_URL"))
    try:
        agents = stores.agents
        session = await agents.get("session", session_id, tenant=TENANT)
        assert session is not None and calls_before >= 1
        (turn,) = (await agents.page("turn", tenant=TENANT, parent=session_id, limit=10, order="asc")).data
        kept = turn["_private"]
        step = kept["response_ids"][-1]
        assert (await stores.responses.get_response(step, tenant=TENANT) or {}).get("status") == "completed"
        kept[STEP_RESPONSE] = step
        if told == "logged":
            stored = await stores.responses.get_response(step, tenant=TENANT)
            assert stored is not None
            await stores.responses.save_response({**stored, "status": "failed", "error": {
                "code": "server_error", "message": "its stream had already ended"}}, [], tenant=TENANT)
        if told == "answered":  # the client answered the call as soon as it was shown, before the wait began
            kept[WAITING] = {"answers": [{"type": "function_call_output", "call_id": "call_lookup_0",
                                          "output": "a word"}]}
        turn.update(status="in_progress", usage=None, completed_at=None)
        await agents.put("turn", turn["id"], turn, tenant=TENANT, parent=session_id)
        session.update(status="in_progress", required_actions=[])
        if calls:  # stored when the turn waits, which it had not yet: the session's first turn
            session["_private"].pop("last_response_id", None)
        await agents.put("session", session_id, session, tenant=TENANT, parent=session["agent"]["id"])
        if told == "untold":
            items = (await agents.page("item", tenant=TENANT, parent=session_id, scope=turn["id"], limit=10,
                                       order="asc")).data
            for item in items:
                if item.get("role") == "assistant":
                    assert await agents.delete("item", item["id"], tenant=TENANT)
    finally:
        await stores.close()
    async with sidecar(tmp_path / "b", fake_upstream, db) as (_, base):
        async with aiohttp.ClientSession(base, headers=BETA, timeout=TIMEOUT) as http:
            if told == "calls":  # the wait begun again: the client answers the call, once
                async with http.get(f"/v1/agents/sessions/{session_id}/events", params={"after": cursor}) as answer:
                    waited = frames(await _read_until(answer, b"event: agent.session.requires_action\n"))
                async with http.get(requests_url) as answer:
                    calls_waiting = len((await answer.json())["data"])
                (action,) = waited[-1][2]["session"]["required_actions"]
                async with http.post(f"/v1/agents/sessions/{session_id}/events", json={"events": [{
                        "type": "agent.session.input.tool_result", "call_id": action["call_id"],
                        "turn_id": turn["id"], "success": True, "output": "a word"}]}) as sent:
                    assert sent.status == 202, await sent.text()
            async with http.get(f"/v1/agents/sessions/{session_id}/events",
                                params={"until_idle": "true", "after": cursor}) as answer:
                after = frames(await answer.read())
            async with http.get(f"/v1/agents/sessions/{session_id}/turns/{turn['id']}") as answer:
                ended = await answer.json()
            async with http.get(f"/v1/agents/sessions/{session_id}/turns/{turn['id']}/items",
                                params={"order": "asc"}) as answer:
                items = (await answer.json())["data"]
            async with http.get(f"/v1/agents/sessions/{session_id}") as answer:
                session_now = await answer.json()
            async with http.get(requests_url) as answer:
                calls_after = len((await answer.json())["data"])
    kinds = [kind for _, kind, _ in after]
    if told == "answered":  # no wait: the next step runs with the stored answer, once
        assert calls_after == calls_before + 1 and "agent.session.requires_action" not in kinds, kinds
        assert kinds.count("agent.session.turn.completed") == 1 and kinds[-1] == "agent.session.idle", kinds
        assert ended["status"] == "completed" and session_now["status"] == "idle", ended
        return
    if told == "calls":
        assert calls_waiting == calls_before and calls_after == calls_before + 1  # the step not made again
        assert action["call_id"] == "call_lookup_0" and action["name"] == "lookup", action
        assert kinds.count("agent.session.requires_action") == 1 and "agent.session.turn.failed" not in kinds
        assert kinds.count("agent.session.turn.completed") == 1 and kinds[-1] == "agent.session.idle", kinds
        assert ended["status"] == "completed" and session_now["status"] == "idle", ended
        return
    assert calls_after == calls_before  # no model call made again
    assert kinds.count("agent.session.turn.completed") == 1 and kinds[-1] == "agent.session.idle", kinds
    assert kinds.count("agent.session.turn.item.done") == (1 if told == "untold" else 0), kinds
    assert "agent.session.turn.item.added" not in kinds  # it was told added before the stop
    answers = [item for item in items if item["type"] == "message" and item["role"] == "assistant"]
    assert [item["content"][0]["text"] for item in answers] == ["Echo: once"]
    assert ended["status"] == "completed" and ended["usage"] and session_now["status"] == "idle"
