"""Can code run here, in which mode, at what cost, and if not, why and what fixes it: the checks behind
``responses-bridge doctor``.

Each check runs the real thing (bubblewrap making its namespaces, a cgroup made and removed, the interpreter
starting inside a real call) rather than reading kernel settings, because the settings that matter differ between
kernels, distributions and container runtimes (sysctls, AppArmor, seccomp profiles, a pod's security context).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from .command import SHM_BYTES, TMP_BYTES
from .host import INSTALL_FIX, PROC_FIX, check_bubblewrap
from .identity import SandboxIdentity
from .limits import SandboxLimits
from .result import SandboxUnavailable

if TYPE_CHECKING:
    from .backend import SandboxBackend
    from .runner import Sandbox

Event = tuple[str, str, dict[str, Any]]
"""One line ``serve`` logs of the sandbox at start: (level, event, fields)."""

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


# --- serve's start: what it says of the sandbox, and what a stopped process left ---


def readiness_events(sandbox: SandboxBackend, slots: int) -> list[Event]:
    """What ``serve`` says of the backend it opened: why no call can run (``sandbox_unavailable``), what runs
    without (no /proc of its own, no hosted shell) with the fix, or that it is ready and in which mode."""
    from .host import PROC_FIX
    from .runner import Sandbox

    if sandbox.unavailable is not None:
        return [("warning", "sandbox_unavailable", {"reason": sandbox.unavailable})]
    if not isinstance(sandbox, Sandbox):
        return [("info", "sandbox_ready", {"backend": type(sandbox).__name__,
                                           "shell": sandbox.shell_unavailable is None})]
    events: list[Event] = []
    if sandbox.proc_refused is not None:
        events.append(("warning", "sandbox_without_proc", {"cause": sandbox.proc_refused, "fix": PROC_FIX}))
    if sandbox.shell_unavailable is not None and not sandbox.cgroup_off:
        events.append(("warning", "sandbox_shell_unavailable", {
            "cause": sandbox.shell_unavailable, "cost": "code runs as one process: no subprocess, no hosted shell"}))
    events.append(("info", "sandbox_ready", {
        "bwrap": sandbox.bwrap, "concurrency": slots, "mode": sandbox.mode,
        "cgroups": sandbox.cgroups.description if sandbox.cgroups is not None else None,
        "host_uid": sandbox.identity.host_uid, "proc": sandbox.proc_refused is None,
        "shell": sandbox.shell_unavailable is None}))
    return events


def sweep_left(workdir: Path | None) -> list[Event]:
    """What a stopped process left of the sandbox's trees, removed (calls' workspaces, skills' read-only trees),
    and whether the scratch place is the bridge's alone (said once, at start: the skills' trees are made there)."""
    from .read_only import sweep_orphans
    from .scratch import ScratchUnsafe, scratch_root
    from .trees import sweep_stale

    events: list[Event] = []
    swept = sweep_stale(workdir)
    if swept:
        events.append(("info", "sandbox_workspaces_swept", {"removed": swept}))
    orphans = sweep_orphans(workdir)
    if orphans:
        events.append(("info", "sandbox_skill_trees_swept", {"removed": orphans}))
    try:
        scratch_root(workdir)
    except ScratchUnsafe as error:
        events.append(("warning", "sandbox_scratch_unsafe", {
            "cause": str(error), "fix": "remove what stands there, or set RESPONSES_BRIDGE_CODE_WORKDIR to an "
                                        "existing directory the bridge may write in"}))
    return events


def start_check(spec: dict[str, Any]) -> list[Event]:
    """``serve``'s check of this host's sandbox, in a process of its own (``python -m
    responses_bridge.sandbox.doctor``), so that the sidecar imports none of the sandbox until code first runs:
    the sandbox detected and proved as the sidecar will detect it (``spec``: its limits, cgroup and uid
    settings), its start-up lines and what a stopped process left, swept; every line the detection logs
    (``sandbox_cgroups_swept``) among the events, for the sidecar to log as its own."""
    import structlog

    from .identity import SandboxIdentity
    from .runner import Sandbox

    logged: list[Event] = []

    def keep(logger: object, method: str, event: Any) -> Any:
        fields = {key: value for key, value in event.items() if key != "event"}
        logged.append((method, str(event.get("event")), fields))
        raise structlog.DropEvent

    structlog.configure(processors=[keep], cache_logger_on_first_use=False)
    limits = SandboxLimits(**spec["limits"])
    sandbox = Sandbox.detect(limits, use_cgroup=spec["use_cgroup"], require_cgroup=spec["require_cgroup"],
                             identity=SandboxIdentity.for_process(spec["uid"], spec["gid"]))
    workdir = Path(spec["workdir"]) if spec.get("workdir") else None
    return [*logged, *readiness_events(sandbox, limits.slots), *sweep_left(workdir)]


if __name__ == "__main__":  # serve's start check (start_check): its spec as JSON on stdin, its events on stdout
    import json
    import sys

    sys.stdout.write(json.dumps(start_check(json.load(sys.stdin)), default=str))
