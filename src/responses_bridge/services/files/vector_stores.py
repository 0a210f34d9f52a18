"""OpenAI's Vector Stores API, shared by the HTTP door and the ``file_search`` tool.

Validates requests, renders objects in OpenAI's shapes (``vector_store``, ``vector_store.file``,
``vector_store.files_batch``, search result pages), queues ingestion (ingestion.py) and searches. Counts,
usage and status are computed from the file rows at read time (store/sqlite/files/vector_stores.py), so they are always
true.

Each vector store records the name of the embedder that built it. A store built by another embedder (the
configuration changed) is refused for search and for new files with a 400 that says so: vectors of two models in
one index would rank nonsense without any error.

Every method takes the caller's tenant and the store enforces it: another tenant's vector store (and its files,
batches, chunks) answers exactly as a missing one, with the same 404, and only the tenant's own files can be
attached.
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import Iterator, Mapping, Sequence
from typing import Any

from ... import ids
from ...protocol.errors import APIError, invalid_request, not_found, objects_in
from ...protocol.files.search_options import SearchOptions, parse_search_options
from ...protocol.metadata import check_metadata
from ...store.base import ChunkIndex, VectorStoreStore
from ...store.records import NewFile, StoredFileBatch, StoredVectorStore, StoredVectorStoreFile, UnknownFile
from ..pagination import page_errors
from .ingestion import LEASE_SECONDS, FileSource, IngestionWorker, jobs_for
from .retrieval.chunking import chunking_strategy_object, parse_chunking_strategy
from .retrieval.embedders import Embedder
from .retrieval.search import search, search_queries
from .vector_store_shapes import (
    MAX_FILES_PER_BATCH,
    MAX_FILES_PER_CREATE,
    check_attributes,
    check_file_id,
    check_file_ids,
    check_queries,
    expires_after,
    is_expired,
    list_page,
    render_batch,
    render_file,
    render_store,
    status_filter,
    store_name,
    store_not_found,
)

ACTIVITY_RESOLUTION_SECONDS = 60
"""``last_active_at`` moves on a search only when it is older than this: expiry counts in days, and a busy store
must not cost a write per search."""


# -- rendering --------------------------------------------------------------------------------------------------


# -- validation -------------------------------------------------------------------------------------------------


class VectorStoreService:
    """The Vector Stores API and, for the tool loop, the ``FileSearcher`` of run/tools/file_search.py."""

    def __init__(self, store: VectorStoreStore, files: FileSource, chunks: ChunkIndex, embedder: Embedder,
                 *, concurrency: int = 2, poll_interval: float | None = None,
                 lease_seconds: float = LEASE_SECONDS) -> None:
        self.store = store
        self.files = files
        self.chunks = chunks
        self.embedder = embedder
        # poll_interval: set when other processes share the database (their attached files, their leftovers)
        # lease_seconds: how long a claim on a file outlives its replica (ingestion.py)
        self.worker = IngestionWorker(store, files, chunks, embedder, concurrency=concurrency,
                                      poll_interval=poll_interval, lease_seconds=lease_seconds)

    async def start(self) -> None:
        """Start ingestion; files a previous process left in progress are queued again."""
        await self.worker.start()

    async def close(self) -> None:
        await self.worker.close()

    # -- vector stores ---------------------------------------------------------------------------------------

    async def create(self, body: Mapping[str, Any], *, tenant: str) -> dict[str, Any]:
        name = store_name(body.get("name"))
        description = body.get("description")
        if description is not None and not isinstance(description, str):
            raise invalid_request("Invalid type for 'description': expected a string.", param="description",
                                  code="invalid_type")
        metadata = body.get("metadata")
        check_metadata(metadata)
        expiry = expires_after(body.get("expires_after"))
        file_ids = check_file_ids(body.get("file_ids"), "file_ids", MAX_FILES_PER_CREATE)
        chunking = chunking_strategy_object(parse_chunking_strategy(body.get("chunking_strategy")))
        await self._check_files_exist(file_ids, "file_ids", tenant)
        now = int(time.time())
        stored = StoredVectorStore(id=ids.new_id("vs"), created_at=now, name=name, description=description,
                                   metadata=metadata or {}, expires_after=expiry, last_active_at=now,
                                   embedder=self.embedder.name)
        files = [NewFile(file_id, {}, chunking) for file_id in dict.fromkeys(file_ids)]
        with _unknown_files(file_ids, "file_ids"):
            seqs = await self.store.create_store(stored, files, tenant=tenant)
        self.worker.enqueue(jobs_for(stored.id, [f.file_id for f in files], seqs))
        return render_store(await self._get(stored.id, tenant))

    async def list_stores(self, *, tenant: str, limit: int, order: str, after: str | None,
                          before: str | None) -> dict[str, Any]:
        with page_errors("vector store"):
            page = await self.store.list_stores(tenant=tenant, limit=limit, order=order, after=after, before=before)
        return list_page(page, render_store, lambda store: store.id)

    async def get(self, vector_store_id: str, *, tenant: str) -> dict[str, Any]:
        return render_store(await self._get(vector_store_id, tenant))

    async def update(self, vector_store_id: str, body: Mapping[str, Any], *, tenant: str) -> dict[str, Any]:
        changes: dict[str, Any] = {}
        if "name" in body:
            changes["name"] = store_name(body["name"])
        if "metadata" in body:
            check_metadata(body["metadata"])
            changes["metadata"] = body["metadata"] or {}
        if "expires_after" in body:
            changes["expires_after"] = expires_after(body["expires_after"])
        current = await self._get(vector_store_id, tenant)
        if is_expired(current):
            raise self._expired(vector_store_id)
        changes["last_active_at"] = int(time.time())
        if not await self.store.update_store(vector_store_id, changes, tenant=tenant):
            raise store_not_found(vector_store_id)
        return await self.get(vector_store_id, tenant=tenant)

    async def delete(self, vector_store_id: str, *, tenant: str) -> dict[str, Any]:
        if not await self.store.delete_store(vector_store_id, tenant=tenant):
            raise store_not_found(vector_store_id)
        await self.chunks.delete_store_chunks(vector_store_id)
        return {"id": vector_store_id, "object": "vector_store.deleted", "deleted": True}

    # -- files -----------------------------------------------------------------------------------------------

    async def add_file(self, vector_store_id: str, body: Mapping[str, Any], *, tenant: str) -> dict[str, Any]:
        if "file_id" not in body:
            raise invalid_request("Missing required parameter: 'file_id'.", param="file_id",
                                  code="missing_required_parameter")
        file_id = check_file_id(body["file_id"], "file_id")
        attributes = check_attributes(body.get("attributes"))
        chunking = chunking_strategy_object(parse_chunking_strategy(body.get("chunking_strategy")))
        await self._writable(vector_store_id, tenant)
        await self._check_files_exist([file_id], "file_id", tenant)
        await self._attach(vector_store_id, [NewFile(file_id, attributes, chunking)], tenant, param="file_id")
        return await self.get_file(vector_store_id, file_id, tenant=tenant)

    async def list_files(self, vector_store_id: str, *, tenant: str, limit: int, order: str, after: str | None,
                         before: str | None, status: str | None, batch_id: str | None = None) -> dict[str, Any]:
        status = status_filter(status)
        await self._get(vector_store_id, tenant)
        if batch_id is not None:
            await self._get_batch(vector_store_id, batch_id, tenant)
        with page_errors("vector store file"):
            page = await self.store.list_files(vector_store_id, tenant=tenant, limit=limit, order=order, after=after,
                                               before=before, status=status, batch_id=batch_id)
        return list_page(page, render_file, lambda row: row.file_id)

    async def get_file(self, vector_store_id: str, file_id: str, *, tenant: str) -> dict[str, Any]:
        return render_file(await self._get_file(vector_store_id, file_id, tenant))

    async def update_file(self, vector_store_id: str, file_id: str, body: Mapping[str, Any], *,
                          tenant: str) -> dict[str, Any]:
        if "attributes" not in body:
            raise invalid_request("Missing required parameter: 'attributes'.", param="attributes",
                                  code="missing_required_parameter")
        attributes = check_attributes(body["attributes"])
        await self._get_file(vector_store_id, file_id, tenant)
        if not await self.store.set_file_attributes(vector_store_id, file_id, attributes, tenant=tenant):
            raise self._file_not_found(vector_store_id, file_id)
        await self.chunks.set_file_attributes(vector_store_id, file_id, attributes)
        return await self.get_file(vector_store_id, file_id, tenant=tenant)

    async def delete_file(self, vector_store_id: str, file_id: str, *, tenant: str) -> dict[str, Any]:
        if not await self.store.delete_file(vector_store_id, file_id, tenant=tenant):
            await self._get(vector_store_id, tenant)
            raise self._file_not_found(vector_store_id, file_id)
        await self.chunks.delete_file_chunks(vector_store_id, file_id)
        return {"id": file_id, "object": "vector_store.file.deleted", "deleted": True}

    async def file_content(self, vector_store_id: str, file_id: str, *, tenant: str) -> dict[str, Any]:
        """The parsed chunks of one file, in document order (OpenAI's file content page)."""
        await self._get_file(vector_store_id, file_id, tenant)
        texts = await self.chunks.file_chunks(vector_store_id, file_id, tenant=tenant)
        return {"object": "vector_store.file_content.page", "data": [{"type": "text", "text": t} for t in texts],
                "has_more": False, "next_page": None}

    # -- batches ---------------------------------------------------------------------------------------------

    async def create_batch(self, vector_store_id: str, body: Mapping[str, Any], *, tenant: str) -> dict[str, Any]:
        has_ids, has_files = body.get("file_ids") is not None, body.get("files") is not None
        if has_ids and has_files:
            raise invalid_request("'file_ids' and 'files' are mutually exclusive: send one of them.",
                                  param="files")
        if not has_ids and not has_files:
            raise invalid_request("Missing required parameter: 'file_ids' (or 'files').", param="file_ids",
                                  code="missing_required_parameter")
        if has_ids:
            file_ids = check_file_ids(body["file_ids"], "file_ids", MAX_FILES_PER_BATCH)
            attributes = check_attributes(body.get("attributes"))
            chunking = chunking_strategy_object(parse_chunking_strategy(body.get("chunking_strategy")))
            files = [NewFile(file_id, attributes, chunking) for file_id in file_ids]
            param = "file_ids"
        else:
            files = self._batch_files(body["files"])
            param = "files"
        if not files:
            raise invalid_request(f"'{param}' must name at least one file.", param=param)
        await self._writable(vector_store_id, tenant)
        await self._check_files_exist([f.file_id for f in files], param, tenant)
        batch_id = ids.new_id("vsfb")
        await self._attach(vector_store_id, files, tenant, param=param, batch_id=batch_id)
        return render_batch(await self._get_batch(vector_store_id, batch_id, tenant))

    async def get_batch(self, vector_store_id: str, batch_id: str, *, tenant: str) -> dict[str, Any]:
        return render_batch(await self._get_batch(vector_store_id, batch_id, tenant))

    async def cancel_batch(self, vector_store_id: str, batch_id: str, *, tenant: str) -> dict[str, Any]:
        if not await self.store.cancel_batch(vector_store_id, batch_id, tenant=tenant):
            await self._get(vector_store_id, tenant)
            raise self._batch_not_found(batch_id)
        return await self.get_batch(vector_store_id, batch_id, tenant=tenant)

    def _batch_files(self, value: Any) -> list[NewFile]:
        if not isinstance(value, list):
            raise invalid_request("Invalid type for 'files': expected an array of objects.", param="files",
                                  code="invalid_type")
        if len(value) > MAX_FILES_PER_BATCH:
            raise invalid_request(f"'files' may have at most {MAX_FILES_PER_BATCH} items; got {len(value)}.",
                                  param="files", code="array_above_max_length")
        files = []
        for param, entry in objects_in(value, "files"):
            if "file_id" not in entry:
                raise invalid_request(f"Missing required parameter: '{param}.file_id'.", param=f"{param}.file_id",
                                      code="missing_required_parameter")
            file_id = check_file_id(entry["file_id"], f"{param}.file_id")
            attributes = check_attributes(entry.get("attributes"), f"{param}.attributes")
            try:
                strategy = parse_chunking_strategy(entry.get("chunking_strategy"))
            except APIError as error:
                if error.param:
                    error.param = f"{param}.{error.param}"
                raise
            files.append(NewFile(file_id, attributes, chunking_strategy_object(strategy)))
        return files

    # -- search ----------------------------------------------------------------------------------------------

    async def search_store(self, vector_store_id: str, body: Mapping[str, Any], *, tenant: str) -> dict[str, Any]:
        """``POST /v1/vector_stores/{id}/search``: a page of results in OpenAI's shape."""
        queries = check_queries(body.get("query"))
        options = parse_search_options(body)
        await self._searchable([vector_store_id], "vector_store_id", tenant)
        results = await search(self.chunks, self.embedder, [vector_store_id],
                               queries[0] if len(queries) == 1 else queries, options, tenant=tenant)
        # search_query: what was searched (the rewritten queries with rewrite_query), as OpenAI reports it
        return {"object": "vector_store.search_results.page", "search_query": search_queries(queries, options),
                "data": results, "has_more": False, "next_page": None}

    async def search(self, vector_store_ids: Sequence[str], query: str, options: SearchOptions, *,
                     tenant: str) -> list[dict[str, Any]]:
        """``FileSearcher`` for the ``file_search`` tool: unknown ids (another tenant's among them) are a 404
        naming ``vector_store_ids``."""
        await self._searchable(vector_store_ids, "vector_store_ids", tenant)
        return await search(self.chunks, self.embedder, list(vector_store_ids), query, options, tenant=tenant)

    async def _searchable(self, vector_store_ids: Sequence[str], param: str, tenant: str) -> None:
        now = int(time.time())
        for vector_store_id in dict.fromkeys(vector_store_ids):
            store = await self.store.get_store(vector_store_id, tenant=tenant)
            if store is None:
                raise store_not_found(vector_store_id, param)
            if is_expired(store, now):
                raise self._expired(vector_store_id, param)
            self._check_embedder(store, param)
            if now - store.last_active_at >= ACTIVITY_RESOLUTION_SECONDS:
                await self.store.update_store(vector_store_id, {"last_active_at": now}, tenant=tenant)

    # -- helpers ---------------------------------------------------------------------------------------------

    async def _attach(self, vector_store_id: str, files: list[NewFile], tenant: str, *, param: str,
                      batch_id: str | None = None) -> None:
        now = int(time.time())
        unique = list({f.file_id: f for f in files}.values())
        with _unknown_files([f.file_id for f in files], param):  # deleted or expired since it was checked
            seqs = await self.store.add_files(vector_store_id, now, unique, tenant=tenant, batch_id=batch_id)
        if seqs is None:  # deleted since it was checked
            raise store_not_found(vector_store_id)
        await self.store.update_store(vector_store_id, {"last_active_at": now}, tenant=tenant)
        self.worker.enqueue(jobs_for(vector_store_id, [f.file_id for f in unique], seqs))

    async def _get(self, vector_store_id: str, tenant: str) -> StoredVectorStore:
        store = await self.store.get_store(vector_store_id, tenant=tenant)
        if store is None:
            raise store_not_found(vector_store_id)
        return store

    async def _writable(self, vector_store_id: str, tenant: str) -> StoredVectorStore:
        store = await self._get(vector_store_id, tenant)
        if is_expired(store):
            raise self._expired(vector_store_id)
        self._check_embedder(store, "vector_store_id")
        return store

    def _check_embedder(self, store: StoredVectorStore, param: str) -> None:
        if store.embedder is not None and store.embedder != self.embedder.name:
            raise invalid_request(
                f"Vector store '{store.id}' was built with the embedder '{store.embedder}', but this server embeds "
                f"with '{self.embedder.name}'; vectors of different embedders cannot be mixed. Configure the "
                "embedder it was built with, or create a new vector store.", param=param, code="embedder_mismatch")

    @staticmethod
    def _expired(vector_store_id: str, param: str = "vector_store_id") -> APIError:
        return invalid_request(f"Vector store '{vector_store_id}' has expired.", param=param,
                               code="vector_store_expired")

    async def _get_file(self, vector_store_id: str, file_id: str, tenant: str) -> StoredVectorStoreFile:
        row = await self.store.get_file(vector_store_id, file_id, tenant=tenant)
        if row is None:
            await self._get(vector_store_id, tenant)
            raise self._file_not_found(vector_store_id, file_id)
        return row

    @staticmethod
    def _file_not_found(vector_store_id: str, file_id: str) -> APIError:
        return not_found(f"No file found with id '{file_id}' in vector store '{vector_store_id}'.",
                         param="file_id", code="not_found")

    async def _get_batch(self, vector_store_id: str, batch_id: str, tenant: str) -> StoredFileBatch:
        batch = await self.store.get_batch(vector_store_id, batch_id, tenant=tenant)
        if batch is None:
            await self._get(vector_store_id, tenant)
            raise self._batch_not_found(batch_id)
        return batch

    @staticmethod
    def _batch_not_found(batch_id: str) -> APIError:
        return not_found(f"No file batch found with id '{batch_id}'.", param="batch_id", code="not_found")

    async def _check_files_exist(self, file_ids: Sequence[str], param: str, tenant: str) -> None:
        """Each file is one of the tenant's live files; else the 404 of a missing file (another tenant's file is
        one). The store checks again when it attaches (:func:`_unknown_files`)."""
        for index, file_id in enumerate(file_ids):
            if await self.files.get(file_id, tenant=tenant) is None:
                raise _file_id_not_found(file_ids, index, param)


def _file_id_not_found(file_ids: Sequence[str], index: int, param: str) -> APIError:
    where = param if param == "file_id" else f"{param}[{index}]"
    return not_found(f"No file found with id '{file_ids[index]}'.", param=where, code="not_found")


@contextlib.contextmanager
def _unknown_files(file_ids: Sequence[str], param: str) -> Iterator[None]:
    """The store's refusal of a file that is not the tenant's, as the same 404 as :meth:`_check_files_exist`."""
    try:
        yield
    except UnknownFile as unknown:
        raise _file_id_not_found(file_ids, list(file_ids).index(unknown.file_id), param) from None
