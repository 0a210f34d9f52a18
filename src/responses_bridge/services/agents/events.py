"""A session's event log: every event a session produces (the SDK's ``AgentSessionEvent`` union), numbered from 0
with no gaps, kept as the SSE frame it was sent as, and followed by any number of readers, resumable after a
disconnect.

Events are written to the store in batches by a writer task, off the path of the text deltas: a delta never waits
for the database, and a burst of them is one write (services/write_behind.py). A frame is shown to live readers
only once it is stored (the batch that wrote it shows it): batching delays what a reader sees by up to the write
delay, never what the store keeps, so a reader that saw event ``n`` can resume after it from any process, even
after this one was killed (session_resume.py). A frame leaves memory only once it is durable, so a
reader that finds it gone finds it in the store; a reader resuming after event ``n`` reads the store, then
memory, and never sees an event twice or misses one. The terminal events of a turn (and a session's idle or
failed) are written before the call that emits them returns.

A frame is ``id: <event_id>\\nevent: <type>\\ndata: <JSON>\\n\\n``: the ``id`` field is the cursor a reconnecting
client sends back (``Last-Event-ID``, or ``?after=<event_id>``).
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import hashlib
from collections.abc import AsyncGenerator, AsyncIterator, Callable
from typing import Any

import orjson
import structlog

from ... import ids
from ...protocol.errors import APIError, invalid_request
from ...store.base_agents import AgentStore, Record
from ...store.records import LeaseLost
from ..write_behind import WriteBehind

log = structlog.get_logger("responses_bridge.agents")

STORE_PAGE = 500
KEEPALIVE = b": keep-alive\n"
"""A comment line with no blank line after it: a blank line would dispatch an event, and the SDK's decoder, which
keeps the last ``id`` as the spec says, would read an empty event with that id and fail on its empty data."""
RECENT_LOGS = 10_000  # idle sessions whose last event is remembered (about 150 bytes each)
MAX_UNSAVED = 10_000  # frames waiting for the writer; past it an emit waits for the writer (memory stays bounded)


def frame_of(event_id: str, event: dict[str, Any]) -> bytes:
    return b"id: %s\nevent: %s\ndata: %s\n\n" % (event_id.encode(), str(event["type"]).encode(), orjson.dumps(event))


class SessionLog:
    """The live tail of one session's log in this process."""

    def __init__(self, store: AgentStore, session_id: str, tenant: str, next_sequence: int) -> None:
        self.store = store
        self.session_id = session_id
        self.tenant = tenant
        self.first = next_sequence  # sequence of frames[0]
        self.frames: list[tuple[int, str, bytes]] = []
        self.saved = 0  # frames[:saved] are durable
        self.ids: dict[str, int] = {}  # event id -> sequence, for the frames in memory
        self.closed = False  # the session is gone: readers stop
        self.readers = 0
        self.active = False  # a runner emits into it: kept in memory while it is
        self._changed = asyncio.Event()
        self._lock = asyncio.Lock()
        self._writes = WriteBehind(self._flush_quietly)  # batched; readers see what it wrote (write_behind.py)
        self.shown_until = next_sequence  # frames numbered below it are stored, so shown to readers
        # a running turn's writes on a shared database: fenced by this process's lease on the session (the store
        # refuses them once another process may hold it: LeaseLost), and ``on_fenced`` stops the runner at once
        self.fence: dict[str, str] = {}
        self.on_fenced: Callable[[], None] | None = None

    @property
    def next_sequence(self) -> int:
        return self.first + len(self.frames)

    async def emit(self, event: dict[str, Any], *, durable: bool = False, records: list[Record] | None = None) -> str:
        """Number ``event`` and have it written, then shown to readers; ``durable``: written before this returns;
        ``records``: stored in the same transaction as it (and every event before it), which makes it durable."""
        event_id = self._append(event)
        if records is not None or durable or len(self.frames) - self.saved > MAX_UNSAVED:
            await self.flush(records or [])
        else:
            self._writes.soon()
        return event_id

    async def emit_together(self, events: list[dict[str, Any]], *, records: list[Record]) -> None:
        """``events``, in order, stored in one transaction with ``records`` before any of them is shown: a turn's
        end and the session's idle that follows it are one write, not two."""
        for event in events:
            self._append(event)
        await self.flush(records)

    def _append(self, event: dict[str, Any]) -> str:
        event_id = ids.new_id("sevt")
        event = {"event_id": event_id, **event}
        sequence = self.next_sequence
        self.frames.append((sequence, event_id, frame_of(event_id, event)))
        self.ids[event_id] = sequence
        return event_id

    def _show(self) -> None:
        """Readers may see every stored frame (and no other)."""
        stored = self.first + self.saved
        if stored > self.shown_until:
            self.shown_until = stored
            self._wake()

    async def flush(self, records: list[Record] | None = None) -> None:
        """Every frame so far (and ``records``) stored, then shown. A write refused for a lost lease
        (:class:`LeaseLost`) shows nothing of it, tells ``on_fenced`` and is raised: never retried."""
        async with self._lock:
            try:
                if records:
                    end = len(self.frames)
                    await self.store.commit(self.session_id, records, self.frames[self.saved:end],
                                            tenant=self.tenant, **self.fence)
                    self.saved = end
                while self.saved < len(self.frames):
                    end = len(self.frames)
                    await self.store.append_events(self.session_id, self.frames[self.saved:end],
                                                   tenant=self.tenant, **self.fence)
                    self.saved = end
            except LeaseLost:
                log.warning("agent_session_lease_lost", session_id=self.session_id, fenced=True)
                if self.on_fenced is not None:
                    self.on_fenced()
                raise
            self._show()
            self._trim()

    async def drop_unsaved(self) -> int:
        """Forget the frames the store never took (an outage outlasted their writes): no reader saw them, and the
        step they told of is made again from what is stored (session_outage.py), as after a stop. Their count."""
        async with self._lock:
            dropped = self.frames[self.saved:]
            for _, event_id, _ in dropped:
                self.ids.pop(event_id, None)
            del self.frames[self.saved:]
            return len(dropped)

    def _trim(self, *, every: bool = False) -> None:
        """Durable frames leave memory once many have piled up (readers behind them read the store), or all of them
        when the session went idle (``every``)."""
        if self.saved >= 1000 or (every and self.saved):
            for _, event_id, _ in self.frames[:self.saved]:
                self.ids.pop(event_id, None)
            del self.frames[:self.saved]
            self.first += self.saved
            self.saved = 0

    async def _flush_quietly(self) -> None:
        try:
            await self.flush()
        except LeaseLost:  # the runner is stopped (on_fenced); what was not stored is the new owner's to make
            pass
        except Exception:  # the next batch, or a durable emit, retries them
            log.exception("agent_session_events_write_failed", session_id=self.session_id)

    def _wake(self) -> None:
        changed, self._changed = self._changed, asyncio.Event()
        changed.set()

    def close(self) -> None:
        self.closed = True
        self._wake()

    async def wait(self, timeout: float) -> bool:
        """Wait for a change; False when ``timeout`` passed without one."""
        changed = self._changed
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(changed.wait(), timeout)
        return changed.is_set()

    def in_memory_after(self, after: int) -> list[tuple[int, str, bytes]] | None:
        """The frames after ``after`` when memory holds the next one (None: read the store first)."""
        if after + 1 < self.first:
            return None
        return self.frames[after + 1 - self.first:self.shown_until - self.first]


