"""The storage contract the rest of the bridge relies on.

Callers only see :class:`ResponseStore`, so the embedded SQLite store can be swapped for a shared database
(PostgreSQL, for several bridge replicas) without touching its callers. The store keeps data only: bad paging
arguments raise the small exceptions of records.py, and the callers turn them into the API's errors.

This module holds the contracts of responses and what hangs off them (events, conversations, prompts, stored chat
completions, API keys, background runs' leases); those of files, vector stores, their chunks and containers are in
base_files.py, and are named here as well.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Mapping, Sequence
from contextlib import AbstractAsyncContextManager
from typing import Any, Protocol, runtime_checkable

from .base_files import BlobReader as BlobReader
from .base_files import BlobWriter as BlobWriter
from .base_files import ChunkIndex as ChunkIndex
from .base_files import ContainerStore as ContainerStore
from .base_files import FileBytes as FileBytes
from .base_files import FileStore as FileStore
from .base_files import VectorStoreStore as VectorStoreStore
from .browsing import ResponseBrowser
from .records import (
    ApiKey,
    ChatCompletionPage,
    Closer,
    ConversationPage,
    IdempotencyRecord,
    ItemPage,
    Renewal,
    Resolved,
    ResponseFilter,
    ResponsePage,
    StoredChatCompletion,
    StoredConversation,
    StoredPromptVersion,
)
from .records import LeaseLost as LeaseLost  # a run's write refused for its lease: final, never retried

DEFAULT_TENANT = ""
"""The tenant of every object when ``RESPONSES_BRIDGE_AUTH=none``, and of objects stored before tenancy existed.
Every store method that reads or changes one tenant's objects takes ``tenant`` and matches it in its queries."""

# Ownership, for every implementation of the Protocols below:
# - Root objects (responses, conversations, prompts) carry their tenant. Every method that reads or changes one
#   tenant's objects takes a required keyword-only ``tenant`` and matches it IN ITS QUERIES: an object of another
#   tenant is answered exactly like a missing one (None / False / InvalidCursor), never with a distinct error.
# - Children (response items, metadata and events, conversation items, prompt versions) are reached only through
#   their parent: a query touching them by parent id checks the parent's tenant in the same statement or
#   transaction (a join, or ``parent_id IN (SELECT id FROM parent WHERE id = ? AND tenant = ?)``).
# - Methods without ``tenant`` work across tenants and are for background workers only (start-up recovery,
#   retention); their docstrings say so.


