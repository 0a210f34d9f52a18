"""What an ``openai_hosted`` environment is given before the agent starts, and its live files after.

:func:`place_files` writes the environment's ``files`` into its container (inline bytes decoded, a ``file_id``
copied from the Files API: deleting either later leaves the other), each at its ``/workspace`` path, which is the
container's ``/mnt/data`` (protocol/containers/environment_fields.py). :func:`run_setup` runs the ``setup_commands`` in
order on the hosted shell over the container, each in its own sandbox call with the environment's ``env`` exported and
in its ``cwd``: the first that does not exit 0 fails the environment (a 400 naming the command's index and its exit
code; neither a command's body nor its output is returned, logged or stored, as they may carry what ``env`` holds).
:func:`list_files` and :func:`upload` are ``/v1/agents/environments/{id}/files``.
"""

from __future__ import annotations

import base64
import contextlib
import shlex
from collections.abc import AsyncIterator, Mapping
from typing import Any, Protocol

from ....protocol.containers.environment_fields import (
    DATA_DIR,
    WORKSPACE,
    check_files,
    check_workspace_path,
    container_path,
    workspace_path,
)
from ....protocol.containers.environments import HostedPlan
from ....protocol.errors import APIError, invalid_request
from ....sealing import Sealer
from ....store.base_agents import AgentStore
from ....store.records import StoredContainer, StoredContainerFile
from ...containers.containers import ContainerService

ENVIRONMENT = "environment"  # the agents' store's kind of an environment's record
ENV_PURPOSE = "environment_env"
UNCLAIMED = "environment_unclaimed"  # a standalone environment no session took yet (its id, nothing else)
READ_CHUNK = 1 << 20
MAX_LIST_LIMIT = 100
SCAN_LIMIT = 100
MAX_SETUP_FILES = 1000


class SetupShell(Protocol):
    """The hosted shell (services/tools/hosted_shell.py's ``HostedShell``), as setup commands use it."""

    async def run(self, action: Mapping[str, Any], container_id: str, *, tenant: str) -> Any: ...


async def _once(data: bytes) -> AsyncIterator[bytes]:
    yield data


async def _read(reader: Any) -> AsyncIterator[bytes]:
    while chunk := await reader.read(READ_CHUNK):
        yield chunk


def file_resource(stored: StoredContainerFile, entry: dict[str, Any]) -> dict[str, Any]:
    """A placed file as the environment shows it (the SDK's ``HostedEnvironmentFile``): its id is the container
    file's, unique to this environment."""
    shown = {"id": stored.id, "type": entry["type"], "path": entry["path"], "size_bytes": stored.bytes}
    if entry["type"] == "file_id":
        shown["file_id"] = entry["file_id"]
    return shown


async def place_file(containers: ContainerService, container: StoredContainer, entry: dict[str, Any], *,
                     tenant: str, param: str) -> StoredContainerFile:
    """One checked file (protocol/containers/environment_fields.py :func:`check_files`) written into the container."""
    path = container_path(entry["path"])
    if entry["type"] == "inline":
        return await containers.put_bytes(container, path, _once(base64.b64decode(entry["data"])), source="user",
                                          tenant=tenant, param=f"{param}.path")
    try:
        reader, _ = await containers.files.open_content(entry["file_id"], tenant=tenant)
    except APIError as error:
        if error.status == 404:
            raise APIError(404, f"No such File object: {entry['file_id'][:200]}", type="invalid_request_error",
                           param=f"{param}.file_id", code="not_found") from None
        raise
    try:
        return await containers.put_bytes(container, path, _read(reader), source="user", tenant=tenant,
                                          param=f"{param}.path")
    finally:
        await reader.aclose()


async def place_files(containers: ContainerService, container: StoredContainer, files: list[dict[str, Any]], *,
                      tenant: str, param: str = "environment.files") -> list[dict[str, Any]]:
    shown = []
    for index, entry in enumerate(files):
        stored = await place_file(containers, container, entry, tenant=tenant, param=f"{param}[{index}]")
        shown.append(file_resource(stored, entry))
    return shown


FAILED_MARK = "/tmp/.setup-failed"  # in the call's own /tmp: gone with it


def setup_script(command: dict[str, str], env: Mapping[str, str]) -> str:
    """The command as the shell runs it: skipped (125) once an earlier one failed, else in a subshell in its
    ``cwd`` (made if missing) with ``env`` exported; a failure leaves the mark that skips the rest."""
    cwd = DATA_DIR + command["cwd"][len(WORKSPACE):]
    lines = [f"[ ! -e {FAILED_MARK} ] || exit 125", "(",
             f"mkdir -p {shlex.quote(cwd)} && cd {shlex.quote(cwd)} || exit 1"]
    lines += [f"export {name}={shlex.quote(value)}" for name, value in env.items()]
    lines += [command["command"], ")", "status=$?", f'[ "$status" -eq 0 ] || : > {FAILED_MARK}', 'exit "$status"']
    return "\n".join(lines)


