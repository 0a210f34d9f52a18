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

A call that asks for a CPU bound (``cpus``: the desktop, a browser that would otherwise take every core it can)
also gets the ``cpu`` controller's quota (v2 ``cpu.max``, v1 ``cpu.cfs_quota_us``) where one is writable; other
calls are bounded in CPU by their slot alone (one per core), as before.

Where the cgroup is granted (a container runtime's writable cgroup in a cgroup namespace, systemd's ``Delegate=``):
on v2 a cgroup that holds processes cannot hand controllers to children ("no internal processes"), so, as dind's
init, systemd and runc's systemd driver do, the bridge first moves every process of its cgroup into a leaf
(``bridge``), enables ``memory`` and ``pids`` for its children, and makes the calls' cgroups beside the leaf, under
``responses-bridge-sandbox``. Without a cgroup namespace the path ``/proc/self/cgroup`` names is not the one
mounted: the mount's own root is used when it is the process's cgroup.
"""

from __future__ import annotations

import contextlib
import errno
import os
import signal
import time
from dataclasses import dataclass
from pathlib import Path

CGROUP_ROOT = Path("/sys/fs/cgroup")
PARENT_NAME = "responses-bridge-sandbox"
LEAF_NAME = "bridge"
"""The leaf a v2 cgroup's processes are moved into so that the cgroup may enable controllers for its children."""
CONTROLLERS = ("memory", "pids")
CPU_PERIOD_US = 100_000
"""The CPU quota's period: a call bounded to ``cpus`` cores may run ``cpus`` × this in each period."""


def own_path(controller: str | None) -> str | None:
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

    def make(self, name: str, *, processes: int, memory_bytes: int, cpus: float = 1.0) -> Path:
        path = self.parent / name
        path.mkdir()
        try:
            if self.controller == "cpu":
                self.bound_cpu(path, cpus)
            elif self.controller == "pids":
                (path / "pids.max").write_text(str(processes))
            elif self.version == "v2":
                (path / "memory.max").write_text(str(memory_bytes))
                with contextlib.suppress(OSError):
                    (path / "memory.swap.max").write_text("0")
                with contextlib.suppress(OSError):  # past the bound the call's processes are stopped together
                    (path / "memory.oom.group").write_text("1")
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

    def bound_cpu(self, path: Path, cpus: float) -> None:
        """At most ``cpus`` cores for the processes of ``path`` (a cgroup of this hierarchy's cpu controller)."""
        quota = max(1000, int(cpus * CPU_PERIOD_US))
        if self.version == "v2":
            (path / "cpu.max").write_text(f"{quota} {CPU_PERIOD_US}")
        else:
            (path / "cpu.cfs_period_us").write_text(str(CPU_PERIOD_US))
            (path / "cpu.cfs_quota_us").write_text(str(quota))


def v2_mount() -> Path | None:
    for mount in (CGROUP_ROOT, CGROUP_ROOT / "unified"):
        if (mount / "cgroup.controllers").exists():
            return mount
    return None


def _holds(directory: Path, pid: int) -> bool:
    try:
        return str(pid) in (directory / "cgroup.procs").read_text().split()
    except OSError:
        return False


def own_directory(mount: Path, path: str) -> Path | None:
    """This process's cgroup directory under ``mount``: the path ``/proc/self/cgroup`` names, or, where that is
    not the mounted one (a writable cgroup without a cgroup namespace: the path is the host's, the mount the
    container's own cgroup), the mount's root when it holds this process."""
    named = mount / path.lstrip("/")
    if named.is_dir() and (path == "/" or _holds(named, os.getpid())):
        return named
    if _holds(mount, os.getpid()):
        return mount
    return named if named.is_dir() else None


def delegated_base(own: Path) -> Path:
    """The cgroup the bridge was given: its own, or the parent of the leaf it moved itself into."""
    return own.parent if own.name == LEAF_NAME else own


def _ours_to_split(base: Path) -> bool:
    """May the bridge move every process of ``base`` into a leaf: the root of the mount (a container's cgroup,
    in its cgroup namespace or mounted alone) or a cgroup delegated to this (non-root) uid, as systemd's
    ``Delegate=`` does; never a host's cgroup that is merely writable because the bridge runs as root."""
    mount = v2_mount()
    if base == mount:
        return True
    try:
        return os.geteuid() != 0 and base.stat().st_uid == os.geteuid()
    except OSError:
        return False


