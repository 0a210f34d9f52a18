"""What a sandbox call needs, whatever runs it: the one protocol the container path (services/containers/runs.py)
and the tools over it see, with two backends behind it, side by side:

- ``bubblewrap`` (runner.py, call.py): namespaces on this host or in the bridge's container — the default, and the
  single-host path;
- ``agent-sandbox`` (agent_sandbox/): a pod claimed from a kubernetes-sigs/agent-sandbox ``SandboxWarmPool``, its
  files and processes reached through the runtime's file (REST) and process (gRPC) APIs.

Which one runs is chosen in one place (backends.py, from ``RESPONSES_BRIDGE_CODE_SANDBOX_BACKEND``); the turn loop,
the tools and the Containers service never learn which. A call's life is the same on both:

    async with backend.call(tenant=…, job=…, network=…, prepare=…, memory_limit=…) as call:
        ... lay the container's files out under call.data ...       # a directory the bridge writes
        result = await call.run(code, job="python")                 # output taken as it streams, bounded
        ... read call.data back (what the code changed) ...         # the files collected
    # ended: every process gone, the call's files and its claim or namespace with them

A backend that cannot give a call something it asks for (a shell, a memory tier, a network policy, skills) says so
in :meth:`SandboxBackend.refusal` before anything is made — the caller's 400 names what is missing — never
silently.
"""

from __future__ import annotations

import contextlib
from collections.abc import Awaitable, Callable, Sequence
from pathlib import Path
from typing import Any, Literal, Protocol

from .data_threads import T
from .egress.policy import NetworkPolicy
from .identity import SandboxIdentity
from .limits import SandboxLimits
from .result import SandboxResult

JobKind = Literal["python", "shell"]
"""What a call runs: the model's Python as ``__main__``, or a shell job (shell.py: its JSON and records)."""
Prepare = Callable[[], contextlib.AbstractAsyncContextManager[Sequence[tuple[Path, str]]]]
"""Trees to lay out read-only, made once a call is admitted (a container's skills: (host directory, sandbox path))."""


class SandboxSession(Protocol):
    """One started call: its ``/mnt/data`` as a directory the bridge lays files out in and reads them back from,
    and one run in it."""

    @property
    def limits(self) -> SandboxLimits: ...

    @property
    def data(self) -> Path:
        """The call's ``/mnt/data`` as the bridge reaches it (files laid out before :meth:`run` are the code's;
        what the code left there is here once it returns)."""
        ...

    @property
    def identity(self) -> SandboxIdentity:
        """Whose host uid writes into :attr:`data` (services/containers/workspace.py)."""
        ...

    def in_thread(self, function: Callable[..., T], *arguments: Any) -> Awaitable[T]:
        """``function(*arguments)`` in a thread as :attr:`identity` (writing into :attr:`data`); the call keeps
        :attr:`data` reachable until the thread ends, even if its caller was cancelled meanwhile."""
        ...

    def thread(self, function: Callable[..., T], *arguments: Any) -> Awaitable[T]:
        """``function(*arguments)`` in a thread as the bridge (reading :attr:`data` back), kept the same way."""
        ...

    @property
    def deadline(self) -> float:
        """When the call's time is up, the write-back included (the monotonic clock)."""
        ...

    @property
    def seconds_for_code(self) -> float:
        """What the code (or a shell job) may take of the call's time limit."""
        ...

    @property
    def stdout_bytes(self) -> bytes:
        """What was kept of the run's stdout, undecoded (a shell job's records)."""
        ...

    async def run(self, code: str, *, job: JobKind = "python",
                  on_stdout: Callable[[bytes], None] | None = None) -> SandboxResult:
        """Run ``code`` in ``/mnt/data``; when it returns none of its processes is left and :attr:`data` holds
        what it wrote. ``on_stdout``: told of the kept stdout (a shell job's records) as the backend has it —
        as it comes on bubblewrap, per command on agent-sandbox."""
        ...


class SandboxBackend(Protocol):
    """Where calls run. ``unavailable``: why no call can run here (None: they can)."""

    @property
    def limits(self) -> SandboxLimits: ...

    @property
    def unavailable(self) -> str | None: ...

    @property
    def shell_unavailable(self) -> str | None:
        """Why shell jobs cannot run here (None: they can)."""
        ...

    @property
    def model_note(self) -> str:
        """What the code interpreter's description tells the model of what this sandbox cannot do (one process,
        no ``/proc``), so that it stops trying; empty where nothing is worth saying."""
        ...

    def refusal(self, job: JobKind, *, memory_limit: str | None = None, network: bool = False,
                skills: bool = False) -> str | None:
        """Why a call with these needs cannot run here, naming what is missing (None: it can): checked before a
        container is made or a call admitted, so the caller's answer is a 400, not a failed call."""
        ...

    def call(self, *, tenant: str = "", job: JobKind = "python", read_only: Sequence[tuple[Path, str]] = (),
             network: NetworkPolicy | None = None, prepare: Prepare | None = None,
             memory_limit: str | None = None) -> contextlib.AbstractAsyncContextManager[SandboxSession]:
        """A started call, ended on leaving. Raises ``SandboxUnavailable`` (cannot run), ``SandboxBusy`` (no
        room came in time)."""
        ...

    async def run(self, code: str, *, tenant: str = "") -> SandboxResult:
        """``code`` over an empty ``/mnt/data`` (probes and benchmarks, which keep no files)."""
        ...
