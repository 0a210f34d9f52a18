"""The Files API's rules: validation in OpenAI's terms, uploads streamed to storage, expiry, File objects.

An upload is written chunk by chunk to the service's :class:`~responses_bridge.store.file_bytes.FileBytes` (on
disk: a temporary file in ``files/`` next to the database, renamed to ``files/<file_id>`` once complete; on
PostgreSQL: rows in the database), so a file is never seen half-written and memory never holds more than a chunk
of it, whatever its size. The bytes are only ever named by the id the bridge made: the client's filename is
metadata, never part of a path. The metadata row is written after the bytes are published; a crash between the
two leaves orphan bytes that the start-up sweep removes.

Expired files are left out of every read at once (the store compares ``expires_at`` with the clock) and deleted,
bytes and row, by a purge that runs at start and then periodically.

Every file belongs to the tenant that uploaded it: each read, list and delete names the tenant, and another
tenant's file answers exactly as a missing one. An upload is bounded by its tenant's ``max_stored_bytes``, one
budget with the tenant's container files (quota.py).
"""

from __future__ import annotations

import contextlib
import os
import re
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from pathlib import Path
from typing import Any

import structlog

from ...process.periodic import Periodic
from ...protocol.errors import APIError, invalid_request, not_found
from ...protocol.lists import list_of
from ...store.base import BlobReader, BlobWriter, FileBytes, FileStore
from ...store.file_ids import FILE_ID
from ...store.records import StorageLimitExceeded, StoredFile, UnknownCursor
from ...store.sqlite.files.file_bytes import DiskFileBytes
from ..pagination import check_page
from .quota import StorageQuota, storage_limit_error

log = structlog.get_logger("responses_bridge.files")

PURPOSES = ("assistants", "batch", "fine-tune", "vision", "user_data", "evals")
"""What a client may upload for (the SDK's ``FilePurpose``); the ``*_output`` / ``-results`` purposes are the
server's own."""
MIN_EXPIRES_SECONDS = 3600
MAX_EXPIRES_SECONDS = 30 * 24 * 3600
BATCH_DEFAULT_EXPIRES_SECONDS = MAX_EXPIRES_SECONDS  # as OpenAI: batch files expire after 30 days unless told
MAX_LIST_LIMIT = 10_000  # also the default, as OpenAI's
MAX_FILENAME_CHARS = 1024

PURGE_BATCH = 1000


def new_file_id() -> str:
    return f"file-{os.urandom(16).hex()}"


def files_directory(db_path: str) -> Path | None:
    """``files/`` in the database's folder; None for an in-memory database (the service then uses a temporary
    directory that lives as long as it does)."""
    if db_path == ":memory:":
        return None
    return Path(db_path).resolve().parent / "files"


# -- validation -------------------------------------------------------------------------------------------------


def check_purpose(value: object) -> str:
    if value is None or value == "":
        raise invalid_request("Missing required parameter: 'purpose'.", param="purpose",
                              code="missing_required_parameter")
    if value not in PURPOSES:
        shown = value[:100] if isinstance(value, str) else value
        raise invalid_request(f"Invalid value for 'purpose': {shown!r}. Supported values are: "
                              + ", ".join(f"'{purpose}'" for purpose in PURPOSES) + ".", param="purpose",
                              code="invalid_value")
    return str(value)


def check_expires_after(anchor: object, seconds: object) -> int:
    """``expires_after`` ({anchor: "created_at", seconds}) -> the seconds after creation the file expires."""
    if anchor is None:
        raise invalid_request("Missing required parameter: 'expires_after.anchor'.", param="expires_after.anchor",
                              code="missing_required_parameter")
    if anchor != "created_at":
        raise invalid_request("Invalid value for 'expires_after.anchor': supported anchors: 'created_at'.",
                              param="expires_after.anchor", code="invalid_value")
    if seconds is None:
        raise invalid_request("Missing required parameter: 'expires_after.seconds'.", param="expires_after.seconds",
                              code="missing_required_parameter")
    if isinstance(seconds, str) and seconds.isascii() and seconds.strip().isdigit():
        seconds = int(seconds)
    if not isinstance(seconds, int) or isinstance(seconds, bool) or not (
            MIN_EXPIRES_SECONDS <= seconds <= MAX_EXPIRES_SECONDS):
        raise invalid_request(f"Invalid value for 'expires_after.seconds': expected an integer between "
                              f"{MIN_EXPIRES_SECONDS} (1 hour) and {MAX_EXPIRES_SECONDS} (30 days).",
                              param="expires_after.seconds", code="invalid_value")
    return seconds


