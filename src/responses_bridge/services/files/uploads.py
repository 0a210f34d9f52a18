"""The Uploads API's rules (``/v1/uploads``): a file larger than one request, sent in parts and completed into a
normal File, the way the SDK's ``client.uploads.upload_file_chunked`` sends it.

An upload declares its file (``bytes``, ``filename``, ``mime_type``, ``purpose``) and lives an hour. Each part is
received like a file (files.py: streamed to the files' bytes storage, reserved chunk by chunk against the
tenant's ``max_stored_bytes``), and counts in the tenant's stored bytes until the upload ends, at the blocks it
occupies (store/base_uploads.py: rounded up to 4 KiB); an upload holds at most ``max_upload_parts`` parts.
Completing names the parts in order: their bytes must add up to the declared size (and match ``md5`` when given);
the parts become one file, its row inserted in the transaction that deletes the parts' rows. A one-part upload's
bytes become the file as they are; several parts are joined into the first one's bytes, in place (FileBytes.extend),
and the file takes its id — no second copy of the file, so nothing counts but the parts, then the file: a tenant
completes an upload as large as its free stored bytes.

One completion of an upload at a time (store/base_uploads.py): a completion claims the upload before it writes a
byte, and another one meanwhile, on any replica, is a 409. A claim lapses after :func:`claim_seconds` (its process
died mid-join); the next claim joins again over what the dead one left (the join writes each part at its place and
cuts the file at its end, so a join cut short and done again ends the same), and the bytes it wrote past the first
part's own are removed with the parts when the upload ends.
Cancelling, or the hour passing, removes the parts; the ended upload's row is kept a day (a late ``complete`` then
says why it cannot) and then forgotten.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import re
import time
from collections.abc import Callable, Sequence
from dataclasses import replace
from typing import Any

import structlog

from ...ids import new_id
from ...process.periodic import Periodic
from ...protocol.errors import APIError, invalid_request, not_found
from ...store.base_uploads import (
    CompletionClaim,
    StoredUpload,
    StoredUploadPart,
    UploadCompleting,
    UploadNotPending,
    UploadPartsFull,
    UploadStore,
    UploadTooManyParts,
)
from ...store.records import StorageLimitExceeded, StoredFile
from .files import (
    FileService,
    Upload,
    check_expires_after,
    check_purpose,
    clean_filename,
    file_expiry,
    file_object,
    new_file_id,
)
from .quota import storage_limit_error

log = structlog.get_logger("responses_bridge.uploads")

UPLOAD_SECONDS = 3600
"""How long an upload takes parts, as OpenAI's."""
MAX_PART_BYTES = 64 << 20
"""The largest part, as OpenAI's (the SDK's default part size)."""
FORGET_SECONDS = 24 * 3600
"""How long an ended upload's row is kept after its expiry."""
MAX_PARTS = 1000
"""The default of ``max_upload_parts``: with the SDK's 64 MiB parts, far more than the largest file needs."""
CLAIM_SECONDS = 60
CLAIM_BYTES_PER_SECOND = 8 << 20
"""A completion's claim lasts :data:`CLAIM_SECONDS` plus a second per this many bytes of the upload: ample for a
join on a slow disk, short enough that a completion whose process died holds the upload for minutes, not for good."""
MAX_MIME_CHARS = 255
COPY_CHUNK = 1 << 20
PURGE_BATCH = 500
UPLOAD_ID = re.compile(r"upload_[0-9a-f]{32}")
MD5 = re.compile(r"[0-9a-fA-F]{32}")
REFUSALS = (LookupError, UploadNotPending, UploadPartsFull, UploadTooManyParts, UploadCompleting, StorageLimitExceeded)
"""What the store refuses a write with, answered by :func:`_refusal`."""


def status_at(upload: StoredUpload, now: int) -> str:
    """The upload's status at ``now``: a pending one past its hour has expired, whether or not the purge ran."""
    return "expired" if upload.status == "pending" and upload.expires_at <= now else upload.status


