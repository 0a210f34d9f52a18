"""Runs the batches: validates each input, serves its lines through the endpoint's own code (lines.py), writes the
output and error files, and survives the loss of its process.

Durability, the rule: a process runs a batch only while it holds the batch's lease in the store (renewed by its
heartbeat every third of ``lease_seconds``). Each line is marked ``started`` in the store before it goes upstream
and its result is recorded as soon as it is answered, both fenced by the lease. A process that finds a batch whose
lease lapsed (a replica lost; on a SQLite file alone, at its start, every unfinished batch: the process before it
died) claims it (exactly one claimant wins) and resumes at the lines not recorded: a line answered once is never
sent again; a line that was in flight at the loss (``started``, no result) is sent again, and counted (the batch's
``rerun`` counter, and the ``batch_resumed`` log line). A drain stops starting lines, lets those in flight finish
and record their results (a line boundary), then releases the leases, so that another process takes the batches
over at once.

Capacity: before each line the runner enters ``gate.line_slot(tenant, batch_id)`` (capacity.py) and holds it while
the line runs; how many lines run at once, and when, is the gate's alone.

Ends: every line recorded -> ``finalizing`` -> the files written -> ``completed``; a cancel -> ``cancelling``,
no new line, those in flight finish -> ``cancelled`` with the files of what finished; the window past
(``expires_at``) -> no new line, the lines never run go to the error file (``batch_expired``) -> ``expired``. An
input with any error -> ``failed`` with ``errors`` naming each line, nothing run.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Callable
from typing import Any

import orjson
import structlog

from ...observability.batch_metrics import batch_status, line_ended
from ...process.periodic import Periodic
from ...protocol.errors import APIError
from ...store.base_batches import UNFINISHED, BatchStore, PendingLine, StoredBatch
from ...store.owners import new_owner_id
from ...store.timings import CALLER_KEY_ID
from ..files.files import FileService
from ..responses.kept_authorization import KeptAuthorization
from .capacity import LineGate
from .files_out import write_results
from .intake import each_line
from .lines import LineServer
from .shapes import error_line, output_line
from .validation import InputCheck

log = structlog.get_logger("responses_bridge.batches")

PAGE = 256
"""Lines read from the store at once."""
KEEP_LINES = 500
"""Validated lines kept in one transaction."""


class _Stop(Exception):
    """The batch stops here for this process: drained, or its lease lost."""


class BatchRunner:
    """One per process (the HTTP door builds it: adapters/http/batches/capability.py)."""

    def __init__(self, store: BatchStore, files: FileService, lines: LineServer, gate: LineGate,
                 kept: KeptAuthorization, *, lease_seconds: float, shared: bool, max_line_bytes: int,
                 clock: Callable[[], float] = time.time) -> None:
        self.store = store
        self.files = files
        self.lines = lines
        self.gate = gate
        self.kept = kept
        self.lease_seconds = lease_seconds
        self.shared = shared  # other processes on the store: only lapsed leases are taken
        self.max_line_bytes = max_line_bytes
        self.owner = new_owner_id()
        self._clock = clock
        self._running: dict[str, asyncio.Task[None]] = {}
        self._cancelled: set[str] = set()
        self._draining = False
        self._left_claimed = False  # what was left unfinished at start has been claimed (start or a heartbeat)
        self._heartbeat = Periodic(max(lease_seconds / 3, 0.05), self._beat, name="batches-heartbeat",
                                   failure="batch_heartbeat_failed")

    # -- what the service and the door tell it ----------------------------------------------------------------

    @property
    def endpoints(self) -> tuple[str, ...]:
        return self.lines.endpoints

    def forwards_authorization(self, endpoint: str) -> bool:
        return self.lines.forwards_authorization(endpoint)

    def created(self, batch_id: str) -> None:
        """A batch created here is claimed and run at once (not at the next heartbeat)."""
        if not self._draining:
            self._spawn_claim(batch_id, force=False)

    def cancelled(self, batch_id: str) -> None:
        """A cancel recorded: a batch this process runs stops at its next line; one another process runs is seen
        there by its heartbeat."""
        if batch_id in self._running:
            self._cancelled.add(batch_id)

    @property
    def running(self) -> list[str]:
        return list(self._running)

    async def start(self) -> None:
        """Claim what is left to run (alone on a SQLite file: every unfinished batch), then keep the leases and look
        for lapsed ones on each heartbeat. A store not open yet (a door served before its store, as the readiness
        check allows) leaves the claim to the first heartbeat that finds it open."""
        try:
            await self._claim_left()
        except RuntimeError as not_open:
            log.info("batches_claim_deferred", reason=str(not_open))
        self._heartbeat.start()

    async def _claim_left(self) -> None:
        for batch_id in await self.store.claimable(self._far_future() if not self.shared else self._clock(),
                                                   limit=10_000):
            self._spawn_claim(batch_id, force=not self.shared)
        self._left_claimed = True

    def drain(self) -> None:
        """Start no more lines; each batch releases its lease once its lines in flight are recorded."""
        self._draining = True

    async def close(self, timeout: float = 10.0) -> None:
        """Drain, wait up to ``timeout`` for the lines in flight, then stop what is left (its lines in flight are
        the ones a later claim sends again)."""
        self.drain()
        await self._heartbeat.stop()
        tasks = list(self._running.values())
        if tasks:
            _, pending = await asyncio.wait(tasks, timeout=timeout)
            for task in pending:
                task.cancel()
            for task in pending:
                with contextlib.suppress(asyncio.CancelledError, Exception):
                    await task

    # -- the heartbeat ----------------------------------------------------------------------------------------

    async def _beat(self) -> None:
        if not self._left_claimed:
            await self._claim_left()
        held = list(self._running)
        lost = await self.store.renew(held, self.owner, self._clock(), self.lease_seconds)
        for batch_id in lost:
            log.warning("batch_lease_lost", batch_id=batch_id)
            task = self._running.get(batch_id)
            if task is not None:
                task.cancel()
        for batch_id in held:  # a cancel recorded by another process
            if batch_id not in lost and batch_id not in self._cancelled and \
                    await self.store.status_of(batch_id) == "cancelling":
                self._cancelled.add(batch_id)
        if not self._draining:
            for batch_id in await self.store.claimable(self._clock(), limit=100):
                if batch_id not in self._running:
                    self._spawn_claim(batch_id, force=False)

    def _far_future(self) -> float:
        return self._clock() + 10 * 365 * 24 * 3600

    def _spawn_claim(self, batch_id: str, *, force: bool) -> None:
        if batch_id in self._running:
            return
        task = asyncio.create_task(self._claim_and_run(batch_id, force), name=f"batch-{batch_id}")
        self._running[batch_id] = task
        task.add_done_callback(lambda done: self._ended(batch_id, done))

    def _ended(self, batch_id: str, task: asyncio.Task[None]) -> None:
        if self._running.get(batch_id) is task:
            del self._running[batch_id]
        self._cancelled.discard(batch_id)
        if not task.cancelled() and task.exception() is not None:
            log.error("batch_run_failed", batch_id=batch_id, error=repr(task.exception()))

    # -- one batch --------------------------------------------------------------------------------------------

    async def _claim_and_run(self, batch_id: str, force: bool) -> None:
        # the task was made inside whichever request created the batch: its log lines are the batch's, not that
        # request's
        structlog.contextvars.clear_contextvars()
        structlog.contextvars.bind_contextvars(batch_id=batch_id)
        CALLER_KEY_ID.set(None)  # nor is the key that request was made with its lines' key (store/timings.py)
        batch = await self.store.claim(batch_id, self.owner, self._clock(), self.lease_seconds, force=force)
        if batch is None:
            return
        try:
            await self._run(batch)
        except _Stop:
            pass
        finally:
            await asyncio.shield(self.store.release(batch_id, self.owner))

    async def _run(self, batch: StoredBatch) -> None:
        if batch.status == "validating":
            if not await self._validate(batch):
                return
            batch = _with_status(batch, await self.store.status_of(batch.id) or "in_progress")  # cancelled meanwhile
        elif batch.totals.rerun or batch.totals.completed or batch.totals.failed:
            log.info("batch_resumed", batch_id=batch.id, done=batch.totals.completed + batch.totals.failed,
                     total=batch.totals.total)
        if batch.status == "finalizing":  # lost while writing its files: every line is recorded
            await self._finish(batch, "completed")
            return
        end = await self._run_lines(batch)
        await self._finish(batch, end)

    async def _validate(self, batch: StoredBatch) -> bool:
        """Read the input twice: check every line, then keep them; False when the batch failed (nothing kept)."""
        if not await self.store.reset_lines(batch.id, owner=self.owner):
            raise _Stop
        endpoint = batch.body["endpoint"]
        check = InputCheck(endpoint, self.max_line_bytes)
        try:
            await each_line(self.files, batch, self.max_line_bytes, lambda raw: check.feed(raw) and None)
        except APIError as error:  # the input file is gone (deleted, expired)
            check.errors.append({"code": "file_not_found", "message": error.message, "param": "input_file_id",
                                 "line": None})
        errors = check.finish()
        if errors:
            await self._change(batch, "failed", {"errors": {"object": "list", "data": errors},
                                                 "failed_at": int(self._clock())})
            log.info("batch_failed_validation", batch_id=batch.id, errors=len(errors))
            return False
        kept: list[tuple[int, str, bytes]] = []
        model: list[Any] = []
        recheck = InputCheck(endpoint, self.max_line_bytes)

        async def keep(raw: bytes) -> None:
            line = recheck.feed(raw)
            if line is None:
                return
            if not model:
                model.append(orjson.loads(line.body).get("model"))
            kept.append((line.index, line.custom_id, line.body))
            if len(kept) >= KEEP_LINES:
                await self._keep(batch, kept)

        await each_line(self.files, batch, self.max_line_bytes, keep)
        if kept:
            await self._keep(batch, kept)
        if recheck.finish():  # the file changed between the reads: only a file replaced under its id
            await self.store.reset_lines(batch.id, owner=self.owner)
            await self._change(batch, "failed", {"errors": {"object": "list", "data": recheck.errors},
                                                 "failed_at": int(self._clock())})
            return False
        chosen = model[0] if model and isinstance(model[0], str) else None
        await self._change(batch, "in_progress", {"in_progress_at": int(self._clock()), "model": chosen})
        return True

    async def _keep(self, batch: StoredBatch, kept: list[tuple[int, str, bytes]]) -> None:
        if not await self.store.add_lines(batch.id, list(kept), owner=self.owner):
            raise _Stop
        kept.clear()

    async def _run_lines(self, batch: StoredBatch) -> str:
        """Every line not done, through the gate; the status the batch ends with."""
        authorization = self.kept.open(batch.body.get("_authorization"))
        in_flight: set[asyncio.Task[None]] = set()
        after = -1
        end = "completed"
        try:
            while True:
                page = await self.store.pending_lines(batch.id, after, PAGE)
                if not page:
                    break
                for line in page:
                    after = line.index
                    stop = self._stop_reason(batch)
                    if stop is not None:
                        end = stop
                        break
                    slot = self.gate.line_slot(batch.tenant, batch.id)
                    await slot.__aenter__()
                    try:
                        stop = self._stop_reason(batch)
                        if stop is not None:  # cancelled or expired while it waited: its place given back
                            end = stop
                            await slot.__aexit__(None, None, None)
                            break
                        if not await self.store.start_line(batch.id, line.index, owner=self.owner):
                            raise _Stop
                    except BaseException:
                        await slot.__aexit__(None, None, None)
                        raise
                    task = asyncio.create_task(self._line(batch, line, authorization, slot))
                    in_flight.add(task)
                    task.add_done_callback(in_flight.discard)
                else:
                    continue
                break
        finally:
            if in_flight:  # the lines in flight finish and are recorded, whatever the batch does next
                await asyncio.gather(*in_flight, return_exceptions=True)
        if end == "completed" and await self.store.pending_lines(batch.id, -1, 1):
            # a line whose result could not be recorded (the store failed under it): the batch is handed over, and
            # whoever claims it next (this process too) sends that line again, counted
            log.warning("batch_lines_unrecorded", batch_id=batch.id)
            raise _Stop
        if end == "expired":
            await self._expire_rest(batch)
        return end

    def _stop_reason(self, batch: StoredBatch) -> str | None:
        if batch.id in self._cancelled or batch.status == "cancelling":
            return "cancelled"
        if self._clock() >= batch.body["expires_at"]:
            return "expired"
        if self._draining:
            raise _Stop
        return None

    async def _line(self, batch: StoredBatch, line: PendingLine, authorization: str | None,
                    slot: contextlib.AbstractAsyncContextManager[None]) -> None:
        try:
            try:
                answer = await self.lines.serve(batch.body["endpoint"], line.body, tenant=batch.tenant,
                                                authorization=authorization)
                output, counts = output_line(line.custom_id, answer.status, answer.request_id, answer.body)
            except Exception as error:  # the line server's own failure: the line's error, the batch goes on
                log.exception("batch_line_failed", batch_id=batch.id, line=line.index)
                output, counts = error_line(line.custom_id, "server_error", f"The line could not be served: "
                                            f"{type(error).__name__}.")
            try:
                if await self.store.finish_line(batch.id, line.index, output, counts, owner=self.owner):
                    line_ended(counts.failed)
            except Exception:  # left started: the batch is handed over once its lines in flight end (_run_lines)
                log.exception("batch_line_not_recorded", batch_id=batch.id, line=line.index)
        finally:
            await slot.__aexit__(None, None, None)

    async def _expire_rest(self, batch: StoredBatch) -> None:
        after = -1
        while True:
            page = await self.store.pending_lines(batch.id, after, PAGE)
            if not page:
                return
            for line in page:
                after = line.index
                output, counts = error_line(line.custom_id, "batch_expired", "This line was not executed because "
                                            "the batch expired before it ran.")
                if not await self.store.finish_line(batch.id, line.index, output, counts, owner=self.owner):
                    raise _Stop
                line_ended(True)

    async def _finish(self, batch: StoredBatch, end: str) -> None:
        """Write the output and error files of what finished, then the final status."""
        now = int(self._clock())
        if end == "completed":
            await self._change(batch, "finalizing", {"finalizing_at": now})
        elif end == "cancelled":
            await self._change(batch, "cancelling", {"cancelling_at": batch.body.get("cancelling_at") or now})
        try:
            files = await write_results(self.store, self.files, batch, self.owner)
        except APIError as error:  # the tenant's stored bytes are full: the batch fails saying so
            log.warning("batch_files_refused", batch_id=batch.id, error=error.message)
            await self._change(batch, "failed", {"errors": {"object": "list", "data": [
                {"code": error.code or "output_not_stored", "message": error.message, "param": None, "line": None}]},
                "failed_at": int(self._clock())})
            return
        stamp = {"completed": "completed_at", "cancelled": "cancelled_at", "expired": "expired_at"}[end]
        await self._change(batch, end, {**files, stamp: int(self._clock())})
        await self.store.forget_lines(batch.id, owner=self.owner)
        log.info("batch_ended", batch_id=batch.id, status=end)

    async def _change(self, batch: StoredBatch, status: str, changes: dict[str, Any]) -> None:
        """Record a new status (fenced by the lease); at an end the kept ``Authorization`` is erased with it."""
        if status not in UNFINISHED:
            changes = {**changes, "_authorization": None}
        if not await self.store.change_batch(batch.id, status, changes, owner=self.owner):
            raise _Stop
        batch.body.update(changes)
        batch_status(status)


def _with_status(batch: StoredBatch, status: str) -> StoredBatch:
    return StoredBatch(body=batch.body, status=status, totals=batch.totals, tenant=batch.tenant)


__all__ = ["BatchRunner"]
