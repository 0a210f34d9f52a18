"""One background run: its task driving the run through the turn loop into the event log that readers follow, its
cancel and shutdown, and storing its end even when the store is away for a while.
"""

from __future__ import annotations

import asyncio
from typing import Any, Protocol

import orjson
import structlog

from ...engine.sse import encode_event
from ...engine.wire import UpstreamRequest
from ...protocol.errors import APIError
from ...run.drive import drive
from ...run.runs import Run
from ...run.upstream import UpstreamClient
from ...sealing import Sealer
from ...store.base import EventLog, ResponseStore, RunLeases
from ...store.records import LeaseLost
from ...store.transient import retry_store
from ..write_behind import WriteBehind
from .background_frames import _TERMINAL, split_frames
from .background_steps import HandOff, StepLog

log = structlog.get_logger("responses_bridge.background")

SETTLE_FIRST_DELAY = 0.05


SETTLE_MAX_DELAY = 5.0

CHECKPOINT_FIRST_DELAY = 0.05
CHECKPOINT_MAX_DELAY = 1.0


class RunHost(Protocol):
    """What a run asks of the service that holds it (background.py)."""

    store: ResponseStore
    events: EventLog
    upstream: UpstreamClient
    lease_owner: str | None  # the fence of every save of a run (RunLeases.owner); None: one process, no lease
    leases: RunLeases  # its ``lease_seconds`` bounds how long an effect waits for its checkpoint
    store_retry: float  # seconds a run's saves wait out a database outage (store/transient.py)

    async def run_ended(self, run: BackgroundRun) -> None: ...


