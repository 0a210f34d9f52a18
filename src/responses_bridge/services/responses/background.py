"""Background responses (``background: true``): accepted at once, run to completion inside the sidecar.

A run is one :class:`~responses_bridge.run.response_run.ResponseRun` driven by a task of its own, with the sidecar's
:class:`~responses_bridge.run.upstream.UpstreamClient` (through Envoy when ``upstream_via`` points there). Both doors
start runs here: the HTTP door answers the POST itself, the ext_proc door with an immediate response.

Events. The response run emits SSE frames, numbered by ``sequence_number`` from 0 with no gaps, so a frame's index in
``BackgroundRun.frames`` is its sequence number. Frames are kept in memory while the run lasts (live readers
follow them) and written to ``response_events`` in batches by a writer task, off the hot path: the upstream
chunk loop never waits for the database. Live readers are shown a frame only once it is stored and the response
run has returned it: a reader that saw an event can resume after it on any process, after any crash. Before the
response's terminal state is stored, every event up to and including the terminal one is made durable (the
response run's ``before_persist`` hook), so a reader that saw ``response.completed`` can always replay the whole
stream, and ``GET /v1/responses/{id}`` never says ``completed`` before the stream is stored.

Lifecycle in the store: ``queued`` (written before the POST is answered), ``in_progress`` (when the upstream
answers), then ``completed`` / ``incomplete`` / ``failed`` / ``cancelled``. A process that dies mid-run leaves
``queued``/``in_progress`` rows; the next start (or, shared, another replica's sweep) takes them over: resumed where
the run can be (background_takeover.py, background_resume.py), ``failed`` otherwise. A drain hands its unfinished
runs off the same way: their lease let go, their rows left ``in_progress``.

Several replicas on one database (PostgreSQL). Who runs what goes through the store's
:class:`~responses_bridge.store.background_runs.RunLeases`: a run is claimed (owner + lease) before its row is
stored, a heartbeat renews the leases of this replica's runs, and a sweep (at start, then every lease period) fails
only runs whose lease expired, each by one replica. A follower on another replica reads the stored event log as it
grows (woken by the store's notifications, with polling as the fallback) until the terminal event; a cancel asked of
another replica is recorded in the store, the owner stops its run, and the asker answers with the stored cancelled
response (both in background_elsewhere.py). A run whose replica died is resumed by one other replica (claimed with
the same conditional write), from its kept request and its last completed tool loop step (background_steps.py); one
that needs the client's own upstream credentials (never stored), or whose steps a restart cannot rebuild, is failed
instead. A drain hands runs off at their next step boundary (:meth:`BackgroundService.drain`).

A terminal save that fails (the store is full, locked, broken) must not leave the row ``in_progress``: the run
ends for its readers at once (in memory, with the response run's ``response.failed``), and then keeps retrying, with
backoff, to store that terminal state and its events; the events made durable for a terminal state that was never
stored (a ``response.completed`` whose save failed) are taken back first, so a replay never shows it.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import orjson
import structlog

from ...engine.event_frames import CANCELLED_EVENT
from ...engine.wire import UpstreamRequest
from ...observability import metrics
from ...protocol.errors import APIError, not_found
from ...run.runs import Run
from ...run.upstream import UpstreamClient
from ...sealing import Sealer
from ...store.base import EventLog, ResponseStore, RunLeases
from ...store.records import Closer, LeaseLost
from ...store.sqlite.background_runs import LocalRunLeases
from ..tenancy.memory_budget import OVERLOADED
from .background_elsewhere import cancel_elsewhere, follow_stored, stop_elsewhere
from .background_frames import (
    ABANDONED_MESSAGE,
    INTERRUPTED_MESSAGE,
    interrupted,
    terminal_frame,
)
from .background_resume import (
    REQUEST_SEQUENCE,
    Rebuilder,
    credential_rows,
    erase_credentials,
    sealed_request,
)
from .background_run import BackgroundRun, until_started
from .background_takeover import take_one
from .kept_authorization import KeptAuthorization

log = structlog.get_logger("responses_bridge.background")

SHUTDOWN_GRACE_SECONDS = 5.0

MAX_RESUMES = 3  # the default of RESPONSES_BRIDGE_BACKGROUND_MAX_RESUMES

STORE_RETRY_SECONDS = 60.0  # the default of RESPONSES_BRIDGE_STORE_RETRY_SECONDS

QUEUED_CLAIMS = 3
"""Times a background response's lease is claimed for its queued row before the request is answered 503
(:meth:`BackgroundService._store_queued`)."""


class BackgroundService:
    def __init__(self, store: ResponseStore, events: EventLog, upstream: UpstreamClient,
                 leases: RunLeases | None = None) -> None:
        self.store = store
        self.events = events
        self.upstream = upstream
        self.leases: RunLeases = leases or LocalRunLeases(events)
        self.lease_owner = self.leases.owner
        self.runs: dict[str, BackgroundRun] = {}
        self._heartbeat: asyncio.Task[None] | None = None
        self._sweeper: asyncio.Task[None] | None = None  # the heartbeat's sweep, in a task of its own
        self._taking: set[str] = set()  # runs a sweep here took and is still resuming: their leases are renewed too
        self._stopping: set[asyncio.Task[None]] = set()
        # resuming (background_resume.py): set by the runtime once it can build runs again
        self.rebuild: Rebuilder | None = None
        self.sealer: Sealer | None = None
        # the client's Authorization kept sealed with a run whose call carries it (kept_authorization.py): None
        # keeps nothing, and such a run is not resumed
        self.kept_authorization: KeptAuthorization | None = None
        self.max_resumes = MAX_RESUMES
        self.store_retry = STORE_RETRY_SECONDS  # a run's saves wait out an outage this long (store/transient.py)
        self.draining = False  # runs resumed or started from now on are handed off at their first step boundary
        metrics.watch_background(self)

    async def open(self, *, sweep: bool = True) -> list[str]:
        """Take over the runs no process holds any more (alone on the database: every unfinished one; shared:
        those whose lease expired; see :meth:`sweep`), then listen for cancel requests and keep this replica's
        leases alive. Returns the ids of the failed runs. ``sweep=False``: the caller sweeps once it has set
        ``rebuild`` (the runtime, which is made after this service)."""
        failed = await self.sweep() if sweep else []
        await self.leases.start(self._cancel_requested)
        if self.leases.shared:
            self._heartbeat = asyncio.create_task(self._beat(), name="background:heartbeat")
        return failed

    def _closer(self) -> Closer:
        return interrupted(ABANDONED_MESSAGE if self.leases.shared else INTERRUPTED_MESSAGE)

    async def _beat(self) -> None:
        """Renew this replica's leases several times per lease period; act on what the renewal reports; once per
        period, take over (or fail) the runs of replicas that stopped renewing theirs. The sweep runs in a task of
        its own: a lease that ran out is lost by the database's clock, so a long sweep (many runs resumed one after
        another) must never hold up the renewals of the runs here, nor of those it has taken and not yet resumed."""
        period = self.leases.lease_seconds
        loop = asyncio.get_running_loop()
        last_sweep = loop.time()
        while True:
            await asyncio.sleep(period / 3)
            try:
                renewal = await self.leases.renew([*self.runs, *(self._taking - self.runs.keys())])
                for response_id in renewal.lost:
                    log.warning("background_lease_lost", response_id=response_id)
                    self._stop_soon(response_id, "lost")
                for response_id in renewal.cancel_requested:
                    self._stop_soon(response_id, "cancel")
            except Exception:  # the next beat retries; a lease outlives a few missed beats
                log.exception("background_heartbeat_failed")
            if loop.time() - last_sweep >= period and (self._sweeper is None or self._sweeper.done()):
                last_sweep = loop.time()
                self._sweeper = asyncio.create_task(self._sweep_once(), name="background:sweep")

    async def _sweep_once(self) -> None:
        try:
            failed = await self.sweep()
        except Exception:  # the next period's sweep retries
            log.exception("background_heartbeat_failed")
            return
        if failed:
            log.warning("background_abandoned", count=len(failed), response_ids=failed[:20])

    async def sweep(self) -> list[str]:
        """Take over every run nobody holds: each is claimed by one process (``RunLeases.take_abandoned``), then
        finished from its log when its stream had ended (background_finish.py), else resumed here, or, when it
        cannot be (background_resume.py says why), failed as before (background_takeover.py). Without
        ``rebuild`` every such run is failed. Returns the ids of the failed runs."""
        if self.rebuild is None or self.sealer is None:
            return await self.leases.fail_abandoned(self._closer())
        failed: list[str] = []
        taken = await self.leases.take_abandoned()
        self._taking.update(response_id for response_id, _, _ in taken)  # renewed by the heartbeat from now on
        try:
            for response_id, tenant, stored in taken:
                try:
                    if await take_one(self, response_id, tenant, stored):
                        failed.append(response_id)
                finally:
                    self._taking.discard(response_id)
        finally:
            self._taking.difference_update(response_id for response_id, _, _ in taken)
        return failed

    def _fence(self) -> dict[str, str]:
        """What names this process's lease in a save (none alone on the database)."""
        return {} if self.lease_owner is None else {"lease_owner": self.lease_owner}

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
        await until_started(run)
        if reason == "cancel" and (run.finishing or run.done):
            return
        if reason == "lost" and run.finishing and not run.done:  # storing its end now: let it
            return
        run.stop_reason = reason
        run.task.cancel()

    async def run_ended(self, run: BackgroundRun) -> None:
        if self.runs.get(run.response_id) is not run:  # lost, and taken here again: the lease is the new run's
            return
        self.runs.pop(run.response_id, None)
        if run.kept_credentials and not run.handed_off and run.stop_reason != "lost":  # ended: not kept past it
            await erase_credentials(self.events, run.response_id, run.tenant, **run.fence)
        try:
            await self.leases.release(run.response_id)
        except Exception:  # the lease expires; the run's terminal state is stored, so no sweep touches it
            log.warning("background_release_failed", response_id=run.response_id, exc_info=True)

    def queue_depth(self) -> int:
        """Background responses queued or running here (``responses_bridge_background_queue_depth``)."""
        return sum(1 for run in self.runs.values() if not run.done)

    async def start(self, response_run: Run, call: UpstreamRequest | None, authorization: str | None,
                    upstream: UpstreamClient | None = None, *, request_body: bytes | dict | None = None,
                    client_credentials: bool = False) -> BackgroundRun:
        """``response_run`` has begun (a background request). Stores it as ``queued`` and starts its run, calling
        ``upstream`` (the request's routed upstream; default: the service's). With ``request_body`` the request is
        kept, sealed, so another process can resume the run (background_resume.py); ``client_credentials``: the
        upstream call carries the client's own ``Authorization`` (``authorization``), kept sealed with the request
        (kept_authorization.py), or, when none is kept, making the run one that is not resumed."""
        run = BackgroundRun(self, response_run, call, authorization, upstream)
        run.client_credentials = client_credentials  # an agent session's turn asks (services/agents/session_resume.py)
        response_run.before_persist = run._before_persist
        response_run.persist_within = self.store_retry
        # kept, not written yet: an event log may store only the events of a stored response (PostgreSQL's
        # checks the owner's row), so the writer starts once the queued row exists
        run._record(response_run.queued())
        run.accepted = orjson.dumps(response_run.response)
        self.runs[run.response_id] = run  # before the row exists: a follower finds the run, never an orphan
        try:
            await self._store_queued(run, response_run)
        except BaseException:
            self.runs.pop(run.response_id, None)
            response_run.before_persist = None  # no cycle left through the run that never started
            await self.leases.release(run.response_id)
            raise
        if request_body is not None and self.sealer is not None:
            kept = credential_rows(self.kept_authorization, authorization if client_credentials else None)
            try:
                await self.events.append(run.response_id, [(REQUEST_SEQUENCE, sealed_request(
                    self.sealer, request_body, client_credentials=client_credentials)), *kept],
                    tenant=run.tenant, **run.fence)
                run.kept_credentials = bool(kept)
                run.resumable = not client_credentials or run.kept_credentials
                if run.resumable:
                    run.record_steps(self.sealer)
                    run.draining = self.draining
            except Exception:  # the run goes on; it is only not resumable
                log.warning("background_request_not_kept", response_id=run.response_id, exc_info=True)
        if getattr(response_run, "background_body", None) is not None:  # kept: the run need not hold its bytes
            response_run.background_body = None  # type: ignore[attr-defined]
        run.add(b"")  # created + queued: shown to readers, written by the writer
        run.task = asyncio.create_task(run.run(), name=f"background:{run.response_id}")
        log.info("background_started", response_id=run.response_id)
        return run

    async def _store_queued(self, run: BackgroundRun, response_run: Run) -> None:
        """Claim the run's lease, then store its queued row under it (before the row: no sweep sees it unowned).
        A lease that ran out between the two (this process stalled longer than the lease: a loaded host, a short
        ``RESPONSES_BRIDGE_BACKGROUND_LEASE_SECONDS``) fenced the save off before it wrote anything, and no other
        process can have acted on a run whose row does not exist: it is claimed again, a few times, and then
        answered as the overload it is (a 503 the client retries), never as a server error."""
        for _ in range(QUEUED_CLAIMS):
            await self.leases.claim(run.response_id)
            try:
                await self.store.save_response(response_run.response, response_run.request.input_items,  # type: ignore[arg-type,union-attr]
                                               tenant=run.tenant, **run.fence)
                return
            except LeaseLost:
                log.warning("background_claim_ran_out", response_id=run.response_id)
        raise APIError(503, "The server was too busy to store this background response within its lease "
                       "(RESPONSES_BRIDGE_BACKGROUND_LEASE_SECONDS); nothing was started. Retry shortly.",
                       type="server_error", code=OVERLOADED)

    def _run(self, response_id: str, tenant: str) -> BackgroundRun | None:
        """The run of ``tenant``'s response here, if any: another tenant's run is no run at all for the caller."""
        run = self.runs.get(response_id)
        return run if run is not None and run.tenant == tenant else None

    async def events_after(self, response_id: str, after: int, *, tenant: str) -> AsyncIterator[bytes]:
        """The response's event frames with ``sequence_number > after``, then live ones until it ends."""
        after = max(after, -1)  # below -1: the rows that make a run resumable, never a reader's
        run = self._run(response_id, tenant)
        if run is None and self.leases.shared:  # maybe running on another replica: follow its stored log
            async for frames in follow_stored(self, response_id, after, tenant=tenant):
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
                if run.lost and self.leases.shared:  # fenced off: the run goes on where its lease went
                    async for frames in follow_stored(self, response_id, position - 1, tenant=tenant):
                        yield frames
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
            await until_started(run)
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
            return await cancel_elsewhere(self, response_id, tenant=tenant)
        if status in ("queued", "in_progress"):  # no run for it in this process (should not happen): close it
            response["status"] = "cancelled"
            # with a terminal event: replays end
            await self.events.end_response(response, terminal_frame(CANCELLED_EVENT, response), tenant=tenant)
            return response
        raise APIError(400, f"Cannot cancel a {status} response.", param="response_id", code="invalid_request")

    async def forget(self, response_id: str, *, tenant: str) -> None:
        """``tenant``'s response is being deleted: stop its run first, without storing anything more for it.
        Another replica's run is cancelled there first (and waited for): its last save would otherwise bring the
        deleted response back."""
        run = self._run(response_id, tenant)
        if (run is None or run.task is None) and self.leases.shared:
            await stop_elsewhere(self, response_id, tenant=tenant)
            return
        if run is None or run.task is None:
            return
        await until_started(run)
        if not run.finishing or run.done:  # running, or ended and still retrying its terminal save
            run.stop_reason = "deleted"
            run.task.cancel()
        await asyncio.wait([run.task])
        await run.writes_settled()

    def drain(self) -> None:
        """The process drains: every resumable run stops at its next step boundary (its step recorded, its lease
        let go: background_steps.py ``HandOff``), so the restarted process or another replica resumes it at once
        rather than at the drain deadline; a run that reaches none in time is handed off by :meth:`close`."""
        self.draining = True
        for run in self.runs.values():
            run.draining = run.resumable

    async def close(self) -> None:
        """Shutdown: runs still going are handed off when resumable (left ``in_progress``, their lease let go),
        otherwise ended as failed (stored)."""
        for task in (self._heartbeat, self._sweeper):
            if task is not None:
                task.cancel()
                await asyncio.wait([task])
        self._heartbeat = self._sweeper = None
        await self._close_runs()
        await self.leases.close()

    async def _close_runs(self) -> None:
        runs = [run for run in self.runs.values() if run.task is not None and not run.task.done()]
        for run in runs:
            await until_started(run)
        for run in runs:
            if not run.finishing or run.done:  # a run still retrying its terminal save is failed by the next start
                # a resumable run is handed off (its lease let go, its row left in_progress): the next start,
                # or another replica's sweep, resumes it; any other is failed (server_shutdown)
                run.stop_reason = "handoff" if run.resumable and not run.done else "shutdown"
                run.task.cancel()  # type: ignore[union-attr]
        if runs:
            await asyncio.wait([run.task for run in runs if run.task is not None], timeout=SHUTDOWN_GRACE_SECONDS)
