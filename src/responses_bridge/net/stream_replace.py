"""Byte sequences replaced in a stream that arrives cut anywhere: a secret the egress proxy writes over on its way
back into the sandbox (sandbox/egress/domain_secrets.py), a stored chat completion's id swapped for the upstream's
(engine/chat_ids.py).

The work per byte is the same whatever the sequences: a tenant chooses its domain secrets (up to 32 of 8 KiB), and
checking each of them at each possible tail of each piece cost ~20 ms of CPU per 8 KiB read. Here one
Aho-Corasick automaton over all the sequences (ahocorasick-rs, built once per set: :class:`Sequences`) finds every
one in a single pass, in native code that releases the GIL; standard matching reports each match where it ends
first and searches on after it, linear in the bytes (its leftmost kinds are not, on input made to defeat them). A set
of sequences past :data:`GROUP_BYTES` is split over several automata, each built apart (the build holds the GIL).

Each piece goes on at once but for the bytes at its end that may begin a sequence (a proper beginning of one),
held until the next piece says — never more than the longest sequence less one byte, and in practice only a true
beginning, so a stream's event is not held back when it ends in anything else (an SSE event ends in a blank line).
The beginnings are found by each sequence's first ``LEAD`` bytes and checked whole for the first
``EXACT_CHECKS`` of them; past those, a stream built to make every position look like one is simply held from
there (its own latency, never more CPU).

A sequence that contains another would lose to it (the shorter one ends first) and come through in part:
sandbox/egress/policy.py refuses such secrets, and a set that has one anyway (a policy stored before that check) is
matched leftmost-longest instead, which is correct and, on input built against it, slower.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import TYPE_CHECKING

if TYPE_CHECKING:  # imported by the first set's build: an idle sidecar holds no egress secret nor stored chat id
    from ahocorasick_rs import BytesAhoCorasick, MatchKind

LEAD = 16
"""Bytes of a sequence's beginning looked for to find where one may begin: long enough to be rare in a stream."""
EXACT_CHECKS = 4
"""Possible beginnings checked whole per piece; past them the stream is held from the next one."""
GROUP_BYTES = 192 * 1024
"""The most bytes of sequences one automaton is built over. ahocorasick-rs builds holding the GIL, ~0.5 s per MB
of sequences here: the 5 MB of 32 secrets of 8 KiB with their encodings (sandbox/egress/domain_secrets.py) stalled every
coroutine of the process for 2.2 s in one build. In groups, no build holds it longer than ~0.1 s; a stream is
searched once per group (one for any ordinary set of secrets: a 48-character token and its encodings are ~0.5
KiB)."""


class Sequences:
    """The ``old`` of ``pairs`` to find and the ``new`` each is written over with, compiled once: immutable, shared
    by every stream of them (one per connection of a call, and across threads)."""

    __slots__ = ("_automata", "_beginnings", "_by_lead", "longest", "new")

    def __init__(self, pairs: Iterable[tuple[bytes, bytes]]) -> None:
        found: dict[bytes, bytes] = {}
        for old, new in pairs:
            if old and old not in found:  # the first of equal ones says what it becomes
                found[old] = new
        olds = list(found)
        self.new = [found[old] for old in olds]
        self.longest = max((len(old) for old in olds), default=0)
        self._automata = [(first, _compiled(group)) for first, group in _groups(olds)]
        self._by_lead: dict[bytes, list[bytes]] = {}
        for old in olds:
            if len(old) > LEAD:
                self._by_lead.setdefault(old[:LEAD], []).append(old)
        self._beginnings = frozenset(old[:size] for old in olds for size in range(1, min(len(old), LEAD)))

    def stream(self) -> StreamReplace:
        return StreamReplace(self)

    def matches(self, data: bytes) -> list[tuple[int, int, int]]:
        """(which, start, end) of every match in ``data``, in order, none overlapping: of several automata
        (:data:`GROUP_BYTES`), the leftmost, and of those starting together the longest."""
        if len(self._automata) == 1:
            return self._automata[0][1].find_matches_as_indexes(data)
        found = sorted(((first + which, start, end) for first, automaton in self._automata
                        for which, start, end in automaton.find_matches_as_indexes(data)),
                       key=lambda match: (match[1], match[1] - match[2]))
        kept: list[tuple[int, int, int]] = []
        for match in found:
            if not kept or match[1] >= kept[-1][2]:
                kept.append(match)
        return kept

    def cut(self, data: bytes, start: int) -> int:
        """The first position from ``start`` where the rest of ``data`` may be a proper beginning of a sequence
        (``len(data)``: none), found by the sequences' leads and checked whole for the first few."""
        end = len(data)
        at = max(start, end - self.longest + 1)
        checks = EXACT_CHECKS
        while at <= end - LEAD and self._by_lead:
            found = [where for lead in self._by_lead if (where := data.find(lead, at, end)) >= 0]
            if not found:
                break
            at = min(found)
            rest = data[at:]
            if checks == 0 or any(len(old) > len(rest) and old.startswith(rest)
                                  for old in self._by_lead[data[at:at + LEAD]]):
                return at
            checks -= 1
            at += 1
        for short in range(max(at, end - LEAD + 1, start), end):  # fewer than LEAD bytes left: looked up whole
            if data[short:] in self._beginnings:
                return short
        return end


