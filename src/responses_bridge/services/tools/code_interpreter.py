"""The code interpreter the tool loop drives: a response's container, and each call run in the sandbox over that
container's files (laid out fresh in the call's own /mnt/data, what it changed written back) — the code
interpreter's leaf over the one container → sandbox path (services/containers/runs.py), which the hosted shell shares.

Implements run/tools/code_interpreter.py's :class:`CodeInterpreterService`; the run knows no container storage
and no sandbox, only the outcome of a call (:class:`CodeRun`).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from ...run.tools.code_interpreter import CodeRun, CodeToolOptions
from ...sandbox.backend import SandboxBackend
from ..containers.containers import ContainerService
from ..containers.runs import ContainerRuns


def _code_container(item: Mapping[str, Any]) -> str | None:
    """The container of a conversation's ``code_interpreter_call`` item (None for any other item)."""
    if item.get("type") == "code_interpreter_call" and isinstance(item.get("container_id"), str):
        return str(item["container_id"])
    return None


class CodeInterpreter:
    """The loop's code interpreter (:class:`CodeInterpreterService`) over the process's :class:`ContainerRuns`."""

    def __init__(self, containers: ContainerService, sandbox: SandboxBackend,
                 runs: ContainerRuns | None = None) -> None:
        self.runs = runs or ContainerRuns(containers, sandbox)
        self.containers = containers
        self.sandbox = sandbox

    async def check(self, options: CodeToolOptions, *, tenant: str) -> None:
        """Every refusal, before anything is made: the sandbox cannot run here, the container is not one of the
        tenant's live ones, a file to copy is unknown (400s naming the tool)."""
        await self.runs.check(options, tenant=tenant, tool="code_interpreter", job="python", network=options.network)

    @property
    def unavailable(self) -> str | None:
        return self.sandbox.unavailable

    async def container_for(self, options: CodeToolOptions, history: Sequence[Mapping[str, Any]], *,
                            tenant: str) -> str:
        """The container this response's calls run in: the one named, or for ``auto`` the live one the
        conversation's last code interpreter call used (when it runs under the same network policy), else a new
        one (run/tools/code_interpreter.py)."""
        return await self.runs.container_for(options, history, tenant=tenant, name="code_interpreter auto",
                                             reused=_code_container, network=options.network)

    async def run(self, code: str, container_id: str, *, tenant: str) -> CodeRun:
        """Run ``code`` over the container's files and write back what it changed. Never raises but for
        cancellation: a container gone, the sandbox refusing, a storage failure are the call's failure."""
        ran = await self.runs.run(container_id, tenant=tenant, job="python", work=lambda call: call.run(code))
        if ran.gone:
            return CodeRun(container_id, None, error=f"The container {container_id} has expired or was deleted.")
        if ran.busy is not None:
            return CodeRun(container_id, ran.busy)
        if ran.error is not None or ran.value is None:
            return CodeRun(container_id, None, error=f"The code could not run: {ran.error or 'no result'}.")
        return CodeRun(container_id, ran.value, ran.changed, ran.notes)

    async def skills_note(self, container_id: str, *, tenant: str) -> str:
        """What the tool's description tells the model of the sandbox's limits (one process, no ``/proc``, where
        so) and of the container's skills (protocol/containers/skills_note.py)."""
        skills = await self.runs.skills_note(container_id, tenant=tenant)
        return "\n\n".join(note for note in (self.sandbox.model_note, skills) if note)
