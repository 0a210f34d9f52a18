"""A client's large bytes in bounded pieces, with the event loop free between them.

Both doors share one event loop. Handing megabytes to a socket or to gRPC in one call (a 2 MB text delta, or the
terminal events, four of which repeat the whole text: ``output_text.done``, ``content_part.done``,
``output_item.done``, ``response.completed``) holds the loop for tens of milliseconds: aiohttp's chunk framing
and the socket copy, or protobuf's copy and gRPC's serialisation, each touching megabytes of fresh pages while
every other request of both doors waits. Cut into pieces of at most :data:`PIECE_BYTES`, with the loop free
between them, another request waits for one piece at most. Writes no larger than a piece (every per-token write)
are left as they are: the doors test one length.

A piece ends where an event ends whenever one ends inside it, so an event no longer than a piece is never cut
(see engine/sse.py: some clients' parsers lose an event whose lines arrive in different reads); only an event
longer than a piece is, as TCP cuts it anyway.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Iterable, Iterator

PIECE_BYTES = 64 * 1024
"""The most a door writes in one go: aiohttp's own high-water mark, and a few tens of microseconds of copying."""

EVENT_END = b"\n\n"  # an SSE event's blank line (a JSON-lines event, which ends in one newline, is never cut here)


def pieces(data: bytes, limit: int = PIECE_BYTES) -> Iterator[memoryview]:
    """``data`` as consecutive views (no copy) of at most ``limit`` bytes, each ending after the last blank
    line that falls inside it (else at ``limit``). Lazy, so each piece's search is made just before its write;
    linear: each byte is searched once."""
    view = memoryview(data)
    start, size = 0, len(data)
    while size - start > limit:
        blank = data.rfind(EVENT_END, start, start + limit)
        cut = blank + len(EVENT_END) if blank >= start else start + limit
        yield view[start:cut]
        start = cut
    yield view[start:]


def joined_pieces(parts: Iterable[bytes], limit: int = PIECE_BYTES) -> Iterator[bytes]:
    """The bytes of ``parts`` in order, as :func:`pieces` of each, small neighbours joined up to ``limit``: the
    bodies of the gRPC messages a door sends (never the parts joined whole). Always at least one, maybe empty."""
    held: list[memoryview] = []
    size = 0
    for part in parts:
        if not part:
            continue
        for piece in pieces(part, limit):
            if held and size + len(piece) > limit:
                yield b"".join(held)
                held, size = [], 0
            held.append(piece)
            size += len(piece)
    yield b"".join(held)


async def write_in_pieces(write: Callable[[memoryview], Awaitable[None]], data: bytes,
                          limit: int = PIECE_BYTES) -> None:
    """``await write(piece)`` for each of ``data``'s :func:`pieces`, letting the loop run other work between
    them (a write that does not wait for the socket to drain would not let it)."""
    for number, piece in enumerate(pieces(data, limit)):
        if number:
            await asyncio.sleep(0)
        await write(piece)
