"""A program's memory bound (``RESPONSES_BRIDGE_PROGRAM_MEMORY_BYTES``) made to agree with what one tenant may hold
of the memory budget (``RESPONSES_BRIDGE_MEMORY_BUDGET_BYTES`` × ``RESPONSES_BRIDGE_MEMORY_BUDGET_SHARE``), read by
the settings (config/settings.py) before any service exists.

A running program holds its bound in the budget for its tenant (run/programs/host.py), beside what the request that
runs it holds itself. With the bound fixed at 256 MiB and the budget at 256 MiB (what a 512 MiB container gets), a
tenant's share was 128 MiB and every program ended ``incomplete`` ("no room for its memory bound"), with nothing said
at start. So, unset, the bound is derived: 256 MiB or half what one tenant may hold alone, whichever is less (the
other half is for the request and the program's answer); set, it must fit in what one tenant may hold beside its
request, or the start stops naming both settings. A budget too small for the setting's floor (64 MiB) leaves
programs unable to run: the start says so (runtime.py), rather than every program saying it later.
"""

from __future__ import annotations

DEFAULT_BOUND = 256 << 20
"""The bound where the budget leaves room for it (a budget of 1 GiB or more at the default share)."""
FLOOR = 64 << 20
"""The setting's least value (config/pools.py): V8 and a useful heap need about that."""
REQUEST_HOLDS = 2 << 20
"""What the request running a program holds of the budget itself, at least: one step of its body (about 2 MiB of
budget: services/tenancy/memory_budget.py's ``STEP_COST``)."""
SETTING = "RESPONSES_BRIDGE_PROGRAM_MEMORY_BYTES"
BUDGET_SETTINGS = "RESPONSES_BRIDGE_MEMORY_BUDGET_BYTES × RESPONSES_BRIDGE_MEMORY_BUDGET_SHARE"


def tenant_room(budget: int, share: float) -> int:
    """What one tenant may hold of ``budget`` alone (as the budget computes it); 0: no budget."""
    return max(1, int(budget * share)) if budget else 0


def derived_bound(budget: int, share: float) -> int:
    """The bound when it is not set: :data:`DEFAULT_BOUND`, or half what a tenant may hold if that is less (never
    below :data:`FLOOR`: then programs cannot run, which :func:`no_room` says)."""
    room = tenant_room(budget, share)
    if not room:
        return DEFAULT_BOUND
    return max(FLOOR, min(DEFAULT_BOUND, room // 2 // (1 << 20) << 20))


def no_room(bound: int, budget: int, share: float) -> str | None:
    """Why a program with ``bound`` can never run on this budget (one line naming the settings), or None."""
    room = tenant_room(budget, share)
    if not room or bound + REQUEST_HOLDS <= room:
        return None
    return (f"{SETTING} ({_mib(bound)}) is more than one tenant may hold of the memory budget beside the request "
            f"that runs the program ({BUDGET_SETTINGS}: {_mib(room)}, less {_mib(REQUEST_HOLDS)}): every program "
            f"would end incomplete; set {SETTING} to at most {_mib(room - REQUEST_HOLDS)} or raise the budget or "
            "its share")


def _mib(size: int) -> str:
    return f"{size / (1 << 20):g} MiB"
