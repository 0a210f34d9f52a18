"""The storage contract of the Uploads API (``/v1/uploads``): a file sent in parts, each part's bytes a blob in the
files' bytes storage (:class:`~responses_bridge.store.base_files.FileBytes`) under ``blob_id``, until the upload is
completed into one file (a row in ``files``), cancelled or expired.

Ownership as everywhere (base.py): every method taking ``tenant`` reads or changes only that tenant's uploads,
and another tenant's upload is exactly a missing one. The parts of an upload count in the tenant's stored bytes
(``max_stored_bytes``, one sum with files, container files and skills) from the moment they are stored until the
upload ends, each at what it occupies (:func:`charged`: its bytes rounded up to :data:`PART_BLOCK`, so a thousand
one-byte parts count as the thousand blocks they take, not as a thousand bytes); that sum is checked in the
transaction that inserts a part, and the completion deletes the parts and inserts the file in one transaction, so
an upload's bytes are never counted twice and never not at all.

One completion of an upload at a time, across every process sharing the store: a completion first claims the
upload (:meth:`UploadStore.claim_completion`, a conditional write of the upload's row), and only the holder of a
live claim joins the parts and completes it. The join makes no second copy of the file (the parts are appended to
the first one's bytes in place: FileBytes.extend), so a claim of a join counts nothing more (``bytes`` 0): a tenant
completes an upload as large as its free stored bytes. A claim that makes a blob of its own (an empty file) counts
and names it; a claim lapses at its ``until``: a completion whose process died does not keep the upload from being
completed, and the next claim (or the upload's end) hands back the dead one's blob, if any, to remove.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Protocol, runtime_checkable

from .records import StoredFile

PART_BLOCK = 4096
"""What a part's bytes are counted in, rounded up: the block of the common filesystems (ext4, XFS, tmpfs, APFS)
a file on disk takes at least, and no less than a part's rows take in PostgreSQL."""
CHARGED_PART_BYTES = f"(({{column}} + {PART_BLOCK - 1}) / {PART_BLOCK}) * {PART_BLOCK}"
"""SQL of a part's charged bytes from its ``bytes`` column (integer division in both databases)."""