def upload_object(upload: StoredUpload, now: int, file: dict[str, Any] | None = None) -> dict[str, Any]:
    """OpenAI's Upload object; ``file`` the completed one's File object."""
    return {"id": upload.id, "object": "upload", "bytes": upload.bytes, "created_at": upload.created_at,
            "expires_at": upload.expires_at, "filename": upload.filename, "purpose": upload.purpose,
            "status": status_at(upload, now), "file": file}


def part_object(part: StoredUploadPart) -> dict[str, Any]:
    return {"id": part.id, "object": "upload.part", "created_at": part.created_at, "upload_id": part.upload_id}


def part_too_large(limit: int) -> APIError:
    return APIError(413, f"The part is too large: a part holds at most {limit} bytes (and no more than its upload "
                    "declared).", param="data", code="part_too_large")


def claim_seconds(size: int) -> int:
    """How long a completion's claim on an upload of ``size`` bytes lasts."""
    return CLAIM_SECONDS + size // CLAIM_BYTES_PER_SECOND


def _not_found(upload_id: str) -> APIError:
    return not_found(f"No such Upload object: {upload_id[:200]}", param="upload_id", code="not_found")


def _changed(upload_id: str) -> APIError:
    """A part's bytes went while the upload was being completed: another request completed or cancelled it."""
    return invalid_request(f"Upload {upload_id[:200]} changed while it was being completed.", param="upload_id",
                           code="upload_changed")


def _ended(upload_id: str, status: str) -> APIError:
    return invalid_request(f"Upload {upload_id[:200]} is {status}: it takes no more parts and cannot be completed.",
                           param="upload_id", code=f"upload_{status}")


def _required(body: dict[str, Any], name: str) -> Any:
    value = body.get(name)
    if value is None:
        raise invalid_request(f"Missing required parameter: '{name}'.", param=name, code="missing_required_parameter")
    return value


def _check_mime_type(value: object) -> str:
    if not isinstance(value, str) or not value.strip() or len(value) > MAX_MIME_CHARS or any(
            ord(char) < 32 or ord(char) == 127 for char in value):
        raise invalid_request(f"Invalid value for 'mime_type': expected a MIME type of at most {MAX_MIME_CHARS} "
                              "characters.", param="mime_type", code="invalid_value")
    return value


