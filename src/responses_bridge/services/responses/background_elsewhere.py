"""A background run that may be running on another replica (several replicas on one database): following its
stored event log as it grows, and asking its owner to cancel it (before a cancel answers, or a delete goes ahead).
Apart from background.py, which holds the runs of this process: here nothing is held, only the store is read and
written, woken by the store's notifications (``RunLeases.watch``) with polling as the fallback. A follower's reads
wait out a database outage as a run's saves do (``store_retry``): the run goes on where its lease is, and its reader
here (often the very request that started it, whose lease this replica lost in that outage) must not end with it."""

from __future__ import annotations

import asyncio
import contextlib
import functools
from collections.abc import AsyncIterator

from ...protocol.errors import APIError, not_found
from ...store.transient import retry_store
from .background_frames import _TERMINAL, cancelled, is_terminal_frame
from .background_resume import erase_credentials
from .background_run import RunHost  # the service's store, log and leases are all it uses

FOLLOW_POLL_SECONDS = 1.0  # a follower on another replica reads the log this often when no notification came


async def follow_stored(service: RunHost, response_id: str, after: int, *,
                        tenant: str) -> AsyncIterator[bytes]:
    """The stored events after ``after``, read again whenever the store says the log grew (or every
    ``FOLLOW_POLL_SECONDS``), until the terminal event, or until the response is finished (or gone) with
    nothing more stored. Each read starts after the last event yielded: no gap, no duplicate."""
    position = after
    async with service.leases.watch(response_id) as changed:
        while True:
            changed.clear()  # before the read: a write committed after it sets it again
            stored = await _read_after(service, response_id, position, tenant)
            if stored:
                position = stored[-1][0]
                yield b"".join(frame for _, frame in stored)
                if is_terminal_frame(stored[-1][1]):
                    return
                continue
            status = await retry_store(functools.partial(stored_status_of, service, response_id, tenant=tenant),
                                       within=service.store_retry, what="follow_status")
            if status is None or status in _TERMINAL:
                for _, frame in await _read_after(service, response_id, position, tenant):
                    yield frame  # what came with the end
                return
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(changed.wait(), FOLLOW_POLL_SECONDS)


async def _read_after(service: RunHost, response_id: str, position: int, tenant: str) -> list[tuple[int, bytes]]:
    """The stored events after ``position``, the database's outage waited out."""
    return await retry_store(functools.partial(service.events.after, response_id, position, tenant=tenant),
                             within=service.store_retry, what="follow_events")


async def stored_status_of(service: RunHost, response_id: str, *, tenant: str) -> str | None:
    """The response's stored status; None: no such response (deleted meanwhile)."""
    stored = await service.store.get_response(response_id, tenant=tenant)
    return None if stored is None else str(stored.get("status"))


async def stop_elsewhere(service: RunHost, response_id: str, *, tenant: str) -> None:
    """A response about to be deleted that may run on another replica: cancelled there, and ended, first. A
    replica that does not stop it in time is the 503 ``cancel_timeout`` (nothing deleted; retry)."""
    response = await service.store.get_response(response_id, tenant=tenant)
    if response is None or response.get("status") not in ("queued", "in_progress"):
        return
    try:
        await cancel_elsewhere(service, response_id, tenant=tenant)
    except APIError as error:
        if error.status >= 500:
            raise
        # 404 / 400: it ended (or went) meanwhile; nothing runs any more


async def cancel_elsewhere(service: RunHost, response_id: str, *, tenant: str) -> dict:
    """Ask the replica running ``response_id`` to cancel it, then answer with the response as stored once it
    ended. If no live replica holds it (its lease expired), close it here, as cancelled. A replica that holds
    the lease acts within a notification or a heartbeat; one that died loses the lease within its period."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + 3 * max(service.leases.lease_seconds, FOLLOW_POLL_SECONDS)
    async with service.leases.watch(response_id) as changed:
        held = await service.leases.request_cancel(response_id, tenant=tenant)
        while True:
            changed.clear()
            if not held:
                closed = await service.leases.close_abandoned(response_id, cancelled, tenant=tenant)
                if closed is not None:  # ended here: what its dead process kept with it goes too
                    await erase_credentials(service.events, response_id, tenant)
                    return closed
            response = await service.store.get_response(response_id, tenant=tenant)
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

