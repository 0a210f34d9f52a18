"""The code interpreter the tool loop drives: a response's container, and each call run in the sandbox over that
container's files (laid out fresh in the call's own /mnt/data, what it changed written back).

Implements run/tools/code_interpreter.py's :class:`CodeInterpreterService`; the run knows no container storage
and no sandbox, only the outcome of a call (:class:`CodeRun`).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import structlog

from ..protocol.errors import APIError, invalid_request
from ..run.tools.code_interpreter import CodeRun, CodeToolOptions
from ..sandbox import Sandbox, SandboxBusy, SandboxUnavailable
from ..store.records import StoredContainer
from .container_workspace import Workspace
from .containers import ContainerService

log = structlog.get_logger(__name__)


class CodeInterpreter:
    """The loop's code interpreter (:class:`CodeInterpreterService`): the containers and the sandbox, one each per
    process."""

    def __init__(self, containers: ContainerService, sandbox: Sandbox) -> None:
        self.containers = containers
        self.sandbox = sandbox

    async def check(self, options: CodeToolOptions, *, tenant: str) -> None:
        """Every refusal, before anything is made: the sandbox cannot run here, the container is not one of the
        tenant's live ones, a file to copy is unknown (400s naming the tool)."""
        if self.sandbox.unavailable is not None:
            raise APIError(400, f"The code_interpreter tool cannot run on this server: {self.sandbox.unavailable}. "
                           "(`responses-bridge doctor` checks the sandbox.)", param=f"tools[{options.position}]",
                           code="sandbox_unavailable")
        self.containers.network.check_allowed(options.network, f"{options.param}.network_policy")
        if options.container_id is not None:
            if await self.containers.live(options.container_id, tenant=tenant) is None:
                raise invalid_request(f"No such Container: {options.container_id[:200]}", param=options.param,
                                      code="invalid_value")
            return
        for position, file_id in enumerate(options.file_ids):
            if await self.containers.files.get(file_id, tenant=tenant) is None:
                raise invalid_request(f"No such File object: {file_id[:200]}",
                                      param=f"{options.param}.file_ids[{position}]", code="invalid_value")

    @property
    def unavailable(self) -> str | None:
        return self.sandbox.unavailable

    async def container_for(self, options: CodeToolOptions, history: Sequence[Mapping[str, Any]], *,
                            tenant: str) -> str:
        """The container this response's calls run in: the one named, or for ``auto`` the live one the
        conversation's last code interpreter call used (when it runs under the same network policy), else a new
        one (run/tools/code_interpreter.py)."""
        if options.container_id is not None:
            found = await self.containers.live(options.container_id, tenant=tenant)
            if found is None:
                raise invalid_request(f"No such Container: {options.container_id[:200]}", param=options.param,
                                      code="invalid_value")
            return found.id
        if not options.file_ids:
            for item in reversed(history):
                if item.get("type") == "code_interpreter_call" and isinstance(item.get("container_id"), str):
                    previous = await self.containers.live(item["container_id"], tenant=tenant)
                    if previous is not None and self._same_network(previous, options):
                        return previous.id
                    break
        made = await self.containers.new_container("code_interpreter auto", tenant=tenant,
                                                   memory_limit=options.memory_limit, file_ids=options.file_ids,
                                                   param=f"{options.param}.file_ids", network=options.network)
        return made.id

    def _same_network(self, container: StoredContainer, options: CodeToolOptions) -> bool:
        try:
            return self.containers.network.opened(container) == options.network
        except (APIError, ValueError):
            return False

    async def run(self, code: str, container_id: str, *, tenant: str) -> CodeRun:
        """Run ``code`` over the container's files and write back what it changed. Never raises but for
        cancellation: a container gone, the sandbox refusing, a storage failure are the call's failure."""
        container = await self.containers.live(container_id, tenant=tenant)
        if container is None:
            return CodeRun(container_id, None, error=f"The container {container_id} has expired or was deleted.")
        try:
            network = self.containers.network.opened(container)
        except (APIError, ValueError):
            return CodeRun(container_id, None, error="The code could not run: the container's network policy could "
                           "not be opened (its secrets were sealed with another key than this server's).")
        try:
            async with self.containers.lock(container.id), self.sandbox.call(tenant=tenant, network=network) as call:
                space = Workspace(self.containers, container, tenant, call.data)
                await space.lay_out()
                result = await call.run(code)
                changed, notes = await space.write_back()
        except SandboxBusy as busy:
            return CodeRun(container_id, busy.result)
        except SandboxUnavailable as refused:
            return CodeRun(container_id, None, error=f"The code could not run: the sandbox is unavailable "
                           f"({refused}).")
        except OSError as error:
            log.warning("code_interpreter_storage_failed", error=str(error))
            return CodeRun(container_id, None, error=f"The code could not run: the container's files could not be "
                           f"laid out ({error.strerror or type(error).__name__}).")
        await self.containers.touch(container_id, tenant=tenant)
        return CodeRun(container_id, result, changed, notes)
