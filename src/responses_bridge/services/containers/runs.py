"""The one path from a container to a sandbox call, for every tool that runs something in a container: the code
interpreter (services/tools/code_interpreter.py) and the hosted shell (services/tools/hosted_shell.py) are two leaves
over it.

    runs = ContainerRuns(containers, sandbox)
    resolved = await runs.check(choice, tenant=…, tool="shell", job="shell", skills=…, network=…)  # the 400s
    container_id = await runs.container_for(choice, history, tenant=…, name=…, reused=…, skills=resolved, …)
    note = await runs.skills_note(container_id, tenant=…)               # for the tool's description
    ran = await runs.run(container_id, tenant=…, job="shell", work=lambda call: …)   # never raises but cancel

A run holds the container's lock (one run at a time per container on a replica: the files are laid out and written
back whole), lays the container's skills out read-only at ``/mnt/skills/<name>/``
(container_skills.py) and an agent environment's packages at ``/mnt/packages``
(services/agents/environments/packages.py), takes a sandbox slot, lays the container's files out in the call's
``/mnt/data``, does the leaf's ``work`` in the started call under the container's network policy (its egress proxy:
sandbox/egress/proxy.py; none: no network at all), and writes back what changed (workspace.py). Whatever a
call's tree gets besides the container's files — read-only trees such as skills, a way out through the egress proxy — is
added here, so every leaf gets it by construction.
"""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Generic, Protocol, TypeVar

import structlog

from ...protocol.errors import APIError, invalid_request
from ...sandbox import SandboxBusy, SandboxResult, SandboxUnavailable
from ...sandbox.backend import JobKind, SandboxBackend, SandboxSession
from ...sandbox.egress.policy import NetworkPolicy
from ...store.records import StoredContainer, StoredContainerFile
from .container_skills import ResolvedSkill
from .containers import ContainerService
from .workspace import Workspace

log = structlog.get_logger(__name__)

T = TypeVar("T")


class ContainerChoice(Protocol):
    """What a tool's request says of its container: an existing one (``container_id``), or one made for the
    response with ``file_ids`` copied in; ``param`` names the field in a 400, ``position`` the tool."""

    @property
    def position(self) -> int: ...

    @property
    def param(self) -> str: ...

    @property
    def container_id(self) -> str | None: ...

    @property
    def file_ids(self) -> tuple[str, ...]: ...

    @property
    def memory_limit(self) -> str | None: ...


@dataclass(slots=True)
class ContainerRun(Generic[T]):
    """One run's outcome: the leaf's ``value``, the files it made or changed and notes on files not kept; or why it
    did not run (``busy``: no sandbox slot came in time, its refusal; ``error``: the sandbox or the storage failed,
    a sentence; ``gone``: the container expired or was deleted)."""

    value: T | None = None
    changed: list[StoredContainerFile] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    busy: SandboxResult | None = None
    error: str | None = None
    gone: bool = False


