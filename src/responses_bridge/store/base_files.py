"""The storage contract of files and what is made of them: an upload's bytes (:class:`FileBytes`), file metadata
(:class:`FileStore`), vector stores (:class:`VectorStoreStore`) and their chunk index (:class:`ChunkIndex`), and
the code interpreter's containers (:class:`ContainerStore`). The ownership rules of base.py hold here too;
base.py names these Protocols as well, for the callers that import every contract from there.
"""

from __future__ import annotations

import contextlib
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol, runtime_checkable

from .records import (
    ChunkRow,
    IndexedFile,
    KnownIds,
    NewFile,
    Page,
    StoredContainer,
    StoredContainerFile,
    StoredFile,
    StoredFileBatch,
    StoredVectorStore,
    StoredVectorStoreFile,
)

if TYPE_CHECKING:  # numpy is loaded by the vector store code that uses it, not by every importer of the contract
    import numpy as np


class ChunkIndex(Protocol):
    """Chunks are owned through their vector store: every read takes ``tenant`` and finds nothing (empty lists,
    no rows) unless the vector store is that tenant's, checked in the same statement as the read, so another
    tenant's store searches exactly like an unknown one.

    The writes take no tenant. They keep derived data in step and are called across tenants: by ingestion
    (workers only), and by the vector store service after the store's own tenant-checked change of the same
    rows succeeded (a file detached, a store deleted, attributes set), or when a file is deleted or purged."""

    async def replace_file_chunks(self, vector_store_id: str, file_id: str, filename: str, texts: Sequence[str],
                                  vectors: np.ndarray, attributes: Mapping[str, Any]) -> None:
        """The file's chunks become exactly ``texts`` (with ``vectors``, one row each), atomically. Across
        tenants: workers only."""
        ...

    async def delete_file_chunks(self, vector_store_id: str, file_id: str) -> None:
        """Across tenants: ingestion, and clean-up after a tenant-checked detach or a file's deletion."""

    async def delete_store_chunks(self, vector_store_id: str) -> None:
        """Across tenants: clean-up after a tenant-checked delete of the vector store."""

    async def set_file_attributes(self, vector_store_id: str, file_id: str, attributes: Mapping[str, Any]) -> None:
        """Across tenants: ingestion, and after a tenant-checked change of the file row's attributes."""

    async def file_chunks(self, vector_store_id: str, file_id: str, *, tenant: str) -> list[str]:
        """The file's chunk texts in document order."""
        ...

    async def indexed_files(self, vector_store_id: str, *, tenant: str) -> dict[str, IndexedFile]:
        """Every file with chunks in the store: its name and attributes (what filters are evaluated on)."""
        ...

    async def dense_candidates(self, vector_store_id: str, query: np.ndarray, file_ids: Sequence[str] | None,
                               limit: int, *, tenant: str) -> list[tuple[int, float]]:
        """Up to ``limit`` ``(chunk_id, cosine similarity)``, best first, among the files ``file_ids`` (None:
        all). ``query`` is a unit vector of the store's dimensions (else :class:`DimensionMismatch`)."""
        ...

    async def keyword_candidates(self, vector_store_id: str, terms: Sequence[str], file_ids: Sequence[str] | None,
                                 limit: int, *, tenant: str) -> list[tuple[int, float]]:
        """Up to ``limit`` ``(chunk_id, BM25 score > 0)``, best first, of chunks holding any of ``terms``."""
        ...

    async def chunk_rows(self, chunk_ids: Sequence[int], *, tenant: str) -> dict[int, ChunkRow]:
        """The rows of those chunks that belong to the tenant's vector stores (others are left out)."""
        ...


class BlobWriter(Protocol):
    """An upload's bytes on their way in, under the id the file will have."""

    file_id: str

    async def write(self, chunk: bytes) -> None: ...

    async def publish(self) -> None:
        """Make the bytes durable and readable under ``file_id``."""

    async def discard(self) -> None:
        """Remove what was written, unless it was published."""


class BlobReader(Protocol):
    size: int

    async def read(self, size: int) -> bytes:
        """Up to ``size`` bytes (at least one unless at the end); ``b""`` at the end."""

    async def aclose(self) -> None: ...


