"""The batch runner (services/batches/runner.py) over a real SQLite store and Files service, with a line server
that answers when the test lets it and a clock the test moves: the window passing mid-batch (``expired``, the lines
done kept, the lines never run in the error file as ``batch_expired``), a drain (the lines in flight recorded, the
lease let go, another process resuming without sending any line again), and the client's ``Authorization`` kept
sealed while the batch runs and erased at its end."""

from __future__ import annotations

import asyncio
import os
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import orjson
import pytest

from responses_bridge.sealing import Sealer
from responses_bridge.services.batches.batches import BatchService
from responses_bridge.services.batches.capacity import FixedLineGate
from responses_bridge.services.batches.lines import LineAnswer
from responses_bridge.services.batches.runner import BatchRunner
from responses_bridge.services.files.files import FileService
from responses_bridge.services.responses.kept_authorization import KeptAuthorization
from responses_bridge.store.sqlite.batches.batches import SQLiteBatchStore
from responses_bridge.store.sqlite.files.files import SQLiteFileStore
from responses_bridge.store.sqlite.responses import SQLiteResponseStore

AUTHORIZATION = "Bearer sk-the-clients-own"


class Lines:
    """Answers each line once the test releases it (``release(n)`` lines, in the order they arrived)."""

    endpoints = ("/v1/responses",)

    def __init__(self) -> None:
        self.started: list[str] = []
        self.seen_authorization: set[str | None] = set()
        self._permits = asyncio.Semaphore(0)

    def forwards_authorization(self, endpoint: str) -> bool:
        return True

    def release(self, count: int) -> None:
        for _ in range(count):
            self._permits.release()

    async def serve(self, endpoint: str, body: bytes, *, tenant: str, authorization: str | None) -> LineAnswer:
        self.started.append(orjson.loads(body)["input"])
        self.seen_authorization.add(authorization)
        await self._permits.acquire()
        return LineAnswer(200, orjson.dumps({"usage": {"input_tokens": 3, "output_tokens": 2}}), "req_1")


class Clock:
    def __init__(self) -> None:
        self.now = 1_800_000_000.0

    def __call__(self) -> float:
        return self.now


class Bench:
    def __init__(self, db: SQLiteResponseStore, files: FileService, clock: Clock) -> None:
        self.store = SQLiteBatchStore(db)
        self.files = files
        self.clock = clock
        self.kept = KeptAuthorization(Sealer(os.urandom(32)))

    def runner(self, lines: Lines) -> BatchRunner:
        return BatchRunner(self.store, self.files, lines, FixedLineGate(2), self.kept, lease_seconds=30,
                           shared=True, max_line_bytes=10_000, clock=self.clock)

    async def create(self, runner: BatchRunner, count: int, raw: bytes | None = None) -> str:
        if raw is None:
            raw = b"".join(orjson.dumps({"custom_id": f"c{n}", "method": "POST", "url": "/v1/responses",
                                         "body": {"model": "m", "input": f"line {n}"}}) + b"\n"
                           for n in range(count))
        async with self.files.receive(tenant="t") as upload:
            await upload.write(raw)
            file = await self.files.create(upload, filename="in.jsonl", purpose="batch", expires_after=None)
        self.service = BatchService(self.store, self.files, self.kept, runner, clock=self.clock)
        created = await self.service.create({"input_file_id": file["id"], "endpoint": "/v1/responses",
                                        "completion_window": "24h"}, tenant="t", authorization=AUTHORIZATION)
        return str(created["id"])

    async def until(self, batch_id: str, condition: Any) -> Any:
        for _ in range(2000):
            batch = await self.store.get_batch(batch_id, tenant="t")
            if batch is not None and condition(batch):
                return batch
            await asyncio.sleep(0.005)
        raise AssertionError("the batch never got there")

    async def lines_of(self, file_id: str | None) -> list[dict[str, Any]]:
        if file_id is None:
            return []
        reader, _ = await self.files.open_content(file_id, tenant="t")
        try:
            raw = await reader.read(1 << 20)
        finally:
            await reader.aclose()
        return [orjson.loads(line) for line in raw.splitlines()]


@pytest.fixture
async def bench(tmp_path: Path) -> AsyncIterator[Bench]:
    async with SQLiteResponseStore(str(tmp_path / "bridge.db")) as db:
        files = FileService(SQLiteFileStore(db), tmp_path / "files", 1 << 23)
        await files.start()
        try:
            yield Bench(db, files, Clock())
        finally:
            await files.aclose()


