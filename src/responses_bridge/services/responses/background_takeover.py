"""Taking over a background run nobody holds any more (a process died, a replica stopped renewing its lease, a drain
handed it off): each run a sweep took (:meth:`BackgroundService.sweep
<responses_bridge.services.responses.background.BackgroundService.sweep>`) is finished from its log when its stream
had ended (background_finish.py), resumed here from its kept request and steps (background_resume.py), or failed
saying why not. Apart from background.py, which starts, follows, cancels and closes runs: this is the one path that
brings a run back, and it reads as one sequence."""

from __future__ import annotations

import asyncio
from typing import Protocol

import structlog

from ...sealing import Sealer
from ...store.records import LeaseLost
from .background_finish import finish_from_log, logged_end
from .background_frames import ABANDONED_MESSAGE, INTERRUPTED_MESSAGE, interrupted
from .background_resume import ALL_ROWS, Rebuilder, erase_credentials, plan_resume
from .background_run import BackgroundRun, RunHost
from .kept_authorization import KeptAuthorization


class TakeoverHost(RunHost, Protocol):
    """background.py's ``BackgroundService``, as taking a run over uses it (declared here: this module sits below
    it and never imports it)."""

    runs: dict[str, BackgroundRun]
    sealer: Sealer | None
    kept_authorization: KeptAuthorization | None
    max_resumes: int
    draining: bool
    rebuild: Rebuilder | None

    def _fence(self) -> dict[str, str]: ...

log = structlog.get_logger("responses_bridge.background")


async def take_one(service: TakeoverHost, response_id: str, tenant: str, stored: dict) -> bool:
    """One run a sweep took: resumed, or failed (True)."""
    await let_go(service, response_id)
    try:
        why = await resume(service, response_id, tenant, stored)
    except Exception as exc:  # the request no longer begins (a file gone, a model unrouted...)
        log.warning("background_resume_failed", response_id=response_id, exc_info=True)
        why = f"it could not be started again ({getattr(exc, 'message', None) or type(exc).__name__})"
    if why is None:
        return False
    try:
        await fail_taken(service, response_id, tenant, stored, why)
    except LeaseLost:  # another process ended the run meanwhile (its lease had run out): its end stands
        log.warning("background_not_resumed_lease_lost", response_id=response_id, reason=why)
        return False
    return True


async def let_go(service: TakeoverHost, response_id: str) -> None:
    """A run taken here again while its lost task here still stops (its lease ran out by the database's clock
    before this process's stop came): that task ends first, and never touches the new lease."""
    old = service.runs.pop(response_id, None)
    if old is None or old.task is None:
        return
    if not old.task.done():
        old.lost = True
        old.stop_reason = old.stop_reason or "lost"
        old.task.cancel()
        await asyncio.wait([old.task])


async def fail_taken(service: TakeoverHost, response_id: str, tenant: str, stored: dict, why: str) -> None:
    """A run taken over that is not resumed: failed, under this process's lease, then let go."""
    service.runs.pop(response_id, None)
    message = (ABANDONED_MESSAGE if service.leases.shared else INTERRUPTED_MESSAGE).replace(
        "will not be resumed.", f"it was not resumed: {why}.")
    response, frame = interrupted(message)(stored)
    try:
        await service.events.end_response(response, frame, tenant=tenant, **service._fence())
        await erase_credentials(service.events, response_id, tenant)
    finally:
        await service.leases.release(response_id)
    log.warning("background_not_resumed", response_id=response_id, reason=why)


async def resume(service: TakeoverHost, response_id: str, tenant: str, stored: dict) -> str | None:
    """Start ``response_id`` again from its stored request and stream (None), or say why not."""
    assert service.rebuild is not None and service.sealer is not None
    rows = await service.events.after(response_id, ALL_ROWS, tenant=tenant)
    ended = logged_end(rows, response_id)
    if ended is not None:  # it had finished: its end is stored from its log, nothing made again
        try:
            await finish_from_log(service.store, ended, tenant=tenant, fence=service._fence())
            await erase_credentials(service.events, response_id, tenant)
        except LeaseLost:  # another process stored its end meanwhile: that end stands
            log.warning("background_finish_lease_lost", response_id=response_id)
        finally:
            await service.leases.release(response_id)
        return None
    plan = plan_resume(rows, service.sealer, service.max_resumes, service.kept_authorization)
    if isinstance(plan, str):
        return plan
    if plan.resumes and any(run.suspect and not run.done for run in service.runs.values()):
        # stopped twice already, as is one running here: never two such runs in one process, so a run that
        # takes its process down with it each time does not use up the resumes of the runs it shares it with
        await service.leases.release(response_id)
        log.info("background_resume_deferred", response_id=response_id, resumes=plan.resumes)
        return None
    response_run, call, authorization, upstream = await service.rebuild(plan.body, tenant=tenant)
    if plan.authorization is not None:  # the client's own, kept: its calls carry it again
        authorization = plan.authorization
    resume_as = getattr(response_run, "resume_as", None)
    if resume_as is None or not response_run.background:
        response_run.release()
        return "its upstream's runs cannot be resumed"
    resume_as(response_id, int(stored.get("created_at") or 0), len(plan.frames))
    run = BackgroundRun(service, response_run, call, authorization, upstream)
    response_run.before_persist = run._before_persist
    response_run.persist_within = service.store_retry
    run.suspect = plan.resumes > 0
    run.resumable = True
    run.client_credentials = run.kept_credentials = plan.authorization is not None
    run.frames = list(plan.frames)
    run.saved = run.visible = run.released = len(run.frames)
    run.record_steps(service.sealer, plan.recorded)
    run.draining = service.draining
    response_run.resumed = plan.steps  # type: ignore[attr-defined]
    if response_run.response is not None:  # the completed steps' items: the repeated step's stream opens on them
        response_run.response["output"][:] = plan.steps.output
    service.runs[response_id] = run
    try:  # counted before any call is made: a process that dies in the resumed run has used it up
        await service.events.append(response_id, [(plan.marker, b"")], tenant=tenant, **run.fence)
    except BaseException:
        service.runs.pop(response_id, None)
        response_run.release()
        raise
    run.task = asyncio.create_task(run.run(), name=f"background:{response_id}")
    log.info("background_resumed", response_id=response_id, resumes=plan.resumes + 1,
             from_sequence=len(plan.frames))
    return None