def _enable(base: Path) -> None:
    """Enable the memory and pids controllers for ``base``'s children; on v2's "no internal processes" refusal
    (EBUSY), first move every process of ``base`` into its leaf where that is the bridge's to do (new ones may
    appear meanwhile: a few rounds)."""
    control = base / "cgroup.subtree_control"
    try:
        available = set((base / "cgroup.controllers").read_text().split())
    except OSError:
        return
    wanted = " ".join(f"+{name}" for name in CONTROLLERS if name in available)
    if not wanted or all(name in control.read_text().split() for name in CONTROLLERS if name in available):
        return
    try:
        control.write_text(wanted)
        return
    except OSError as error:
        if error.errno != errno.EBUSY or not _ours_to_split(base):
            return
    leaf = base / LEAF_NAME
    leaf.mkdir(exist_ok=True)
    for _ in range(10):
        pids = (base / "cgroup.procs").read_text().split()
        if not pids:
            break
        for pid in pids:
            with contextlib.suppress(ProcessLookupError, OSError):
                if pid != "0":  # outside this pid namespace: not the bridge's to move
                    (leaf / "cgroup.procs").write_text(pid)
    control.write_text(wanted)


def _candidates(controller: str) -> list[Hierarchy]:
    """Where a cgroup with ``controller`` might be made: v2 first (one hierarchy for both controllers), then v1."""
    found: list[Hierarchy] = []
    v2, mount = own_path(None), v2_mount()
    own = own_directory(mount, v2) if v2 is not None and mount is not None else None
    if own is not None:
        found.append(Hierarchy("v2", delegated_base(own) / PARENT_NAME, controller))
    v1 = own_path(controller)
    own = own_directory(CGROUP_ROOT / controller, v1) if v1 is not None and (CGROUP_ROOT / controller).is_dir() \
        else None
    if own is not None:
        found.append(Hierarchy("v1", own / PARENT_NAME, controller))
    return found


def _usable(hierarchy: Hierarchy) -> bool:
    """Can a cgroup with the controller be made under ``hierarchy.parent``, its limit set and removed again?"""
    try:
        if hierarchy.version == "v2":
            with contextlib.suppress(OSError):  # delegated already, or not ours to change
                _enable(hierarchy.parent.parent)
        hierarchy.parent.mkdir(exist_ok=True)
        if hierarchy.version == "v2":
            if hierarchy.controller not in CONTROLLERS:  # cpu: enabled only where a call may ask for it
                with contextlib.suppress(OSError):
                    (hierarchy.parent.parent / "cgroup.subtree_control").write_text(f"+{hierarchy.controller}")
            for name in (*CONTROLLERS, hierarchy.controller):  # one at a time: a controller the kernel lacks
                with contextlib.suppress(OSError):  # refuses the whole write
                    (hierarchy.parent / "cgroup.subtree_control").write_text(f"+{name}")
        probe = hierarchy.make(call_name("probe", hierarchy.controller), processes=64, memory_bytes=1 << 30)
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
    cpu: Hierarchy | None = None
    """Where a call asking for a CPU bound gets its quota (None: nowhere writable; such a call is bounded by its
    slot alone)."""

    @property
    def description(self) -> str:
        """Which controllers, in which hierarchy, for ``doctor`` and the start-up log."""
        parts = [f"memory (cgroup {self.memory.version}, {self.memory.parent})"]
        if self.pids is not None:
            parts.append(f"pids (cgroup {self.pids.version}, {self.pids.parent})")
        if self.cpu is not None:
            parts.append(f"cpu for the calls bounded in CPU (cgroup {self.cpu.version}, {self.cpu.parent})")
        return " and ".join(parts)

    @classmethod
    def find(cls) -> CgroupParent | None:
        """The first hierarchies where a call's memory cgroup (and pids cgroup) can be made, or None."""
        memory = next((found for found in _candidates("memory") if _usable(found)), None)
        if memory is None:
            return None
        pids = next((found for found in _candidates("pids") if _usable(found)), None)
        cpu = next((found for found in _candidates("cpu") if _usable(found)), None)
        return cls(memory, pids, cpu)

    def create(self, name: str, *, processes: int, memory_bytes: int, cpus: float = 0.0) -> list[Path]:
        """A call's cgroup, one directory per hierarchy with its limit set; write a pid to each one's
        ``cgroup.procs`` to put a process in it. Undone whole if any part fails. ``cpus``: a CPU bound in cores
        (0: none), where a cpu controller is writable (:attr:`cpu`)."""
        made: list[Path] = []
        try:
            made.append(self.memory.make(name, processes=processes, memory_bytes=memory_bytes))
            if self.pids is not None and self.pids.parent != self.memory.parent:
                made.append(self.pids.make(name, processes=processes, memory_bytes=memory_bytes))
            elif self.pids is not None:  # v2: one directory holds both limits
                (made[0] / "pids.max").write_text(str(processes))
            if cpus > 0 and self.cpu is not None:
                in_made = next((path for path in made if path.parent == self.cpu.parent), None)
                if in_made is not None:  # v2: the same directory
                    self.cpu.bound_cpu(in_made, cpus)
                else:
                    made.append(self.cpu.make(name, processes=processes, memory_bytes=memory_bytes, cpus=cpus))
        except OSError:
            remove(made)
            raise
        return made

    def sweep(self) -> int:
        """Remove the per-call cgroups a process that died left (their names carry the pid that made them, and
        its PID namespace: :func:`call_name`), and any carrying this process's own pid: none is this process's yet
        when it starts (a restarted container's bridge often has the pid its crashed one had), and none is left
        when it ends (``doctor``). A cgroup named in another PID namespace is that namespace's bridge's: its pid
        means nothing here (bridges beside each other in PID namespaces of their own share a cgroup parent, and
        each is often PID 1 or 2) — removing it removed a live call's cgroup between its making and its joining.
        How many were removed."""
        removed = 0
        for hierarchy in {self.memory, *(found for found in (self.pids, self.cpu) if found is not None)}:
            with contextlib.suppress(OSError):
                for entry in hierarchy.parent.iterdir():
                    fields = entry.name.split("-")
                    owner = fields[1] if len(fields) >= 3 else ""
                    elsewhere = len(fields) >= 4 and fields[3] != PID_NAMESPACE
                    if entry.is_dir() and owner.isdigit() and not elsewhere and (
                            int(owner) == os.getpid() or not process_alive(int(owner))):
                        _remove_one(entry)
                        removed += 1
        return removed


