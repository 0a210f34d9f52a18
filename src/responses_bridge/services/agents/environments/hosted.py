"""First-class environments of the Agents API (``/v1/agents/environments``): an ``openai_hosted`` environment made
on its own (from a template or inline configuration, as a session's is: environments.py
:meth:`~responses_bridge.services.agents.environments.environments.SessionEnvironments.provision`), retrieved and
listed, and the live files of any of the tenant's environments, a session's included (``…/{environment_id}/files``).

An environment's id is its container's (``cntr_…``); it is ``ready`` while the container lives (every use keeps it
as long again) and ``expired`` once it was let expire or its session was deleted. What the tenant may keep is
bounded by its containers (``max_containers``) and by :data:`MAX_ENVIRONMENTS_PER_TENANT` records: past it, expired
ones are forgotten first.
"""

from __future__ import annotations

from typing import Any

from ....protocol.agents.inputs import known
from ....protocol.containers.environments import hosted_plan
from ....protocol.errors import APIError, invalid_request, not_found
from ....protocol.lists import list_of
from ....store.base_agents import AgentStore
from ...pagination import page_errors
from .environments import SessionEnvironments
from .setup import ENVIRONMENT, UNCLAIMED, list_files, upload
from .templates import TemplateService

MAX_ENVIRONMENTS_PER_TENANT = 1_000
CREATE_FIELDS = ("environment", "vault_ids")


def environment_not_found(environment_id: str) -> APIError:
    return not_found(f"No environment found with id '{environment_id[:200]}'.", param="environment_id",
                     code="not_found")


class EnvironmentService:
    def __init__(self, store: AgentStore, environments: SessionEnvironments, templates: TemplateService) -> None:
        self.store = store
        self.environments = environments  # the containers, their skills, files and setup (as a session's)
        self.templates = templates

    async def create(self, body: dict[str, Any], *, tenant: str) -> dict[str, Any]:
        known(body, CREATE_FIELDS, "")
        vault_ids = await self._vault_ids(body.get("vault_ids"), tenant)
        environment = body.get("environment")
        if not isinstance(environment, dict):
            raise invalid_request("Missing required parameter: 'environment' (an object).", param="environment",
                                  code="missing_required_parameter")
        if environment.get("type") != "openai_hosted":
            raise invalid_request("Invalid value for 'environment.type': expected 'openai_hosted'.",
                                  param="environment.type", code="invalid_value")
        plan = hosted_plan(await self.templates.resolve(environment, tenant=tenant))
        if await self.store.count(ENVIRONMENT, tenant=tenant) >= MAX_ENVIRONMENTS_PER_TENANT:
            await self._forget_expired(tenant)
        if await self.store.count(ENVIRONMENT, tenant=tenant) >= MAX_ENVIRONMENTS_PER_TENANT:
            raise APIError(429, f"A project may keep at most {MAX_ENVIRONMENTS_PER_TENANT} environments; let some "
                           "expire first.", type="invalid_request_error", code="environment_limit_reached")
        if plan.environment_id is not None:
            raise invalid_request("'environment.environment_id' names an existing environment: a new one cannot be "
                                  "made from it.", param="environment.environment_id", code="invalid_value")
        resource = await self.environments.provision("", plan, tenant=tenant, name="agent environment",
                                                     vault_ids=vault_ids)
        record = await self._record(resource["id"], tenant)
        record["resource"] = resource  # what a session taking it (environment_id) shows
        await self.store.put(ENVIRONMENT, resource["id"], record, tenant=tenant, scope="standalone")
        await self.store.put(UNCLAIMED, resource["id"], {"id": resource["id"]}, tenant=tenant)
        return await self._info(record, tenant)

    async def _vault_ids(self, value: Any, tenant: str) -> list[str]:
        """The environment's vaults (the tenant's own; another tenant's is a 404): their ``environment_variable``
        credentials go into its container's network policy as a session's vaults' do (sealed in the container's
        row; put by the egress proxy into requests to their hosts, masked in what comes back)."""
        vaults = self.environments.vaults
        if vaults is None:
            if value:
                raise invalid_request("Vaults ('vault_ids') are not kept by this server.", param="vault_ids",
                                      code="unsupported_value")
            return []
        return await vaults.check_session_vaults(value, tenant=tenant)

    async def _record(self, environment_id: str, tenant: str) -> dict[str, Any]:
        record = await self.store.get(ENVIRONMENT, environment_id, tenant=tenant)
        if record is None:
            raise environment_not_found(environment_id)
        return record

    async def _info(self, record: dict[str, Any], tenant: str) -> dict[str, Any]:
        """The SDK's ``EnvironmentInfo``."""
        containers = self.environments.containers
        live = containers is not None and await containers.live(record["id"], tenant=tenant) is not None
        return {"id": record["id"], "object": "agent.environment", "files": record["files"],
                "plugins": (record.get("resource") or {}).get("plugins") or [],
                "skills": record["skills"], "status": "ready" if live else "expired", "type": record["type"]}

    async def retrieve(self, environment_id: str, *, tenant: str) -> dict[str, Any]:
        return await self._info(await self._record(environment_id, tenant), tenant)

    async def list_environments(self, *, after: str | None, limit: int, order: str, kind: str | None,
                                tenant: str) -> dict[str, Any]:
        """The tenant's standalone environments (a session's is shown on its session)."""
        if kind not in (None, "openai_hosted"):
            raise invalid_request("Invalid value for 'type': expected 'openai_hosted'.", param="type",
                                  code="invalid_value")
        with page_errors("environment"):
            page = await self.store.page(ENVIRONMENT, tenant=tenant, scope="standalone", after=after, limit=limit,
                                         order=order)
        return list_of([await self._info(record, tenant) for record in page.data], has_more=page.has_more)

    async def _forget_expired(self, tenant: str) -> None:
        after = None
        containers = self.environments.containers
        while True:
            page = await self.store.page(ENVIRONMENT, tenant=tenant, scope="standalone", after=after, limit=100,
                                         order="asc")
            for record in page.data:
                if containers is None or await containers.live(record["id"], tenant=tenant) is None:
                    await self.store.delete(ENVIRONMENT, record["id"], tenant=tenant)
                    await self.store.delete(UNCLAIMED, record["id"], tenant=tenant)
            if not page.has_more or not page.data:
                return
            after = page.data[-1]["id"]

    # --- files ----------------------------------------------------------------------------------------------

    async def _container(self, environment_id: str, tenant: str) -> Any:
        await self._record(environment_id, tenant)
        containers = self.environments.containers
        container = None if containers is None else await containers.live(environment_id, tenant=tenant)
        if containers is None or container is None:
            raise invalid_request(f"The environment '{environment_id[:200]}' has expired; its files are gone.",
                                  param="environment_id", code="environment_expired")
        await containers.touch(environment_id, tenant=tenant)
        return containers, container

    async def upload_file(self, environment_id: str, body: dict[str, Any], *, tenant: str) -> dict[str, Any]:
        containers, container = await self._container(environment_id, tenant)
        async with containers.lock(container.id):  # not while a turn's shell call writes its files back
            return await upload(containers, container, body, tenant=tenant)

    async def list_files(self, environment_id: str, *, path: str | None, limit: int, order: str,
                         page: str | None, tenant: str) -> dict[str, Any]:
        containers, container = await self._container(environment_id, tenant)
        return await list_files(containers, container.id, path=path, limit=limit, order=order, page=page,
                                tenant=tenant)
