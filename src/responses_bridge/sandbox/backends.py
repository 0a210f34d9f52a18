"""The one place a sandbox backend is chosen (``RESPONSES_BRIDGE_CODE_SANDBOX_BACKEND``): bubblewrap, checked on
this host (runner.py), or pods claimed from agent-sandbox (agent_sandbox/). Either way the result is a
:class:`~.backend.SandboxBackend` whose ``unavailable`` says why no call can run (then every request for a tool that
runs code is a 400 naming it, and nothing runs unsandboxed)."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import TYPE_CHECKING

from .backend import SandboxBackend
from .limits import SandboxLimits

if TYPE_CHECKING:
    from .agent_sandbox.settings import BackendConfig
    from .egress.proxy import EgressSettings




async def open_backend(settings: BackendConfig, limits: SandboxLimits, *, share: Callable[[str], int],
                       egress: EgressSettings | None) -> SandboxBackend:
    """The configured backend, checked (bubblewrap: its namespaces made and one real call run; agent-sandbox: its
    client made — the cluster is checked by ``doctor``, and each claim says why it failed)."""
    if settings.code_sandbox_backend == "agent-sandbox":
        try:
            from .agent_sandbox.backend import AgentSandboxBackend
        except ImportError as error:
            from ..extras import explain
            from .agent_sandbox import MISSING_EXTRA
            from .agent_sandbox.refused import RefusedBackend
            return RefusedBackend(limits, explain("agent-sandbox", "responses_bridge.sandbox.agent_sandbox.backend",
                                                  error, MISSING_EXTRA, public=True))
        from .agent_sandbox.checks import log_at_start

        backend = AgentSandboxBackend.from_settings(settings, limits, share=share, egress=egress)
        await backend.start()
        await log_at_start(settings)  # the cluster checked as doctor checks it: each failure logged with its fix
        return backend
    from .identity import SandboxIdentity
    from .runner import Sandbox

    return await asyncio.to_thread(Sandbox.detect, limits, use_cgroup=settings.code_cgroup,
                                   require_cgroup=settings.code_require_cgroup, share=share, egress=egress,
                                   identity=SandboxIdentity.for_process(settings.code_sandbox_uid,
                                                                        settings.code_sandbox_gid))
