"""The hosted shell the tool loop drives: the shell's leaf over the one container → sandbox path
(services/containers/runs.py) the code interpreter also takes, so a shell call gets the same container files, isolation
and limits, and whatever that path adds to a call's tree.

Implements run/tools/shell.py's :class:`HostedShellService`; the run knows no container storage and no sandbox,
only the outcome of a call (:class:`ShellRun`).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Awaitable, Callable, Mapping, Sequence
from typing import Any

from ...run.tools.shell import ShellRun, ShellToolOptions, shell_job
from ...sandbox.shell import Printed, run_shell
from ..containers.container_skills import ResolvedSkill
from ..containers.runs import ContainerRuns


def _shell_container(item: Mapping[str, Any]) -> str | None:
    """The container of a conversation's hosted ``shell_call`` item (None for any other item)."""
    environment = item.get("environment")
    if item.get("type") == "shell_call" and isinstance(environment, dict) \
            and environment.get("type") == "container_reference" and isinstance(environment.get("container_id"), str):
        return str(environment["container_id"])
    return None


class HostedShell:
    """The loop's hosted shell (:class:`HostedShellService`) over the process's :class:`ContainerRuns`."""

    def __init__(self, runs: ContainerRuns) -> None:
        self.runs = runs
        # a container's variables for every command (an Agents API environment's ``env``:
        # services/agents/environments/hosted.py)
        self.env_for: Callable[[str, str], Awaitable[Mapping[str, str]]] | None = None

    async def check(self, options: ShellToolOptions, *, tenant: str) -> list[ResolvedSkill]:
        """Every refusal, before anything is made: shell cannot run here (no sandbox, or the single-process
        mode), an allowlist network policy where the deployment allows none, the container, a file or a skill is
        unknown (400s naming the field, never a silent drop)."""
        return await self.runs.check(options, tenant=tenant, tool="shell", job="shell",
                                     skills=self._skills(options), network=options.network)

    async def container_for(self, options: ShellToolOptions, history: Sequence[Mapping[str, Any]], *,
                            tenant: str, checked: object = None) -> str:
        """The container this response's shell calls run in: the one referenced, or for ``container_auto`` the
        live one the conversation's last hosted shell call used, else a new one, with the skills :meth:`check`
        resolved (``checked``; resolved here when the check was not made)."""
        skills = checked if isinstance(checked, list) else await self.runs.containers.resolve_skills(
            self._skills(options), tenant=tenant, param=f"{options.param}.skills")
        return await self.runs.container_for(options, history, tenant=tenant, name="shell container_auto",
                                             reused=_shell_container, skills=skills, network=options.network)

    @staticmethod
    def _skills(options: ShellToolOptions) -> list[dict[str, Any]] | None:
        """``container_auto.skills`` for the container path (None: none asked for; a referenced container keeps
        the skills it was made with)."""
        return list(options.skills) if options.skills and options.container_id is None else None

    async def skills_note(self, container_id: str, *, tenant: str) -> str:
        """What the tool's description tells the model of a container's skills (protocol/containers/skills_note.py)."""
        return await self.runs.skills_note(container_id, tenant=tenant)

    async def run(self, action: Mapping[str, Any], container_id: str, *, tenant: str,
                  printed: Printed | None = None) -> ShellRun:
        """Run the call's commands over the container's files, in one sandbox call, and write back what they
        changed. Never raises but for cancellation: a container gone, the sandbox refusing, a storage failure
        are the call's failure."""
        job = shell_job(action)
        if self.env_for is not None:
            job = dataclasses.replace(job, env=await self.env_for(container_id, tenant))
        commands = [command for command in action.get("commands") or () if isinstance(command, str)]
        dropped = len(commands) - len(job.commands)
        if not job.commands:
            return ShellRun(container_id, [], [], dropped_commands=dropped)
        ran = await self.runs.run(container_id, tenant=tenant, job="shell",
                                  work=lambda call: run_shell(call, job, printed))
        if ran.gone:
            return ShellRun(container_id, job.commands, None,
                            error=f"The container {container_id} has expired or was deleted.")
        if ran.busy is not None:
            return ShellRun(container_id, job.commands, None, ran.busy, error=ran.busy.note)
        if ran.error is not None or ran.value is None:
            return ShellRun(container_id, job.commands, None,
                            error=f"The commands could not run: {ran.error or 'no result'}.")
        outputs, result = ran.value
        return ShellRun(container_id, job.commands, outputs, result, ran.changed, ran.notes,
                        dropped_commands=dropped)