class BackgroundRun:
    def __init__(self, service: RunHost, response_run: Run, call: UpstreamRequest | None,
                 authorization: str | None, upstream: UpstreamClient | None = None) -> None:
        self.service = service
        self.upstream = upstream or service.upstream  # the routed upstream's client (config/upstreams.py)
        self.response_run = response_run
        self.call = call
        self.authorization = authorization
        self.response_id: str = response_run.response_id  # type: ignore[assignment]
        self.tenant = response_run.tenant  # the owner, for its whole life: events, saves, cancel, replay
        # every save names this process's lease: one that stalled past it never overwrites another's end
        self.fence: dict[str, str] = {} if service.lease_owner is None else {"lease_owner": service.lease_owner}
        response_run.save_fence = self.fence
        self.frames: list[bytes] = []  # index == sequence_number
        self.visible = 0  # frames[:visible] are stored and were returned: readers may see them
        self.saved = 0  # frames[:saved] are durable
        self.done = False
        self.finishing = False  # finish() has begun: a cancel now comes too late
        self.stop_reason: str | None = None  # "cancel" or "shutdown" when the task is cancelled on purpose
        self.accepted = b""  # the queued response, as the POST answers it
        self.task: asyncio.Task[None] | None = None
        self.started = False  # run() has begun: cancelling the task now goes through its handlers
        self.resumable = False  # its request is kept: at shutdown it is handed off, not failed
        self.client_credentials = False  # its upstream call carries the client's own Authorization
        self.kept_credentials = False  # ... kept sealed in its log (background_resume.py): erased at its end
        self.handed_off = False  # stopped for another process to resume: what it kept stays
        self.suspect = False  # resumed after its process stopped twice: one such run per process (background.py)
        self.rows: list[tuple[int, bytes]] = []  # its step records, written with the next batch (background_steps.py)
        self.draining = False  # the process drains: the run is handed off at its next step boundary
        self.released = 0  # frames[:released] the response run has returned (readers may see them once stored)
        self._changed = asyncio.Event()
        self._flush_lock = asyncio.Lock()
        self._writes = WriteBehind(self._flush_quietly)  # the log's writes, in batches, before its readers see them
        self._tentative: int | None = None  # sequence number of the first frame made durable by before_persist
        self.lost = False  # a write was fenced off (LeaseLost): the run is another process's now, nothing more shown

    # --- frames ----------------------------------------------------------------------------------------------

    def _record(self, data: bytes) -> None:
        """Keep frames the response run produced; ``response_run.sequence_number`` is one past the last of them."""
        frames = split_frames(data)
        first = self.response_run.sequence_number - len(frames)
        for offset, frame in enumerate(frames):
            if first + offset == len(self.frames):
                self.frames.append(frame)

    def add(self, data: bytes) -> None:
        """Frames the response run returned: written to the store soon (write_behind.py), shown to readers once
        they are stored (:meth:`_show`). Batching delays what a reader sees, never what the store keeps: a reader
        that saw an event can always resume after it, on any process."""
        if data:
            self._record(data)
        self.released = len(self.frames)
        if self.saved < len(self.frames) or self.rows:
            self._writes.soon()
        else:
            self._show()

    def _show(self) -> None:
        """Readers may see every returned frame that is stored."""
        shown = min(self.saved, self.released)
        if shown > self.visible:
            self.visible = shown
            self._wake()

    async def writes_settled(self) -> None:
        """Every frame the run's writer has to write is written (or failed to be), its wait cut short."""
        await self._writes.settle()

    async def _add_now(self, data: bytes) -> None:
        """``add`` for the tool loop: the calls' announcements reach readers before the calls run."""
        self.add(data)

    def _wake(self) -> None:
        changed, self._changed = self._changed, asyncio.Event()
        changed.set()

    async def wait(self) -> None:
        await self._changed.wait()

    def record_steps(self, sealer: Sealer, recorded: int = 0) -> None:
        """Record the tool loop's steps (run/step_resume.py) so a resume continues after them; ``recorded``: the
        records kept already (a resumed run's). A run that compacts its context rewrites what it sends: not kept."""
        translator = getattr(self.response_run, "translator", None)  # a native backend's run has no tool loop here
        if translator is not None and translator.compact_threshold is None:
            self.response_run.steps = StepLog(self, sealer, recorded)  # type: ignore[attr-defined]

    async def flush_now(self) -> None:
        """Every frame and record so far, durable on return: the checkpoint before an effectful call, which runs
        only once this returns. A store that cannot be reached pauses the call here (retried, with backoff) rather
        than failing the run; a write refused for a lost lease (:class:`LeaseLost`) is final, and so is a pause
        longer than the lease: by then the lease has run out by the database's clock too, and the run is whoever
        takes it next's (this process's own sweep included)."""
        loop = asyncio.get_running_loop()
        started = loop.time()
        delay = CHECKPOINT_FIRST_DELAY
        while True:
            try:
                await self._flush()
                return
            except LeaseLost:
                raise
            except Exception:
                if not self.fence or loop.time() - started > self.service.leases.lease_seconds:
                    raise
                log.warning("background_checkpoint_write_retry", response_id=self.response_id, delay=delay,
                            exc_info=True)
            await asyncio.sleep(delay)
            delay = min(delay * 2, CHECKPOINT_MAX_DELAY)

    async def _flush(self) -> None:
        async with self._flush_lock:
            while self.saved < len(self.frames) or self.rows:
                end = len(self.frames)
                rows, self.rows = self.rows, []
                batch = [(sequence, self.frames[sequence]) for sequence in range(self.saved, end)]
                try:
                    await self.service.events.append(self.response_id, batch + rows, tenant=self.tenant,
                                                     **self.fence)
                except LeaseLost:
                    self.lost = True  # nothing of this batch is shown: the store does not hold it
                    raise
                except BaseException:
                    self.rows[:0] = rows
                    raise
                self.saved = end
                self._show()

    async def _flush_quietly(self) -> None:
        try:
            await self._flush()
        except LeaseLost:
            self.fenced_off()
        except Exception:  # the next batch retries them; before_persist reports a lasting failure
            log.exception("background_events_write_failed", response_id=self.response_id)

    def fenced_off(self) -> None:
        """A write of this run was refused for a lost lease: another process took the run (or may, its lease having
        run out). The run stops at once, storing and showing nothing more (its readers here go on from the store)."""
        self.lost = True
        log.warning("background_lease_lost", response_id=self.response_id, fenced=True)
        if self.task is not None and not self.task.done() and self.stop_reason is None and not self.finishing:
            self.stop_reason = "lost"
            self.task.cancel()

    async def _before_persist(self, pending: list[bytes], end: int) -> None:
        """The response run is about to store the response: its unreported frames (the terminal event among them)
        and everything before them become durable first."""
        first = end - len(pending)
        if self._tentative is None:
            self._tentative = first
        for offset, frame in enumerate(pending):
            if first + offset == len(self.frames):
                self.frames.append(frame)
        await self._flush()

    # --- the run ---------------------------------------------------------------------------------------------

    async def run(self) -> None:
        self.started = True
        response_run = self.response_run
        try:
            try:
                reply = await drive(response_run, self.call, self.upstream, self.authorization,
                                    _EventLogSink(self))
            except asyncio.CancelledError:
                self.finishing = True
                # DELETE /v1/responses/{id}, or another replica failed the run (its lease expired): store nothing
                if self.stop_reason in ("deleted", "lost"):
                    self.lost = self.stop_reason == "lost"  # its readers here go on from the store
                    response_run.release()
                    return
                if self.stop_reason == "handoff":  # shutdown: what readers saw is made durable, the rest is
                    response_run.release()  # the resuming process's (background_resume.py)
                    await self._hand_off()
                    return
                if self.stop_reason == "cancel":
                    reply = await response_run.cancel()
                else:
                    reply = await response_run.fail(APIError(
                        503, "The server shut down before this background response completed.",
                        type="server_error", code="server_shutdown"))
            except LeaseLost:  # a write refused (its checkpoint, its in_progress row): the run is another's now
                self.finishing = True
                self.lost = True
                log.warning("background_lease_lost", response_id=self.response_id, fenced=True)
                response_run.release()
                return
            except HandOff:  # a draining process, at a step boundary: what it recorded is the resume's
                self.finishing = True
                response_run.release()
                await self._hand_off()
                return
            except Exception as exc:
                log.exception("background_run_failed", response_id=self.response_id)
                self.finishing = True
                reply = await response_run.fail(exc if isinstance(exc, APIError) else APIError(
                    500, "The background response failed inside the bridge.", code="server_error"))
            if self.lost:  # its end was fenced off too: nothing of it is stored, so nothing is shown
                return
            stored = await self._stored_status()
            if stored is None or stored in _TERMINAL:
                self.add(reply.body)
                await self.writes_settled()
                return
            # the terminal save failed: end the run for its readers now, then store the truth when the store can
            self._take_back_unstored(reply.body)
            self.done = True
            self._wake()
            await self._settle()
        finally:
            self.done = True
            self._wake()
            _unlink(response_run)
            await self.service.run_ended(self)

    async def _hand_off(self) -> None:
        """Every frame the run made, and its step records, are stored before the lease goes: the resumed run
        continues after them (what readers saw was stored before they saw it)."""
        self.handed_off = True
        try:
            await self._flush()
        except Exception:  # what is stored is what the resume continues from
            log.warning("background_handoff_flush_failed", response_id=self.response_id, exc_info=True)
        log.info("background_handed_off", response_id=self.response_id, next_sequence=self.saved)

    async def _opened(self, head: bytes) -> None:
        """The stream opened: its first events, and the response stored as ``in_progress``."""
        self.add(head)
        await retry_store(lambda: self.service.store.save_response(
            self.response_run.response, self.response_run.request.input_items,  # type: ignore[arg-type,union-attr]
            tenant=self.tenant, **self.fence), within=self.service.store_retry, what="save_response")

    async def _stored_status(self) -> str | None:
        """The status the store holds now (None: deleted), or ``"unknown"`` when the store cannot be read."""
        try:
            stored = await self.service.store.get_response(self.response_id, tenant=self.tenant)
        except Exception:
            log.exception("background_status_read_failed", response_id=self.response_id)
            return "unknown"
        return None if stored is None else str(stored.get("status"))

    def _take_back_unstored(self, body: bytes) -> None:
        """Replace the frames written for a terminal state that was never stored by the response run's final frames,
        renumbered to follow on from what was really stored (``sequence_number`` stays the frame's index)."""
        start = self._tentative if self._tentative is not None else len(self.frames)
        del self.frames[start:]
        self.saved = min(self.saved, start)
        for offset, frame in enumerate(split_frames(body)):
            event: dict[str, Any] = orjson.loads(frame[frame.index(b"\ndata: ") + 7:])
            event["sequence_number"] = start + offset
            self.frames.append(encode_event(event))
        self.visible = self.released = len(self.frames)
        self._tentative = start

    async def _settle(self) -> None:
        """Retry, with backoff, until the run's terminal state and its events are stored. Stopped only by
        shutdown (the next start then marks the row failed: ``RunLeases.fail_abandoned``)."""
        delay = SETTLE_FIRST_DELAY
        start = self._tentative if self._tentative is not None else self.saved
        while True:
            try:
                await self.service.events.truncate(self.response_id, start, tenant=self.tenant, **self.fence)
                async with self._flush_lock:
                    self.saved = min(self.saved, start)
                await self._flush()
                await self.service.store.save_response(
                    self.response_run.response, self.response_run.request.input_items,  # type: ignore[arg-type,union-attr]
                    tenant=self.tenant, **self.fence)
            except LeaseLost:  # another process ended the run meanwhile (its lease had run out): its end stands
                log.warning("background_lease_lost", response_id=self.response_id)
                return
            except Exception:
                log.warning("background_terminal_save_retry", response_id=self.response_id, delay=delay,
                            exc_info=True)
                await asyncio.sleep(delay)
                delay = min(delay * 2, SETTLE_MAX_DELAY)
                continue
            log.info("background_terminal_state_stored", response_id=self.response_id,
                     status=(self.response_run.response or {}).get("status"))
            return