def clean_filename(name: str | None, param: str = "file") -> str:
    """The name kept as metadata: its last path component (a client's ``../../x`` is ``x``), refused when empty,
    a dot name, longer than :data:`MAX_FILENAME_CHARS`, or holding control characters (NUL included). ``param``:
    where the request carries it (the form's ``file``, an upload's ``filename``)."""
    if name is None:
        raise invalid_request("The 'file' field must be a file upload with a filename.", param=param,
                              code="invalid_value")
    base = re.split(r"[/\\]", name)[-1]
    if base in ("", ".", ".."):
        raise invalid_request("Invalid filename: it names no file.", param=param, code="invalid_filename")
    if len(base) > MAX_FILENAME_CHARS:
        raise invalid_request(f"Invalid filename: longer than {MAX_FILENAME_CHARS} characters.", param=param,
                              code="invalid_filename")
    if any(ord(char) < 32 or ord(char) == 127 for char in base):
        raise invalid_request("Invalid filename: control characters are not allowed.", param=param,
                              code="invalid_filename")
    try:
        base.encode("utf-8")
    except UnicodeEncodeError:  # a lone surrogate, from bytes that were not UTF-8
        raise invalid_request("Invalid filename: not valid UTF-8.", param=param, code="invalid_filename") from None
    return base


def file_expiry(purpose: str, expires_after: int | None, now: int) -> int | None:
    """When a file stored at ``now`` expires: ``expires_after`` seconds later, by default never (batch files: 30
    days, as OpenAI)."""
    if expires_after is None and purpose == "batch":
        expires_after = BATCH_DEFAULT_EXPIRES_SECONDS
    return None if expires_after is None else now + expires_after


def too_large(limit: int) -> APIError:
    return APIError(413, f"The file is too large: this server accepts files up to {_size(limit)} ({limit} bytes; "
                    "set by RESPONSES_BRIDGE_MAX_FILE_BYTES).", param="file", code="file_too_large")


def _size(count: int) -> str:
    for unit, scale in (("GiB", 1 << 30), ("MiB", 1 << 20), ("KiB", 1 << 10)):
        if count >= scale:
            return f"{count / scale:.4g} {unit}"
    return f"{count} bytes"


def file_object(file: StoredFile) -> dict[str, Any]:
    """OpenAI's File object (``status`` is deprecated there and always ``processed`` for a stored upload)."""
    return {"id": file.id, "object": "file", "bytes": file.bytes, "created_at": file.created_at,
            "filename": file.filename, "purpose": file.purpose, "status": "processed",
            "expires_at": file.expires_at, "status_details": None}


def _not_found(file_id: str) -> APIError:
    return not_found(f"No such File object: {file_id[:200]}", param="file_id", code="not_found")


# -- uploads ----------------------------------------------------------------------------------------------------


class Upload:
    """One file being received for ``tenant``: chunks go to the storage's writer, counted against the file limit
    and reserved against the tenant's stored-bytes limit before they are written. Made by
    :meth:`FileService.receive`, which discards what was written unless the upload was stored, and gives the
    reservation back."""

    def __init__(self, writer: BlobWriter, max_bytes: int, tenant: str, quota: StorageQuota,
                 refusal: Callable[[int], APIError] = too_large) -> None:
        self.writer = writer
        self.file_id = writer.file_id
        self.max_bytes = max_bytes
        self._refusal = refusal
        self.tenant = tenant
        self.size = 0
        self.reserved = 0
        self._quota = quota
        self.stored = False

    def refusal(self) -> APIError:
        """The error of a body past this upload's limit."""
        return self._refusal(self.max_bytes)

    async def write(self, chunk: bytes) -> None:
        """Append a chunk; a 413 once the file passes the limit, a 400 ``storage_limit_exceeded`` once it would
        pass the tenant's stored bytes."""
        self.size += len(chunk)
        if self.size > self.max_bytes:
            raise self._refusal(self.max_bytes)
        if not chunk:
            return
        try:
            if await self._quota.reserve(self.tenant, len(chunk), self.reserved):
                self.reserved += len(chunk)
        except StorageLimitExceeded as exceeded:
            raise storage_limit_error(exceeded.limit, exceeded.used) from None
        await self.writer.write(chunk)

    @contextlib.contextmanager
    def landing(self) -> Iterator[None]:
        """Around the insert of this upload's row (a file's, or an upload's part's): once it is in without an
        error, the reservation is given back in the same step, the row counting the bytes from then on; until it
        ends, reads of the tenant's stored bytes wait (quota.py says why)."""
        with self._quota.landing(self.tenant):
            yield
            reserved, self.reserved = self.reserved, 0
            self._quota.release(self.tenant, reserved)

    async def discard(self) -> None:
        """Remove what was written unless stored; then give back what is still reserved (a refused or failed
        upload's)."""
        try:
            if not self.stored:
                await self.writer.discard()
        finally:
            reserved, self.reserved = self.reserved, 0
            self._quota.release(self.tenant, reserved)


