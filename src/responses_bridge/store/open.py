"""Which database holds the bridge's state, chosen from the settings: the PostgreSQL database every replica shares
when ``RESPONSES_BRIDGE_DATABASE_URL`` is set, else the embedded SQLite file.

The rest of the bridge gets the stores behind the same Protocols either way. With a database URL nothing falls
back to SQLite: an unreachable database or refused credentials fail the start (``DatabaseUnavailable``, one line
naming the host, never the password). This is the one opener, for ``serve`` and ``keys`` alike: every failure to
open either database is a ``DatabaseUnavailable`` whose message is the whole line, naming the database and the
setting to change (``--db`` / ``RESPONSES_BRIDGE_DB``, or ``RESPONSES_BRIDGE_DATABASE_URL``), never a traceback.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

from .base import (
    ApiKeyStore,
    ChatCompletionStore,
    ChunkIndex,
    ContainerStore,
    ConversationStore,
    EventLog,
    FileBytes,
    FileStore,
    IdempotencyStore,
    PromptStore,
    ResponseStore,
    VectorStoreStore,
)
from .base_agents import AgentStore
from .base_batches import BatchStore
from .base_skills import SkillStore
from .base_uploads import UploadStore
from .database_url import MISSING_EXTRA, DatabaseUnavailable, is_postgres_url
from .sqlite.agents.agents import SQLiteAgentStore
from .sqlite.api_keys import SQLiteApiKeyStore
from .sqlite.batches.batches import SQLiteBatchStore
from .sqlite.chat_completions import SQLiteChatCompletionStore
from .sqlite.containers.containers import SQLiteContainerStore
from .sqlite.containers.skills import SQLiteSkillStore
from .sqlite.conversations import SQLiteConversationStore
from .sqlite.events import SQLiteEventLog
from .sqlite.files.chunks import SQLiteChunkIndex
from .sqlite.files.files import SQLiteFileStore
from .sqlite.files.uploads import SQLiteUploadStore
from .sqlite.files.vector_stores import SQLiteVectorStoreStore
from .sqlite.idempotency import SQLiteIdempotencyStore
from .sqlite.opening import OPEN_ERRORS, open_failure
from .sqlite.prompts import SQLitePromptStore
from .sqlite.responses import SQLiteResponseStore

if TYPE_CHECKING:
    from .postgres.database import PostgresDatabase

DATABASE_URL_ENV = "RESPONSES_BRIDGE_DATABASE_URL"


@dataclass
class StoreSet:
    """The open stores over one database. ``file_bytes``: where uploaded files' bytes are, when not on disk next to
    the SQLite file (None: there). ``sqlite`` / ``postgres``: the database itself."""

    responses: ResponseStore
    conversations: ConversationStore
    prompts: PromptStore
    events: EventLog
    api_keys: ApiKeyStore
    files: FileStore
    vector_stores: VectorStoreStore
    chunks: ChunkIndex
    containers: ContainerStore
    chat_completions: ChatCompletionStore
    skills: SkillStore
    uploads: UploadStore
    agents: AgentStore
    idempotency: IdempotencyStore
    batches: BatchStore
    file_bytes: FileBytes | None = None
    sqlite: SQLiteResponseStore | None = None
    postgres: PostgresDatabase | None = None

    @property
    def where(self) -> str:
        """Where the state is, for the start-up log line: a path, or a host without credentials."""
        if self.postgres is not None:
            return f"postgresql {self.postgres.target}"
        return self.sqlite.path if self.sqlite is not None else "?"

    async def shared_value(self, name: str, candidate: str) -> str | None:
        """A value every replica on the shared database agrees on (``candidate`` if first); None on SQLite, whose
        single process keeps such values next to its file."""
        if self.postgres is None:
            return None
        from .postgres.shared import shared_value

        return await shared_value(self.postgres, name, candidate)

    async def close(self) -> None:
        await self.responses.close()


async def open_stores(db_path: str, database_url: str | None) -> StoreSet:
    """Open (and migrate) the database: PostgreSQL when ``database_url`` is given, else the SQLite file. Raises
    ``DatabaseUnavailable`` with the one line to show when it cannot be opened."""
    if database_url:
        try:
            if not is_postgres_url(database_url):
                raise DatabaseUnavailable("the database URL must start with postgresql:// (or postgres://)")
            return await _open_postgres(database_url)
        except DatabaseUnavailable as exc:
            text = str(exc)
            raise DatabaseUnavailable(text if DATABASE_URL_ENV in text else f"{text} ({DATABASE_URL_ENV})") from None
    store = SQLiteResponseStore(db_path)
    try:
        await store.open()
    except OPEN_ERRORS as exc:
        raise DatabaseUnavailable(open_failure(db_path, exc)) from None
    return StoreSet(store, SQLiteConversationStore(store), SQLitePromptStore(store), SQLiteEventLog(store),
                    SQLiteApiKeyStore(store), SQLiteFileStore(store), SQLiteVectorStoreStore(store),
                    SQLiteChunkIndex(store), SQLiteContainerStore(store), SQLiteChatCompletionStore(store),
                    SQLiteSkillStore(store), SQLiteUploadStore(store), SQLiteAgentStore(store),
                    SQLiteIdempotencyStore(store), SQLiteBatchStore(store), sqlite=store)


async def _open_postgres(database_url: str) -> StoreSet:
    """The PostgreSQL stores, imported only here: a SQLite deployment loads no driver, and one without the
    ``postgres`` extra fails the start with the one line that names it."""
    try:
        from .postgres.agents.agents import PostgresAgentStore
        from .postgres.api_keys import PostgresApiKeyStore
        from .postgres.batches.batches import PostgresBatchStore
        from .postgres.chat_completions import PostgresChatCompletionStore
        from .postgres.containers.containers import PostgresContainerStore
        from .postgres.containers.skills import PostgresSkillStore
        from .postgres.conversations import PostgresConversationStore
        from .postgres.database import PostgresDatabase
        from .postgres.events import PostgresEventLog
        from .postgres.files.chunks import PostgresChunkIndex
        from .postgres.files.file_bytes import PostgresFileBytes
        from .postgres.files.files import PostgresFileStore
        from .postgres.files.uploads import PostgresUploadStore
        from .postgres.files.vector_stores import PostgresVectorStoreStore
        from .postgres.idempotency import PostgresIdempotencyStore
        from .postgres.prompts import PostgresPromptStore
        from .postgres.responses import PostgresResponseStore
    except ImportError as error:
        from ..extras import explain  # the extra not installed, or installed and its import broken: which

        raise DatabaseUnavailable(explain("postgres", "responses_bridge.store.postgres", error, MISSING_EXTRA)) \
            from error
    db = PostgresDatabase(database_url)
    responses = PostgresResponseStore(db)
    await responses.open()
    # files' bytes in the database too: replicas given separate data directories still read every file
    return StoreSet(responses, PostgresConversationStore(db), PostgresPromptStore(db), PostgresEventLog(db),
                    PostgresApiKeyStore(db), PostgresFileStore(db), PostgresVectorStoreStore(db),
                    PostgresChunkIndex(db), PostgresContainerStore(db), PostgresChatCompletionStore(db),
                    PostgresSkillStore(db), PostgresUploadStore(db), PostgresAgentStore(db),
                    PostgresIdempotencyStore(db), PostgresBatchStore(db), file_bytes=PostgresFileBytes(db),
                    postgres=db)


__all__ = ["StoreSet", "open_stores"]
