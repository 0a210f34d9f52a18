"""The backend configured but not installed (the ``agent-sandbox`` extra missing): every call refused with the one
line naming the extra, so the bridge still starts and each request that needs code says what to install."""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator, Sequence
from pathlib import Path

from ...observability import metrics
from ..backend import JobKind, Prepare, SandboxSession
from ..egress.policy import NetworkPolicy
from ..limits import SandboxLimits
from ..result import SandboxResult, SandboxUnavailable


class RefusedBackend:
    """Refuses every call with ``reason``."""

    def __init__(self, limits: SandboxLimits, reason: str) -> None:
        self.limits = limits
        self.unavailable: str | None = reason

    @property
    def shell_unavailable(self) -> str | None:
        return self.unavailable

    @property
    def model_note(self) -> str:
        return ""  # no tool that runs code is offered: every call is refused

    def refusal(self, job: JobKind, *, memory_limit: str | None = None, network: bool = False,
                skills: bool = False) -> str | None:
        return self.unavailable

    @contextlib.asynccontextmanager
    async def call(self, *, tenant: str = "", job: JobKind = "python", read_only: Sequence[tuple[Path, str]] = (),
                   network: NetworkPolicy | None = None, prepare: Prepare | None = None,
                   memory_limit: str | None = None) -> AsyncIterator[SandboxSession]:
        metrics.sandbox_run("refused", None, job=job)
        raise SandboxUnavailable(self.unavailable or "no sandbox backend")
        yield  # an async generator: the refusal is raised on entering the call

    async def run(self, code: str, *, tenant: str = "") -> SandboxResult:
        async with self.call(tenant=tenant) as call:
            return await call.run(code)
