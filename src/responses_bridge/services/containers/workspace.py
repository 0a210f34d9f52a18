"""A container's files laid out in a sandbox call's ``/mnt/data`` for one run, and what the run changed written
back.

The directory is the call's own in-memory file system (sandbox/call.py), empty at the start of each call and gone
after it, so a replica that has never seen the container runs the next call on the same files (the files come from
the shared storage), and nothing a run leaves behind outlives it. Write-back compares each regular file's size and
modification time with what was laid out: removed files are deleted first, then new and changed ones stored
(``source: assistant``), so a run that replaced the file ``a`` by a directory holding ``a/b`` (or the other way
round) leaves exactly what its directory held: the store refuses a path that is a file and a directory at once, and
would refuse ``a/b`` while ``a`` is still stored.

The tree is walked without recursion and with bounded work (sandbox/trees.py), whatever shape the code gave it;
files are opened without following symbolic links, so a link the code made to a path of the host is never read,
and by write-back time every process of the run is gone, so nothing can swap a file for a link in between.
"""

from __future__ import annotations

import contextlib
import os
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol, TypeVar

import structlog

from ...protocol.errors import APIError
from ...sandbox.identity import SandboxIdentity
from ...sandbox.trees import Listing, list_files
from ...store.records import StoredContainer, StoredContainerFile
from .containers import ContainerService
from .shapes import DATA_DIR, MAX_PATH, relative_path

log = structlog.get_logger(__name__)
T = TypeVar("T")

READ_CHUNK = 1 << 20
MAX_FILES_KEPT = 1000
"""Files one run may add or change and have kept: past it, the rest are named in a note and dropped (a run making
a hundred thousand small files would otherwise hold the store for minutes)."""
MAX_ENTRIES_READ = 100_000
"""Entries of /mnt/data one write-back looks at: past it the rest are named in a note and neither kept nor taken
as deleted (a run making millions of empty files would otherwise hold the bridge for minutes)."""
Snapshot = dict[str, tuple[int, int]]


def _storable(path: str) -> bool:
    """Can the name be stored and shown (UTF-8, no NUL, not too long)? A name the code made of raw bytes cannot."""
    try:
        path.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return "\x00" not in path and len(path) <= MAX_PATH


def _write(path: Path, data: bytes, append: bool) -> None:
    with open(path, "ab" if append else "xb") as handle:
        handle.write(data)


class FileThreads(Protocol):
    """Threads for the files of a call's /mnt/data (a sandbox call: counted, so that the directory's descriptor
    outlives them — sandbox/data_threads.py; a plain :class:`SandboxIdentity` elsewhere)."""

    def in_thread(self, function: Callable[..., T], *arguments: Any) -> Awaitable[T]:
        """As the sandbox's uid: files made are the code's own."""

    def thread(self, function: Callable[..., T], *arguments: Any) -> Awaitable[T]:
        """As the bridge: reading back."""


def _read_at(path: Path, offset: int) -> bytes:
    """A chunk of ``path`` at ``offset``, its descriptor opened and closed in the one thread: none is left open
    across threads for a cancelled reader's thread to use after its number was given to another file."""
    fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW)
    try:
        return os.pread(fd, READ_CHUNK, offset)
    finally:
        os.close(fd)


async def _read_nofollow(threads: FileThreads, path: Path) -> AsyncIterator[bytes]:
    offset = 0
    while chunk := await threads.thread(_read_at, path, offset):
        offset += len(chunk)
        yield chunk