class UploadService:
    """Uploads over ``store`` (the rows) and ``files`` (the bytes, the tenants' budget, the File objects)."""

    def __init__(self, store: UploadStore, files: FileService, *, purge_interval: float = 60.0,
                 max_parts: int = MAX_PARTS, clock: Callable[[], float] = time.time) -> None:
        """``max_parts``: the most parts one upload may hold (``max_upload_parts``)."""
        self.store = store
        self.files = files
        self.max_parts = max_parts
        self._clock = clock
        self._purger = Periodic.purge("uploads", purge_interval, self.purge_expired)

    def _now(self) -> int:
        return int(self._clock())

    async def start(self) -> None:
        await self.purge_expired()
        self._purger.start()

    async def aclose(self) -> None:
        await self._purger.stop()

    # -- create -----------------------------------------------------------------------------------------------

    async def create(self, body: dict[str, Any], *, tenant: str) -> dict[str, Any]:
        """A pending upload of the file ``body`` declares; its Upload object. A size past the file limit, or past
        what the tenant has left of its stored bytes, is refused now rather than after its parts were sent."""
        size = _required(body, "bytes")
        if not isinstance(size, int) or isinstance(size, bool) or size < 0:
            raise invalid_request("Invalid value for 'bytes': expected a non-negative integer.", param="bytes",
                                  code="invalid_value")
        if size > self.files.max_bytes:
            raise invalid_request(f"Invalid value for 'bytes': this server accepts files up to {self.files.max_bytes} "
                                  "bytes (set by RESPONSES_BRIDGE_MAX_FILE_BYTES).", param="bytes",
                                  code="file_too_large")
        filename = _required(body, "filename")
        if not isinstance(filename, str):
            raise invalid_request("Invalid value for 'filename': expected a string.", param="filename",
                                  code="invalid_type")
        filename = clean_filename(filename, "filename")
        mime_type = _check_mime_type(_required(body, "mime_type"))
        purpose = check_purpose(body.get("purpose"))
        expires_after = _expires_after(body.get("expires_after"))
        limit = self.files.quota.limit(tenant)
        if limit is not None:
            used = await self.files.store.stored_bytes(self._now(), tenant=tenant)
            if used + size > limit:
                raise storage_limit_error(limit, used)
        now = self._now()
        upload = StoredUpload(id=new_id("upload"), created_at=now, expires_at=now + UPLOAD_SECONDS, bytes=size,
                              filename=filename, purpose=purpose, mime_type=mime_type,
                              file_expires_after=expires_after, status="pending", file_id=None)
        await self.store.create_upload(upload, tenant=tenant)
        return upload_object(upload, now)

    async def pending(self, upload_id: str, *, tenant: str) -> StoredUpload:
        """The tenant's upload if it still takes parts: a 404 for an unknown (or another tenant's) one, a 400 for
        one completed, cancelled or expired."""
        upload = await self.store.get_upload(upload_id, tenant=tenant) if UPLOAD_ID.fullmatch(upload_id) else None
        if upload is None:
            raise _not_found(upload_id)
        status = status_at(upload, self._now())
        if status != "pending":
            raise _ended(upload_id, status)
        return upload

    # -- parts ------------------------------------------------------------------------------------------------

    def receive_part(self, upload: StoredUpload, *, tenant: str) -> contextlib.AbstractAsyncContextManager[Upload]:
        """Where a part's bytes go as they arrive: at most :data:`MAX_PART_BYTES`, and no more than the upload
        declared (what was written is removed on leaving unless :meth:`add_part` stored it)."""
        return self.files.receive(tenant=tenant, max_bytes=min(MAX_PART_BYTES, upload.bytes), refusal=part_too_large)

    async def add_part(self, upload: StoredUpload, received: Upload) -> dict[str, Any]:
        """Store a received part of ``upload``; its Part object. Its bytes are published, then its row inserted
        with the checks (the upload still pending, the parts' total, the tenant's stored bytes); a refused part's
        bytes are removed. The parts together may hold one part more than declared: room to send again a part
        whose answer was lost, and no more."""
        if received.size == 0:
            raise invalid_request("The part is empty: 'data' must hold at least one byte.", param="data",
                                  code="invalid_value")
        part = StoredUploadPart(id=new_id("part"), upload_id=upload.id, created_at=self._now(), bytes=received.size,
                                blob_id=received.file_id)
        await received.writer.publish()
        received.stored = True
        try:
            with received.landing():
                await self.store.add_part(part, tenant=received.tenant, now=self._now(),
                                          max_parts_bytes=upload.bytes + min(MAX_PART_BYTES, upload.bytes),
                                          max_parts=self.max_parts,
                                          max_stored_bytes=self.files.quota.limit(received.tenant))
        except BaseException as error:
            await self.files.remove_bytes(part.blob_id)
            if isinstance(error, REFUSALS):
                raise _refusal(upload.id, error) from None
            raise
        return part_object(part)

    # -- complete and cancel ----------------------------------------------------------------------------------

    async def complete(self, upload_id: str, body: dict[str, Any], *, tenant: str) -> dict[str, Any]:
        """Join the parts ``part_ids`` names, in that order, into the upload's file; the Upload object, completed,
        with its File. Their size must be the declared one and their MD5 ``md5`` when given, else a 400 and the
        upload stays pending (the client may complete it again); parts not named are removed with the rest. While
        another completion of the upload is under way, a 409 before anything is copied."""
        upload = await self.pending(upload_id, tenant=tenant)
        md5 = body.get("md5")
        if md5 is not None and (not isinstance(md5, str) or not MD5.fullmatch(md5)):
            raise invalid_request("Invalid value for 'md5': expected 32 hexadecimal digits.", param="md5",
                                  code="invalid_value")
        try:
            chosen = _chosen_parts(_required(body, "part_ids"), await self.store.parts(upload.id, tenant=tenant))
            total = sum(part.bytes for part in chosen)
            if total != upload.bytes:
                raise invalid_request(f"The parts named hold {total} bytes; the upload was created for "
                                      f"{upload.bytes}.", param="part_ids", code="invalid_value")
        except APIError:
            # another completion may have committed since the check above, taking the parts' rows with it: that
            # request's answer is the upload's new state, not a complaint about part ids it named rightly
            await self.pending(upload_id, tenant=tenant)
            raise
        made = not chosen  # no part: an empty file, a blob of its own; else the first part's bytes become the file
        file_id = new_file_id() if made else chosen[0].blob_id
        claim = await self._claim(upload, CompletionClaim(token=new_id("claim"),
                                                          until=self._now() + claim_seconds(total), bytes=0,
                                                          blob_id=file_id if made else None), tenant)
        try:
            await self._join(upload, chosen, md5, file_id if made else None)
            now = self._now()
            file = StoredFile(id=file_id, created_at=now, bytes=total, filename=upload.filename,
                              purpose=upload.purpose,
                              expires_at=file_expiry(upload.purpose, upload.file_expires_after, now))
            blobs = await self.store.complete_upload(upload.id, file, tenant=tenant, now=now, token=claim.token,
                                                     max_stored_bytes=self.files.quota.limit(tenant))
        except BaseException as error:
            # a join's bytes past the first part's own stay until the upload ends (removed with the parts): cut
            # here, they could be a later claim's join under way
            if made:
                await self.files.remove_bytes(file_id)
            await self._let_go(upload.id, claim.token, tenant)
            if isinstance(error, REFUSALS):
                raise _refusal(upload.id, error) from None
            raise
        for blob_id in blobs:
            if blob_id != file_id:
                await self.files.remove_bytes(blob_id)
        return upload_object(replace(upload, status="completed", file_id=file_id), now, file_object(file))

    async def _claim(self, upload: StoredUpload, claim: CompletionClaim, tenant: str) -> CompletionClaim:
        """``claim`` made the upload's, before any byte is written: a 409 while another completion holds it. A
        lapsed claim's own blob (an empty file's) is removed."""
        try:
            lapsed = await self.store.claim_completion(upload.id, claim, tenant=tenant, now=self._now(),
                                                       max_stored_bytes=self.files.quota.limit(tenant))
        except REFUSALS as error:
            raise _refusal(upload.id, error) from None
        if lapsed is not None:
            await self.files.remove_bytes(lapsed)
        return claim

    async def _let_go(self, upload_id: str, token: str, tenant: str) -> None:
        """Release a failed completion's claim (its join's bytes already removed); if the store is away, the
        claim lapses instead."""
        try:
            await self.store.release_completion(upload_id, token, tenant=tenant)
        except Exception:  # the claim lapses at its time: the completion's own error is the answer
            log.warning("upload_claim_release_failed", upload_id=upload_id, exc_info=True)

    async def _join(self, upload: StoredUpload, parts: Sequence[StoredUploadPart], md5: str | None,
                    new_blob: str | None) -> None:
        """Make the file's bytes: the other parts joined into the first one's, where they are stored (no byte
        through this process, no second copy of the file); ``new_blob``: no part, an empty file published under
        that id. With ``md5`` the joined bytes are then read once and hashed: a mismatch is a 400."""
        digest = hashlib.md5(usedforsecurity=False)
        if new_blob is not None:
            writer = await self.files.contents.writer(new_blob)
            try:
                await writer.publish()
            except BaseException:
                await writer.discard()
                raise
        elif len(parts) > 1:
            try:
                await self.files.contents.extend(parts[0].blob_id, parts[0].bytes,
                                                 [(part.blob_id, part.bytes) for part in parts[1:]])
            except FileNotFoundError:  # a part's bytes went: the upload was completed or cancelled meanwhile
                raise _changed(upload.id) from None
        if md5 is not None:
            await self._hash(new_blob or parts[0].blob_id, digest, upload.id)
        _check_md5(md5, digest)

    async def _hash(self, blob_id: str, digest: Any, upload_id: str) -> None:
        reader = await self.files.contents.open(blob_id)
        if reader is None:  # the upload was completed or cancelled meanwhile
            raise _changed(upload_id)
        try:
            while chunk := await reader.read(COPY_CHUNK):
                await asyncio.to_thread(digest.update, chunk)  # hashlib lets go of the GIL for large chunks
        finally:
            await reader.aclose()

    async def cancel(self, upload_id: str, *, tenant: str) -> dict[str, Any]:
        """The upload cancelled, its parts removed; the Upload object. A cancelled one is answered again as it
        is; a completed or expired one is a 400."""
        upload = await self.store.get_upload(upload_id, tenant=tenant) if UPLOAD_ID.fullmatch(upload_id) else None
        if upload is None:
            raise _not_found(upload_id)
        now = self._now()
        try:
            blobs = await self.store.cancel_upload(upload.id, tenant=tenant, now=now)
        except (LookupError, UploadNotPending, UploadCompleting) as error:
            raise _refusal(upload.id, error) from None
        for blob_id in blobs:
            await self.files.remove_bytes(blob_id)
        return upload_object(replace(upload, status="cancelled"), now)

    # -- expiry -----------------------------------------------------------------------------------------------

    async def purge_expired(self) -> int:
        """Expire the uploads past their hour (their parts' bytes removed) and forget those ended a day ago."""
        changed_total = 0
        while True:
            now = self._now()
            changed, blobs = await self.store.expire_uploads(now, now - FORGET_SECONDS, PURGE_BATCH)
            for blob_id in blobs:
                await self.files.remove_bytes(blob_id)
            changed_total += changed
            if changed < PURGE_BATCH:
                break
        if changed_total:
            log.info("uploads_expired_purged", count=changed_total)
        return changed_total