class ContainerRuns:
    """The containers and the sandbox, one each per process, as the tools that run in containers use them. The
    sandbox is a backend (sandbox/backend.py): bubblewrap here, or pods claimed from agent-sandbox; this path never
    learns which."""

    def __init__(self, containers: ContainerService, sandbox: SandboxBackend) -> None:
        self.containers = containers
        self.sandbox = sandbox

    def unavailable(self, job: JobKind) -> str | None:
        """Why a ``job`` cannot run on this machine (None: it can)."""
        return self.sandbox.shell_unavailable if job == "shell" else self.sandbox.unavailable

    async def check(self, choice: ContainerChoice, *, tenant: str, tool: str, job: JobKind,
                    skills: object = None, network: NetworkPolicy | None = None) -> list[ResolvedSkill]:
        """Every refusal, before anything is made: the sandbox cannot run the job here, an allowlist ``network``
        policy where the deployment allows none, the container is not one of the tenant's live ones, a file to
        copy is unknown, a skill for a new container is unknown or not a skill (400s and 404s naming the tool and
        the field). Returns the new container's skills, resolved, for :meth:`container_for`."""
        named = None if choice.container_id is None else await self.containers.live(choice.container_id,
                                                                                  tenant=tenant)
        reason = self.sandbox.refusal(job, memory_limit=named.memory_limit if named else choice.memory_limit,
                                      network=network is not None, skills=bool(skills))
        if reason is not None:
            raise APIError(400, f"The {tool} tool cannot run on this server: {reason}. "
                           "(`responses-bridge doctor` checks the sandbox.)", param=f"tools[{choice.position}]",
                           code="sandbox_unavailable")
        self.containers.network.check_allowed(network, f"{choice.param}.network_policy")
        if choice.container_id is not None:
            if named is None:
                raise invalid_request(f"No such Container: {choice.container_id[:200]}", param=choice.param,
                                      code="invalid_value")
            return []
        for position, file_id in enumerate(choice.file_ids):
            if await self.containers.files.get(file_id, tenant=tenant) is None:
                raise invalid_request(f"No such File object: {file_id[:200]}",
                                      param=f"{choice.param}.file_ids[{position}]", code="invalid_value")
        return await self.containers.resolve_skills(skills, tenant=tenant, param=f"{choice.param}.skills")

    async def container_for(self, choice: ContainerChoice, history: Sequence[Mapping[str, Any]], *, tenant: str,
                            name: str, reused: Callable[[Mapping[str, Any]], str | None],
                            skills: Sequence[ResolvedSkill] = (), network: NetworkPolicy | None = None) -> str:
        """The container a response's calls run in: the one named; else (no files to copy) the live container
        the conversation's last call of the tool used (``reused`` reads it off an item, None for other items), so
        a chat keeps its files, when it holds the skills asked for (the same names and descriptions, in order)
        and runs under the same network policy; else a new one named ``name``, made with ``skills`` (as
        :meth:`check` resolved them) and ``network``."""
        if choice.container_id is not None:
            found = await self.containers.live(choice.container_id, tenant=tenant)
            if found is None:
                raise invalid_request(f"No such Container: {choice.container_id[:200]}", param=choice.param,
                                      code="invalid_value")
            return found.id
        if not choice.file_ids:
            for item in reversed(history):
                previous_id = reused(item)
                if previous_id is not None:
                    previous = await self.containers.live(previous_id, tenant=tenant)
                    if previous is not None and self._same_network(previous, network) \
                            and await self._same_skills(previous.id, skills, tenant):
                        return previous.id
                    break
        made = await self.containers.new_container(name, tenant=tenant, memory_limit=choice.memory_limit,
                                                   file_ids=choice.file_ids, param=f"{choice.param}.file_ids",
                                                   skills=skills, network=network)
        return made.id

    def _same_network(self, container: StoredContainer, network: NetworkPolicy | None) -> bool:
        try:
            return self.containers.network.opened(container) == network
        except (APIError, ValueError):
            return False

    async def _same_skills(self, container_id: str, wanted: Sequence[ResolvedSkill], tenant: str) -> bool:
        """Whether a container to go on with holds the skills a request asks for (by name and description: a
        chat that keeps its tool keeps its container; one that changes its skills gets a new container)."""
        skills = self.containers.skills
        held = await skills.container_skills(container_id, tenant=tenant) if skills is not None else []
        return [(skill.name, skill.description) for skill in held] == \
            [(skill.name, skill.description) for skill in wanted]

    def _skills(self, container_id: str, tenant: str) -> contextlib.AbstractAsyncContextManager[
            list[tuple[Path, str]]]:
        """The container's skills laid out read-only for one call (``/mnt/skills/<name>/``), none without."""
        skills = self.containers.skills
        if skills is None:
            return contextlib.nullcontext([])
        return skills.laid_out(container_id, tenant=tenant)

    @contextlib.asynccontextmanager
    async def _trees(self, container: StoredContainer, tenant: str) -> AsyncIterator[list[tuple[Path, str]]]:
        """Every read-only tree of one call: the container's skills, and the packages installed at its start
        (``/mnt/packages``: services/agents/environments/packages.py)."""
        packages = self.containers.packages
        installed: contextlib.AbstractAsyncContextManager[list[tuple[Path, str]]] = \
            packages.laid_out(container) if packages is not None else contextlib.nullcontext([])
        async with self._skills(container.id, tenant) as skills, installed as trees:
            yield [*skills, *trees]

    async def skills_note(self, container_id: str, *, tenant: str) -> str:
        """What a tool's description tells the model of the container's skills (protocol/containers/skills_note.py)."""
        skills = self.containers.skills
        return await skills.note(container_id, tenant=tenant) if skills is not None else ""

    async def run(self, container_id: str, *, tenant: str, job: JobKind,
                  work: Callable[[SandboxSession], Awaitable[T]]) -> ContainerRun[T]:
        """Lay the container's files out in a sandbox call, do ``work`` in it, write back what changed. Never
        raises but for cancellation (and for what ``work`` itself raises)."""
        container = await self.containers.live(container_id, tenant=tenant)
        if container is None:
            return ContainerRun(gone=True)
        try:
            network = self.containers.network.opened(container)
        except (APIError, ValueError):
            return ContainerRun(error="the container's network policy could not be opened (its secrets were sealed "
                                      "with another key than this server's)")
        try:
            async with self.containers.lock(container.id), self.sandbox.call(
                    tenant=tenant, job=job, network=network,  # skills unpacked once the call has its slot
                    prepare=lambda: self._trees(container, tenant), memory_limit=container.memory_limit) as call:
                space = Workspace(self.containers, container, tenant, call.data, owner=call)
                await space.lay_out()
                value = await work(call)
                changed, notes = await space.write_back(deadline=call.deadline)
        except SandboxBusy as busy:
            return ContainerRun(busy=busy.result)
        except SandboxUnavailable as refused:
            return ContainerRun(error=f"the sandbox is unavailable ({refused})")
        except APIError as refused:  # a stored skill that no longer reads as one
            return ContainerRun(error=f"the container's skills could not be laid out ({refused.message})")
        except OSError as error:
            log.warning("container_run_storage_failed", job=job, error=str(error))
            return ContainerRun(error=f"the container's files could not be laid out "
                                      f"({error.strerror or type(error).__name__})")
        await self.containers.touch(container_id, tenant=tenant)
        return ContainerRun(value, changed, notes)
