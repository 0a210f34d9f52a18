"""The sidecar's own upstream calls bounded: bridge-wide, per tenant by the fair-share rule, and per response.

Nothing bounded them: the connector's limit was 0, so one response whose model spawned 64 subagents held 64
upstream calls at once, and a few such responses held every connection the upstream would take. Every model turn the
driver makes (drive.py: the HTTP door's, background runs', WebSocket turns', each subagent's) now takes a place
first:

* one of the response's own places (``RESPONSES_BRIDGE_UPSTREAM_RESPONSE_CONNECTIONS``): a response's turn and its
  subagents' turns share them, so one response never opens more at once — the rest of its subagents wait for its
  own earlier calls to end;
* one of the bridge's (``RESPONSES_BRIDGE_UPSTREAM_MAX_CONNECTIONS``), given by the fair-share rule of every shared
  pool (fairness/share.py): alone a tenant may hold ``RESPONSES_BRIDGE_UPSTREAM_TENANT_CONNECTIONS`` of them (0: half
  where tenants are told apart, all of them with ``auth: none``); with all of them busy, calls wait in a bounded
  queue (:data:`QUEUE_PER_PLACE` per place) and a place given back goes to the waiting tenant served least lately.
  A call in flight is never taken back for fairness (its work would be thrown away). A call of a synchronous
  request that finds none within the connect timeout, or past the queue's bound, fails with 503
  ``upstream_connections_exceeded`` saying which (a subagent's turn: that subagent fails saying so, as its result).
  A durable run's call (a background response, a session's turn: ``durable``) does not fail for want of a place:
  it waits on at its tenant's place in the queue — the run is suspended at its step boundary and resumes when a
  place comes (refused by the full queue, it asks again after :data:`DURABLE_RETRY` s).

The place is held from the call's start until its answer is read or dropped; compaction, token counting and the
model list (short calls, bounded by the answer size) do not take one.
"""

from __future__ import annotations

import asyncio
import itertools
from collections import deque
from collections.abc import Callable
from contextlib import AbstractAsyncContextManager
from types import TracebackType

from ..engine.wire import UpstreamRequest
from ..fairness.share import Reason
from ..fairness.slots import FairSlots
from ..observability import timing
from ..protocol.errors import APIError
from .upstream import UpstreamAnswer, UpstreamClient, UpstreamFailure, UpstreamResponse

EXCEEDED = "upstream_connections_exceeded"
QUEUE_PER_PLACE = 4
"""Calls that may wait for a place, per place: past it the tenant waiting most loses its newest wait."""
DURABLE_RETRY = 1.0
"""Seconds before a durable run's call refused by the full queue asks again (it never fails for want of a place)."""


class UpstreamGate:
    """The bridge's places for upstream calls (one per process), and how many one response may hold."""

    def __init__(self, total: int, share: Callable[[str], int], per_response: int, wait: float) -> None:
        self.slots = FairSlots(total, share, what="upstream connections", queue=QUEUE_PER_PLACE * total)
        self.per_response = per_response
        self.wait = wait

    def around(self, client: UpstreamClient, tenant: str, *, durable: bool = False) -> UpstreamClient:
        """``client`` with this gate on its model turns, for one response of ``tenant``'s (``durable``: a run that
        resumes, which waits for a place rather than fail); a client already gated (a subagent's turn, driven with
        its root's) keeps its root's places."""
        if isinstance(client, GatedUpstream):
            return client
        return GatedUpstream(client, self, tenant, durable)

    async def place(self, tenant: str, durable: bool) -> Reason | None:
        """One of the bridge's places for ``tenant``'s call (after :meth:`FairSlots.try_acquire` failed): None once
        held, else why not. A durable run's call waits until one comes: it is never refused."""
        if not durable:
            return await self.slots.acquire_or_why(tenant, self.wait)
        for _ in itertools.count():  # only the full queue refuses it: asked again a moment later
            if await self.slots.acquire_or_why(tenant, None) is None:
                break
            await asyncio.sleep(DURABLE_RETRY)
        return None

    def refused(self, why: Reason = "share") -> APIError:
        """The 503 of a call that got no place: the tenant's share when it holds at least its fair share, the
        bridge's places when it holds less (others' calls it may not take back), the queue when that is full."""
        total = self.slots.total
        if why == "share":
            said = (f"This tenant's upstream calls hold their fair share of the bridge's {total} upstream "
                    "connections (RESPONSES_BRIDGE_UPSTREAM_MAX_CONNECTIONS, RESPONSES_BRIDGE_UPSTREAM_TENANT_"
                    f"CONNECTIONS) and none of them ended within the {self.wait:g} s this call waited")
        elif why == "queue":
            said = (f"The bridge's {total} upstream connections (RESPONSES_BRIDGE_UPSTREAM_MAX_CONNECTIONS) are all "
                    f"busy and its queue of {self.slots.pool.queue} waiting calls is full (a full queue gives up "
                    "the newest call of the tenant holding and waiting for the most)")
        else:
            said = (f"The bridge's {total} upstream connections (RESPONSES_BRIDGE_UPSTREAM_MAX_CONNECTIONS) stayed "
                    f"busy with other calls for the {self.wait:g} s this call waited (a freed one goes to the "
                    "waiting tenant served least lately; calls in flight are never ended for it)")
        return APIError(503, said + "; retry shortly.", type="server_error", code=EXCEEDED)