def _expires_after(value: object) -> int | None:
    if value is None:
        return None
    if not isinstance(value, dict):
        raise invalid_request("Invalid value for 'expires_after': expected an object with 'anchor' and 'seconds'.",
                              param="expires_after", code="invalid_type")
    return check_expires_after(value.get("anchor"), value.get("seconds"))


def _chosen_parts(part_ids: object, stored: Sequence[StoredUploadPart]) -> list[StoredUploadPart]:
    """The stored parts ``part_ids`` names, in its order: each once, each a part of this upload."""
    if not isinstance(part_ids, list) or not all(isinstance(part_id, str) for part_id in part_ids):
        raise invalid_request("Invalid value for 'part_ids': expected an array of part ids.", param="part_ids",
                              code="invalid_type")
    by_id = {part.id: part for part in stored}
    chosen: list[StoredUploadPart] = []
    for index, part_id in enumerate(part_ids):
        part = by_id.pop(part_id, None)
        if part is None:
            again = any(earlier.id == part_id for earlier in chosen)
            raise invalid_request(f"Invalid value for 'part_ids[{index}]': "
                                  + ("named twice." if again else f"no part '{part_id[:200]}' in this upload."),
                                  param=f"part_ids[{index}]", code="invalid_value")
        chosen.append(part)
    return chosen


