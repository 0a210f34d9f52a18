"""One frame feed per watched desktop, shared by its watchers: the cost of watching is bounded by the desktop, not
by the number of watchers.

A feed takes a screenshot at most ``fps`` times a second while someone watches, and publishes it only when its
bytes differ from the last one (the same screen encodes to the same JPEG): an unchanged screen sends nothing. While
the screen stays the same the feed looks less often, the interval doubling up to ``idle_interval``, so an idle
desktop costs a screenshot a second, not ``fps``. Each watcher holds at most the newest frame: one slower than the
feed skips the frames it could not take (it never queues them), and every watcher of a desktop shares the one
``bytes`` object. The last frame is sent again after ``keepalive`` seconds without a change, so a watcher that
has left is noticed (its write fails) and its place freed. At most ``watchers`` watch one session at once; past
that a 429.

A screenshot that fails (the desktop stopped: its idle timeout, its session's end) asks the registry again: a
desktop started since (the session's next call) is followed on; none, and the feed ends, and so do its watchers'
streams.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from typing import Any

import structlog

from ....protocol.errors import APIError, not_found
from .registry import DesktopRegistry, Watchable

log = structlog.get_logger("responses_bridge.desktop_watch")


@dataclass(frozen=True, slots=True)
class WatchBounds:
    """``watchers``: watchers of one session at once; ``fps``: screenshots a second at most while the screen
    changes; ``idle_interval``: the longest between two screenshots while it does not; ``keepalive``: the last
    frame sent again after this long unchanged."""

    watchers: int = 4
    fps: float = 5.0
    idle_interval: float = 1.0
    keepalive: float = 10.0

    @classmethod
    def of(cls, settings: Any) -> WatchBounds:
        """From config/desktop_watch.py's settings."""
        return cls(watchers=settings.desktop_watchers_per_session, fps=settings.desktop_watch_fps)


def no_desktop(session_id: str) -> APIError:
    """The 404 of a session with no running desktop, or of another tenant's session (told apart from neither)."""
    return not_found(f"No desktop is running for session '{session_id}': its environment has no desktop, the desktop "
                     "has not started yet or has stopped, or the session does not exist.", param="session_id",
                     code="desktop_not_found")


def too_many_watchers(limit: int) -> APIError:
    return APIError(429, f"Too many watchers of this session's desktop: at most {limit} at once. Close a view, or "
                    "retry when one has closed.", type="requests", code="rate_limit_exceeded")


class FrameFeed:
    """The newest frame of one desktop (``jpeg``, ``version``), while it has watchers."""

    def __init__(self, desktop: Watchable, lookup: Callable[[], Awaitable[Watchable | None]],
                 bounds: WatchBounds) -> None:
        self.desktop = desktop
        self.jpeg: bytes | None = None
        self.version = 0
        self.ended = False
        self.watchers = 0
        self._lookup = lookup
        self._bounds = bounds
        self._changed = asyncio.Event()
        self._task: asyncio.Task[None] | None = None

    def start(self) -> None:
        if self._task is None:
            self._task = asyncio.create_task(self._poll(), name="desktop-watch-feed")

    async def stop(self) -> None:
        task, self._task = self._task, None
        if task is not None:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
        self._end()

    def end(self) -> None:
        """No more frames: the watchers' streams end with the last one (the screenshots stop)."""
        if self._task is not None:
            self._task.cancel()
        self._end()

    def _end(self) -> None:
        self.ended = True
        self._changed.set()

    def _publish(self, jpeg: bytes) -> None:
        self.jpeg = jpeg
        self.version += 1
        changed, self._changed = self._changed, asyncio.Event()
        changed.set()

    async def _poll(self) -> None:
        shortest = 1.0 / self._bounds.fps
        wait = shortest
        while True:
            try:
                jpeg = (await self.desktop.screenshot()).jpeg
            except Exception as error:  # noqa: BLE001 - whatever the desktop raised, it stopped: a new one, or the end
                found = await self._lookup()
                if found is None or found is self.desktop:
                    log.info("desktop_watch_ended", reason=str(error)[:200])
                    self._end()
                    return
                self.desktop = found
                continue
            if jpeg != self.jpeg:
                self._publish(jpeg)
                wait = shortest
            else:
                wait = min(wait * 2, max(shortest, self._bounds.idle_interval))
            await asyncio.sleep(wait)

    async def frames(self) -> AsyncIterator[bytes]:
        """Each new frame as it comes (the newest only, for a watcher slower than the feed), the last one again
        after ``keepalive`` unchanged; ends when the desktop has."""
        seen = 0
        while True:
            changed = self._changed
            if self.version != seen and self.jpeg is not None:
                seen = self.version
                yield self.jpeg
                continue
            if self.ended:
                return
            try:
                await asyncio.wait_for(changed.wait(), self._bounds.keepalive)
            except TimeoutError:
                if self.jpeg is not None:
                    yield self.jpeg


class FrameFeeds:
    """The feeds of the desktops being watched in this process, by tenant and session."""

    def __init__(self, registry: DesktopRegistry, bounds: WatchBounds) -> None:
        self.registry = registry
        self.bounds = bounds
        self._feeds: dict[tuple[str, str], FrameFeed] = {}

    async def desktop(self, tenant: str, session_id: str) -> Watchable:
        """The session's running desktop, or its 404."""
        found = await self.registry.desktop_for(tenant, session_id)
        if found is None:
            raise no_desktop(session_id)
        return found

    @contextlib.asynccontextmanager
    async def watch(self, tenant: str, session_id: str) -> AsyncIterator[FrameFeed]:
        """The session's feed for one watcher, for as long as the block runs: a 404 without a running desktop, a
        429 past the bound of watchers; the feed's screenshots stop with its last watcher."""
        key = (tenant, session_id)
        feed = self._feeds.get(key)
        if feed is None or feed.ended:
            desktop = await self.desktop(tenant, session_id)
            feed = self._feeds.get(key)  # another watcher may have made it meanwhile
            if feed is None or feed.ended:
                feed = self._feeds[key] = FrameFeed(
                    desktop, lambda: self.registry.desktop_for(tenant, session_id), self.bounds)
        if feed.watchers >= self.bounds.watchers:
            raise too_many_watchers(self.bounds.watchers)
        feed.watchers += 1
        feed.start()
        try:
            yield feed
        finally:
            feed.watchers -= 1
            if feed.watchers == 0:
                if self._feeds.get(key) is feed:
                    del self._feeds[key]
                await feed.stop()

    def end_all(self) -> None:
        """Every feed ended now (the door drains: an open view must not hold the drain until its deadline); the
        watchers' streams end with their last frame and free their places as they do."""
        for feed in self._feeds.values():
            feed.end()

    async def close(self) -> None:
        """Every feed ended (the door is shutting down): each watcher's stream ends with its last frame."""
        feeds, self._feeds = list(self._feeds.values()), {}
        for feed in feeds:
            await feed.stop()

    def watching(self, tenant: str, session_id: str) -> int:
        """Watchers of the session's desktop now."""
        feed = self._feeds.get((tenant, session_id))
        return feed.watchers if feed is not None else 0