async def test_the_window_passing_keeps_the_lines_done_and_expires_the_rest(bench: Bench) -> None:
    lines = Lines()
    runner = bench.runner(lines)
    batch_id = await bench.create(runner, 6)
    await bench.until(batch_id, lambda batch: len(lines.started) == 2)  # the gate's two places taken
    lines.release(1)
    await bench.until(batch_id, lambda batch: batch.totals.completed == 1 and len(lines.started) == 3)
    bench.clock.now += 24 * 3600  # the window passes: the two lines in flight finish, nothing else starts
    lines.release(2)
    done = await bench.until(batch_id, lambda batch: batch.status == "expired")
    assert len(lines.started) == 3
    assert done.totals.completed == 3 and done.totals.failed == 3 and done.body["expired_at"]
    assert [entry["custom_id"] for entry in await bench.lines_of(done.body["output_file_id"])] == ["c0", "c1", "c2"]
    expired = await bench.lines_of(done.body["error_file_id"])
    assert [(entry["custom_id"], entry["response"], entry["error"]["code"]) for entry in expired] == [
        ("c3", None, "batch_expired"), ("c4", None, "batch_expired"), ("c5", None, "batch_expired")]
    await runner.close()


async def test_a_drain_lets_the_lines_in_flight_finish_and_another_process_resumes(bench: Bench) -> None:
    lines = Lines()
    first = bench.runner(lines)
    batch_id = await bench.create(first, 5)
    running = await bench.until(batch_id, lambda batch: len(lines.started) == 2)
    kept = running.body["_authorization"]
    assert isinstance(kept, str) and "sk-the-clients-own" not in kept  # sealed
    first.drain()
    lines.release(2)  # the two in flight finish and are recorded; no third line starts
    await bench.until(batch_id, lambda batch: batch.totals.completed == 2)
    await first.close()
    assert len(lines.started) == 2
    assert await bench.store.claimable(bench.clock.now, limit=10) == [batch_id]  # the lease let go at once
    resumed = Lines()
    second = bench.runner(resumed)
    await second.start()
    resumed.release(3)
    done = await bench.until(batch_id, lambda batch: batch.status == "completed")
    assert sorted(resumed.started) == ["line 2", "line 3", "line 4"]  # no line sent twice
    assert done.totals.rerun == 0 and done.totals.completed == 5
    assert done.totals.input_tokens == 15 and done.totals.output_tokens == 10
    assert lines.seen_authorization == resumed.seen_authorization == {AUTHORIZATION}
    assert done.body["_authorization"] is None  # erased at the end
    await second.close()


async def test_a_line_longer_than_a_request_is_refused_without_being_held(bench: Bench) -> None:
    """The input is read a chunk at a time; a line past the request size is refused for it, the lines around it
    checked as usual, and the file's other errors still named."""
    lines = Lines()
    runner = bench.runner(lines)

    def entry(custom_id: str, text: str) -> bytes:
        return orjson.dumps({"custom_id": custom_id, "method": "POST", "url": "/v1/responses",
                             "body": {"model": "m", "input": text}})

    raw = b"\n".join([entry("a", "x"), entry("b", "y" * 3_000_000), entry("a", "z"), entry("c", "w")])
    batch_id = await bench.create(runner, 0, raw)
    failed = await bench.until(batch_id, lambda batch: batch.status == "failed")
    assert [(error["line"], error["code"]) for error in failed.body["errors"]["data"]] == [
        (2, "request_too_large"), (3, "duplicate_custom_id")]
    assert lines.started == [] and failed.totals.total == 0
    answered = await bench.service.retrieve(batch_id, tenant="t")
    assert not [key for key in answered if key.startswith("_")]  # the kept credential and settings stay inside
    assert answered["errors"]["object"] == "list" and answered["failed_at"]
    await runner.close()


class FlakyStore:
    """The batch store, whose first record of line 2's result fails (a store outage under that one write)."""

    def __init__(self, store: SQLiteBatchStore) -> None:
        self._store = store
        self.failed = False

    def __getattr__(self, name: str) -> Any:
        return getattr(self._store, name)

    async def finish_line(self, batch_id: str, index: int, output: bytes, counts: Any, *, owner: str) -> bool:
        if index == 2 and not self.failed:
            self.failed = True
            raise OSError("the store went away")
        return await self._store.finish_line(batch_id, index, output, counts, owner=owner)


async def test_a_result_the_store_failed_to_record_is_sent_again_not_lost(bench: Bench) -> None:
    lines = Lines()
    flaky = FlakyStore(bench.store)
    runner = BatchRunner(flaky, bench.files, lines, FixedLineGate(2), bench.kept,  # type: ignore[arg-type]
                         lease_seconds=0.3, shared=True, max_line_bytes=10_000, clock=bench.clock)
    await runner.start()
    batch_id = await bench.create(runner, 4)
    lines.release(5)
    done = await bench.until(batch_id, lambda batch: batch.status == "completed")
    assert flaky.failed and sorted(lines.started) == ["line 0", "line 1", "line 2", "line 2", "line 3"]
    assert done.totals.completed == 4 and done.totals.rerun == 1
    output = await bench.lines_of(done.body["output_file_id"])
    assert sorted(entry["custom_id"] for entry in output) == ["c0", "c1", "c2", "c3"]
    await runner.close()