# -- the service ------------------------------------------------------------------------------------------------


class FileService:
    """Files for the HTTP door's ``/v1/files`` routes, and for whatever reads stored files (vector stores).

    ``contents`` is where the bytes go; by default :class:`DiskFileBytes` in ``directory``."""

    def __init__(self, store: FileStore, directory: Path | None, max_bytes: int, *,
                 purge_interval: float = 60.0, clock: Callable[[], float] = time.time,
                 contents: FileBytes | None = None,
                 max_stored_bytes: Callable[[str], int | None] = lambda tenant: None) -> None:
        """``max_stored_bytes(tenant)``: the tenant's bound on the bytes of its files and container files together
        (None: none), as ``Settings.tenant_policy(tenant).max_stored_bytes`` gives it."""
        self.store = store
        self.contents: FileBytes = contents if contents is not None else DiskFileBytes(directory)
        self.quota = StorageQuota(max_stored_bytes, self._stored_bytes)
        self.max_bytes = max_bytes
        self._clock = clock
        self._purger = Periodic.purge("files", purge_interval, self._purge_and_collect)
        self._deletion_hooks: list[Callable[[str], Awaitable[None]]] = []

    def on_delete(self, hook: Callable[[str], Awaitable[None]]) -> None:
        """Run ``hook(file_id)`` whenever a file is deleted (by a client or by expiry), after its row is gone:
        whatever holds data derived from the file (vector stores) removes it, as OpenAI does."""
        self._deletion_hooks.append(hook)

    async def _deleted(self, file_id: str) -> None:
        for hook in self._deletion_hooks:
            await hook(file_id)

    @property
    def directory(self) -> Path:
        """The files directory of bytes on disk (not there for bytes kept elsewhere)."""
        return self._disk().directory

    def _disk(self) -> DiskFileBytes:
        if not isinstance(self.contents, DiskFileBytes):
            raise RuntimeError("this service keeps its files' bytes in the database, not in a directory")
        return self.contents

    def _now(self) -> int:
        return int(self._clock())

    async def _stored_bytes(self, tenant: str) -> int:
        return await self.store.stored_bytes(self._now(), tenant=tenant)

    # -- lifecycle ------------------------------------------------------------------------------------------------

    async def start(self) -> None:
        """Make the storage ready, remove what earlier processes left behind (dead uploads, orphans, expired
        files) and start the periodic purge."""
        await self.contents.start()
        await self.sweep()
        await self.purge_expired()
        self._purger.start()

    async def aclose(self) -> None:
        await self._purger.stop()
        await self.contents.aclose()

    async def _purge_and_collect(self) -> None:
        await self.purge_expired()
        await self.contents.collect()

    async def purge_expired(self) -> int:
        """Delete every expired file, row then bytes, whoever owns it; the number deleted."""
        purged = 0
        while True:
            now = self._now()
            expired = await self.store.expired_files(now, PURGE_BATCH)
            for file_id in expired:
                if await self.store.delete_expired_file(file_id, now):
                    purged += 1
                    await self._deleted(file_id)
                await self.remove_bytes(file_id)
            if len(expired) < PURGE_BATCH:
                break
        if purged:
            log.info("files_expired_purged", count=purged)
        return purged

    async def sweep(self) -> int:
        """Remove the leftovers of dead uploads and stored bytes without a row (older than their grace)."""
        removed = await self.contents.sweep(self.store.known_ids)
        if removed:
            log.info("files_swept", count=removed)
        return removed

    # -- create -----------------------------------------------------------------------------------------------

    @contextlib.asynccontextmanager
    async def receive(self, *, tenant: str, max_bytes: int | None = None,
                      refusal: Callable[[int], APIError] = too_large) -> AsyncIterator[Upload]:
        """A new :class:`Upload` of ``tenant``'s (its file id chosen now); what it wrote is removed on leaving
        unless it was stored (by :meth:`create`, or as an upload's part), and its stored-bytes reservation is given
        back. ``max_bytes`` (by default the file limit) and ``refusal(limit)``: the bound and the error past it."""
        upload = Upload(await self.contents.writer(new_file_id()), self.max_bytes if max_bytes is None else max_bytes,
                        tenant, self.quota, refusal)
        try:
            yield upload
        finally:
            await upload.discard()

    async def create(self, upload: Upload, *, filename: str, purpose: str,
                     expires_after: int | None) -> dict[str, Any]:
        """Publish a received upload under its id and record it as its tenant's; the File object. ``filename``
        is checked and cut to its last component here too (:func:`clean_filename`), whoever calls. Over the
        tenant's stored bytes: a 400 and nothing stored (neither bytes nor row)."""
        filename = clean_filename(filename)
        now = self._now()
        stored = StoredFile(id=upload.file_id, created_at=now, bytes=upload.size, filename=filename,
                            purpose=purpose, expires_at=file_expiry(purpose, expires_after, now))
        await upload.writer.publish()
        upload.stored = True
        try:
            with upload.landing():
                await self.store.add_file(stored, tenant=upload.tenant,
                                          max_stored_bytes=self.quota.limit(upload.tenant))
        except BaseException as error:
            await self.contents.remove(stored.id)
            if isinstance(error, StorageLimitExceeded):
                raise storage_limit_error(error.limit, error.used) from None
            raise
        return file_object(stored)

    # -- read -------------------------------------------------------------------------------------------------

    async def get(self, file_id: str, *, tenant: str) -> dict[str, Any] | None:
        """The File object; None when unknown, expired, deleted or another tenant's."""
        if not FILE_ID.fullmatch(file_id):
            return None
        stored = await self.store.get_file(file_id, self._now(), tenant=tenant)
        return file_object(stored) if stored is not None else None

    async def get_any_tenant(self, file_id: str) -> dict[str, Any] | None:
        """The File object of a live file whoever owns it. Across tenants: ingestion only, for a file whose
        attachment was already checked to be its vector store's tenant's."""
        if not FILE_ID.fullmatch(file_id):
            return None
        stored = await self.store.get_file_any_tenant(file_id, self._now())
        return file_object(stored) if stored is not None else None

    async def retrieve(self, file_id: str, *, tenant: str) -> dict[str, Any]:
        found = await self.get(file_id, tenant=tenant)
        if found is None:
            raise _not_found(file_id)
        return found

    def content_path(self, file_id: str) -> Path:
        """Where a file's bytes are on disk: ``<files directory>/<file_id>``, for ids the bridge makes only."""
        return self._disk().path(file_id)

    async def open_content(self, file_id: str, *, tenant: str) -> tuple[BlobReader, dict[str, Any]]:
        """A live file's bytes, opened (the caller closes the reader), and its File object; 404 when unknown,
        expired, deleted or another tenant's. Once open, a delete that comes meanwhile does not cut the read
        short."""
        found = await self.retrieve(file_id, tenant=tenant)
        reader = await self.contents.open(file_id)
        if reader is None:  # deleted between the lookup and the open
            raise _not_found(file_id)
        return reader, found

    def local_copy(self, file_id: str) -> contextlib.AbstractAsyncContextManager[Path]:
        """A path holding the file's bytes while the block runs (ingestion's text extraction reads it)."""
        return self.contents.local_copy(file_id)

    async def list(self, *, tenant: str, purpose: str | None, after: str | None, limit: int,
                   order: str) -> dict[str, Any]:
        check_page(limit, order, MAX_LIST_LIMIT)
        try:
            files, has_more = await self.store.list_files(tenant=tenant, now=self._now(), purpose=purpose,
                                                          after=after, limit=limit, order=order)
        except UnknownCursor:
            raise invalid_request(f"Invalid value for 'after': no file with id '{(after or '')[:200]}'.",
                                  param="after", code="invalid_value") from None
        data = [file_object(file) for file in files]
        return list_of(data, has_more=has_more)

    # -- delete -----------------------------------------------------------------------------------------------

    async def delete(self, file_id: str, *, tenant: str) -> dict[str, Any]:
        """Row first, then bytes: once the row is gone nobody can reach the bytes, and a failed removal leaves
        an orphan for the sweep rather than a row without content."""
        if await self.get(file_id, tenant=tenant) is None or not await self.store.delete_file(file_id,
                                                                                               tenant=tenant):
            raise _not_found(file_id)
        await self._deleted(file_id)
        await self.remove_bytes(file_id)
        return {"id": file_id, "object": "file", "deleted": True}

    async def remove_bytes(self, file_id: str) -> None:
        """Remove stored bytes no row names any more; a failure is logged and left to the sweep."""
        try:
            await self.contents.remove(file_id)
        except OSError as exc:
            log.warning("file_unlink_failed", file_id=file_id, error=str(exc))