def _automaton(olds: list[bytes], kind: MatchKind) -> BytesAhoCorasick:
    from ahocorasick_rs import BytesAhoCorasick, Implementation

    return BytesAhoCorasick(olds, matchkind=kind, implementation=Implementation.ContiguousNFA)


def _compiled(olds: list[bytes]) -> BytesAhoCorasick:
    """One group's automaton: standard matching, or leftmost-longest where one of them holds another."""
    from ahocorasick_rs import MatchKind

    automaton = _automaton(olds, MatchKind.Standard)
    return _automaton(olds, MatchKind.LeftmostLongest) if _contained(automaton, olds) else automaton


def _groups(olds: list[bytes]) -> list[tuple[int, list[bytes]]]:
    """``olds`` cut in order into groups of about :data:`GROUP_BYTES` (the index of each one's first, and it)."""
    groups: list[tuple[int, list[bytes]]] = []
    size = GROUP_BYTES
    for at, old in enumerate(olds):
        if size + len(old) > GROUP_BYTES:
            groups.append((at, []))
            size = 0
        groups[-1][1].append(old)
        size += len(old)
    return groups


def _contained(automaton: BytesAhoCorasick, olds: list[bytes]) -> bool:
    """Whether one of ``olds`` (all different) holds another, found by the automaton in one pass over them: a
    sequence inside another misses its first byte or its last, so it is found in what is left of it without one
    of them, where the sequence itself is too long to be. Linear in their bytes (comparing each pair took ~16 s
    for the 400 sequences of 32 secrets of 8 KiB and their encodings: sandbox/egress/domain_secrets.py)."""
    return any(automaton.find_matches_as_indexes(old[1:]) or automaton.find_matches_as_indexes(old[:-1])
               for old in olds if len(old) > 1)


class StreamReplace:
    """Writes every ``old`` of ``pairs`` (or of prebuilt :class:`Sequences`) over with its ``new`` in the pieces
    fed in order."""

    __slots__ = ("_held", "_sequences")

    def __init__(self, pairs: Iterable[tuple[bytes, bytes]] | Sequences) -> None:
        self._sequences = pairs if isinstance(pairs, Sequences) else Sequences(pairs)
        self._held = b""

    def feed(self, piece: bytes) -> bytes:
        """What may go on now of ``piece`` (with what was held back before it)."""
        data = self._held + piece if self._held else piece
        written, cut = self._written(data, final=False)
        self._held = data[cut:]
        return written

    def end(self) -> bytes:
        """What was held back, once the stream has ended (a sequence in it written over too)."""
        held, self._held = self._held, b""
        return self._written(held, final=True)[0] if held else b""

    def _written(self, data: bytes, *, final: bool) -> tuple[bytes, int]:
        """``data`` up to where the rest may still begin a sequence (all of it if ``final``), each sequence in
        it written over; and that position."""
        sequences = self._sequences
        cut = len(data) if final else sequences.cut(data, 0)
        out: list[bytes] = []
        at = 0
        for which, start, end in sequences.matches(data):
            if start >= cut:  # a match there may yet be part of a longer one, or not be one: the next piece says
                break
            out.append(data[at:start])
            out.append(sequences.new[which])
            at = end
            if end > cut:
                cut = sequences.cut(data, end)
        if not out:
            return (data[:cut] if cut < len(data) else data), cut
        out.append(data[at:cut])
        return b"".join(out), cut
