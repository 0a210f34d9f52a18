"""How long a request body may take to arrive: the rule the HTTP door holds every body to (adapters/http/body_watch.py),
and so every route Envoy streams to it. The ext_proc door is given bodies Envoy has buffered whole (a slow client
there holds Envoy's buffer, bounded by its ``stream_idle_timeout``, and nothing of the bridge's until its end).

A request holds its part of the memory budget (memory_budget.py), its tenant's slot and a connection
while its body arrives; a client that declares a large body and then sends nothing (or a byte now and then) would hold
them for as long as it likes. So a body must be whole within ``request_body_timeout`` seconds plus one second for
every ``request_body_min_rate`` bytes received (Apache's ``mod_reqtimeout`` rule: a fixed grace, extended by what
has arrived), else the request is answered 408 ``request_timeout`` and its connection closed, which gives back
what it held. A client sending at least the minimum rate never meets the bound, whatever the body's size; a client
that bursts and then stalls may stall only as long as its bytes earned. Time the bridge itself spends not reading
(waiting for room in the budget, when flow control stops the client) is not counted against the client.
"""

from __future__ import annotations

import math

from ...observability.metrics import BODY_TIMEOUTS
from ...protocol.errors import APIError


class BodyPace:
    """One body's clock: :meth:`deadline` says when a body of ``received`` bytes so far must be whole (``inf``: no
    bound). Times are the event loop's (``loop.time()``)."""

    __slots__ = ("_min_rate", "_paused", "_paused_at", "_start", "_timeout")

    def __init__(self, timeout: float, min_rate: int, now: float) -> None:
        self._timeout = timeout
        self._min_rate = min_rate
        self._start = now
        self._paused = 0.0
        self._paused_at: float | None = None

    @property
    def bounded(self) -> bool:
        return self._timeout > 0

    def deadline(self, received: int) -> float:
        if not self._timeout or self._paused_at is not None:
            return math.inf
        earned = received / self._min_rate if self._min_rate else 0.0
        return self._start + self._paused + self._timeout + earned

    def late(self, received: int, now: float) -> bool:
        return now >= self.deadline(received)

    def pause(self, now: float) -> None:
        """The bridge stops reading (it waits for room): the client's clock stops too."""
        if self._paused_at is None:
            self._paused_at = now

    def resume(self, now: float) -> None:
        if self._paused_at is not None:
            self._paused += now - self._paused_at
            self._paused_at = None

    def elapsed(self, now: float) -> float:
        return now - self._start - self._paused

    def too_slow(self, received: int, declared: int | None, now: float) -> APIError:
        """The 408 of a body that missed its deadline (counted in ``responses_bridge_request_body_timeouts_total``)."""
        BODY_TIMEOUTS.inc()
        of = f" of {declared}" if declared is not None else ""
        rate = (f" plus one second per {self._min_rate} bytes received (RESPONSES_BRIDGE_REQUEST_BODY_MIN_RATE)"
                if self._min_rate else "")
        return APIError(408, f"The request body arrived too slowly: {received}{of} bytes in "
                        f"{self.elapsed(now):.0f} s. A body must be whole within {self._timeout:g} s "
                        f"(RESPONSES_BRIDGE_REQUEST_BODY_TIMEOUT){rate}; the connection is closed.",
                        type="invalid_request_error", code="request_timeout")
