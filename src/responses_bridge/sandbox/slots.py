"""How many sandboxes run at once, shared fairly among tenants.

A slot is given by the fair-share rule of every shared pool (fairness/share.py): alone, a tenant holds at most its
share of the slots (``max_sandboxes``; by default all of them where there is one tenant, else all but one); with
every slot busy, a run waits, and a freed slot goes to the waiting tenant served least lately (slot-seconds,
decayed), first come first served within a tenant — so a tenant with a queue of calls cannot starve one with a
single call. A running sandbox is never ended for another's turn (its work would be lost). Program slots share the
same class (``acquire(tenant, timeout)`` / ``release``).

A refusal says what is true of the asking tenant only: never what other tenants hold.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from ..fairness.share import Reason
from ..fairness.slots import FairSlots
from ..observability import metrics
from .result import SandboxBusy, SandboxResult

if TYPE_CHECKING:
    from .call import JobKind
    from .limits import SandboxLimits

__all__ = ["FairSlots", "busy_note", "take_slot"]


def busy_note(why: Reason, slots: int, timeout: float) -> str:
    """The note of a run that got no slot: the tenant's own share, or the slots all busy — nothing of others'."""
    if why == "share":
        return (f"Execution did not start: this tenant's runs hold its fair share of the {slots} sandboxes and none "
                f"came free within {timeout:g} s.")
    if why == "queue":
        return (f"Execution did not start: all {slots} sandboxes are busy and the queue of runs waiting for one is "
                "full; a full queue gives up the newest run of the tenant holding and waiting for the most.")
    return f"Execution did not start: all {slots} sandboxes stayed busy for {timeout:g} s."


async def take_slot(slots: FairSlots, tenant: str, limits: SandboxLimits, job: JobKind) -> None:
    """One of the tenant's ``slots`` within ``limits.timeout``, counted live, or :class:`SandboxBusy` with its
    note (counted refused): the one admission of both backends (runner.py, agent_sandbox/backend.py), so they
    refuse alike. The caller gives it back (``slots.release(tenant)``, ``SANDBOX_LIVE.dec()``)."""
    why = await slots.acquire_or_why(tenant, limits.timeout)
    if why is not None:
        metrics.sandbox_run("refused", None, job=job)
        raise SandboxBusy(SandboxResult("refused", "", "", note=busy_note(why, limits.slots, limits.timeout)))
    metrics.SANDBOX_LIVE.inc()
