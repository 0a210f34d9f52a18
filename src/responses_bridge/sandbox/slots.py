"""How many sandboxes run at once, shared fairly among tenants.

A slot is given by the fair-share rule of every shared pool (fair_share.py): alone, a tenant holds at most its
share of the slots (``max_sandboxes``; by default all of them where there is one tenant, else all but one); with
every slot busy, a tenant holding fewer than its fair share (the slots over the tenants holding or waiting) is given
the slot of the newest run of the tenant holding the most above its own (that run ends, saying it was taken back),
and a freed slot goes to the waiting tenant that holds the fewest, first come first served among equals — so a
tenant with a queue of calls cannot starve one with a single call. Program slots share the same class
(``acquire(tenant, timeout)`` / ``release``).

A refusal says what is true of the asking tenant only: never what other tenants hold.
"""

from __future__ import annotations

from ..fair_share import FairSlots, Reason

__all__ = ["FairSlots", "busy_note"]


def busy_note(why: Reason, slots: int, timeout: float) -> str:
    """The note of a run that got no slot: the tenant's own share, or the slots all busy — nothing of others'."""
    if why == "share":
        return (f"Execution did not start: this tenant's runs hold its fair share of the {slots} sandboxes and none "
                f"came free within {timeout:g} s.")
    if why == "queue":
        return (f"Execution did not start: all {slots} sandboxes are busy and the queue of runs waiting for one is "
                "full; a full queue gives up the newest run of the tenant holding and waiting for the most.")
    return f"Execution did not start: all {slots} sandboxes stayed busy for {timeout:g} s."
