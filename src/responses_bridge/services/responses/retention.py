"""Retention: stored responses, conversations and chat completions older than their tenant's ``retention_days``
are purged.

A task of the runtime sweeps every :data:`SWEEP_INTERVAL_SECONDS`. A sweep asks the store which tenants own
responses (conversations, chat completions), works out each one's cutoff from
``Settings.tenant_policy(tenant).retention_days`` (None: kept until deleted), then deletes in batches of
:data:`BATCH` rows, each batch one short write transaction, with a pause between batches: requests' own writes
queue behind at most one batch, never behind the whole purge. A response's age is its ``created_at``; one still
``queued``/``in_progress`` (a background run) is never purged. A stored chat completion's age is when it was
stored. A conversation's age is its last activity (creation, a turn or items appended, a metadata update),
kept in a column the store updates in the same statements, so an old but busy conversation stays. ``DELETE``
requests stay immediate; this only removes what nobody deleted.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass

import structlog

from ...config.tenants import TenantPolicy
from ...process.periodic import Periodic
from ...store.base import ChatCompletionStore, ConversationStore, ResponseStore

log = structlog.get_logger("responses_bridge.retention")

SWEEP_INTERVAL_SECONDS = 60.0
FIRST_SWEEP_DELAY_SECONDS = 1.0
"""Not at the very start: the first requests after a restart should not queue behind a backlog's first batch."""
BATCH = 100
"""Rows per write transaction: a few milliseconds of the one writer for plain responses."""
BATCH_PAUSE_SECONDS = 0.01
"""Between two batches, the writer is left to requests (their writes queued meanwhile go first)."""
DAY = 86_400


@dataclass(frozen=True, slots=True)
class Swept:
    """What one sweep deleted."""

    responses: int
    conversations: int
    chat_completions: int = 0


class RetentionService:
    def __init__(self, responses: ResponseStore, conversations: ConversationStore,
                 policy: Callable[[str], TenantPolicy], *, any_retention: bool = True, batch: int = BATCH,
                 pause: float = BATCH_PAUSE_SECONDS, interval: float = SWEEP_INTERVAL_SECONDS,
                 chat_completions: ChatCompletionStore | None = None) -> None:
        """``policy``: a tenant's policy (``Settings.tenant_policy``); ``any_retention``: False when no tenant
        can have a retention (no default and none named), so sweeps do not even ask the store;
        ``chat_completions``: stored Chat Completions, purged by the same cutoffs (None: none kept here)."""
        self._chat_completions = chat_completions
        self._responses = responses
        self._conversations = conversations
        self._policy = policy
        self._any_retention = any_retention
        self._batch = batch
        self._pause = pause
        self._sweeper = Periodic(interval, self.sweep, name="retention", failure="retention_sweep_failed",
                                 first_delay=FIRST_SWEEP_DELAY_SECONDS)

    def cutoffs(self, tenants: list[str], now: float) -> dict[str, int]:
        """Each tenant's cutoff (unix seconds: older goes) for those with a retention."""
        found: dict[str, int] = {}
        for tenant in tenants:
            days = self._policy(tenant).retention_days
            if days is not None:
                found[tenant] = int(now - days * DAY)
        return found

    async def sweep(self, now: float | None = None) -> Swept:
        """One pass over every tenant (``now``: the clock, for tests). Returns what was deleted."""
        if not self._any_retention:
            return Swept(0, 0)
        moment = time.time() if now is None else now
        responses = await self._drain(self._responses.purge_responses,
                                      self.cutoffs(await self._responses.response_tenants(), moment))
        conversations = await self._drain(self._conversations.purge_conversations,
                                          self.cutoffs(await self._conversations.conversation_tenants(), moment))
        chats = 0
        if self._chat_completions is not None:
            chats = await self._drain(self._chat_completions.purge_chat_completions,
                                      self.cutoffs(await self._chat_completions.chat_completion_tenants(), moment))
        if responses or conversations or chats:
            log.info("retention_purged", responses=responses, conversations=conversations, chat_completions=chats)
        return Swept(responses, conversations, chats)

    async def _drain(self, purge: Callable[..., Awaitable[int]], cutoffs: Mapping[str, int]) -> int:
        """Batches until one comes back short (nothing more is old enough)."""
        total = 0
        while cutoffs:
            deleted = await purge(cutoffs, limit=self._batch)
            total += deleted
            if deleted < self._batch:
                break
            await asyncio.sleep(self._pause)
        return total

    def start(self) -> None:
        if self._any_retention:
            self._sweeper.start()

    async def stop(self) -> None:
        await self._sweeper.stop()