@runtime_checkable
class ResponseStore(Protocol):
    @property
    def browser(self) -> ResponseBrowser:
        """The console's reads of these responses, in pieces of known size (browsing.py)."""

    async def open(self) -> None:
        """Connect and bring the schema up to date; must be awaited before any other call."""

    async def close(self) -> None: ...

    @property
    def is_open(self) -> bool:
        """Open and migrated to the schema this code expects (readiness)."""

    @property
    def write_queue_depth(self) -> int:
        """Writes queued or running."""

    def write_stall_seconds(self) -> float:
        """How long the oldest queued or running write has been waiting; 0 when none is (readiness)."""

    async def save_response(self, response: dict[str, Any], input_items: list[dict[str, Any]], *, tenant: str,
                            conversation_id: str | None = None, lease_owner: str | None = None,
                            timing: Any = None, key_id: str | None = None) -> None:
        """Insert, or replace if the id exists (``in_progress`` -> ``completed``), response and items atomically.

        With ``lease_owner`` (a background run on a shared database), the save is fenced by the run's lease: it
        happens only while that owner still holds the lease (``RunLeases.owner``), checked in the same transaction,
        else :class:`LeaseLost` and nothing changes — a process that stalled past its lease cannot overwrite the end
        another process stored for its run.

        A new row belongs to ``tenant``. Replacing an existing id only happens when that row is ``tenant``'s;
        an id held by another tenant raises :class:`ResponseIdTaken` and changes nothing (ids are generated, so
        this is a collision or a forged save, never a normal path). With ``conversation_id``, the response's input
        then output items are appended to that conversation (on the same database) in the same transaction, only
        if it is ``tenant``'s; a conversation that no longer exists (or is not the tenant's) is skipped.

        ``timing``: the response's timing document (observability/timing.py), a mapping kept in the same row (its
        ``ttft_ms`` and ``latency_ms`` as columns: store/timings.py) and gone with it; a save without one leaves the
        row with none. (Typed ``Any``: the callers' ``**fence`` keyword dicts of strings would match a mapping.)

        ``key_id``: the id of the API key that made the response (as ``keys list`` shows it; never the key), kept
        in its row for the console's Logs filter and Usage by key; None when no key resolved the caller. The
        response's usage is kept in columns too (store/timings.py), for Usage's sums."""

    async def get_response(self, response_id: str, *, tenant: str) -> dict[str, Any] | None:
        """The stored Response object; None if unknown or not ``tenant``'s."""

    async def delete_response(self, response_id: str, *, tenant: str) -> bool:
        """Delete a response of ``tenant`` with its items, metadata and events; False if it was unknown (or
        another tenant's)."""

    async def list_input_items(
        self,
        response_id: str,
        *,
        tenant: str,
        after: str | None = None,
        before: str | None = None,
        limit: int = 20,
        order: str = "desc",
    ) -> ItemPage | None:
        """A cursor page of the response's input items; None if the response is unknown or not ``tenant``'s.

        ``after``/``before`` are item ids, exclusive, interpreted in the requested ``order``. An unknown cursor id
        raises :class:`InvalidCursor` naming the cursor; a bad ``limit``/``order`` :class:`InvalidPageArgs`.
        """

    async def list_responses(self, *, tenant: str, after: str | None = None, before: str | None = None,
                             limit: int = 20, order: str = "desc",
                             where: ResponseFilter | None = None) -> ResponsePage:
        """A cursor page of ``tenant``'s stored responses in (created_at, id) order, narrowed by ``where`` (None:
        every response of the tenant).

        Cursors are response ids, exclusive, interpreted in the requested ``order`` (as for input items); an id
        that names no stored response of ``tenant`` raises :class:`InvalidCursor`, a bad ``limit``/``order``
        :class:`InvalidPageArgs`. Deleted responses are gone from the list.
        """

    async def load_history(self, response_id: str, *, tenant: str) -> list[dict[str, Any]] | None:
        """Input then output items of every turn from the oldest reachable ancestor up to ``response_id``.

        None if ``response_id`` is unknown or not ``tenant``'s. The walk follows only ``tenant``'s responses: a
        deleted ancestor, or one of another tenant, cuts the chain: history starts after it.
        """

    async def find_items(self, item_ids: Sequence[str], *, tenant: str) -> dict[str, dict[str, Any]]:
        """``tenant``'s stored items of these ids, wherever they are kept: a response's input or output items, or
        a conversation's items (one copy of each; an id found nowhere, or only another tenant's, is absent). What
        an ``item_reference`` names without the chain or conversation holding it
        (protocol/responses/item_references.py); one indexed statement (SQLite migration 26, PostgreSQL 25).
        ``item_ids`` holds an id once for every reference naming it: within a request, what the items will hold is
        reserved before a row is read, every occurrence counted (each becomes a whole item)."""

    async def response_tenants(self) -> list[str]:
        """Across tenants: workers only (retention). Every tenant owning at least one stored response."""

    async def purge_responses(self, cutoffs: Mapping[str, int], *, limit: int) -> int:
        """Across tenants: workers only (retention). Delete at most ``limit`` responses (with their items,
        metadata and events) of the tenants named in ``cutoffs`` whose ``created_at`` is before that tenant's
        cutoff (unix seconds), never one still ``queued``/``in_progress``; one short write transaction. Returns
        how many were deleted (0: nothing left to purge)."""


