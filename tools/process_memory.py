"""What the benchmarks and the tests read of a running process from /proc (Linux): its resident memory, a peak
of it, and the processes under it. The demo never asks, so this stays out of the installed package."""

from __future__ import annotations

import os
from collections.abc import Iterable, Iterator

from responses_bridge.demo.procs import ManagedProcess


def process_rss_mb(pid: int) -> float:
    """VmRSS of one process in MB, 0.0 if it is gone (or not Linux)."""
    return process_status_mb(pid, "VmRSS")


def process_status_mb(pid: int, key: str) -> float:
    """A kB field of one process's /proc/PID/status (``VmRSS``, ``VmHWM``: its peak) in MB, 0.0 if it is gone."""
    try:
        with open(f"/proc/{pid}/status") as status:
            for line in status:
                if line.startswith(f"{key}:"):
                    return int(line.split()[1]) / 1024
    except OSError:
        pass
    return 0.0


def tree_rss_mb(process: ManagedProcess) -> dict[int, float]:
    """Resident set size in MB of the process and of every process under it (a server's workers), by pid;
    :func:`process_rss_mb` of its pid counts the first process only. Empty once the process has exited."""
    return {pid: process_rss_mb(pid) for pid in tree_pids([process])}


def tree_pids(processes: Iterable[ManagedProcess]) -> Iterator[int]:
    """The pid of each process still alive, each followed by the pids of the processes under it."""
    for process in processes:
        if process.alive():
            yield process.pid
            yield from descendants(process.pid)


def family_pids(pid: int) -> list[int]:
    """``pid`` and the processes under it (a server and its workers), alive or not."""
    return [pid, *descendants(pid)]


def family_rss_mb(pid: int) -> float:
    """Resident set size in MB of ``pid`` and the processes under it, summed."""
    return sum(process_rss_mb(member) for member in family_pids(pid))


def descendants(pid: int) -> list[int]:
    """The processes under ``pid`` (children, their children, ...): each one's children read from
    ``/proc/PID/task/TID/children`` (a file per thread: a child is listed under the thread that started it), a few
    reads for a server's tree where a scan of every process's ``/proc/PID/stat`` read hundreds (5-10 ms a sample on
    a busy machine, taken every 10 ms by a memory sampler); the scan where the kernel has no such files."""
    if not os.path.exists(f"/proc/{pid}/task/{pid}/children"):
        return _descendants_by_scan(pid)
    found: list[int] = []
    queue = [pid]
    while queue:
        parent = queue.pop(0)
        try:
            threads = os.listdir(f"/proc/{parent}/task")
        except OSError:
            continue  # gone since its parent listed it
        for thread in threads:
            try:
                with open(f"/proc/{parent}/task/{thread}/children") as listed:
                    children = [int(child) for child in listed.read().split()]
            except OSError:
                continue
            found += children
            queue += children
    return found


def _descendants_by_scan(pid: int) -> list[int]:
    children: dict[int, list[int]] = {}
    for entry in os.listdir("/proc") if os.path.isdir("/proc") else ():
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/stat") as stat:
                fields = stat.read().rsplit(")", 1)[1].split()  # after the command name, which may hold spaces
        except (OSError, IndexError):
            continue  # gone since the listing
        children.setdefault(int(fields[1]), []).append(int(entry))
    found, queue = [], list(children.get(pid, ()))
    while queue:
        child = queue.pop(0)
        found.append(child)
        queue.extend(children.get(child, ()))
    return found
