"""Per-tenant limits both doors apply before a request runs: requests in flight, and the size of a request body.

One :class:`TenantLimits` per process (``Runtime.limits``), shared by the HTTP door and the ext_proc door, so a
tenant's requests count against one budget whichever door they come through. A request takes a :class:`Slot`
when it starts and gives it back when its answer has ended (a stream's last byte, a client that went away, a
failure); a background response keeps its slot until its run ends, since it calls the upstream as long as a
streamed one does. A request the ext_proc door hands to the sidecar's HTTP door (server-side tools) takes its
slot in the HTTP door only, so it counts once.

The limits are per process: with several replicas each enforces its own (Envoy's ``local_ratelimit`` or a
global rate limit service is the tool for fleet-wide budgets).
"""

from __future__ import annotations

import asyncio

from ..config import Settings
from ..observability.metrics import LIMITED
from ..protocol.errors import APIError
from ..tenants import TenantPolicy

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


def request_too_large(limit: int) -> APIError:
    """The 413 of a request body over the tenant's (or the deployment's) limit (made only to refuse one)."""
    LIMITED.labels("request_bytes").inc()
    return APIError(413, f"The request body is larger than this deployment accepts ({limit} bytes).",
                    code="request_too_large")


class Slot:
    """One request in flight. :meth:`release` is idempotent, so every exit path may call it."""

    __slots__ = ("_limits", "_task", "_tenant")

    def __init__(self, limits: TenantLimits | None, tenant: str) -> None:
        self._limits = limits  # None: the tenant has no limit, nothing to give back
        self._tenant = tenant
        self._task: asyncio.Future[None] | None = None

    def release(self) -> None:
        """Give the slot back (a no-op once given back, or while a background run holds it)."""
        if self._task is not None and not self._task.done():
            return
        limits, self._limits = self._limits, None
        if limits is not None:
            limits._release(self._tenant)

    def hold_until(self, task: asyncio.Future[None] | None) -> None:
        """Keep the slot until ``task`` (a background run) ends, whatever the request's own end."""
        if task is None or task.done() or self._limits is None:
            return
        self._task = task
        task.add_done_callback(lambda _: self.release())


UNLIMITED = Slot(None, "")
"""What a tenant without a concurrency limit gets: releasing it does nothing."""


class TenantLimits:
    """The process's count of requests in flight per tenant, against each tenant's policy (read from the settings
    on every request: a handful of microseconds, once per request, never per chunk)."""

    def __init__(self, settings: Settings) -> None:
        self._settings = settings
        self._in_flight: dict[str, int] = {}
        self._policies: dict[str | None, TenantPolicy] = {}

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

    def acquire(self, tenant: str) -> Slot:
        """A slot for one more of ``tenant``'s requests; a 429 (:func:`too_many_requests`) at its limit."""
        limit = self.policy(tenant).max_concurrent_requests
        if limit is None:
            return UNLIMITED
        count = self._in_flight.get(tenant, 0)
        if count >= limit:
            LIMITED.labels("concurrency").inc()
            raise too_many_requests(limit)
        self._in_flight[tenant] = count + 1
        return Slot(self, tenant)

    def in_flight(self, tenant: str) -> int:
        """``tenant``'s requests holding a slot now."""
        return self._in_flight.get(tenant, 0)

    def _release(self, tenant: str) -> None:
        count = self._in_flight.get(tenant, 0) - 1
        if count > 0:
            self._in_flight[tenant] = count
        else:
            self._in_flight.pop(tenant, None)  # no entry per tenant ever seen: the map stays as small as the load
