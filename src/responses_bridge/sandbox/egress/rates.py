"""A browser's bounds on the egress proxy (:class:`EgressRates`): connections open at once, new connections and
bytes over time — instead of a code call's lifetime counts (limits.py: ``connections`` and ``call_bytes`` a call may
use in all), which a browser passes within minutes.

A code call lives seconds, and what it may move in all is the bound that matters. A desktop's browser lives hours
and the proxy serves it one request per connection (request_head.py): a page of 70 images is 70 connections, so a
lifetime count of 64 stopped the browsing of a session at its second page. Its bounds are what it holds and how
fast it goes:

- ``connections``: open at once (Chromium opens at most 32 a proxy, more for WebSockets); one past it waits for
  one to end, at most ``wait`` seconds, then is refused (``concurrent_limit``). At most as many again may wait:
  past that, refused at once, so that waiting never holds more descriptors than twice the bound;
- ``connections_per_second`` with a burst of ``connection_burst``: a token bucket; a connection past it waits for
  its token, at most ``wait`` seconds (a page of a few hundred images loads at once, a flood is slowed, then
  refused: ``connection_rate``);
- ``bytes_per_second`` with a burst of ``byte_burst``: a token bucket on the bytes both ways of every connection
  together: past it the relay is slowed (each chunk waits for its bytes), never cut — a large download takes
  longer.

Each connection keeps its own bounds (``connection_bytes``, ``connection_seconds``: limits.py), and the tenant's
share and the process's cap hold as for every call.

The bucket is written here, not taken from a rate-limiting library: what the proxy needs is the delay a
connection would wait, to refuse it at once when that is past ``wait`` instead of queueing it, and a debt that
several relays share fairly — a dozen lines over ``time.monotonic``.

The proxy tells its owner what it refused (:class:`EgressOwner`): a desktop reports it with the model's next
computer call, which is never a silent ``completed`` over a page the proxy refused (docs/agents.md).
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Protocol, runtime_checkable


@dataclass(frozen=True, slots=True)
class EgressRates:
    """A browser's bounds (this module's docstring); the defaults are ``RESPONSES_BRIDGE_DESKTOP_EGRESS_*``'s."""

    connections: int = 64
    connections_per_second: float = 50.0
    connection_burst: int = 500
    bytes_per_second: float = 8 << 20
    byte_burst: int = 64 << 20
    wait: float = 10.0


class TokenBucket:
    """``rate`` tokens a second, at most ``burst`` saved. :meth:`take` may leave a debt, repaid by the time it
    returns: whoever takes next waits for it too, so relays that share the bucket share its rate."""

    def __init__(self, rate: float, burst: float, clock: Callable[[], float] = time.monotonic) -> None:
        self.rate = rate
        self.burst = burst
        self._clock = clock
        self._tokens = float(burst)
        self._stamp = clock()

    def _refill(self) -> None:
        now = self._clock()
        self._tokens = min(self.burst, self._tokens + (now - self._stamp) * self.rate)
        self._stamp = now

    def delay(self, amount: float) -> float:
        """Seconds until ``amount`` (at most the burst) is there, taking nothing."""
        self._refill()
        missing = min(amount, self.burst) - self._tokens
        return max(0.0, missing / self.rate)

    def take(self, amount: float) -> float:
        """Take ``amount`` now (into debt): the seconds to wait before using it."""
        self._refill()
        self._tokens -= amount
        return max(0.0, -self._tokens / self.rate)


@runtime_checkable
class EgressOwner(Protocol):
    """An origin gate (origins.py) whose owner also bounds its call's egress by rates and hears what the proxy
    refused: a desktop's (sandbox/desktop/egress_watch.py)."""

    @property
    def rates(self) -> EgressRates: ...

    def refused(self, host: str | None, outcome: str, message: str) -> None:
        """The proxy answered a connection itself (``outcome``, the metric's label; ``host``: None when refused
        before its request head was read), or cut it at a bound."""
        ...


class Pace:
    """One call's pace under ``rates``: the places of its connections open at once, and its two buckets."""

    def __init__(self, rates: EgressRates) -> None:
        self.rates = rates
        self._places = asyncio.Semaphore(rates.connections)
        self._waiting = 0
        self._new = TokenBucket(rates.connections_per_second, rates.connection_burst)
        self.bytes = TokenBucket(rates.bytes_per_second, rates.byte_burst)

    async def enter(self) -> tuple[str, str] | None:
        """A place, then a connection's token, each waited for at most ``rates.wait``: None once both are had
        (the place held until :meth:`leave`), else the refusal's outcome and message."""
        rates = self.rates
        if self._places.locked():
            if self._waiting >= rates.connections:
                return "concurrent_limit", (f"{rates.connections} connections are open and as many wait for one to "
                                            "end (RESPONSES_BRIDGE_DESKTOP_EGRESS_CONNECTIONS)")
            self._waiting += 1
            try:
                async with asyncio.timeout(rates.wait):
                    await self._places.acquire()
            except TimeoutError:
                return "concurrent_limit", (f"{rates.connections} connections stayed open for {rates.wait:g} s "
                                            "(RESPONSES_BRIDGE_DESKTOP_EGRESS_CONNECTIONS)")
            finally:
                self._waiting -= 1
        else:
            await self._places.acquire()  # a place is free: at once
        if self._new.delay(1) > rates.wait:
            self._places.release()
            return "connection_rate", (f"more than {rates.connection_burst} new connections at once and "
                                       f"{rates.connections_per_second:g} a second after "
                                       "(RESPONSES_BRIDGE_DESKTOP_EGRESS_CONNECTIONS_PER_SECOND)")
        delay = self._new.take(1)
        if delay > 0:
            try:
                await asyncio.sleep(delay)
            except BaseException:  # the call ended meanwhile: its place given back
                self._places.release()
                raise
        return None

    def leave(self) -> None:
        self._places.release()

    def counting(self, count: Callable[[int], None]) -> Callable[[int], None]:
        """``count`` that also takes the bytes from the bucket, for a relay that cannot wait between its chunks
        (an answer written over for secrets: answer.py): the relays after it wait for them instead."""
        def counted(size: int) -> None:
            count(size)
            self.bytes.take(size)

        return counted
