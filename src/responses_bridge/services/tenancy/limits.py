"""Per-tenant limits both doors apply before a request runs: requests in flight, and the size of a request body;
and WebSocket mode connections open, which only the HTTP door serves.

One :class:`TenantLimits` per process (``Runtime.limits``), shared by the HTTP door and the ext_proc door, so a
tenant's requests count against one budget whichever door they come through. A request takes a :class:`Slot`
when it starts and gives it back when its answer has ended (a stream's last byte, a client that went away, a
failure); a background response keeps its slot until its run ends, since it calls the upstream as long as a
streamed one does. A request the ext_proc door hands to the sidecar's HTTP door (server-side tools) takes its
slot in the HTTP door only, so it counts once. A WebSocket connection takes a request slot like any request, and a
connection slot besides (:meth:`TenantLimits.connect`): its connections are limited even where its requests are
not, since each holds memory of its own for as long as it is open (queued turns and steering input, up to
``max_request_bytes`` each, besides its running turns).

The limits are per process: with several replicas each enforces its own (Envoy's ``local_ratelimit`` or a
global rate limit service is the tool for fleet-wide budgets).
"""

from __future__ import annotations

import asyncio

from ...config.settings import Settings
from ...config.tenants import TenantPolicy
from ...fairness.idle_capacity import Activity
from ...observability.metrics import LIMITED
from ...protocol.errors import APIError

RETRY_AFTER_SECONDS = 1
"""The ``Retry-After`` of a 429. A slot frees as soon as one of the tenant's running requests ends, which is not
predictable; one second lets the openai SDKs' automatic retries (they honour the header) try again soon without
spinning."""


def too_many_requests(limit: int) -> APIError:
    """The 429 of a tenant at its limit. ``type: "requests"`` and ``code: "rate_limit_exceeded"`` are what
    OpenAI sends for a limit on requests; the openai SDKs raise ``RateLimitError`` for any 429 and retry it
    after ``Retry-After``."""
    return APIError(429, f"Too many concurrent requests: this tenant may have {limit} request"
                    f"{'' if limit == 1 else 's'} in flight at once. Retry when one has finished.",
                    type="requests", code="rate_limit_exceeded")


def too_many_connections(limit: int) -> APIError:
    """The 429 of a tenant with ``limit`` WebSocket connections open, refusing the upgrade of one more: a client's
    WebSocket library reports the handshake's status (the openai SDK's reconnection counts it as a failed attempt
    and tries again), and the body says why for whoever reads it. ``rate_limit_exceeded`` as for requests; the
    ``type`` names what is limited."""
    return APIError(429, f"Too many WebSocket connections: this tenant may have {limit} open at once. Close one, "
                    "or retry when one has closed.", type="connections", code="rate_limit_exceeded")


def request_too_large(limit: int) -> APIError:
    """The 413 of a request body over the tenant's (or the deployment's) limit (made only to refuse one)."""
    LIMITED.labels("request_bytes").inc()
    return APIError(413, f"The request body is larger than this deployment accepts ({limit} bytes).",
                    code="request_too_large")


class Slot:
    """One request in flight (or one connection open). :meth:`release` is idempotent, so every exit path may call
    it. A request's slot also counts it among the process's interactive requests (``activity``:
    fairness/idle_capacity.py, which batch lines give way to), whatever the tenant's limit."""

    __slots__ = ("_activity", "_counts", "_task", "_tenant")

    def __init__(self, counts: dict[str, int] | None, tenant: str, activity: Activity | None = None) -> None:
        self._counts = counts  # what it counts in; None: the tenant has no limit, nothing to give back
        self._tenant = tenant
        self._task: asyncio.Future[None] | None = None
        self._activity = activity  # counted in it (entered by TenantLimits.acquire); None: not, or no longer

    def quiet(self) -> None:
        """No longer counted as interactive work in flight, while the slot stays held: a WebSocket connection
        between its turns (each turn counts itself: adapters/http/websocket/connection.py)."""
        activity, self._activity = self._activity, None
        if activity is not None:
            activity.leave()

    def release(self) -> None:
        """Give the slot back (a no-op once given back, or while a background run holds it)."""
        if self._task is not None and not self._task.done():
            return
        counts, self._counts = self._counts, None
        if counts is not None:
            count = counts.get(self._tenant, 0) - 1
            if count > 0:
                counts[self._tenant] = count
            else:  # no entry per tenant ever seen: the map stays as small as the load
                counts.pop(self._tenant, None)
        activity, self._activity = self._activity, None
        if activity is not None:  # Activity.leave, inlined (every request comes here); last: a batch line may start
            activity.count -= 1
            if activity.listener is not None:
                activity.listener()

    def hold_until(self, task: asyncio.Future[None] | None) -> None:
        """Keep the slot until ``task`` (a background run) ends, whatever the request's own end."""
        if task is None or task.done() or (self._counts is None and self._activity is None):
            return
        self._task = task
        task.add_done_callback(lambda _: self.release())