@runtime_checkable
class EventLog(Protocol):
    """The stored event streams of background responses (``response_events``), for replay with
    ``GET /v1/responses/{id}?stream=true&starting_after=N``. Events are children of their response: every method
    taking ``tenant`` reaches them through a response row of that tenant."""

    async def append(self, response_id: str, events: list[tuple[int, bytes]], *, tenant: str,
                     lease_owner: str | None = None) -> None:
        """Store ``(sequence_number, frame)`` pairs, durable on return; a sequence number already stored is kept.
        Nothing is stored when the response is not ``tenant``'s (or no longer exists), nor, with ``lease_owner``,
        when that owner no longer holds the run's lease (the fence of ``ResponseStore.save_response``)."""

    async def after(self, response_id: str, after: int, *, tenant: str) -> list[tuple[int, bytes]]:
        """The stored frames with ``sequence_number > after``, in order; empty when unknown or not ``tenant``'s."""

    async def truncate(self, response_id: str, first: int, *, tenant: str, lease_owner: str | None = None) -> None:
        """Forget the events from sequence number ``first`` on (fenced by ``lease_owner`` as ``append``)."""

    async def forget(self, response_id: str, sequence: int, *, tenant: str, lease_owner: str | None = None) -> None:
        """Erase the one row at ``sequence`` (a run's own record, below the stream: the client's credentials kept
        while it ran); nothing when it is not ``tenant``'s, nor, with ``lease_owner``, when that owner no longer
        holds the run's lease (the run is another process's now, and the row its)."""

    async def end_response(self, response: dict[str, Any], terminal_frame: Callable[[int], bytes], *,
                           tenant: str, lease_owner: str | None = None) -> None:
        """Store ``response`` (in its terminal status) and append ``terminal_frame(n)`` after the last stored
        event (``n`` its sequence number) in one transaction; nothing happens when it is not ``tenant``'s, and
        with ``lease_owner`` :class:`LeaseLost` when that owner no longer holds the run's lease."""

    async def unfinished(self) -> list[tuple[str, dict[str, Any]]]:
        """Across tenants: workers only (start-up recovery). ``(tenant, response)`` of every stored response
        still ``queued``/``in_progress``."""


# --- conversations and prompts (same database as the responses) --------------------------------------------------


@runtime_checkable
class ConversationStore(Protocol):
    """Conversations and their items. "Unknown" below also means "another tenant's": the answers are the same.
    A conversation's age for retention is its last activity (``last_active_at``: creation, appended items,
    metadata updates), not its creation."""

    async def create_conversation(self, conversation_id: str, created_at: int, metadata: dict[str, Any],
                                  items: list[dict[str, Any]], *, tenant: str) -> None:
        """Create ``tenant``'s conversation with its first items atomically."""

    async def get_conversation(self, conversation_id: str, *, tenant: str) -> StoredConversation | None: ...

    async def list_conversations(self, *, tenant: str, after: str | None = None, before: str | None = None,
                                 limit: int = 20, order: str = "desc") -> ConversationPage:
        """A cursor page of ``tenant``'s conversations in (created_at, id) order; cursors as for
        ``list_responses`` (another tenant's id is an unknown cursor)."""

    async def update_conversation(self, conversation_id: str, metadata: dict[str, Any], *,
                                  tenant: str) -> StoredConversation | None: ...

    async def delete_conversation(self, conversation_id: str, *, tenant: str) -> bool:
        """Delete a conversation and its items; False if it was unknown."""

    async def append_items(self, conversation_id: str, items: list[dict[str, Any]], *, tenant: str) -> bool:
        """Append items at the end, atomically; False if the conversation is unknown."""

    async def load_items(self, conversation_id: str, *, tenant: str) -> list[dict[str, Any]] | None:
        """Every item in order (one query), for the model; None if the conversation is unknown."""

    async def list_items(self, conversation_id: str, *, tenant: str, after: str | None = None, limit: int = 20,
                         order: str = "desc") -> ItemPage | None:
        """A cursor page of items; None if the conversation is unknown; unknown ``after`` -> InvalidCursor."""

    async def get_item(self, conversation_id: str, item_id: str, *, tenant: str) -> dict[str, Any] | None: ...

    async def delete_item(self, conversation_id: str, item_id: str, *, tenant: str) -> bool: ...

    async def conversation_tenants(self) -> list[str]:
        """Across tenants: workers only (retention). Every tenant owning at least one conversation."""

    async def purge_conversations(self, cutoffs: Mapping[str, int], *, limit: int) -> int:
        """Across tenants: workers only (retention). Delete at most ``limit`` conversations (with their items) of
        the tenants named in ``cutoffs`` whose last activity is before that tenant's cutoff (unix seconds); one
        short write transaction. Returns how many were deleted."""


