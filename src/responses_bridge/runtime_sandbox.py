"""How the runtime opens what the sandbox backs: the Containers API over the files' bytes (with the containers'
skills, network policies and environment packages), the Skills API, and the code interpreter and hosted shell over
the containers and the sandbox, whose egress proxy takes the deployment's allowlist settings.

None of it is imported by a sidecar no request has asked for it (tests/unit/test_idle_imports.py): the services
are built on first use — the first request under ``/containers`` or ``/skills`` (adapters/http/app.py), the first
request with a ``code_interpreter`` or hosted ``shell`` tool (:class:`LazyCodeInterpreter`,
:class:`LazyHostedShell` stand in the tool loop's services until then), the first caller of
:attr:`SandboxServices.containers` (the Agents API). What ``serve`` must say at start it still says: the host's
sandbox is checked in a process of its own (sandbox/doctor.py ``start_check``: ``sandbox_unavailable`` and the
other lines, as before), which also sweeps what a stopped process left of its trees; and the containers a
stopped process left to expire are purged at start when the store holds any container (one row read), which then
opens everything here at once, as does the ``agent-sandbox`` backend, whose start checks the cluster.
"""

from __future__ import annotations

import asyncio
import json
import sys
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import structlog

from .config.settings import Settings
from .process.off_loop_import import import_off_loop
from .run.server_tools import ServerTools
from .run.tools.code_interpreter import CodeRun, CodeToolOptions
from .run.tools.shell import ShellRun, ShellToolOptions
from .sealing import Sealer
from .services.files.files import FileService
from .store.base import ContainerStore
from .store.base_skills import SkillStore

if TYPE_CHECKING:
    from .run.tools.shell import Printed
    from .sandbox.backend import SandboxBackend
    from .sandbox.egress.proxy import EgressSettings
    from .services.containers.containers import ContainerService
    from .services.containers.skills import SkillService
    from .services.tools.code_interpreter import CodeInterpreter
    from .services.tools.hosted_shell import HostedShell

log = structlog.get_logger("responses_bridge.runtime")

EVERY_CONTAINER = 1 << 62
"""A time past every container's expiry: ``expired_containers(EVERY_CONTAINER, 1)`` is any stored container."""


