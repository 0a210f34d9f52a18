"""The bubblewrap command line of one sandbox call: what the code sees of the machine.

New user, PID, IPC, UTS, cgroup and network namespaces (the code's network namespace has only its own loopback,
which reaches nothing outside it); an unprivileged uid inside, mapped to an unprivileged one outside (a root bridge
starts bubblewrap under ``code_sandbox_uid``: identity.py); every capability dropped; no further user namespaces
(``--disable-userns`` where ``/proc/sys`` can be written, and the seccomp filter everywhere); a new session (no
terminal to inject into); ``--die-with-parent`` so that the sandbox ends with the bridge. The launcher is the PID
namespace's init (``--as-pid-1``), with ``/`` as its working directory and an argument list naming no path of the
bridge's (bubblewrap itself, whose arguments do, stays outside the namespace).

``/proc`` is the sandbox's own (its processes only), with the kernel's switches (``/proc/sys``,
``/proc/sysrq-trigger``, ``/proc/irq``, ``/proc/bus``) read-only; where a container runtime's masks make the kernel
refuse a fresh procfs, there is no ``/proc`` at all (host.py), never the host's.

The file system is a fresh tmpfs, read-only once set up, holding only: the system's directories read-only (``/usr``
and the merged-usr links, a few files of ``/etc``, the system's font cache — without it a browser's fontconfig
rebuilds it in ``/tmp`` at each start: a desktop started in 1.8-2.8 s with it, 3.8-4.8 s without), the Python
installation and the environment the bridge runs from (read-only: its packages, numpy among them; a virtual
environment at ``/opt/venv``), the launcher, ``/dev`` read-only but for a small ``/dev/shm``, and three sized
in-memory file systems that are the only places the code can write: ``/tmp``, ``/dev/shm`` and ``/mnt/data`` (the
container's files, laid out and read back by the bridge, sized to the container's limit, so unlinked, sparse or hidden
bytes count against it like any other). A call may also get read-only trees under ``/mnt`` (a container's skills at
``/mnt/skills/<name>``, from the bridge's cache of unpacked skills: services/containers/skill_cache.py). Nothing a
call writes reaches the host's disk, and all of it is gone when the call's namespace ends. The bridge's data
directory, database, configuration and working directory are never mounted, and the environment is cleared: only the
variables below are set, so no secret of the bridge's reaches the code.

Under an ``allowlist`` network policy (:class:`EgressBinding`), the network namespace stays the code's own; the
egress proxy's Unix socket is bound in read-only at ``/run/egress.sock``, the launcher relays ``127.0.0.1:3128`` to
it, and the environment adds the proxy variables and each domain secret's placeholder (sandbox/egress/proxy.py).
"""

from __future__ import annotations

import os
import platform
import sys
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from .limits import MIB, SandboxLimits

DATA_DIR = "/mnt/data"
WORKSPACE = "/workspace"
"""The Agents API's name for an environment's workspace: a symlink to :data:`DATA_DIR` in every call."""
LAUNCHER = "/opt/sandbox/launcher.py"
LAUNCHER_SOURCE = Path(__file__).with_name("launcher.py")
VENV = "/opt/venv"
SANDBOX_UID = 1000
TMP_BYTES = 64 * MIB
SHM_BYTES = 64 * MIB
DATA_SLACK_BYTES = 8 * MIB
"""Room in ``/mnt/data`` past the container's limit for the file system's own rounding (a file takes whole
pages), so a container at its limit still lays out."""
SYSTEM_DIRS = ("/usr", "/bin", "/sbin", "/lib", "/lib32", "/lib64", "/libx32")
ETC_FILES = ("/etc/ld.so.cache", "/etc/ld.so.conf", "/etc/ld.so.conf.d", "/etc/alternatives", "/etc/fonts",
             "/etc/localtime", "/etc/mime.types", "/etc/ssl/certs", "/var/cache/fontconfig")

PACKAGES_DIR = "/mnt/packages"
"""An agent environment's packages, bound read-only where it has some (services/agents/environments/packages.py)."""
SYSTEM_PACKAGES = f"{PACKAGES_DIR}/system"  # Debian packages unpacked: their usr/bin, usr/lib…
MULTIARCH = {"x86_64": "x86_64-linux-gnu", "aarch64": "aarch64-linux-gnu"}.get(platform.machine(), "")
PACKAGE_PATHS = {
    "PYTHONPATH": f"{PACKAGES_DIR}/python:{SYSTEM_PACKAGES}/usr/lib/python3/dist-packages",
    "NODE_PATH": f"{PACKAGES_DIR}/npm/node_modules",
    "LD_LIBRARY_PATH": ":".join([*([f"{SYSTEM_PACKAGES}/usr/lib/{MULTIARCH}", f"{SYSTEM_PACKAGES}/lib/{MULTIARCH}"]
                                   if MULTIARCH else []), f"{SYSTEM_PACKAGES}/usr/lib"]),
}
PACKAGE_BINS = (f"{PACKAGES_DIR}/python/bin:{PACKAGES_DIR}/npm/node_modules/.bin:{SYSTEM_PACKAGES}/usr/bin:"
                f"{SYSTEM_PACKAGES}/bin")

ENVIRONMENT = {
    "PATH": f"{PACKAGE_BINS}:/usr/local/bin:/usr/bin:/bin",
    **PACKAGE_PATHS,
    "HOME": "/tmp",
    "LANG": "C.UTF-8",
    "LC_ALL": "C.UTF-8",
    "TMPDIR": "/tmp",
    "MPLBACKEND": "Agg",
    "MPLCONFIGDIR": "/tmp/matplotlib",
    "OPENBLAS_NUM_THREADS": "1",
    "OMP_NUM_THREADS": "1",
    "MKL_NUM_THREADS": "1",
}


