"""Event logs written behind their readers in batches (services/write_behind.py): a stream whose frames come a few
milliseconds apart, as a model's tokens do, is a handful of writes, not one per frame — for a background run's log
and for a session's — and nothing is lost or written twice; a write waiting for its batch starts at once when a run
ends or is deleted."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import orjson

from responses_bridge.services.agents.events import SessionEvents
from responses_bridge.services.responses.background import BackgroundService
from responses_bridge.services.write_behind import WRITE_DELAY, WriteBehind
from responses_bridge.store import SQLiteResponseStore
from responses_bridge.store import open as store_open
from responses_bridge.store.base import DEFAULT_TENANT
from responses_bridge.store.sqlite.events import SQLiteEventLog
from tests.unit.test_background_runs import ScriptedUpstream, chunk, start

TOKENS = 20
PACE = 0.003  # seconds between two tokens: a fast model


class PacedUpstream(ScriptedUpstream):
    """Streams its words ``PACE`` seconds apart."""

    @asynccontextmanager
    async def chat(self, call: Any, authorization: Any) -> AsyncIterator[Any]:
        words = self.words

        class Answer:
            status = 200
            content_type = "text/event-stream"

            async def chunks(self) -> AsyncIterator[bytes]:
                yield chunk({"role": "assistant", "content": ""})
                for word in words:
                    await asyncio.sleep(PACE)
                    yield chunk({"content": word})
                yield chunk({}, "stop")
                yield b"data: [DONE]\n\n"

        yield Answer()


async def test_a_background_runs_paced_tokens_are_written_in_a_few_batches(tmp_path: Path) -> None:
    async with SQLiteResponseStore(str(tmp_path / "bg.db")) as store:
        log = SQLiteEventLog(store)
        batches: list[list[int]] = []
        original = log.append

        async def append(response_id: str, events: list[tuple[int, bytes]], *, tenant: str, **fence: str) -> None:
            batches.append([sequence for sequence, _ in events])
            await original(response_id, events, tenant=tenant, **fence)

        log.append = append  # type: ignore[method-assign]
        service = BackgroundService(store, log, PacedUpstream([f"w{n} " for n in range(TOKENS)]))  # type: ignore[arg-type]
        run = await start(service, store)
        await run.task
        written = [sequence for batch in batches for sequence in batch]
        assert written == list(range(len(run.frames)))  # every frame once, in order
        assert len(run.frames) > TOKENS
        # one write per token before (the writer started with each frame); now the stream's few tenths of a
        # second make a write or two, plus the terminal events' own
        assert len(batches) <= 4, [len(batch) for batch in batches]
        stored = await log.after(run.response_id, -1, tenant=DEFAULT_TENANT)
        assert [frame for _, frame in stored] == run.frames


async def test_a_sessions_paced_events_are_written_in_a_few_batches(tmp_path: Path) -> None:
    opened = await store_open.open_stores(str(tmp_path / "agents.db"), None)
    try:
        store = opened.agents
        batches: list[int] = []
        original = store.append_events

        async def append_events(session_id: str, events: list[tuple[int, str, bytes]], *, tenant: str) -> None:
            batches.append(len(events))
            await original(session_id, events, tenant=tenant)

        store.append_events = append_events  # type: ignore[method-assign]
        live = await SessionEvents(store).log_of("sess_1", "a")
        for number in range(TOKENS):
            await live.emit({"type": "agent.session.turn.output_text.delta", "delta": str(number)})
            await asyncio.sleep(PACE)
        await live.emit({"type": "agent.session.idle", "session": {}}, durable=True)
        stored = await store.events_after("sess_1", -1, tenant="a", limit=100)
        assert [orjson.loads(frame.split(b"data: ", 1)[1])["type"] for _, _, frame in stored] == \
            ["agent.session.turn.output_text.delta"] * TOKENS + ["agent.session.idle"]
        # one write per delta before; now one per tenth of a second (a slow machine stretches the deltas' pace)
        assert len(batches) <= 5, batches
    finally:
        await opened.close()


async def test_a_waiting_write_starts_at_once_when_settled() -> None:
    written: list[float] = []

    async def write() -> None:
        written.append(time.monotonic())

    writes = WriteBehind(write, delay=30.0)
    writes.soon()
    writes.soon()  # one write for both
    started = time.monotonic()
    await writes.settle()
    assert len(written) == 1 and written[0] - started < 5.0
    writes.soon()
    await asyncio.sleep(0)
    await writes.settle()
    assert len(written) == 2


async def test_a_write_waits_for_its_batch() -> None:
    written: list[float] = []

    async def write() -> None:
        written.append(time.monotonic())

    writes = WriteBehind(write)
    started = time.monotonic()
    writes.soon()
    assert writes.task is not None
    await writes.task
    assert written and written[0] - started >= WRITE_DELAY * 0.9