@dataclass(slots=True)
class Workspace:
    """One run's directory over a container: ``root`` is the call's /mnt/data as the bridge reaches it.
    :meth:`lay_out` before the run, :meth:`write_back` after it."""

    service: ContainerService
    container: StoredContainer
    tenant: str
    root: Path
    files: dict[str, StoredContainerFile] = field(default_factory=dict)  # relative path → the stored file
    before: Snapshot = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)  # files that could not be laid out, for the model
    owner: FileThreads = field(default_factory=SandboxIdentity)  # whose files the laid-out ones are

    async def lay_out(self) -> None:
        """Write every stored file into the directory. A file whose path another file makes impossible (``a/b``
        beside a file ``a``: stored before the store refused such pairs) is left out with a note, and kept in the
        store untouched, so such a container still runs; only a failure of the disk fails the call."""
        for file in await self.service.store.all_files(self.container.id, tenant=self.tenant):
            relative = relative_path(file.path)
            target = self.root / relative
            reader = await self.service.blobs.open(file.blob_id)
            if reader is None:
                continue  # deleted meanwhile
            try:
                await self.owner.in_thread(target.parent.mkdir, 0o777, True, True)
                await self.owner.in_thread(_write, target, b"", False)
                while chunk := await reader.read(READ_CHUNK):
                    await self.owner.in_thread(_write, target, chunk, True)
            except (FileExistsError, NotADirectoryError, IsADirectoryError):
                self.notes.append(f"{file.path} was not laid out: another file of the container is at a directory "
                                  "of its path, or under it (a path cannot be both; delete one of them)")
                continue
            finally:
                await reader.aclose()
            self.files[relative] = file
        self.before = (await self.owner.thread(self._list)).files

    def _list(self) -> Listing:
        return list_files(self.root, max_path=MAX_PATH - len(DATA_DIR) - 1, max_entries=MAX_ENTRIES_READ)

    async def write_back(self, deadline: float | None = None) -> tuple[list[StoredContainerFile], list[str]]:
        """Store what the run made or changed and delete what it removed: (files made or changed, notes on files
        that could not be kept, for the model). Files are judged by their apparent size before a byte is copied
        (a sparse file costs nothing in the sandbox's memory, and all its bytes here), so what reaches the host's
        disk stays within the file and container limits; ``deadline`` (the monotonic clock): files not begun by
        then are not kept, so a call's write-back ends with its time."""
        listing = await self.owner.thread(self._list)
        after = listing.files
        changed: list[StoredContainerFile] = []
        notes: list[str] = list(self.notes)
        complete = not listing.unread and not listing.too_deep
        if listing.unread:
            notes.append(f"/mnt/data held more than {MAX_ENTRIES_READ:,} entries; {listing.unread:,} were not "
                         "read, so files past them were not kept")
        if listing.too_deep:
            notes.append(f"{listing.too_deep:,} directories lie deeper than a stored path can name "
                         f"({MAX_PATH} characters); the files in them were not kept")
        for relative, file in self.files.items():  # first: a path freed here may be taken below (a → a/b)
            if complete and relative not in after:
                await self.service.store.delete_file(self.container.id, file.id, tenant=self.tenant)
                with contextlib.suppress(OSError):
                    await self.service.blobs.remove(file.blob_id)
        fresh = [relative for relative, state in sorted(after.items()) if self.before.get(relative) != state]
        if len(fresh) > MAX_FILES_KEPT:
            notes.append(f"{len(fresh) - MAX_FILES_KEPT} more files were written than the {MAX_FILES_KEPT} one call "
                         "may keep; they were not kept")
            fresh = fresh[:MAX_FILES_KEPT]
        kept = set(self.files) - set(fresh)  # laid out and unchanged: they keep their room
        room = self.service.container_bytes - sum(after[relative][0] for relative in kept if relative in after)
        for relative in fresh:
            path = f"{DATA_DIR}/{relative}"
            size = after[relative][0]
            if size > self.service.file_bytes:
                notes.append(f"{path} was not kept: its {size:,} bytes pass the {self.service.file_bytes:,} a "
                             "container file may hold")
                continue
            if size > room:
                notes.append(f"{path} was not kept: its {size:,} bytes (holes included) pass what is left of the "
                             f"container's limit of {self.service.container_bytes:,} bytes")
                continue
            if deadline is not None and time.monotonic() > deadline:
                notes.append(f"{path} was not kept: the call's time ran out before it was written back")
                continue
            room -= size
            if not _storable(path):
                notes.append(f"a file whose name is not UTF-8 text ({path.encode('utf-8', 'replace')[:200]!r}) "
                             "was not kept")
                continue
            try:
                stored = await self.service.put_bytes(self.container, path,
                                                      _read_nofollow(self.owner, self.root / relative),
                                                      source="assistant", tenant=self.tenant)
            except APIError as refused:
                notes.append(f"{path} was not kept: {refused.message}")
                continue
            except OSError as error:
                notes.append(f"{path} could not be read back ({error.strerror or error}).")
                continue
            changed.append(stored)
        return changed, notes
