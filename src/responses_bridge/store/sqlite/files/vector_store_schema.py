"""The vector stores' tables on SQLite (versions 6 and 7; store/postgres/files/retrieval_schema.py holds PostgreSQL's):
the chunk index the search reads (chunks.py) and the stores, their files and file batches
(vector_stores.py). Kept apart from migrations.py, which lists every version in order and runs them,
as the other schema modules of one API are (upload_schema.py, agent_schema.py); the statements are the released ones,
never edited (migrations are append-only)."""

from __future__ import annotations

VECTOR_STORE_CHUNK_INDEX: list[str] = [
    # The chunk index of vector stores (chunks.py). Each store gets a number; its chunks' ids are
    # number << 32 plus a counter, so one store's chunks are one rowid range, which FTS5 and the primary
    # key search without touching other stores' rows. The generation moves with every change of chunks,
    # attributes_generation with every change of a file's attributes, so a process's in-memory copies
    # of a store's vectors and file attributes know when they are stale.
    """
    CREATE TABLE vector_store_chunk_stores (
        vector_store_id TEXT PRIMARY KEY,
        number          INTEGER NOT NULL UNIQUE,
        generation      INTEGER NOT NULL,
        attributes_generation INTEGER NOT NULL DEFAULT 0
    )
    """,
    """
    CREATE TABLE vector_store_chunk_files (
        vector_store_id TEXT NOT NULL,
        file_id         TEXT NOT NULL,
        filename        TEXT NOT NULL,
        attributes      TEXT NOT NULL,
        PRIMARY KEY (vector_store_id, file_id)
    ) WITHOUT ROWID
    """,
    """
    CREATE TABLE vector_store_chunks (
        id              INTEGER PRIMARY KEY,
        vector_store_id TEXT NOT NULL,
        file_id         TEXT NOT NULL,
        position        INTEGER NOT NULL,
        text            TEXT NOT NULL,
        vector          BLOB NOT NULL
    )
    """,
    "CREATE INDEX vector_store_chunks_file ON vector_store_chunks(vector_store_id, file_id, position)",
    # BM25 keyword search over the chunks' text, kept in step by triggers (external content: the text
    # is stored once, in vector_store_chunks).
    """
    CREATE VIRTUAL TABLE vector_store_chunks_fts USING fts5(
        text, content='vector_store_chunks', content_rowid='id', tokenize='porter unicode61'
    )
    """,
    """
    CREATE TRIGGER vector_store_chunks_fts_insert AFTER INSERT ON vector_store_chunks
    BEGIN
        INSERT INTO vector_store_chunks_fts (rowid, text) VALUES (NEW.id, NEW.text);
    END
    """,
    """
    CREATE TRIGGER vector_store_chunks_fts_delete AFTER DELETE ON vector_store_chunks
    BEGIN
        INSERT INTO vector_store_chunks_fts (vector_store_chunks_fts, rowid, text)
        VALUES ('delete', OLD.id, OLD.text);
    END
    """,
]

# Vector stores (OpenAI's Vector Stores API): the stores, the files attached to each with their ingestion
# status, and file batches. Counts, usage and status are never stored: they are aggregated from the file
# rows on every read, so they cannot drift from the files. ``seq`` (the rowid) orders pages and breaks
# ties between equal created_at; a row re-added after a delete gets a new seq, which is how a stale
# ingestion job finds out its row is gone. Chunks live in the chunk index, not here.
VECTOR_STORE_TABLES: list[str] = [
    """
    CREATE TABLE vector_stores (
        seq            INTEGER PRIMARY KEY,
        id             TEXT NOT NULL UNIQUE,
        created_at     INTEGER NOT NULL,
        name           TEXT NOT NULL,
        description    TEXT,
        metadata       TEXT NOT NULL,
        expires_after  TEXT,
        last_active_at INTEGER NOT NULL,
        embedder       TEXT
    )
    """,
    """
    CREATE TABLE vector_store_files (
        seq             INTEGER PRIMARY KEY AUTOINCREMENT,  -- never reused: a seq names one row for good
        vector_store_id TEXT NOT NULL REFERENCES vector_stores(id) ON DELETE CASCADE,
        file_id         TEXT NOT NULL,
        created_at      INTEGER NOT NULL,
        status          TEXT NOT NULL
                        CHECK (status IN ('in_progress', 'completed', 'failed', 'cancelled')),
        last_error      TEXT,
        attributes      TEXT NOT NULL,
        chunking        TEXT NOT NULL,
        usage_bytes     INTEGER NOT NULL DEFAULT 0,
        UNIQUE (vector_store_id, file_id)
    )
    """,
    "CREATE INDEX vector_store_files_status ON vector_store_files(vector_store_id, status)",
    "CREATE INDEX vector_store_files_in_progress ON vector_store_files(seq) WHERE status = 'in_progress'",
    """
    CREATE TABLE vector_store_file_batches (
        seq             INTEGER PRIMARY KEY,
        id              TEXT NOT NULL UNIQUE,
        vector_store_id TEXT NOT NULL REFERENCES vector_stores(id) ON DELETE CASCADE,
        created_at      INTEGER NOT NULL,
        cancelled       INTEGER NOT NULL DEFAULT 0
    )
    """,
    """
    CREATE TABLE vector_store_batch_files (
        batch_id TEXT NOT NULL REFERENCES vector_store_file_batches(id) ON DELETE CASCADE,
        file_id  TEXT NOT NULL,
        PRIMARY KEY (batch_id, file_id)
    ) WITHOUT ROWID
    """,
]