class SandboxServices:
    """The Containers and Skills APIs and the tools that run code, built on first use (:meth:`open`, or
    :attr:`containers` for a caller that cannot wait), once per process."""

    def __init__(self, settings: Settings, store: ContainerStore, skill_store: SkillStore, files: FileService,
                 server_tools: ServerTools, sealer: Sealer) -> None:
        self.settings = settings
        self._store = store
        self._skill_store = skill_store
        self._files = files
        self._server_tools = server_tools
        self._sealer = sealer
        self._containers: ContainerService | None = None
        self._skills: SkillService | None = None
        self._code: CodeInterpreter | None = None
        self._shell: HostedShell | None = None
        self._opening: asyncio.Lock | None = None
        self._checked = False  # the start check (its own process) said what the sandbox is, swept what was left
        self._said_unavailable = False  # the start check logged sandbox_unavailable
        self._started = False  # the containers' purge of expired ones started
        self._purging: asyncio.Task[None] | None = None  # containers.start(), when built without waiting
        self._given = False  # built by the caller (:meth:`given`): nothing to open

    @classmethod
    def given(cls, settings: Settings, containers: ContainerService, skills: SkillService, files: FileService,
              server_tools: ServerTools, sealer: Sealer) -> SandboxServices:
        """Services the caller built (a runtime assembled by hand, without a sandbox): nothing is opened, and
        the tool loop's code interpreter and hosted shell stay what ``server_tools`` has."""
        services = cls(settings, containers.store, skills.store, files, server_tools, sealer)
        services._containers, services._skills, services._given = containers, skills, True
        return services

    @classmethod
    async def start(cls, settings: Settings, store: ContainerStore, skill_store: SkillStore, files: FileService,
                    server_tools: ServerTools, sealer: Sealer) -> SandboxServices:
        """The services, unbuilt, after the start's checks: everything opened at once where the store holds a
        container (the purge of those a stopped process left to expire, and its periodic purge) or the backend
        is ``agent-sandbox``; else the host's sandbox checked in a process of its own."""
        services = cls(settings, store, skill_store, files, server_tools, sealer)
        server_tools.services.code = LazyCodeInterpreter(services)  # served, as before: built by the first call
        server_tools.services.shell = LazyHostedShell(services)
        if settings.code_sandbox_backend == "agent-sandbox" or await store.expired_containers(EVERY_CONTAINER, 1):
            await services.open()
        else:
            await services.check_at_start()
        return services

    # --- what the doors and the tools read ------------------------------------------------------------------------

    @property
    def opened(self) -> bool:
        """Whether the sandbox and the tools over it are built (the first use came, or the start needed them)."""
        return self._code is not None

    @property
    def built_code(self) -> CodeInterpreter | None:
        """The code interpreter once :meth:`open` built it; None before."""
        return self._code

    @property
    def containers(self) -> ContainerService:
        """The Containers API's service, everything here opened on the event loop if no caller opened it yet
        (the sandbox detected in place): for a caller that cannot await :meth:`open`."""
        if self._containers is None or (self._code is None and not self._given):
            self._open_now()
        assert self._containers is not None
        return self._containers

    @property
    def skills(self) -> SkillService:
        """The Skills API's service (light: the store and the files' bytes), built by its first reader."""
        if self._skills is None:
            from .services.containers.skills import SkillService

            settings = self.settings
            self._skills = SkillService(self._skill_store, self._files.contents,
                                        max_stored_bytes=lambda tenant: settings.tenant_policy(tenant).max_stored_bytes)
        return self._skills

    async def containers_api(self) -> ContainerService:
        """The Containers API's service alone (imported off the event loop, its expired containers purged), built
        by the first caller; the sandbox is not detected for it."""
        if self._containers is None:
            await import_off_loop(".services.containers.containers", __package__)
            await self._start_containers(self._build_containers())
        assert self._containers is not None
        return self._containers

    async def open(self) -> ContainerService:
        """Everything here, built by the first caller (imported off the event loop); later callers wait for it."""
        if self._containers is not None and (self._code is not None or self._given):
            return self._containers
        if self._opening is None:
            self._opening = asyncio.Lock()
        async with self._opening:
            if self._code is None:
                await import_off_loop(".services.tools.hosted_shell", __package__)
                await import_off_loop(".services.agents.environments.packages", __package__)
                from .sandbox.backends import open_backend

                containers = self._build_containers()
                await self._start_containers(containers)
                limits = self.settings.sandbox_limits()
                sandbox = await open_backend(self.settings, limits, egress=_egress_settings(self.settings),
                                             share=lambda tenant: self.settings.sandbox_share(tenant, limits.slots))
                if self._code is not None:  # a reader of :attr:`containers` built it meanwhile, without waiting
                    return containers
                if not self._checked:  # opened at start: what the start check would have said
                    from .sandbox.doctor import sweep_left

                    _relay([*_readiness(sandbox, limits.slots), *await asyncio.to_thread(sweep_left, self._workdir)])
                self._build_tools(containers, sandbox)
        assert self._containers is not None
        return self._containers

    async def code(self) -> CodeInterpreter:
        await self.open()
        assert self._code is not None
        return self._code

    async def shell(self) -> HostedShell:
        await self.open()
        assert self._shell is not None
        return self._shell

    async def aclose(self) -> None:
        if self._purging is not None:
            await asyncio.gather(self._purging, return_exceptions=True)
        if self._containers is not None:
            await self._containers.aclose()

    # --- start ----------------------------------------------------------------------------------------------------

    async def check_at_start(self) -> None:
        """The host's sandbox detected and proved as :meth:`open` will, in a process of its own (none of the
        sandbox imported here), and what a stopped process left of its trees swept there: its lines logged as
        this process's own (``sandbox_unavailable`` with its reason, ``sandbox_ready``, …)."""
        settings = self.settings
        limits = settings.sandbox_limits()
        spec = {"limits": {"timeout": limits.timeout, "memory_bytes": limits.memory_bytes,
                           "processes": limits.processes, "file_bytes": limits.file_bytes,
                           "container_bytes": limits.container_bytes, "output_bytes": limits.output_bytes,
                           "concurrency": limits.slots, "cpus": limits.cpus},
                "use_cgroup": settings.code_cgroup, "require_cgroup": settings.code_require_cgroup,
                "uid": settings.code_sandbox_uid, "gid": settings.code_sandbox_gid,
                "workdir": settings.code_workdir}
        process = await asyncio.create_subprocess_exec(
            sys.executable, "-m", "responses_bridge.sandbox.doctor", stdin=asyncio.subprocess.PIPE,
            stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE)
        out, err = await process.communicate(json.dumps(spec).encode())
        try:
            events = json.loads(out) if process.returncode == 0 else None
        except ValueError:
            events = None
        if events is None:  # the check itself failed: said, and the sandbox is detected again by its first use
            said = err.decode(errors="replace").strip().splitlines()
            log.warning("sandbox_check_failed", status=process.returncode, said=said[-1] if said else "")
            return
        relayed = [(str(level), str(event), dict(fields)) for level, event, fields in events]
        _relay(relayed)
        self._checked = True
        self._said_unavailable = any(event == "sandbox_unavailable" for _, event, _ in relayed)

    # --- building -------------------------------------------------------------------------------------------------

    @property
    def _workdir(self) -> Path | None:
        return Path(self.settings.code_workdir) if self.settings.code_workdir else None  # skills' cache too

    def _build_containers(self) -> ContainerService:
        from .services.containers.container_skills import ContainerSkills
        from .services.containers.containers import ContainerService
        from .services.containers.network import NetworkPolicies

        settings, files = self.settings, self._files
        limits = settings.sandbox_limits()

        def stored_bytes(tenant: str) -> int | None:
            return settings.tenant_policy(tenant).max_stored_bytes

        if self._containers is None:
            self._containers = ContainerService(
                self._store, files.contents, files, file_bytes=limits.file_bytes,
                container_bytes=limits.container_bytes,
                max_containers=lambda tenant: settings.tenant_policy(tenant).max_containers,
                max_stored_bytes=stored_bytes,
                skills=ContainerSkills(self._skill_store, files.contents, max_stored_bytes=stored_bytes,
                                       workdir=self._workdir, cache_bytes=settings.code_skills_cache_bytes),
                network=NetworkPolicies(self._sealer, enabled=settings.code_egress_allowlist,
                                        unrestricted=settings.code_egress_unrestricted))
        return self._containers

    async def _start_containers(self, containers: ContainerService) -> None:
        if not self._started:
            self._started = True
            await containers.start()

    def _build_tools(self, containers: ContainerService, sandbox: SandboxBackend) -> None:
        """The environments' packages, and the code interpreter and the hosted shell over one container →
        sandbox path (services/containers/runs.py), put in the tool loop's services in place of the lazy ones."""
        from .protocol.containers.environment_packages import PackageIndexes
        from .services.agents.environments.packages import EnvironmentPackages
        from .services.containers.runs import ContainerRuns
        from .services.tools.code_interpreter import CodeInterpreter
        from .services.tools.hosted_shell import HostedShell

        settings = self.settings
        indexes = PackageIndexes.parse(settings.package_indexes) if settings.package_indexes.strip() else None
        containers.packages = EnvironmentPackages(containers, sandbox, indexes, workdir=self._workdir,
                                                  cache_bytes=settings.code_skills_cache_bytes)
        runs = ContainerRuns(containers, sandbox)  # one container → sandbox path (and its skills), for both leaves
        self._shell = HostedShell(runs)
        self._code = CodeInterpreter(containers, sandbox, runs)
        if self._checked and not self._said_unavailable and sandbox.unavailable is not None:  # could at start
            log.warning("sandbox_unavailable", reason=sandbox.unavailable)
        self._server_tools.services.code = self._code
        self._server_tools.services.shell = self._shell

    def _open_now(self) -> None:
        """:meth:`open` without waiting: imported and detected on the event loop, the purge of expired
        containers started in the background. The ``agent-sandbox`` backend was opened at start (:meth:`start`)."""
        from .sandbox.identity import SandboxIdentity
        from .sandbox.runner import Sandbox

        containers = self._build_containers()
        if self._code is not None:
            return
        if not self._started:
            self._started = True
            self._purging = asyncio.get_running_loop().create_task(containers.start())
        settings = self.settings
        limits = settings.sandbox_limits()
        sandbox = Sandbox.detect(limits, use_cgroup=settings.code_cgroup, require_cgroup=settings.code_require_cgroup,
                                 share=lambda tenant: settings.sandbox_share(tenant, limits.slots),
                                 egress=_egress_settings(settings),
                                 identity=SandboxIdentity.for_process(settings.code_sandbox_uid,
                                                                      settings.code_sandbox_gid))
        if not self._checked:
            from .sandbox.doctor import sweep_left

            _relay([*_readiness(sandbox, limits.slots), *sweep_left(self._workdir)])
        self._build_tools(containers, sandbox)


