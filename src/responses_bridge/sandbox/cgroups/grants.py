"""Why this process has no cgroup to give each call, in words that name the cgroup and the grant that fits where it
runs: the hosted shell's refusal, ``serve``'s start-up warning and ``doctor`` all say the same.

Read from what the kernel shows (``/proc/self/cgroup``, ``/proc/self/mountinfo``, the directory's owner), never by
writing: the start-up proof has already tried.
"""

from __future__ import annotations

import os
from pathlib import Path

from .per_call import CGROUP_ROOT, own_directory, own_path, v2_mount

DOCKER_GRANT = ("Docker Engine 28+: --security-opt writable-cgroups=true (Compose: "
                "docker compose -f docker-compose.yml -f docker-compose.writable-cgroup.yml up)")
KUBERNETES_GRANT = ("Kubernetes: the writable-cgroups component (deploy/kubernetes/components/writable-cgroups: "
                    "CRI-O's io.kubernetes.cri-o.cgroup2-mount-hierarchy-rw annotation, containerd 2.1+'s "
                    "cgroup_writable through a RuntimeClass, GKE's writableCgroups)")
HOST_GRANT = "on a host: systemd's Delegate=yes on the bridge's unit (cgroup v2)"
RUN_AS = ("start the container as root with RESPONSES_BRIDGE_RUN_AS=10001:10001: the bridge hands its cgroup to "
          "that uid, as systemd delegates, and drops to it before serving")


def _in_container() -> str | None:
    if os.environ.get("KUBERNETES_SERVICE_HOST"):
        return "kubernetes"
    if Path("/.dockerenv").exists() or Path("/run/.containerenv").exists():
        return "docker"
    try:
        if Path("/proc/1/cgroup").read_text().strip() == "0::/" and own_path(None) == "/":
            return "container"  # a cgroup namespace of its own: a container's
    except OSError:
        pass
    return None


def grants() -> str:
    """The grants that give a writable cgroup where this process runs (all of them when it cannot tell)."""
    where = _in_container()
    if where == "kubernetes":
        return KUBERNETES_GRANT
    if where == "docker":
        return DOCKER_GRANT
    if where == "container":
        return f"{DOCKER_GRANT}; {KUBERNETES_GRANT}"
    return f"{HOST_GRANT}; in a container, {DOCKER_GRANT}; {KUBERNETES_GRANT}"


def _read_only(mount: Path) -> bool:
    """Is ``mount`` (or the mount it lies on) mounted read-only?"""
    best, options = "", ""
    try:
        for line in Path("/proc/self/mountinfo").read_text().splitlines():
            fields = line.split()
            point = fields[4]
            covers = str(mount) == point or str(mount).startswith(point.rstrip("/") + "/")
            if covers and len(point) >= len(best):  # the last of equal ones: mounted over the others
                best, options = point, fields[5]
    except (OSError, IndexError):
        return False
    return "ro" in options.split(",")


def cgroup_problem() -> str:
    """What keeps this process from making a cgroup per call: its cgroup named, what is wrong with it, and the
    grant that fixes it."""
    mount = v2_mount()
    version = "v2" if mount is not None and (mount == CGROUP_ROOT) else "v1"
    if version == "v2" and mount is not None:
        path = own_path(None) or "/"
        own = own_directory(mount, path)
    else:
        path = own_path("memory") or "/"
        mount = CGROUP_ROOT / "memory"
        own = own_directory(mount, path)
    named = f"this process's cgroup ({path} in cgroup {version}"
    if own is None:
        return (f"{named}) is not under {mount}: the runtime gives no cgroup namespace; grant a writable cgroup "
                f"({grants()})")
    named += f", {own})"
    if _read_only(own):
        return f"{named} is mounted read-only: grant a writable cgroup ({grants()})"
    try:
        owner = own.stat().st_uid
    except OSError:
        owner = -1
    if owner != os.geteuid() and os.geteuid() != 0:
        return (f"{named} is writable but belongs to uid {owner}, and the bridge runs as uid {os.geteuid()}: "
                f"{RUN_AS}")
    if version == "v2" and path != "/":
        return (f"{named} is not delegated to the bridge (its controllers are not the bridge's to enable): "
                f"{grants()}")
    return f"{named} gave no memory cgroup per call: {grants()}"
