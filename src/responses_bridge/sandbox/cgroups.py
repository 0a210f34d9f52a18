"""A cgroup per sandbox call, where this process may make one: it bounds the memory (``memory.max`` on v2,
``memory.limit_in_bytes`` on v1, swap off) and the processes (``pids.max``) of everything the call starts, together
— its processes, and the files it writes in its in-memory ``/tmp``, ``/dev/shm`` and ``/mnt/data``.

Needed because ``RLIMIT_AS`` bounds each process, not their sum, and ``RLIMIT_NPROC`` counts every process of the
sandbox's host uid together (a root bridge's sandboxes all run as ``code_sandbox_uid``: identity.py), not one
call's. Where no
memory cgroup can be made (cgroup v2 not delegated, v1 not writable) the sandbox runs its calls in the
single-process mode instead (``command.py``), and ``doctor`` says which mode is in force and what it costs.

The memory and pids controllers may live in different hierarchies (cgroup v1 mounts each on its own), so a call's
cgroup is one directory per hierarchy, and the call's first process joins each before it starts bubblewrap.
"""

from __future__ import annotations

import contextlib
import os
import signal
import time
from dataclasses import dataclass
from pathlib import Path

CGROUP_ROOT = Path("/sys/fs/cgroup")
PARENT_NAME = "responses-bridge-sandbox"


def _own_path(controller: str | None) -> str | None:
    """This process's cgroup path in the v2 hierarchy (``controller`` None) or a v1 controller's."""
    try:
        lines = Path("/proc/self/cgroup").read_text().splitlines()
    except OSError:
        return None
    for line in lines:
        _, controllers, path = line.split(":", 2)
        if (controller is None and controllers == "") or (controller is not None
                                                           and controller in controllers.split(",")):
            return path
    return None


@dataclass(frozen=True, slots=True)
class Hierarchy:
    """Where one controller's per-call cgroups are made: ``version`` "v1" or "v2", ``parent`` the directory they
    go under (``<this process's cgroup>/responses-bridge-sandbox``)."""

    version: str
    parent: Path
    controller: str

    def make(self, name: str, *, processes: int, memory_bytes: int) -> Path:
        path = self.parent / name
        path.mkdir()
        try:
            if self.controller == "pids":
                (path / "pids.max").write_text(str(processes))
            elif self.version == "v2":
                (path / "memory.max").write_text(str(memory_bytes))
                with contextlib.suppress(OSError):
                    (path / "memory.swap.max").write_text("0")
            else:
                (path / "memory.limit_in_bytes").write_text(str(memory_bytes))
                with contextlib.suppress(OSError):  # swap accounting may be off: then there is no memsw file
                    (path / "memory.memsw.limit_in_bytes").write_text(str(memory_bytes))
                with contextlib.suppress(OSError):
                    (path / "memory.swappiness").write_text("0")
        except OSError:
            _remove_one(path)
            raise
        return path


def _v2_mount() -> Path | None:
    for mount in (CGROUP_ROOT, CGROUP_ROOT / "unified"):
        if (mount / "cgroup.controllers").exists():
            return mount
    return None


def _candidates(controller: str) -> list[Hierarchy]:
    """Where a cgroup with ``controller`` might be made: v2 first (one hierarchy for both controllers), then v1."""
    found: list[Hierarchy] = []
    v2, mount = _own_path(None), _v2_mount()
    if v2 is not None and mount is not None:
        found.append(Hierarchy("v2", mount / v2.lstrip("/") / PARENT_NAME, controller))
    v1 = _own_path(controller)
    if v1 is not None and (CGROUP_ROOT / controller).is_dir():
        found.append(Hierarchy("v1", CGROUP_ROOT / controller / v1.lstrip("/") / PARENT_NAME, controller))
    return found