def _check_md5(md5: str | None, digest: Any) -> None:
    if md5 is not None and digest.hexdigest() != md5.lower():
        raise invalid_request(f"The parts' MD5 is {digest.hexdigest()}, not the 'md5' given: nothing was completed.",
                              param="md5", code="md5_mismatch")


def _refusal(upload_id: str, error: Exception) -> APIError:
    """The store's refusal in OpenAI's terms."""
    if isinstance(error, UploadNotPending):
        return _ended(upload_id, error.status)
    if isinstance(error, UploadCompleting):
        return APIError(409, f"Upload {upload_id[:200]} is being completed by another request: wait for its answer "
                        "(or retry after a while; a completion that failed lets go of it).", param="upload_id",
                        code="upload_completing")
    if isinstance(error, UploadTooManyParts):
        return invalid_request(f"Upload {upload_id[:200]} holds {error.limit} parts, the most one upload may hold "
                               "(max_upload_parts, RESPONSES_BRIDGE_MAX_UPLOAD_PARTS): complete it with the parts it "
                               "has, or cancel it and send larger parts.", param="data", code="too_many_parts")
    if isinstance(error, UploadPartsFull):
        return invalid_request(f"Upload {upload_id[:200]}'s parts would hold more than {error.limit} bytes: "
                               "complete it with the parts it has, or cancel it.", param="data",
                               code="upload_parts_full")
    if isinstance(error, StorageLimitExceeded):
        return storage_limit_error(error.limit, error.used)
    return _not_found(upload_id)
