"""Which replica served each chain: a bounded map from a chain's keys to the replica that holds its prefix.

A Responses chain names its predecessor exactly — ``previous_response_id``, a conversation's id, the response
whose tool loop is on its next turn (a background run resumed after its process stopped included: its own id) —
so the replica that served turn n holds turn n's prompt and its answer in its prefix cache, and turn n+1's
prompt begins with them. Remembering the replica per key is all the affinity there is; no guess from the text.

Bounded: :data:`CAPACITY` keys per upstream, least recently used out first (about 200 bytes a key: some 10 MB at
the bound). A key pushed out costs its chain one turn's cache, found again by its prefix (``prefix.py``).
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Iterable

CAPACITY = 50_000
"""Chain keys remembered per upstream."""


class ChainMap:
    """Chain key -> replica key (its ``host:port``), least recently used out first."""

    __slots__ = ("_capacity", "_keys")

    def __init__(self, capacity: int = CAPACITY) -> None:
        self._capacity = capacity
        self._keys: OrderedDict[str, str] = OrderedDict()

    def __len__(self) -> int:
        return len(self._keys)

    def find(self, chain: Iterable[str]) -> tuple[str, str] | None:
        """The first of ``chain``'s keys bound to a replica: (key, replica), or None."""
        keys = self._keys
        for key in chain:
            replica = keys.get(key)
            if replica is not None:
                keys.move_to_end(key)
                return key, replica
        return None

    def bind(self, chain: Iterable[str], replica: str) -> None:
        """Every key of ``chain`` now names ``replica`` (a chain moved off a failed replica stays moved)."""
        keys = self._keys
        for key in chain:
            keys[key] = replica
            keys.move_to_end(key)
        while len(keys) > self._capacity:
            keys.popitem(last=False)

    def forget_replica(self, replica: str) -> int:
        """Nothing: a chain keeps naming its gone replica until its next turn moves it (once). Kept as a method so
        a replica that leaves for good (DNS no longer lists it) drops its keys at once; returns how many."""
        gone = [key for key, value in self._keys.items() if value == replica]
        for key in gone:
            del self._keys[key]
        return len(gone)
