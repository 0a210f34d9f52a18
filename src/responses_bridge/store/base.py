"""The storage contract the rest of the bridge relies on.

Callers only see :class:`ResponseStore`, so the embedded SQLite store can be swapped for a shared database
(PostgreSQL, for several bridge replicas) without touching its callers. The store keeps data only: bad paging
arguments raise the small exceptions below, and the callers turn them into the API's errors.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any, Protocol, runtime_checkable

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

MAX_PAGE_LIMIT = 100
"""Upper bound of ``limit`` for ``input_items`` pages, as in the OpenAI API."""


class InvalidPageArgs(ValueError):
    """A page was asked for with a ``limit`` outside 1..MAX_PAGE_LIMIT or an ``order`` other than asc/desc."""

    def __init__(self, param: str, value: object) -> None:
        super().__init__(f"invalid {param}: {value!r}")
        self.param = param
        self.value = value


class InvalidCursor(ValueError):
    """A page cursor (``after``/``before``) names no item of the listed collection."""

    def __init__(self, param: str, value: str) -> None:
        super().__init__(f"no item with id {value!r} for {param}")
        self.param = param
        self.value = value


def check_page_args(limit: int, order: str) -> None:
    """Raise :class:`InvalidPageArgs` unless ``limit`` and ``order`` describe a page every store can serve."""
    if not isinstance(limit, int) or isinstance(limit, bool) or not 1 <= limit <= MAX_PAGE_LIMIT:
        raise InvalidPageArgs("limit", limit)
    if order not in ("asc", "desc"):
        raise InvalidPageArgs("order", order)


@dataclass(frozen=True, slots=True)
class StoredResponse:
    """A response as persisted.

    ``response`` is the full Response object exactly as sent to the client, so ``GET /v1/responses/{id}`` can
    replay it byte-for-byte. ``input_items`` are that request's own input items (normalised, each with an
    ``"id"``), not the expanded history. Instructions live only inside ``response``: they belong to one turn and
    must not leak into the history of the next.
    """

    response: dict[str, Any]
    input_items: list[dict[str, Any]]


@dataclass(frozen=True, slots=True)
class ItemPage:
    """One page of ``GET /v1/responses/{id}/input_items``, already in the order the client asked for."""

    data: list[dict[str, Any]]
    first_id: str | None
    last_id: str | None
    has_more: bool


@dataclass(frozen=True, slots=True)
class ResponseFilter:
    """What ``GET /v1/responses`` narrows the list to; every field given must match (None: any)."""

    model: str | None = None
    status: str | None = None
    metadata: tuple[tuple[str, str], ...] = ()


@dataclass(frozen=True, slots=True)
class ResponsePage:
    """One page of ``GET /v1/responses``: each response's stored JSON as is (the bytes ``GET /v1/responses/{id}``
    answers with), in the order the client asked for, and their ids."""

    data: list[bytes]
    ids: list[str]
    has_more: bool


@runtime_checkable
class ResponseStore(Protocol):
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
                            conversation_id: str | None = None) -> None:
        """Insert, or replace if the id exists (``in_progress`` -> ``completed``), response and items atomically.

        A new row belongs to ``tenant``. Replacing an existing id only happens when that row is ``tenant``'s;
        an id held by another tenant raises :class:`ResponseIdTaken` and changes nothing (ids are generated, so
        this is a collision or a forged save, never a normal path). With ``conversation_id``, the response's input
        then output items are appended to that conversation (on the same database) in the same transaction, only
        if it is ``tenant``'s; a conversation that no longer exists (or is not the tenant's) is skipped."""

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

    async def response_tenants(self) -> list[str]:
        """Across tenants: workers only (retention). Every tenant owning at least one stored response."""

    async def purge_responses(self, cutoffs: Mapping[str, int], *, limit: int) -> int:
        """Across tenants: workers only (retention). Delete at most ``limit`` responses (with their items,
        metadata and events) of the tenants named in ``cutoffs`` whose ``created_at`` is before that tenant's
        cutoff (unix seconds), never one still ``queued``/``in_progress``; one short write transaction. Returns
        how many were deleted (0: nothing left to purge)."""


class ResponseIdTaken(Exception):
    """``save_response`` was given an id another tenant's response already has."""


@runtime_checkable
class EventLog(Protocol):
    """The stored event streams of background responses (``response_events``), for replay with
    ``GET /v1/responses/{id}?stream=true&starting_after=N``. Events are children of their response: every method
    taking ``tenant`` reaches them through a response row of that tenant."""

    async def append(self, response_id: str, events: list[tuple[int, bytes]], *, tenant: str) -> None:
        """Store ``(sequence_number, frame)`` pairs, durable on return; a sequence number already stored is kept.
        Nothing is stored when the response is not ``tenant``'s (or no longer exists)."""

    async def after(self, response_id: str, after: int, *, tenant: str) -> list[tuple[int, bytes]]:
        """The stored frames with ``sequence_number > after``, in order; empty when unknown or not ``tenant``'s."""

    async def truncate(self, response_id: str, first: int, *, tenant: str) -> None:
        """Forget the events from sequence number ``first`` on."""

    async def end_response(self, response: dict[str, Any], terminal_frame: Callable[[int], bytes], *,
                           tenant: str) -> None:
        """Store ``response`` (in its terminal status) and append ``terminal_frame(n)`` after the last stored
        event (``n`` its sequence number) in one transaction; nothing happens when it is not ``tenant``'s."""

    async def unfinished(self) -> list[tuple[str, dict[str, Any]]]:
        """Across tenants: workers only (start-up recovery). ``(tenant, response)`` of every stored response
        still ``queued``/``in_progress``."""


# --- conversations and prompts (same database as the responses) --------------------------------------------------


@dataclass(frozen=True, slots=True)
class StoredConversation:
    id: str
    created_at: int
    metadata: dict[str, Any]


@dataclass(frozen=True, slots=True)
class StoredPromptVersion:
    """One immutable version of a prompt, with the prompt's current bookkeeping."""

    id: str
    created_at: int  # the prompt's
    version: int
    version_created_at: int
    latest_version: int
    default_version: int | None  # None: the latest version is the default
    body: dict[str, Any]  # name, instructions, variables, metadata


@dataclass(frozen=True, slots=True)
class ConversationPage:
    """One page of ``GET /v1/conversations``, in the order the client asked for."""

    data: list[StoredConversation]
    has_more: bool


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


class PromptVersionConflict(Exception):
    """An update named a base version that is no longer the latest."""


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