@runtime_checkable
class PromptStore(Protocol):
    """Prompts and their versions. "Unknown" below also means "another tenant's": the answers are the same."""

    async def create_prompt(self, prompt_id: str, created_at: int, body: dict[str, Any], *, tenant: str) -> None: ...

    async def add_version(self, prompt_id: str, created_at: int, body: dict[str, Any],
                          expected_version: int | None = None, *, tenant: str) -> StoredPromptVersion | None:
        """A new latest version; None if the prompt is unknown; raises PromptVersionConflict when
        ``expected_version`` is given and is not the latest."""

    async def get_prompt(self, prompt_id: str, version: int | None = None, *,
                         tenant: str) -> StoredPromptVersion | None:
        """The given version, or the default one; None if the prompt or the version is unknown."""

    async def list_prompts(self, *, tenant: str, after: str | None = None, limit: int = 20,
                           order: str = "desc") -> tuple[list[StoredPromptVersion], bool]:
        """``tenant``'s prompts (each at its default version) by creation time, and whether there are more."""

    async def list_versions(self, prompt_id: str, *, tenant: str) -> list[StoredPromptVersion] | None: ...

    async def set_default_version(self, prompt_id: str, version: int, *,
                                  tenant: str) -> StoredPromptVersion | None:
        """None if the prompt or the version is unknown."""

    async def delete_prompt(self, prompt_id: str, *, tenant: str) -> bool: ...


@runtime_checkable
class ChatCompletionStore(Protocol):
    """Stored Chat Completions (``store: true`` on ``POST /v1/chat/completions``), a root object of their tenant.
    The id is the upstream's own (``chatcmpl-...``), unique per tenant: saving an id the tenant already has
    replaces that completion (an upstream that reuses ids keeps only its latest answer under each). "Unknown"
    below also means "another tenant's": the answers are the same."""

    async def save_chat_completion(self, record: StoredChatCompletion, *, tenant: str) -> None:
        """Store ``record`` with its messages (replacing ``tenant``'s completion of the same id), one write."""

    async def get_chat_completion(self, completion_id: str, *, tenant: str) -> StoredChatCompletion | None:
        """The completion without its messages (``messages`` empty)."""

    async def list_chat_completions(self, *, tenant: str, after: str | None = None, limit: int = 20,
                                    order: str = "asc", model: str | None = None,
                                    metadata: Sequence[tuple[str, str]] = ()) -> ChatCompletionPage:
        """A cursor page of ``tenant``'s completions in (created_at, id) order, those of ``model`` and with every
        ``metadata`` pair only; an unknown ``after`` -> InvalidCursor."""

    async def update_chat_completion(self, completion_id: str, metadata: dict[str, Any], *,
                                     tenant: str) -> StoredChatCompletion | None:
        """Replace the metadata; the completion as it is now (without messages), None if unknown."""

    async def delete_chat_completion(self, completion_id: str, *, tenant: str) -> bool: ...

    async def chat_completion_messages(self, completion_id: str, *, tenant: str) -> list[dict[str, Any]] | None:
        """The stored request messages in order; None if the completion is unknown."""

    async def chat_completion_tenants(self) -> list[str]:
        """Across tenants: workers only (retention). Every tenant owning at least one stored completion."""

    async def purge_chat_completions(self, cutoffs: Mapping[str, int], *, limit: int) -> int:
        """Across tenants: workers only (retention). Delete at most ``limit`` completions of the tenants named in
        ``cutoffs`` stored before that tenant's cutoff (unix seconds), in one short write. Returns how many."""


class ApiKeyStore(Protocol):
    """What a store of API keys implements. Keys are not a tenant's objects: these run as the operator (the
    ``keys`` command) or to find out who a caller is (the doors), across tenants."""

    async def create_key(self, tenant: str, *, expires_at: int | None = None,
                         operator: bool = False) -> tuple[str, ApiKey]:
        """A new key for ``tenant``: the key's text (shown once, never stored) and its row. ``operator``: the
        console shows its holder every tenant and Operations."""
        ...

    async def find_key(self, key_id: str) -> ApiKey | None:
        """The row of the key with this id (never its secret), or None: the console checks a signed-in key is
        still usable on each page."""
        ...

    async def list_keys(self) -> list[ApiKey]:
        """Every key, oldest first, revoked and expired ones included."""
        ...

    async def revoke_key(self, key_id: str) -> bool:
        """Revoke the key with this id from now on; False when there is no such key (revoking twice keeps the
        first time)."""
        ...

    async def resolve_key(self, key: str) -> Resolved | None:
        """The row of a presented key whose secret matches; None for anything else (malformed, unknown id,
        wrong secret)."""
        ...

    async def end_sign_in(self, sign_in: str, expires_at: int) -> None:
        """A console sign-in (its id, never a secret) its browser signed out of: :meth:`sign_in_ended` says so until
        ``expires_at`` (when its cookie expires anyway); rows past theirs are dropped on the way."""
        ...

    async def sign_in_ended(self, sign_in: str) -> bool:
        """Was this console sign-in signed out of (:meth:`end_sign_in`)? One primary-key read."""
        ...


