"""How the runtime opens what the sandbox backs: the Containers API over the files' bytes (with the containers'
skills, network policies and environment packages), and the code interpreter and hosted shell over it and the
sandbox, whose egress proxy takes the deployment's allowlist settings. Apart from runtime.py, which wires every
service, because this part is the one that checks the machine (bubblewrap, cgroups, scratch directories) at start."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import TYPE_CHECKING

import structlog

from .config.settings import Settings
from .run.server_tools import ServerTools
from .sealing import Sealer
from .services.containers.containers import ContainerService
from .services.containers.network import NetworkPolicies
from .services.files.files import FileService
from .store.base import ContainerStore
from .store.base_skills import SkillStore

if TYPE_CHECKING:
    from .sandbox.egress.proxy import EgressSettings

log = structlog.get_logger("responses_bridge.runtime")


async def open_code_interpreter(settings: Settings, store: ContainerStore, files: FileService,
                                 skills: SkillStore, server_tools: ServerTools, sealer: Sealer) -> ContainerService:
    """The Containers API over the files' bytes storage (with the containers' skills and network policies), and
    the code interpreter and the hosted shell over it and the sandbox (with the egress proxy of allowlist
    policies). The sandbox is checked once here (bubblewrap making its namespaces); where it cannot run, the code
    interpreter is still offered, and refuses each request naming the cause (never code run unsandboxed)."""
    from .protocol.containers.environment_packages import PackageIndexes
    from .sandbox import Sandbox
    from .sandbox.backends import open_backend
    from .sandbox.host import PROC_FIX
    from .sandbox.read_only import sweep_orphans
    from .sandbox.scratch import ScratchUnsafe, scratch_root
    from .sandbox.trees import sweep_stale
    from .services.agents.environments.packages import EnvironmentPackages
    from .services.containers.container_skills import ContainerSkills
    from .services.containers.runs import ContainerRuns
    from .services.tools.code_interpreter import CodeInterpreter
    from .services.tools.hosted_shell import HostedShell

    limits = settings.sandbox_limits()
    workdir = Path(settings.code_workdir) if settings.code_workdir else None  # the skills' cache (skill_cache.py)

    def stored_bytes(tenant: str) -> int | None:
        return settings.tenant_policy(tenant).max_stored_bytes

    containers = ContainerService(store, files.contents, files, file_bytes=limits.file_bytes,
                                  container_bytes=limits.container_bytes,
                                  max_containers=lambda tenant: settings.tenant_policy(tenant).max_containers,
                                  max_stored_bytes=stored_bytes,
                                  skills=ContainerSkills(skills, files.contents, max_stored_bytes=stored_bytes,
                                                         workdir=workdir,
                                                         cache_bytes=settings.code_skills_cache_bytes),
                                  network=NetworkPolicies(sealer, enabled=settings.code_egress_allowlist,
                                                          unrestricted=settings.code_egress_unrestricted))
    await containers.start()
    sandbox = await open_backend(settings, limits, share=lambda tenant: settings.sandbox_share(tenant, limits.slots),
                                 egress=_egress_settings(settings))
    if sandbox.unavailable is not None:
        log.warning("sandbox_unavailable", reason=sandbox.unavailable)
    elif isinstance(sandbox, Sandbox):
        if sandbox.proc_refused is not None:
            log.warning("sandbox_without_proc", cause=sandbox.proc_refused, fix=PROC_FIX)
        if sandbox.shell_unavailable is not None and not sandbox.cgroup_off:
            log.warning("sandbox_shell_unavailable", cause=sandbox.shell_unavailable,
                        cost="code runs as one process: no subprocess, no hosted shell")
        log.info("sandbox_ready", bwrap=sandbox.bwrap, concurrency=limits.slots, mode=sandbox.mode,
                 cgroups=sandbox.cgroups.description if sandbox.cgroups is not None else None,
                 host_uid=sandbox.identity.host_uid, proc=sandbox.proc_refused is None,
                 shell=sandbox.shell_unavailable is None)
    else:
        log.info("sandbox_ready", backend=type(sandbox).__name__, shell=sandbox.shell_unavailable is None)
    swept = await asyncio.to_thread(sweep_stale, workdir)
    if swept:
        log.info("sandbox_workspaces_swept", removed=swept)
    orphans = await asyncio.to_thread(sweep_orphans, workdir)
    if orphans:
        log.info("sandbox_skill_trees_swept", removed=orphans)
    try:  # the skills' trees are made there: a place that is not the bridge's alone is said once, at start
        await asyncio.to_thread(scratch_root, workdir)
    except ScratchUnsafe as error:
        log.warning("sandbox_scratch_unsafe", cause=str(error),
                    fix="remove what stands there, or set RESPONSES_BRIDGE_CODE_WORKDIR to an existing directory "
                        "the bridge may write in")
    indexes = PackageIndexes.parse(settings.package_indexes) if settings.package_indexes.strip() else None
    containers.packages = EnvironmentPackages(containers, sandbox, indexes, workdir=workdir,
                                              cache_bytes=settings.code_skills_cache_bytes)
    runs = ContainerRuns(containers, sandbox)  # one container → sandbox path (and its skills), for both leaves
    server_tools.services.code = CodeInterpreter(containers, sandbox, runs)
    server_tools.services.shell = HostedShell(runs)
    return containers


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
