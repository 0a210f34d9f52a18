"""What a request loads beyond its body, charged to that request as it is loaded.

The memory budget (services/tenancy/memory_budget.py) charges a request for its body as the bytes arrive, before
anything is parsed. What the request then loads is not in its body: a ``previous_response_id`` chain's items, a
conversation's, items named by ``item_reference``, its server tools' outputs. Uncharged, one stored response of
40,000 tiny items (1.4 MB) continued by twelve tiny requests (each charged ~3.8 KB) grew a sidecar from 113 to
552 MiB, and the memory backstop, ranking requests by their charge, ended an honest 1 MB request first. So whoever
loads such bytes (the store; the tool loop for its tools' outputs: run/server_tools_calls.py) calls :func:`charge`
with their size: the request holding them (the one whose door set :data:`HOLDING`, for the request's life) grows
by their cost, at once and even past its share or the budget — the memory is held already, refusing it now would
save nothing — so that its holder's standing says what it really holds: its next requests wait for room or are
refused by its share (share.py), and the backstop (services/tenancy/memory_watch.py) ends its holder's
requests first.

A context variable rather than a parameter: the bytes are loaded far below the doors (the store, the input's
preparation, the tool loop), by code that must not know which door, request or budget it serves; the doors set it
where they reserve (adapters/http/limits.py, adapters/extproc/request_phase.py, adapters/http/websocket/lanes.py).
Where none is set (a worker, a test), a charge is a no-op.
"""

from __future__ import annotations

from contextvars import ContextVar, Token
from typing import Protocol

COST_PER_LOADED_BYTE = 8
"""Bytes held per byte of stored JSON a request loads, for the request's life: the items parsed, translated and
in the upstream body. Lower than a body's ``COST_PER_BODY_BYTE`` (30) because a stored item is already verbose
(an id, its type, its content parts: ~142 bytes for an input of ``{"role":"user","content":"x"}``, 32 bytes in a
body). Measured as a sidecar's RSS growth over the stored bytes its requests loaded (the budget's held gauge over
this cost), twelve streamed requests held in flight, each continuing one stored response of tiny items, the
costliest shape: 6.5 times for 10,000 items (8.9 MiB a request), 6.7 times for 40,000 (36.1 MiB a request); 8
leaves room for the allocator's slack."""


COST_PER_TOOL_OUTPUT_BYTE = 6
"""Bytes held per character of a server tool's output (an MCP call's, a search's, a program's result) from its
call to the request's end: the text in the response's output item, in the tool message of every later turn's
upstream body, that body's encoding, the events that carry it. Measured as a sidecar's RSS growth with 24
streamed requests held in flight, each after an MCP call answering 100,000 or 200,000 characters (its next call
running), less the same requests' growth with a 10-character answer: 5.9 times, both sizes."""


class Chargeable(Protocol):
    """What a request holds of the memory budget (``Held``, ``Reservation``), grown by what it loads; ``holder``:
    whose share it counts against."""

    holder: str

    def grow(self, size: int) -> None:
        """``size`` bytes more, at once, whatever the budget or the holder's share."""


HOLDING: ContextVar[Chargeable | None] = ContextVar("memory_holding", default=None)
"""The current request's holding, set by its door."""


def charge(loaded: int, cost: int = COST_PER_LOADED_BYTE) -> None:
    """``loaded`` bytes just loaded for the current request (stored JSON; ``cost``: of another kind): its holding
    grows by what they will cost held (``cost`` each)."""
    if loaded > 0:
        holding = HOLDING.get()
        if holding is not None:
            holding.grow(loaded * cost)


def current_holder() -> str | None:
    """Whose share the current request counts against (None: no request here): what it reserves besides, on its
    own, goes to the same holder — with ``auth: none`` a caller's key, which the code reserving cannot see."""
    holding = HOLDING.get()
    return holding.holder if holding is not None else None


def hold(holding: Chargeable) -> Token[Chargeable | None]:
    """``holding`` is the current request's from now (in this task and those it starts): :func:`release_hold`
    with the token when the request ends."""
    return HOLDING.set(holding)


def release_hold(token: Token[Chargeable | None]) -> None:
    HOLDING.reset(token)
