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
``queued``/``in_progress`` rows; the next start marks them ``failed`` (:func:`fail_interrupted`).

A terminal save that fails (the store is full, locked, broken) must not leave the row ``in_progress``: the run
ends for its readers at once (in memory, with the response run's ``response.failed``), and then keeps retrying, with
backoff, to store that terminal state and its events; the events made durable for a terminal state that was never
stored (a ``response.completed`` whose save failed) are taken back first, so a replay never shows it.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable
from typing import Any

import orjson
import structlog

from ..engine.sse import encode_event
from ..engine.wire import UpstreamRequest
from ..observability import metrics
from ..protocol.errors import APIError, not_found
from ..run.response_run import ResponseRun
from ..run.upstream import UpstreamClient, UpstreamFailure
from ..store.base import EventLog, ResponseStore

log = structlog.get_logger("responses_bridge.background")

_DONE_FRAME = b"data: [DONE]\n\n"
SHUTDOWN_GRACE_SECONDS = 5.0
SETTLE_FIRST_DELAY = 0.05
SETTLE_MAX_DELAY = 5.0
_TERMINAL = ("completed", "incomplete", "failed", "cancelled")

INTERRUPTED_CODE = "server_restarted"
INTERRUPTED_MESSAGE = ("The server restarted before this background response completed; it was not finished and "
                       "will not be resumed.")


def split_frames(data: bytes) -> list[bytes]:
    """SSE bytes from the response run into single event frames (``[DONE]`` dropped). Our frames are
    ``event: …\\ndata: <one-line JSON>\\n\\n``, so a blank line only ever ends a frame."""
    if not data:
        return []
    return [part + b"\n\n" for part in data.split(b"\n\n") if part and part != b"data: [DONE]"]


def terminal_frame(event_type: str, response: dict) -> Callable[[int], bytes]:
    """The frame that ends a stored stream with ``response``, for the sequence number the event log assigns."""
    return lambda sequence_number: encode_event(
        {"type": event_type, "sequence_number": sequence_number, "response": response})


async def fail_interrupted(events: EventLog) -> list[str]:
    """Mark every response still ``queued``/``in_progress`` as failed, and end its event stream with
    ``response.failed``: called at startup, when no run of this process can be going on (across tenants, each
    response stored back as its own tenant's). Returns their ids."""
    failed: list[str] = []
    for tenant, response in await events.unfinished():
        response["status"] = "failed"
        response["completed_at"] = None
        response["error"] = {"code": INTERRUPTED_CODE, "message": INTERRUPTED_MESSAGE}
        for item in response.get("output") or ():
            if isinstance(item, dict) and item.get("status") == "in_progress":
                item["status"] = "incomplete"
        await events.end_response(response, terminal_frame("response.failed", response), tenant=tenant)
        failed.append(response["id"])
    return failed


class BackgroundRun:
    def __init__(self, service: BackgroundService, response_run: ResponseRun, call: UpstreamRequest,
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
                try:
                    call: UpstreamRequest | None = self.call
                    # a second attempt for truncation "auto" (retry_request); the tool loop's turns (next_turn)
                    while call is not None:
                        async with self.upstream.chat(call, self.authorization) as answer:
                            head = response_run.on_upstream_headers(answer.status, answer.content_type)
                            if head is not None:
                                self.add(head)
                                await self.service.store.save_response(
                                    response_run.response, response_run.request.input_items,  # type: ignore[arg-type,union-attr]
                                    tenant=self.tenant)
                            async for chunk in answer.chunks():
                                out = response_run.on_upstream_chunk(chunk)
                                if out:
                                    self.add(out)
                        call = response_run.retry_request() or await response_run.next_turn(self._add_now)
                        pending = response_run.take_pending_bytes()
                        if pending:
                            self.add(pending)
                    self.finishing = True
                    reply = await response_run.finish()
                except UpstreamFailure as failure:
                    self.finishing = True
                    reply = await response_run.fail(failure.error)
            except asyncio.CancelledError:
                self.finishing = True
                if self.stop_reason == "deleted":  # DELETE /v1/responses/{id}: nothing more to store
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
            self.service.runs.pop(self.response_id, None)

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
            self.frames.append(b"event: " + str(event["type"]).encode() + b"\ndata: " + orjson.dumps(event)
                               + b"\n\n")
        self.visible = len(self.frames)
        self._tentative = start

    async def _settle(self) -> None:
        """Retry, with backoff, until the run's terminal state and its events are stored. Stopped only by
        shutdown (the next start then marks the row failed, see :func:`fail_interrupted`)."""
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


async def _until_started(run: BackgroundRun) -> None:
    """A task cancelled before its first step never runs its ``except``/``finally``: let it start first."""
    # one loop turn at a time until the task's first step ran (no event exists for "a task has started")
    while not run.started and run.task is not None and not run.task.done():  # noqa: ASYNC110
        await asyncio.sleep(0)


class BackgroundService:
    def __init__(self, store: ResponseStore, events: EventLog, upstream: UpstreamClient) -> None:
        self.store = store
        self.events = events
        self.upstream = upstream
        self.runs: dict[str, BackgroundRun] = {}
        metrics.watch_background(self)

    def queue_depth(self) -> int:
        """Background responses queued or running here (``responses_bridge_background_queue_depth``)."""
        return sum(1 for run in self.runs.values() if not run.done)

    async def start(self, response_run: ResponseRun, call: UpstreamRequest, authorization: str | None,
                    upstream: UpstreamClient | None = None) -> BackgroundRun:
        """``response_run`` has begun (a background request). Stores it as ``queued`` and starts its run, calling
        ``upstream`` (the request's routed upstream; default: the service's)."""
        run = BackgroundRun(self, response_run, call, authorization, upstream)
        response_run.before_persist = run._before_persist
        run.add(response_run.queued())
        run.accepted = orjson.dumps(response_run.response)
        await self.store.save_response(response_run.response, response_run.request.input_items,  # type: ignore[arg-type,union-attr]
                                       tenant=run.tenant)
        self.runs[run.response_id] = run
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
        if status in ("queued", "in_progress"):  # no run for it in this process (should not happen): close it
            response["status"] = "cancelled"
            # with a terminal event: replays end
            await self.events.end_response(response, terminal_frame("response.cancelled", response), tenant=tenant)
            return response
        raise APIError(400, f"Cannot cancel a {status} response.", param="response_id", code="invalid_request")

    async def forget(self, response_id: str, *, tenant: str) -> None:
        """``tenant``'s response is being deleted: stop its run first, without storing anything more for it."""
        run = self._run(response_id, tenant)
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
        runs = [run for run in self.runs.values() if run.task is not None and not run.task.done()]
        for run in runs:
            await _until_started(run)
        for run in runs:
            if not run.finishing or run.done:  # a run still retrying its terminal save is failed by the next start
                run.stop_reason = "shutdown"
                run.task.cancel()  # type: ignore[union-attr]
        if runs:
            await asyncio.wait([run.task for run in runs if run.task is not None], timeout=SHUTDOWN_GRACE_SECONDS)
