"""Background responses (``background: true``): accepted at once, run to completion inside the sidecar.

A run is one :class:`~responses_bridge.run.response_run.ResponseRun` driven by a task of its own, with the sidecar's
:class:`~responses_bridge.run.upstream.UpstreamClient` (through Envoy when ``upstream_via`` points there). Both doors
start runs here: the HTTP door answers the POST itself, the ext_proc door with an immediate response.

Events. The response run emits SSE frames, numbered by ``sequence_number`` from 0 with no gaps, so a frame's index in
``BackgroundRun.frames`` is its sequence number. Frames are kept in memory while the run lasts (live readers
follow them) and written to ``response_events`` in batches by a writer task, off the hot path: the upstream
chunk loop never waits for the database. Before the response's terminal state is stored, every event up to and
including the terminal one is made durable (the response run's ``before_persist`` hook), and live readers are only
shown a frame once the response run has returned it, so a reader that saw ``response.completed`` can always replay
the whole stream, and ``GET /v1/responses/{id}`` never says ``completed`` before the stream is stored.

Lifecycle in the store: ``queued`` (written before the POST is answered), ``in_progress`` (when the upstream
answers), then ``completed`` / ``incomplete`` / ``failed`` / ``cancelled``. A process that dies mid-run leaves
``queued``/``in_progress`` rows; the next start marks them ``failed`` (``RunLeases.fail_abandoned``).

Several replicas on one database (PostgreSQL). Who runs what goes through the store's
:class:`~responses_bridge.store.background_runs.RunLeases`: a run is claimed (owner + lease) before its row is
stored, a heartbeat renews the leases of this replica's runs, and a sweep (at start, then every lease period) fails
only runs whose lease expired, each by one replica. A follower on another replica reads the stored event log as it
grows (woken by the store's notifications, with polling as the fallback) until the terminal event; a cancel asked
of another replica is recorded in the store, the owner stops its run, and the asker answers with the stored
cancelled response. A run whose replica died is failed, not run again: its client saw events a second run would
not reproduce (the model does not answer twice the same), tools it called may have had effects, and the client's
upstream credentials, needed for the call, are never stored.

A terminal save that fails (the store is full, locked, broken) must not leave the row ``in_progress``: the run
ends for its readers at once (in memory, with the response run's ``response.failed``), and then keeps retrying, with
backoff, to store that terminal state and its events; the events made durable for a terminal state that was never
stored (a ``response.completed`` whose save failed) are taken back first, so a replay never shows it.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Callable
from typing import Any

import orjson
import structlog

from ..engine.sse import DONE_FRAME, encode_event
from ..engine.wire import UpstreamRequest
from ..observability import metrics
from ..protocol.errors import APIError, not_found
from ..run.drive import drive
from ..run.runs import Run
from ..run.upstream import UpstreamClient
from ..store.background_runs import Closer, LocalRunLeases, RunLeases
from ..store.base import EventLog, ResponseStore

log = structlog.get_logger("responses_bridge.background")

SHUTDOWN_GRACE_SECONDS = 5.0
SETTLE_FIRST_DELAY = 0.05
SETTLE_MAX_DELAY = 5.0
_TERMINAL = ("completed", "incomplete", "failed", "cancelled")

INTERRUPTED_CODE = "server_restarted"
INTERRUPTED_MESSAGE = ("The server restarted before this background response completed; it was not finished and "
                       "will not be resumed.")
ABANDONED_MESSAGE = ("The replica running this background response stopped before it completed; it was not finished "
                     "and will not be resumed.")
FOLLOW_POLL_SECONDS = 1.0  # a follower on another replica reads the log this often when no notification came
_TERMINAL_FRAMES = tuple(f"event: response.{status}\n".encode() for status in _TERMINAL)


def split_frames(data: bytes) -> list[bytes]:
    """SSE bytes from the response run into single event frames (``[DONE]`` dropped). Our frames are
    ``event: …\\ndata: <one-line JSON>\\n\\n``, so a blank line only ever ends a frame."""
    if not data:
        return []
    return [frame for frame in (part + b"\n\n" for part in data.split(b"\n\n") if part) if frame != DONE_FRAME]


def terminal_frame(event_type: str, response: dict) -> Callable[[int], bytes]:
    """The frame that ends a stored stream with ``response``, for the sequence number the event log assigns."""
    return lambda sequence_number: encode_event(
        {"type": event_type, "sequence_number": sequence_number, "response": response})


def _ended(response: dict[str, Any], status: str) -> dict[str, Any]:
    response["status"] = status
    response["completed_at"] = None
    for item in response.get("output") or ():
        if isinstance(item, dict) and item.get("status") == "in_progress":
            item["status"] = "incomplete"
    return response


def interrupted(message: str = INTERRUPTED_MESSAGE) -> Closer:
    """Ends a run that no process is running any more: ``failed``, with ``server_restarted``."""

    def close(response: dict[str, Any]) -> tuple[dict[str, Any], Callable[[int], bytes]]:
        _ended(response, "failed")["error"] = {"code": INTERRUPTED_CODE, "message": message}
        return response, terminal_frame("response.failed", response)

    return close


def cancelled(response: dict[str, Any]) -> tuple[dict[str, Any], Callable[[int], bytes]]:
    """Ends a run that no process is running any more, at its owner's request: ``cancelled``."""
    _ended(response, "cancelled")
    return response, terminal_frame("response.cancelled", response)


