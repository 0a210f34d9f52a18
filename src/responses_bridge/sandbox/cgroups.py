"""A cgroup per sandbox run, where this process may make one: it bounds the processes (``pids.max``) and, on
cgroup v2, the memory (``memory.max``) of everything the code starts, together.

Needed because ``RLIMIT_NPROC`` does not bind a process whose user outside the sandbox is root (the kernel exempts
uid 0, and a root bridge's sandbox maps its uid to 0), and ``RLIMIT_AS`` bounds each process, not their sum. Where
no cgroup can be made (cgroup v2 not delegated, v1 not writable) the launcher's rlimits are the limits, and
``doctor`` says what that leaves unbounded.
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


def _candidates() -> list[tuple[str, Path]]:
    found: list[tuple[str, Path]] = []
    v2 = _own_path(None)
    if v2 is not None:
        for mount in (CGROUP_ROOT, CGROUP_ROOT / "unified"):
            if (mount / "cgroup.controllers").exists():
                found.append(("v2", mount / v2.lstrip("/")))
                break
    v1 = _own_path("pids")
    if v1 is not None and (CGROUP_ROOT / "pids").is_dir():
        found.append(("v1", CGROUP_ROOT / "pids" / v1.lstrip("/")))
    return found


@dataclass(frozen=True, slots=True)
class CgroupParent:
    """A directory under which each run gets its own cgroup. ``memory``: runs' cgroups bound memory too."""

    version: str
    path: Path
    memory: bool

    @classmethod
    def find(cls) -> CgroupParent | None:
        """The first place a child cgroup with a ``pids`` controller can be made, or None."""
        for version, own in _candidates():
            parent = own / PARENT_NAME
            try:
                parent.mkdir(exist_ok=True)
                if version == "v2":
                    with contextlib.suppress(OSError):
                        (parent / "cgroup.subtree_control").write_text("+pids +memory")
                probe = parent / f"probe-{os.getpid()}"
                probe.mkdir(exist_ok=True)
                try:
                    if (probe / "pids.max").exists():
                        return cls(version, parent, version == "v2" and (probe / "memory.max").exists())
                finally:
                    probe.rmdir()
            except OSError:
                continue
        return None

    def create(self, name: str, *, processes: int, memory_bytes: int) -> Path:
        """A run's cgroup, its limits set; write a pid to its ``cgroup.procs`` to put a process in it."""
        path = self.path / name
        path.mkdir()
        (path / "pids.max").write_text(str(processes))
        if self.memory:
            (path / "memory.max").write_text(str(memory_bytes))
            with contextlib.suppress(OSError):
                (path / "memory.swap.max").write_text("0")
        return path

    @staticmethod
    def remove(path: Path) -> None:
        """Kill whatever is still in the run's cgroup, then remove it."""
        for _ in range(50):
            try:
                pids = [int(pid) for pid in (path / "cgroup.procs").read_text().split()]
            except OSError:
                return
            if not pids:
                break
            for pid in pids:
                with contextlib.suppress(ProcessLookupError, PermissionError):
                    os.kill(pid, signal.SIGKILL)
            time.sleep(0.01)
        for _ in range(50):
            try:
                path.rmdir()
                return
            except FileNotFoundError:
                return
            except OSError:  # busy until the killed processes are reaped
                time.sleep(0.01)

    @staticmethod
    def memory_events(path: Path) -> bool:
        """Did the run's cgroup kill for memory (v2 ``memory.events`` ``oom_kill``)?"""
        try:
            for line in (path / "memory.events").read_text().splitlines():
                key, _, value = line.partition(" ")
                if key == "oom_kill" and int(value) > 0:
                    return True
        except (OSError, ValueError):
            pass
        return False