def _usable(hierarchy: Hierarchy) -> bool:
    """Can a cgroup with the controller be made under ``hierarchy.parent``, its limit set and removed again?"""
    try:
        hierarchy.parent.mkdir(exist_ok=True)
        if hierarchy.version == "v2":
            with contextlib.suppress(OSError):  # delegated already, or the parent of ours may not enable it
                (hierarchy.parent.parent / "cgroup.subtree_control").write_text(f"+{hierarchy.controller}")
            with contextlib.suppress(OSError):
                (hierarchy.parent / "cgroup.subtree_control").write_text(f"+{hierarchy.controller}")
        probe = hierarchy.make(f"probe-{os.getpid()}", processes=64, memory_bytes=1 << 30)
        _remove_one(probe)
        return True
    except OSError:
        return False


@dataclass(frozen=True, slots=True)
class CgroupParent:
    """The hierarchies this process may make per-call cgroups in: ``memory`` (what makes the cgroup mode) and
    ``pids`` (None where no pids controller is writable; the memory bound still holds, since every process costs
    memory the cgroup counts)."""

    memory: Hierarchy
    pids: Hierarchy | None

    @property
    def description(self) -> str:
        """Which controllers, in which hierarchy, for ``doctor`` and the start-up log."""
        parts = [f"memory (cgroup {self.memory.version}, {self.memory.parent})"]
        if self.pids is not None:
            parts.append(f"pids (cgroup {self.pids.version}, {self.pids.parent})")
        return " and ".join(parts)

    @classmethod
    def find(cls) -> CgroupParent | None:
        """The first hierarchies where a call's memory cgroup (and pids cgroup) can be made, or None."""
        memory = next((found for found in _candidates("memory") if _usable(found)), None)
        if memory is None:
            return None
        pids = next((found for found in _candidates("pids") if _usable(found)), None)
        return cls(memory, pids)

    def create(self, name: str, *, processes: int, memory_bytes: int) -> list[Path]:
        """A call's cgroup, one directory per hierarchy with its limit set; write a pid to each one's
        ``cgroup.procs`` to put a process in it. Undone whole if any part fails."""
        made: list[Path] = []
        try:
            made.append(self.memory.make(name, processes=processes, memory_bytes=memory_bytes))
            if self.pids is not None and self.pids.parent != self.memory.parent:
                made.append(self.pids.make(name, processes=processes, memory_bytes=memory_bytes))
            elif self.pids is not None:  # v2: one directory holds both limits
                (made[0] / "pids.max").write_text(str(processes))
        except OSError:
            remove(made)
            raise
        return made

    def sweep(self) -> int:
        """Remove the per-call cgroups a process that died left (their names carry the pid that made them):
        how many were removed."""
        removed = 0
        for hierarchy in {self.memory, *([self.pids] if self.pids is not None else [])}:
            with contextlib.suppress(OSError):
                for entry in hierarchy.parent.iterdir():
                    owner = entry.name.split("-")[1] if entry.name.count("-") >= 2 else ""
                    if entry.is_dir() and owner.isdigit() and not process_alive(int(owner)):
                        _remove_one(entry)
                        removed += 1
        return removed


def process_alive(pid: int) -> bool:
    """Whether a process of this id exists (one of another user's counts): whose leftovers a sweep may take."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def _remove_one(path: Path) -> None:
    """Kill whatever is still in the cgroup, then remove it (busy until the killed processes are reaped)."""
    for _ in range(100):
        try:
            pids = [int(pid) for pid in (path / "cgroup.procs").read_text().split()]
        except OSError:
            break
        if not pids:
            break
        for pid in pids:
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.kill(pid, signal.SIGKILL)
        time.sleep(0.01)
    for _ in range(100):
        try:
            path.rmdir()
            return
        except FileNotFoundError:
            return
        except OSError:
            time.sleep(0.01)


def remove(paths: list[Path]) -> None:
    """Empty and remove a call's cgroup (every hierarchy's directory)."""
    for path in paths:
        _remove_one(path)


def killed_for_memory(paths: list[Path]) -> bool:
    """Did the call's memory cgroup kill a process (v2 ``memory.events``, v1 ``memory.oom_control``: ``oom_kill``)?"""
    for path in paths:
        for name in ("memory.events", "memory.oom_control"):
            try:
                text = (path / name).read_text()
            except OSError:
                continue
            for line in text.splitlines():
                key, _, value = line.partition(" ")
                if key == "oom_kill" and value.strip().isdigit() and int(value) > 0:
                    return True
    return False
