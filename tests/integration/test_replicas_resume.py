"""A background run resumed by another process after ``kill -9`` of the first goes to its chain's replica (#99).

Three fake model servers are the replicas of one upstream; a sidecar on one database (the SQLite file, or the
PostgreSQL database with ``--store=postgres``) serves a chain's first turn on one of them, then starts a background
run chained to it, slow enough to be killed mid-call with ``kill -9``. Another sidecar process on the same database
resumes the run: it has never seen the chain, so its picker reads the chain's replica from the store
(replicas/persist.py), and the resumed call goes there. The second process lists the replicas with the chain's one
LAST: a picker that knew nothing of the chain would pick the first (no prefix warm, no load: the first listed), so
the test tells a remembered chain from a lucky pick.
"""

from __future__ import annotations

import asyncio
import os
import signal
from collections.abc import AsyncIterator
from contextlib import AsyncExitStack
from pathlib import Path

import aiohttp
import pytest

from responses_bridge.demo.procs import ManagedProcess, wait_http
from tests.integration.test_background_resume import ENV, MODEL, SLOW, TIMEOUT, read_until_deltas, until_ended
from tests.support.bridge import start_sidecar
from tests.support.replica_fleet import FakeReplica, _fake, last_user_text


@pytest.fixture
async def replicas() -> AsyncIterator[list[FakeReplica]]:
    async with AsyncExitStack() as stack:
        started = list(await asyncio.gather(*(_fake() for _ in range(3))))
        for replica in started:
            stack.callback(replica.process.stop)
        yield started


async def _sidecar(tmp_path: Path, db: str, urls: list[str]) -> tuple[ManagedProcess, str]:
    flags = [flag for url in urls[1:] for flag in ("--upstream", url)]
    process, http_port, _ = start_sidecar(str(tmp_path), urls[0], *flags, "--db", db, env=ENV, extproc=False)
    base = f"http://127.0.0.1:{http_port}"
    await wait_http(f"{base}/health", process=process)
    return process, base


async def _served(replicas: list[FakeReplica], marker: str) -> list[int]:
    """How many chat calls holding ``marker`` in their last user message each replica received."""
    counts = []
    for replica in replicas:
        entries = [entry for entry in await replica.log.entries() if entry["path"] == "/v1/chat/completions"]
        counts.append(sum(1 for entry in entries if marker in last_user_text(entry["body"])))
    return counts


async def test_a_resumed_background_run_goes_to_its_chains_replica(tmp_path: Path,
                                                                   replicas: list[FakeReplica]) -> None:
    db = str(tmp_path / "resume.db")
    urls = [replica.url for replica in replicas]
    process, base = await _sidecar(tmp_path, db, urls)
    try:
        async with aiohttp.ClientSession(timeout=TIMEOUT) as session:
            async with session.post(f"{base}/v1/responses", json={"model": MODEL, "input": "home turn"}) as answer:
                first = await answer.json()
                assert answer.status == 200, first
            homes = await _served(replicas, "home turn")
            assert sorted(homes) == [0, 0, 1], homes
            home = homes.index(1)
            async with session.post(f"{base}/v1/responses", json={
                    "model": MODEL, "input": SLOW, "background": True, "stream": True,
                    "previous_response_id": first["id"]}) as answer:
                seen = await read_until_deltas(answer)
                os.kill(process.pid, signal.SIGKILL)  # mid-call: no end stored, the lease left to lapse
                assert process.process is not None
                process.process.wait()
        response_id = seen[0]["response"]["id"]
        assert (await _served(replicas, SLOW))[home] == 1  # the killed call was at the chain's replica
    finally:
        process.stop()
    others = [url for index, url in enumerate(urls) if index != home]
    process, base = await _sidecar(tmp_path, db, [*others, urls[home]])  # the chain's replica listed last
    try:
        ended = await until_ended(base, response_id)
        assert ended["status"] == "completed", ended.get("error")
        served = await _served(replicas, SLOW)
        assert served[home] == 2 and sum(served) == 2, (home, served)  # resumed where its chain was, only there
    finally:
        process.stop()
