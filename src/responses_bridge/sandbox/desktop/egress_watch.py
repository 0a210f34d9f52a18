"""What a desktop's egress proxy is given and tells: the origins its client approves (origins.py), the browser's
bounds (sandbox/egress/rates.py: connections open at once, new connections and bytes a second — never a lifetime
count, so a session browses for hours), and each connection the proxy refused or cut, kept until the model's next
computer call reports it (:meth:`DesktopEgress.report`).

Without the report, a page whose images or next page the proxy refused was a screen showing the proxy's 403 and a
call saying ``completed``: the model was not told why the page did not come. Now each refusal is a line after the
call's screenshot — what was refused (the host, when the proxy read one), how often, and why — the same refusal
of the same host said once a call with its count.
"""

from __future__ import annotations

from collections import Counter

from ..egress.rates import EgressRates
from ..egress.refusals import TOO_LARGE
from ..egress.request_head import named_destination
from .origins import OriginApprovals

BROWSER_OWN = frozenset({"android.clients.google.com", "clients2.google.com", "update.googleapis.com",
                         "optimizationguide-pa.googleapis.com", "content-autofill.googleapis.com",
                         "safebrowsing.googleapis.com", "redirector.gvt1.com"})
"""Hosts only Chromium itself asks for (push messaging's check-in, component and safe-browsing updates, network
time), whatever its flags, never a page: their refusals are the proxy's log's, not the model's business (each
would be a line about nothing it did). A page's request to any other host is told."""
MAX_KEPT = 20
"""Distinct refusals (host and outcome) kept between two calls; past it, only counted."""
MESSAGE_CHARS = 300


class DesktopEgress:
    """The desktop's gate of its call's egress proxy (an :class:`~responses_bridge.sandbox.egress.rates.
    EgressOwner`). ``approve``: each origin waits for its client's approval (False: the network policy alone
    decides)."""

    def __init__(self, approvals: OriginApprovals, rates: EgressRates, *, approve: bool = True) -> None:
        self.approvals = approvals
        self._rates = rates
        self._approve = approve
        self._refused: Counter[tuple[str | None, str]] = Counter()
        self._why: dict[tuple[str | None, str], str] = {}
        self._more = 0

    @property
    def rates(self) -> EgressRates:
        return self._rates

    async def decide(self, origin: str) -> bool:
        return await self.approvals.decide(origin) if self._approve else True

    def refused(self, host: str | None, outcome: str, message: str) -> None:
        if host is not None and host.lower() in BROWSER_OWN:
            return
        key = (host[:255] if host else None, outcome)
        if key not in self._refused and len(self._refused) >= MAX_KEPT:
            self._more += 1
            return
        self._refused[key] += 1
        self._why[key] = message[:MESSAGE_CHARS]

    def relayed(self, starts: object) -> None:
        """Heads the desktop's proxy relay refused as too large before they reached the proxy (proxy_relay.py, an
        agent-sandbox pod's: the door would have closed them unanswered), each its request line's start as the
        desktop's answer carries it: refused as the proxy refuses them, the host read by the proxy's own parser."""
        if not isinstance(starts, list):
            return
        for start in starts[:MAX_KEPT]:
            where = named_destination(start[:512].encode("latin-1", "replace")) if isinstance(start, str) else None
            self.refused(where.host if where else None, "head_too_large", TOO_LARGE)

    def report(self) -> tuple[str, ...]:
        """What was refused since the last report, one line each (and forgotten here)."""
        lines = []
        for (host, outcome), count in self._refused.items():
            what = f"a request to {host}" if host else "a connection"
            times = f" ({count} times)" if count > 1 else ""
            lines.append(f"{what} was refused{times}: {self._why[(host, outcome)]} [{outcome}]")
        if self._more:
            lines.append(f"{self._more} more refusals of other hosts or reasons")
        self._refused.clear()
        self._why.clear()
        self._more = 0
        return tuple(lines)
