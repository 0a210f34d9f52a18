"""A session's log let go of when the session went idle remembers its last event: the session's next input (a new
log numbered after it) and the client's stream resumed after that event ask the store for nothing, in one process;
with several processes on the database the next log's number is read from the store, as another may have written."""

from __future__ import annotations

from pathlib import Path

import pytest

from responses_bridge.services.agents.events import SessionEvents
from responses_bridge.store import open as store_open


@pytest.mark.parametrize("shared", [False, True])
async def test_the_next_turn_after_idle_reads_no_cursor_from_the_store(tmp_path: Path, shared: bool) -> None:
    opened = await store_open.open_stores(str(tmp_path / "agents.db"), None)
    try:
        store = opened.agents
        asked: list[str] = []
        last_event, event_sequence = store.last_event, store.event_sequence

        async def counted_last(session_id: str, *, tenant: str) -> int:
            asked.append("last_event")
            return await last_event(session_id, tenant=tenant)

        async def counted_sequence(session_id: str, event_id: str, *, tenant: str) -> int | None:
            asked.append("event_sequence")
            return await event_sequence(session_id, event_id, tenant=tenant)

        store.last_event = counted_last  # type: ignore[method-assign]
        store.event_sequence = counted_sequence  # type: ignore[method-assign]
        events = SessionEvents(store, poll=0.5 if shared else None)
        live = await events.log_of("sess_1", "a")
        live.active = True
        await live.emit({"type": "agent.session.turn.output_text.delta", "delta": "one"})
        idle = await live.emit({"type": "agent.session.idle", "session": {}}, durable=True)
        live.active = False
        events.release(live)  # idle: the log leaves memory
        assert "sess_1" not in events.logs
        asked.clear()

        assert await events.sequence_of("sess_1", idle, tenant="a") == 1  # the client's cursor
        assert await events.sequence_of("sess_1", idle, tenant="b") is None  # never another tenant's
        again = await events.log_of("sess_1", "a")  # the next input
        assert again.next_sequence == 2
        # only the other tenant's look-up (not found in memory) goes to the store; with other processes, the number
        assert asked == (["event_sequence", "last_event"] if shared else ["event_sequence"])

        await again.emit({"type": "agent.session.turn.created"}, durable=True)
        stored = await store.events_after("sess_1", -1, tenant="a", limit=10)
        assert [sequence for sequence, _, _ in stored] == [0, 1, 2]
        events.forget("sess_1")
        assert "sess_1" not in events.recent
    finally:
        await opened.close()
