"""``kill -9`` the sidecar during 200 concurrent stored responses; restart it on the same database.

Every response a client saw complete must be retrievable and identical to what the client got; none may be left
``queued``/``in_progress`` (a foreground response in flight was never written; a background one is marked failed,
with its event stream ended by ``response.failed``). On PostgreSQL the restarted process cannot tell the dead one's
background runs from another live replica's: they are failed once their lease (2 s here) has run out.
"""

from __future__ import annotations

import asyncio
import json
import os
import signal
import time

import aiohttp

from responses_bridge.demo.procs import wait_http
from tests.support.bridge import start_sidecar
from tests.support.sdk_strict import failure_reason
from tests.support.sidecar_state import sidecar_stores

MODEL = "fake-model"
CONCURRENCY = 200
KILL_WHEN_COMPLETED = 20  # kill once this many responses completed ...
KILL_WHEN_IN_FLIGHT = 50  # ... while at least this many requests are still running
ENV = {"RESPONSES_BRIDGE_BACKGROUND_LEASE_SECONDS": "2"}  # a shared database's lease on each background run


def prompt(index: int) -> str:
    # 20 chunks, 5 ms to 195 ms apart: from 0.1 s to 4 s per response, so the kill lands mid-way for many
    return f"request {index} [chunks=20] [delay={5 + (index % 20) * 10}]"


async def stream_one(session: aiohttp.ClientSession, base: str, index: int, seen: dict) -> None:
    async with session.post(f"{base}/v1/responses", json={"model": MODEL, "input": prompt(index),
                                                          "stream": True}) as answer:
        buffer = b""
        async for chunk in answer.content.iter_any():
            buffer += chunk
            while b"\n\n" in buffer:
                frame, buffer = buffer.split(b"\n\n", 1)
                data = frame.split(b"data: ", 1)[1]
                if data == b"[DONE]":
                    continue
                event = json.loads(data)
                if event["type"] == "response.created":
                    seen["started"][event["response"]["id"]] = "stream"
                elif event["type"] == "response.completed":
                    seen["completed"][event["response"]["id"]] = event["response"]


async def json_one(session: aiohttp.ClientSession, base: str, index: int, seen: dict) -> None:
    async with session.post(f"{base}/v1/responses", json={"model": MODEL, "input": prompt(index)}) as answer:
        body = await answer.json()
        if answer.status == 200 and body.get("status") == "completed":
            seen["completed"][body["id"]] = body


async def background_one(session: aiohttp.ClientSession, base: str, index: int, seen: dict) -> None:
    async with session.post(f"{base}/v1/responses", json={"model": MODEL, "input": prompt(index),
                                                          "background": True}) as answer:
        body = await answer.json()
        assert answer.status == 200, (answer.status, body)
        seen["background"].append(body["id"])
    while True:  # poll until it ends (or the sidecar dies under us)
        await asyncio.sleep(0.05)
        async with session.get(f"{base}/v1/responses/{body['id']}") as answer:
            current = await answer.json()
        if current["status"] == "completed":
            seen["completed"][current["id"]] = current
            return


async def until_mid_way(tasks: list[asyncio.Task], seen: dict, timeout: float = 60) -> None:
    """Returns once enough responses completed and enough are still running: a condition, not a timer, so a
    slow machine shifts the moment of the kill instead of making the test prove nothing."""
    deadline = asyncio.get_running_loop().time() + timeout
    while True:
        running = sum(not task.done() for task in tasks)
        if len(seen["completed"]) >= KILL_WHEN_COMPLETED and running >= KILL_WHEN_IN_FLIGHT:
            return
        failed = [task.exception() for task in tasks if task.done() and task.exception() is not None]
        assert not failed, f"a request failed before the kill: {failed[0]!r}"
        assert running >= KILL_WHEN_IN_FLIGHT, "too few requests left running to kill mid-way"
        assert asyncio.get_running_loop().time() < deadline, "the responses did not progress"
        await asyncio.sleep(0.01)