class _EventLogSink:
    """A background run's :class:`~responses_bridge.run.drive.TurnSink`: its event log, which readers follow."""

    def __init__(self, run: BackgroundRun) -> None:
        self._run = run

    async def open(self, head: bytes) -> None:
        await self._run._opened(head)

    async def write(self, data: bytes) -> None:
        self._run.add(data)

    def ending(self) -> None:
        self._run.finishing = True  # a cancel from here on comes too late

    async def keepalive(self) -> None:
        pass  # readers of the log keep their own connections alive


async def until_started(run: BackgroundRun) -> None:
    """A task cancelled before its first step never runs its ``except``/``finally``: let it start first."""
    # one loop turn at a time until the task's first step ran (no event exists for "a task has started")
    while not run.started and run.task is not None and not run.task.done():  # noqa: ASYNC110
        await asyncio.sleep(0)


def _unlink(response_run: Run) -> None:
    """The run's ways back to its :class:`BackgroundRun` (its hook before the final save, its step log), cut at
    its end: they made the two a cycle, and the response (its translator, its output) stayed in memory after the
    run until a full collection of the cyclic collector, which an idle server never runs."""
    response_run.before_persist = None
    if getattr(response_run, "steps", None) is not None:  # a native backend's run keeps no steps
        response_run.steps = None  # type: ignore[attr-defined]
