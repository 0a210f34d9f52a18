"""The sessions' desktops in this process: one per session whose agent has ``computer_use``, started on the
session's first computer call (not at its create: most sessions never call it, and a desktop is a browser, a few
hundred MiB), stopped when the session ends or is deleted, when it was unused for ``desktop_idle_seconds``, when it
yields to another session (below), or when the process stops.

Desktops are a pool of their own, shared by the fair-share rule of every pool (fairness/share.py, through
:class:`~responses_bridge.fairness.slots.FairSlots`): a desktop is a unit, held from its start until it stops (idle,
yielded, session end, failure: once its processes are gone), ``desktops_max`` units in the process,
``desktops_per_tenant`` a hard cap on what one holder holds. A desktop takes none of the code sandbox's slots (its
call is made with ``slot=False``: sandbox/runner.py, and a pod of the desktop pool on agent-sandbox): a code call
never waits behind a desktop, and a tenant gets its ``desktops_per_tenant`` however few code slots the machine has;
what one desktop holds is bounded by its own cgroup (its memory and processes: sandbox/desktop/).

The holder is the session's tenant; with auth off (``auth: none``, one tenant for every caller) it is the caller
whose turn makes the call, told apart as the memory share tells them apart (services/tenancy/identity.py's
``caller_holder``: the turn's ``Authorization``, hashed, never kept; callers sending none share the default tenant):
with auth off the per-tenant bound is a bound per caller key, not one bound for everybody.

A call that finds no unit waits in the pool's queue: when a desktop stops, its unit goes to the waiting holder
served least lately (desktop-seconds, decayed), first come first served within a holder — a holder whose sessions
have held desktops for long waits behind one that held none. While it waits, an **idle** desktop yields to it when
its holder (or the process) is at its bound: one whose session has no turn running (``turn_running``) and no call
on it, least recently used first — of the asking holder's own desktops when that holder is at its cap (another's
would not make room for it), of anyone's when the process is full. The yielded desktop is stopped (its unit goes
through the queue, so the least served waiter gets it, which is the asker unless another waits served less) and its
session's next call starts a fresh one, the model told why (``stopped``: ``yielded``). A desktop whose session's turn
runs — between two calls, or waiting on the client's approval — never yields (its page and sign-ins would be lost
mid-task). The wait lasts at most ``desktop_wait_seconds``, then :class:`DesktopBusy` says why, which the model is
told (it may try again); the queue is bounded (four waiters a unit, as every unit pool's: past it the newest waiter
of the holder holding and waiting most is refused).

The origins a session's client approved (computer/approvals.py) are kept here for the session's life, so a fresh
desktop of the same session (after an idle stop or a yield) starts with them approved: the client is not asked twice.

A desktop is a process of this server: a restart (or a takeover by another replica) loses it, and what the next
call finds is a fresh one (:meth:`DesktopPool.use` says so: ``fresh``).
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import AsyncIterator, Callable, Sequence
from dataclasses import dataclass, field
from typing import Protocol

import structlog

from ....fairness.share import Reason
from ....fairness.slots import FairSlots
from ....observability.metrics import DESKTOPS_LIVE, DESKTOPS_WAITING, DESKTOPS_YIELDED
from ....sandbox.desktop import Desktop, DesktopSettings, DesktopUnavailable
from ....sandbox.desktop.host import host_for
from ....sandbox.egress.policy import NetworkPolicy
from ...tenancy.identity import caller_holder

log = structlog.get_logger("responses_bridge.agents")


MAX_APPROVED = 1000  # a desktop remembers as many decided origins (sandbox/desktop/origins.py)
YIELD_LOOK = 0.2
"""Seconds between two looks, while a call waits, for an idle desktop that may yield to it (a session's turn ends
without telling the pool: its desktop becomes idle between two looks)."""


class DesktopBusy(Exception):
    """No desktop could be had within the wait: the bounds are full of other sessions' desktops."""


@dataclass(frozen=True, slots=True)
class DesktopBounds:
    """``per_tenant`` / ``total``: desktops running at once; ``idle``: seconds unused before one is stopped;
    ``wait``: seconds a call waits for room past the bounds."""

    per_tenant: int = 2
    total: int = 4
    idle: float = 300.0
    wait: float = 30.0


