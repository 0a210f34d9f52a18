"""The timeouts a rendered bootstrap sets, as settings (``envoy_*`` in config/settings.py, flags of ``envoy-config``).

Each one decides when Envoy, not the bridge, ends a request, so each is a setting with a documented default, and
Envoy's answer when one fires names it (local_replies.py): a client cut by a timeout is told which one and what
to do, never that the sidecar seems to be down. The request and route timeouts stay ``0s`` (none): LLM streams
last minutes; the health checks' timings are probes' cadence, not a limit on requests.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from ..config.settings import Settings


@dataclass(frozen=True)
class EnvoyTimeouts:
    """Seconds. ``stream_idle``: the connection manager's ``stream_idle_timeout`` (0: none), the longest silence
    of a request, both ways; ``message`` / ``max_message``: the ext_proc filter's ``message_timeout`` (how long
    Envoy waits for each processor answer) and ``max_message_timeout``; ``connect``: every cluster's
    ``connect_timeout``; ``request_headers``: the connection manager's ``request_headers_timeout`` (0: none), the
    HTTP door's ``http_head_timeout``, so a head a byte at a time is cut at the same bound on both doors;
    ``door_idle``: how long Envoy keeps an idle connection to the HTTP door, half the door's
    ``http_keepalive_timeout`` (the door must never close a connection Envoy is about to reuse: that request would
    be a 503). The defaults are the settings' (a unit test holds them equal)."""

    stream_idle: float = 300.0
    message: float = 30.0
    max_message: float = 300.0
    connect: float = 5.0
    request_headers: float = 10.0
    door_idle: float = 37.5

    @classmethod
    def from_settings(cls, settings: Settings) -> EnvoyTimeouts:
        return cls(stream_idle=settings.envoy_stream_idle_timeout, message=settings.envoy_message_timeout,
                   max_message=settings.envoy_max_message_timeout, connect=settings.envoy_connect_timeout,
                   request_headers=settings.http_head_timeout, door_idle=settings.http_keepalive_timeout / 2)


def duration(seconds: float) -> str:
    """A protobuf Duration as Envoy's YAML takes it: ``300s``, ``0.5s``."""
    text = f"{seconds:.3f}".rstrip("0").rstrip(".")
    return f"{text}s"


def shown(seconds: float) -> str:
    """Seconds as a message says them: ``300 s``, ``0.5 s``."""
    return f"{seconds:g} s"
