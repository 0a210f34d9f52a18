"""Skills laid out once: a content-addressed, read-only cache of unpacked skills on the host, shared by every call
that uses the same skill.

A container keeps its own copy of each skill's zip (container_skills.py), so the key is the zip's content (its
SHA-256, learnt once per stored blob by streaming it, blobs never change), not the copy: six containers made with
one skill version unpack it once. An entry is unpacked when a call that needs it has been admitted (it holds its
sandbox slot), under a lock of its own, into a temporary directory renamed into place when whole; each skill is
then bound read-only at ``/mnt/skills/<name>`` of the call (the ``read_only`` binds of ``Sandbox.call``). Entries
in use are counted; past the disk budget the least recently used entries no call holds are removed.

The cache lives in the bridge's private scratch directory (sandbox/scratch.py), one directory per process
(``skills-<pid>``): workers of one sidecar never remove what another is using, and a start removes the directories
of processes that are gone. What the cache holds on disk is bounded by the budget plus the skills calls hold at
once (each at most a skill's limit, skill_bundle.py).
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import os
import secrets
import time
from collections.abc import AsyncIterator, Sequence
from pathlib import Path

import structlog

from ...protocol.containers.skills_note import SKILLS_DIR
from ...sandbox.trees import remove_tree
from ...store.base import FileBytes
from ...store.base_skills import ContainerSkill
from .skill_bundle import MAX_ZIP_BYTES
from .skill_unpack import unpack_kept
from .tree_cache import TreeCache, TreeEntry

log = structlog.get_logger(__name__)

PREFIX = "skills-"
READ_CHUNK = 1 << 20


class SkillCache:
    """Unpacked skills of this process, keyed by their zip's digest. ``budget``: bytes of unpacked files kept
    when no call uses them; ``workdir``: the ``code_workdir`` setting (None: the system's temporary directory)."""

    def __init__(self, blobs: FileBytes, *, budget: int, workdir: Path | None = None) -> None:
        self.blobs = blobs
        self.unpacked = 0  # skills unpacked since the start (the metric tests and the closing note count)
        self._trees = TreeCache(PREFIX, workdir, budget)
        self._digests: dict[str, str] = {}  # blob id -> its content's digest (a blob never changes)

    @property
    def workdir(self) -> Path | None:
        return self._trees.workdir

    @workdir.setter
    def workdir(self, workdir: Path | None) -> None:
        self._trees.workdir = workdir

    @contextlib.asynccontextmanager
    async def bound(self, skills: Sequence[ContainerSkill]) -> AsyncIterator[list[tuple[Path, str]]]:
        """Each skill unpacked (once) and held for the call: the (host directory, ``/mnt/skills/<name>``) binds.
        A skill whose blob is gone (its container deleted meanwhile) is left out."""
        held: list[TreeEntry] = []
        binds: list[tuple[Path, str]] = []
        try:
            for skill in skills:
                entry = await self._entry(skill.blob_id)
                if entry is None:
                    continue
                entry.users += 1
                held.append(entry)
                binds.append((entry.path, f"{SKILLS_DIR}/{skill.name}"))
            yield binds
        finally:
            now = time.monotonic()
            for entry in held:
                entry.users -= 1
                entry.used_at = now
            await self._evict()

    async def _entry(self, blob_id: str) -> TreeEntry | None:
        digest = self._digests.get(blob_id)
        if digest is None:
            digest = await self._digest(blob_id)
            if digest is None:
                return None
            self._digests[blob_id] = digest
        lock = self._trees.lock(digest)
        async with lock:
            entry = self._trees.entries.get(digest)
            if entry is None:
                entry = await self._unpack(blob_id, digest)
                if entry is None:
                    return None
                self._trees.entries[digest] = entry
            return entry

    async def _digest(self, blob_id: str) -> str | None:
        reader = await self.blobs.open(blob_id)
        if reader is None:
            return None
        digest = hashlib.sha256()
        size = 0
        try:
            while chunk := await reader.read(READ_CHUNK):
                size += len(chunk)
                if size > MAX_ZIP_BYTES:
                    raise OSError("a stored skill is larger than any skill may be")
                digest.update(chunk)
        finally:
            await reader.aclose()
        return digest.hexdigest()

    async def _unpack(self, blob_id: str, digest: str) -> TreeEntry | None:
        root = await self._trees.root()
        try:
            async with self.blobs.local_copy(blob_id) as source:  # streamed from the file (skill_unpack.py)
                entry = await asyncio.to_thread(_unpack_into, root, digest, source)
        except FileNotFoundError:
            return None  # the container was deleted meanwhile: the call finds it gone
        self.unpacked += 1
        return entry

    async def _evict(self) -> None:
        await self._trees.evict()


def _unpack_into(root: Path, digest: str, source: Path) -> TreeEntry:
    """Extract into a temporary directory of the cache, then rename it to its digest: an entry is whole or
    absent. Its files are world-readable (0644/0755) for the sandbox's unprivileged uid, and the bridge's own."""
    staging = root / f".unpacking-{secrets.token_hex(8)}"
    try:
        files, size = unpack_kept(source, staging)
        target = root / digest
        if target.exists():  # made before this process knew of it: replaced by this whole one
            remove_tree(target)
        os.rename(staging, target)
    except BaseException:
        remove_tree(staging)
        raise
    log.info("skill_unpacked", digest=digest[:16], files=files, bytes=size)
    return TreeEntry(target, size, used_at=time.monotonic())