class FileBytes(Protocol):
    async def start(self) -> None: ...

    async def aclose(self) -> None: ...

    async def writer(self, file_id: str) -> BlobWriter: ...

    async def open(self, file_id: str) -> BlobReader | None:
        """The published bytes of ``file_id``, opened; None when there are none. A delete after the open does
        not cut the read short."""

    async def extend(self, file_id: str, kept: int, sources: Sequence[tuple[str, int]]) -> None:
        """The published blob ``file_id`` becomes its first ``kept`` bytes followed by the first ``count`` bytes of
        each ``(blob_id, count)`` of ``sources``, in order: an upload's parts joined into its first part, in place
        (no second copy of the file), copied where they are stored (the kernel's copy on disk, one transaction in
        PostgreSQL: no byte passes through this process). Whatever followed the first ``kept`` bytes is replaced,
        so a join cut short (a crash) and done again ends the same, and two at once write the same bytes at the
        same places. ``FileNotFoundError`` when a blob has no bytes, or fewer than named."""

    def local_copy(self, file_id: str) -> contextlib.AbstractAsyncContextManager[Path]:
        """A path on this machine holding the bytes while the block runs (what text extraction reads);
        ``FileNotFoundError`` when there are none."""

    async def remove(self, file_id: str) -> None: ...

    async def sweep(self, known_ids: KnownIds) -> int:
        """Remove the leftovers of dead uploads and bytes no metadata row names (past their grace); how many."""

    async def collect(self) -> int:
        """Remove what deletes left for later (periodically, with the expiry purge); how many."""


@runtime_checkable
class FileStore(Protocol):
    """File metadata, owned by tenants: every method taking ``tenant`` reads or changes only that tenant's rows
    (another tenant's file is exactly a missing one). The methods without ``tenant`` serve the expiry purge, the
    start-up sweep and ingestion, which work across tenants."""

    async def add_file(self, file: StoredFile, *, tenant: str, max_stored_bytes: int | None) -> None:
        """Insert ``file`` as ``tenant``'s. With ``max_stored_bytes``, the tenant's stored bytes (:meth:`stored_bytes`)
        plus this file's are checked against it in the same transaction as the insert, one such check of a tenant
        at a time (the container store's checks included): :class:`StorageLimitExceeded` (nothing written) when
        over, so uploads finishing at once, or an upload and a container file, cannot both pass."""

    async def get_file(self, file_id: str, now: int, *, tenant: str) -> StoredFile | None: ...

    async def list_files(self, *, tenant: str, now: int, purpose: str | None, after: str | None, limit: int,
                         order: str) -> tuple[list[StoredFile], bool]: ...

    async def delete_file(self, file_id: str, *, tenant: str) -> bool: ...

    async def stored_bytes(self, now: int, *, tenant: str) -> int:
        """What ``max_stored_bytes`` bounds: the bytes of the tenant's live files, of all its container files, of
        its skills' versions and its containers' skills (one budget: one per kind would let a tenant keep the limit
        several times over)."""

    async def get_file_any_tenant(self, file_id: str, now: int) -> StoredFile | None:
        """A live file whoever owns it. Across tenants: workers only (ingestion of an attached file)."""

    async def delete_expired_file(self, file_id: str, now: int) -> bool:
        """Delete the row if it has expired by ``now``. Across tenants: workers only (the expiry purge)."""

    async def expired_files(self, now: int, limit: int) -> list[str]:
        """Ids of files expired by ``now``. Across tenants: workers only (the expiry purge)."""

    async def known_ids(self, file_ids: Sequence[str]) -> set[str]:
        """Which ids have a row. Across tenants: workers only (the start-up sweep of orphans)."""