UNLIMITED = Slot(None, "")
"""What a tenant without a concurrency limit gets: releasing it does nothing."""


class TenantLimits:
    """The process's count of requests in flight and of WebSocket connections open per tenant, against each
    tenant's policy (read from the settings on every request: a handful of microseconds, once per request, never
    per chunk)."""

    def __init__(self, settings: Settings) -> None:
        self._settings = settings
        self._in_flight: dict[str, int] = {}
        self._connections: dict[str, int] = {}
        self._policies: dict[str | None, TenantPolicy] = {}
        # every tenant's requests in flight together, which batch lines give way to (fairness/idle_capacity.py)
        self.activity = Activity()

    def policy(self, tenant: str) -> TenantPolicy:
        """Worked out once per configured tenant, and once for all the others (who share the defaults): building
        it is two model validations, and every request asks twice. Keyed by configured names only, so a client
        naming tenants of its own cannot grow the cache."""
        key = tenant if tenant in self._settings.tenants else None
        policy = self._policies.get(key)
        if policy is None:
            policy = self._policies[key] = self._settings.tenant_policy(tenant)
        return policy

    def max_request_bytes(self, tenant: str) -> int:
        """The largest request body ``tenant`` may send: its own limit, never above the deployment's."""
        own, ceiling = self.policy(tenant).max_request_bytes, self._settings.max_request_bytes
        return ceiling if own is None else min(own, ceiling)

    def acquire(self, tenant: str, *, interactive: bool = True) -> Slot:
        """A slot for one more of ``tenant``'s requests; a 429 (:func:`too_many_requests`) at its limit. Counted
        among the interactive requests in flight (:attr:`activity`) until it is released, unless ``interactive`` is
        False: the Batch API's own requests (a client polling its batch), which its lines need not give way to."""
        limit = self.policy(tenant).max_concurrent_requests
        activity = self.activity if interactive else None
        if limit is None:
            if activity is not None:  # Activity.enter, inlined: every request comes here
                activity.count += 1
                activity.entered += 1
            return Slot(None, tenant, activity)
        if self._in_flight.get(tenant, 0) >= limit:
            LIMITED.labels("concurrency").inc()
            raise too_many_requests(limit)
        if activity is not None:
            activity.count += 1
            activity.entered += 1
        slot = self._take(self._in_flight, tenant)
        slot._activity = activity
        return slot

    def connect(self, tenant: str) -> Slot:
        """A slot for one more of ``tenant``'s WebSocket connections; a 429 (:func:`too_many_connections`) at its
        limit."""
        limit = self.policy(tenant).max_websocket_connections
        if limit is None:  # only a TenantPolicy made without the settings' default
            return UNLIMITED
        if self._connections.get(tenant, 0) >= limit:
            LIMITED.labels("connections").inc()
            raise too_many_connections(limit)
        return self._take(self._connections, tenant)

    def in_flight(self, tenant: str) -> int:
        """``tenant``'s requests holding a slot now."""
        return self._in_flight.get(tenant, 0)

    def connections(self, tenant: str) -> int:
        """``tenant``'s WebSocket connections open now."""
        return self._connections.get(tenant, 0)

    @staticmethod
    def _take(counts: dict[str, int], tenant: str) -> Slot:
        counts[tenant] = counts.get(tenant, 0) + 1
        return Slot(counts, tenant)
