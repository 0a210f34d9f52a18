"""A session's ``openai_hosted`` environment and its artifacts.

The environment is a container of the Containers API (services/containers/containers.py) made with the session: its
memory tier from ``container_size``, its ``packages`` installed at its start (packages.py), its network
policy from ``network`` (the egress proxy's allowlist, or its block list
where the deployment allows one) with the session's vaults' ``environment_variable`` credentials as its domain
secrets (sealed in the container's row as a ``network_policy``'s are), expiring after
:data:`KEEP_MINUTES` without use, the longest a container may be kept idle; every turn uses it, so it lives as long
as the session is used and is deleted with the session. The agent's turns get the hosted ``shell`` tool over it (a
``container_reference``), and the files a turn leaves in its workspace (``/mnt/data``) are published as the
session's artifacts when the turn completes.

An artifact is immutable: its bytes are copied from the container file into a blob of its own, so a later turn
changing or deleting the file leaves the artifact as it was. A session's artifacts hold at most a container's bytes
in all (``container_bytes``, counted as they are published), :data:`MAX_ARTIFACTS_PER_TURN` a turn and
:data:`MAX_ARTIFACTS_PER_SESSION` in all: files past these are not published. An artifact's bytes count in its
tenant's ``max_stored_bytes`` (its record's ``bytes``: store/sqlite/files/quota.py) as long as it is kept: a file that
would pass the limit is not kept, the turn is, and says so (:func:`not_kept`, an ``error`` event of the session
before the turn's end, naming the file; once per version of the file). Artifacts are records of the session (kind
``artifact``, ``scope`` its environment id), deleted with it.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Callable, Collection
from dataclasses import dataclass, field, replace
from typing import Any

from .... import ids
from ....protocol.containers.environments import HostedPlan, network_of
from ....protocol.errors import APIError, invalid_request, not_found
from ....protocol.lists import list_of
from ....sandbox.egress.policy import NetworkPolicy, parse_policy
from ....sandbox.egress.scope import block_list, check_secrets, within
from ....store.base import BlobReader
from ....store.base_agents import AgentStore, Record
from ...containers.containers import ContainerService
from ...containers.skills import copy_blob
from ...pagination import page_errors
from ..executor.hub import ExecutorHub
from ..vaults.vaults import VaultService
from .capability_directories import environment_note
from .packages import InstallFailed
from .plugin_mcp import STORED, PluginServers, place_plugin_files, sealed
from .plugins import plugin_contents, refused_duplicate
from .setup import EnvironmentSetup, equip, setup_files

KEEP_MINUTES = 10080  # the longest ``expires_after.minutes`` of a container
MAX_ARTIFACTS_PER_TURN = 100
MAX_ARTIFACTS_PER_SESSION = 1000


MAX_REFUSED_REMEMBERED = 100  # files not kept, remembered per session so each is told once


@dataclass
class Published:
    """What a turn's end publishes: the artifacts' records, and the files not kept for the tenant's storage limit
    (``(path, bytes)``)."""

    records: list[Record] = field(default_factory=list)
    refused: list[tuple[str, int]] = field(default_factory=list)
    limit: int = 0


def not_kept(session_id: str, published: Published) -> list[dict[str, Any]]:
    """The session's ``error`` events (the SDK's ``AgentSessionErrorEvent``) telling each file not kept as an
    artifact, shown before the turn's end; the turn itself completes."""
    return [{"type": "error", "session_id": session_id, "error": {
        "type": "invalid_request_error", "code": "storage_limit_exceeded", "param": None,
        "message": f"The artifact '{path[:512]}' ({size} bytes) was not kept: it would pass this project's storage "
                   f"limit of {published.limit} bytes. The turn is kept; delete artifacts, files or sessions to "
                   "make room."}} for path, size in published.refused]


def session_not_found(session_id: str) -> APIError:
    return not_found(f"No session found with id '{session_id}'.", param="session_id", code="not_found")


def artifact_not_found(artifact_id: str) -> APIError:
    return not_found(f"No artifact found with id '{artifact_id[:200]}'.", param="artifact_id", code="not_found")