def charged(size: int) -> int:
    """What a part of ``size`` bytes counts in its tenant's stored bytes: the blocks it occupies."""
    return -(-size // PART_BLOCK) * PART_BLOCK


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


@dataclass(frozen=True, slots=True)
class CompletionClaim:
    """A completion's hold on an upload: ``token`` names it, ``until`` is when it lapses, ``bytes`` what its join
    makes (counted in the tenant's stored bytes while held), ``blob_id`` the join's blob (None: no copy is made)."""

    token: str
    until: int
    bytes: int
    blob_id: str | None


class UploadCompleting(Exception):
    """Another completion holds a live claim on the upload (until ``until``)."""

    def __init__(self, until: int) -> None:
        super().__init__(until)
        self.until = until


class UploadLimitReached(Exception):
    """One of an upload's bounds is reached; ``limit``: that bound."""

    def __init__(self, limit: int) -> None:
        super().__init__(limit)
        self.limit = limit


class UploadTooManyParts(UploadLimitReached):
    """The upload holds ``limit`` parts, the most one may."""


class UploadNotPending(Exception):
    """The upload has ended (``status``: completed, cancelled or expired): no part may be added, nor may it be
    completed or cancelled (a cancel of a cancelled one excepted)."""

    def __init__(self, status: str) -> None:
        super().__init__(status)
        self.status = status


class UploadPartsFull(UploadLimitReached):
    """The upload's parts would hold more than ``limit`` bytes."""


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


CLAIM_COLUMNS = "completing_claim, completing_until, completing_bytes, completing_blob"
"""The upload row's columns holding its completion claim, in :class:`CompletionClaim`'s order (both stores)."""


def held_claim(row: Any) -> CompletionClaim | None:
    """The claim in a row of :data:`CLAIM_COLUMNS` (None: no row); None when no completion holds the upload."""
    if row is None or row[0] is None:
        return None
    return CompletionClaim(token=str(row[0]), until=int(row[1]), bytes=int(row[2]),
                           blob_id=None if row[3] is None else str(row[3]))


def claimable(held: CompletionClaim | None, now: int) -> None:
    """:class:`UploadCompleting` when ``held`` is a live claim at ``now``."""
    if held is not None and held.until > now:
        raise UploadCompleting(held.until)


@runtime_checkable
class UploadStore(Protocol):
    async def create_upload(self, upload: StoredUpload, *, tenant: str) -> None: ...

    async def get_upload(self, upload_id: str, *, tenant: str) -> StoredUpload | None:
        """The upload, whatever its status (a ``pending`` one past ``expires_at`` has expired: the purge marks it
        so later)."""

    async def add_part(self, part: StoredUploadPart, *, tenant: str, now: int, max_parts_bytes: int,
                       max_parts: int, max_stored_bytes: int | None) -> None:
        """Insert ``part`` if its upload is the tenant's and pending at ``now``. In the inserting transaction, one
        such check of a tenant at a time: :class:`UploadTooManyParts` when the upload holds ``max_parts`` parts
        already, :class:`UploadPartsFull` when its parts would pass ``max_parts_bytes``,
        :class:`StorageLimitExceeded` when the tenant's stored bytes would pass ``max_stored_bytes``.
        ``LookupError`` for an unknown upload, :class:`UploadNotPending` for an ended one."""

    async def parts(self, upload_id: str, *, tenant: str) -> list[StoredUploadPart]:
        """The upload's stored parts, in the order they were stored."""
        ...

    async def claim_completion(self, upload_id: str, claim: CompletionClaim, *, tenant: str, now: int,
                               max_stored_bytes: int | None) -> str | None:
        """In one transaction: ``claim`` becomes the upload's, if it is the tenant's, pending at ``now`` and held by
        no live claim, and the tenant's stored bytes with the claim's ``bytes`` (in place of a lapsed claim's) stay
        within ``max_stored_bytes``. Returns the lapsed claim's blob id, if any, for the caller to remove.
        ``LookupError`` / :class:`UploadNotPending` / :class:`UploadCompleting` / :class:`StorageLimitExceeded`:
        nothing changed."""
        ...

    async def release_completion(self, upload_id: str, token: str, *, tenant: str) -> None:
        """The claim ``token`` names lets go of the upload (its join's bytes removed first), if it still holds it."""

    async def complete_upload(self, upload_id: str, file: StoredFile, *, tenant: str, now: int, token: str,
                              max_stored_bytes: int | None) -> list[str]:
        """In one transaction: the upload, pending at ``now`` and claimed by ``token``, becomes ``completed`` naming
        ``file``, its claim and its parts' rows are deleted and ``file`` inserted as the tenant's (its bytes checked
        against ``max_stored_bytes`` once the parts and the claim no longer count). Returns the deleted parts' blob
        ids (the caller removes those the file does not use). ``LookupError`` / :class:`UploadNotPending` /
        :class:`UploadCompleting` (another claim holds it now) / :class:`StorageLimitExceeded`: nothing changed."""
        ...

    async def cancel_upload(self, upload_id: str, *, tenant: str, now: int) -> list[str]:
        """The pending upload becomes ``cancelled`` and its parts' rows are deleted; their blob ids (and a lapsed
        claim's join). A cancelled one stays so (no blob ids). ``LookupError`` / :class:`UploadNotPending`
        (completed or expired) / :class:`UploadCompleting` (a live claim holds it)."""
        ...

    async def expire_uploads(self, now: int, forget_before: int, limit: int) -> tuple[int, list[str]]:
        """Up to ``limit`` pending uploads past their expiry become ``expired`` and lose their parts' rows, and the
        rows of uploads that expired before ``forget_before`` are deleted. Returns how many uploads changed or
        went, and the removed parts' blob ids (and their claims' joins). Across tenants: workers only (the expiry
        purge)."""
        ...
