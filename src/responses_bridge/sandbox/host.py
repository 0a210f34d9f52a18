"""Can this host make the sandbox at all: bubblewrap found and able to make its namespaces, checked by running it
(the settings that decide it differ between kernels, distributions and container runtimes: sysctls, AppArmor,
seccomp profiles, a pod's security context), and what to do where it cannot.
"""

from __future__ import annotations

import shutil
import subprocess
from collections.abc import Sequence

from .identity import SandboxIdentity

NAMESPACE_FIX = ("allow unprivileged user namespaces: on the host, sysctl kernel.unprivileged_userns_clone=1 and "
                 "user.max_user_namespaces > 0 (on Ubuntu also kernel.apparmor_restrict_unprivileged_userns=0); in "
                 "Kubernetes, run the pod with seccompProfile and appArmorProfile Unconfined (see "
                 "deploy/kubernetes/sidecar.yaml); in Docker, --security-opt seccomp=unconfined "
                 "--security-opt apparmor=unconfined")
INSTALL_FIX = "install bubblewrap (Debian/Ubuntu: apt-get install bubblewrap; Fedora: dnf install bubblewrap)"
PROC_FIX = ("this host hides parts of /proc (Docker's and containerd's default masks), so the kernel refuses the "
            "sandbox a /proc of its own; it runs without one. To give it one: in Docker or Compose, "
            "--security-opt systempaths=unconfined (Compose: security_opt: [\"systempaths=unconfined\"]); in "
            "Kubernetes, securityContext.procMount: Unmasked with hostUsers: false (1.33+)")
"""What a host whose ``/proc`` is partly masked costs, and what unmasks it (doctor, serve's start-up warning)."""


PROBE_ARGUMENTS = ("--unshare-all", "--unshare-user", "--die-with-parent", "--as-pid-1")
"""The probes' namespaces. ``--as-pid-1``, as every call has: without it bubblewrap keeps a process of its own as the
namespace's init, which outlives the bubblewrap this process waits for and is handed to the nearest subreaper (a
``serve`` run as one kept each as a zombie)."""


def _run(command: Sequence[str]) -> tuple[int, str]:
    """(exit status, stderr's last line); OSError and a hang (20 s) come back as a status of -1."""
    try:
        completed = subprocess.run(command, capture_output=True, timeout=20, check=False, stdin=subprocess.DEVNULL)
    except (OSError, subprocess.TimeoutExpired) as error:
        return -1, str(error)
    said = completed.stderr.decode("utf-8", "replace").strip().splitlines()
    return completed.returncode, said[-1] if said else "no reason given"


def check_bubblewrap(bwrap: str | None = None,
                     identity: SandboxIdentity | None = None) -> tuple[str | None, str | None]:
    """(bwrap's path, None) when it can make a sandbox here, under the sandbox's host uid (``identity``: this
    process's default), else (path or None, the reason and the fix)."""
    found = bwrap or shutil.which("bwrap")
    if found is None:
        return None, f"bubblewrap (bwrap) is not on PATH: {INSTALL_FIX}"
    try:
        prefix = (identity or SandboxIdentity.for_process()).wrap([])
    except FileNotFoundError as missing:
        return found, str(missing)
    status, said = _run([*prefix, found, *PROBE_ARGUMENTS, "--ro-bind", "/", "/", "true"])
    if status == -1:
        return found, f"bubblewrap could not be run ({said}): {INSTALL_FIX}"
    if status != 0:
        return found, f"bubblewrap cannot make its namespaces ({said}): {NAMESPACE_FIX}"
    return found, None


def proc_refused(bwrap: str, identity: SandboxIdentity) -> str | None:
    """None when the sandbox can have a fresh ``/proc`` of its own here; else bubblewrap's words. A container
    runtime's default masks (``/dev/null`` over ``/proc/kcore``, read-only ``/proc/sys``, …) make the kernel refuse
    a new procfs inside a user namespace, where the visible one is partly hidden."""
    status, said = _run([*identity.wrap([]), bwrap, *PROBE_ARGUMENTS, "--ro-bind", "/", "/", "--proc", "/proc",
                         "true"])
    return None if status == 0 else said
