"""Background responses survive their process: ``kill -9`` mid-run and a SIGTERM whose drain ends before the run
does, each followed by a restart on the same database. The restarted process resumes the run (the model call in
flight is made again) and finishes it: the response completes once, with the full output, and its stored stream
numbers on without a gap or a repeat, so a reader that resumes with ``starting_after`` sees the rest of it.

(Replicas on one PostgreSQL, where another replica takes the run over: test_replicas.py.)
"""

from __future__ import annotations

import asyncio
import os
import signal
from pathlib import Path

import aiohttp

from responses_bridge.demo.procs import wait_http
from tests.integration.test_background import parse_sse
from tests.support.bridge import start_sidecar

MODEL = "fake-model"
SLOW = "resume me [chunks=40] [delay=100]"  # 4 s of streaming: the kill and the drain land mid-way
QUICK = "resume me [chunks=40]"  # the same answer at once: what the resumed run must end with
ENV = {
    # on PostgreSQL the dead process's lease lapses soon; yet past a loaded host's stalls (test_agents_durable.py)
    "RESPONSES_BRIDGE_BACKGROUND_LEASE_SECONDS": "3",
    "RESPONSES_BRIDGE_DRAIN_TIMEOUT": "1",  # shorter than the run
}
DELTAS_BEFORE_STOP = 3
TIMEOUT = aiohttp.ClientTimeout(total=60)


async def started(tmp_path, fake_upstream: str, db: str, env: dict[str, str] | None = None):
    process, http_port, _ = start_sidecar(str(tmp_path), fake_upstream, "--db", db, env={**ENV, **(env or {})},
                                          extproc=False)
    base = f"http://127.0.0.1:{http_port}"
    await wait_http(f"{base}/health", process=process)
    return process, base


async def expected_text(base: str) -> str:
    async with aiohttp.ClientSession(timeout=TIMEOUT) as session, session.post(
            f"{base}/v1/responses", json={"model": MODEL, "input": QUICK, "store": False}) as answer:
        body = await answer.json()
    return body["output"][0]["content"][0]["text"]


async def read_until_deltas(answer: aiohttp.ClientResponse, steps: int = 1) -> list[dict]:
    """The events of a live background stream until a few text deltas went by in its ``steps``-th model call
    (a resumed run starts its repeated call with another ``response.in_progress``)."""
    raw = b""
    while True:
        chunk = await answer.content.readuntil(b"\n\n")
        assert chunk, "the stream ended before the deltas came"
        raw += chunk
        events, _ = parse_sse(raw)
        kinds = [event["type"] for event in events]
        if kinds.count("response.in_progress") < steps:
            continue
        current = kinds[len(kinds) - 1 - kinds[::-1].index("response.in_progress"):]
        if current.count("response.output_text.delta") >= DELTAS_BEFORE_STOP:
            return events


async def until_ended(base: str, response_id: str) -> dict:
    deadline = asyncio.get_running_loop().time() + 60
    async with aiohttp.ClientSession(timeout=TIMEOUT) as session:
        while True:
            async with session.get(f"{base}/v1/responses/{response_id}") as answer:
                body = await answer.json()
            if body["status"] not in ("queued", "in_progress"):
                return body
            assert asyncio.get_running_loop().time() < deadline, "the response never ended"
            await asyncio.sleep(0.1)


async def stream_after(base: str, response_id: str, after: int) -> tuple[list[dict], bool]:
    async with aiohttp.ClientSession(timeout=TIMEOUT) as session, session.get(
            f"{base}/v1/responses/{response_id}", params={"stream": "true", "starting_after": str(after)}) as answer:
        assert answer.status == 200, await answer.text()
        return parse_sse(await answer.read())


def check_whole_stream(events: list[dict]) -> None:
    """One stream, numbered 0..n without a gap or a repeat, opened once and ended once, by ``completed``."""
    assert [event["sequence_number"] for event in events] == list(range(len(events)))
    kinds = [event["type"] for event in events]
    assert kinds.count("response.created") == 1
    assert kinds[-1] == "response.completed"
    assert not any(kind in ("response.failed", "response.incomplete") for kind in kinds)
    assert kinds.count("response.completed") == 1


async def test_kill_9_mid_run_then_restart_finishes_it(tmp_path, fake_upstream: str) -> None:
    db = str(tmp_path / "resume.db")
    process, base = await started(tmp_path, fake_upstream, db)
    try:
        expected = await expected_text(base)
        async with aiohttp.ClientSession(timeout=TIMEOUT) as session, session.post(
                f"{base}/v1/responses", json={"model": MODEL, "input": SLOW, "background": True,
                                              "stream": True}) as answer:
            seen = await read_until_deltas(answer)
            os.kill(process.pid, signal.SIGKILL)
            process.process.wait()
        response_id = seen[0]["response"]["id"]
    finally:
        process.stop()
    process, base = await started(tmp_path, fake_upstream, db)
    try:
        ended = await until_ended(base, response_id)
        assert ended["status"] == "completed", ended.get("error")
        assert ended["output"][-1]["content"][0]["text"] == expected
        events, done = await stream_after(base, response_id, -1)
        assert done
        check_whole_stream(events)
        assert events[-1]["response"]["output"] == ended["output"]
    finally:
        process.stop()


