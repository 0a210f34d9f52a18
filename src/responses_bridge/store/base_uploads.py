"""The storage contract of the Uploads API (``/v1/uploads``): a file sent in parts, each part's bytes a blob in the
files' bytes storage (:class:`~responses_bridge.store.base_files.FileBytes`) under ``blob_id``, until the upload is
completed into one file (a row in ``files``), cancelled or expired.

Ownership as everywhere (store/base.py): every method taking ``tenant`` reads or changes only that tenant's uploads,
and another tenant's upload is exactly a missing one. The parts of an upload count in the tenant's stored bytes
(``max_stored_bytes``, one sum with files, container files and skills) from the moment they are stored until the
upload ends; that sum is checked in the transaction that inserts a part, and the completion deletes the parts and
inserts the file in one transaction, so an upload's bytes are never counted twice and never not at all.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol, runtime_checkable

from .records import StoredFile


@dataclass(frozen=True, slots=True)
class StoredUpload:
    id: str
    created_at: int
    expires_at: int
    bytes: int  # what the client declared: the completed file must hold exactly this many
    filename: str
    purpose: str
    mime_type: str
    file_expires_after: int | None  # seconds after completion the file expires (its ``expires_after``)
    status: str  # pending, completed, cancelled, expired (a pending one past expires_at is expired too)
    file_id: str | None  # the completed file's


@dataclass(frozen=True, slots=True)
class StoredUploadPart:
    id: str
    upload_id: str
    created_at: int
    bytes: int
    blob_id: str


class UploadNotPending(Exception):
    """The upload has ended (``status``: completed, cancelled or expired): no part may be added, nor may it be
    completed or cancelled (a cancel of a cancelled one excepted)."""

    def __init__(self, status: str) -> None:
        super().__init__(status)
        self.status = status


class UploadPartsFull(Exception):
    """The upload's parts would hold more than ``limit`` bytes."""

    def __init__(self, limit: int) -> None:
        super().__init__(limit)
        self.limit = limit


def pending_upload(upload: StoredUpload | None, upload_id: str, now: int) -> StoredUpload:
    """``upload`` as read by a store's write (the tenant's, locked), if it takes parts at ``now``; else
    ``LookupError`` or :class:`UploadNotPending`."""
    if upload is None:
        raise LookupError(upload_id)
    if upload.status != "pending":
        raise UploadNotPending(upload.status)
    if upload.expires_at <= now:
        raise UploadNotPending("expired")
    return upload


@runtime_checkable
class UploadStore(Protocol):
    async def create_upload(self, upload: StoredUpload, *, tenant: str) -> None: ...

    async def get_upload(self, upload_id: str, *, tenant: str) -> StoredUpload | None:
        """The upload, whatever its status (a ``pending`` one past ``expires_at`` has expired: the purge marks it
        so later)."""

    async def add_part(self, part: StoredUploadPart, *, tenant: str, now: int, max_parts_bytes: int,
                       max_stored_bytes: int | None) -> None:
        """Insert ``part`` if its upload is the tenant's and pending at ``now``. In the inserting transaction, one
        such check of a tenant at a time: :class:`UploadPartsFull` when the upload's parts would pass
        ``max_parts_bytes``, :class:`StorageLimitExceeded` when the tenant's stored bytes would pass
        ``max_stored_bytes``. ``LookupError`` for an unknown upload, :class:`UploadNotPending` for an ended one."""

    async def parts(self, upload_id: str, *, tenant: str) -> list[StoredUploadPart]:
        """The upload's stored parts, in the order they were stored."""
        ...

    async def complete_upload(self, upload_id: str, file: StoredFile, *, tenant: str, now: int,
                              max_stored_bytes: int | None) -> list[str]:
        """In one transaction: the upload, pending at ``now``, becomes ``completed`` naming ``file``, its parts'
        rows are deleted and ``file`` inserted as the tenant's (its bytes checked against ``max_stored_bytes``
        once the parts no longer count). Returns the deleted parts' blob ids (the caller removes those the file
        does not use). ``LookupError`` / :class:`UploadNotPending` / :class:`StorageLimitExceeded`: nothing
        changed."""
        ...

    async def cancel_upload(self, upload_id: str, *, tenant: str, now: int) -> list[str]:
        """The pending upload becomes ``cancelled`` and its parts' rows are deleted; their blob ids. A cancelled
        one stays so (no blob ids). ``LookupError`` / :class:`UploadNotPending` (completed or expired)."""
        ...

    async def expire_uploads(self, now: int, forget_before: int, limit: int) -> tuple[int, list[str]]:
        """Up to ``limit`` pending uploads past their expiry become ``expired`` and lose their parts' rows, and the
        rows of uploads that expired before ``forget_before`` are deleted. Returns how many uploads changed or
        went, and the removed parts' blob ids. Across tenants: workers only (the expiry purge)."""
        ...