class SessionEvents:
    """Every session log of this process, by session id."""

    def __init__(self, store: AgentStore, *, poll: float | None = None) -> None:
        self.store = store
        self.logs: dict[str, SessionLog] = {}
        self.poll = poll  # shared database: a log no process here writes is read from the store this often
        # the last event of the logs let go of lately: (tenant, its sequence, its id). A session's next input and the
        # client's stream after that event (the usual next two requests) then ask the store for neither
        self.recent: collections.OrderedDict[str, tuple[str, int, str]] = collections.OrderedDict()

    async def log_of(self, session_id: str, tenant: str) -> SessionLog:
        """The session's live log (the caller has found the session to be ``tenant``'s)."""
        found = self.logs.get(session_id)
        if found is None:
            recent = self.recent.pop(session_id, None)
            if recent is not None and recent[0] == tenant and self.poll is None:  # no other process writes it
                last = recent[1]
            else:
                last = await self.store.last_event(session_id, tenant=tenant)
            found = self.logs.setdefault(session_id, SessionLog(self.store, session_id, tenant, last + 1))
        if found.tenant != tenant:
            raise LookupError(session_id)  # never: session ids are random and every caller checks the owner first
        return found

    async def sequence_of(self, session_id: str, event_id: str, *, tenant: str) -> int | None:
        """The sequence of ``event_id`` (a reconnecting reader's cursor), None when the session has no such event."""
        live = self.logs.get(session_id)
        if live is not None and live.tenant == tenant and event_id in live.ids:
            return live.ids[event_id]
        recent = self.recent.get(session_id)
        if recent is not None and recent[0] == tenant and recent[2] == event_id:  # an event's number never changes
            return recent[1]
        return await self.store.event_sequence(session_id, event_id, tenant=tenant)

    async def follow(self, session_id: str, after: int, *, tenant: str, until_idle: bool,
                     keepalive: float = 15.0) -> AsyncGenerator[bytes, None]:
        """Frames after sequence ``after``: stored ones, then live ones as they come. Ends when the session is
        deleted, or (``until_idle``) once an event that leaves the session idle or failed has been sent; yields
        ``b""`` after ``keepalive`` seconds of silence (the caller writes :data:`KEEPALIVE`)."""
        live = await self.log_of(session_id, tenant)
        live.readers += 1
        try:
            async for chunk in self._follow(live, after, until_idle=until_idle, keepalive=keepalive):
                yield chunk
        finally:
            live.readers -= 1
            self.release(live)

    def release(self, live: SessionLog) -> None:
        """A log nobody writes or reads leaves memory (its frames are all stored: the last emit was durable)."""
        if live.readers == 0 and not live.active and live.saved == len(live.frames):
            last = live.frames[-1] if live.frames else None
            live._trim(every=True)
            if self.logs.get(live.session_id) is live:
                del self.logs[live.session_id]
                if last is not None and not live.closed:
                    self.recent[live.session_id] = (live.tenant, last[0], last[1])
                    self.recent.move_to_end(live.session_id)
                    while len(self.recent) > RECENT_LOGS:
                        self.recent.popitem(last=False)

    async def _follow(self, live: SessionLog, after: int, *, until_idle: bool,
                      keepalive: float) -> AsyncIterator[bytes]:
        session_id, tenant = live.session_id, live.tenant
        position = after
        while True:
            memory = live.in_memory_after(position)
            if memory is None:
                stored = await self.store.events_after(session_id, position, tenant=tenant, limit=STORE_PAGE)
                if not stored:  # trimmed from memory, so stored: unless the session went meanwhile
                    if live.closed:
                        return
                    await live.flush()
                    continue
                chunk = stored
            else:
                chunk = memory
            if chunk:
                position = chunk[-1][0]
                yield b"".join(frame for _, _, frame in chunk)
                if until_idle and any(_ends_activity(frame) for _, _, frame in chunk):
                    return
                continue
            if live.closed:
                return
            if self.poll is None or live.active:
                if not await live.wait(keepalive):
                    yield b""
                continue
            # another process may write this session's events (several workers or replicas): read the store
            silent = 0.0
            while not await live.wait(self.poll):
                stored = await self.store.events_after(session_id, position, tenant=tenant, limit=STORE_PAGE)
                if stored:
                    position = stored[-1][0]
                    yield b"".join(frame for _, _, frame in stored)
                    if until_idle and any(_ends_activity(frame) for _, _, frame in stored):
                        return
                    silent = 0.0
                    continue
                silent += self.poll
                if silent >= keepalive:
                    silent = 0.0
                    yield b""
                if live.closed:
                    return

    def forget(self, session_id: str) -> None:
        self.recent.pop(session_id, None)
        live = self.logs.pop(session_id, None)
        if live is not None:
            live.close()


