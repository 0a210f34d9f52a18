"""The entries of a per-process cache of unpacked trees (a container's skills: skill_cache.py; an environment's
packages: environment_packages.py), and their eviction: a tree stays while a call binds it and, once none does,
until the cache is past its byte budget, least recently used first."""

from __future__ import annotations

import asyncio
from dataclasses import dataclass
from pathlib import Path

from ..sandbox.trees import remove_tree


@dataclass(slots=True)
class TreeEntry:
    """One unpacked tree: where, its bytes, the calls binding it now and when the last one let it go."""

    path: Path
    bytes: int
    users: int = 0
    used_at: float = 0.0


async def evict_unused(entries: dict[str, TreeEntry], locks: dict[str, asyncio.Lock], budget: int) -> None:
    """Past ``budget`` bytes, remove the least recently used entries that no call holds and none is being unpacked
    under (its key's lock in ``locks``), until the rest fits."""
    total = sum(entry.bytes for entry in entries.values())
    if total <= budget:
        return
    for key, entry in sorted(entries.items(), key=lambda item: item[1].used_at):
        if total <= budget:
            break
        if entry.users or locks.get(key, asyncio.Lock()).locked():
            continue
        del entries[key]
        total -= entry.bytes
        await asyncio.to_thread(remove_tree, entry.path)
