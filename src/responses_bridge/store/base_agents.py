"""The store of the Agents API (services/agents/agents.py, services/agents/sessions.py): reusable agents, sessions,
their turns, items and idempotency keys as JSON records, and each session's event log.

Every record is a JSON object of one ``kind`` (``agent``, ``session``, ``turn``, ``item``, ``key``, ``artifact``,
``automation``, ``invocation``, ``vault``, ``vault_credential``, ``subagent``, ``subagent_turn``, ``subagent_item``,
``environment_template``, ``environment``, ``environment_unclaimed``, ``trace``), owned by one tenant, listed in the
order it was first stored. ``parent`` ties a record to the one it belongs to (a turn, an item, a key, an artifact, a
subagent or a turn's trace to its session; a session to its root agent, for the ``agent_id`` filter; an invocation
to its automation; a credential to its vault; a subagent's turns and items to it); ``scope`` narrows a list further
(an item's turn, an artifact's environment). The service decides what the records say: the store keeps them, pages
them and never reads them beyond the metadata filter of a list and the scheduler's
:meth:`AgentStore.due_automations`.

A session's events are kept apart, one row per event numbered from 0 by the service, each the SSE frame exactly as
it was sent, so a resumed stream is byte for byte what a live reader got.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Literal, Protocol

KINDS = ("agent", "session", "turn", "item", "key", "artifact", "automation", "invocation", "vault",
         "vault_credential", "subagent", "subagent_turn", "subagent_item", "environment_template", "environment",
         "environment_unclaimed", "trace")
OWNED_KINDS = {"automation": "invocation", "vault": "vault_credential"}
"""The records that go with their parent when it is deleted (a session's are the stores' ``CHILD_KINDS``)."""


def charged_bytes(kind: str, body: dict[str, Any], text: str) -> int:
    """What a record counts in its tenant's ``max_stored_bytes``: its JSON ``text``'s bytes, and an artifact's
    kept bytes (``size_bytes``: its blob). ``isascii`` is O(1), so JSON that is ASCII, as most is, is not encoded
    again to be counted."""
    stored = len(text) if text.isascii() else len(text.encode())
    return stored + (int(body.get("size_bytes") or 0) if kind == "artifact" else 0)


@dataclass(frozen=True)
class Record:
    """A record to store (:meth:`AgentStore.commit`)."""

    kind: str
    id: str
    body: dict[str, Any]
    parent: str | None = None
    scope: str | None = None


@dataclass(frozen=True)
class RecordPage:
    data: list[dict[str, Any]]
    has_more: bool


class AgentStore(Protocol):
    async def put(self, kind: str, record_id: str, body: dict[str, Any], *, tenant: str, parent: str | None = None,
                  scope: str | None = None) -> None:
        """Store ``body`` as the record (a new one is listed last; a replaced one keeps its place)."""
        ...

    async def get(self, kind: str, record_id: str, *, tenant: str) -> dict[str, Any] | None: ...

    async def commit(self, session_id: str, records: list[Record], events: list[tuple[int, str, bytes]], *,
                     tenant: str, owner: str | None = None) -> None:
        """:meth:`put` of every record and :meth:`append_events` of the session's events, in one transaction: a
        turn's state and the events that tell it are stored together, in one write. With ``owner``, fenced as
        :meth:`append_events`."""
        ...

    async def page(self, kind: str, *, tenant: str, parent: str | None = None, scope: str | None = None,
                   after: str | None = None, limit: int = 20, order: str = "desc",
                   metadata: list[tuple[str, str]] | None = None) -> RecordPage:
        """Records of ``kind`` (of ``parent`` / ``scope`` when given) after the record ``after`` in ``order``;
        ``metadata``: pairs the record's ``metadata`` must all hold. Raises ``InvalidPageArgs`` / ``InvalidCursor``
        (records.py)."""
        ...

    async def delete(self, kind: str, record_id: str, *, tenant: str) -> bool:
        """Forget the record, every record whose parent it is (a session's, a vault's credentials), and (a
        session) its events; False when it was not ``tenant``'s."""
        ...

    async def count(self, kind: str, *, tenant: str) -> int: ...

    async def in_use(self) -> bool:
        """Whether any tenant has anything of the Agents API stored (an agent, a session, an automation, a vault…):
        the HTTP door loads the Agents API at start only then, since only then can there be a turn to resume or an
        automation to fire (adapters/http/agents/capability.py)."""
        ...

    async def unfinished_sessions(self, limit: int = 1000) -> list[tuple[str, dict[str, Any]]]:
        """Across tenants (start-up recovery only): ``(tenant, session)`` of sessions whose ``status`` says a turn
        is running or waiting."""
        ...

    async def claim_session(self, session_id: str, owner: str, *, seconds: float) -> bool:
        """Take (or renew) the lease on running ``session_id``'s turns for ``seconds``: True unless another owner
        holds it. Taken and judged by the database's clock (PostgreSQL's ``now()``; one SQLite file is one host's,
        its own): a replica whose clock is wrong never takes a session another still holds, nor keeps one past
        its lease."""
        ...

    async def renew_sessions(self, session_ids: list[str], owner: str, *, seconds: float) -> set[str]:
        """Extend ``owner``'s leases on ``session_ids`` by ``seconds`` where it still holds them by the database's
        clock, in one write; the ids renewed. One left out ran out (taken or not: its runner stops, and whoever
        claims the session next resumes it — the turn's writes were fenced off from that moment, see
        :meth:`append_events`)."""
        ...

    async def release_session(self, session_id: str, owner: str) -> None: ...

    async def database_time(self) -> float:
        """Unix seconds by the database's clock (PostgreSQL's ``now()``; a SQLite file's host's): the time the
        automations' scheduler fires by, so a replica whose clock is wrong fires no occurrence early or late."""
        ...

    async def due_automations(self, now: float, limit: int = 100) -> list[tuple[str, dict[str, Any]]]:
        """Across tenants (the automations' scheduler): ``(tenant, automation)`` of at most ``limit`` active
        automations whose ``_next_at`` is at or before ``now``, dealt across tenants in turn: every tenant's
        earliest (the earliest of them first), then every tenant's second, and so on — so a tenant with many due
        never keeps another's first out of the ``limit``."""
        ...

    async def advance_automation(self, automation_id: str, scheduled_at: int, next_at: int | None,
                                 status: str) -> bool:
        """Set the active automation's ``_next_at`` and ``status`` if its ``_next_at`` is still ``scheduled_at``,
        in one statement that touches nothing else in it (a pause or an edit made meanwhile is kept)."""
        ...

    async def claim_firing(self, automation_id: str, scheduled_at: int, invocation: dict[str, Any], *,
                           tenant: str, now: float, per_minute: int) -> Literal["fired", "over_rate"] | None:
        """Insert the firing of ``automation_id`` at ``scheduled_at`` (at ``now``) and its ``invocation`` record,
        in one transaction: None for every caller (worker or replica) that found it there, and while the
        automation is no longer active at that occurrence (paused, edited or deleted before the claim: a pause
        answered is never followed by a firing, and a firing claimed is listed at once); for the one that inserted
        it, ``fired`` while the tenant's firings let through in the minute before ``now`` are fewer than
        ``per_minute``, else ``over_rate`` (counted in the same transaction, so processes claiming at once count
        each other's)."""
        ...

    async def keep_version(self, automation_id: str, digest: str, body: dict[str, Any], *, tenant: str,
                           now: float) -> None:
        """Keep ``body``, a snapshot of the automation, as its version ``digest`` (kept once however many
        invocations refer to it)."""
        ...

    async def automation_versions(self, automation_id: str, digests: list[str], *,
                                  tenant: str) -> dict[str, dict[str, Any]]:
        """The kept versions of ``digests`` of the tenant's automation, by digest."""
        ...

    async def forget_invocations(self, automation_id: str, *, keep: int, tenant: str, settled: float) -> int:
        """Forget the automation's invocations but its ``keep`` newest, and its versions (kept before
        ``settled``) no invocation refers to any more; how many invocations went."""
        ...

    async def forget_expired(self, before: float, *, settled: float, limit: int = 10_000) -> int:
        """Across tenants: forget up to ``limit`` invocations made before ``before``, the firings claimed an hour
        before ``settled`` (past any racing claim and any rate's minute), and the versions kept before ``settled``
        no invocation refers to; how many invocations went."""
        ...

    async def append_events(self, session_id: str, events: list[tuple[int, str, bytes]], *, tenant: str,
                            owner: str | None = None) -> None:
        """``(sequence, event_id, frame)`` rows; durable when it returns; a sequence already stored is kept. With
        ``owner`` (a running turn's writes, on a database several processes share), nothing is written unless
        that owner holds the session's lease by the database's clock, checked in the write's transaction with the
        lease's row locked (a claim waits for it): else :class:`~responses_bridge.store.records.LeaseLost`."""
        ...

    async def events_after(self, session_id: str, after: int, *, tenant: str,
                           limit: int = 1000) -> list[tuple[int, str, bytes]]: ...

    async def event_sequence(self, session_id: str, event_id: str, *, tenant: str) -> int | None:
        """The sequence number of ``event_id`` in the session's log (a resumed stream's cursor)."""
        ...

    async def last_event(self, session_id: str, *, tenant: str) -> int:
        """The highest sequence stored for the session, -1 for none."""
        ...
