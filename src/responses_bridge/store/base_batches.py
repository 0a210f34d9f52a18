"""What the Batch API keeps (services/batches/): each batch's object and the lines of its input, with the lease of
the process that runs it.

A batch is one row: its Batch object as JSON (the fields that change only at a status change: timestamps, errors,
the output files; private keys start with ``_`` and never reach an answer), its status in a column of its own (the
runners look for unfinished batches through it), the counters every finished line adds to in the same transaction
as its result (``request_counts`` and ``usage`` are then one row read, whatever the batch's size), and who runs it:
``owner`` and ``lease_until``, renewed by the owner's heartbeat. Lease times are the database's clock where
replicas share one (PostgreSQL: its ``now()``, so that replicas whose clocks disagree still agree on a lapse), the
caller's ``now`` on a SQLite file (one host). Its lines are rows of their own, written once the
input has been validated: the request's body as sent, then ``started`` just before the line goes upstream and its
output line (the line of the output or error file) once it is answered. A process that claims a batch whose
owner's lease lapsed (or, alone on a SQLite file, any unfinished batch at start) resumes at the lines not done: a
line ``started`` but not done was in flight when its process was lost, is sent again, and is counted
(``rerun``). Every write of the runner names its owner, and a write of a process that lost its lease changes
nothing (a fence: two processes never both record a line).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Protocol

UNFINISHED = ("validating", "in_progress", "finalizing", "cancelling")
"""The statuses a runner still has work for."""


def kept_cancelling(current: str, status: str) -> str:
    """The status a runner's change leaves: a cancel recorded while the runner moves on (its input validated, its
    lines done) is not overwritten — the batch stays ``cancelling`` until the runner ends it."""
    return current if current == "cancelling" and status in ("in_progress", "finalizing") else status


@dataclass(frozen=True)
class LineCounts:
    """What a finished line adds to its batch: one completed or failed, and its tokens."""

    failed: bool
    input_tokens: int = 0
    cached_tokens: int = 0
    output_tokens: int = 0
    reasoning_tokens: int = 0


@dataclass(frozen=True)
class BatchTotals:
    """The counters of a batch: ``request_counts`` and ``usage`` of its object, and ``rerun``: the lines sent
    again after their process was lost while they were in flight."""

    total: int = 0
    completed: int = 0
    failed: int = 0
    input_tokens: int = 0
    cached_tokens: int = 0
    output_tokens: int = 0
    reasoning_tokens: int = 0
    rerun: int = 0


@dataclass(frozen=True)
class StoredBatch:
    """A batch as kept: its object (with private ``_`` keys), its status, its counters, its tenant."""

    body: dict[str, Any]
    status: str
    totals: BatchTotals
    tenant: str

    @property
    def id(self) -> str:
        return str(self.body["id"])


@dataclass(frozen=True)
class PendingLine:
    """A line still to answer: its index in the input (0-based), ``custom_id``, body, and whether it was started
    before (then in flight when its process was lost)."""

    index: int
    custom_id: str
    body: bytes
    started: bool


@dataclass(frozen=True)
class LineResult:
    """A finished line: its index, whether it goes to the error file, and its output line (JSON, no newline)."""

    index: int
    failed: bool
    output: bytes


class BatchStore(Protocol):
    """The Batch API's records; the same names on SQLite (store/sqlite/batches/) and PostgreSQL
    (store/postgres/batches/). Every read and change a client asks names its tenant: another tenant's batch answers
    as a missing one. The runner's writes name its ``owner`` instead (it claimed the batch)."""

    async def add_batch(self, body: dict[str, Any], *, tenant: str) -> None:
        """Keep a new batch (status ``validating``, no lines yet, no owner)."""

    async def get_batch(self, batch_id: str, *, tenant: str) -> StoredBatch | None: ...

    async def list_batches(self, *, tenant: str, after: str | None, limit: int) -> tuple[list[StoredBatch], bool]:
        """The tenant's batches, newest first, after the one named (``UnknownCursor`` when it is not the tenant's);
        and whether more follow."""

    async def every_batch(self, *, status: str | None, limit: int) -> list[StoredBatch]:
        """Every tenant's batches, newest first (only those of ``status`` when given): the operator's list
        (``responses-bridge batches list``), never an answer to a tenant."""

    async def find_batch(self, batch_id: str) -> StoredBatch | None:
        """The batch whoever's it is: the operator's cancel names it by id alone."""

    async def request_cancel(self, batch_id: str, now: int, *, tenant: str) -> StoredBatch | None:
        """Mark the batch ``cancelling`` (``cancelling_at``: ``now``) when it is unfinished and not already so; the
        batch as it is after (None: not the tenant's). Its runner sees it at its next line."""

    async def change_batch(self, batch_id: str, status: str, changes: dict[str, Any], *, owner: str) -> bool:
        """Set the status (as :func:`kept_cancelling` leaves it) and merge ``changes`` into the object, only while
        ``owner`` holds the lease; False when it no longer does."""

    async def status_of(self, batch_id: str) -> str | None:
        """The batch's status now (a cancel another process recorded), whoever's it is."""

    async def reset_lines(self, batch_id: str, *, owner: str) -> bool:
        """Forget the lines of a batch whose validation was cut short (its process lost while ``validating``), so
        that it is validated again from the start; False when the lease is lost."""

    async def add_lines(self, batch_id: str, lines: list[tuple[int, str, bytes]], *, owner: str) -> bool:
        """Keep validated lines (index, custom_id, body), adding them to ``total``; False when the lease is lost."""

    async def pending_lines(self, batch_id: str, after: int, limit: int) -> list[PendingLine]:
        """Lines not done, in input order, of index above ``after``."""

    async def start_line(self, batch_id: str, index: int, *, owner: str) -> bool:
        """Mark the line started (it goes upstream next); a line already started counts once more in ``rerun``.
        False when the lease is lost (then the line must not be sent)."""

    async def finish_line(self, batch_id: str, index: int, output: bytes, counts: LineCounts, *, owner: str) -> bool:
        """Record the line's output line and add it to the counters, in one transaction; False (nothing recorded)
        when the lease is lost or the line was recorded already."""

    async def line_results(self, batch_id: str, after: int, limit: int) -> list[LineResult]:
        """Finished lines in input order, of index above ``after``: the output and error files are written from
        these."""

    async def forget_lines(self, batch_id: str, *, owner: str) -> None:
        """Drop the lines of a batch that ended, once its output and error files hold them."""

    async def claimable(self, now: float, *, limit: int) -> list[str]:
        """Unfinished batches no live lease holds, oldest first."""

    async def claim(self, batch_id: str, owner: str, now: float, lease_seconds: float, *,
                    force: bool = False) -> StoredBatch | None:
        """Take the batch's lease for ``lease_seconds`` when it is unfinished and its lease lapsed (``force``:
        whoever holds it, for the only process on a SQLite file at its start); exactly one of the processes asking
        at once gets it. The batch, or None."""

    async def renew(self, batch_ids: list[str], owner: str, now: float, lease_seconds: float) -> list[str]:
        """Extend ``owner``'s leases by ``lease_seconds``; the ids of those it no longer holds."""

    async def release(self, batch_id: str, owner: str) -> None:
        """Let go of the lease (drain; the batch ended), for another process to claim at once."""