_ENDING = (b"event: agent.session.idle\n", b"event: agent.session.failed\n")


def _ends_activity(frame: bytes) -> bool:
    start = frame.find(b"\nevent: ") + 1
    return frame.startswith(_ENDING, start)


async def replayed(store: AgentStore, session_id: str, key: str, body: dict[str, Any], tenant: str) -> bool:
    """Input events posted with an ``Idempotency-Key``: True when ``key`` was used on this session already with
    this body (nothing is done again); a 409 when it was used with another."""
    if not 1 <= len(key) <= 255:
        raise invalid_request("'Idempotency-Key' must be 1 to 255 characters.", param="Idempotency-Key",
                              code="invalid_value")
    record_id = f"{session_id}:{hashlib.sha256(key.encode()).hexdigest()}"
    digest = hashlib.sha256(orjson.dumps(body, option=orjson.OPT_SORT_KEYS)).hexdigest()
    seen = await store.get("key", record_id, tenant=tenant)
    if seen is not None:
        if seen.get("digest") != digest:
            raise APIError(409, "This Idempotency-Key was already used with another request body.",
                           type="invalid_request_error", param="Idempotency-Key", code="idempotency_key_reused")
        return True
    await store.put("key", record_id, {"digest": digest}, tenant=tenant, parent=session_id)
    return False
