"""The origins a desktop's browser may reach, as its client decides them one by one: the desktop's
:class:`~responses_bridge.sandbox.egress.origins.OriginGate`, given to its call's egress proxy.

Non-blocking for the desktop's owner, holding for the browser: the proxy's first request to an origin nobody
decided is *held* (the connection waits; nothing is sent anywhere) and the origin is listed as pending; the action
that made the browser ask returns at once with the origin in its result (desktop.py cuts its settling short), so a
session can go ``requires_action`` and end its turn without waiting here. The client's decision, whenever it comes
(:meth:`OriginApprovals.allow`, :meth:`~OriginApprovals.deny`, :meth:`~OriginApprovals.dismiss`), releases the
held requests: approved, they go on as if nothing happened (the page loads, no action repeated); denied or
dismissed, they get the proxy's 403 and the server is never reached. A hold lasts at most ``hold`` seconds (the
desktop's ``origin_hold``); then that request is refused and the origin stays pending until decided: a model
reloads once it is approved.

Why not a callback that blocks the action until the client answers: a client may answer in hours, a turn must
not hold its desktop's request (and its worker) that long, and the session's ``requires_action`` is a state of
the session, not of a call in flight.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Iterable

import structlog

log = structlog.get_logger(__name__)

MAX_DECIDED = 1000
"""Origins one desktop remembers as approved or denied: a bound on what a client can make it hold."""


class OriginApprovals:
    """Approved, denied and pending origins of one desktop (origins as sandbox/egress/origins.origin_of writes them)."""

    def __init__(self, allowed: Iterable[str] = (), *, hold: float = 300.0,
                 on_pending: Callable[[str], None] | None = None) -> None:
        self.hold = hold
        self._allowed = set(allowed)
        self._denied: set[str] = set()
        self._pending: dict[str, asyncio.Event] = {}
        self._on_pending = on_pending

    async def decide(self, origin: str) -> bool:
        """Whether the browser may reach ``origin``: at once when decided, else once its client decides (at most
        ``hold`` seconds: then False, the origin still pending)."""
        if origin in self._allowed:
            return True
        if origin in self._denied:
            return False
        decided = self._pending.get(origin)
        if decided is None:
            decided = self._pending[origin] = asyncio.Event()
            log.info("desktop_origin_pending", origin=origin[:300])
            if self._on_pending is not None:
                try:  # the owner's business: its failure does not fail the browser's request
                    self._on_pending(origin)
                except Exception:
                    log.exception("desktop_origin_callback_failed", origin=origin[:300])
        try:
            async with asyncio.timeout(self.hold):
                await decided.wait()
        except TimeoutError:
            return False
        return origin in self._allowed

    def pending(self) -> tuple[str, ...]:
        """The origins the browser waits for, oldest first."""
        return tuple(self._pending)

    def allowed(self, origin: str) -> bool:
        return origin in self._allowed

    def allow(self, origin: str) -> None:
        self._remember(self._allowed, origin)
        self._denied.discard(origin)
        self._release(origin)

    def deny(self, origin: str) -> None:
        self._remember(self._denied, origin)
        self._allowed.discard(origin)
        self._release(origin)

    def dismiss(self, origin: str) -> None:
        """Refuse what waits for ``origin`` now, deciding nothing: the browser's next request asks again."""
        self._release(origin)

    def _remember(self, into: set[str], origin: str) -> None:
        if origin not in into and len(self._allowed) + len(self._denied) >= MAX_DECIDED:
            raise OverflowError(f"a desktop remembers at most {MAX_DECIDED} decided origins")
        into.add(origin)

    def _release(self, origin: str) -> None:
        decided = self._pending.pop(origin, None)
        if decided is not None:
            decided.set()
