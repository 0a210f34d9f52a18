"""Where uploaded files' bytes live: :class:`FileBytes`, the seam between the Files service and its storage.

Two implementations: :class:`DiskFileBytes` (the embedded default: ``files/<id>`` next to the SQLite database) and
the PostgreSQL one (store/postgres/files/file_bytes.py: rows in the database every replica shares). Either way an upload
is streamed in chunk by chunk and read back chunk by chunk, so memory never holds a whole file; a blob is named
only by the id the bridge made, never by anything a client sent.

On disk an upload goes to a temporary file in the directory and is renamed to ``<file_id>`` when complete, so a
file is never seen half-written. A delete unlinks at once: a reader that opened the file before keeps reading it
(POSIX keeps the inode until the last handle closes).
"""

from __future__ import annotations

import asyncio
import contextlib
import errno
import os
import shutil
import tempfile
import time
from collections.abc import AsyncIterator, Sequence
from pathlib import Path
from typing import IO

from ...file_ids import FILE_ID, ORPHAN_GRACE_SECONDS, STALE_UPLOAD_SECONDS, UPLOAD_PREFIX, check_file_id
from ...records import KnownIds

_NO_KERNEL_COPY = frozenset({errno.ENOSYS, errno.EXDEV, errno.EOPNOTSUPP, errno.EINVAL, errno.EPERM})
COPY_CHUNK = 1 << 20


# -- on disk --------------------------------------------------------------------------------------------------


class _DiskWriter:
    def __init__(self, directory: Path, file_id: str) -> None:
        self.file_id = file_id
        self.path = directory / f"{UPLOAD_PREFIX}{os.urandom(12).hex()}.part"
        self._final = directory / file_id
        self._file: IO[bytes] | None = None
        self._published = False

    async def open(self) -> None:
        self._file = await asyncio.to_thread(open, self.path, "xb")

    async def write(self, chunk: bytes) -> None:
        if self._file is None:
            raise RuntimeError("upload is not open")
        if chunk:
            await asyncio.to_thread(self._file.write, chunk)

    async def publish(self) -> None:
        """Flush to stable storage, then rename under the id."""
        file, self._file = self._file, None
        if file is not None:
            await asyncio.to_thread(_flush_and_close, file)
        await asyncio.to_thread(os.replace, self.path, self._final)
        self._published = True

    async def discard(self) -> None:
        file, self._file = self._file, None
        if file is not None:
            await asyncio.to_thread(file.close)
        if not self._published:
            await asyncio.to_thread(self.path.unlink, missing_ok=True)



class _DiskReader:
    def __init__(self, handle: IO[bytes]) -> None:
        self._handle = handle
        self.size = os.fstat(handle.fileno()).st_size

    async def read(self, size: int) -> bytes:
        return await asyncio.to_thread(self._handle.read, size)

    async def aclose(self) -> None:
        await asyncio.to_thread(self._handle.close)


def _extend(path: Path, kept: int, sources: Sequence[tuple[Path, int]]) -> None:
    """:meth:`DiskFileBytes.extend` on the disk, blocking (run it in a thread): each source's bytes written at its
    place after ``kept``, copied by the kernel (``copy_file_range``: no byte through this process, a reflink where
    the filesystem shares extents), the file cut at the end of the last and flushed to stable storage."""
    out = os.open(path, os.O_WRONLY)
    try:
        if os.fstat(out).st_size < kept:
            raise FileNotFoundError(f"{path.name} holds fewer than {kept} bytes")
        at = kept
        for source_path, count in sources:
            with open(source_path, "rb") as source:
                _copy_range(source.fileno(), out, count, at)
            at += count
        os.ftruncate(out, at)
        os.fsync(out)
    finally:
        os.close(out)


def _copy_range(source: int, out: int, count: int, at: int) -> None:
    """The first ``count`` bytes of ``source`` written at ``at`` of ``out``."""
    done = 0
    while done < count:
        try:
            copied = os.copy_file_range(source, out, count - done, done, at + done)
        except OSError as error:  # a filesystem or kernel without it: through the process after all
            if error.errno not in _NO_KERNEL_COPY:
                raise
            chunk = os.pread(source, min(COPY_CHUNK, count - done), done)
            copied = len(chunk) and os.pwrite(out, chunk, at + done)
        if copied == 0:
            raise FileNotFoundError(f"a part holds fewer than the {count} bytes it was stored with")
        done += copied


def _flush_and_close(file: IO[bytes]) -> None:
    try:
        file.flush()
        os.fsync(file.fileno())
    finally:
        file.close()


class DiskFileBytes:
    """Bytes in ``<directory>/<file_id>``; with no directory, a temporary one that lives as long as this does
    (an in-memory database's files)."""

    def __init__(self, directory: Path | None) -> None:
        self._directory = directory
        self._own_directory = directory is None

    @property
    def directory(self) -> Path:
        if self._directory is None:
            raise RuntimeError("the files directory is not made yet; await start() first")
        return self._directory

    def path(self, file_id: str) -> Path:
        """Where a file's bytes are, for ids the bridge makes only (``ValueError`` for anything else)."""
        return self.directory / check_file_id(file_id)

    async def start(self) -> None:
        if self._directory is None:
            self._directory = Path(await asyncio.to_thread(tempfile.mkdtemp, prefix="responses-bridge-files-"))
        await asyncio.to_thread(self._directory.mkdir, mode=0o700, parents=True, exist_ok=True)

    async def aclose(self) -> None:
        if self._own_directory and self._directory is not None:
            await asyncio.to_thread(shutil.rmtree, self._directory, ignore_errors=True)
            self._directory = None

    async def writer(self, file_id: str) -> _DiskWriter:
        writer = _DiskWriter(self.directory, check_file_id(file_id))
        await writer.open()
        return writer

    async def open(self, file_id: str) -> _DiskReader | None:
        try:
            handle = await asyncio.to_thread(open, self.path(file_id), "rb")
        except FileNotFoundError:
            return None
        return _DiskReader(handle)

    async def extend(self, file_id: str, kept: int, sources: Sequence[tuple[str, int]]) -> None:
        await asyncio.to_thread(_extend, self.path(file_id), kept,
                                [(self.path(blob_id), count) for blob_id, count in sources])

    @contextlib.asynccontextmanager
    async def local_copy(self, file_id: str) -> AsyncIterator[Path]:
        yield self.path(file_id)

    async def remove(self, file_id: str) -> None:
        await asyncio.to_thread(self.path(file_id).unlink, missing_ok=True)

    async def sweep(self, known_ids: KnownIds) -> int:
        now = time.time()
        entries = await asyncio.to_thread(_list_directory, self.directory)
        stale = [name for name, mtime in entries if name.startswith(UPLOAD_PREFIX)
                 and now - mtime > STALE_UPLOAD_SECONDS]
        candidates = [name for name, mtime in entries if FILE_ID.fullmatch(name)
                      and now - mtime > ORPHAN_GRACE_SECONDS]
        known = await known_ids(candidates) if candidates else set()
        removed = 0
        for name in [*stale, *(name for name in candidates if name not in known)]:
            await asyncio.to_thread((self.directory / name).unlink, missing_ok=True)
            removed += 1
        return removed

    async def collect(self) -> int:
        return 0  # a delete unlinks at once: nothing is left for later


def _list_directory(directory: Path) -> list[tuple[str, float]]:
    entries = []
    with os.scandir(directory) as scan:
        for entry in scan:
            with contextlib.suppress(OSError):  # removed meanwhile
                entries.append((entry.name, entry.stat(follow_symlinks=False).st_mtime))
    return entries