async def run_setup(shell: SetupShell | None, container_id: str, commands: list[dict[str, str]],
                    env: Mapping[str, str], *, tenant: str, param: str = "environment.setup_commands") -> None:
    """The commands in order, in one sandbox call (what one leaves, empty directories included, the next finds);
    the first that does not exit 0 is the 400, naming its index."""
    if not commands:
        return
    if shell is None:
        raise invalid_request("Setup commands need the bridge's hosted shell, which this server does not run.",
                              param=param, code="unsupported_value")
    ran = await shell.run({"commands": [setup_script(command, env) for command in commands]}, container_id,
                          tenant=tenant)
    outputs = list(ran.outputs or [])
    for index in range(len(commands)):
        code = outputs[index].exit_code if index < len(outputs) else None
        if code != 0:
            outcome = "did not run to its end" if code is None else f"exited with {code}"
            if index >= len(outputs) and ran.error:
                outcome = f"could not run: {ran.error}"
            raise APIError(400, f"Setup command {index} {outcome}; the environment was not made.",
                           type="invalid_request_error", param=f"{param}[{index}]", code="setup_command_failed")


class EnvironmentSetup:
    """The hosted shell setup commands run on, and the sealer an environment's ``env`` is kept with (its record's
    ``_sealed_env``: confidential, never in plaintext in the store or its statements' log lines)."""

    def __init__(self, shell: SetupShell | None, sealer: Sealer, store: AgentStore) -> None:
        self.shell = shell
        self.sealer = sealer
        self.store = store

    async def attach(self, containers: ContainerService, environment_id: str, session_id: str, *,
                     tenant: str) -> dict[str, Any]:
        """A standalone environment of the tenant's taken by a session (``environment_id``): its resource, as it
        was made; it is the session's from now on (deleted with it) and no other session may take it. The claim is
        the delete of its :data:`UNCLAIMED` record, which one request alone makes, on any replica."""
        record = await self.store.get(ENVIRONMENT, environment_id, tenant=tenant)
        if record is None or record.get("resource") is None:
            raise APIError(404, f"No environment found with id '{environment_id[:200]}'.",
                           type="invalid_request_error", param="environment.environment_id", code="not_found")
        if await containers.live(environment_id, tenant=tenant) is None:
            raise invalid_request(f"The environment '{environment_id}' has expired.",
                                  param="environment.environment_id", code="environment_expired")
        if not await self.store.delete(UNCLAIMED, environment_id, tenant=tenant):
            raise invalid_request(f"The environment '{environment_id}' is already a session's.",
                                  param="environment.environment_id", code="environment_in_use")
        record["session_id"] = session_id
        await self.store.put(ENVIRONMENT, environment_id, record, tenant=tenant, scope="standalone")
        await containers.touch(environment_id, tenant=tenant)
        resource: dict[str, Any] = record["resource"]
        return resource

    def seal(self, env: Mapping[str, str]) -> str | None:
        return self.sealer.seal(ENV_PURPOSE, dict(env)) if env else None

    async def env_for(self, container_id: str, tenant: str) -> Mapping[str, str]:
        """The variables every command in the container gets: its environment's ``env`` (none for a container
        that is no Agents API environment)."""
        record = await self.store.get(ENVIRONMENT, container_id, tenant=tenant)
        if record is None or not record.get("_sealed_env"):
            return {}
        env: dict[str, str] = self.sealer.open(ENV_PURPOSE, record["_sealed_env"])
        return env


async def equip(containers: ContainerService, setup: EnvironmentSetup | None, store: AgentStore,
                container: StoredContainer, plan: HostedPlan, skills: list[dict[str, Any]], *, tenant: str,
                session_id: str | None, extra: dict[str, Any] | None = None) -> list[dict[str, Any]]:
    """A new environment's container given its files, then its setup commands run; its record stored (kind
    ``environment``, scope ``session`` or ``standalone``: what ``/v1/agents/environments`` shows and whose files
    it serves). Anything failing takes the container with it: never an environment half made."""
    if setup is None and (plan.setup_commands or plan.env):
        raise invalid_request("Setup commands and environment variables need the bridge's hosted shell, which this "
                              "server does not run.", param="environment.setup_commands" if plan.setup_commands
                              else "environment.env", code="unsupported_value")
    try:
        files = await place_files(containers, container, plan.files, tenant=tenant)
        await run_setup(setup.shell if setup else None, container.id, plan.setup_commands, plan.env, tenant=tenant)
        record = {"id": container.id, "object": "agent.environment", "type": "openai_hosted",
                  "created_at": container.created_at, "files": files, "skills": skills, "session_id": session_id,
                  "_sealed_env": setup.seal(plan.env) if setup else None,
                  "setup_files": await _made_files(containers, container.id, tenant) if plan.setup_commands else [],
                  **(extra or {})}  # the plugins' MCP servers (plugin_mcp.py)
        await store.put(ENVIRONMENT, container.id, record, tenant=tenant, parent=session_id,
                        scope="session" if session_id else "standalone")
    except BaseException:
        with contextlib.suppress(APIError):
            await containers.delete(container.id, tenant=tenant)
        raise
    return files


