"""The values the stores hand out and take in (records, pages, the exceptions a store raises): one set for
SQLite and PostgreSQL, read by the services through the Protocols in :mod:`.base`.
"""

from __future__ import annotations

import posixpath
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any


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


def item_page(data: list[dict[str, Any]], has_more: bool) -> ItemPage:
    """The page of ``data`` (already trimmed and in order), its first and last item's ids as its cursors."""
    return ItemPage(data=data, first_id=data[0].get("id") if data else None,
                    last_id=data[-1].get("id") if data else None, has_more=has_more)


@dataclass(frozen=True, slots=True)
class ResponseFilter:
    """What ``GET /v1/responses`` narrows the list to; every field given must match (None: any)."""

    model: str | None = None
    status: str | None = None
    metadata: tuple[tuple[str, str], ...] = ()
    created_before: int | None = None  # the console's time filter: a range of the listing index (unix seconds)
    created_after: int | None = None
    key_id: str | None = None  # the console's Logs: responses made with one API key (its id, never the key)


@dataclass(frozen=True, slots=True)
class ResponsePage:
    """One page of ``GET /v1/responses``: each response's stored JSON as is (the bytes ``GET /v1/responses/{id}``
    answers with), in the order the client asked for, and their ids."""

    data: list[bytes]
    ids: list[str]
    has_more: bool


class ResponseIdTaken(Exception):
    """``save_response`` was given an id another tenant's response already has."""


class LeaseLost(Exception):
    """A run's write was fenced off: the owner it named (a background response's ``lease_owner``, a session turn's
    lease ``owner``) no longer holds the run's lease by the database's clock — it ran out, or another process took
    it — so nothing was written.

    Final for this process: the run is another's now (or will be, whoever sweeps first), so its writer stops the run
    at once and shows nothing more; a loop that retries the store through an outage must let it through, never
    retry it (a retried write would be refused again, and the run's effects would go on meanwhile)."""


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


@dataclass(frozen=True, slots=True)
class StoredChatCompletion:
    """A stored Chat Completion (``store: true``): the upstream's ``chat.completion`` (``completion``) as the
    client got it, the request's messages (``messages``, as ``ChatCompletionStoreMessage`` objects; empty when
    read without them) and what the client may change (``metadata``). ``created_at``: when it was stored (the list
    order); ``model``: what ``GET /v1/chat/completions?model=`` matches."""

    id: str
    created_at: int
    model: str
    metadata: dict[str, Any]
    completion: dict[str, Any]
    messages: list[dict[str, Any]]
    timing: list[Any] | None = None  # its timing document (observability/timing.py): stored, never read back


@dataclass(frozen=True, slots=True)
class ChatCompletionPage:
    """One page of ``GET /v1/chat/completions``, in the order the client asked for (messages not read)."""

    data: list[StoredChatCompletion]
    has_more: bool


class PromptVersionConflict(Exception):
    """An update named a base version that is no longer the latest."""


@dataclass(frozen=True)
class ApiKey:
    """A stored key as ``keys list`` shows it: never the key itself. Times are Unix seconds."""

    id: str
    tenant: str
    created_at: int
    expires_at: int | None = None
    revoked_at: int | None = None
    operator: bool = False
    """An operator's key (``keys create --operator``): the console shows it every tenant and Operations; to the API
    it is its tenant's key like any other."""

    def usable(self, now: int) -> bool:
        return self.revoked_at is None and (self.expires_at is None or now < self.expires_at)


@dataclass(frozen=True)
class StoredKey:
    """A row as stored: the key's public part and the salted hash of its secret."""

    key: ApiKey
    salt: bytes
    secret_hash: bytes


@dataclass(frozen=True)
class Resolved:
    """The row a presented key names, when its secret matches (the key is genuine). Whether it is still usable
    (revoked, expired) is the caller's to say: the answer differs, but only for someone holding the key."""

    key: ApiKey


TerminalFrame = Callable[[int], bytes]
"""The SSE frame that ends a stream, for the sequence number the event log gives it."""


Closer = Callable[[dict[str, Any]], tuple[dict[str, Any], TerminalFrame]]
"""Turns a stored unfinished response into its terminal form (status, error) and the frame that ends its stream."""


@dataclass(frozen=True, slots=True)
class Renewal:
    """What a heartbeat learnt: runs whose lease this replica no longer holds (another replica failed them), and
    runs someone asked to cancel (the polling fallback for the cancel notification)."""

    lost: frozenset[str] = frozenset()
    cancel_requested: frozenset[str] = frozenset()


@dataclass(frozen=True, slots=True)
class IndexedFile:
    filename: str
    attributes: dict[str, Any]


@dataclass(frozen=True, slots=True)
class ChunkRow:
    chunk_id: int
    file_id: str
    text: str


class DimensionMismatch(ValueError):
    """A query vector of other dimensions than the store's vectors: the store was built by another embedder."""


KnownIds = Callable[[Sequence[str]], Awaitable[set[str]]]


@dataclass(frozen=True, slots=True)
class StoredFile:
    id: str
    created_at: int
    bytes: int
    filename: str
    purpose: str
    expires_at: int | None


class UnknownCursor(ValueError):
    """``after`` names no live file of the tenant."""


