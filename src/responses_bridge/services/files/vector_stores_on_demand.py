"""The Vector Stores API, its ingestion and the deployment's embedder, built by their first use.

Retrieval (the embedders, chunking, extraction, search), ingestion and the vector store service are a large part of
the files capability's code, and most deployments never use them: an idle sidecar keeps none of it
(tests/unit/test_idle_imports.py). :class:`VectorStoresOnDemand` stands in their place from the start and builds
the service (imported on a worker thread: process/off_loop_import.py) on the first request that needs it: the
first under ``/vector_stores`` (adapters/http/app.py), the first ``file_search`` call (it is the tool's
searcher), the first ``POST /v1/embeddings`` the embedder answers (:meth:`embeddings`).

What the service must do without a request is decided here by reads of the store alone, which load none of it:

* at start, alone on the database, ingestion resumes when a previous process left a file in progress;
* on a shared database (PostgreSQL, or ``serve --workers``) a light poll looks every ``poll_interval`` for files
  nobody holds (attached through another replica, or left by one that died and whose claim lapsed) and builds the
  service, whose ingestion then polls and claims them itself, on the first it finds;
* a deleted file leaves every vector store it was in (:meth:`forget_file`): the store's rows and the chunk index,
  which the service does not hold.

The embedder's names (``GET /v1/models``, which model ``POST /v1/embeddings`` answers) come from the settings
(embedder_names.py), so listing or passing an embeddings request through loads nothing either.
"""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

import structlog

from ...process.off_loop_import import import_off_loop
from ...process.periodic import Periodic
from ...protocol.files.search_options import SearchOptions
from ...store.base import ChunkIndex, VectorStoreStore
from .embedder_names import EmbedderNames, names_from_settings

if TYPE_CHECKING:
    from ...config.settings import Settings
    from .embeddings import EmbeddingService
    from .ingestion import FileSource
    from .retrieval.embedders import Embedder
    from .vector_stores import VectorStoreService

log = structlog.get_logger("responses_bridge.ingestion")


class VectorStoresOnDemand:
    """The Vector Stores API over ``store``, ``files`` and ``chunks``, with the embedder ``settings`` name, built by
    :meth:`service` on first use; the ``file_search`` tool's searcher. ``poll_interval``: set when other processes
    share the database (ingestion looks for their files); ``concurrency``, ``lease_seconds``: the ingestion's
    (services/files/ingestion.py)."""

    def __init__(self, store: VectorStoreStore, files: FileSource, chunks: ChunkIndex, settings: Settings, *,
                 concurrency: int = 2, poll_interval: float | None = None,
                 lease_seconds: float | None = None) -> None:
        self.store = store
        self.files = files
        self.chunks = chunks
        self.names: EmbedderNames = names_from_settings(settings)
        self._settings = settings
        self._concurrency = concurrency
        self._poll_interval = poll_interval
        self._lease_seconds = lease_seconds
        self._embedder: Embedder | None = None
        self._service: VectorStoreService | None = None
        self._embeddings: EmbeddingService | None = None
        self._building = asyncio.Lock()
        self._closed = False
        # a shared database: the light poll, until it finds work and the service's own ingestion polls instead
        self._watch = Periodic(poll_interval or 0, self._look_for_work, name="ingestion-watch",
                               failure="ingestion_poll_failed", first_delay=0)

    @property
    def loaded(self) -> VectorStoreService | None:
        """The service once something built it; None before."""
        return self._service

    @property
    def embedder(self) -> Embedder:
        """The deployment's embedder (retrieval/embedders.py), built by the first caller."""
        if self._embedder is None:
            from .retrieval.embedders import embedder_from_settings

            self._embedder = embedder_from_settings(self._settings)
        return self._embedder

    async def start(self) -> None:
        """Alone on the database: build the service (its ingestion resumes them) when a previous process left files
        in progress. Shared: start the light poll for files nobody holds."""
        if self._poll_interval is not None:
            self._watch.start()
        elif await self.store.has_files_to_ingest(unclaimed=False):
            await self.service()

    async def _look_for_work(self) -> None:
        """One look of the light poll; once the service is built its ingestion polls, and this looks no more."""
        if self._service is None and await self.store.has_files_to_ingest(unclaimed=True):
            log.info("ingestion_work_found")
            await self.service()

    async def service(self) -> VectorStoreService:
        """The vector store service, built and its ingestion started by the first caller (concurrent first callers
        wait for that one)."""
        if self._service is not None:
            return self._service
        async with self._building:
            if self._service is None:
                await import_off_loop(".vector_stores", __package__)
                from .vector_stores import VectorStoreService

                options: dict[str, Any] = {} if self._lease_seconds is None else {"lease_seconds": self._lease_seconds}
                service = VectorStoreService(self.store, self.files, self.chunks, self.embedder,
                                             concurrency=self._concurrency, poll_interval=self._poll_interval,
                                             **options)
                if not self._closed:  # once closed (the process stopping) no ingestion starts any more
                    await service.start()
                self._service = service
        return self._service

    async def embeddings(self) -> EmbeddingService:
        """The Embeddings API over the embedder (services/files/embeddings.py), built by the first request it
        answers."""
        if self._embeddings is None:
            await import_off_loop(".embeddings", __package__)
            from .embeddings import EmbeddingService

            self._embeddings = EmbeddingService(self.embedder)
        return self._embeddings

    async def search(self, vector_store_ids: Sequence[str], query: str, options: SearchOptions, *,
                     tenant: str) -> list[dict[str, Any]]:
        """``FileSearcher`` for the ``file_search`` tool (run/tools/file_search.py): the service's search."""
        return await (await self.service()).search(vector_store_ids, query, options, tenant=tenant)

    async def forget_file(self, file_id: str) -> None:
        """A deleted file leaves every vector store: its rows (so counts and usage follow) and its chunks (so
        search no longer finds it). A job still queued for it finds no row and is dropped; one running finds
        its row gone when it finishes and drops what it wrote. Across tenants: the files service's deletion
        hook, after the file's own (tenant-checked, or expiry) delete; a file is only ever attached to its
        tenant's stores. One statement of the store when the file was in none: nothing is loaded for it."""
        for vector_store_id in await self.store.delete_file_everywhere(file_id):
            await self.chunks.delete_file_chunks(vector_store_id, file_id)

    async def close(self) -> None:
        """Stop the poll and the ingestion (files in progress resume on the next start) and close the embedder."""
        self._closed = True
        await self._watch.stop()
        async with self._building:
            if self._service is not None:
                await self._service.close()
        if self._embedder is not None:
            await self._embedder.aclose()
