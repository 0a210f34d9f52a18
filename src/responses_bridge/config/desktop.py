"""The agent tool ``computer_use``'s settings (services/agents/computer/): how many desktops may run, how long an
unused one lives, and how many screenshots each model call is shown. A group of settings.py's :class:`Settings`
(which sets the sources and the ``RESPONSES_BRIDGE_`` prefix), in a module of its own so settings.py stays within
the house's module size.
"""

from __future__ import annotations

from pydantic import Field
from pydantic_settings import BaseSettings


class DesktopToolSettings(BaseSettings):
    """Bounds of the sessions' desktops (one per session with ``computer_use``, started on its first call)."""

    desktops_per_tenant: int = Field(default=2, ge=1, description=(
        "desktops one tenant's sessions may have running at once on one process (each is a browser: about 200-450 "
        "MiB in a cgroup of its own; none takes a code sandbox slot), a hard cap; with auth none, a bound per "
        "caller key (the caller's Authorization, as the memory share tells callers apart); a session's first "
        "computer call past it is given the least recently used idle desktop (no turn of its session running) of "
        "the same tenant, else waits for one to stop (at most `desktop_wait_seconds`), then the model is told none "
        "is free"))
    desktops_max: int = Field(default=4, ge=1, description=(
        "desktops running at once on one process, every tenant's together: a pool of the fair-share rule, whose "
        "freed desktop goes to the waiting tenant served least lately (first come first served within a tenant; "
        "the queue holds 4 calls a desktop); past it the least recently used idle desktop of any tenant yields, "
        "else a call waits as above"))
    desktop_idle_seconds: float = Field(default=300.0, gt=0, description=(
        "a session's desktop that no computer call used for this long is stopped (its slot and memory freed); the "
        "session's next call starts a fresh one and the model is told so"))
    desktop_wait_seconds: float = Field(default=30.0, ge=0, description=(
        "how long a computer call waits for a desktop past `desktops_per_tenant` / `desktops_max` before the model "
        "is told none is free (it may try again)"))
    desktop_screenshots_kept: int = Field(default=3, ge=1, description=(
        "screenshots of computer calls (a session's desktop, or the Responses API's `computer` tool) that each "
        "model call is shown, the newest; each older one is sent as a one-line note instead, so a long session "
        "does not fill the model's context with images"))
    # a desktop's browser on its egress proxy (sandbox/egress/rates.py): what it holds and how fast, never a count
    # over its life (the code sandbox's code_egress_max_connections and code_egress_max_bytes do not apply to it)
    desktop_egress_connections: int = Field(default=64, ge=1, description=(
        "egress connections a desktop's browser holds open at once (the proxy serves one request a connection); "
        "one more waits for one to end, at most `desktop_egress_wait_seconds`, then is refused and the model told"))
    desktop_egress_connections_per_second: float = Field(default=50.0, gt=0, description=(
        "new egress connections a second of a desktop's browser, after a burst of "
        "`desktop_egress_connection_burst`: one past it waits for its turn, at most `desktop_egress_wait_seconds`, "
        "then is refused and the model told"))
    desktop_egress_connection_burst: int = Field(default=500, ge=1, description=(
        "new egress connections a desktop's browser may open at once before "
        "`desktop_egress_connections_per_second` paces them (a page of a few hundred images loads unslowed)"))
    desktop_egress_bytes_per_second: int = Field(default=8 << 20, ge=1, description=(
        "egress bytes a second (both ways, every connection together) of a desktop's browser, after a burst of "
        "`desktop_egress_byte_burst`: past it the transfer is slowed, never cut"))
    desktop_egress_byte_burst: int = Field(default=64 << 20, ge=1, description=(
        "egress bytes a desktop's browser may move at full speed before `desktop_egress_bytes_per_second` paces it"))
    desktop_egress_wait_seconds: float = Field(default=10.0, ge=0, description=(
        "how long a desktop's egress connection waits for a place (`desktop_egress_connections`) or for its turn "
        "(`desktop_egress_connections_per_second`) before it is refused"))
