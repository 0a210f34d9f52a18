"""The chunk index of vector stores on PostgreSQL (:class:`~responses_bridge.store.chunks.ChunkIndex`): pgvector
for ``dense_candidates``, full-text search for ``keyword_candidates``, shared by every replica.

Dense search: a store of at most :data:`EXACT_LIMIT` chunks is scanned exactly (its rows found through the
``(vector_store_id, …)`` b-tree, every cosine computed), so small stores rank exactly as on SQLite. A larger one
goes through pgvector's HNSW index (cosine distance), one partial expression index per dimension count
(``embedding::vector(<dims>)`` where ``dims = <dims>``), made the first time vectors of that size are written:
the embedder is the deployment's choice, so the dimensions are not known when the schema is made. The index
holds every store's vectors; its candidates are filtered to the store (and to the files a filter allows)
afterwards, so when fewer than asked survive the filter the search falls back to the exact scan: an answer is
never cut short because other stores' vectors were nearer. (pgvector 0.8's iterative index scans would avoid that
fallback; the pgvector this is tested with, 0.6, has none.) Vectors of more than :data:`HNSW_MAX_DIMS` dimensions
cannot be HNSW-indexed as ``vector`` and are always scanned exactly.

Keyword search: ``tsv`` (``to_tsvector('english', text)``, GIN-indexed) matched against the OR of the query's
terms, each through ``plainto_tsquery`` (any text is a safe term: no query syntax reaches the parser), ranked by
``ts_rank`` with length normalisation. Like BM25 on SQLite, the scores only need to order the candidates and be
positive: services/files/retrieval/search.py divides them by the query's best score, so the hybrid ranking contract
holds unchanged.

Ownership: chunks belong to their vector store's tenant. Every read takes ``tenant`` and carries the check that
the store is that tenant's in its own statement (``_owned``), so another tenant's store reads exactly as an
unknown one (empty). The writes take no tenant: ingestion and the clean-up after a tenant-checked change call
them across tenants, as on SQLite (store/sqlite/files/chunks.py).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any

import numpy as np
import orjson

from ...records import ChunkRow, DimensionMismatch, IndexedFile
from ..database import PostgresDatabase
from ..sql import pg_texts

if TYPE_CHECKING:
    from ..migrations import Connection

EXACT_LIMIT = 20_000
"""Stores with at most this many chunks are scanned exactly (measured: ``scripts/bench retrieval``)."""
HNSW_MAX_DIMS = 2000  # pgvector's limit for an HNSW index on ``vector``
HNSW_LOCK = 0x6873_6E77  # advisory lock key ("hsnw") serialising the creation of the per-dimension indexes
TS_RANK_NORMALISATION = 1  # ts_rank's rank / (1 + log(document length)): long chunks do not win by length alone


def _owned(store: int, tenant: int) -> str:
    """The vector store in parameter ``$store`` is the tenant in ``$tenant``'s."""
    return f"EXISTS (SELECT 1 FROM vector_stores WHERE id = ${store} AND tenant = ${tenant})"


def _count(status: str) -> int:
    return int(status.rsplit(" ", 1)[-1])


def _ef_search(limit: int) -> int:
    """HNSW's candidate list: twice the rows asked for (at least 100), within pgvector's bound of 1000."""
    return min(1000, max(100, 2 * limit))


