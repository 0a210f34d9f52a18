"""The code interpreter's sandbox: bubblewrap namespaces whose init holds each call together, with one budget per
call (memory across all its processes and in-memory files, disk, processes, time, output, a fairly shared slot),
and nothing of a call left once it ends. Never a fallback to running code unsandboxed: where bubblewrap cannot
make its namespaces, :class:`Sandbox` refuses every call and ``doctor`` says why.

Folders of its own: ``egress/`` (the egress proxy), ``cgroups/``, ``agent_sandbox/`` (pods) and ``desktop/``.
Imports the pools' rule, observability, protocol and the leaves; no bridge state, nothing above it.
"""

from .call import SandboxCall
from .limits import SandboxLimits
from .result import SandboxBusy, SandboxResult, SandboxUnavailable
from .runner import Sandbox

__all__ = ["Sandbox", "SandboxBusy", "SandboxCall", "SandboxLimits", "SandboxResult", "SandboxUnavailable"]