@dataclass(frozen=True, slots=True)
class EgressBinding:
    """What a call under an allowlist policy adds to its sandbox: the proxy's socket on the host, the path and
    port it has inside, and the environment's additions."""

    socket: str
    inside: str
    port: int
    environment: Mapping[str, str] = field(default_factory=dict)
    files: Mapping[str, str] = field(default_factory=dict)
    """More files bound in read-only, host path → sandbox path (the CA bundle of sandbox/egress/tls.py)."""


def _in_venv() -> bool:
    return os.path.realpath(sys.prefix) != os.path.realpath(sys.base_prefix)


def interpreter_in_sandbox() -> str:
    """The interpreter's path inside the sandbox: the virtual environment's, under ``/opt/venv``, or the
    installation's own."""
    if _in_venv():
        return f"{VENV}/bin/{Path(sys.executable).name}"
    return sys.executable


def python_binds() -> list[tuple[str, str]]:
    """(host path, sandbox path) of what the interpreter needs, read-only: its installation where it lies (a
    virtual environment's ``pyvenv.cfg`` names it) and the virtual environment at ``/opt/venv``."""
    base = os.path.realpath(sys.base_prefix)
    binds = [(base, base)]
    if _in_venv():
        binds.append((os.path.realpath(sys.prefix), VENV))
    return binds


def _system_binds() -> list[str]:
    arguments: list[str] = []
    for path in SYSTEM_DIRS:
        if os.path.islink(path):
            arguments += ["--symlink", os.readlink(path), path]
        elif os.path.isdir(path):
            arguments += ["--ro-bind", path, path]
    for path in ETC_FILES:
        arguments += ["--ro-bind-try", path, path]
    return arguments


PROC_COVERS = ("/proc/sys", "/proc/sysrq-trigger", "/proc/irq", "/proc/bus")
"""The kernel's switches under ``/proc``: bound read-only over the sandbox's own ``/proc`` in every mode (the
sandbox's host uid is never root, so the kernel refuses its writes there anyway; this refuses them whatever the
uid). The sources are the host's ``/proc`` entries of the same kernel; ``/proc/sys`` looks its tables up in the
reader's namespaces, so the code still sees its own network namespace's values there."""


def _proc() -> list[str]:
    arguments = ["--proc", "/proc"]
    for path in PROC_COVERS:
        arguments += ["--ro-bind-try", path, path]
    return arguments


def bwrap_command(bwrap: str, limits: SandboxLimits, *, control_fd: int, info_fd: int, address_space: int,
                  launcher: Path | None = None, extra_roots: Sequence[str] = (),
                  read_only: Sequence[tuple[Path, str]] = (), egress: EgressBinding | None = None,
                  proc: bool = True, user_namespaces: bool = False) -> list[str]:
    """The argv that starts the launcher as the sandbox's init. ``control_fd``: the launcher's marks;
    ``info_fd``: bubblewrap's JSON with the init's host pid; ``address_space``: each process's ``RLIMIT_AS``;
    ``read_only``: (host directory, sandbox path) trees bound read-only (a container's skills at
    ``/mnt/skills/<name>``: services/containers/skill_cache.py), under ``/mnt`` and never over a path the sandbox itself
    needs; ``egress``: the proxy of an allowlist policy (None: no way out at all); ``proc``: a ``/proc`` of the
    sandbox's own (False where the host's masks forbid one: then none at all, see host.py); ``user_namespaces``:
    no ``--disable-userns`` (the desktop's browser sandboxes its renderers in user namespaces of its own)."""
    arguments = [bwrap, "--unshare-all", "--unshare-user", "--die-with-parent", "--new-session",
                 *(["--disable-userns"] if proc and not user_namespaces else []), "--as-pid-1", "--cap-drop", "ALL",
                 "--uid", str(SANDBOX_UID), "--gid", str(SANDBOX_UID),
                 "--hostname", "sandbox", "--clearenv", "--info-fd", str(info_fd)]
    for name, value in {**ENVIRONMENT, **(egress.environment if egress is not None else {})}.items():
        arguments += ["--setenv", name, value]
    arguments += ["--tmpfs", "/", *_system_binds(), *(_proc() if proc else []), "--dev", "/dev",
                  "--size", str(SHM_BYTES), "--tmpfs", "/dev/shm", "--remount-ro", "/dev",
                  "--size", str(TMP_BYTES), "--tmpfs", "/tmp",
                  "--size", str(limits.container_bytes + DATA_SLACK_BYTES), "--tmpfs", DATA_DIR,
                  "--symlink", DATA_DIR, WORKSPACE]  # an Agents API environment's workspace is /mnt/data
    for source, target in [*python_binds(), *((root, root) for root in extra_roots)]:
        arguments += ["--ro-bind", source, target]
    for tree, target in read_only:
        if not target.startswith("/mnt/") or target == DATA_DIR or ".." in target.split("/"):
            raise ValueError(f"a read-only tree goes under /mnt, beside /mnt/data: {target!r}")
        arguments += ["--ro-bind", str(tree), target]
    if egress is not None:
        arguments += ["--ro-bind", egress.socket, egress.inside]
        for source, target in egress.files.items():
            arguments += ["--ro-bind", source, target]
    arguments += ["--ro-bind", str(launcher or LAUNCHER_SOURCE), LAUNCHER,
                  "--chdir", "/", "--remount-ro", "/",
                  interpreter_in_sandbox(), "-I", "-B", LAUNCHER,
                  str(address_space), str(limits.processes), str(limits.file_bytes), str(control_fd)]
    if egress is not None:
        arguments += [str(egress.port), egress.inside]
    return arguments
