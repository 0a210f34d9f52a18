"""What a request will hold of the memory budget, judged before it holds it: its body from the body's bytes as they
arrive, what it loads besides (a chained history, a conversation's items, items named by ``item_reference``) from
what the store knows of it before loading it, and what it is charged for while it runs (its server tools' outputs).

A charge that tells the truth is what lets a budget of 1 GiB admit what 1 GiB of resident memory holds. Charged at a
flat 30 times its bytes (the costliest shape's), one 18 MiB input string (+54 MiB of RSS at its peak) was charged
512 MiB, and two such holders filled a 1 GiB budget; charged after it was loaded, one stored response of 40,000 tiny
items continued by twelve tiny requests was loaded twelve times at once (+403 MiB) before any charge said so. So:

* a body costs :data:`BODY_BYTE_COST` per byte plus :data:`BODY_OBJECT_COST` per JSON object (each ``{``, counted
  in the bytes as they arrive: one ``bytes.count`` per chunk): a long string costs three times its bytes (the
  bytes, the parsed string, the upstream body), a tiny item a thousand bytes however short (its dict, its keys, its
  parsed item and its translated message) — :func:`body_cost`;
* what a request loads costs :data:`LOADED_BYTE_COST` per stored byte plus :data:`LOADED_ITEM_COST` per item
  (:func:`loaded_cost`), predicted from the store's row sizes and counts (one cheap statement: ``length()`` of the
  rows, no row read) and **reserved before the rows are read** (:func:`reserve_loading`): a request whose history
  does not fit its holder's room waits in the budget's fair queue, or is refused naming its size, instead of
  loading first;
* what an ``item_reference`` becomes costs the same as a loaded item, for every occurrence
  (:func:`reserve_references`): 250 references to one 1 MiB item are 250 MiB of items in the input, the upstream
  body and the stored input, whatever the few bytes that named them — reserved before one is expanded;
* a server tool's output is held from its call to the request's end: :func:`charge` grows the request's holding at
  :data:`COST_PER_TOOL_OUTPUT_BYTE` as the output comes (it is in memory already: refusing it would save nothing).

Each constant is a sidecar's RSS growth per unit, measured with requests of that shape held in flight by a slow
model (``scripts/bench charges``, which prints charge ÷ growth per shape: 0.5–2 is the goal).

A context variable rather than a parameter: the bytes are loaded far below the doors (the store, the input's
preparation, the tool loop), by code that must not know which door, request or budget it serves; the doors set it
where they admit a body (services/tenancy/body_admission.py's users: adapters/http/limits.py,
adapters/extproc/request_phase.py, adapters/http/websocket/lanes.py). Where none is set (a worker, a test), a
charge or a reservation is a no-op.
"""

from __future__ import annotations

from contextvars import ContextVar, Token
from typing import Protocol

BODY_BYTE_COST = 3
"""Budget bytes per byte of a request body, whatever its shape: the bytes read, the parsed strings, the translated
upstream body. Measured: one 18 MiB input string held by a slow model grew a sidecar by 54 MiB at its peak (3.0
times); a 4 MiB image data URL or function call output, 3.0 times."""
BODY_OBJECT_COST = 1000
"""Budget bytes per JSON object (``{``) of a body besides its bytes: a dict, its keys and values as Python objects,
the parsed item, the translated message. Measured: 40,000 tiny input items in one body (1.2 MB) grew a sidecar by
44 MiB a request at its peak: 1,150 bytes an item, 1,090 of them charged (3 × 31 + 1,000)."""
LOADED_BYTE_COST = 3
"""Budget bytes per byte of stored JSON a request loads (the rows read, the items parsed, their translation)."""
LOADED_ITEM_COST = 900
"""Budget bytes per stored item a request loads besides its bytes. Measured: a stored response of 10,000 tiny items
(1.42 MB of rows) continued by a request held in flight grew a sidecar by 12.7 MiB (1,330 bytes an item: 3 × 142 +
900 charged); of 40,000 items, 47.4 MiB (1,240 an item)."""


def body_cost(chunk: bytes) -> int:
    """What ``chunk`` of a request body will cost held (its bytes, its objects)."""
    return BODY_BYTE_COST * len(chunk) + BODY_OBJECT_COST * chunk.count(b"{")


def loaded_cost(size: int, items: int) -> int:
    """What ``items`` stored items of ``size`` bytes in all will cost loaded and held."""
    return LOADED_BYTE_COST * size + LOADED_ITEM_COST * items


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

    @property
    def bounded(self) -> bool:
        """Whether there is a budget to reserve in (else what is loaded need not be measured first)."""

    def grow(self, size: int) -> None:
        """``size`` bytes more, at once, whatever the budget or the holder's share."""

    async def reserve(self, size: int, what: str) -> None:
        """``size`` bytes more before they are held: at once, or once the holder's room has them (the budget's
        fair queue), else the 503 naming ``what`` and its size."""


HOLDING: ContextVar[Chargeable | None] = ContextVar("memory_holding", default=None)
"""The current request's holding, set by its door."""


def charge(loaded: int, cost: int) -> None:
    """``loaded`` units just loaded for the current request (a tool's output's characters): its holding grows by
    what they will cost held (``cost`` each)."""
    if loaded > 0:
        holding = HOLDING.get()
        if holding is not None:
            holding.grow(loaded * cost)


def reserving() -> bool:
    """Whether the current request reserves what it loads (a door set its holding over a bounded budget): else the
    store loads without measuring first."""
    holding = HOLDING.get()
    return holding is not None and holding.bounded


async def reserve_loading(size: int, items: int, what: str) -> None:
    """Before the current request loads ``items`` stored items of ``size`` bytes (``what``: which, for the refusal,
    e.g. "previous_response_id 'resp_1'"): their cost reserved for it, waiting for room in its holder's fair place,
    or the budget's 503 naming their size — never loaded first."""
    if items > 0:
        holding = HOLDING.get()
        if holding is not None:
            await holding.reserve(loaded_cost(size, items), f"{what}: {items} items, {size} bytes stored")


async def reserve_references(size: int, items: int, what: str) -> None:
    """Before the current request expands ``items`` ``item_reference`` occurrences into ``size`` bytes of items'
    JSON (``what``: which, for the refusal): their cost reserved as loaded items' is, every occurrence counted —
    each becomes a whole item in the request's input, its upstream body and its stored input
    (protocol/responses/item_references.py) — waiting for room, or the budget's 503 (its 400 past what a caller may
    hold alone) naming their expanded size, never expanded first."""
    if items > 0:
        holding = HOLDING.get()
        if holding is not None:
            await holding.reserve(loaded_cost(size, items), f"{what}: {items} items, {size} bytes expanded")


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
