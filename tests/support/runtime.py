"""A whole :class:`~responses_bridge.runtime.Runtime` over a SQLite store a test already holds.

``Runtime.open`` builds every service over stores it opens itself from the settings; a unit test that feeds a door
message by message wants them over *its* store (an in-memory database, or one it stalls on purpose). This builds
the same services the same way, without starting their background work (ingestion, retention, the memory trimmer):
nothing here runs unless a test drives it. The server tools are the configured ones unless given, with no file
search (no vector store is searched unless a test gives a searcher). The upstream client is the real aiohttp one,
aimed at the settings' upstream (tests point it at a closed port unless they want a call to succeed).
"""

from __future__ import annotations

import os
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from responses_bridge.adapters.upstream_client import AiohttpUpstreamClient
from responses_bridge.config.settings import Settings
from responses_bridge.fairness.allocator import MemoryTrimmer
from responses_bridge.process.periodic import Periodic
from responses_bridge.run.server_tools import ServerTools, ServerToolServices
from responses_bridge.runtime import Runtime
from responses_bridge.runtime_sandbox import SandboxServices
from responses_bridge.sealing import Sealer
from responses_bridge.services.containers.container_skills import ContainerSkills
from responses_bridge.services.containers.containers import ContainerService
from responses_bridge.services.containers.skills import SkillService
from responses_bridge.services.files.files import FileService
from responses_bridge.services.files.uploads import UploadService
from responses_bridge.services.files.vector_stores_on_demand import VectorStoresOnDemand
from responses_bridge.services.responses.background import BackgroundService
from responses_bridge.services.responses.chat_completions import ChatCompletionService
from responses_bridge.services.responses.conversations import ConversationService
from responses_bridge.services.responses.idempotency import IdempotencyService
from responses_bridge.services.responses.prompts import PromptService
from responses_bridge.services.responses.retention import RetentionService
from responses_bridge.services.tenancy.identity import Identity
from responses_bridge.store.sqlite.agents.agents import SQLiteAgentStore
from responses_bridge.store.sqlite.api_keys import SQLiteApiKeyStore
from responses_bridge.store.sqlite.batches.batches import SQLiteBatchStore
from responses_bridge.store.sqlite.chat_completions import SQLiteChatCompletionStore
from responses_bridge.store.sqlite.containers.containers import SQLiteContainerStore
from responses_bridge.store.sqlite.containers.skills import SQLiteSkillStore
from responses_bridge.store.sqlite.conversations import SQLiteConversationStore
from responses_bridge.store.sqlite.events import SQLiteEventLog
from responses_bridge.store.sqlite.files.chunks import SQLiteChunkIndex
from responses_bridge.store.sqlite.files.files import SQLiteFileStore
from responses_bridge.store.sqlite.files.uploads import SQLiteUploadStore
from responses_bridge.store.sqlite.files.vector_stores import SQLiteVectorStoreStore
from responses_bridge.store.sqlite.idempotency import SQLiteIdempotencyStore
from responses_bridge.store.sqlite.prompts import SQLitePromptStore
from responses_bridge.store.sqlite.responses import SQLiteResponseStore


def runtime_over(store: SQLiteResponseStore, settings: Settings, *,
                 server_tools: ServerTools | None = None) -> Runtime:
    """The runtime ``Runtime.open`` would build over ``store`` (``server_tools``: instead of the configured
    ones). Its upstream client is not started: a test that makes a call starts it (:func:`started`)."""
    tools = server_tools or ServerTools(ServerToolServices.configured(settings.mcp_limits(),
                                                                      settings.web_search_settings()))
    upstream = AiohttpUpstreamClient(settings)
    files = FileService(SQLiteFileStore(store), None, settings.max_file_bytes,
                        max_stored_bytes=lambda tenant: settings.tenant_policy(tenant).max_stored_bytes)
    chunks = SQLiteChunkIndex(store)
    vector_stores = VectorStoresOnDemand(SQLiteVectorStoreStore(store), files, chunks, settings, concurrency=1)
    limits = settings.sandbox_limits()
    skills = SkillService(SQLiteSkillStore(store), files.contents)
    containers = ContainerService(SQLiteContainerStore(store), files.contents, files, file_bytes=limits.file_bytes,
                                  container_bytes=limits.container_bytes,
                                  skills=ContainerSkills(SQLiteSkillStore(store), files.contents))
    sealer = Sealer(os.urandom(32))
    return Runtime(
        settings=settings, store=store, options=settings.engine_options(), sealer=sealer,
        conversations=ConversationService(SQLiteConversationStore(store)),
        prompts=PromptService(SQLitePromptStore(store)),
        chat_completions=ChatCompletionService(SQLiteChatCompletionStore(store)), upstream=upstream, clients={},
        router=settings.router(),
        server_tools=tools, identity=Identity(settings.auth, settings.tenant_header, SQLiteApiKeyStore(store)),
        files=files, uploads=UploadService(SQLiteUploadStore(store), files),
        chunks=chunks, vector_stores=vector_stores,
        sandbox=SandboxServices.given(settings, containers, skills, files, tools, sealer),
        background=BackgroundService(store, SQLiteEventLog(store), upstream),
        agent_store=SQLiteAgentStore(store), batch_store=SQLiteBatchStore(store),
        retention=RetentionService(store, SQLiteConversationStore(store), settings.tenant_policy, any_retention=False),
        idempotency=IdempotencyService(SQLiteIdempotencyStore(store), settings.idempotency_key_seconds),
        trimmer=MemoryTrimmer(), gauges=Periodic(0, _nothing, name="metrics-gauges", failure="metrics_refresh_failed"))


async def _nothing() -> None:
    return None


@asynccontextmanager
async def started(runtime: Runtime) -> AsyncIterator[Runtime]:
    """The runtime with its upstream client started (and closed afterwards)."""
    await runtime.upstream.start()
    try:
        yield runtime
    finally:
        await runtime.upstream.close()