def is_terminal_frame(frame: bytes) -> bool:
    return frame.startswith(_TERMINAL_FRAMES)


class BackgroundRun:
    def __init__(self, service: BackgroundService, response_run: Run, call: UpstreamRequest | None,
                 authorization: str | None, upstream: UpstreamClient | None = None) -> None:
        self.service = service
        self.upstream = upstream or service.upstream  # the routed upstream's client (upstreams.py)
        self.response_run = response_run
        self.call = call
        self.authorization = authorization
        self.response_id: str = response_run.response_id  # type: ignore[assignment]
        self.tenant = response_run.tenant  # the owner, for its whole life: events, saves, cancel, replay
        self.frames: list[bytes] = []  # index == sequence_number
        self.visible = 0  # frames[:visible] have been reported (readers may see them)
        self.saved = 0  # frames[:saved] are durable
        self.done = False
        self.finishing = False  # finish() has begun: a cancel now comes too late
        self.stop_reason: str | None = None  # "cancel" or "shutdown" when the task is cancelled on purpose
        self.accepted = b""  # the queued response, as the POST answers it
        self.task: asyncio.Task[None] | None = None
        self.started = False  # run() has begun: cancelling the task now goes through its handlers
        self._changed = asyncio.Event()
        self._flush_lock = asyncio.Lock()
        self._writer: asyncio.Task[None] | None = None
        self._tentative: int | None = None  # sequence number of the first frame made durable by before_persist

    # --- frames ----------------------------------------------------------------------------------------------

    def _record(self, data: bytes) -> None:
        """Keep frames the response run produced; ``response_run.sequence_number`` is one past the last of them."""
        frames = split_frames(data)
        first = self.response_run.sequence_number - len(frames)
        for offset, frame in enumerate(frames):
            if first + offset == len(self.frames):
                self.frames.append(frame)

    def add(self, data: bytes) -> None:
        """Frames the response run returned: reported to readers now, written to the store soon."""
        if data:
            self._record(data)
        if self.visible != len(self.frames):
            self.visible = len(self.frames)
            self._wake()
        if self.saved < len(self.frames) and (self._writer is None or self._writer.done()):
            self._writer = asyncio.ensure_future(self._flush_quietly())

    async def _add_now(self, data: bytes) -> None:
        """``add`` for the tool loop: the calls' announcements reach readers before the calls run."""
        self.add(data)

    def _wake(self) -> None:
        changed, self._changed = self._changed, asyncio.Event()
        changed.set()

    async def wait(self) -> None:
        await self._changed.wait()

    async def _flush(self) -> None:
        async with self._flush_lock:
            while self.saved < len(self.frames):
                end = len(self.frames)
                batch = [(sequence, self.frames[sequence]) for sequence in range(self.saved, end)]
                await self.service.events.append(self.response_id, batch, tenant=self.tenant)
                self.saved = end

    async def _flush_quietly(self) -> None:
        try:
            await self._flush()
        except Exception:  # the next batch retries them; before_persist reports a lasting failure
            log.exception("background_events_write_failed", response_id=self.response_id)

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
                    response_run.release()
                    return
                if self.stop_reason == "cancel":
                    reply = await response_run.cancel()
                else:
                    reply = await response_run.fail(APIError(
                        503, "The server shut down before this background response completed.",
                        type="server_error", code="server_shutdown"))
            except Exception as exc:
                log.exception("background_run_failed", response_id=self.response_id)
                self.finishing = True
                reply = await response_run.fail(exc if isinstance(exc, APIError) else APIError(
                    500, "The background response failed inside the bridge.", code="server_error"))
            stored = await self._stored_status()
            if stored is None or stored in _TERMINAL:
                self.add(reply.body)
                if self._writer is not None:
                    await asyncio.shield(self._writer)
                return
            # the terminal save failed: end the run for its readers now, then store the truth when the store can
            self._take_back_unstored(reply.body)
            self.done = True
            self._wake()
            await self._settle()
        finally:
            self.done = True
            self._wake()
            await self.service._run_ended(self)

    async def _opened(self, head: bytes) -> None:
        """The stream opened: its first events, and the response stored as ``in_progress``."""
        self.add(head)
        await self.service.store.save_response(
            self.response_run.response, self.response_run.request.input_items,  # type: ignore[arg-type,union-attr]
            tenant=self.tenant)

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
        self.visible = len(self.frames)
        self._tentative = start

    async def _settle(self) -> None:
        """Retry, with backoff, until the run's terminal state and its events are stored. Stopped only by
        shutdown (the next start then marks the row failed: ``RunLeases.fail_abandoned``)."""
        delay = SETTLE_FIRST_DELAY
        start = self._tentative if self._tentative is not None else self.saved
        while True:
            try:
                await self.service.events.truncate(self.response_id, start, tenant=self.tenant)
                async with self._flush_lock:
                    self.saved = min(self.saved, start)
                await self._flush()
                await self.service.store.save_response(
                    self.response_run.response, self.response_run.request.input_items,  # type: ignore[arg-type,union-attr]
                    tenant=self.tenant)
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