@runtime_checkable
class VectorStoreStore(Protocol):
    """Vector store metadata, owned by tenants. Every method taking ``tenant`` reads or changes only that tenant's
    stores, and their files and batches only through a store of that tenant, checked in the same statement or
    transaction; another tenant's store is exactly a missing one. Attaching files checks, in the attaching
    transaction, that each is a live file of the same tenant (:class:`UnknownFile` otherwise). The methods
    without ``tenant`` are for ingestion and file deletion, which work across tenants.

    The claim methods let ingestion workers of several processes share one database (PostgreSQL replicas): a
    worker claims a file row for a lease, renews it while it works and finishes the row only while it holds it.
    On SQLite one process owns the database, so a claim always succeeds for a row in progress."""

    async def create_store(self, store: StoredVectorStore, files: Sequence[NewFile], *, tenant: str) -> list[int]:
        """Insert the store and attach its first files atomically; the files' seqs, in order."""

    async def get_store(self, vector_store_id: str, *, tenant: str) -> StoredVectorStore | None: ...

    async def list_stores(self, *, tenant: str, limit: int, order: str, after: str | None = None,
                          before: str | None = None) -> Page: ...

    async def update_store(self, vector_store_id: str, changes: Mapping[str, Any], *, tenant: str) -> bool:
        """Set ``name``, ``metadata``, ``expires_after`` and/or ``last_active_at``; False for an unknown store."""

    async def delete_store(self, vector_store_id: str, *, tenant: str) -> bool: ...

    async def add_files(self, vector_store_id: str, created_at: int, files: Sequence[NewFile], *, tenant: str,
                        batch_id: str | None = None) -> list[int] | None:
        """Attach files (optionally as a new batch) atomically; their seqs, or None for an unknown store."""

    async def get_file(self, vector_store_id: str, file_id: str, *, tenant: str) -> StoredVectorStoreFile | None:
        ...

    async def list_files(self, vector_store_id: str, *, tenant: str, limit: int, order: str,
                         after: str | None = None, before: str | None = None, status: str | None = None,
                         batch_id: str | None = None) -> Page: ...

    async def set_file_attributes(self, vector_store_id: str, file_id: str, attributes: Mapping[str, Any], *,
                                  tenant: str) -> bool: ...

    async def delete_file(self, vector_store_id: str, file_id: str, *, tenant: str) -> bool: ...

    async def get_batch(self, vector_store_id: str, batch_id: str, *, tenant: str) -> StoredFileBatch | None: ...

    async def cancel_batch(self, vector_store_id: str, batch_id: str, *, tenant: str) -> bool: ...

    async def get_file_by_seq(self, seq: int) -> StoredVectorStoreFile | None:
        """Across tenants: workers only (an ingestion job's row)."""

    async def current_seq(self, vector_store_id: str, file_id: str) -> int | None:
        """The seq of the file's row in the store now, None if it has none. Across tenants: workers only."""

    async def finish_file(self, seq: int, status: str, *, usage_bytes: int = 0,
                          last_error: Mapping[str, Any] | None = None, owner: str | None = None) -> bool:
        """Across tenants: workers only (ingestion ends a row; with ``owner``, only while it holds the row)."""

    async def in_progress_files(self) -> list[StoredVectorStoreFile]:
        """Across tenants: workers only (ingestion resumes at start)."""

    async def has_files_to_ingest(self, *, unclaimed: bool) -> bool:
        """Whether any row is in progress (``unclaimed``: and nobody holds it, its lease unset or passed): one read,
        which tells a process whether to start ingestion (services/files/vector_stores_on_demand.py) without
        loading it. Across tenants: workers only."""

    async def claim_next(self, owner: str, lease_seconds: float, limit: int) -> list[StoredVectorStoreFile]:
        """Claim up to ``limit`` in-progress rows nobody holds, oldest first. Across tenants: workers only."""

    async def claim_file(self, seq: int, owner: str, lease_seconds: float) -> bool:
        """Claim or renew one in-progress row; False when another worker holds it or it is no longer in
        progress. Across tenants: workers only."""

    async def release_claims(self, owner: str | None) -> int:
        """Give up ``owner``'s claims (a worker stopping); ``None``: every claim (a process alone on its database,
        at start: they are all a dead process's). Across tenants: workers only."""

    async def delete_file_everywhere(self, file_id: str) -> list[str]:
        """Detach a deleted file from every store holding it; those stores' ids. Across tenants: workers only
        (the files service's deletion hook, run after the file's tenant-checked delete or its expiry)."""


