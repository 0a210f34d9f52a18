"""How many sandboxes run at once, shared fairly among tenants.

A slot is given by the fair-share rule of every shared pool (fair_share.py): alone, a tenant holds at most its
share of the slots (``max_sandboxes``; by default all of them where there is one tenant, else all but one); beside
others, it is given another only while the slots left free are at least its ratio times what it then holds, and a
tenant holding none is given a free slot at once — so several tenants' runaway code together always leave a slot
for another's first call. A freed slot goes to the waiting tenant that holds the fewest, first come first served
among equals, so a tenant with a queue of calls cannot starve one with a single call. Program slots share the same
class (``acquire(tenant, timeout)`` / ``release``).
"""

from __future__ import annotations

from ..fair_share import FairSlots

__all__ = ["FairSlots"]