class RunLeases(Protocol):
    owner: str | None
    """This process's name on the leases it holds, which fences its runs' saves (``save_response``'s
    ``lease_owner``); None where nothing is shared (one process alone on its database)."""

    @property
    def shared(self) -> bool:
        """True when other processes run background responses on the same database."""

    @property
    def lease_seconds(self) -> float:
        """How long a lease lasts without renewal; the heartbeat renews it several times within."""

    async def start(self, on_cancel: Callable[[str], None]) -> None:
        """Begin listening; ``on_cancel(response_id)`` is called when another process asks to cancel a run."""

    async def close(self) -> None: ...

    async def claim(self, response_id: str) -> None:
        """This process now runs ``response_id`` (called before its ``queued`` row is stored)."""

    async def renew(self, response_ids: list[str]) -> Renewal:
        """The heartbeat: extend this process's leases on ``response_ids``."""

    async def release(self, response_id: str) -> None:
        """The run ended here (its terminal state is stored, or it was deleted)."""

    async def fail_abandoned(self, close: Closer) -> list[str]:
        """Across tenants: workers only. End every run no live process holds with ``close``, each exactly once
        (its terminal event written once); returns their ids."""

    async def take_abandoned(self) -> list[tuple[str, str, dict[str, Any]]]:
        """Across tenants: workers only. Claim for this process the unfinished runs no live process holds (no
        lease, or one that ran out), each by exactly one process (the claim is the same conditional write the
        sweep's end is); returns ``(response_id, tenant, stored response)`` of each, now leased here."""

    async def close_abandoned(self, response_id: str, close: Closer, *, tenant: str) -> dict[str, Any] | None:
        """End ``tenant``'s ``response_id`` with ``close`` if it is unfinished and no live process holds it; the
        closed response, or None when it is finished, still held, or not the tenant's."""

    async def request_cancel(self, response_id: str, *, tenant: str) -> bool:
        """Ask the process running ``tenant``'s ``response_id`` to cancel it; False when no live process holds
        it (or it is not the tenant's)."""

    def watch(self, response_id: str) -> AbstractAsyncContextManager[asyncio.Event]:
        """An event set whenever ``response_id``'s stored stream may have grown (cleared by the caller before
        each read, so a change after the read is never missed)."""


class ReplicaChainStore(Protocol):
    """Which replica of an upstream served each chain (replicas/affinity.py's map, kept where every process finds
    it): a background run resumed by another process, a turn that lands on another worker or another replica of
    the bridge, still goes to the replica holding its prefix. Keys are response and conversation ids (unique in
    the store, so no tenant is needed to tell them apart); a replica is its ``host:port``; ``at`` is seconds since
    the epoch. Bounded by age: :meth:`purge_replica_chains` drops what is older than the map remembers."""

    async def find_replica(self, upstream: str, keys: Sequence[str]) -> str | None:
        """The replica bound to the first of ``keys`` that has one (``keys`` in order of preference), or None."""

    async def bind_replicas(self, bindings: Sequence[tuple[str, str, str, int]]) -> None:
        """``(upstream, key, replica, at)`` rows, each replacing its key's earlier binding."""

    async def purge_replica_chains(self, before: int, *, limit: int) -> int:
        """Delete up to ``limit`` bindings made before ``before``; how many."""


class IdempotencyStore(Protocol):
    """``Idempotency-Key`` of ``POST /v1/responses`` (services/responses/idempotency.py): per tenant, the first request
    sent with a key claims it; its retries find the claim. A key past its ``expires_at`` is as good as absent."""

    async def claim_key(self, key: str, fingerprint: str, *, tenant: str, now: int,
                        expires_at: int) -> IdempotencyRecord | None:
        """Claim ``key`` for a request whose body has ``fingerprint``: None when this caller claimed it (the key was
        free, or its record had expired, in one atomic step: of two callers at once exactly one gets None); else
        the record that holds it."""

    async def finish_key(self, key: str, response_id: str, *, tenant: str) -> None:
        """The claiming request answered with ``response_id``: its retries get that response from now on."""

    async def release_key(self, key: str, *, tenant: str) -> None:
        """The claiming request ended with an answer safe to send again (an error, nothing done): the key is free."""

    async def purge_keys(self, now: int, *, limit: int) -> int:
        """Delete up to ``limit`` records expired at ``now``, of every tenant (for the sweeper only); how many."""
