"""The HTTP door's per-tenant limits (services/tenancy/limits.py): a slot per request in flight, the tenant's body size,
its share of the memory budget (services/tenancy/memory_budget.py) and the pace its body must arrive at (body_watch.py).

Runs after the identity middleware (it needs the tenant) and around everything a route does, so a streamed answer
holds its slot until its last byte, and a client that goes away or a handler that fails gives it back. Not
counted: probes and ``/metrics`` (a tenant at its limit must not make the process look dead), and the requests
that end work, a cancel or a ``DELETE`` (a tenant at its limit must be able to stop what holds it).
"""

from __future__ import annotations

import asyncio

from aiohttp import web

from ...fairness.memory_charge import hold, release_hold
from ...fairness.preemption import absorb_preemption, preempted_error
from ...protocol.errors import APIError
from ...services.tenancy.limits import Slot, TenantLimits
from ...services.tenancy.memory_budget import Held, MemoryBudget
from .body_watch import BODY_WATCH, BodyTooSlow, BodyWatch, answer_too_slow
from .drain import _exempt
from .errors import Handler, error_response
from .identity import SELF_AUTHENTICATED, request_tenant
from .params import BODY_LIMIT, HELD_MEMORY

BATCH_ROUTES = "/v1/batches"
"""Requests under it are counted among the tenant's requests in flight but not as interactive work
(fairness/idle_capacity.py): a client polling its batch must not hold its own lines back."""
SLOT = web.RequestKey("slot", Slot)
"""The request key of its :class:`Slot`, for a route that hands it on (a background response keeps it)."""


def limits_middleware(limits: TenantLimits, memory: MemoryBudget, *, body_timeout: float = 0.0,
                      body_min_rate: int = 0) -> web.middleware:  # type: ignore[valid-type]
    """``body_timeout``, ``body_min_rate``: the settings of a body's pace (services/tenancy/body_pace.py)."""

    @web.middleware
    async def limit(request: web.Request, handler: Handler) -> web.StreamResponse:
        if _exempt(request.path) or request.method == "DELETE" or request.path.endswith("/cancel") \
                or request.path.startswith(SELF_AUTHENTICATED):  # exec-servers: bounded per tenant by their hub
            return await handler(request)
        tenant = request_tenant(request)
        request[BODY_LIMIT] = min(limits.max_request_bytes(tenant), request.client_max_size)
        try:  # the Batch API's own requests (a client polling its batch) are not work its lines give way to
            slot = limits.acquire(tenant, interactive=not request.path.startswith(BATCH_ROUTES))
        except APIError as error:
            return limit_response(error)
        request[SLOT] = slot
        # reserved as the bytes arrive, against the caller's share, by the body's admission read_body hands them to
        # (params.py, services/tenancy/body_admission.py)
        held = request[HELD_MEMORY] = Held(memory, memory.holder(tenant, request.headers.get("Authorization")))
        holding = hold(held)  # what the route loads beyond the body is charged to it too (fairness/memory_charge.py)
        # a body still arriving must come at a pace, or it is answered 408; one already whole (a small body comes
        # with its headers) has nothing left to watch
        watch = request[BODY_WATCH] = (BodyWatch(request, body_timeout, body_min_rate) if body_timeout
                                       and request.body_exists and not request.content.is_eof() else None)
        try:
            response = await handler(request)
        except asyncio.CancelledError:  # the bridge took back what the request held (fairness/share.py), before the
            why = absorb_preemption()  # run could answer for itself (reading its body): a retryable 503
            if why is None or getattr(request.writer, "output_size", False):
                raise
            return error_response(preempted_error(why))
        except BodyTooSlow as slow:
            return await answer_too_slow(request, slow)
        except Exception:
            if watch is not None and watch.fired is not None:  # whatever the route made of the failed body
                return await answer_too_slow(request, watch.fired)
            raise
        finally:
            if watch is not None:
                watch.stop()
            slot.release()
            held.release()
            release_hold(holding)
        if watch is not None and watch.fired is not None and not response.prepared:
            return await answer_too_slow(request, watch.fired)
        return response

    return limit


def limit_response(error: APIError) -> web.Response:
    """A per-tenant limit's 429 (a request or a WebSocket connection too many): the OpenAI error, with the
    ``Retry-After`` the openai SDKs honour."""
    return error_response(error)


def request_slot(request: web.Request) -> Slot | None:
    """The request's slot (None: the limits middleware is not installed, as in some tests' bare apps)."""
    return request.get(SLOT)