class LazyCodeInterpreter:
    """The code interpreter until its first use (run/tools/code_interpreter.py's ``CodeInterpreterService``): each
    call opens the sandbox's services (:meth:`SandboxServices.open`) and hands over to the real one, which then
    takes this one's place in the tool loop's services."""

    def __init__(self, services: SandboxServices) -> None:
        self._services = services

    @property
    def unavailable(self) -> str | None:
        """None until the first use detects the sandbox (its start check said so in the log; a request
        for the tool is then refused by the real one, naming why)."""
        built = self._services.built_code
        return built.unavailable if built is not None else None

    async def check(self, options: CodeToolOptions, *, tenant: str) -> None:
        await (await self._services.code()).check(options, tenant=tenant)

    async def container_for(self, options: CodeToolOptions, history: Sequence[Mapping[str, Any]], *,
                            tenant: str) -> str:
        return await (await self._services.code()).container_for(options, history, tenant=tenant)

    async def run(self, code: str, container_id: str, *, tenant: str) -> CodeRun:
        return await (await self._services.code()).run(code, container_id, tenant=tenant)

    async def skills_note(self, container_id: str, *, tenant: str) -> str:
        return await (await self._services.code()).skills_note(container_id, tenant=tenant)


class LazyHostedShell:
    """The hosted shell until its first use (run/tools/shell.py's ``HostedShellService``), as
    :class:`LazyCodeInterpreter` is the code interpreter."""

    def __init__(self, services: SandboxServices) -> None:
        self._services = services

    async def check(self, options: ShellToolOptions, *, tenant: str) -> object:
        return await (await self._services.shell()).check(options, tenant=tenant)

    async def container_for(self, options: ShellToolOptions, history: Sequence[Mapping[str, Any]], *,
                            tenant: str, checked: object = None) -> str:
        return await (await self._services.shell()).container_for(options, history, tenant=tenant, checked=checked)

    async def run(self, action: Mapping[str, Any], container_id: str, *, tenant: str,
                  printed: Printed | None = None) -> ShellRun:
        return await (await self._services.shell()).run(action, container_id, tenant=tenant, printed=printed)

    async def skills_note(self, container_id: str, *, tenant: str) -> str:
        return await (await self._services.shell()).skills_note(container_id, tenant=tenant)


