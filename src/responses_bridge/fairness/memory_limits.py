"""How much memory this process may use: its cgroup's limit, else the machine's — the default of the request
memory budget (services/tenancy/memory_budget.py), read by the settings (config/settings.py) before any service
exists."""

from __future__ import annotations

from pathlib import Path

CGROUP_LIMITS = (Path("/sys/fs/cgroup/memory.max"), Path("/sys/fs/cgroup/memory/memory.limit_in_bytes"))


def default_budget(workers: int) -> int:
    """Half of the memory this process may use (its cgroup's limit, else the machine's), per worker."""
    limit = cgroup_limit() or _machine_memory()
    return max(64 << 20, limit // 2 // max(1, workers)) if limit else 0


def cgroup_limit() -> int | None:
    """The cgroup's memory limit (v2, else v1), or None where there is none."""
    for path in CGROUP_LIMITS:
        try:
            text = path.read_text().strip()
        except OSError:
            continue
        if text.isdigit() and int(text) < 1 << 60:  # v1 writes a huge number for "no limit", v2 "max"
            return int(text)
    return None


def _machine_memory() -> int | None:
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemTotal:"):
                return int(line.split()[1]) * 1024
    except (OSError, ValueError, IndexError):
        return None
    return None