class ContainerStore(Protocol):
    """Containers and their files' rows (their bytes are in :class:`FileBytes`, under ``blob_id``). Tenant-owned
    like every root object; a container past its expiry is answered as a missing one by every tenant method."""

    async def create_container(self, container: StoredContainer, *, tenant: str, max_containers: int | None) -> None:
        """Insert ``container`` as ``tenant``'s. With ``max_containers``, the tenant's live containers (at the
        container's ``created_at``) are counted in the inserting transaction, one such check of a tenant at a time:
        :class:`ContainerLimitExceeded` (nothing written) when there are that many already, so creates at once
        cannot all pass a count taken before any of them was inserted."""

    async def get_container(self, container_id: str, now: int, *, tenant: str) -> StoredContainer | None: ...

    async def list_containers(self, now: int, *, tenant: str, after: str | None, limit: int,
                              order: str) -> tuple[list[StoredContainer], bool]:
        """Live containers, newest first unless ``order`` is ``asc``; ``has_more``. Raises ``UnknownCursor`` for
        an ``after`` that is no live container of the tenant."""
        ...

    async def touch_container(self, container_id: str, now: int, *, tenant: str) -> bool:
        """Set ``last_active_at`` (a use restarts the expiry); False when the container is gone or expired."""
        ...

    async def set_container_network(self, container_id: str, network_policy: str | None, now: int, *,
                                    tenant: str) -> bool:
        """Replace a live container's stored network policy (an agent session's vault credentials changed):
        False when it is not the tenant's or not live."""
        ...

    async def set_container_packages(self, container_id: str, blob_id: str, now: int, *, tenant: str,
                                     size: int = 0, max_stored_bytes: int | None = None) -> bool:
        """Keep the packages installed in a live container (``StoredContainer.packages_blob``), counting ``size``
        bytes in the tenant's stored bytes: False when it is not the tenant's or not live (the caller removes the
        blob then); :class:`StorageLimitExceeded` when they would pass ``max_stored_bytes``."""
        ...

    async def delete_container(self, container_id: str, *, tenant: str) -> list[str] | None:
        """Delete the container and its files' rows; the blob ids to remove (its packages' among them), None when
        there was none."""
        ...

    async def count_containers(self, now: int, *, tenant: str) -> int: ...

    async def put_file(self, file: StoredContainerFile, *, tenant: str, max_container_bytes: int | None,
                       max_stored_bytes: int | None) -> str | None:
        """Add a file, or replace the one at the same path (its row keeps its id); returns the replaced file's
        blob id (to remove). Raises ``LookupError`` when the container is gone, ``PathConflict`` when a stored file
        is at a directory of the path or under it (a file and a directory of one name), and ``StorageLimitExceeded``
        when the container's bytes would pass ``max_container_bytes`` or the tenant's stored bytes (its live files
        and container files, :meth:`FileStore.stored_bytes`) ``max_stored_bytes``. Checked in the write's
        transaction, one such check of a tenant at a time, uploads' checks included: two writes at once cannot both
        pass."""
        ...

    async def get_file(self, container_id: str, file_id: str, *, tenant: str) -> StoredContainerFile | None: ...

    async def list_files(self, container_id: str, *, tenant: str, after: str | None, limit: int,
                         order: str) -> tuple[list[StoredContainerFile], bool]:
        """Files of a container, newest first unless ``order`` is ``asc``. The caller checked the container."""
        ...

    async def all_files(self, container_id: str, *, tenant: str) -> list[StoredContainerFile]:
        """Every file of a container, by path (to lay them out for a sandbox run)."""
        ...

    async def delete_file(self, container_id: str, file_id: str, *, tenant: str) -> str | None:
        """Delete one file's row; its blob id, None when there was none."""
        ...

    async def stored_bytes(self, *, tenant: str) -> int:
        """The bytes of every container file the tenant has (its part of ``max_stored_bytes``)."""
        ...

    async def expired_containers(self, now: int, limit: int) -> list[tuple[str, str]]:
        """(container id, tenant) of containers past their expiry, for the purge (across tenants)."""
        ...

    async def known_blobs(self, blob_ids: Sequence[str]) -> set[str]:
        """Which of ``blob_ids`` belong to a container file (so the file bytes sweep keeps them)."""
        ...
