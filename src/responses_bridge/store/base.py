"""The storage contract the rest of the bridge relies on.

Callers only see :class:`ResponseStore`, so the embedded SQLite store can be swapped for a shared database
(PostgreSQL, for several bridge replicas) without touching its callers. The store keeps data only: bad paging
arguments raise the small exceptions below, and the callers turn them into the API's errors.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Protocol, runtime_checkable

DEFAULT_TENANT = ""
"""The tenant of every object when ``RESPONSES_BRIDGE_AUTH=none``, and of objects stored before tenancy existed.
Every store method that reads or changes one tenant's objects takes ``tenant`` and matches it in its queries."""

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

    async def save_response(self, response: dict[str, Any], input_items: list[dict[str, Any]], *,
                            conversation_id: str | None = None) -> None:
        """Insert, or replace if the id exists (``in_progress`` -> ``completed``), response and items atomically.

        With ``conversation_id``, the response's input then output items are appended to that conversation (on
        the same database) in the same transaction; a conversation that no longer exists is skipped."""

    async def get_response(self, response_id: str) -> dict[str, Any] | None: ...

    async def delete_response(self, response_id: str) -> bool:
        """Delete a response and its items; False if it was unknown."""

    async def list_input_items(
        self,
        response_id: str,
        *,
        after: str | None = None,
        before: str | None = None,
        limit: int = 20,
        order: str = "desc",
    ) -> ItemPage | None:
        """A cursor page of the response's input items; None if the response is unknown.

        ``after``/``before`` are item ids, exclusive, interpreted in the requested ``order``. An unknown cursor id
        raises :class:`InvalidCursor` naming the cursor; a bad ``limit``/``order`` :class:`InvalidPageArgs`.
        """

    async def list_responses(self, *, after: str | None = None, before: str | None = None, limit: int = 20,
                             order: str = "desc", where: ResponseFilter | None = None) -> ResponsePage:
        """A cursor page of stored responses in (created_at, id) order, narrowed by ``where`` (None: every response).

        Cursors are response ids, exclusive, interpreted in the requested ``order`` (as for input items); an id
        that names no stored response raises :class:`InvalidCursor`, a bad ``limit``/``order``
        :class:`InvalidPageArgs`. Deleted responses are gone from the list.
        """

    async def load_history(self, response_id: str) -> list[dict[str, Any]] | None:
        """Input then output items of every turn from the oldest reachable ancestor up to ``response_id``.

        None if ``response_id`` is unknown. A deleted ancestor cuts the chain: history starts after it.
        """


class ResponseIdTaken(Exception):
    """``save_response`` was given an id another tenant's response already has."""


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
    async def create_conversation(self, conversation_id: str, created_at: int, metadata: dict[str, Any],
                                  items: list[dict[str, Any]]) -> None:
        """Create the conversation with its first items atomically."""

    async def get_conversation(self, conversation_id: str) -> StoredConversation | None: ...

    async def list_conversations(self, *, after: str | None = None, before: str | None = None, limit: int = 20,
                                 order: str = "desc") -> ConversationPage:
        """A cursor page of conversations in (created_at, id) order; cursors as for ``list_responses``."""

    async def update_conversation(self, conversation_id: str,
                                  metadata: dict[str, Any]) -> StoredConversation | None: ...

    async def delete_conversation(self, conversation_id: str) -> bool:
        """Delete a conversation and its items; False if it was unknown."""

    async def append_items(self, conversation_id: str, items: list[dict[str, Any]]) -> bool:
        """Append items at the end, atomically; False if the conversation is unknown."""

    async def load_items(self, conversation_id: str) -> list[dict[str, Any]] | None:
        """Every item in order (one query), for the model; None if the conversation is unknown."""

    async def list_items(self, conversation_id: str, *, after: str | None = None, limit: int = 20,
                         order: str = "desc") -> ItemPage | None:
        """A cursor page of items; None if the conversation is unknown; unknown ``after`` -> InvalidCursor."""

    async def get_item(self, conversation_id: str, item_id: str) -> dict[str, Any] | None: ...

    async def delete_item(self, conversation_id: str, item_id: str) -> bool: ...


class PromptVersionConflict(Exception):
    """An update named a base version that is no longer the latest."""


@runtime_checkable
class PromptStore(Protocol):
    async def create_prompt(self, prompt_id: str, created_at: int, body: dict[str, Any]) -> None: ...

    async def add_version(self, prompt_id: str, created_at: int, body: dict[str, Any],
                          expected_version: int | None = None) -> StoredPromptVersion | None:
        """A new latest version; None if the prompt is unknown; raises PromptVersionConflict when
        ``expected_version`` is given and is not the latest."""

    async def get_prompt(self, prompt_id: str, version: int | None = None) -> StoredPromptVersion | None:
        """The given version, or the default one; None if the prompt or the version is unknown."""

    async def list_prompts(self, *, after: str | None = None, limit: int = 20,
                           order: str = "desc") -> tuple[list[StoredPromptVersion], bool]:
        """Prompts (each at its default version) by creation time, and whether there are more."""

    async def list_versions(self, prompt_id: str) -> list[StoredPromptVersion] | None: ...

    async def set_default_version(self, prompt_id: str, version: int) -> StoredPromptVersion | None:
        """None if the prompt or the version is unknown."""

    async def delete_prompt(self, prompt_id: str) -> bool: ...