async def settled(session: aiohttp.ClientSession, base: str, response_ids: list[str], timeout: float = 60) -> None:
    """Until none of ``response_ids`` is stored ``queued``/``in_progress``: at once on SQLite (the restart failed
    them), after the dead process's leases ran out on PostgreSQL."""
    deadline = asyncio.get_running_loop().time() + timeout
    for response_id in response_ids:
        while True:
            async with session.get(f"{base}/v1/responses/{response_id}") as answer:
                if answer.status != 200 or (await answer.json())["status"] not in ("queued", "in_progress"):
                    break
            assert asyncio.get_running_loop().time() < deadline, f"{response_id} is still running"
            await asyncio.sleep(0.1)


async def test_kill_9_during_200_concurrent_responses(tmp_path, fake_upstream: str) -> None:
    db = str(tmp_path / "crash.db")
    process, http_port, _ = start_sidecar(str(tmp_path), fake_upstream, "--db", db, env=ENV, extproc=False)
    base = f"http://127.0.0.1:{http_port}"
    seen: dict = {"started": {}, "completed": {}, "background": []}
    await wait_http(f"{base}/health", process=process)
    kinds = (stream_one, json_one, background_one, stream_one)
    connector = aiohttp.TCPConnector(limit=0)
    async with aiohttp.ClientSession(connector=connector, timeout=aiohttp.ClientTimeout(total=30)) as session:
        tasks = [asyncio.create_task(kinds[i % len(kinds)](session, base, i, seen)) for i in range(CONCURRENCY)]
        await until_mid_way(tasks, seen)
        os.kill(process.pid, signal.SIGKILL)
        process.process.wait()
        results = await asyncio.gather(*tasks, return_exceptions=True)
    cut = sum(isinstance(result, Exception) for result in results)
    completed = dict(seen["completed"])
    assert completed, "nothing completed before the kill: the test would prove nothing"
    assert cut, "nothing was in flight at the kill: the test would prove nothing"

    started = time.monotonic()
    process, http_port, _ = start_sidecar(str(tmp_path), fake_upstream, "--db", db, env=ENV, extproc=False)
    base = f"http://127.0.0.1:{http_port}"
    try:
        await wait_http(f"{base}/health", process=process)
        restart_seconds = time.monotonic() - started
        async with aiohttp.ClientSession() as session:
            for response_id, response in completed.items():
                async with session.get(f"{base}/v1/responses/{response_id}") as answer:
                    assert answer.status == 200, response_id
                    assert await answer.json() == response
            in_flight = [rid for rid in list(seen["started"]) + seen["background"] if rid not in completed]
            await settled(session, base, in_flight)
            statuses: dict[str, int] = {}
            for response_id in in_flight:
                async with session.get(f"{base}/v1/responses/{response_id}") as answer:
                    if answer.status == 404:
                        statuses["never written"] = statuses.get("never written", 0) + 1
                        continue
                    body = await answer.json()
                    assert body["status"] in ("failed", "completed"), body["status"]
                    statuses[body["status"]] = statuses.get(body["status"], 0) + 1
                    if body["background"] and body["status"] == "failed":
                        assert failure_reason(body["error"]) == "server_restarted"
                        async with session.get(f"{base}/v1/responses/{response_id}?stream=true") as replay:
                            text = await replay.text()
                        frames = [frame for frame in text.split("\n\n") if frame]
                        assert frames[-1] == "data: [DONE]"
                        assert frames[-2].startswith("event: response.failed\n")
        # background runs whose POST was answered into the kill (their ids never reached the client) are resumed
        # too: at once on SQLite, once the dead process's leases ran out on PostgreSQL; none is left unfinished
        async with sidecar_stores(db) as stores:
            deadline = asyncio.get_running_loop().time() + 60
            while (left := await stores.events.unfinished()) and asyncio.get_running_loop().time() < deadline:
                await asyncio.sleep(0.2)
            assert left == []
        print(f"\ncrash test: {len(completed)} completed before the kill (all retrievable and identical), "
              f"{cut} requests cut, in flight after restart: {statuses}, restart to healthy {restart_seconds:.2f} s")
    finally:
        process.stop()