async def _until_started(run: BackgroundRun) -> None:
    """A task cancelled before its first step never runs its ``except``/``finally``: let it start first."""
    # one loop turn at a time until the task's first step ran (no event exists for "a task has started")
    while not run.started and run.task is not None and not run.task.done():  # noqa: ASYNC110
        await asyncio.sleep(0)


class BackgroundService:
    def __init__(self, store: ResponseStore, events: EventLog, upstream: UpstreamClient,
                 leases: RunLeases | None = None) -> None:
        self.store = store
        self.events = events
        self.upstream = upstream
        self.leases: RunLeases = leases or LocalRunLeases(events)
        self.runs: dict[str, BackgroundRun] = {}
        self._heartbeat: asyncio.Task[None] | None = None
        self._stopping: set[asyncio.Task[None]] = set()
        metrics.watch_background(self)

    async def open(self) -> list[str]:
        """Fail the runs no process holds any more (alone on the database: every unfinished one; shared: those
        whose lease expired), then listen for cancel requests and keep this replica's leases alive. Returns the
        ids of the failed runs."""
        failed = await self.leases.fail_abandoned(self._closer())
        await self.leases.start(self._cancel_requested)
        if self.leases.shared:
            self._heartbeat = asyncio.create_task(self._beat(), name="background:heartbeat")
        return failed

    def _closer(self) -> Closer:
        return interrupted(ABANDONED_MESSAGE if self.leases.shared else INTERRUPTED_MESSAGE)

    async def _beat(self) -> None:
        """Renew this replica's leases several times per lease period; act on what the renewal reports; once per
        period, fail the runs of replicas that stopped renewing theirs."""
        period = self.leases.lease_seconds
        loop = asyncio.get_running_loop()
        last_sweep = loop.time()
        while True:
            await asyncio.sleep(period / 3)
            try:
                renewal = await self.leases.renew(list(self.runs))
                for response_id in renewal.lost:
                    log.warning("background_lease_lost", response_id=response_id)
                    self._stop_soon(response_id, "lost")
                for response_id in renewal.cancel_requested:
                    self._stop_soon(response_id, "cancel")
                if loop.time() - last_sweep >= period:
                    last_sweep = loop.time()
                    failed = await self.leases.fail_abandoned(self._closer())
                    if failed:
                        log.warning("background_abandoned", count=len(failed), response_ids=failed[:20])
            except Exception:  # the next beat retries; a lease outlives a few missed beats
                log.exception("background_heartbeat_failed")

    def _cancel_requested(self, response_id: str) -> None:
        """Another replica asked to cancel a run (the store's notification)."""
        self._stop_soon(response_id, "cancel")

    def _stop_soon(self, response_id: str, reason: str) -> None:
        if response_id not in self.runs:
            return
        task = asyncio.ensure_future(self._stop(response_id, reason))
        self._stopping.add(task)
        task.add_done_callback(self._stopping.discard)

    async def _stop(self, response_id: str, reason: str) -> None:
        run = self.runs.get(response_id)
        if run is None or run.task is None:
            return
        await _until_started(run)
        if reason == "cancel" and (run.finishing or run.done):
            return
        if reason == "lost" and run.finishing and not run.done:  # storing its end now: let it
            return
        run.stop_reason = reason
        run.task.cancel()

    async def _run_ended(self, run: BackgroundRun) -> None:
        self.runs.pop(run.response_id, None)
        try:
            await self.leases.release(run.response_id)
        except Exception:  # the lease expires; the run's terminal state is stored, so no sweep touches it
            log.warning("background_release_failed", response_id=run.response_id, exc_info=True)

    def queue_depth(self) -> int:
        """Background responses queued or running here (``responses_bridge_background_queue_depth``)."""
        return sum(1 for run in self.runs.values() if not run.done)

    async def start(self, response_run: Run, call: UpstreamRequest | None, authorization: str | None,
                    upstream: UpstreamClient | None = None) -> BackgroundRun:
        """``response_run`` has begun (a background request). Stores it as ``queued`` and starts its run, calling
        ``upstream`` (the request's routed upstream; default: the service's)."""
        run = BackgroundRun(self, response_run, call, authorization, upstream)
        response_run.before_persist = run._before_persist
        # kept, not written yet: an event log may store only the events of a stored response (PostgreSQL's
        # checks the owner's row), so the writer starts once the queued row exists
        run._record(response_run.queued())
        run.accepted = orjson.dumps(response_run.response)
        self.runs[run.response_id] = run  # before the row exists: a follower finds the run, never an orphan
        try:
            await self.leases.claim(run.response_id)  # before the row: no sweep sees it unowned
            await self.store.save_response(response_run.response, response_run.request.input_items,  # type: ignore[arg-type,union-attr]
                                           tenant=run.tenant)
        except BaseException:
            self.runs.pop(run.response_id, None)
            await self.leases.release(run.response_id)
            raise
        run.add(b"")  # created + queued: shown to readers, written by the writer
        run.task = asyncio.create_task(run.run(), name=f"background:{run.response_id}")
        log.info("background_started", response_id=run.response_id)
        return run

    def _run(self, response_id: str, tenant: str) -> BackgroundRun | None:
        """The run of ``tenant``'s response here, if any: another tenant's run is no run at all for the caller."""
        run = self.runs.get(response_id)
        return run if run is not None and run.tenant == tenant else None

    async def events_after(self, response_id: str, after: int, *, tenant: str) -> AsyncIterator[bytes]:
        """The response's event frames with ``sequence_number > after``, then live ones until it ends."""
        run = self._run(response_id, tenant)
        if run is None and self.leases.shared:  # maybe running on another replica: follow its stored log
            async for frames in self._follow_stored(response_id, after, tenant=tenant):
                yield frames
            return
        if run is None:
            for _, frame in await self.events.after(response_id, after, tenant=tenant):
                yield frame
            return
        position = max(after + 1, 0)
        while True:
            visible = run.visible
            if position < visible:
                chunk = b"".join(run.frames[position:visible])
                position = visible
                yield chunk
                continue
            if run.done:
                return
            await run.wait()

    async def _follow_stored(self, response_id: str, after: int, *, tenant: str) -> AsyncIterator[bytes]:
        """The stored events after ``after``, read again whenever the store says the log grew (or every
        ``FOLLOW_POLL_SECONDS``), until the terminal event, or until the response is finished (or gone) with
        nothing more stored. Each read starts after the last event yielded: no gap, no duplicate."""
        position = after
        async with self.leases.watch(response_id) as changed:
            while True:
                changed.clear()  # before the read: a write committed after it sets it again
                stored = await self.events.after(response_id, position, tenant=tenant)
                if stored:
                    position = stored[-1][0]
                    yield b"".join(frame for _, frame in stored)
                    if is_terminal_frame(stored[-1][1]):
                        return
                    continue
                status = await self._stored_status_of(response_id, tenant=tenant)
                if status is None or status in _TERMINAL:
                    for _, frame in await self.events.after(response_id, position, tenant=tenant):
                        yield frame  # what came with the end
                    return
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(changed.wait(), FOLLOW_POLL_SECONDS)

    async def _stored_status_of(self, response_id: str, *, tenant: str) -> str | None:
        stored = await self.store.get_response(response_id, tenant=tenant)
        return None if stored is None else str(stored.get("status"))

    async def check_streamable(self, response_id: str, *, tenant: str) -> dict:
        response = await self.store.get_response(response_id, tenant=tenant)
        if response is None:
            raise not_found(f"No response found with id '{response_id}'.", param="response_id", code="not_found")
        if not response.get("background"):
            raise APIError(400, "This response was not created with 'background: true', so its events were not "
                           "kept; retrieve it without 'stream'.", param="stream", code="invalid_request")
        return response

    async def cancel(self, response_id: str, *, tenant: str) -> dict:
        run = self._run(response_id, tenant)
        if run is not None:
            await _until_started(run)
        if run is not None and run.done:  # ended, its terminal state still being stored (see BackgroundRun._settle)
            final = run.response_run.response or {}
            if final.get("status") == "cancelled":
                return final
            raise APIError(400, f"Cannot cancel a {final.get('status')} response.", param="response_id",
                           code="invalid_request")
        if run is not None and not run.finishing and run.task is not None:
            run.stop_reason = "cancel"
            run.task.cancel()
        if run is not None and run.task is not None:
            await asyncio.wait([run.task])
            if run.response_run.response and run.response_run.response.get("status") == "cancelled":
                return run.response_run.response
        response = await self.store.get_response(response_id, tenant=tenant)
        if response is None:
            raise not_found(f"No response found with id '{response_id}'.", param="response_id", code="not_found")
        if not response.get("background"):
            raise APIError(400, "Only background responses can be cancelled.", param="response_id",
                           code="invalid_request")
        status = response.get("status")
        if status == "cancelled":
            return response
        if status in ("queued", "in_progress") and self.leases.shared:  # another replica's run
            return await self._cancel_elsewhere(response_id, tenant=tenant)
        if status in ("queued", "in_progress"):  # no run for it in this process (should not happen): close it
            response["status"] = "cancelled"
            # with a terminal event: replays end
            await self.events.end_response(response, terminal_frame("response.cancelled", response), tenant=tenant)
            return response
        raise APIError(400, f"Cannot cancel a {status} response.", param="response_id", code="invalid_request")

    async def _stop_elsewhere(self, response_id: str, *, tenant: str) -> None:
        """A response about to be deleted that may run on another replica: cancelled there, and ended, first. A
        replica that does not stop it in time is the 503 ``cancel_timeout`` (nothing deleted; retry)."""
        response = await self.store.get_response(response_id, tenant=tenant)
        if response is None or response.get("status") not in ("queued", "in_progress"):
            return
        try:
            await self._cancel_elsewhere(response_id, tenant=tenant)
        except APIError as error:
            if error.status >= 500:
                raise
            # 404 / 400: it ended (or went) meanwhile; nothing runs any more

    async def _cancel_elsewhere(self, response_id: str, *, tenant: str) -> dict:
        """Ask the replica running ``response_id`` to cancel it, then answer with the response as stored once it
        ended. If no live replica holds it (its lease expired), close it here, as cancelled. A replica that holds
        the lease acts within a notification or a heartbeat; one that died loses the lease within its period."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + 3 * max(self.leases.lease_seconds, FOLLOW_POLL_SECONDS)
        async with self.leases.watch(response_id) as changed:
            held = await self.leases.request_cancel(response_id, tenant=tenant)
            while True:
                changed.clear()
                if not held:
                    closed = await self.leases.close_abandoned(response_id, cancelled, tenant=tenant)
                    if closed is not None:
                        return closed
                response = await self.store.get_response(response_id, tenant=tenant)
                if response is None:
                    raise not_found(f"No response found with id '{response_id}'.", param="response_id",
                                    code="not_found")
                status = response.get("status")
                if status == "cancelled":
                    return response
                if status in _TERMINAL:
                    raise APIError(400, f"Cannot cancel a {status} response.", param="response_id",
                                   code="invalid_request")
                if loop.time() > deadline:
                    raise APIError(503, "The replica running this background response did not stop it in time; "
                                   "retry the cancel.", type="server_error", code="cancel_timeout")
                try:
                    await asyncio.wait_for(changed.wait(), FOLLOW_POLL_SECONDS)
                except TimeoutError:
                    held = False  # not ended yet: it may be an abandoned run (close_abandoned checks the lease)

    async def forget(self, response_id: str, *, tenant: str) -> None:
        """``tenant``'s response is being deleted: stop its run first, without storing anything more for it.
        Another replica's run is cancelled there first (and waited for): its last save would otherwise bring the
        deleted response back."""
        run = self._run(response_id, tenant)
        if (run is None or run.task is None) and self.leases.shared:
            await self._stop_elsewhere(response_id, tenant=tenant)
            return
        if run is None or run.task is None:
            return
        await _until_started(run)
        if not run.finishing or run.done:  # running, or ended and still retrying its terminal save
            run.stop_reason = "deleted"
            run.task.cancel()
        await asyncio.wait([run.task])
        if run._writer is not None:
            await asyncio.wait([run._writer])

    async def close(self) -> None:
        """Shutdown: runs still going are ended as failed (stored), so none is left ``in_progress``."""
        if self._heartbeat is not None:
            self._heartbeat.cancel()
            await asyncio.wait([self._heartbeat])
            self._heartbeat = None
        await self._close_runs()
        await self.leases.close()

    async def _close_runs(self) -> None:
        runs = [run for run in self.runs.values() if run.task is not None and not run.task.done()]
        for run in runs:
            await _until_started(run)
        for run in runs:
            if not run.finishing or run.done:  # a run still retrying its terminal save is failed by the next start
                run.stop_reason = "shutdown"
                run.task.cancel()  # type: ignore[union-attr]
        if runs:
            await asyncio.wait([run.task for run in runs if run.task is not None], timeout=SHUTDOWN_GRACE_SECONDS)
