"""What each replica was sent lately, as hashes of its prompts' blocks: the prefix a chainless request shares
with each replica's cache, guessed the way llm-d's approximate scorer and SGLang's router guess it.

A backend's prefix cache (vLLM's automatic prefix caching, SGLang's radix tree) keeps the KV of fixed-size blocks
of a prompt, each keyed by a hash of everything before it: one changed byte early and every later block misses.
The index does the same over the rendered request's bytes (the Chat Completions body: its model, then its
messages, system and instructions first, in the order the backend renders them): block i's key is the hash of
block i and block i-1's key, so a request's matching prefix with a replica is the run of its first keys the
replica's set holds. Python's ``hash`` of bytes (SipHash) is enough: the keys never leave the process.

Bounded: :data:`BLOCKS_PER_REPLICA` keys per replica, least recently used out first (an int key in an ordered
dict, about 100 bytes: some 1.6 MB per replica), and at most :data:`MAX_BLOCKS` blocks of one request are hashed.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Sequence

BLOCK_BYTES = 512
"""Bytes of the rendered body per block (vLLM's 16-token block is about 64 bytes: coarser here, 8 times fewer
hashes, the match still exact to within one block)."""
MAX_BLOCKS = 8192
"""Blocks of one request hashed at most (its first 4 MiB): past them a prompt's tail is not scored."""
BLOCKS_PER_REPLICA = 16_384
"""Block keys remembered per replica (8 MiB of prompt bytes)."""


def block_keys(body: bytes, block: int = BLOCK_BYTES, limit: int = MAX_BLOCKS) -> list[int]:
    """The chained keys of ``body``'s whole blocks (a partial last block is not a block the backend keeps)."""
    keys: list[int] = []
    key = 0
    end = min(len(body) // block, limit) * block
    view = memoryview(body)
    for start in range(0, end, block):
        key = hash((key, view[start:start + block]))  # a read-only view hashes as its bytes, uncopied
        keys.append(key)
    return keys


class PrefixIndex:
    """One replica's recently sent blocks, least recently used out first."""

    __slots__ = ("_blocks", "_capacity")

    def __init__(self, capacity: int = BLOCKS_PER_REPLICA) -> None:
        self._capacity = capacity
        self._blocks: OrderedDict[int, None] = OrderedDict()

    def __len__(self) -> int:
        return len(self._blocks)

    def matched(self, keys: Sequence[int]) -> int:
        """How many of ``keys``' first blocks this replica holds, in a row."""
        blocks = self._blocks
        count = 0
        for key in keys:
            if key not in blocks:
                break
            count += 1
        return count

    def add(self, keys: Sequence[int]) -> None:
        """``keys`` were sent here: the backend holds them now (the most recent last)."""
        blocks = self._blocks
        for key in keys:
            blocks[key] = None
            blocks.move_to_end(key)
        while len(blocks) > self._capacity:
            blocks.popitem(last=False)

    def clear(self) -> None:
        """The replica failed: whatever it held is not counted on (a restarted server's cache is empty)."""
        self._blocks.clear()
