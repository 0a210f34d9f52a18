"""Byte sequences replaced in a stream that arrives cut anywhere: a secret the egress proxy writes over on its way
back into the sandbox (sandbox/egress_secrets.py), a stored chat completion's id swapped for the upstream's
(engine/chat_ids.py).

Each piece goes on at once but for the bytes at its end that may begin a sequence (a proper beginning of one),
held until the next piece says — never more, so a stream's event is not held back when it ends in anything else
(an SSE event ends in a blank line)."""

from __future__ import annotations

from collections.abc import Iterable


class StreamReplace:
    """Writes every ``old`` of ``pairs`` over with its ``new`` in the pieces fed in order."""

    __slots__ = ("_held", "_longest", "_pairs")

    def __init__(self, pairs: Iterable[tuple[bytes, bytes]]) -> None:
        self._pairs = [(old, new) for old, new in pairs if old]
        self._longest = max((len(old) for old, _ in self._pairs), default=1) - 1
        self._held = b""

    def feed(self, piece: bytes) -> bytes:
        """What may go on now of ``piece`` (with what was held back before it)."""
        data = self._held + piece
        for old, new in self._pairs:
            if old in data:
                data = data.replace(old, new)
        keep = self._partial_tail(data)
        self._held = data[len(data) - keep:] if keep else b""
        return data[:len(data) - keep] if keep else data

    def end(self) -> bytes:
        """What was held back, once the stream has ended: only ever the beginning of a sequence, never one whole."""
        held, self._held = self._held, b""
        return held

    def _partial_tail(self, data: bytes) -> int:
        """How many bytes at the end of ``data`` are a proper beginning of a sequence (0 almost always)."""
        for size in range(min(self._longest, len(data)), 0, -1):
            tail = data[-size:]
            if any(old.startswith(tail) for old, _ in self._pairs):
                return size
        return 0
