"""The per-process cache of unpacked trees a call binds (a container's skills: skill_cache.py; an environment's
packages: services/agents/environments/packages.py): its directory, made at first use (sandbox/trees.py's
process_cache_dir), its entries and the lock each is unpacked under, and their eviction: a tree stays while a call binds
it and, once none does, until the cache is past its byte budget, least recently used first."""

from __future__ import annotations

import asyncio
from dataclasses import dataclass
from pathlib import Path

from ...sandbox.trees import process_cache_dir, remove_tree


@dataclass(slots=True)
class TreeEntry:
    """One unpacked tree: where, its bytes, the calls binding it now and when the last one let it go."""

    path: Path
    bytes: int
    users: int = 0
    used_at: float = 0.0


class TreeCache:
    """``prefix``: the name of this process's directory (with its pid); ``workdir``: the ``code_workdir`` setting
    (None: the system's temporary directory); ``budget``: bytes of unpacked files kept when no call uses them."""

    def __init__(self, prefix: str, workdir: Path | None, budget: int) -> None:
        self.prefix = prefix
        self.workdir = workdir
        self.budget = budget
        self.entries: dict[str, TreeEntry] = {}
        self.locks: dict[str, asyncio.Lock] = {}
        self._root: Path | None = None

    def lock(self, key: str) -> asyncio.Lock:
        """The lock the entry of ``key`` is looked up and unpacked under."""
        return self.locks.setdefault(key, asyncio.Lock())

    async def root(self) -> Path:
        if self._root is None:
            self._root = await asyncio.to_thread(process_cache_dir, self.workdir, self.prefix)
        return self._root

    async def evict(self) -> None:
        """Past the budget, remove the least recently used entries that no call holds and none is being unpacked
        under (its key's lock), until the rest fits."""
        total = sum(entry.bytes for entry in self.entries.values())
        if total <= self.budget:
            return
        for key, entry in sorted(self.entries.items(), key=lambda item: item[1].used_at):
            if total <= self.budget:
                break
            if entry.users or self.locks.get(key, asyncio.Lock()).locked():
                continue
            del self.entries[key]
            total -= entry.bytes
            await asyncio.to_thread(remove_tree, entry.path)