class GatedUpstream:
    """An :class:`UpstreamClient` whose chat calls take a place of the response's and one of the bridge's. The
    response's places are a count, with waiters only once they are all taken (no lock made per response)."""

    __slots__ = ("_client", "_gate", "_open", "_waiting", "durable", "replicated", "tenant")

    def __init__(self, client: UpstreamClient, gate: UpstreamGate, tenant: str, durable: bool = False) -> None:
        self._client = client
        self.replicated = getattr(client, "replicated", False)  # a subagent's run, driven with it, picks too
        self._gate = gate
        self.tenant = tenant
        self.durable = durable
        self._open = 0  # the response's calls holding a place
        self._waiting: deque[asyncio.Future[None]] | None = None  # made once the places are all taken

    async def start(self) -> None:
        await self._client.start()

    async def close(self) -> None:
        await self._client.close()

    def chat(self, call: UpstreamRequest, authorization: str | None) -> AbstractAsyncContextManager[UpstreamAnswer]:
        return _GatedChat(self, call, authorization)

    async def read_answer(self, response: UpstreamResponse) -> bytes:
        return await self._client.read_answer(response)

    def post_json(self, path: str, body: bytes, authorization: str | None, *,
                  timeout: float | None = None) -> AbstractAsyncContextManager[UpstreamResponse]:
        return self._client.post_json(path, body, authorization, timeout=timeout)

    def get(self, path: str, authorization: str | None) -> AbstractAsyncContextManager[UpstreamResponse]:
        return self._client.get(path, authorization)

    async def _take_place(self) -> None:
        """One of the response's places: at once while one is free, else the first given back (in turn)."""
        if self._open < self._gate.per_response and not self._waiting:
            self._open += 1
            return
        waiting = self._waiting = self._waiting or deque()
        waiter = asyncio.get_running_loop().create_future()
        waiting.append(waiter)
        try:
            with timing.waiting("response upstream connections"):  # the response's own places, in its timing
                await waiter  # the place is handed over by _give_place, already counted
        except BaseException:
            if waiter.done() and not waiter.cancelled():
                self._give_place()  # handed over as it was cancelled: passed on
            elif waiter in waiting:  # not passed over yet (_give_place skips a cancelled one)
                waiting.remove(waiter)
            raise

    def _give_place(self) -> None:
        while self._waiting:
            waiter = self._waiting.popleft()
            if not waiter.done():
                waiter.set_result(None)  # the place goes to it, still counted
                return
        self._open -= 1


class _GatedChat:
    """One chat call of a :class:`GatedUpstream`: its places taken on entry, given back on exit, however it ends."""

    __slots__ = ("_authorization", "_call", "_inner", "_owner")

    def __init__(self, owner: GatedUpstream, call: UpstreamRequest, authorization: str | None) -> None:
        self._owner = owner
        self._call = call
        self._authorization = authorization
        self._inner: AbstractAsyncContextManager[UpstreamAnswer] | None = None

    async def __aenter__(self) -> UpstreamAnswer:
        owner = self._owner
        gate = owner._gate
        if owner._open < gate.per_response and not owner._waiting:  # a place free: no coroutine of its own
            owner._open += 1
        else:
            await owner._take_place()
        try:
            if not gate.slots.try_acquire(owner.tenant):
                why = await gate.place(owner.tenant, owner.durable)
                if why is not None:
                    raise UpstreamFailure(gate.refused(why))
        except BaseException:
            owner._give_place()
            raise
        try:
            inner = self._inner = owner._client.chat(self._call, self._authorization)
            return await inner.__aenter__()
        except BaseException:
            self._inner = None
            self._leave()
            raise

    async def __aexit__(self, kind: type[BaseException] | None, error: BaseException | None,
                        trace: TracebackType | None) -> bool | None:
        inner, self._inner = self._inner, None
        try:
            return await inner.__aexit__(kind, error, trace) if inner is not None else None
        finally:
            self._leave()

    def _leave(self) -> None:
        owner = self._owner
        owner._gate.slots.release(owner.tenant)
        owner._give_place()