class StorageLimitExceeded(Exception):
    """Adding a file would take its tenant's stored bytes (live files and container files), or its container's
    bytes, past ``limit``; nothing was written. ``used``: those bytes without the refused file."""

    def __init__(self, limit: int, used: int) -> None:
        super().__init__(f"stored bytes limit {limit} reached ({used} in use)")
        self.limit = limit
        self.used = used


class ContainerLimitExceeded(Exception):
    """Creating a container would give its tenant more than ``limit`` live containers; nothing was written."""

    def __init__(self, limit: int) -> None:
        super().__init__(f"live containers limit {limit} reached")
        self.limit = limit


class PathConflict(Exception):
    """A container file at ``path`` and the stored one at ``existing`` cannot both be: one names a directory of the
    other (``a`` and ``a/b``). A run's directory, where the files are laid out, could hold only one of them, so every
    later call on the container would fail; nothing was written."""

    def __init__(self, path: str, existing: str) -> None:
        super().__init__(f"{path} conflicts with the stored {existing}")
        self.path = path
        self.existing = existing


def parent_paths(path: str) -> list[str]:
    """Every directory above ``path`` (``/mnt/data/a/b``: ``/mnt/data/a``, ``/mnt/data``, ``/mnt``): a stored file
    at any of them makes ``path`` impossible, as a stored file below ``path`` does."""
    parents: list[str] = []
    while (parent := posixpath.dirname(path)) not in (path, "", "/"):
        parents.append(parent)
        path = parent
    return parents


STATUSES = ("in_progress", "completed", "failed", "cancelled")


@dataclass(frozen=True, slots=True)
class FileCounts:
    in_progress: int = 0
    completed: int = 0
    failed: int = 0
    cancelled: int = 0

    @property
    def total(self) -> int:
        return self.in_progress + self.completed + self.failed + self.cancelled


@dataclass(frozen=True, slots=True)
class StoredVectorStore:
    id: str
    created_at: int
    name: str
    description: str | None
    metadata: dict[str, Any]
    expires_after: dict[str, Any] | None
    last_active_at: int
    embedder: str | None
    file_counts: FileCounts = field(default_factory=FileCounts)
    usage_bytes: int = 0


@dataclass(frozen=True, slots=True)
class StoredVectorStoreFile:
    seq: int
    vector_store_id: str
    file_id: str
    created_at: int
    status: str
    last_error: dict[str, Any] | None
    attributes: dict[str, Any]
    chunking: dict[str, Any]
    usage_bytes: int


@dataclass(frozen=True, slots=True)
class StoredFileBatch:
    id: str
    vector_store_id: str
    created_at: int
    cancelled: bool
    file_counts: FileCounts


@dataclass(frozen=True, slots=True)
class NewFile:
    """A file to attach: its id, attributes and the chunking strategy object it is ingested with."""

    file_id: str
    attributes: Mapping[str, Any]
    chunking: Mapping[str, Any]


@dataclass(frozen=True, slots=True)
class Page:
    data: list[Any]
    has_more: bool


class UnknownFile(LookupError):
    """An attach named a file that is not one of the tenant's live files (missing, expired, deleted or another
    tenant's: all alike); nothing was attached."""

    def __init__(self, file_id: str) -> None:
        super().__init__(f"no file {file_id!r}")
        self.file_id = file_id


MAX_PAGE_LIMIT = 100
"""Upper bound of ``limit`` for ``input_items`` pages, as in the OpenAI API."""


def check_page_args(limit: int, order: str) -> None:
    """Raise :class:`InvalidPageArgs` unless ``limit`` and ``order`` describe a page every store can serve."""
    if not isinstance(limit, int) or isinstance(limit, bool) or not 1 <= limit <= MAX_PAGE_LIMIT:
        raise InvalidPageArgs("limit", limit)
    if order not in ("asc", "desc"):
        raise InvalidPageArgs("order", order)


@dataclass(frozen=True, slots=True)
class StoredContainer:
    """A container (``/v1/containers``): where the code interpreter's files live between calls. ``expires_minutes``
    after ``last_active_at`` it expires (then every read answers as for a missing one, and the purge deletes it)."""

    id: str
    name: str
    created_at: int
    last_active_at: int
    expires_minutes: int
    memory_limit: str | None = None
    network_policy: str | None = None
    """An ``allowlist`` policy as JSON (sandbox/egress/policy.stored_form: each secret sealed, never in plain
    text); None: ``disabled``."""
    packages_blob: str | None = None
    """The packages installed at an agent environment's start: the blob holding the zip of the tree each call
    sees read-only at ``/mnt/packages`` (services/agents/environments/packages.py); None: none."""

    def expires_at(self) -> int:
        return self.last_active_at + self.expires_minutes * 60


@dataclass(frozen=True, slots=True)
class StoredContainerFile:
    """A file of a container: ``path`` is where the code sees it (``/mnt/data/…``), ``blob_id`` names its bytes in
    the file bytes storage (a ``file-…`` id the bridge made; never the id a client sees), ``source`` ``user``
    (uploaded or copied from /v1/files) or ``assistant`` (written by the code)."""

    id: str
    container_id: str
    path: str
    bytes: int
    created_at: int
    source: str
    blob_id: str


@dataclass(frozen=True, slots=True)
class IdempotencyRecord:
    """A tenant's ``Idempotency-Key`` as kept (base.py: ``IdempotencyStore``): the fingerprint of the request it
    was first sent with, and that request's response id once it has answered (None while it runs)."""

    fingerprint: str
    response_id: str | None
    expires_at: int
