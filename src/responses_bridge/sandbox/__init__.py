"""The code interpreter's sandbox: bubblewrap namespaces over a directory that becomes ``/mnt/data``, with limits
on time, memory, processes, file sizes and output. Never a fallback to running code unsandboxed: where bubblewrap
cannot make its namespaces, :class:`Sandbox` refuses every run and ``doctor`` says why.
"""

from .limits import SandboxLimits
from .runner import Sandbox, SandboxResult, SandboxUnavailable

__all__ = ["Sandbox", "SandboxLimits", "SandboxResult", "SandboxUnavailable"]
