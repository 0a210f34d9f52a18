"""The sessions' desktops in this process: one per session whose agent has ``computer_use``, started on the
session's first computer call (not at its create: most sessions never call it, and a desktop is a browser, a few
hundred MiB and a sandbox slot), stopped when the session ends or is deleted, when it was unused for
``desktop_idle_seconds``, or when the process stops.

Bounded twice over: each desktop is one long-lived call of the bubblewrap sandbox, so it holds one of the
sandbox's slots, which are shared by the fair-share rule of every pool (fair_share.py: a tenant past its share
waits behind the others); and on top, at most ``desktops_per_tenant`` of one tenant and ``desktops_max`` of all
run at once here. A call past either bound waits (at most ``desktop_wait_seconds``) for a desktop to stop, then
raises :class:`DesktopBusy`, which the model is told (it may try again): a desktop is never taken from another
session.

The origins a session's client approved (computer/approvals.py) are kept here for the session's life, so a fresh
desktop of the same session (after an idle stop) starts with them approved: the client is not asked twice.

A desktop is a process of this server: a restart (or a takeover by another replica) loses it, and what the next
call finds is a fresh one (:meth:`DesktopPool.use` says so: ``fresh``).
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field

import structlog

from ....sandbox.desktop import Desktop, DesktopSettings, DesktopUnavailable, desktop_unavailable
from ....sandbox.egress_policy import NetworkPolicy
from ....sandbox.runner import Sandbox

log = structlog.get_logger("responses_bridge.agents")


MAX_APPROVED = 1000  # a desktop remembers as many decided origins (sandbox/desktop/origins.py)


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


@dataclass(slots=True)
class _Held:
    """A session's desktop (None while it starts), who it is for and when it was last used."""

    tenant: str
    desktop: Desktop | None = None
    used: float = 0.0
    users: int = 0
    lock: asyncio.Lock = field(default_factory=asyncio.Lock)


class DesktopPool:
    """The sessions' desktops of this process. ``sandbox``: the bubblewrap sandbox (None, or another backend: no
    desktop runs here, :meth:`unavailable` says why)."""

    def __init__(self, sandbox: object | None, bounds: DesktopBounds | None = None,
                 settings: DesktopSettings | None = None, clock: Callable[[], float] = time.monotonic) -> None:
        self._sandbox = sandbox if isinstance(sandbox, Sandbox) else None
        self._backend = type(sandbox).__name__ if sandbox is not None else None
        self.bounds = bounds or DesktopBounds()
        self.settings = settings or DesktopSettings()
        self._clock = clock
        self._held: dict[str, _Held] = {}
        self._stopping: list[_Held] = []  # counted in the bounds until their processes are gone
        # why a live session's desktop stopped (``idle``, ``failed``), until its next one starts: what the model is
        # told of the fresh one (calls.py)
        self.stopped: dict[str, str] = {}
        self.approved: dict[str, list[str]] = {}  # session id -> the origins its client approved
        self._room = asyncio.Condition()
        self._reaper: asyncio.Task[None] | None = None

    def unavailable(self) -> str | None:
        """Why no desktop can run here, naming what to install or change (None: one can)."""
        if self._sandbox is None:
            return ("a desktop needs the bridge's bubblewrap sandbox, which this server does not run"
                    + (f" (its sandbox backend is {self._backend})" if self._backend else ""))
        return desktop_unavailable(self._sandbox, browser=self.settings.browser)

    def running(self, tenant: str | None = None) -> int:
        """Desktops running or starting (of ``tenant``'s sessions, or of all)."""
        return sum(1 for held in [*self._held.values(), *self._stopping] if tenant is None or held.tenant == tenant)

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
    async def use(self, session_id: str, tenant: str,
                  network: NetworkPolicy | None) -> AsyncIterator[tuple[Desktop, bool]]:
        """The session's desktop, started when it has none (``fresh``: True), held for the block: the idle timer
        does not stop a desktop in use. Raises :class:`DesktopBusy` (no room within the wait) or
        ``DesktopUnavailable`` (it cannot run here, or failed to start: why)."""
        held = self._held.get(session_id)
        if held is None:
            await self._make_room(tenant)
            held = self._held.setdefault(session_id, _Held(tenant))
        held.users += 1
        try:
            async with held.lock:  # one call at a time drives a desktop, as a model's calls come
                fresh = held.desktop is None
                if fresh:
                    refused = self.unavailable()
                    if refused is not None:
                        raise DesktopUnavailable(refused)
                    assert self._sandbox is not None
                    desktop = Desktop(self._sandbox, tenant=tenant, network=network, settings=self.settings,
                                      origins=self.approved.get(session_id, ()))
                    await desktop.start()
                    held.desktop = desktop
                    self.stopped.pop(session_id, None)
                    log.info("desktop_started", session_id=session_id, tenant=tenant,
                             browser_sandbox=desktop.browser_sandbox)
                    self._reap()
                assert held.desktop is not None
                try:
                    yield held.desktop, fresh
                finally:
                    held.used = self._clock()
        except BaseException:
            if held.desktop is None and held.users == 1:  # it never started: its room is given back
                await self._forget(session_id, held)
            raise
        finally:
            held.users -= 1

    def approve(self, session_id: str, origin: str) -> None:
        """The session's client approved ``origin``: its later desktops start with it approved (at most
        ``MAX_APPROVED`` a session, the newest)."""
        kept = [known for known in self.approved.get(session_id, []) if known != origin]
        self.approved[session_id] = [*kept[-(MAX_APPROVED - 1):], origin]

    async def _make_room(self, tenant: str) -> None:
        """Wait (at most the bounds' ``wait``) until this tenant and the process are within their bounds."""
        bounds = self.bounds

        def room() -> bool:
            return self.running() < bounds.total and self.running(tenant) < bounds.per_tenant

        async with self._room:
            if room():
                return
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._room.wait_for(room), bounds.wait)
            if not room():
                which = (f"this project's {bounds.per_tenant} (RESPONSES_BRIDGE_DESKTOPS_PER_TENANT)"
                         if self.running(tenant) >= bounds.per_tenant
                         else f"this server's {bounds.total} (RESPONSES_BRIDGE_DESKTOPS_MAX)")
                raise DesktopBusy(f"No desktop is free: {which} are all in use by other sessions, and none stopped "
                                  f"within {bounds.wait:g} s. Try the computer again later.")

    async def _forget(self, session_id: str, held: _Held) -> None:
        if self._held.get(session_id) is held:
            del self._held[session_id]
        async with self._room:
            self._room.notify_all()

    async def stop(self, session_id: str, why: str = "ended") -> None:
        """Stop the session's desktop (``why``: ``ended``, the session deleted; ``idle``; ``failed``, it stopped
        answering): its processes gone, its slot and room freed. Never raises but for cancellation."""
        held = self._held.pop(session_id, None)
        if why == "ended":
            self.approved.pop(session_id, None)
        if held is None:
            return
        if why in ("idle", "failed"):
            self.stopped[session_id] = why
        if held.desktop is not None:  # its room is given back once its processes are gone
            self._stopping.append(held)
            try:
                await held.desktop.stop()
            finally:
                self._stopping.remove(held)
            log.info("desktop_stopped", session_id=session_id, tenant=held.tenant, why=why)
        async with self._room:
            self._room.notify_all()

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
