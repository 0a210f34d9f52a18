"""Background ingestion of vector store files: extract, chunk, embed, index, one file at a time per worker.

Each attached file is a row ``in_progress`` (the vector store store); a job takes it to ``completed`` or ``failed``
with ``last_error {code, message}``. One file failing never touches another, so a batch with a bad file still
completes. Jobs live only in the database: at start every row still ``in_progress`` (a previous process stopped
mid-way) is queued again, so ingestion resumes after a restart. At most ``concurrency`` files are processed at
once; text extraction and chunking (CPU-bound, sync) run in a worker thread so the event loop keeps serving.
A long queue writes a progress line to the log every few seconds. Ingestion works across tenants (its store calls
take no tenant): a row was attached by its store's tenant, with that tenant's file.

When several processes share the database (PostgreSQL replicas), each file is claimed before it is ingested
(store/postgres/files/vector_stores.py): the worker holds a lease on the row, renews it while it works, and finishes
the row only while it holds it, so no file is ingested by two replicas at once. With ``poll_interval`` set the
worker also polls for rows nobody holds (attached through another replica, or left by a replica that died and
whose lease passed) whenever it has a free slot.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import socket
import time
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol

import structlog

from ...store.base import ChunkIndex, VectorStoreStore
from ...store.records import StoredVectorStoreFile
from .retrieval.chunking import StaticChunking, chunk_text, parse_chunking_strategy
from .retrieval.embedders import Embedder

if TYPE_CHECKING:  # imported by the first file embedded, not at start (store/sqlite/files/chunks.py says why)
    import numpy

log = structlog.get_logger("responses_bridge.ingestion")

PROGRESS_EVERY_SECONDS = 10.0
EMBED_BATCH = 256
"""Texts per embedder call: bounds the memory of one call for a large file and lets other jobs interleave."""
LEASE_SECONDS = 60.0
"""How long a claim on a file lasts without renewal: how soon another replica takes over from one that died."""


class FileSource(Protocol):
    """What vector stores need of the Files service (files.py): a tenant's file, to attach it; and for
    ingestion, across tenants, the file an attachment names (attached only by its own tenant)."""

    async def get(self, file_id: str, *, tenant: str) -> dict[str, Any] | None: ...

    async def get_any_tenant(self, file_id: str) -> dict[str, Any] | None: ...

    def local_copy(self, file_id: str) -> contextlib.AbstractAsyncContextManager[Path]:
        """A path holding the file's bytes while the block runs."""
        ...


@dataclass(frozen=True, slots=True)
class Job:
    seq: int
    vector_store_id: str
    file_id: str


class _ClaimLost(Exception):
    """Another worker holds the file now (this one's lease passed): it ingests the file, this one stops."""


class IngestionFailure(Exception):
    """A file that cannot be ingested, with the ``last_error`` code OpenAI uses."""

    def __init__(self, code: str, message: str) -> None:
        super().__init__(message)
        self.code = code
        self.message = message


@dataclass(slots=True)
class _Progress:
    done: int = 0
    failed: int = 0
    started: float = 0.0
    logged: float = 0.0


def worker_name() -> str:
    """This process's name as a claimant: host, pid and a random part (a restarted pod may reuse both)."""
    return f"{socket.gethostname()}:{os.getpid()}:{os.urandom(4).hex()}"