def hosted_container(session: dict[str, Any]) -> str | None:
    """The id of the session's container (None: not an ``openai_hosted`` session)."""
    environment = session.get("environment") or {}
    return environment.get("id") if environment.get("type") == "openai_hosted" else None


def environment_state(environment_id: str, status: str, error: dict[str, Any] | None = None) -> dict[str, Any]:
    return {"id": environment_id, "type": "openai_hosted", "status": status, "error": error}


def shell_tool(container_id: str) -> dict[str, Any]:
    return {"type": "shell", "environment": {"type": "container_reference", "container_id": container_id}}


def network_policy_of(network: Any) -> NetworkPolicy | None:
    """An environment's ``network`` (the SDK's ``{access, allowed_domains, blocked_domains}``) as the egress
    proxy's policy, checked (400s naming ``environment.network…``), without the deployment's say (see
    :meth:`SessionEnvironments.network`); None: no network."""
    access, allowed, blocked = network_of(network)
    if access == "disabled":
        return None
    if access == "enabled" or not allowed:
        return block_list(list(blocked), "environment.network.blocked_domains")
    return parse_policy({"type": "allowlist", "allowed_domains": list(allowed)}, "environment.network")


def network_within(inner: Any, outer: Any) -> bool:
    """Whether the ``network`` ``inner`` lets through only hosts ``outer`` does — an environment's network over
    its template's may narrow it, never broaden it ("network overrides cannot broaden its policy")."""
    return within(network_policy_of(inner), network_policy_of(outer))


