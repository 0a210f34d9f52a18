"""``kill -9`` the sidecar while a file batch is being ingested; start it again on the same database: the files
left ``in_progress`` are ingested by the new process and every one ends ``completed``. On PostgreSQL the new
process takes a file over once the dead one's claim has lapsed (3 s here)."""

from __future__ import annotations

import asyncio
import os
import signal
from pathlib import Path

from responses_bridge.demo.procs import ManagedProcess, wait_http
from tests.support.bridge import start_sidecar
from tests.support.sdk import async_sdk

FILES = 24
PARAGRAPH = ("Ingestion must survive a crash: a file whose status says in_progress when the process dies is queued "
             "again when the next process starts, and the batch it belongs to completes. ")
TEXT = (PARAGRAPH * 1500).encode()  # about 270 kB of text per file: seconds of work for the batch, one at a time


async def _start(tmp_path: Path, fake_upstream: str, db: Path) -> tuple[ManagedProcess, str]:
    process, http_port, _ = start_sidecar(str(tmp_path), fake_upstream, "--db", str(db), extproc=False,
                                          env={"RESPONSES_BRIDGE_INGEST_CONCURRENCY": "1",
                                               "RESPONSES_BRIDGE_INGEST_LEASE_SECONDS": "3"})
    await wait_http(f"http://127.0.0.1:{http_port}/health", process=process)
    return process, f"http://127.0.0.1:{http_port}"


async def test_restart_mid_ingestion_resumes(tmp_path: Path, fake_upstream: str) -> None:
    db = tmp_path / "bridge.db"
    process, base = await _start(tmp_path, fake_upstream, db)
    try:
        async with async_sdk(base_url=f"{base}/v1", api_key="sk-test", max_retries=0, timeout=60) as client:
            ids = [(await client.files.create(file=(f"part{n}.txt", TEXT), purpose="assistants")).id
                   for n in range(FILES)]
            store = await client.vector_stores.create(name="restart")
            batch = await client.vector_stores.file_batches.create(store.id, file_ids=ids)
            for _ in range(1200):  # until some files are done and many are not: a condition, not a timer
                counts = (await client.vector_stores.file_batches.retrieve(batch.id,
                                                                           vector_store_id=store.id)).file_counts
                if counts.completed >= 1 and counts.in_progress >= FILES // 2:
                    break
                assert counts.in_progress > 0, f"the batch finished before the crash could land: {counts}"
                await asyncio.sleep(0.05)
            else:
                raise AssertionError(f"ingestion never got under way: {counts}")
        os.killpg(process.pid, signal.SIGKILL)
        assert process.process is not None
        process.process.wait()
    finally:
        process.stop()

    process, base = await _start(tmp_path, fake_upstream, db)
    try:
        async with async_sdk(base_url=f"{base}/v1", api_key="sk-test", max_retries=0, timeout=60) as client:
            for _ in range(2400):
                resumed = await client.vector_stores.file_batches.retrieve(batch.id, vector_store_id=store.id)
                if resumed.status != "in_progress":
                    break
                await asyncio.sleep(0.1)
            assert resumed.status == "completed", resumed
            assert resumed.file_counts.completed == FILES and resumed.file_counts.failed == 0
            whole = await client.vector_stores.retrieve(store.id)
            assert whole.status == "completed" and whole.file_counts.completed == FILES
            files = [f async for f in client.vector_stores.files.list(store.id, limit=100)]
            assert len(files) == FILES and all(f.status == "completed" and f.usage_bytes > 0 for f in files)
            found = [r async for r in await client.vector_stores.search(store.id, query="survive a crash")]
            assert found and {r.file_id for r in found} <= set(ids)
    finally:
        process.stop()
