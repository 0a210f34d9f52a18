"""A process's memory as Linux reports it, for the tests that hold a request to a memory budget (a budget, not a
timing: the peak is what the kernel recorded)."""

from __future__ import annotations

from pathlib import Path


def status_kb(pid: int | str, key: str) -> int:
    """A field of ``/proc/<pid>/status`` in kB (``VmRSS``: now, ``VmHWM``: the peak); ``pid`` may be ``"self"``."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith(f"{key}:"):
            return int(line.split()[1])
    raise AssertionError(f"no {key} in /proc/{pid}/status")


def reset_peak(pid: int | str) -> int:
    """Starts the peak RSS (``VmHWM``) again from the current RSS (``clear_refs`` 5); returns that RSS in kB."""
    Path(f"/proc/{pid}/clear_refs").write_text("5")
    return status_kb(pid, "VmRSS")
