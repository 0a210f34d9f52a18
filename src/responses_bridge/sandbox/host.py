"""Can this host make the sandbox at all: bubblewrap found and able to make its namespaces, checked by running it
(the settings that decide it differ between kernels, distributions and container runtimes: sysctls, AppArmor,
seccomp profiles, a pod's security context), and what to do where it cannot.
"""

from __future__ import annotations

import shutil
import subprocess

NAMESPACE_FIX = ("allow unprivileged user namespaces: on the host, sysctl kernel.unprivileged_userns_clone=1 and "
                 "user.max_user_namespaces > 0 (on Ubuntu also kernel.apparmor_restrict_unprivileged_userns=0); in "
                 "Kubernetes, run the pod with seccompProfile and appArmorProfile Unconfined (see "
                 "deploy/kubernetes/sidecar.yaml); in Docker, --security-opt seccomp=unconfined "
                 "--security-opt apparmor=unconfined")
CGROUP_DELEGATION = ("delegate a cgroup to the bridge (cgroup v2 with the memory controller enabled for its cgroup, "
                     "e.g. systemd's Delegate=yes, or a writable cgroup v1 memory hierarchy)")
INSTALL_FIX = "install bubblewrap (Debian/Ubuntu: apt-get install bubblewrap; Fedora: dnf install bubblewrap)"


def check_bubblewrap(bwrap: str | None = None) -> tuple[str | None, str | None]:
    """(bwrap's path, None) when it can make a sandbox here, else (path or None, the reason and the fix)."""
    found = bwrap or shutil.which("bwrap")
    if found is None:
        return None, f"bubblewrap (bwrap) is not on PATH: {INSTALL_FIX}"
    try:
        completed = subprocess.run([found, "--unshare-all", "--unshare-user", "--die-with-parent", "--ro-bind",
                                    "/", "/", "true"], capture_output=True, timeout=20, check=False)
    except (OSError, subprocess.TimeoutExpired) as error:
        return found, f"bubblewrap could not be run ({error}): {INSTALL_FIX}"
    if completed.returncode != 0:
        said = completed.stderr.decode("utf-8", "replace").strip().splitlines()
        return found, f"bubblewrap cannot make its namespaces ({said[-1] if said else 'no reason given'}): " \
                      f"{NAMESPACE_FIX}"
    return found, None
