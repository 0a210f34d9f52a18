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
``queued``/``in_progress`` rows; the next start (or, shared, another replica's sweep) takes them over: resumed
where the run can be (background_resume.py), ``failed`` otherwise. A drain hands its unfinished runs off the same
way: their lease let go, their rows left ``in_progress``.

Several replicas on one database (PostgreSQL). Who runs what goes through the store's
:class:`~responses_bridge.store.background_runs.RunLeases`: a run is claimed (owner + lease) before its row is
stored, a heartbeat renews the leases of this replica's runs, and a sweep (at start, then every lease period) fails
only runs whose lease expired, each by one replica. A follower on another replica reads the stored event log as it
grows (woken by the store's notifications, with polling as the fallback) until the terminal event; a cancel asked
of another replica is recorded in the store, the owner stops its run, and the asker answers with the stored
cancelled response. A run whose replica died is resumed by one other replica (claimed with the same conditional
write), from its kept request and its last completed tool loop step (background_steps.py); one that needs the
client's own upstream credentials (never stored), or whose steps a restart cannot rebuild, is failed instead. A
drain hands runs off at their next step boundary (:meth:`BackgroundService.drain`).

A terminal save that fails (the store is full, locked, broken) must not leave the row ``in_progress``: the run
ends for its readers at once (in memory, with the response run's ``response.failed``), and then keeps retrying, with
backoff, to store that terminal state and its events; the events made durable for a terminal state that was never
stored (a ``response.completed`` whose save failed) are taken back first, so a replay never shows it.
"""

from __future__ import annotations

import asyncio
import contextlib
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
from .background_finish import finish_from_log, logged_end
from .background_frames import (
    _TERMINAL,
    ABANDONED_MESSAGE,
    INTERRUPTED_MESSAGE,
    cancelled,
    interrupted,
    is_terminal_frame,
    terminal_frame,
)
from .background_resume import (
    ALL_ROWS,
    REQUEST_SEQUENCE,
    Rebuilder,
    credential_rows,
    erase_credentials,
    plan_resume,
    sealed_request,
)
from .background_run import BackgroundRun, until_started
from .kept_authorization import KeptAuthorization

log = structlog.get_logger("responses_bridge.background")

SHUTDOWN_GRACE_SECONDS = 5.0

MAX_RESUMES = 3  # the default of RESPONSES_BRIDGE_BACKGROUND_MAX_RESUMES

STORE_RETRY_SECONDS = 60.0  # the default of RESPONSES_BRIDGE_STORE_RETRY_SECONDS

FOLLOW_POLL_SECONDS = 1.0  # a follower on another replica reads the log this often when no notification came


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
        cannot be (background_resume.py says why), failed as before. Without
        ``rebuild`` every such run is failed. Returns the ids of the failed runs."""
        if self.rebuild is None or self.sealer is None:
            return await self.leases.fail_abandoned(self._closer())
        failed: list[str] = []
        taken = await self.leases.take_abandoned()
        self._taking.update(response_id for response_id, _, _ in taken)  # renewed by the heartbeat from now on
        try:
            for response_id, tenant, stored in taken:
                try:
                    if await self._take_one(response_id, tenant, stored):
                        failed.append(response_id)
                finally:
                    self._taking.discard(response_id)
        finally:
            self._taking.difference_update(response_id for response_id, _, _ in taken)
        return failed

    async def _take_one(self, response_id: str, tenant: str, stored: dict) -> bool:
        """One run a sweep took: resumed, or failed (True)."""
        await self._let_go(response_id)
        try:
            why = await self._resume(response_id, tenant, stored)
        except Exception as exc:  # the request no longer begins (a file gone, a model unrouted...)
            log.warning("background_resume_failed", response_id=response_id, exc_info=True)
            why = f"it could not be started again ({getattr(exc, 'message', None) or type(exc).__name__})"
        if why is None:
            return False
        try:
            await self._fail_taken(response_id, tenant, stored, why)
        except LeaseLost:  # another process ended the run meanwhile (its lease had run out): its end stands
            log.warning("background_not_resumed_lease_lost", response_id=response_id, reason=why)
            return False
        return True

    async def _let_go(self, response_id: str) -> None:
        """A run taken here again while its lost task here still stops (its lease ran out by the database's clock
        before this process's stop came): that task ends first, and never touches the new lease."""
        old = self.runs.pop(response_id, None)
        if old is None or old.task is None:
            return
        if not old.task.done():
            old.lost = True
            old.stop_reason = old.stop_reason or "lost"
            old.task.cancel()
            await asyncio.wait([old.task])

    async def _fail_taken(self, response_id: str, tenant: str, stored: dict, why: str) -> None:
        """A run taken over that is not resumed: failed, under this process's lease, then let go."""
        self.runs.pop(response_id, None)
        message = (ABANDONED_MESSAGE if self.leases.shared else INTERRUPTED_MESSAGE).replace(
            "will not be resumed.", f"it was not resumed: {why}.")
        response, frame = interrupted(message)(stored)
        try:
            await self.events.end_response(response, frame, tenant=tenant, **self._fence())
            await erase_credentials(self.events, response_id, tenant)
        finally:
            await self.leases.release(response_id)
        log.warning("background_not_resumed", response_id=response_id, reason=why)

    def _fence(self) -> dict[str, str]:
        """What names this process's lease in a save (none alone on the database)."""
        return {} if self.lease_owner is None else {"lease_owner": self.lease_owner}

    async def _resume(self, response_id: str, tenant: str, stored: dict) -> str | None:
        """Start ``response_id`` again from its stored request and stream (None), or say why not."""
        assert self.rebuild is not None and self.sealer is not None
        rows = await self.events.after(response_id, ALL_ROWS, tenant=tenant)
        ended = logged_end(rows, response_id)
        if ended is not None:  # it had finished: its end is stored from its log, nothing made again
            try:
                await finish_from_log(self.store, ended, tenant=tenant, fence=self._fence())
                await erase_credentials(self.events, response_id, tenant)
            except LeaseLost:  # another process stored its end meanwhile: that end stands
                log.warning("background_finish_lease_lost", response_id=response_id)
            finally:
                await self.leases.release(response_id)
            return None
        plan = plan_resume(rows, self.sealer, self.max_resumes, self.kept_authorization)
        if isinstance(plan, str):
            return plan
        if plan.resumes and any(run.suspect and not run.done for run in self.runs.values()):
            # stopped twice already, as is one running here: never two such runs in one process, so a run that
            # takes its process down with it each time does not use up the resumes of the runs it shares it with
            await self.leases.release(response_id)
            log.info("background_resume_deferred", response_id=response_id, resumes=plan.resumes)
            return None
        response_run, call, authorization, upstream = await self.rebuild(plan.body, tenant=tenant)
        if plan.authorization is not None:  # the client's own, kept: its calls carry it again
            authorization = plan.authorization
        resume_as = getattr(response_run, "resume_as", None)
        if resume_as is None or not response_run.background:
            response_run.release()
            return "its upstream's runs cannot be resumed"
        resume_as(response_id, int(stored.get("created_at") or 0), len(plan.frames))
        run = BackgroundRun(self, response_run, call, authorization, upstream)
        response_run.before_persist = run._before_persist
        response_run.persist_within = self.store_retry
        run.suspect = plan.resumes > 0
        run.resumable = True
        run.client_credentials = run.kept_credentials = plan.authorization is not None
        run.frames = list(plan.frames)
        run.saved = run.visible = run.released = len(run.frames)
        run.record_steps(self.sealer, plan.recorded)
        run.draining = self.draining
        response_run.resumed = plan.steps  # type: ignore[attr-defined]
        if response_run.response is not None:  # the completed steps' items: the repeated step's stream opens on them
            response_run.response["output"][:] = plan.steps.output
        self.runs[response_id] = run
        try:  # counted before any call is made: a process that dies in the resumed run has used it up
            await self.events.append(response_id, [(plan.marker, b"")], tenant=tenant, **run.fence)
        except BaseException:
            self.runs.pop(response_id, None)
            response_run.release()
            raise
        run.task = asyncio.create_task(run.run(), name=f"background:{response_id}")
        log.info("background_resumed", response_id=response_id, resumes=plan.resumes + 1,
                 from_sequence=len(plan.frames))
        return None

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
            await self.leases.claim(run.response_id)  # before the row: no sweep sees it unowned
            await self.store.save_response(response_run.response, response_run.request.input_items,  # type: ignore[arg-type,union-attr]
                                           tenant=run.tenant, **run.fence)
        except BaseException:
            self.runs.pop(run.response_id, None)
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

    def _run(self, response_id: str, tenant: str) -> BackgroundRun | None:
        """The run of ``tenant``'s response here, if any: another tenant's run is no run at all for the caller."""
        run = self.runs.get(response_id)
        return run if run is not None and run.tenant == tenant else None

    async def events_after(self, response_id: str, after: int, *, tenant: str) -> AsyncIterator[bytes]:
        """The response's event frames with ``sequence_number > after``, then live ones until it ends."""
        after = max(after, -1)  # below -1: the rows that make a run resumable, never a reader's
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
                if run.lost and self.leases.shared:  # fenced off: the run goes on where its lease went
                    async for frames in self._follow_stored(response_id, position - 1, tenant=tenant):
                        yield frames
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
            return await self._cancel_elsewhere(response_id, tenant=tenant)
        if status in ("queued", "in_progress"):  # no run for it in this process (should not happen): close it
            response["status"] = "cancelled"
            # with a terminal event: replays end
            await self.events.end_response(response, terminal_frame(CANCELLED_EVENT, response), tenant=tenant)
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
                    if closed is not None:  # ended here: what its dead process kept with it goes too
                        await erase_credentials(self.events, response_id, tenant)
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
