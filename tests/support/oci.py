"""The bridge under a real OCI runtime (runc), as the Dockerfile starts it — ``tini -s -- responses-bridge serve`` as
uid 10001 — in the shapes the project ships: Docker's defaults, the compose file's bridge service, its writable-cgroup
override, the Kubernetes overlay's pod and the writable-cgroups component's pod.

The bundle's root is an rbind of this machine's ``/`` (so the checkout's ``.venv``, bubblewrap and tini are there,
as the image has them), read-only where the shape says; ``/tmp`` a fresh tmpfs, ``/data`` a directory of the host's
owned by the bridge's uid. The network namespace is the host's (the bridge listens on 127.0.0.1, the test reaches
it), every other namespace the container's own; the cgroup namespace where the runtime gives one.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import subprocess
import sys
import threading
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path

MASKED_PATHS = ["/proc/asound", "/proc/acpi", "/proc/kcore", "/proc/keys", "/proc/latency_stats",
                "/proc/timer_list", "/proc/timer_stats", "/proc/sched_debug", "/proc/scsi", "/sys/firmware",
                "/sys/devices/virtual/powercap"]
READONLY_PATHS = ["/proc/bus", "/proc/fs", "/proc/irq", "/proc/sys", "/proc/sysrq-trigger"]
"""Docker's and containerd's defaults (what `runc spec` gives too)."""
DOCKER_CAPABILITIES = ["CAP_CHOWN", "CAP_DAC_OVERRIDE", "CAP_FSETID", "CAP_FOWNER", "CAP_MKNOD", "CAP_NET_RAW",
                       "CAP_SETGID", "CAP_SETUID", "CAP_SETFCAP", "CAP_SETPCAP", "CAP_NET_BIND_SERVICE",
                       "CAP_SYS_CHROOT", "CAP_KILL", "CAP_AUDIT_WRITE"]
DELEGATING_CAPABILITIES = ["CAP_CHOWN", "CAP_SETUID", "CAP_SETGID", "CAP_KILL"]
"""What the writable-cgroup shapes keep (cap_drop ALL, cap_add these): enough to hand the cgroup over and drop."""


@dataclass(frozen=True)
class Shape:
    """One way the project ships the bridge. ``user``: the process's uid:gid (0:0 with ``run_as``: started as root,
    drops); ``masks``: Docker's /proc masks; ``cgroup_rw``: the cgroup mounted read-write (the runtime's grant);
    ``cgroupns``: a private cgroup namespace; ``capabilities``: the bounding set (the effective one is empty for a
    non-root user)."""

    name: str
    user: tuple[int, int] = (10001, 10001)
    run_as: str | None = None
    masks: bool = True
    cgroup_rw: bool = False
    cgroupns: bool = True
    readonly_root: bool = False
    capabilities: Sequence[str] = field(default_factory=lambda: list(DOCKER_CAPABILITIES))
    granted: bool = False
    """Does this shape give the bridge a writable cgroup (so the shell must run)?"""


SHAPES = {
    # docker run with the bundle's defaults (seccomp/apparmor unconfined, as the docs say for the sandbox)
    "docker-default": Shape("docker-default"),
    # docker-compose.yml's bridge service: systempaths=unconfined lifts the masks
    "compose": Shape("compose", masks=False),
    # docker-compose.writable-cgroup.yml on Docker Engine 28+: writable-cgroups=true, root start that drops
    "compose-writable": Shape("compose-writable", user=(0, 0), run_as="10001:10001", masks=False, cgroup_rw=True,
                              capabilities=DELEGATING_CAPABILITIES, granted=True),
    # the sqlite overlay's pod: masks, read-only root, no capabilities, non-root
    "pod": Shape("pod", readonly_root=True, capabilities=[]),
    # the writable-cgroups component's pod on a node that grants one
    "pod-writable": Shape("pod-writable", user=(0, 0), run_as="10001:10001", readonly_root=True, cgroup_rw=True,
                          capabilities=DELEGATING_CAPABILITIES, granted=True),
}


def cgroup_v2() -> bool:
    return Path("/sys/fs/cgroup/cgroup.controllers").exists()


def _reachable(path: str) -> list[dict[str, object]]:
    """Mounts that let the bridge's uid reach ``path`` (the Python runtime) when a directory on the way is closed to
    others (a runtime under a 0700 ``/root``): a tmpfs open to all over that directory, and the one entry on the
    way bound back into it, read-only. The image has its runtime in ``/usr/local``; this machine may not."""
    parts = Path(os.path.realpath(path)).parts
    for depth in range(1, len(parts) - 1):
        directory = Path(*parts[:depth + 1])
        # root's home is closed to others by default, and a chmod elsewhere may close it again while this runs
        if str(directory) == "/root" or not os.stat(directory).st_mode & 0o001:
            inside = directory / parts[depth + 1]
            return [{"destination": str(directory), "type": "tmpfs", "source": "tmpfs", "options": ["mode=755"]},
                    {"destination": str(inside), "type": "bind", "source": str(inside), "options": ["rbind", "ro"]}]
    return []


def _checkout_under_tmp() -> list[dict[str, object]]:
    """A checkout under ``/tmp`` (a clone in a ``mktemp -d`` folder) would be hidden by the container's fresh
    ``/tmp``: its venv and sources (the editable install's) are bound back read-only, over a tmpfs open to all
    where the checkout's folder is closed to others (mode 0700)."""
    checkout = Path(__file__).resolve().parents[2]
    if checkout.parts[:2] != ("/", "tmp"):
        return []
    entries = [checkout / ".venv", checkout / "src"]
    cover: list[dict[str, object]] = []
    if not os.stat(checkout).st_mode & 0o001:
        cover = [{"destination": str(checkout), "type": "tmpfs", "source": "tmpfs", "options": ["mode=755"]}]
    return [*cover, *({"destination": str(entry), "type": "bind", "source": str(entry), "options": ["rbind", "ro"]}
                      for entry in entries)]


def config(shape: Shape, args: Sequence[str], env: dict[str, str], data: Path, cgroups_path: str) -> dict[str, object]:
    """The bundle's config.json for ``shape``."""
    capabilities = list(shape.capabilities)
    root = shape.user[0] == 0
    cgroup_options = ["nosuid", "noexec", "nodev", "relatime", "rw" if shape.cgroup_rw else "ro"]
    namespaces = [{"type": kind} for kind in ("pid", "ipc", "uts", "mount")]
    if shape.cgroupns:
        namespaces.append({"type": "cgroup"})
    linux: dict[str, object] = {"namespaces": namespaces, "cgroupsPath": cgroups_path,
                                "resources": {"devices": [{"allow": False, "access": "rwm"}]}}
    if shape.masks:
        linux["maskedPaths"] = MASKED_PATHS
        linux["readonlyPaths"] = READONLY_PATHS
    return {
        "ociVersion": "1.0.2",
        "process": {
            "terminal": False, "user": {"uid": shape.user[0], "gid": shape.user[1]}, "args": list(args),
            "env": [f"{key}={value}" for key, value in env.items()], "cwd": "/data", "noNewPrivileges": True,
            "capabilities": {"bounding": capabilities, "permitted": capabilities if root else [],
                             "effective": capabilities if root else [], "inheritable": [], "ambient": []},
            "rlimits": [{"type": "RLIMIT_NOFILE", "hard": 4096, "soft": 4096}],
        },
        "root": {"path": "rootfs", "readonly": shape.readonly_root},
        "hostname": "bridge",
        "mounts": [
            {"destination": "/proc", "type": "proc", "source": "proc"},
            {"destination": "/dev", "type": "tmpfs", "source": "tmpfs",
             "options": ["nosuid", "strictatime", "mode=755", "size=65536k"]},
            {"destination": "/dev/pts", "type": "devpts", "source": "devpts",
             "options": ["nosuid", "noexec", "newinstance", "ptmxmode=0666", "mode=0620"]},
            {"destination": "/dev/shm", "type": "tmpfs", "source": "shm",
             "options": ["nosuid", "noexec", "nodev", "mode=1777", "size=65536k"]},
            # the host's network namespace (the test reaches the bridge on 127.0.0.1): its sysfs, bound read-only,
            # as runc itself does for a container without a network namespace of its own
            {"destination": "/sys", "type": "bind", "source": "/sys",
             "options": ["rbind", "nosuid", "noexec", "nodev", "ro"]},
            {"destination": "/sys/fs/cgroup", "type": "cgroup", "source": "cgroup", "options": cgroup_options},
            {"destination": "/tmp", "type": "tmpfs", "source": "tmpfs", "options": ["nosuid", "nodev", "mode=1777"]},
            {"destination": "/data", "type": "bind", "source": str(data), "options": ["rbind", "rw"]},
            *_checkout_under_tmp(),
            *_reachable(sys.base_prefix),
        ],
        "linux": linux,
    }


class Container:
    """A running container: runc in the foreground (its output in ``log``), removed on :meth:`close`."""

    def __init__(self, bundle: Path, name: str, log: Path, state: Path) -> None:
        self.bundle, self.name, self.log, self.state = bundle, name, log, state
        self.copied_roots = 0  # mounts of the other shapes' roots copied into this one's (copied_roots)
        self._output = log.open("wb")
        self.process = subprocess.Popen(["runc", "--root", str(state), "run", "--bundle", str(bundle), name],
                                        stdin=subprocess.DEVNULL, stdout=self._output, stderr=subprocess.STDOUT,
                                        start_new_session=True)

    def init_pid(self) -> int | None:
        done = subprocess.run(["runc", "--root", str(self.state), "state", self.name], capture_output=True,
                              text=True, check=False)
        if done.returncode != 0:
            return None
        return int(json.loads(done.stdout)["pid"])

    def cgroup_dirs(self) -> list[Path]:
        """The container's cgroup directories on the host (v2: one; v1: memory's and pids')."""
        pid = self.init_pid()
        if pid is None:
            return []
        found = []
        for line in Path(f"/proc/{pid}/cgroup").read_text().splitlines():
            _, controllers, path = line.split(":", 2)
            if controllers == "" and cgroup_v2():
                found.append(Path("/sys/fs/cgroup") / path.lstrip("/"))
            elif controllers in ("memory", "pids"):
                found.append(Path("/sys/fs/cgroup") / controllers / path.lstrip("/"))
        return found

    def exec(self, args: Sequence[str], env: dict[str, str], user: str = "10001:10001",
             seconds: float = 300) -> subprocess.CompletedProcess[str]:
        """``args`` run in the container beside its init (``docker exec``), as ``user``."""
        return subprocess.run(["runc", "--root", str(self.state), "exec", "--user", user, "--cwd", "/data",
                               *(f"--env={key}={value}" for key, value in env.items()), self.name, *args],
                              capture_output=True, text=True, timeout=seconds, check=False)

    def stop(self, seconds: float) -> bool:
        """What ``docker stop`` does first: SIGTERM to the container's init (tini, which passes it on to the
        bridge). Did the container end within ``seconds``?"""
        subprocess.run(["runc", "--root", str(self.state), "kill", self.name, "TERM"], capture_output=True,
                       check=False)
        try:
            self.process.wait(timeout=seconds)
        except subprocess.TimeoutExpired:
            return False
        return True

    def close(self) -> None:
        subprocess.run(["runc", "--root", str(self.state), "kill", self.name, "KILL"], capture_output=True,
                       check=False)
        with contextlib.suppress(subprocess.TimeoutExpired):
            self.process.wait(timeout=20)
        subprocess.run(["runc", "--root", str(self.state), "delete", "--force", self.name], capture_output=True,
                       check=False)
        self._output.close()


PARENT = "responses-bridge-test"
"""The cgroup (under this process's own, in every hierarchy) the containers' cgroups are made in."""


def remove_parent() -> None:
    """runc removes each container's cgroup, not the parent they were made in: removed once none is left."""
    for line in Path("/proc/self/cgroup").read_text().splitlines():
        _, controllers, path = line.split(":", 2)
        mount = Path("/sys/fs/cgroup") / (controllers.replace("name=", "") if controllers else "")
        if controllers == "" and not cgroup_v2():
            mount = Path("/sys/fs/cgroup/unified")
        with contextlib.suppress(OSError):
            (mount / path.lstrip("/") / PARENT).rmdir()


_MOUNTING = threading.Lock()


def copied_roots(rootfs: Path, workdir: Path) -> int:
    """How many mounts under ``rootfs`` are copies of another bundle's under ``workdir``: those its rbind of ``/``
    took along (none once each bundle is unbindable, see :func:`running`)."""
    inside = f"{rootfs}{workdir}/bundle-"
    return sum(1 for line in Path("/proc/self/mountinfo").read_text().splitlines()
               if line.split()[4].startswith(inside))


@contextlib.contextmanager
def running(shape: Shape, args: Sequence[str], env: dict[str, str], workdir: Path) -> Iterator[Container]:
    """``args`` run in a container of ``shape``; its bundle under ``workdir`` (the rootfs an rbind of ``/``)."""
    bundle = workdir / f"bundle-{shape.name}"
    rootfs, data = bundle / "rootfs", workdir / f"data-{shape.name}"
    rootfs.mkdir(parents=True)
    data.mkdir()
    os.chown(data, 10001, 10001)
    # the bundle bound onto itself and made unbindable first: a recursive bind leaves out an unbindable mount and
    # all under it, so the rbind of / of a shape started beside this one copies none of this root's mounts (else
    # each root holds copies of those made before it: ~1,000 mounts with five shapes at once, that every
    # unshare(CLONE_NEWNS) meanwhile — a sandbox call of any test — copies, and umount -R takes seconds of CPU);
    # under a lock, as the shapes start at once in threads: else another's rbind may take this bundle's own bind
    # along between its bind and its unbindable
    with _MOUNTING:
        subprocess.run(["mount", "--bind", str(bundle), str(bundle)], check=True)
        subprocess.run(["mount", "--make-unbindable", str(bundle)], check=True)
        subprocess.run(["mount", "--rbind", "/", str(rootfs)], check=True)
        subprocess.run(["mount", "--make-rslave", str(rootfs)], check=True)
    copied = copied_roots(rootfs, workdir)  # read before runc mounts anything under the root
    name = f"rb-{shape.name}-{os.getpid()}"
    (bundle / "config.json").write_text(json.dumps(config(
        shape, args, env, data, f"{PARENT}/{name}")))
    container = Container(bundle, name, workdir / f"{shape.name}.log", workdir / "runc-state")
    container.copied_roots = copied
    try:
        yield container
    finally:
        container.close()
        for _ in range(50):
            if subprocess.run(["umount", "-R", str(bundle)], capture_output=True, check=False).returncode == 0:
                break
            time.sleep(0.1)
        with contextlib.suppress(OSError):
            rootfs.rmdir()
        shutil.rmtree(data, ignore_errors=True)