class DesktopMaker(Protocol):
    """What makes a session's desktop (not started) and says whether one can run here at all: the sandbox
    backend's (:class:`SandboxDesktops`); the pool's own rules (bounds, fair queue, idle stop) are the same for any."""

    def unavailable(self) -> str | None: ...

    def make(self, tenant: str, network: NetworkPolicy | None, origins: Sequence[str]) -> Desktop: ...


class SandboxDesktops:
    """Desktops where the server's sandbox backend runs them (sandbox/desktop/host.py): in its bubblewrap sandbox,
    or in pods of the agent-sandbox backend's desktop pool (``sandbox``: None, or a backend that runs none: no
    desktop here)."""

    def __init__(self, sandbox: object | None, settings: DesktopSettings) -> None:
        self._host = host_for(sandbox) if sandbox is not None else None
        self._backend = type(sandbox).__name__ if sandbox is not None else None
        self.settings = settings

    def unavailable(self) -> str | None:
        if self._host is None:
            return ("a desktop needs a sandbox backend that runs them (bubblewrap, or agent-sandbox with a desktop "
                    "pool), which this server does not run" + (f" (its sandbox backend is {self._backend})"
                                                               if self._backend else ""))
        return self._host.unavailable(self.settings.browser)

    def make(self, tenant: str, network: NetworkPolicy | None, origins: Sequence[str]) -> Desktop:
        assert self._host is not None  # unavailable() said None
        return Desktop(self._host, tenant=tenant, network=network, settings=self.settings, origins=origins)


@dataclass(slots=True)
class _Held:
    """A session's desktop (None while it starts), who it is for (``tenant``: whose session; ``holder``: whose
    bound its unit counts in) and when it was last used; ``unit``: it holds one of the pool's units (given back
    exactly once, :meth:`DesktopPool._let_go`)."""

    tenant: str
    holder: str = ""
    desktop: Desktop | None = None
    used: float = 0.0
    users: int = 0
    unit: bool = True
    lock: asyncio.Lock = field(default_factory=asyncio.Lock)


def busy_note(why: Reason, bounds: DesktopBounds, at_cap: bool) -> str:
    """What the model is told of a call that got no desktop: the tenant's own cap, the server's desktops all busy,
    or the queue of calls waiting for one full — nothing of what other tenants hold."""
    if why == "queue":
        return (f"No desktop is free: this server's {bounds.total} (RESPONSES_BRIDGE_DESKTOPS_MAX) are all in use "
                "and the queue of calls waiting for one is full (a full queue gives up the newest call of the "
                "project holding and waiting for the most). Try the computer again later.")
    which = (f"this project's {bounds.per_tenant} (RESPONSES_BRIDGE_DESKTOPS_PER_TENANT)" if at_cap
             else f"this server's {bounds.total} (RESPONSES_BRIDGE_DESKTOPS_MAX)")
    return (f"No desktop is free: {which} are all in use by other sessions whose turns are running, and none came "
            f"free within {bounds.wait:g} s. Try the computer again later.")