def _pid_namespace() -> str:
    try:
        return f"ns{os.stat('/proc/self/ns/pid').st_ino}"
    except OSError:
        return "ns0"


PID_NAMESPACE = _pid_namespace()
"""This process's PID namespace, as the fourth field of the cgroups it names (the namespace of a process does not
change; a forked child inherits it)."""


def call_name(kind: str, tag: str) -> str:
    """A per-call cgroup's name, ``<kind>-<pid>-<tag>-<pid namespace>``: unique among bridges sharing a cgroup
    parent from PID namespaces of their own, and telling :meth:`CgroupParent.sweep` whose it is."""
    return f"{kind}-{os.getpid()}-{tag}-{PID_NAMESPACE}"


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
            if pid <= 0:  # a process outside this pid namespace reads as 0: kill(0) would be this process group
                continue
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


@dataclass(frozen=True, slots=True)
class MemoryUse:
    """What the kernel charges a call's memory cgroup, in bytes: ``current`` now, ``peak`` the most since it was
    made, ``anonymous`` its processes' anonymous memory and ``shared`` its tmpfs and shared memory (its in-memory
    ``/tmp``, ``/dev/shm``). The honest size of a call: every page it brought in, counted once, whoever maps it —
    where summed RSS counts a shared library once per process, and PSS splits the browser's file pages with every
    other desktop (and any other Chromium) on the host, so it changes with what else runs."""

    current: int
    peak: int
    anonymous: int
    shared: int


def memory_use(paths: list[Path]) -> MemoryUse | None:
    """The call's memory cgroup's figures (v2 ``memory.current``/``memory.peak``/``memory.stat``, v1
    ``memory.usage_in_bytes``/``memory.max_usage_in_bytes``/``memory.stat``), or None without one."""
    for path in paths:
        v2 = (path / "memory.current").exists()
        try:
            current = int((path / ("memory.current" if v2 else "memory.usage_in_bytes")).read_text())
            stat = dict(line.split(" ", 1) for line in (path / "memory.stat").read_text().splitlines())
        except (OSError, ValueError):
            continue
        try:
            peak = int((path / ("memory.peak" if v2 else "memory.max_usage_in_bytes")).read_text())
        except (OSError, ValueError):  # memory.peak is newer than cgroup v2 (Linux 5.19)
            peak = current
        return MemoryUse(current, peak, int(stat.get("anon" if v2 else "rss", 0)), int(stat.get("shmem", 0)))
    return None
