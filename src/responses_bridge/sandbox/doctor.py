"""Can code run here, in which mode, at what cost, and if not, why and what fixes it: the checks behind
``responses-bridge doctor``.

Each check runs the real thing (bubblewrap making its namespaces, a cgroup made and removed, the interpreter
starting inside a real call) rather than reading kernel settings, because the settings that matter differ between
kernels, distributions and container runtimes (sysctls, AppArmor, seccomp profiles, a pod's security context).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

from .command import SHM_BYTES, TMP_BYTES
from .host import INSTALL_FIX, PROC_FIX, check_bubblewrap
from .identity import SandboxIdentity
from .limits import SandboxLimits
from .result import SandboxUnavailable

if TYPE_CHECKING:
    from .runner import Sandbox

@dataclass(frozen=True, slots=True)
class Finding:
    name: str
    ok: bool
    detail: str


__all__ = ["Finding", "check_bubblewrap", "diagnose"]


def diagnose(limits: SandboxLimits | None = None, *, use_cgroup: bool = True, require_cgroup: bool = False,
             identity: SandboxIdentity | None = None) -> list[Finding]:
    """Every check, in order; a failed one explains itself. Later checks need the earlier ones."""
    from .runner import Sandbox

    limits = limits or SandboxLimits()
    identity = identity or SandboxIdentity.for_process()
    bwrap, reason = check_bubblewrap(None, identity)
    findings = [Finding("bubblewrap", bwrap is not None, bwrap or f"not found: {INSTALL_FIX}")]
    if bwrap is None:
        return findings
    findings.append(Finding("uid mapping", True, identity.describe()))
    findings.append(Finding("namespaces", reason is None, "user, PID, IPC, UTS, cgroup and network namespaces"
                            if reason is None else reason))
    if reason is not None:
        return findings
    # the mode chosen as serve chooses it: a real call per mode, best first
    sandbox = Sandbox.detect(limits, bwrap=bwrap, use_cgroup=use_cgroup, require_cgroup=require_cgroup,
                             identity=identity)
    try:
        return _with_sandbox(findings, sandbox, limits, use_cgroup, require_cgroup)
    finally:
        if sandbox.cgroups is not None:  # the proof's and the checks' cgroups, removed: nothing left behind
            sandbox.cgroups.sweep()


def _with_sandbox(findings: list[Finding], sandbox: Sandbox, limits: SandboxLimits, use_cgroup: bool,
                  require_cgroup: bool) -> list[Finding]:
    findings.append(Finding("proc", True, "a /proc of the sandbox's own (its processes only), with /proc/sys, "
                            "/proc/sysrq-trigger, /proc/irq and /proc/bus read-only" if sandbox.proc_refused is None
                            else f"none in the sandbox ({sandbox.proc_refused}): {PROC_FIX}"))
    findings.append(_containment(sandbox, use_cgroup, require_cgroup))
    if sandbox.unavailable is not None:
        return findings
    findings.append(Finding("memory limit", True, _memory(sandbox)))
    findings.append(Finding("in-memory files", True, f"/tmp {TMP_BYTES >> 20} MiB, /dev/shm {SHM_BYTES >> 20} MiB, "
                            f"/mnt/data the container's {limits.container_bytes >> 20} MiB; the rest of /dev and "
                            "every other path read-only; nothing reaches the host's disk"))
    findings.append(_interpreter(sandbox))
    if findings[-1].ok:
        findings.append(Finding("packages", True, _packages(sandbox)))
        findings.append(_shell(sandbox, use_cgroup))
        findings.append(_desktop(sandbox))
    return findings


def _desktop(sandbox: Sandbox) -> Finding:
    """Can a desktop (computer use) run here: its packages, Pillow with XCB, the cgroup mode; then a real one
    started, its screen taken and stopped. Not a failure of the code interpreter: ``doctor``'s exit status does
    not count it (no tool served yet needs it)."""
    import asyncio
    import time

    from .desktop import Desktop, desktop_unavailable
    from .result import SandboxBusy

    refused = desktop_unavailable(sandbox)
    if refused is not None:
        return Finding("desktop", False, refused)

    async def probe() -> str:
        desktop = Desktop(sandbox)
        began = time.monotonic()
        try:
            await desktop.start()
            took = time.monotonic() - began
            shot = await desktop.screenshot()
        finally:
            await desktop.stop()
        own = ("Chromium's own sandbox on: its renderers in namespaces of their own" if desktop.browser_sandbox else
               "Chromium's own sandbox off: this kernel refused it the user namespaces it makes; the call's "
               "namespaces, filter and cgroup hold the whole browser")
        return (f"Xvfb, Chromium and xdotool started in one call in {took:.1f} s; a {shot.width}x{shot.height} "
                f"screenshot is {len(shot.jpeg) >> 10} KiB of JPEG ({own})")

    try:
        return Finding("desktop", True, asyncio.run(probe()))
    except (SandboxUnavailable, SandboxBusy) as failed:
        return Finding("desktop", False, f"a desktop did not start here: {failed}")


def _shell(sandbox: Sandbox, use_cgroup: bool) -> Finding:
    """Can the hosted shell run: a process per command, so the cgroup mode. Refused by the setting, that is the
    deployment's choice (ok); refused by the host, a failure naming the fix."""
    if sandbox.shell_unavailable is None:
        return Finding("hosted shell", True, "shell commands run in the sandbox here (a cgroup per call)")
    if not use_cgroup:
        return Finding("hosted shell", True, "refused by RESPONSES_BRIDGE_CODE_CGROUP=false (the single-process "
                       "mode, chosen here): set it to true where the host delegates a cgroup to run shell commands")
    return Finding("hosted shell", False, f"shell commands cannot run here (a process per command needs a memory "
                   f"cgroup per call): {sandbox.no_cgroup}")