class DesktopPool:
    """The sessions' desktops of this process. ``sandbox``: the sandbox backend (None, or one that runs no
    desktop: :meth:`unavailable` says why); ``maker``: what makes the desktops instead (the backend's by
    default)."""

    def __init__(self, sandbox: object | None, bounds: DesktopBounds | None = None,
                 settings: DesktopSettings | None = None, clock: Callable[[], float] = time.monotonic,
                 maker: DesktopMaker | None = None, by_client_key: bool = False) -> None:
        self.bounds = bounds or DesktopBounds()
        self.by_client_key = by_client_key  # auth none: the caller's key tells holders apart (:meth:`holder`)
        # does the session have a turn running (the sessions' service's, set by the door)? None: not known here,
        # so a desktop is idle when no call is on it
        self.turn_running: Callable[[str], bool] | None = None
        self.settings = settings or DesktopSettings()
        self._maker = maker or SandboxDesktops(sandbox, self.settings)
        self._clock = clock
        # the units: ``total`` fixed here, the per-tenant cap and the wait read from ``bounds`` at each call
        self.slots = FairSlots(self.bounds.total, lambda tenant: self.bounds.per_tenant, what="desktops")
        self._held: dict[str, _Held] = {}
        # why a live session's desktop stopped (``idle``, ``failed``), until its next one starts: what the model is
        # told of the fresh one (calls.py)
        self.stopped: dict[str, str] = {}
        self.approved: dict[str, list[str]] = {}  # session id -> the origins its client approved
        self._reaper: asyncio.Task[None] | None = None

    def unavailable(self) -> str | None:
        """Why no desktop can run here, naming what to install or change (None: one can)."""
        return self._maker.unavailable()

    def running(self, holder: str | None = None) -> int:
        """Desktops running, starting or stopping (of ``holder``'s, or of all): the units held."""
        return self.slots.busy if holder is None else self.slots.held(holder)

    def holder(self, tenant: str, authorization: str | None) -> str:
        """Whose bound a desktop of ``tenant``'s session counts in, for a turn of the caller sending
        ``authorization``: the tenant; with auth off, the caller (the memory share's rule)."""
        return caller_holder(tenant, authorization) if self.by_client_key else tenant

    async def desktop_for(self, tenant: str, session_id: str) -> Desktop | None:
        """The session's running desktop, for a watcher of ``tenant``'s (the live view's registry,
        services/agents/desktop_watch/registry.py): another tenant's session, or one whose desktop is not running,
        has none."""
        held = self._held.get(session_id)
        return held.desktop if held is not None and held.tenant == tenant else None

    def has(self, session_id: str) -> bool:
        held = self._held.get(session_id)
        return held is not None and held.desktop is not None

    @contextlib.asynccontextmanager
    async def use(self, session_id: str, tenant: str, network: NetworkPolicy | None,
                  holder: str | None = None) -> AsyncIterator[tuple[Desktop, bool]]:
        """The session's desktop, started when it has none (``fresh``: True), held for the block: the idle timer
        does not stop a desktop in use, nor does it yield. ``holder``: whose bound a new one counts in
        (:meth:`holder`; the tenant by default). Raises :class:`DesktopBusy` (no room within the wait) or
        ``DesktopUnavailable`` (it cannot run here, or failed to start: why)."""
        held = self._held.get(session_id)
        if held is None:
            held = await self._admit(session_id, tenant, holder or tenant)
        held.users += 1
        try:
            async with held.lock:  # one call at a time drives a desktop, as a model's calls come
                fresh = held.desktop is None
                if fresh:
                    await self._start(session_id, tenant, held, network)
                assert held.desktop is not None
                try:
                    yield held.desktop, fresh
                finally:
                    held.used = self._clock()
        except BaseException:
            if held.desktop is None and held.users == 1:  # it never started: its unit is given back
                self._forget(session_id, held)
            raise
        finally:
            held.users -= 1

    async def _admit(self, session_id: str, tenant: str, holder: str) -> _Held:
        """A unit for the session's desktop, waiting in the fair queue (at most the bounds' ``wait``), idle
        desktops yielding to it meanwhile (:meth:`_take`)."""
        if self.slots.try_acquire(holder):
            why = None
        else:
            DESKTOPS_WAITING.inc()
            try:
                why = await self._take(session_id, holder)
            finally:
                DESKTOPS_WAITING.dec()
        if why is not None:
            at_cap = self.running(holder) >= self.bounds.per_tenant
            raise DesktopBusy(busy_note(why, self.bounds, at_cap))
        DESKTOPS_LIVE.inc()
        held = self._held.get(session_id)
        if held is not None:  # another call of the session's got it one meanwhile: this unit is not needed
            self._let_go(_Held(tenant, holder))  # a record of its own, holding the unit, given back at once
            return held
        held = self._held[session_id] = _Held(tenant, holder)
        return held

    async def _take(self, session_id: str, holder: str) -> Reason | None:
        """Wait in the queue for a unit; meanwhile, while ``holder`` (or the process) is at its bound, the least
        recently used idle desktop that would make room is stopped (``yielded``), one at a time, its unit given
        back to the queue. None once a unit is ``holder``'s, else why not."""
        taking = asyncio.ensure_future(self.slots.acquire_or_why(holder, self.bounds.wait))
        try:
            while not taking.done():
                victim = self._yielding(session_id, holder)
                if victim is not None:
                    log.info("desktop_yielded", session_id=victim, to=session_id)
                    DESKTOPS_YIELDED.inc()
                    await self.stop(victim, "yielded")
                await asyncio.wait({taking}, timeout=YIELD_LOOK)
        except BaseException:
            if taking.done() and not taking.cancelled() and taking.result() is None:
                self.slots.release(holder)  # granted as the wait was cancelled: given back
            else:
                taking.cancel()  # the pool's own wait gives back what it is granted meanwhile (share.py)
            raise
        return taking.result()

    def _yielding(self, asking: str, holder: str) -> str | None:
        """The session whose idle desktop yields to ``asking``'s call now, or None: ``holder`` at its cap — the
        least recently used of its own; else the process at its bound — the least recently used of any."""
        own = self.slots.held(holder) >= self.bounds.per_tenant
        if not own and self.slots.busy < self.slots.total:
            return None  # not held back by a bound (others wait before it): the queue decides
        running = self.turn_running
        idle = [(held.used, session_id) for session_id, held in self._held.items()
                if session_id != asking and held.desktop is not None and not held.users
                and (not own or held.holder == holder) and not (running is not None and running(session_id))]
        return min(idle)[1] if idle else None

    async def _start(self, session_id: str, tenant: str, held: _Held, network: NetworkPolicy | None) -> None:
        """The session's desktop started into ``held``. A session that ended meanwhile (:meth:`stop` found it
        starting and left it to this call) has its desktop stopped here, once started: no browser outlives its
        session, nor runs outside the bounds with its unit given back."""
        refused = self.unavailable()
        if refused is not None:
            raise DesktopUnavailable(refused)
        desktop = self._maker.make(tenant, network, self.approved.get(session_id, ()))
        await desktop.start()
        held.desktop = desktop
        if self._held.get(session_id) is not held:  # stopped while it started (the session ended)
            await self._stop_held(session_id, held, "ended")
            raise DesktopUnavailable("The session's desktop was stopped while it started: the session ended.")
        self.stopped.pop(session_id, None)
        log.info("desktop_started", session_id=session_id, tenant=tenant, browser_sandbox=desktop.browser_sandbox)
        self._reap()

    def approve(self, session_id: str, origin: str) -> None:
        """The session's client approved ``origin``: its later desktops start with it approved (at most
        ``MAX_APPROVED`` a session, the newest)."""
        kept = [known for known in self.approved.get(session_id, []) if known != origin]
        self.approved[session_id] = [*kept[-(MAX_APPROVED - 1):], origin]

    def _let_go(self, held: _Held) -> None:
        """``held``'s unit back to the pool (once): the least served waiting tenant's call gets it."""
        if held.unit:
            held.unit = False
            self.slots.release(held.holder)
            DESKTOPS_LIVE.dec()

    def _forget(self, session_id: str, held: _Held) -> None:
        if self._held.get(session_id) is held:
            del self._held[session_id]
        self._let_go(held)

    async def stop(self, session_id: str, why: str = "ended") -> None:
        """Stop the session's desktop (``why``: ``ended``, the session deleted; ``idle``; ``yielded``, to another
        session's call; ``failed``, it stopped answering): its processes gone, its unit freed. Never raises but for
        cancellation."""
        held = self._held.pop(session_id, None)
        if why == "ended":
            self.approved.pop(session_id, None)
        if held is None:
            return
        if why in ("idle", "yielded", "failed"):
            self.stopped[session_id] = why
        if held.desktop is None and held.users:
            return  # still starting: the call starting it stops it and gives its unit back (_start, use)
        await self._stop_held(session_id, held, why)

    async def _stop_held(self, session_id: str, held: _Held, why: str) -> None:
        """``held``'s desktop stopped, then its unit given back: it counts in the bounds until its processes are
        gone."""
        try:
            if held.desktop is not None:
                await held.desktop.stop()
                log.info("desktop_stopped", session_id=session_id, tenant=held.tenant, why=why)
        finally:
            held.desktop = None
            self._let_go(held)

    def _reap(self) -> None:
        if self._reaper is None or self._reaper.done():
            self._reaper = asyncio.create_task(self._idle_loop(), name="desktops-idle")

    async def _idle_loop(self) -> None:
        """Stop each desktop unused for the bounds' ``idle`` seconds; ends once no desktop is left."""
        idle = self.bounds.idle
        while self._held:
            await asyncio.sleep(max(0.05, min(idle / 4, 10.0)))
            now = self._clock()
            for session_id, held in list(self._held.items()):
                if held.desktop is not None and not held.users and now - held.used >= idle:
                    await self.stop(session_id, "idle")

    async def close(self) -> None:
        """Every desktop stopped: the process stops."""
        if self._reaper is not None:
            self._reaper.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._reaper
        for session_id in list(self._held):
            await self.stop(session_id, "server stopping")
