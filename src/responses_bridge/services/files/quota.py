"""Per-tenant stored bytes (``max_stored_bytes``): the bound on the sum of a tenant's live file bytes, its
container files' bytes and its skills' bytes (one budget for every kind; skills' are checked by the store when a
version or a container's skill is inserted: store/base_skills.py).

An upload reserves each chunk before writing it, against the tenant's stored bytes plus what its other uploads under
way in this process have reserved, so two uploads at once cannot both pass the limit and a refused upload is stopped
at the chunk that crosses it, not after it was written whole. The reservation is released in the step its file's row
is known stored (its bytes are then counted by the store), or when the upload fails; while the insert is under way
its row may or may not be in what a read of the stored bytes sees, so such a read waits for it
(:meth:`StorageQuota.landing`): counted neither twice (a fitting upload refused) nor not at all. The store checks
the limit once more in the transaction that inserts the row (``FileStore.add_file``, and ``ContainerStore.put_file``
for a container file, which reserves nothing here): that check holds across processes sharing the database and
across both kinds of file, the reservations here only make the refusal early.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Awaitable, Callable, Iterator

from ...protocol.errors import APIError, invalid_request
from ...store.records import StorageLimitExceeded

STORED_READS = 8


def storage_limit_error(limit: int, used: int) -> APIError:
    """The 400 of an upload over its tenant's limit, naming the limit and the bytes in use."""
    return invalid_request(f"Storing this file would exceed the storage limit of {limit} bytes for this tenant "
                           f"({used} bytes in use). Delete files or container files to make room.", param="file",
                           code="storage_limit_exceeded")


class StorageQuota:
    """Reservations of uploads under way, per tenant, against ``limit_of(tenant)`` (None: no limit, and nothing
    is counted). ``stored_of(tenant)`` reads the tenant's stored bytes (files and container files) from the
    store."""

    def __init__(self, limit_of: Callable[[str], int | None], stored_of: Callable[[str], Awaitable[int]]) -> None:
        self._limit_of = limit_of
        self._stored_of = stored_of
        self._reserved: dict[str, int] = {}
        self._moves: dict[str, int] = {}  # per tenant, moves on every release and every insert begun or ended
        self._landing: dict[str, int] = {}  # per tenant, the inserts under way of rows whose bytes are reserved
        self._landed: dict[str, asyncio.Event] = {}  # per tenant with inserts under way, set when none is left

    def limit(self, tenant: str) -> int | None:
        return self._limit_of(tenant)

    async def reserve(self, tenant: str, count: int, held: int) -> bool:
        """Reserve ``count`` more bytes for one of ``tenant``'s uploads, which holds ``held`` already; False when
        the tenant has no limit (nothing reserved). Raises :class:`StorageLimitExceeded` when the stored bytes,
        the bytes every upload reserved and these would pass the limit; its ``used`` is what is in use without
        this upload (stored, and reserved by the others)."""
        limit = self._limit_of(tenant)
        if limit is None:
            return False
        stored = await self._stored(tenant)
        reserved = self._reserved.get(tenant, 0)  # read after the store, with no await between: see _stored
        if stored + reserved + count > limit:
            raise StorageLimitExceeded(limit, stored + reserved - held)
        self._reserved[tenant] = reserved + count
        return True

    def release(self, tenant: str, count: int) -> None:
        """Give back ``count`` reserved bytes: call after the file's row is stored, or when the upload failed."""
        if count <= 0:
            return
        left = self._reserved.get(tenant, 0) - count
        if left > 0:
            self._reserved[tenant] = left
        else:
            self._reserved.pop(tenant, None)
        self._moved(tenant)

    @contextlib.contextmanager
    def landing(self, tenant: str) -> Iterator[None]:
        """Around the insert of a row whose bytes an upload reserved: reads of ``tenant``'s stored bytes wait
        for it to end. The upload releases its reservation when this ends without an error, with no await
        between: from then on only the row counts its bytes."""
        self._landing[tenant] = self._landing.get(tenant, 0) + 1
        self._landed.setdefault(tenant, asyncio.Event())
        self._moved(tenant)
        try:
            yield
        finally:
            left = self._landing[tenant] - 1
            if left:
                self._landing[tenant] = left
            else:
                del self._landing[tenant]
                self._landed.pop(tenant).set()
            self._moved(tenant)

    def _moved(self, tenant: str) -> None:
        self._moves[tenant] = self._moves.get(tenant, 0) + 1

    async def _stored(self, tenant: str) -> int:
        """The tenant's stored bytes, read when no insert of a reserved upload's row is under way, and read again
        when one began or an upload was released during the read: such a row may have landed after the read's
        snapshot while its reservation was already gone (counted by neither), or before it while its reservation
        was still held (counted twice). Past a few reads (uploads ending all the time) the last is taken: the
        store's own check at insert still holds the limit."""
        for _ in range(STORED_READS):
            while (landed := self._landed.get(tenant)) is not None:
                await landed.wait()
            moves = self._moves.get(tenant, 0)
            stored = await self._stored_of(tenant)
            if self._moves.get(tenant, 0) == moves:
                break
        return stored
