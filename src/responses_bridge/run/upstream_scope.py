"""The upstream a run's model turns go to, for the server tools that call that same upstream (image generation).

``drive`` knows the client and the credentials of a run's turns; the tool loop's leaves run several calls below it,
inside the run (``Run.next_turn``), whose protocol knows neither. Rather than thread both through every run and
every door, ``drive`` sets them here for the time it drives a run: a tool call then reaches the upstream exactly as
the turn that asked for it did (through Envoy with ``--upstream-via``, with the route's key or the client's own).
A context variable, so concurrent runs never see each other's, and the tasks a turn's calls run in inherit it.

It carries the run's chain too, for an upstream with replicas (replicas/): the keys a call's replica is picked by
(its own response id for the tool loop's turns and a resumed run, ``previous_response_id``, the conversation), read
by the replicated client on each call. Empty for an upstream with one server (nothing is picked).
"""

from __future__ import annotations

from contextvars import ContextVar, Token
from dataclasses import dataclass
from types import TracebackType

from .upstream import UpstreamClient


@dataclass(frozen=True, slots=True)
class UpstreamScope:
    client: UpstreamClient
    authorization: str | None
    chain: tuple[str, ...] = ()


_CURRENT: ContextVar[UpstreamScope | None] = ContextVar("responses_bridge_upstream_scope", default=None)


class upstream_scope:  # lower case: used as the function it was, ``with upstream_scope(client, authorization):``
    """Within this block, :func:`current_upstream` is ``client`` with ``authorization``. A class rather than a
    generator context manager: every run goes through it, and a generator's ``with`` costs a generator, its two
    resumptions and the StopIteration that ends it."""

    __slots__ = ("_scope", "_token")

    _token: Token[UpstreamScope | None]

    def __init__(self, client: UpstreamClient, authorization: str | None, chain: tuple[str, ...] = ()) -> None:
        self._scope = UpstreamScope(client, authorization, chain)

    def __enter__(self) -> None:
        self._token = _CURRENT.set(self._scope)

    def __exit__(self, kind: type[BaseException] | None, error: BaseException | None,
                 trace: TracebackType | None) -> None:
        _CURRENT.reset(self._token)


def current_upstream() -> UpstreamScope | None:
    """The upstream of the run being driven, or None outside ``drive``."""
    return _CURRENT.get()


def current_chain() -> tuple[str, ...]:
    """The chain keys of the run being driven (empty outside one, or on an upstream with one server)."""
    scope = _CURRENT.get()
    return scope.chain if scope is not None else ()
