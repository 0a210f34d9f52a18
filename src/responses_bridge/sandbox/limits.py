"""The limits of one sandbox run, and of how many run at once.

Defaults are what the issue of record and OpenAI's own code interpreter make reasonable for a model's analysis
scripts: 30 s of wall time, 1 GiB of memory, 64 processes, 100 MiB per file and 1 GiB per container, 64 KiB kept
of each output stream. Every value comes from the settings (``RESPONSES_BRIDGE_CODE_*``).
"""

from __future__ import annotations

import os
from dataclasses import dataclass

MIB = 1 << 20
GIB = 1 << 30
MEMORY_LIMITS = ("1g", "4g", "16g", "64g")
"""The memory limits a container may name (OpenAI's); the bridge's own limit (``RESPONSES_BRIDGE_CODE_MEMORY_BYTES``)
is what a run gets."""


def parse_pool_name(name: str) -> str:
    """``name`` if it is a Kubernetes object name (lower-case, digits, ``-`` and ``.``, at most 253); raises
    ValueError saying what it is not."""
    if not name or len(name) > 253 or not all((c.isalnum() and c.islower()) or c.isdigit() or c in "-." for c in name):
        raise ValueError(f"{name!r} is not a SandboxWarmPool name (a lower-case Kubernetes name)")
    return name


def parse_pools(value: str) -> dict[str, str]:
    """``1g=pool-a,4g=pool-b`` as {tier: SandboxWarmPool name}. Raises ValueError naming the entry that is not
    ``<tier>=<name>`` with a tier of OpenAI's (1g, 4g, 16g, 64g) and a Kubernetes name."""
    pools: dict[str, str] = {}
    for entry in filter(None, (part.strip() for part in value.split(","))):
        tier, equals, name = entry.partition("=")
        tier, name = tier.strip().lower(), name.strip()
        if not equals or tier not in MEMORY_LIMITS or not _is_name(name):
            raise ValueError(f"{entry!r} is not <tier>=<SandboxWarmPool name> with a tier among "
                             f"{', '.join(MEMORY_LIMITS)} and a lower-case Kubernetes name")
        pools[tier] = name
    return pools


def _is_name(name: str) -> bool:
    try:
        parse_pool_name(name)
    except ValueError:
        return False
    return True


def default_concurrency() -> int:
    """One sandbox per core: the code is CPU-bound, and more would only slow each down."""
    return max(1, len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1)


@dataclass(frozen=True, slots=True)
class SandboxLimits:
    """``timeout``: wall seconds per call; ``memory_bytes``: the call's memory, every process and in-memory file
    together (runner.py: its two modes); ``processes``: processes and threads inside; ``file_bytes``: one file's
    size; ``container_bytes``: the sum of a container's files; ``output_bytes``: kept of stdout and of stderr each;
    ``concurrency``: sandboxes at once (others wait, within their own deadline); ``cpus``: a CPU bound."""

    timeout: float = 30.0
    memory_bytes: int = GIB
    processes: int = 64
    file_bytes: int = 100 * MIB
    container_bytes: int = GIB
    output_bytes: int = 64 * 1024
    concurrency: int = 0
    cpus: float = 0.0
    """Cores the call may use at most, by its cgroup's CPU quota (0: none but its slot; a code call's default). A
    long-lived call sets it (the desktop: sandbox/desktop/), where a cpu controller is writable
    (sandbox/cgroups/per_call.py)."""

    @property
    def slots(self) -> int:
        return self.concurrency if self.concurrency > 0 else default_concurrency()