async def test_sigterm_hands_the_run_off_and_a_reader_resumes_after_the_restart(tmp_path, fake_upstream: str) -> None:
    db = str(tmp_path / "drain.db")
    process, base = await started(tmp_path, fake_upstream, db)
    try:
        expected = await expected_text(base)
        async with aiohttp.ClientSession(timeout=TIMEOUT) as session, session.post(
                f"{base}/v1/responses", json={"model": MODEL, "input": SLOW, "background": True,
                                              "stream": True}) as answer:
            seen = await read_until_deltas(answer)
            os.kill(process.pid, signal.SIGTERM)
            rest, done = parse_sse(await answer.read())  # ends at the drain deadline
        assert done, "the draining process's reader did not get its stream ended cleanly"
        seen += rest
        assert not any(event["type"] in ("response.failed", "response.completed") for event in seen)
        assert process.process.wait(timeout=60) == 0
    finally:
        process.stop()
    response_id = seen[0]["response"]["id"]
    last = seen[-1]["sequence_number"]
    assert [event["sequence_number"] for event in seen] == list(range(last + 1))
    process, base = await started(tmp_path, fake_upstream, db)
    try:
        # the reader comes back to the restarted process, after the last event it saw
        after, done = await stream_after(base, response_id, last)
        assert done and after, "nothing followed the resumed reader's position"
        assert [event["sequence_number"] for event in after] == list(range(last + 1, last + 1 + len(after)))
        assert after[-1]["type"] == "response.completed"
        ended = await until_ended(base, response_id)
        assert ended["status"] == "completed"
        assert ended["output"][-1]["content"][0]["text"] == expected
        whole, _ = await stream_after(base, response_id, -1)
        check_whole_stream(whole)
        assert whole[:last + 1] == seen  # what the first reader saw is what was stored
    finally:
        process.stop()


async def start_and_kill(tmp_path, fake_upstream: str, db: str, env: dict[str, str],
                         headers: dict[str, str] | None = None, response_id: str | None = None) -> str:
    """A sidecar on ``db``; a background run started there (or ``response_id``, resumed there, followed) killed
    with SIGKILL once a few of its text deltas went by. Returns the response id."""
    process, http_port, _ = start_sidecar(str(tmp_path), fake_upstream, "--db", db, env={**ENV, **env},
                                          extproc=False)
    base = f"http://127.0.0.1:{http_port}"
    try:
        await wait_http(f"{base}/health", process=process)
        async with aiohttp.ClientSession(timeout=TIMEOUT, headers=headers) as session:
            if response_id is None:
                answer = await session.post(f"{base}/v1/responses", json={
                    "model": MODEL, "input": SLOW, "background": True, "stream": True})
            else:  # the resumed run, followed live here until its repeated call streamed a little
                answer = await session.get(f"{base}/v1/responses/{response_id}", params={"stream": "true"})
            async with answer:
                assert answer.status == 200, await answer.text()
                seen = await read_until_deltas(answer, steps=1 if response_id is None else 2)
                os.kill(process.pid, signal.SIGKILL)
                process.process.wait()
        return response_id or seen[0]["response"]["id"]
    finally:
        process.stop()


async def test_a_run_resumed_too_often_fails_saying_so(tmp_path, fake_upstream: str) -> None:
    db = str(tmp_path / "loop.db")
    bounded = {"RESPONSES_BRIDGE_BACKGROUND_MAX_RESUMES": "1"}
    response_id = await start_and_kill(tmp_path, fake_upstream, db, bounded)
    await start_and_kill(tmp_path, fake_upstream, db, bounded, response_id=response_id)  # resumed once, killed
    process, base = await started(tmp_path, fake_upstream, db, bounded)
    try:
        ended = await until_ended(base, response_id)
        assert ended["status"] == "failed"
        assert "resumed 1 times already" in ended["error"]["message"]
        events, done = await stream_after(base, response_id, -1)
        assert done and events[-1]["type"] == "response.failed"
        assert [event["sequence_number"] for event in events] == list(range(len(events)))
    finally:
        process.stop()


async def test_a_run_on_the_clients_own_upstream_credentials_is_not_resumed_when_they_are_not_kept(
        tmp_path, fake_upstream: str) -> None:
    """No upstream key is configured, so the client's Authorization went upstream, and the operator opted out of
    keeping it (``RESPONSES_BRIDGE_DURABLE_CLIENT_CREDENTIALS=false``): nobody could make the call again. The run
    fails as before, saying why; and its kept request is no reader's. (Kept, it is resumed:
    test_background_resume_credentials.py.)"""
    db = str(tmp_path / "creds.db")
    opted_out = {"RESPONSES_BRIDGE_DURABLE_CLIENT_CREDENTIALS": "false"}
    response_id = await start_and_kill(tmp_path, fake_upstream, db, opted_out,
                                       headers={"Authorization": "Bearer sk-client-own-key"})
    process, base = await started(tmp_path, fake_upstream, db, opted_out)
    try:
        ended = await until_ended(base, response_id)
        assert ended["status"] == "failed"
        assert "credentials, which were not kept" in ended["error"]["message"]
        events, done = await stream_after(base, response_id, -5)  # below -1: still only the stream
        assert done and events[0]["sequence_number"] == 0
        assert [event["sequence_number"] for event in events] == list(range(len(events)))
    finally:
        process.stop()
    for written in Path(db).parent.glob(Path(db).name + "*"):  # the file and its WAL (SQLite runs only)
        assert b"sk-client-own-key" not in written.read_bytes(), written