class PostgresChunkIndex:
    """:class:`~responses_bridge.store.chunks.ChunkIndex` on a :class:`PostgresDatabase`."""

    def __init__(self, db: PostgresDatabase) -> None:
        self._db = db
        self._indexed_dims: set[int] = set()
        self._files: dict[str, tuple[int, dict[str, IndexedFile]]] = {}

    # -- writes ---------------------------------------------------------------------------------------------

    async def replace_file_chunks(self, vector_store_id: str, file_id: str, filename: str, texts: Sequence[str],
                                  vectors: np.ndarray, attributes: Mapping[str, Any]) -> None:
        matrix = np.ascontiguousarray(vectors, dtype=np.float32)
        if matrix.ndim != 2 or matrix.shape[0] != len(texts):
            raise ValueError(f"{len(texts)} texts need as many vector rows, got shape {matrix.shape}")
        dims = int(matrix.shape[1])
        if len(texts):
            await self._ensure_index(dims)
        async with self._db.transaction("replace_file_chunks") as conn:
            await _lock_store(conn, vector_store_id)
            removed = _count(await conn.execute(
                "DELETE FROM vector_store_chunks WHERE vector_store_id = $1 AND file_id = $2", vector_store_id,
                file_id))
            await conn.executemany(
                "INSERT INTO vector_store_chunks (vector_store_id, file_id, position, text, dims, embedding) "
                "VALUES ($1, $2, $3, $4, $5, $6)",
                [(vector_store_id, file_id, position, text, dims, matrix[position])
                 for position, text in enumerate(texts)])
            await conn.execute(
                "INSERT INTO vector_store_chunk_files (vector_store_id, file_id, filename, attributes) "
                "VALUES ($1, $2, $3, $4) ON CONFLICT (vector_store_id, file_id) DO UPDATE SET "
                "filename = excluded.filename, attributes = excluded.attributes",
                vector_store_id, file_id, filename, orjson.dumps(dict(attributes)))
            await conn.execute(
                "UPDATE vector_store_chunk_stores SET chunks = chunks - $2 + $3, generation = generation + 1, "
                "dims = CASE WHEN $3 > 0 THEN $4 ELSE dims END WHERE vector_store_id = $1",
                vector_store_id, removed, len(texts), dims)

    async def _ensure_index(self, dims: int) -> None:
        """The HNSW index of ``dims``-dimensional vectors, made once per database (one replica at a time)."""
        if dims in self._indexed_dims or dims > HNSW_MAX_DIMS or dims < 1:
            return
        async with self._db.transaction("create_hnsw_index") as conn:
            await conn.execute("SELECT pg_advisory_xact_lock($1)", HNSW_LOCK)
            await conn.execute(
                f"CREATE INDEX IF NOT EXISTS vector_store_chunks_hnsw_{dims} ON vector_store_chunks "
                f"USING hnsw ((embedding::vector({dims})) vector_cosine_ops) WHERE dims = {dims}")
        self._indexed_dims.add(dims)

    async def delete_file_chunks(self, vector_store_id: str, file_id: str) -> None:
        async with self._db.transaction("delete_file_chunks") as conn:
            await _lock_store(conn, vector_store_id)
            removed = _count(await conn.execute(
                "DELETE FROM vector_store_chunks WHERE vector_store_id = $1 AND file_id = $2", vector_store_id,
                file_id))
            await conn.execute("DELETE FROM vector_store_chunk_files WHERE vector_store_id = $1 AND file_id = $2",
                               vector_store_id, file_id)
            await conn.execute("UPDATE vector_store_chunk_stores SET chunks = chunks - $2, "
                               "generation = generation + 1 WHERE vector_store_id = $1", vector_store_id, removed)

    async def delete_store_chunks(self, vector_store_id: str) -> None:
        async with self._db.transaction("delete_store_chunks") as conn:
            await _lock_store(conn, vector_store_id)
            await conn.execute("DELETE FROM vector_store_chunks WHERE vector_store_id = $1", vector_store_id)
            await conn.execute("DELETE FROM vector_store_chunk_files WHERE vector_store_id = $1", vector_store_id)
            await conn.execute("DELETE FROM vector_store_chunk_stores WHERE vector_store_id = $1", vector_store_id)
        self._files.pop(vector_store_id, None)

    async def set_file_attributes(self, vector_store_id: str, file_id: str, attributes: Mapping[str, Any]) -> None:
        async with self._db.transaction("set_file_attributes") as conn:
            changed = _count(await conn.execute(
                "UPDATE vector_store_chunk_files SET attributes = $3 WHERE vector_store_id = $1 AND file_id = $2",
                vector_store_id, file_id, orjson.dumps(dict(attributes))))
            if changed:
                await conn.execute("UPDATE vector_store_chunk_stores SET generation = generation + 1 "
                                   "WHERE vector_store_id = $1", vector_store_id)

    # -- reads ----------------------------------------------------------------------------------------------

    async def file_chunks(self, vector_store_id: str, file_id: str, *, tenant: str) -> list[str]:
        async with self._db.acquire("file_chunks") as conn:
            rows = await conn.fetch("SELECT text FROM vector_store_chunks WHERE vector_store_id = $1 "
                                    f"AND file_id = $2 AND {_owned(1, 3)} ORDER BY position",
                                    vector_store_id, file_id, tenant)
        return [row[0] for row in rows]

    async def indexed_files(self, vector_store_id: str, *, tenant: str) -> dict[str, IndexedFile]:
        """The same dict object while the store's generation has not moved (callers only read it); the store's
        tenant is checked on every call, cached or not."""
        async with self._db.acquire("indexed_files") as conn:
            generation = await conn.fetchval(
                "SELECT g.generation FROM vector_stores AS s JOIN vector_store_chunk_stores AS g "
                "ON g.vector_store_id = s.id WHERE s.id = $1 AND s.tenant = $2", vector_store_id, tenant)
            if generation is None:
                return {}
            cached = self._files.get(vector_store_id)
            if cached is not None and cached[0] == generation:
                return cached[1]
            rows = await conn.fetch("SELECT file_id, filename, attributes FROM vector_store_chunk_files "
                                    f"WHERE vector_store_id = $1 AND {_owned(1, 2)}", vector_store_id, tenant)
        files = {row[0]: IndexedFile(row[1], orjson.loads(row[2])) for row in rows}
        self._files[vector_store_id] = (int(generation), files)
        return files

    async def chunk_rows(self, chunk_ids: Sequence[int], *, tenant: str) -> dict[int, ChunkRow]:
        """The rows of those chunks that belong to the tenant's vector stores (others are left out)."""
        if not chunk_ids:
            return {}
        async with self._db.acquire("chunk_rows") as conn:
            rows = await conn.fetch("SELECT id, file_id, text FROM vector_store_chunks WHERE id = ANY($1::bigint[]) "
                                    "AND vector_store_id IN (SELECT id FROM vector_stores WHERE tenant = $2)",
                                    list(chunk_ids), tenant)
        return {int(row[0]): ChunkRow(int(row[0]), row[1], row[2]) for row in rows}

    async def keyword_candidates(self, vector_store_id: str, terms: Sequence[str], file_ids: Sequence[str] | None,
                                 limit: int, *, tenant: str) -> list[tuple[int, float]]:
        words = [cleaned for term in terms if (cleaned := term.replace("\x00", "").strip())]
        if not words or (file_ids is not None and not file_ids):
            return []
        args: list[Any] = [vector_store_id, limit, tenant, *words]
        query = " || ".join(f"plainto_tsquery('english', ${number})" for number in range(4, 4 + len(words)))
        where = f"c.vector_store_id = $1 AND {_owned(1, 3)} AND c.tsv @@ q.query"
        if file_ids is not None:
            args.append(pg_texts(file_ids))
            where += f" AND c.file_id = ANY(${len(args)}::text[])"
        sql = (f"SELECT c.id, ts_rank(c.tsv, q.query, {TS_RANK_NORMALISATION}) AS score "
               f"FROM vector_store_chunks AS c, (SELECT {query} AS query) AS q WHERE {where} "
               "ORDER BY score DESC, c.id LIMIT $2")
        async with self._db.acquire("keyword_candidates") as conn:
            rows = await conn.fetch(sql, *args)
        return [(int(row[0]), float(row[1])) for row in rows if row[1] > 0]

    async def dense_candidates(self, vector_store_id: str, query: np.ndarray, file_ids: Sequence[str] | None,
                               limit: int, *, tenant: str) -> list[tuple[int, float]]:
        if file_ids is not None and not file_ids:
            return []
        async with self._db.acquire("dense_candidates") as conn:
            found = await conn.fetchrow("SELECT g.dims, g.chunks FROM vector_stores AS s "
                                        "JOIN vector_store_chunk_stores AS g ON g.vector_store_id = s.id "
                                        "WHERE s.id = $1 AND s.tenant = $2", vector_store_id, tenant)
        if found is None or not found[1] or found[0] is None:
            return []
        dims, chunks = int(found[0]), int(found[1])
        if dims != query.shape[0]:
            raise DimensionMismatch(f"the store's vectors have {dims} dimensions, the query {query.shape[0]}")
        vector = np.ascontiguousarray(query, dtype=np.float32)
        if chunks > EXACT_LIMIT and dims <= HNSW_MAX_DIMS:
            approximate = await self._approximate(vector_store_id, vector, dims, file_ids, limit, tenant)
            if len(approximate) >= limit:
                return approximate
        return await self._exact(vector_store_id, vector, file_ids, limit, tenant)

    async def _exact(self, vector_store_id: str, vector: np.ndarray, file_ids: Sequence[str] | None,
                     limit: int, tenant: str) -> list[tuple[int, float]]:
        args: list[Any] = [vector_store_id, vector, limit, tenant]
        where = f"vector_store_id = $1 AND {_owned(1, 4)}"
        if file_ids is not None:
            args.append(pg_texts(file_ids))
            where += " AND file_id = ANY($5::text[])"
        sql = (f"SELECT id, 1 - (embedding <=> $2::vector) FROM vector_store_chunks WHERE {where} "
               "ORDER BY embedding <=> $2::vector, id LIMIT $3")
        async with self._db.acquire("dense_candidates_exact") as conn:
            rows = await conn.fetch(sql, *args)
        return [(int(row[0]), float(row[1])) for row in rows]

    async def _approximate(self, vector_store_id: str, vector: np.ndarray, dims: int,
                           file_ids: Sequence[str] | None, limit: int, tenant: str) -> list[tuple[int, float]]:
        await self._ensure_index(dims)
        args: list[Any] = [vector_store_id, vector, limit, tenant]
        where = f"dims = {dims} AND vector_store_id = $1 AND {_owned(1, 4)}"
        if file_ids is not None:
            args.append(pg_texts(file_ids))
            where += " AND file_id = ANY($5::text[])"
        distance = f"embedding::vector({dims}) <=> $2::vector({dims})"
        sql = f"SELECT id, 1 - ({distance}) FROM vector_store_chunks WHERE {where} ORDER BY {distance} LIMIT $3"
        async with self._db.transaction("dense_candidates_hnsw") as conn:
            await conn.execute(f"SET LOCAL hnsw.ef_search = {_ef_search(limit)}")
            rows = await conn.fetch(sql, *args)
        return [(int(row[0]), float(row[1])) for row in rows]


async def _lock_store(conn: Connection, vector_store_id: str) -> None:
    """The store's bookkeeping row, made on first use and locked for the transaction: changes of one store's
    chunks apply one after another, so its chunk count stays exact."""
    await conn.execute("INSERT INTO vector_store_chunk_stores (vector_store_id) VALUES ($1) "
                       "ON CONFLICT (vector_store_id) DO NOTHING", vector_store_id)
    await conn.execute("SELECT 1 FROM vector_store_chunk_stores WHERE vector_store_id = $1 FOR UPDATE",
                       vector_store_id)
