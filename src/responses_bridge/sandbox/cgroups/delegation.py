"""``RESPONSES_BRIDGE_RUN_AS``: a bridge started as root hands its own cgroup to the uid it then runs as, and drops
to that uid before it serves — so a writable cgroup (Docker's ``writable-cgroups``, containerd's
``cgroup_writable``, CRI-O's annotation, GKE's ``writableCgroups``: all mounted as the container's root owns it)
becomes usable by a bridge that is not root for the rest of its life.

The hand-over is what systemd does for ``Delegate=yes``: the cgroup's directory and its ``cgroup.procs``,
``cgroup.threads`` and ``cgroup.subtree_control`` (v1: ``cgroup.procs`` and ``tasks`` of the memory and pids
hierarchies) change owner; nothing else of the cgroup's (its own limits stay the runtime's). Then
``setgroups([])``, ``setgid``, ``setuid``: every capability goes with the root uid, and the sandbox's processes run
under the bridge's uid, never the container's root.
"""

from __future__ import annotations

import contextlib
import os
from pathlib import Path

from .per_call import CGROUP_ROOT, own_directory, own_path, v2_mount

V2_FILES = ("cgroup.procs", "cgroup.threads", "cgroup.subtree_control")
V1_FILES = ("cgroup.procs", "tasks")


def parse_user(text: str) -> tuple[int, int]:
    """``uid`` or ``uid:gid`` (the gid defaults to the uid); never 0."""
    uid_text, _, gid_text = text.strip().partition(":")
    uid, gid = int(uid_text), int(gid_text or uid_text)
    if uid <= 0 or gid <= 0:
        raise ValueError("the bridge never runs as root: give a uid (and gid) other than 0")
    return uid, gid


def own_cgroups() -> list[tuple[Path, tuple[str, ...]]]:
    """This process's cgroup directories the sandbox uses, with the files a delegation hands over in each."""
    found: list[tuple[Path, tuple[str, ...]]] = []
    mount, path = v2_mount(), own_path(None)
    if mount == CGROUP_ROOT and path is not None:
        own = own_directory(mount, path)
        if own is not None:
            found.append((own, V2_FILES))
    for controller in ("memory", "pids"):
        path = own_path(controller)
        if path is not None and (CGROUP_ROOT / controller).is_dir():
            own = own_directory(CGROUP_ROOT / controller, path)
            if own is not None:
                found.append((own, V1_FILES))
    return found


def delegate(uid: int, gid: int) -> tuple[list[str], list[str]]:
    """Hand this process's cgroups to ``uid``:``gid``: (the directories handed over, why others were not, e.g. a
    read-only mount: the runtime granted none)."""
    handed: list[str] = []
    refused: list[str] = []
    for directory, files in own_cgroups():
        try:
            os.chown(directory, uid, gid)
            for name in files:
                with contextlib.suppress(FileNotFoundError):
                    os.chown(directory / name, uid, gid)
        except OSError as error:
            refused.append(f"{directory}: {error.strerror}")
        else:
            handed.append(str(directory))
    return handed, refused


def become(run_as: str | None) -> tuple[list[str], list[str]] | None:
    """As root with ``run_as`` set: delegate this process's cgroups to that uid, then drop to it (raises OSError
    when the drop fails: never serve as root by mistake). Otherwise nothing (None)."""
    if run_as is None or os.geteuid() != 0:
        return None
    uid, gid = parse_user(run_as)
    done = delegate(uid, gid)
    os.setgroups([])
    os.setgid(gid)
    os.setuid(uid)
    if os.geteuid() != uid or os.getuid() != uid:
        raise OSError(f"could not drop to uid {uid}")
    return done
