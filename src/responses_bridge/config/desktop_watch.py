"""The bounds of watching a session's desktop live (services/agents/desktop_watch/, the HTTP door's
adapters/http/agents/desktop_watch_routes.py): how many may watch one session, how often its screen is looked at, how
long a link to the page stays good. A group of settings.py's :class:`Settings`, in a module of its own beside
automations.py."""

from __future__ import annotations

from pydantic import Field
from pydantic_settings import BaseSettings


class DesktopWatchSettings(BaseSettings):
    """A watched desktop costs one screenshot per look, whatever the number of its watchers (they share one feed);
    an idle screen is looked at once a second, a changing one at most ``desktop_watch_fps`` times."""

    desktop_watchers_per_session: int = Field(default=4, ge=1, le=100, description=(
        "watchers of one session's desktop at once (each an open frame stream of "
        "`/v1/agents/sessions/{id}/desktop/live`); one more is a 429"))
    desktop_watch_fps: float = Field(default=5.0, gt=0, le=30, description=(
        "frames a second a watched desktop is sent at most while its screen changes; an unchanged screen sends "
        "none (it is looked at once a second)"))
    desktop_watch_link_seconds: float = Field(default=300.0, gt=0, le=86400, description=(
        "how long a link to a session's live desktop (`desktop_live_url` of the session's retrieve, "
        "`responses-bridge desktop-url`) and the frame stream and calls its page names may be opened (the view "
        "tokens the page and the calls' refresh mint end with the link that opened the page); a stream opened "
        "before then runs until its watcher leaves or the desktop stops"))
