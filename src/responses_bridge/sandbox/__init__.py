"""The code interpreter's sandbox: bubblewrap namespaces whose init holds each call together, with one budget per
call (memory across all its processes and in-memory files, disk, processes, time, output, a fairly shared slot),
and nothing of a call left once it ends. Never a fallback to running code unsandboxed: where bubblewrap cannot
make its namespaces, :class:`Sandbox` refuses every call and ``doctor`` says why.

Folders of its own: ``egress/`` (the egress proxy), ``cgroups/``, ``agent_sandbox/`` (pods) and ``desktop/``.
Imports the pools' rule, observability, protocol and the leaves; no bridge state, nothing above it.

The names below are loaded on first use (PEP 562): a light module of the package (``limits``, ``host``,
``result``: what the settings, the run's tool leaves and the start-up check read) is imported without the runner,
its calls and the egress proxy, which an idle sidecar never loads (tests/unit/test_idle_imports.py).
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from .call import SandboxCall
    from .limits import SandboxLimits
    from .result import SandboxBusy, SandboxResult, SandboxUnavailable
    from .runner import Sandbox

__all__ = ["Sandbox", "SandboxBusy", "SandboxCall", "SandboxLimits", "SandboxResult", "SandboxUnavailable"]

_HOMES = {"Sandbox": ".runner", "SandboxBusy": ".result", "SandboxCall": ".call", "SandboxLimits": ".limits",
          "SandboxResult": ".result", "SandboxUnavailable": ".result"}


def __getattr__(name: str) -> Any:
    home = _HOMES.get(name)
    if home is None:  # not one of ours: the import system then looks for a submodule of that name
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    return getattr(importlib.import_module(home, __name__), name)