class SessionEnvironments:
    def __init__(self, store: AgentStore, containers: ContainerService | None,
                 vaults: VaultService | None = None) -> None:
        self.store = store
        self.containers = containers
        self.vaults = vaults  # the session's vaults' credentials: its container's domain secrets
        self.setup: EnvironmentSetup | None = None  # setup commands and env (setup.py)
        self.executors: ExecutorHub | None = None  # exec-servers serving self_hosted ones (agents/executor_calls.py)
        self.connectors: Collection[str] = ()  # the connector ids a plugin's apps may name (plugin_apps.py)
        # why no desktop (``desktop.enabled``) can run here, None when one can (agents/computer/desktops.py's
        # ``unavailable``; the door sets it); unset: this server runs none
        self.desktops: Callable[[], str | None] | None = None

    def _service(self) -> ContainerService:
        if self.containers is None:
            raise invalid_request("Environment type 'openai_hosted' needs the bridge's sandbox, which this server "
                                  "does not run.", param="environment.type", code="unsupported_value")
        return self.containers

    async def network(self, plan: HostedPlan, vault_ids: list[str], *, tenant: str) -> NetworkPolicy | None:
        """The container's network policy: the plan's allowlist or block list, checked against what the
        deployment allows (a 400 naming the setting), with the session's vaults' ``environment_variable``
        credentials as its domain secrets (held to the policy's bounds; a 400 naming ``vault_ids``)."""
        containers = self._service()
        if plan.block_list:
            policy: NetworkPolicy | None = block_list(list(plan.blocked_domains),
                                                      "environment.network.blocked_domains")
            containers.network.check_allowed(policy, "environment.network.access" if plan.access == "enabled"
                                              else "environment.network.blocked_domains")
        else:
            policy = containers.network.parse(plan.network_policy(), "environment.network")
        if policy is None or not vault_ids or self.vaults is None:
            return policy
        found = await self.vaults.domain_secrets(vault_ids, [] if policy.blocked else list(policy.domains),
                                                 tenant=tenant,
                                                 blocked=list(policy.domains) if policy.blocked else None)
        return replace(policy, secrets=check_secrets(found, "vault_ids")) if found else policy

    async def provision(self, session_id: str, plan: HostedPlan, *, tenant: str, vault_ids: list[str] | None = None,
                        name: str | None = None) -> dict[str, Any]:
        """A new container for the session (``name``: a standalone environment's); its ``environment``
        resource, its files placed and setup commands run (setup.py)."""
        containers = self._service()
        if plan.desktop:  # a 400 naming what is missing (a package, Pillow's XCB, the cgroup mode), nothing made
            refused = "this server runs no desktops" if self.desktops is None else self.desktops()
            if refused is not None:
                raise invalid_request(f"A desktop ('environment.desktop.enabled') cannot run on this server: "
                                      f"{refused}.", param="environment.desktop.enabled", code="unsupported_value")
        if plan.environment_id is not None:  # an existing environment, taken
            if self.setup is None:
                raise invalid_request("An existing environment ('environment_id') is not served here.",
                                      param="environment.environment_id", code="unsupported_value")
            return await self.setup.attach(containers, plan.environment_id, session_id, tenant=tenant)
        if plan.python_packages or plan.npm_packages or plan.system_packages:  # a 400 where the operator allows none
            if containers.packages is None:
                raise invalid_request("Installing packages needs the bridge's sandbox, which this server does not "
                                      "run.", param="environment.packages", code="unsupported_value")
            containers.packages.check(plan)
        policy = await self.network(plan, vault_ids or [], tenant=tenant)
        skills = await containers.resolve_skills(plan.skills, tenant=tenant, param="environment.skills")
        offered, servers = await asyncio.to_thread(plugin_contents, plan.plugins, "environment.plugins",
                                                   self.connectors) if plan.plugins else ([], PluginServers())
        if servers.tools and self.setup is None:
            raise invalid_request("A plugin's MCP servers need the bridge's hosted shell, which this server does not "
                                  "run.", param="environment.plugins", code="unsupported_value")
        for skill in offered:  # the plugins' skills, beside the environment's own
            if any(other.name == skill.name for other in skills):
                raise refused_duplicate(skill.name, "environment.plugins")
            skills.append(skill)
        container = await containers.new_container(name or f"agent session {session_id}", tenant=tenant,
                                                   minutes=KEEP_MINUTES, memory_limit=plan.memory_limit,
                                                   network=policy, skills=skills)
        shown: list[dict[str, Any]] = []
        for entry, skill in zip(plan.skills or [], skills[:len(skills) - len(offered)], strict=True):
            if entry["type"] == "skill_reference":  # the SDK's HostedSkillReference
                shown.append({"type": "skill_reference", "skill_id": entry["skill_id"], "name": skill.name,
                              "description": skill.description, "version": skill.version or ""})
            else:
                shown.append({"type": "inline", "name": skill.name, "description": skill.description})
        if servers.files:  # the plugins whose stdio servers run from their files (plugin_mcp.py)
            await place_plugin_files(containers, container, servers.files, tenant=tenant)
        files = await equip(containers, self.setup, self.store, container, plan, shown, tenant=tenant,
                            session_id=None if name else session_id,
                            extra={STORED: sealed(servers, self.setup.sealer)} if servers.tools and self.setup
                            else None)
        return plan.resource(container.id, shown, files)

    async def install(self, session: dict[str, Any], plan: HostedPlan, *, tenant: str) -> dict[str, Any] | None:
        """The environment's packages installed in its container at its start
        (packages.py): None when done (or none asked for), else the environment's error,
        naming the package — kept on the session, so that its turns fail saying so."""
        container_id = hosted_container(session)
        packages = self.containers.packages if self.containers is not None else None
        if container_id is None or packages is None or \
                not (plan.python_packages or plan.npm_packages or plan.system_packages):
            return None
        try:
            await packages.install(container_id, plan.python_packages, plan.npm_packages, tenant=tenant,
                                   system=plan.system_packages)
        except InstallFailed as failed:
            error = {"code": "package_install_failed", "type": "invalid_request_error", "message": str(failed)}
            session.setdefault("_private", {})["environment_error"] = error
            return error
        return None

    async def capabilities(self, session: dict[str, Any], *, tenant: str) -> str:
        """What a turn starting now tells the agent of its environment's capability directories
        (capability_directories.py); empty for none."""
        containers = self.containers
        return await environment_note(session, containers.store if containers else None,
                                      containers.blobs if containers else None, tenant=tenant)

    async def refresh_credentials(self, session: dict[str, Any], *, tenant: str) -> None:
        """Before each of a turn's model calls: the session's container gets its vaults' credentials as they are
        now — a rotated value from then on, a deleted credential or vault no longer put into requests (as an MCP
        credential is opened anew for each turn). Credentials that no longer fit the policy's bounds are the
        400 naming ``vault_ids`` that fails the turn."""
        container_id = hosted_container(session)
        vault_ids = list(session.get("vault_ids") or [])
        if container_id is None or self.containers is None or self.vaults is None or not vault_ids:
            return
        container = await self.containers.live(container_id, tenant=tenant)
        if container is None:
            return  # expired: the turn's shell call says so
        try:
            current = self.containers.network.opened(container)
        except ValueError:
            return  # sealed with another key: every call in it fails, saying so (services/containers/runs.py)
        if current is None:
            return
        found = await self.vaults.domain_secrets(vault_ids, [] if current.blocked else list(current.domains),
                                                 tenant=tenant,
                                                 blocked=list(current.domains) if current.blocked else None)
        fresh = replace(current, secrets=check_secrets(found, "vault_ids"))
        if fresh != current:
            await self.containers.set_network(container_id, fresh, tenant=tenant)

    async def alive(self, session: dict[str, Any], *, tenant: str) -> bool:
        """The session's container is still there (used now, so it stays as long again)."""
        container_id = hosted_container(session)
        if container_id is None or self.containers is None:
            return container_id is None
        if await self.containers.live(container_id, tenant=tenant) is None:
            return False
        await self.containers.touch(container_id, tenant=tenant)
        return True

    async def publish(self, session: dict[str, Any], turn_id: str, *, tenant: str) -> Published:
        """The files the turn left in the session's container that are not published yet, as artifacts (their
        records to store with the turn's end), and those not kept for the tenant's storage limit. A file is
        published once per version: a changed file is a new container file, so a new artifact."""
        container_id = hosted_container(session)
        if container_id is None or self.containers is None:
            return Published()
        private = session.setdefault("_private", {})
        published: list[str] = private.setdefault("published_files", [])
        refused: list[str] = private.setdefault("refused_files", [])
        room = self.containers.container_bytes - int(private.get("artifact_bytes", 0))  # a container's worth
        seen = set(published) | set(refused) | set(await setup_files(self.store, container_id, tenant=tenant))
        limit = self.containers.files.quota.limit(tenant)
        used = 0 if limit is None else await self.containers.files.store.stored_bytes(int(time.time()),
                                                                                     tenant=tenant)
        outcome = Published(limit=limit or 0)
        records = outcome.records
        after = None
        while len(records) < MAX_ARTIFACTS_PER_TURN and len(published) < MAX_ARTIFACTS_PER_SESSION:
            found, has_more = await self.containers.store.list_files(container_id, tenant=tenant, after=after,
                                                                     limit=100, order="asc")
            for file in found:
                if file.id in seen or file.source != "assistant" or file.bytes > room:
                    continue
                if len(records) >= MAX_ARTIFACTS_PER_TURN or len(published) >= MAX_ARTIFACTS_PER_SESSION:
                    break
                if limit is not None and used + file.bytes > limit:  # its copy would pass the tenant's bytes
                    outcome.refused.append((file.path, file.bytes))
                    refused[:] = [*refused, file.id][-MAX_REFUSED_REMEMBERED:]
                    seen.add(file.id)
                    continue
                reader = await self.containers.blobs.open(file.blob_id)
                if reader is None:  # replaced meanwhile
                    continue
                blob_id, size = await copy_blob(self.containers.blobs, reader)
                artifact = {"id": ids.new_id("art"), "object": "agent.session.artifact",
                            "created_at": int(time.time()), "environment_id": container_id, "path": file.path,
                            "session_id": session["id"], "size_bytes": size, "turn_id": turn_id,
                            "_private": {"blob_id": blob_id}}
                records.append(Record("artifact", artifact["id"], artifact, parent=session["id"],
                                      scope=container_id))
                room -= size
                used += size
                private["artifact_bytes"] = int(private.get("artifact_bytes", 0)) + size
                published.append(file.id)
                seen.add(file.id)
            if not has_more or not found:
                break
            after = found[-1].id
        return outcome

    # --- the artifact routes (each of a session of ``tenant``'s: another's is a 404) --------------------------

    async def _session(self, session_id: str, tenant: str) -> None:
        if await self.store.get("session", session_id, tenant=tenant) is None:
            raise session_not_found(session_id)

    async def list_artifacts(self, session_id: str, *, environment_id: str | None, after: str | None,
                             limit: int, order: str, tenant: str) -> dict[str, Any]:
        await self._session(session_id, tenant)
        with page_errors("artifact"):
            page = await self.store.page("artifact", tenant=tenant, parent=session_id, scope=environment_id,
                                         after=after, limit=limit, order=order)
        return list_of([_public(artifact) for artifact in page.data], has_more=page.has_more)

    async def retrieve(self, session_id: str, artifact_id: str, *, tenant: str) -> dict[str, Any]:
        return _public(await self._get(session_id, artifact_id, tenant=tenant))

    async def _get(self, session_id: str, artifact_id: str, *, tenant: str) -> dict[str, Any]:
        await self._session(session_id, tenant)
        artifact = await self.store.get("artifact", artifact_id, tenant=tenant)
        if artifact is None or artifact.get("session_id") != session_id:
            raise artifact_not_found(artifact_id)
        return artifact

    async def open(self, session_id: str, artifact_id: str, *, tenant: str) -> tuple[BlobReader, dict[str, Any]]:
        """The artifact's bytes (opened: one deleted meanwhile is a 404) and the artifact."""
        artifact = await self._get(session_id, artifact_id, tenant=tenant)
        reader = None if self.containers is None else \
            await self.containers.blobs.open(artifact["_private"]["blob_id"])
        if reader is None:  # deleted meanwhile
            raise artifact_not_found(artifact_id)
        return reader, _public(artifact)

    async def delete(self, session_id: str, artifact_id: str, *, tenant: str) -> dict[str, Any]:
        artifact = await self._get(session_id, artifact_id, tenant=tenant)
        if not await self.store.delete("artifact", artifact_id, tenant=tenant):
            raise artifact_not_found(artifact_id)
        await self._remove([artifact["_private"]["blob_id"]])
        return {"id": artifact_id, "object": "agent.session.artifact.deleted", "deleted": True}

    async def release(self, session: dict[str, Any], *, tenant: str) -> None:
        """The session is deleted: its container and its artifacts' bytes go too (the records go with it)."""
        blobs: list[str] = []
        after = None
        while True:
            page = await self.store.page("artifact", tenant=tenant, parent=session["id"], after=after, limit=100,
                                         order="asc")
            blobs += [artifact["_private"]["blob_id"] for artifact in page.data]
            if not page.has_more or not page.data:
                break
            after = page.data[-1]["id"]
        await self._remove(blobs)
        container_id = hosted_container(session)
        if container_id is not None:
            await self.store.delete("environment", container_id, tenant=tenant)  # its record (setup.py)
        if container_id is not None and self.containers is not None:
            with contextlib.suppress(APIError):  # expired already
                await self.containers.delete(container_id, tenant=tenant)

    async def _remove(self, blobs: list[str]) -> None:
        if self.containers is not None:
            for blob_id in blobs:
                await self.containers.blobs.remove(blob_id)


def _public(artifact: dict[str, Any]) -> dict[str, Any]:
    return {key: value for key, value in artifact.items() if key != "_private"}


async def expired_event(environments: SessionEnvironments | None, session: dict[str, Any], turn_id: str, *,
                        tenant: str, session_id: str) -> dict[str, Any] | None:
    """An ``openai_hosted`` session's container is still there as its turn starts: None; when it is not (unused past
    its expiry, or deleted through the Containers API), the ``agent.session.environment.expired`` event saying so."""
    container_id = hosted_container(session)
    if container_id is None or environments is None or await environments.alive(session, tenant=tenant):
        return None
    return {"type": "agent.session.environment.expired", "session_id": session_id, "turn_id": turn_id,
            "environment": environment_state(container_id, "expired")}
