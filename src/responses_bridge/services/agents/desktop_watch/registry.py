"""What the live view needs of a session's desktop, and how it finds one: two small Protocols, so the view wires to
whatever keeps the sessions' desktops (one per session) without importing it.

:class:`Watchable` is what ``sandbox/desktop``'s ``Desktop`` already is (``width``, ``height``, ``screenshot()``
returning a value with ``jpeg``): a running desktop is handed over as it is, with no adapter. The registry answers
by tenant and session: a session of another tenant, or one whose desktop is not running, is ``None`` (the door's
404), so no watcher can tell another tenant's session from one that does not exist.
"""

from __future__ import annotations

from typing import Protocol


class Frame(Protocol):
    """One screenshot: a JPEG of the whole screen."""

    @property
    def jpeg(self) -> bytes: ...


class Watchable(Protocol):
    """A running desktop, as a watcher sees it: its screen's size and a screenshot taken now (no waiting for the
    screen to settle). ``screenshot`` raises once the desktop has stopped."""

    @property
    def width(self) -> int: ...

    @property
    def height(self) -> int: ...

    async def screenshot(self) -> Frame: ...


class DesktopRegistry(Protocol):
    """The sessions' running desktops, by tenant: what the HTTP door asks on every watch request."""

    async def desktop_for(self, tenant: str, session_id: str) -> Watchable | None: ...


class NoDesktops:
    """The registry of a process that runs no desktop: every session's is ``None``."""

    async def desktop_for(self, tenant: str, session_id: str) -> Watchable | None:
        return None


NO_DESKTOPS = NoDesktops()