class IngestionWorker:
    def __init__(self, store: VectorStoreStore, files: FileSource, chunks: ChunkIndex, embedder: Embedder,
                 *, concurrency: int = 2, poll_interval: float | None = None,
                 lease_seconds: float = LEASE_SECONDS, owner: str | None = None) -> None:
        self.owner = owner or worker_name()
        self._lease = lease_seconds
        self._poll_interval = poll_interval
        self._poller: asyncio.Task[None] | None = None
        self._queued: set[int] = set()  # seqs queued or running here: a poll never queues one twice
        self._store = store
        self._files = files
        self._chunks = chunks
        self._embedder = embedder
        self._concurrency = max(1, concurrency)
        self._queue: asyncio.Queue[Job] = asyncio.Queue()
        self._workers: list[asyncio.Task[None]] = []
        self._running = 0
        self._progress = _Progress()
        self._idle = asyncio.Event()
        self._idle.set()
        # one job at a time per (store, file): a job for a row replaced by a re-add must not write its chunks
        # after the new row's job wrote them
        self._file_locks: dict[tuple[str, str], tuple[asyncio.Lock, int]] = {}

    async def start(self) -> int:
        """Start the workers and queue the files a previous process left in progress; how many were queued.
        With polling (a shared database) the poll takes them, as many as there are free slots."""
        for number in range(self._concurrency):
            self._workers.append(asyncio.create_task(self._work(), name=f"ingestion-{number}"))
        if self._poll_interval is not None:
            self._poller = asyncio.create_task(self._poll(self._poll_interval), name="ingestion-poll")
            return 0
        # alone on the database (no polling): every claim left is a dead process's, however long its lease
        await self._store.release_claims(None)
        leftover = await self._store.claim_next(self.owner, self._lease, 1 << 31)
        if leftover:
            log.info("ingestion_resumed", files=len(leftover))
            self.enqueue(_job(row) for row in leftover)
        return len(leftover)

    async def _poll(self, interval: float) -> None:
        while True:
            free = self._concurrency - self.pending
            if free > 0:
                try:
                    rows = await self._store.claim_next(self.owner, self._lease, free)
                except Exception:  # the database is away: the next poll tries again
                    log.exception("ingestion_poll_failed")
                else:
                    if rows:
                        log.info("ingestion_claimed", files=len(rows), worker=self.owner)
                    self.enqueue(_job(row) for row in rows)
            await asyncio.sleep(interval)

    def enqueue(self, jobs: Iterable[Job]) -> None:
        for job in jobs:
            if job.seq in self._queued:
                continue
            self._queued.add(job.seq)
            if self._queue.empty() and self._running == 0:
                self._progress = _Progress(started=time.monotonic(), logged=time.monotonic())
            self._idle.clear()
            self._queue.put_nowait(job)

    @property
    def pending(self) -> int:
        """Files queued or being processed."""
        return self._queue.qsize() + self._running

    async def wait_idle(self) -> None:
        """Until no file is queued or being processed."""
        await self._idle.wait()

    async def close(self) -> None:
        """Stop at once: files being processed stay ``in_progress`` and are resumed by the next start (or, on a
        shared database, by another replica's next poll: this worker's claims are given up)."""
        tasks = [*self._workers, *([self._poller] if self._poller is not None else [])]
        for task in tasks:
            task.cancel()
        for task in tasks:
            with contextlib.suppress(asyncio.CancelledError):
                await task
        self._workers.clear()
        self._poller = None
        try:
            await self._store.release_claims(self.owner)
        except Exception:  # the database is already away: the leases run out instead
            log.exception("ingestion_release_failed", worker=self.owner)

    async def _work(self) -> None:
        while True:
            job = await self._queue.get()
            self._running += 1
            key = (job.vector_store_id, job.file_id)
            lock, users = self._file_locks.get(key) or (asyncio.Lock(), 0)
            self._file_locks[key] = (lock, users + 1)
            try:
                async with lock:
                    failed = await self._run(job)
            except Exception:  # a store failure: the row stays in progress for the next start
                log.exception("ingestion_job_error", vector_store_id=job.vector_store_id, file_id=job.file_id)
                failed = True
            finally:
                lock, users = self._file_locks[key]
                if users == 1:
                    del self._file_locks[key]
                else:
                    self._file_locks[key] = (lock, users - 1)
                self._running -= 1
                self._queued.discard(job.seq)
                self._queue.task_done()
            self._count(failed)

    def _count(self, failed: bool) -> None:
        progress = self._progress
        progress.done += 1
        progress.failed += failed
        now = time.monotonic()
        idle = self.pending == 0
        long_run = now - progress.started >= PROGRESS_EVERY_SECONDS
        if now - progress.logged >= PROGRESS_EVERY_SECONDS or (idle and long_run):
            progress.logged = now
            log.info("ingestion_progress", done=progress.done, failed=progress.failed, remaining=self.pending,
                     elapsed_seconds=round(now - progress.started, 1))
        if idle:
            self._idle.set()

    async def _run(self, job: Job) -> bool:
        """Ingest one file; True when it ended failed (or was dropped)."""
        if not await self._store.claim_file(job.seq, self.owner, self._lease):
            return False  # deleted, cancelled or re-added since it was queued, or another worker has it
        row = await self._store.get_file_by_seq(job.seq)
        if row is None or row.status != "in_progress":
            return False
        renewing = asyncio.create_task(self._renew(job.seq), name=f"ingestion-lease-{job.seq}")
        try:
            usage = await self._ingest(row)
        except IngestionFailure as failure:
            await self._store.finish_file(job.seq, "failed", owner=self.owner,
                                          last_error={"code": failure.code, "message": failure.message})
            log.info("ingestion_file_failed", vector_store_id=job.vector_store_id, file_id=job.file_id,
                     code=failure.code, message=failure.message)
            return True
        except _ClaimLost:
            log.warning("ingestion_claim_lost", vector_store_id=job.vector_store_id, file_id=job.file_id)
            return False
        finally:
            renewing.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await renewing
        if not await self._store.finish_file(job.seq, "completed", usage_bytes=usage, owner=self.owner):
            # cancelled or deleted while it ran: its chunks must not stay searchable
            await self._drop_chunks_unless_current(job)
            return False
        return False

    async def _renew(self, seq: int) -> None:
        """Renew the claim on ``seq`` every third of the lease while the file is ingested."""
        while True:
            await asyncio.sleep(self._lease / 3)
            try:
                if not await self._store.claim_file(seq, self.owner, self._lease):
                    return  # gone, cancelled or taken over: the chunk write checks again and stops
            except Exception:  # the database is away: the next renewal tries again, within the lease
                log.exception("ingestion_lease_renewal_failed", seq=seq)

    async def _ingest(self, row: StoredVectorStoreFile) -> int:
        file = await self._files.get_any_tenant(row.file_id)
        if file is None:
            raise IngestionFailure("invalid_file", f"File '{row.file_id}' no longer exists.")
        filename = str(file.get("filename") or row.file_id)
        strategy = parse_chunking_strategy(row.chunking)
        try:
            async with self._files.local_copy(row.file_id) as path:
                texts = await self._extract(path, filename, strategy, row.file_id)
        except OSError as error:
            raise IngestionFailure("invalid_file", f"The file could not be read: {error}") from None
        vectors = await self._embed(texts)
        current = await self._store.get_file_by_seq(row.seq)
        if current is None or current.status != "in_progress":
            return 0
        if not await self._store.claim_file(row.seq, self.owner, self._lease):
            raise _ClaimLost(row.file_id)
        await self._chunks.replace_file_chunks(row.vector_store_id, row.file_id, filename, texts, vectors,
                                               current.attributes)
        latest = await self._store.get_file_by_seq(row.seq)
        if latest is not None and latest.attributes != current.attributes:  # updated while the chunks were written
            await self._chunks.set_file_attributes(row.vector_store_id, row.file_id, latest.attributes)
        return sum(len(text.encode()) for text in texts) + int(vectors.nbytes)

    async def _extract(self, path: Path, filename: str, strategy: StaticChunking, file_id: str) -> list[str]:
        """The file's chunks. Whatever goes wrong in here is this file's failure, with a reason: a file that
        breaks the extractor in a way nobody foresaw (a RecursionError once did) must end ``failed``, not stay
        ``in_progress`` and be tried again at every start."""
        from .retrieval.extract import ExtractionError  # with the HTML, XML and CSV parsers: the first file loads them

        try:
            return await asyncio.to_thread(_extract_and_chunk, path, filename, strategy)
        except ExtractionError as error:
            raise IngestionFailure(error.code, error.message) from None
        except (OSError, UnicodeError, ValueError) as error:
            raise IngestionFailure("invalid_file", f"The file could not be read: {error}") from None
        except Exception as error:  # noqa: BLE001  (a poison pill fails its file, never the worker)
            log.warning("ingestion_extract_crashed", file_id=file_id, error=type(error).__name__)
            raise IngestionFailure("invalid_file", "The file's text could not be extracted "
                                   f"({type(error).__name__}).") from None

    async def _embed(self, texts: list[str]) -> numpy.ndarray:
        import numpy

        if not texts:
            return numpy.zeros((0, self._embedder.dimensions), dtype=numpy.float32)
        try:
            parts = [await self._embedder.embed(texts[start:start + EMBED_BATCH])
                     for start in range(0, len(texts), EMBED_BATCH)]
        except Exception as error:  # noqa: BLE001  (the embedder's failure is this file's failure)
            raise IngestionFailure("server_error", f"Embedding the file's chunks failed: {error}") from None
        return parts[0] if len(parts) == 1 else numpy.vstack(parts)

    async def _drop_chunks_unless_current(self, job: Job) -> None:
        """The chunks go when the row is gone or ended without them (cancelled, failed); they stay when the row
        was re-added (its own job writes them) or another worker holds or completed it (same file, same
        chunks)."""
        current = await self._store.current_seq(job.vector_store_id, job.file_id)
        if current is not None and current == job.seq:
            row = await self._store.get_file_by_seq(job.seq)
            drop = row is None or row.status in ("cancelled", "failed")
        else:
            drop = current is None
        if drop:
            await self._chunks.delete_file_chunks(job.vector_store_id, job.file_id)


def _extract_and_chunk(path: Path, filename: str, strategy: StaticChunking) -> list[str]:
    from .retrieval.extract import extract_text

    return chunk_text(extract_text(path, filename), strategy)


def _job(row: StoredVectorStoreFile) -> Job:
    return Job(seq=row.seq, vector_store_id=row.vector_store_id, file_id=row.file_id)


def jobs_for(vector_store_id: str, file_ids: Iterable[str], seqs: Iterable[int]) -> list[Job]:
    return [Job(seq=seq, vector_store_id=vector_store_id, file_id=file_id) for file_id, seq in zip(file_ids, seqs,
                                                                                                   strict=True)]