def _containment(sandbox: Sandbox, use_cgroup: bool, require_cgroup: bool) -> Finding:
    """Which mode the calls run in, and what it costs."""
    if sandbox.unavailable is not None:
        return Finding("containment", False, sandbox.unavailable)
    if sandbox.cgroups is not None:
        processes = (f"pids.max = {sandbox.limits.processes}" if sandbox.cgroups.pids is not None else
                     "no pids controller: processes bounded by the memory each costs")
        return Finding("containment", True, f"cgroup mode: a cgroup per call with {sandbox.cgroups.description}; "
                       f"{processes}")
    why = "RESPONSES_BRIDGE_CODE_CGROUP=false" if not use_cgroup else sandbox.no_cgroup
    return Finding("containment", True, f"single-process mode ({why}): the code may start no other process "
                   "(subprocess, os.fork and multiprocessing fail with EPERM), so its one address space bounds its "
                   "memory; kernel memory for file entries is not counted. RESPONSES_BRIDGE_CODE_REQUIRE_CGROUP=true "
                   "refuses the tool instead of this mode")


def _memory(sandbox: Sandbox) -> str:
    limits = sandbox.limits
    if sandbox.mode == "cgroup":
        return (f"{limits.memory_bytes >> 20} MiB per call: every process, /tmp, /dev/shm and the files written "
                "in /mnt/data, together (the cgroup's limit, swap off)")
    return (f"{limits.memory_bytes >> 20} MiB per call: one process of {sandbox.address_space >> 20} MiB "
            f"(RLIMIT_AS) + /tmp and /dev/shm; /mnt/data is bounded by the container's limit")


def _interpreter(sandbox: Sandbox) -> Finding:
    import asyncio

    try:
        result = asyncio.run(sandbox.run("import sys; print(sys.version.split()[0])"))
    except SandboxUnavailable as refused:
        return Finding("python", False, f"the sandbox could not start: {refused}")
    if result.outcome != "ok":
        said = (result.stderr or result.note).strip().splitlines()
        return Finding("python", False, f"the interpreter did not start in the sandbox: "
                       f"{said[-1] if said else result.outcome}")
    return Finding("python", True, f"Python {result.stdout.strip()} starts in the sandbox")


def _packages(sandbox: Sandbox) -> str:
    import asyncio

    probe = ("import importlib.util as u\n"
             "print(' '.join(n for n in ('numpy', 'pandas', 'matplotlib') if u.find_spec(n)))")
    present = asyncio.run(sandbox.run(probe)).stdout.split()
    missing = [name for name in ("numpy", "pandas", "matplotlib") if name not in present]
    text = ", ".join(present) or "none of numpy, pandas, matplotlib"
    if missing and "numpy" not in missing:
        text += f" (install the [sandbox] extra for {', '.join(missing)})"
    return text
