"""The upstream a run's model turns go to, for the server tools that call that same upstream (image generation).

``drive`` knows the client and the credentials of a run's turns; the tool loop's leaves run several calls below it,
inside the run (``Run.next_turn``), whose protocol knows neither. Rather than thread both through every run and
every door, ``drive`` sets them here for the time it drives a run: a tool call then reaches the upstream exactly as
the turn that asked for it did (through Envoy with ``--upstream-via``, with the route's key or the client's own).
A context variable, so concurrent runs never see each other's, and the tasks a turn's calls run in inherit it.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from contextvars import ContextVar
from dataclasses import dataclass

from .upstream import UpstreamClient


@dataclass(frozen=True, slots=True)
class UpstreamScope:
    client: UpstreamClient
    authorization: str | None


_CURRENT: ContextVar[UpstreamScope | None] = ContextVar("responses_bridge_upstream_scope", default=None)


@contextmanager
def upstream_scope(client: UpstreamClient, authorization: str | None) -> Iterator[None]:
    """Within this block, :func:`current_upstream` is ``client`` with ``authorization``."""
    token = _CURRENT.set(UpstreamScope(client, authorization))
    try:
        yield
    finally:
        _CURRENT.reset(token)


def current_upstream() -> UpstreamScope | None:
    """The upstream of the run being driven, or None outside ``drive``."""
    return _CURRENT.get()