async def _made_files(containers: ContainerService, container_id: str, tenant: str) -> list[str]:
    """The container files the setup commands made (the commands' own, ``source: assistant``): the environment's
    start, never a turn's artifacts. At most :data:`MAX_SETUP_FILES` (a session publishes no more artifacts)."""
    made: list[str] = []
    after = None
    while len(made) < MAX_SETUP_FILES:
        found, has_more = await containers.store.list_files(container_id, tenant=tenant, after=after,
                                                            limit=SCAN_LIMIT, order="asc")
        made += [file.id for file in found if file.source == "assistant"][:MAX_SETUP_FILES - len(made)]
        if not has_more or not found:
            break
        after = found[-1].id
    return made


async def setup_files(store: AgentStore, container_id: str, *, tenant: str) -> list[str]:
    """The ids of the files an environment's setup commands made (none for a container that is no Agents API
    environment)."""
    record = await store.get(ENVIRONMENT, container_id, tenant=tenant)
    return list(record.get("setup_files") or []) if record is not None else []


def environment_file(environment_id: str, stored: StoredContainerFile) -> dict[str, Any]:
    """The SDK's ``EnvironmentFile``."""
    return {"environment_id": environment_id, "object": "agent.environment.file",
            "path": workspace_path(stored.path), "size_bytes": stored.bytes}


async def upload(containers: ContainerService, container: StoredContainer, body: dict[str, Any], *,
                 tenant: str) -> dict[str, Any]:
    """``POST …/files``: one file (the SDK's ``HostedEnvironmentFileParam``), replacing a file at its path."""
    if not isinstance(body, dict):
        raise invalid_request("Invalid type for body: expected an object.", param=None, code="invalid_type")
    try:
        [entry] = check_files([body], "file")
        stored = await place_file(containers, container, entry, tenant=tenant, param="file")
    except APIError as error:  # the body is the file: name its fields without the list's prefix
        for prefix in ("file[0].", "file."):
            if error.param and error.param.startswith(prefix):
                error.param = error.param[len(prefix):]
                error.message = error.message.replace(f"'{prefix}", "'")
        raise
    return environment_file(container.id, stored)


async def list_files(containers: ContainerService, container_id: str, *, path: str | None, limit: int,
                     order: str, page: str | None, tenant: str) -> dict[str, Any]:
    """``GET …/files``: the container's files (under ``path``, a workspace directory) sorted by path, ``limit``
    a page; ``next`` is the last path of the page (an opaque token to the client), the next page the paths
    past it. The container's files are read :data:`SCAN_LIMIT` at a time, bounded by a container's own."""
    if not 1 <= limit <= MAX_LIST_LIMIT:
        raise invalid_request(f"Invalid value for 'limit': expected 1 to {MAX_LIST_LIMIT}.", param="limit",
                              code="invalid_value")
    if order not in ("asc", "desc"):
        raise invalid_request("Invalid value for 'order': expected 'asc' or 'desc'.", param="order",
                              code="invalid_value")
    prefix = None
    if path is not None:
        directory = check_workspace_path(path, "path", directory=True)
        prefix = container_path(directory).rstrip("/") + "/"
    if page is not None and (not page.startswith(DATA_DIR + "/") or len(page) > 4096):
        raise invalid_request("Invalid value for 'page': not a token this list gave.", param="page",
                              code="invalid_value")
    found: list[StoredContainerFile] = []
    after = None
    while True:
        batch, has_more = await containers.store.list_files(container_id, tenant=tenant, after=after,
                                                            limit=SCAN_LIMIT, order="asc")
        found += [file for file in batch if prefix is None or file.path.startswith(prefix)]
        if not has_more or not batch:
            break
        after = batch[-1].id
    found.sort(key=lambda file: file.path.split("/"), reverse=order == "desc")
    if page is not None:
        key = page.split("/")
        found = [file for file in found if (file.path.split("/") > key) == (order == "asc")
                 and file.path != page]
    data = found[:limit]
    more = len(found) > limit
    return {"object": "list", "data": [environment_file(container_id, file) for file in data], "has_more": more,
            "next": data[-1].path if more and data else None}


