"""Watching a session's desktop live: what the HTTP door asks for a session's desktop (registry.py) and the one
frame feed per watched desktop its watchers share (feed.py). The door serves the page and the frames
(adapters/http/agents/desktop_watch_routes.py); whatever owns the sessions' desktops answers :class:`DesktopRegistry`.
"""

from .feed import FrameFeeds, WatchBounds
from .registry import NO_DESKTOPS, DesktopRegistry, Frame, NoDesktops, Watchable

__all__ = ["NO_DESKTOPS", "DesktopRegistry", "Frame", "FrameFeeds", "NoDesktops", "WatchBounds", "Watchable"]
