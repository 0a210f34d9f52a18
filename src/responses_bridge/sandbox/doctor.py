"""Can code run here, and if not, why and what fixes it: the checks behind ``responses-bridge doctor`` and the
sandbox's own start-up check.

Each check runs the real thing (bubblewrap making its namespaces, the interpreter starting inside, a process
limit taking effect) rather than reading kernel settings, because the settings that matter differ between
kernels, distributions and container runtimes (sysctls, AppArmor, seccomp profiles, a pod's security context).
"""

from __future__ import annotations

import os
import shutil
import subprocess
import tempfile
from dataclasses import dataclass
from pathlib import Path

from .cgroups import CgroupParent
from .command import bwrap_command
from .limits import SandboxLimits

NAMESPACE_FIX = ("allow unprivileged user namespaces: on the host, sysctl kernel.unprivileged_userns_clone=1 and "
                 "user.max_user_namespaces > 0 (on Ubuntu also kernel.apparmor_restrict_unprivileged_userns=0); in "
                 "Kubernetes, run the pod with seccompProfile and appArmorProfile Unconfined (see "
                 "deploy/kubernetes/sidecar.yaml); in Docker, --security-opt seccomp=unconfined "
                 "--security-opt apparmor=unconfined")
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


@dataclass(frozen=True, slots=True)
class Finding:
    name: str
    ok: bool
    detail: str


def diagnose(limits: SandboxLimits | None = None) -> list[Finding]:
    """Every check, in order; a failed one explains itself. Later checks need the earlier ones."""
    limits = limits or SandboxLimits()
    bwrap, reason = check_bubblewrap()
    findings = [Finding("bubblewrap", bwrap is not None, bwrap or f"not found: {INSTALL_FIX}")]
    if bwrap is None:
        return findings
    findings.append(Finding("namespaces", reason is None, "user, PID, IPC, UTS, cgroup and network namespaces"
                            if reason is None else reason))
    if reason is not None:
        return findings
    findings.append(_interpreter(bwrap, limits))
    cgroups = CgroupParent.find()
    if cgroups is not None:
        findings.append(Finding("process limit", True, f"cgroup {cgroups.version} pids.max = {limits.processes} "
                                f"({cgroups.path})"))
    elif os.geteuid() != 0:
        findings.append(Finding("process limit", True, f"RLIMIT_NPROC = {limits.processes} in the sandbox's user "
                                "namespace"))
    else:
        findings.append(Finding("process limit", False, "running as root with no cgroup this process may make: "
                                "the kernel does not apply RLIMIT_NPROC to root, so the code's processes are "
                                "bounded only by the time limit; run the bridge as a non-root user, or delegate "
                                "a cgroup v2 subtree to it"))
    memory = ("cgroup v2 memory.max and RLIMIT_AS" if cgroups is not None and cgroups.memory
              else "RLIMIT_AS per process")
    findings.append(Finding("memory limit", True, f"{limits.memory_bytes >> 20} MiB ({memory})"))
    findings.append(Finding("packages", True, _packages(bwrap, limits)))
    return findings


def _interpreter(bwrap: str, limits: SandboxLimits) -> Finding:
    with tempfile.TemporaryDirectory(prefix="responses-bridge-doctor-") as workdir:
        command = bwrap_command(bwrap, Path(workdir), limits)
        try:
            completed = subprocess.run(command, input=b"import sys; print(sys.version.split()[0])",
                                       capture_output=True, timeout=60, check=False)
        except (OSError, subprocess.TimeoutExpired) as error:
            return Finding("python", False, f"the interpreter did not start in the sandbox ({error})")
    if completed.returncode != 0:
        said = completed.stderr.decode("utf-8", "replace").strip().splitlines()
        return Finding("python", False, f"the interpreter did not start in the sandbox: "
                       f"{said[-1] if said else completed.returncode}")
    return Finding("python", True, f"Python {completed.stdout.decode().strip()} starts in the sandbox")


def _packages(bwrap: str, limits: SandboxLimits) -> str:
    probe = ("import importlib.util as u\n"
             "print(' '.join(n for n in ('numpy', 'pandas', 'matplotlib') if u.find_spec(n)))")
    with tempfile.TemporaryDirectory(prefix="responses-bridge-doctor-") as workdir:
        completed = subprocess.run(bwrap_command(bwrap, Path(workdir), limits), input=probe.encode(),
                                   capture_output=True, timeout=60, check=False)
    present = completed.stdout.decode().split()
    missing = [name for name in ("numpy", "pandas", "matplotlib") if name not in present]
    text = ", ".join(present) or "none of numpy, pandas, matplotlib"
    if missing and "numpy" not in missing:
        text += f" (install the [sandbox] extra for {', '.join(missing)})"
    return text
