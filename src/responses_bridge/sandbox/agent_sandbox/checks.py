"""``responses-bridge doctor`` and ``serve``'s start for the ``agent-sandbox`` backend: doctor.py's checks printed
one line each (exit status 1 when one fails), or logged at start, each failure with its fix. Without the extra,
the one line naming it."""

from __future__ import annotations

import asyncio
from typing import TYPE_CHECKING

import structlog

if TYPE_CHECKING:
    from ..doctor import Finding
    from .settings import AgentSandboxConfig

log = structlog.get_logger(__name__)
START_CHECK_SECONDS = 10.0
"""How long the start waits for the cluster's checks (a blackholed API server never holds the start longer)."""


def doctor(settings: AgentSandboxConfig) -> int:
    """Print the cluster's checks; 0 when calls can be claimed in every pool, the desktop pool too when one is set
    (a deployment that names it means to serve desktops), else 1."""
    try:
        from .doctor import DESKTOP_CHECK, diagnose_cluster
    except ImportError as error:
        from ...extras import explain
        from . import MISSING_EXTRA
        why = explain("agent-sandbox", "responses_bridge.sandbox.agent_sandbox.doctor", error, MISSING_EXTRA)
        print(f"FAIL  agent-sandbox  {why}")
        return 1
    findings = asyncio.run(diagnose_cluster(settings))
    width = max(len(finding.name) for finding in findings)
    for finding in findings:
        print(f"{'ok  ' if finding.ok else 'FAIL'}  {finding.name:<{width}}  {finding.detail}")
    calls = [finding for finding in findings if finding.name != DESKTOP_CHECK]
    ok = all(finding.ok for finding in calls) and any(finding.name.startswith("pool") for finding in calls)
    print("code interpreter and hosted shell: " + ("calls run in sandbox pods claimed from the warm pools" if ok
                                                   else "calls cannot be claimed as configured; see above"))
    desktop = next((finding for finding in findings if finding.name == DESKTOP_CHECK), None)
    pool = settings.agent_sandbox_desktop_pool
    claims = all(finding.ok for finding in calls if not finding.name.startswith("pool"))  # API, CRDs, RBAC
    desktops = pool is None or (claims and desktop is not None and desktop.ok)
    print("desktop (computer use): " + (
        "no desktop runs on this backend (RESPONSES_BRIDGE_AGENT_SANDBOX_DESKTOP_POOL is unset: the "
        "agent-sandbox-desktop component sets it, deploy/kubernetes/components/agent-sandbox-desktop)" if pool is None
        else f"each session desktop runs in a pod claimed from the warm pool {pool}" if desktops
        else "desktops cannot be claimed as configured; see above"))
    return 0 if ok and desktops else 1


async def log_at_start(settings: AgentSandboxConfig) -> list[Finding]:
    """The same checks at start, each failure logged with its fix (calls still fail one by one, worded)."""
    from ..doctor import Finding
    from .doctor import diagnose_cluster

    try:
        async with asyncio.timeout(START_CHECK_SECONDS):
            findings = await diagnose_cluster(settings)
    except TimeoutError:
        findings = [Finding("kubernetes API", False, f"the cluster's checks did not finish within "
                            f"{START_CHECK_SECONDS:g} s (`responses-bridge doctor` runs them without a limit)")]
    for finding in findings:
        if not finding.ok:
            log.warning("sandbox_cluster_check_failed", check=finding.name, detail=finding.detail)
    return findings