def _readiness(sandbox: SandboxBackend, slots: int) -> list[tuple[str, str, dict[str, Any]]]:
    from .sandbox.doctor import readiness_events

    return readiness_events(sandbox, slots)


def _relay(events: list[tuple[str, str, dict[str, Any]]]) -> None:
    """The sandbox's start-up lines, logged by this process (a warning stays a warning)."""
    for level, event, fields in events:
        getattr(log, level if level in ("debug", "info", "warning", "error") else "info")(event, **fields)


def _egress_settings(settings: Settings) -> EgressSettings | None:
    """From ``RESPONSES_BRIDGE_CODE_EGRESS_*``: the deployment's side of every allowlist network policy (where the
    proxy may connect, its bounds); None when the deployment allows no allowlist policy."""
    if not settings.code_egress_allowlist:
        return None
    from .sandbox.egress.limits import EgressLimits
    from .sandbox.egress.policy import EgressRules
    from .sandbox.egress.proxy import EgressSettings  # with the sandbox: only where code may run

    return EgressSettings(EgressRules.parse(settings.code_egress_allowed_targets), EgressLimits(
        call_bytes=settings.code_egress_max_bytes, connection_bytes=settings.code_egress_connection_bytes,
        connections=settings.code_egress_max_connections,
        connection_seconds=settings.code_egress_connection_timeout,
        bridge_connections=settings.code_egress_bridge_connections,
        tenant_connections=settings.code_egress_tenant_connections, single_tenant=settings.auth == "none"))
